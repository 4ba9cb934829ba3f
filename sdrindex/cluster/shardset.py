"""The shard set protocol, and the shard set that holds every shard in this process.

A shard set answers for all the shards of a sharded bundle at once: ``query`` merges the
shards' top-k (:func:`~.merge.merge_topk`), ``rows`` routes each id to its owner, ``add``
deals new items round-robin. A shard that cannot answer raises
:class:`~sdrindex.errors.ShardUnavailableError` naming it: never a partial top-k.
:class:`LocalShardSet` runs every :class:`~.shard.Shard` here; the Ray shard set
(``sdrindex.cluster.ray_search``) runs one actor per shard behind the same protocol.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from sdrindex.bundle import check_labels_arg, update_lock
from sdrindex.errors import BundleError, ParameterError, SDRIndexError, ShardUnavailableError

from .layout import expected_counts, owner, pin_live_shards, read_top, shard_dir
from .merge import merge_topk
from .shard import Shard

__all__ = ["LocalShardSet", "ShardSet"]


@runtime_checkable
class ShardSet(Protocol):
    """All the shards of a sharded bundle, answering as one index and one table."""

    @property
    def n_shards(self) -> int: ...

    @property
    def n_items(self) -> int: ...

    def query(
        self, packed: NDArray[np.uint8], k: int, params: dict[str, Any]
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Merged top ``k`` of every shard: ids (nq, k) int64 and overlaps (nq, k) int32,
        overlap descending then id ascending, padded -1/-1."""
        ...

    def rows(
        self, ids: NDArray[np.int64]
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64] | None, NDArray[np.uint8]]:
        """(images (m, H, W), labels (m,) or None, packed sdrs (m, n_bytes)) of global ids,
        in the order asked."""
        ...

    def add(self, images: NDArray[np.uint8], labels: NDArray[np.int64] | None) -> NDArray[np.int64]:
        """Encode and append items (each on its owning shard, saved durably); their ids."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """One dict per shard: ``shard``, ``up`` and, when up, ``n_items``, ``version``,
        ``backend``; when down, ``reason``."""
        ...

    def close(self) -> None: ...


def check_counts(counts: list[int], root: Path) -> None:
    """BundleError unless the shards' item counts follow the round-robin rule (an add
    stopped between two shards' saves leaves one shard ahead)."""
    want = expected_counts(int(sum(counts)), len(counts))
    bad = [i for i, (c, w) in enumerate(zip(counts, want, strict=True)) if c != w]
    if bad:
        detail = ", ".join(f"{shard_dir(root, i)} holds {counts[i]}" for i in bad)
        raise BundleError(
            f"{root}: the shards' item counts break the id rule ({detail}; expected "
            f"{[int(w) for w in want]}): an add stopped part-way. Roll back the shard that is "
            "ahead with `sdrindex rollback <shard folder>` and add the items again"
        )


