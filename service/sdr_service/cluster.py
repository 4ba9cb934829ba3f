"""The service over a sharded bundle whose shards are Ray actors (``serve --ray ADDRESS``).

The app, its routes and its page are the same; only what stands behind the snapshot
changes. :class:`ClusterService` loads the sharded bundle through
:func:`sdrindex.cluster.open_sharded` with a :class:`~sdrindex.cluster.ray_search.RayShardSet`
behind it: the SP and the decoders live in this process (encoding a query, reconstructing
from its SDR), the shards' indexes and rows live in the actors. So:

- a search goes to every shard and the merged top-k is the one exact answer; a shard with
  no live actor makes it a 503 naming the shard (``ShardUnavailableError``), never a
  partial answer;
- ``GET /v1/items/{id}`` and the images come from the shard that owns the id;
- ``POST /v1/items`` is answered after every owning shard saved its new version (the
  actors' :meth:`Shard.add`); the front end is the bundle's one writer, so there is no
  ``current``-link reload here: the snapshot's shard set always answers with the newest
  items;
- ``/readyz`` lists the shards, up or down, and answers 503 while one is down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdr_service.errors import ApiError
from sdr_service.settings import Settings
from sdr_service.state import BundleService, Loaded, _settle_heap

log = logging.getLogger("service")


class ClusterService(BundleService):
    """A :class:`BundleService` whose bundle's shards are Ray actors (see the module doc).

    Parameters
    ----------
    settings : Settings
        ``bundle`` is a sharded bundle; ``ray_address``, ``ray_replicas``,
        ``ray_timeout_s`` and ``ray_actor_resources`` say where and how its shards run.
    clock : callable, optional
        Monotonic seconds (the start-up retry backoff).
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, clock)
        self._shardset: Any = None

    def _connect(self, path: str | Path) -> Any:
        """The Ray shard set behind the bundle (its actors started and their shards open)."""
        from sdrindex.cluster.ray_search import RayShardSet

        s = self.settings
        if self._shardset is not None:  # a start-up retry: end the previous attempt's actors
            self._shardset.close()
        self._shardset = RayShardSet.connect(
            s.ray_address,
            path,
            replicas=s.ray_replicas,
            timeout_s=s.ray_timeout_s,
            resources=dict(s.ray_actor_resources) or None,
        )
        return self._shardset

    def _load_first(self) -> Loaded:
        from sdrindex.cluster import open_sharded

        self._linked = False  # the front end writes the shards itself: nothing to reload
        bundle = open_sharded(self.root, shardset_factory=self._connect)
        loaded = self._prepare(bundle, previous=None)
        self._warm(loaded, check=True)
        _settle_heap(collect=True)
        return loaded

    def close(self) -> None:
        super().close()
        if self._shardset is not None:
            self._shardset.close()

    def shards(self) -> list[dict[str, Any]] | None:
        """Each shard's status (``up``, replicas, items, node), for ``/readyz``."""
        if self._shardset is None:
            return None
        return self._shardset.status()

    def add_items(
        self, images: NDArray[np.uint8], labels: NDArray[np.int64] | None
    ) -> tuple[NDArray[np.int64], Loaded]:
        """Append items through the owning shards; answered once each shard's save is durable.

        A missing owning shard refuses the whole add before anything is written (503 naming
        it, from :meth:`RayShardSet.add`).
        """
        loaded = self.current()
        if loaded.has_labels and labels is None:
            raise ApiError(422, "this bundle has labels: give a `label` for every image")
        if not loaded.has_labels and labels is not None:
            raise ApiError(422, "this bundle has no labels: add images without `label`")
        with self._write_lock:
            ids = loaded.bundle.add(images, labels)
        return np.asarray(ids, dtype=np.int64), loaded


def shards_down(shards: list[dict[str, Any]]) -> str | None:
    """Why the service cannot answer every query (None when every shard is up)."""
    down = [int(s["shard"]) for s in shards if not s.get("up")]
    if not down:
        return None
    names = ", ".join(f"shard-{s:05d}" for s in down)
    return f"{names} unavailable: no actor of it answers (restarting, or its node is gone)"


def retry_after(settings: Settings) -> str:
    """``Retry-After`` of an answer a missing shard refused."""
    return str(max(1, math.ceil(settings.retry_backoff_s)))
