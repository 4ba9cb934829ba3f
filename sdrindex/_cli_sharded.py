"""The sharded side of the ``sdrindex`` command: ``build --shards N [--ray ADDRESS]``, and
opening either kind of bundle for ``query``, ``evaluate``, ``info`` and ``add``.

Argument parsing stays in :mod:`sdrindex.cli`; the work is :mod:`sdrindex.cluster`'s. The
``--ray`` options only hand over to ``sdrindex.cluster.ray_build`` / ``ray_search`` (the
``cluster`` extra); without Ray installed they say which extra to install.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sdrindex.errors import ParameterError
from sdrindex.sdr import row_popcount

_NEED_RAY = "--ray needs the cluster extra: pip install 'sdrindex[cluster]'"


def ray_runner(address: str) -> Any:
    """The Ray runner of sharded builds (``sdrindex.cluster.ray_build.ray_runner``)."""
    try:
        from sdrindex.cluster.ray_build import ray_runner as make
    except ImportError as exc:
        raise ParameterError(_NEED_RAY) from exc
    return make(address)


def open_any(path: Path, ray: str | None = None, verify: bool = True) -> Any:
    """A :class:`~sdrindex.bundle.Bundle`, or a sharded bundle (its shards in this process,
    or behind the Ray cluster at ``ray``)."""
    from sdrindex.bundle import Bundle
    from sdrindex.cluster import is_sharded, open_sharded

    if not is_sharded(path):
        if ray:
            raise ParameterError(f"{path}: not a sharded bundle; --ray goes with one")
        return Bundle.load(path, verify=verify)
    if not ray:
        return open_sharded(path, verify=verify)
    try:
        from sdrindex.cluster.ray_search import RayShardSet
    except ImportError as exc:
        raise ParameterError(_NEED_RAY) from exc
    return open_sharded(path, lambda root: RayShardSet.connect(ray, root), verify=verify)


def build(args: argparse.Namespace, check_target: Any, waiting: Any) -> int:
    """``sdrindex build --shards N`` (N > 1, or any N with ``--ray``)."""
    from sdrindex.bundle import update_lock
    from sdrindex.cluster import build_sharded, open_sharded, process_runner, serial_runner
    from sdrindex.sp import preprocess_for, sp_from_config, threshold_for

    check_target(args.out, args.force)
    sp = sp_from_config(args.config)
    threshold = threshold_for(args.config) if args.threshold is None else args.threshold
    if args.ray:
        runner = ray_runner(args.ray)
    else:
        runner = serial_runner if args.workers == 1 else process_runner(args.workers)
    t = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with update_lock(args.out, args.lock_timeout, waiting(args.out)):
        check_target(args.out, args.force)  # again: the folder may have changed since
        out = build_sharded(
            args.data, args.out, args.shards, sp=sp, labels=args.labels, limit=args.limit,
            learn_limit=args.learn_limit, threshold=threshold,
            preprocess=preprocess_for(args.config), epochs=args.epochs,
            backend=args.backend, decoders={None: None, "ridge": "default", "all": "all"}[
                args.decoder], run_jobs=runner,
        )  # fmt: skip
    seconds = time.perf_counter() - t
    bundle = open_sharded(args.out, verify=False)
    counts = row_popcount(np.asarray(bundle.table.sdrs[: min(len(bundle.table), 10000)]))
    print(f"bundle: {out} ({bundle.n_shards} shards under {args.out / 'shards'})")
    per_shard = ", ".join(str(s["n_items"]) for s in bundle.shardset.status())
    print(f"items: {len(bundle.table)} (per shard: {per_shard})")
    print(
        f"SP: {sp.n_columns} columns, {counts.mean():.1f} active on average "
        f"(sparsity {counts.mean() / sp.n_columns:.4f})"
    )
    print(f"seconds: {seconds:.1f}")
    return 0


def added_labels(bundle: Any, label: int | None, n: int) -> np.ndarray | None:
    """The labels of ``n`` images ``sdrindex add`` appends: ``--label`` exactly when the
    bundle (plain or sharded) has labels, else a message naming the fix."""
    if bundle.table.labels is not None and label is None:
        raise ParameterError("this bundle has labels: pass --label L for the added images")
    if bundle.table.labels is None and label is not None:
        raise ParameterError("this bundle has no labels: add without --label")
    return None if label is None else np.full(n, label, np.int64)


def add(args: argparse.Namespace, images: np.ndarray, names: list[str]) -> int:
    """``sdrindex add`` on a sharded bundle: each item to its shard, saved before it is
    printed (the shard set holds the bundle's update lock)."""
    from sdrindex.cluster import open_sharded

    bundle = open_sharded(args.dir)
    ids = bundle.add(images, added_labels(bundle, args.label, len(images)))
    for name, i in zip(names, ids, strict=True):
        print(f"{name}: id {int(i)}")
    print(f"added {len(ids)} items; the sharded bundle now holds {len(bundle.table)}")
    print(
        "shards: " + ", ".join(f"{s['shard']}: {s['n_items']}" for s in bundle.shardset.status()),
        file=sys.stderr,
    )
    return 0