class LocalShardSet:
    """Every shard of a sharded bundle, open in this process.

    Parameters
    ----------
    root : Path
        The sharded bundle folder.
    shards : list of Shard or None
        Shard i at index i; None marks a shard that did not open (its reason in ``reasons``).
    reasons : dict, optional
        Shard number -> why it is unavailable.
    """

    def __init__(
        self, root: Path, shards: list[Shard | None], reasons: dict[int, str] | None = None
    ) -> None:
        self.root = Path(root)
        self._shards = list(shards)
        self._reasons = dict(reasons or {})
        self._lock = threading.Lock()  # serialises adds in this process

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True, strict: bool = True) -> LocalShardSet:
        """Open every shard of the sharded bundle ``path``.

        ``strict`` (default) raises the first shard's :class:`BundleError`; otherwise a shard
        that does not open is kept as unavailable (queries then raise
        :class:`ShardUnavailableError` naming it, ``status`` gives the reason).
        """
        root, _vdir, _top, entries = read_top(path)
        shards: list[Shard | None] = []
        reasons: dict[int, str] = {}
        for e in entries:
            try:
                shards.append(Shard.open(root, e.shard, len(entries), verify=verify))
            except SDRIndexError as exc:
                if strict:
                    raise
                shards.append(None)
                reasons[e.shard] = str(exc)
        if not reasons:
            check_counts([s.n_items for s in shards if s is not None], root)
        return cls(root, shards, reasons)

    # ------------------------------------------------------------------ protocol

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def _up(self) -> list[Shard]:
        missing = [i for i, s in enumerate(self._shards) if s is None]
        if missing:
            raise ShardUnavailableError(missing, self._reasons.get(missing[0], "not loaded"))
        return self._shards  # type: ignore[return-value]

    @property
    def n_items(self) -> int:
        return int(sum(s.n_items for s in self._up()))

    def query(
        self, packed: NDArray[np.uint8], k: int, params: dict[str, Any]
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        shards = self._up()
        answers = [s.query(packed, k, params) for s in shards]
        return merge_topk([a[0] for a in answers], [a[1] for a in answers], k)

    def rows(
        self, ids: NDArray[np.int64]
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64] | None, NDArray[np.uint8]]:
        ids = np.atleast_1d(np.asarray(ids))
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ParameterError(
                f"ids must be integers in a 1-D array, got {ids.dtype} {ids.shape}"
            )
        ids = ids.astype(np.int64, copy=False)
        n = self.n_items
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            shown = ", ".join(str(int(v)) for v in np.unique(ids[bad])[:5])
            raise ParameterError(f"id(s) not in the bundle: {shown} (ids run from 0 to {n - 1})")
        if ids.size == 0:
            return self._up()[0].rows(ids)
        shard_of, _local = owner(ids, self.n_shards)
        parts = {}
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            parts[int(s)] = (sel, self._shards[int(s)].rows(ids[sel]))
        return _assemble(ids.shape[0], parts)

    def add(self, images: NDArray[np.uint8], labels: NDArray[np.int64] | None) -> NDArray[np.int64]:
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[0] == 0:
            raise ParameterError(f"images must have shape (n, height, width), got {images.shape}")
        m = images.shape[0]
        labels = check_labels_arg(labels, m)
        with self._lock, update_lock(self.root):
            shards = self._up()
            for s in shards:  # items another process added since: the next id follows them
                s.refresh()
            check_counts([s.n_items for s in shards], self.root)
            start = self.n_items
            ids = np.arange(start, start + m, dtype=np.int64)
            shard_of = ids % self.n_shards
            # in the order of each shard's first new id: a crash leaves the lowest ids saved
            for s in sorted(np.unique(shard_of), key=lambda s: (int(s) - start) % self.n_shards):
                sel = np.flatnonzero(shard_of == s)
                lab = None if labels is None else labels[sel]
                shards[int(s)].add(images[sel], lab, int(ids[sel[0]]))
            pin_live_shards(self.root)
        return ids

    def status(self) -> list[dict[str, Any]]:
        out = []
        for i, s in enumerate(self._shards):
            if s is None:
                out.append({"shard": i, "up": False, "reason": self._reasons.get(i, "not loaded")})
            else:
                out.append({"up": True, **s.status()})
        return out

    def close(self) -> None:
        self._shards = [None] * len(self._shards)
        self._reasons = {i: "the shard set was closed" for i in range(len(self._shards))}

    def column(self, which: int) -> NDArray:
        """Column ``which`` (0 images, 1 labels, 2 packed sdrs) of every item, in id order:
        each shard's column dealt back round-robin (no per-row routing)."""
        shards = self._up()
        n, parts = self.n_items, []
        for s in shards:
            t = s.bundle.table
            parts.append(np.asarray((t.images, t.labels, t.sdrs)[which]))
        out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
        for i, part in enumerate(parts):
            out[i :: self.n_shards] = part
        return out

    def shard(self, i: int) -> Shard:
        """Shard ``i`` (ShardUnavailableError when it did not open)."""
        s = self._shards[i]
        if s is None:
            raise ShardUnavailableError([i], self._reasons.get(i, "not loaded"))
        return s


def _assemble(
    m: int, parts: dict[int, tuple[NDArray[np.int64], tuple]]
) -> tuple[NDArray[np.uint8], NDArray[np.int64] | None, NDArray[np.uint8]]:
    """Put each shard's rows back at the positions they were asked at."""
    first = next(iter(parts.values()))[1]
    images = np.empty((m, *first[0].shape[1:]), dtype=first[0].dtype)
    sdrs = np.empty((m, first[2].shape[1]), dtype=first[2].dtype)
    labels = None if first[1] is None else np.empty(m, dtype=np.int64)
    for sel, (img, lab, sdr) in parts.values():
        images[sel] = img
        sdrs[sel] = sdr
        if labels is not None:
            labels[sel] = lab
    return images, labels, sdrs
