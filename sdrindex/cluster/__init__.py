"""Sharded bundles: N bundle-format shards under one versioned top level.

Nothing here needs Ray: the layout (:mod:`.layout`), one shard (:mod:`.shard`), the shard set
protocol and the in-process shard set (:mod:`.shardset`), the merge of per-shard top-k
(:mod:`.merge`), the build (:mod:`.build`) and the adapters that make a sharded bundle read
like one :class:`~sdrindex.bundle.Bundle` (:mod:`.sharded`). Only the ``ray_*`` modules
import ``ray`` (the ``cluster`` extra).
"""

from .build import ShardJob, ShardResult, build_shard, build_sharded, process_runner, serial_runner
from .layout import ShardedLayout, clean_sharded, is_sharded, pin_live_shards, save_sharded
from .merge import merge_topk
from .shard import Shard
from .sharded import ShardedBundle, ShardedIndex, ShardedTable, open_bundle, open_sharded
from .shardset import LocalShardSet, ShardSet

__all__ = [
    "LocalShardSet",
    "Shard",
    "ShardJob",
    "ShardResult",
    "ShardSet",
    "ShardedBundle",
    "ShardedIndex",
    "ShardedLayout",
    "ShardedTable",
    "build_shard",
    "build_sharded",
    "clean_sharded",
    "is_sharded",
    "merge_topk",
    "open_bundle",
    "open_sharded",
    "pin_live_shards",
    "process_runner",
    "save_sharded",
    "serial_runner",
]
