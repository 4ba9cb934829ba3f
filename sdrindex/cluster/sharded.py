"""A sharded bundle behind the interface of one :class:`~sdrindex.bundle.Bundle`.

:class:`ShardedBundle` has what the reconstructors, the label readouts, ``sdrindex query``,
``sdrindex evaluate`` and the service read of a bundle: ``sp``, ``decoder``, ``encode``, an
``index`` with ``query(packed, k, **params)`` and a ``table`` with ``len``, ``positions``,
``get``, ``labels``, ``images`` and ``sdrs``. Both are backed by any
:class:`~.shardset.ShardSet` (every shard in this process, or one Ray actor per shard).
Global ids are the positions of the sharded table: ``positions`` checks them and returns
them, and the table's ``images[...]`` / ``sdrs[...]`` fetch the rows asked for from their
shards; ``np.asarray(table.images)`` gathers every row (for the evaluation's full passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex.bundle import Bundle
from sdrindex.errors import ParameterError
from sdrindex.sdr import n_bytes, validate
from sdrindex.table import TableRows

from .layout import ShardedLayout
from .shardset import LocalShardSet, ShardSet

__all__ = ["ShardedBundle", "ShardedIndex", "ShardedTable", "open_bundle", "open_sharded"]

#: Rows fetched per call when a whole column is gathered.
_CHUNK = 65536


class _Column:
    """``images`` or ``sdrs`` of a sharded table: indexing fetches only the rows asked for."""

    def __init__(self, table: ShardedTable, which: int, tail: tuple[int, ...]) -> None:
        self._table, self._which, self._tail = table, which, tail
        self.dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._table), *self._tail)

    @property
    def ndim(self) -> int:
        return 1 + len(self._tail)

    def __len__(self) -> int:
        return len(self._table)

    def _fetch(self, ids: NDArray[np.int64]) -> NDArray[np.uint8]:
        return self._table._rows(ids)[self._which]

    def __getitem__(self, key: Any) -> NDArray[np.uint8]:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        n = len(self._table)
        if isinstance(key, int | np.integer):
            i = int(key) + n if key < 0 else int(key)
            out = self._fetch(np.array([i], np.int64))[0]
        elif isinstance(key, slice):
            out = self._fetch(np.arange(n, dtype=np.int64)[key])
        else:
            arr = np.asarray(key)
            ids = np.flatnonzero(arr) if arr.dtype == bool else arr.astype(np.int64)
            out = self._fetch(ids.reshape(-1)).reshape((*ids.shape, *self._tail))
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray:
        out = self._table._gathered(self._which)
        return out if dtype is None else out.astype(dtype)


class _Ids:
    """``table.ids`` of a sharded table without an array of n ids: ``ids[pos]`` is ``pos``."""

    def __init__(self, table: ShardedTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | np.integer):
            n = len(self._table)
            return self._table.positions([int(key) + n if key < 0 else int(key)])[0]
        if isinstance(key, slice):
            return np.arange(len(self._table), dtype=np.int64)[key]
        return self._table.positions(np.asarray(key).reshape(-1)).reshape(np.shape(key))

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray:
        return np.arange(len(self._table), dtype=dtype or np.int64)


class ShardedTable:
    """The rows of every shard as one table (global ids 0..n-1 are its positions)."""

    def __init__(
        self, shardset: ShardSet, n_bits: int, image_shape: tuple[int, int], has_labels: bool
    ) -> None:
        self.shardset = shardset
        self.n_bits = int(n_bits)
        self._image_shape = (int(image_shape[0]), int(image_shape[1]))
        self._has_labels = bool(has_labels)
        self.images = _Column(self, 0, self._image_shape)
        self.sdrs = _Column(self, 2, (n_bytes(self.n_bits),))
        self._cache: dict[tuple[int, int], NDArray] = {}

    def __len__(self) -> int:
        return int(self.shardset.n_items)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self._image_shape

    @property
    def has_labels(self) -> bool:
        return self._has_labels

    @property
    def ids(self) -> _Ids:
        """The ids, position by position (they are the positions: 0..n-1)."""
        return _Ids(self)

    @property
    def labels(self) -> NDArray[np.int64] | None:
        """Every item's label, in id order (gathered once per item count), or None."""
        if not self._has_labels:
            return None
        return self._gathered(1)

    def __repr__(self) -> str:
        return (
            f"ShardedTable(n={len(self)}, shards={self.shardset.n_shards}, "
            f"image_shape={self.image_shape}, n_bits={self.n_bits})"
        )

    def _rows(self, ids: NDArray[np.int64]) -> tuple:
        return self.shardset.rows(np.asarray(ids, dtype=np.int64))

    def _gathered(self, which: int) -> NDArray:
        """Column ``which`` (0 images, 1 labels, 2 sdrs) of every row, cached per size."""
        n = len(self)
        key = (which, n)
        if key not in self._cache:
            fast = getattr(self.shardset, "column", None)
            if fast is not None:
                col = fast(which)
            else:
                parts = [
                    self._rows(np.arange(lo, min(n, lo + _CHUNK), dtype=np.int64))[which]
                    for lo in range(0, n, _CHUNK)
                ]
                col = np.concatenate(parts)
            self._cache = {k: v for k, v in self._cache.items() if k[1] == n}
            self._cache[key] = col
        return self._cache[key]

    def positions(self, ids: ArrayLike) -> NDArray[np.int64]:
        """Positions of global ids: the ids themselves, checked (ParameterError if absent)."""
        wanted = np.atleast_1d(np.asarray(ids))
        if wanted.ndim != 1 or (wanted.size and not np.issubdtype(wanted.dtype, np.integer)):
            raise ParameterError(
                f"ids must be integers in a 1-D array, got {wanted.dtype} {wanted.shape}"
            )
        wanted = wanted.astype(np.int64, copy=False)
        n = len(self)
        bad = (wanted < 0) | (wanted >= n)
        if bad.any():
            shown = ", ".join(str(int(v)) for v in np.unique(wanted[bad])[:5])
            raise ParameterError(
                f"id(s) not in the table: {shown} (ids run from 0 to {n - 1}, {n} rows)"
            )
        return wanted

    def get(self, ids: ArrayLike) -> TableRows:
        """The rows with the given ids, in that order, fetched from their shards."""
        pos = self.positions(ids)
        images, labels, sdrs = self._rows(pos)
        return TableRows(ids=pos, images=images, sdrs=np.asarray(sdrs), labels=labels)


class ShardedIndex:
    """Top-k over every shard, merged with the single index's ordering."""

    def __init__(self, shardset: ShardSet, n_bits: int, backend: str) -> None:
        self.shardset = shardset
        self.n_bits = int(n_bits)
        self.backend = backend
        self.n_buffered = 0

    @property
    def n_items(self) -> int:
        return int(self.shardset.n_items)

    def __len__(self) -> int:
        return self.n_items

    def query(
        self,
        sdrs: ArrayLike,
        k: int = 10,
        *,
        ef: int | None = None,
        epsilon: float | None = None,
        n_entry_points: int | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """As :meth:`sdrindex.index.SDRIndex.query`, over every shard.

        Returns
        -------
        ids : ndarray of shape (n_queries, k), int64
        overlaps : ndarray of shape (n_queries, k), int32
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ParameterError(f"k must be an integer >= 1, got {k!r}")
        packed = validate(sdrs, self.n_bits, "query SDRs")
        if packed.shape[0] == 0:
            return np.empty((0, k), np.int64), np.empty((0, k), np.int32)
        given = {"ef": ef, "epsilon": epsilon, "n_entry_points": n_entry_points}
        params = {n: v for n, v in given.items() if v is not None}
        return self.shardset.query(packed, int(k), params)


@dataclass
class ShardedBundle:
    """A sharded bundle, read like a :class:`~sdrindex.bundle.Bundle` (see the module doc)."""

    sp: Any
    shardset: ShardSet
    table: ShardedTable
    index: ShardedIndex
    encoder: dict[str, Any]
    dataset: dict[str, Any]
    decoder: dict[str, NDArray] | None
    manifest: dict[str, Any]
    path: Path | None
    root: Path

    threshold = Bundle.threshold
    encode = Bundle.encode

    @property
    def n_shards(self) -> int:
        return int(self.shardset.n_shards)

    def add(self, images: ArrayLike, labels: ArrayLike | None = None) -> NDArray[np.int64]:
        """Encode and append items, each on its owning shard, saved durably before this
        returns (no ``save`` to call); their global ids."""
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        return self.shardset.add(images, None if labels is None else np.asarray(labels))

    def summary(self) -> dict[str, Any]:
        """As :meth:`Bundle.summary`, plus ``n_shards`` and each shard's status."""
        return {
            **Bundle.summary(self),  # type: ignore[arg-type]  # reads the same attributes
            "n_shards": self.n_shards,
            "shards": self.shardset.status(),
        }

    def close(self) -> None:
        self.shardset.close()


def open_sharded(
    path: str | Path,
    shardset_factory: Any = LocalShardSet,
    *,
    verify: bool = True,
) -> ShardedBundle:
    """Open the sharded bundle ``path`` with its shards behind ``shardset_factory``.

    Parameters
    ----------
    path : path
        The sharded bundle folder (or its live top-level version).
    shardset_factory : class with ``open(root, verify=...)``, or callable ``(root) -> ShardSet``
        :class:`LocalShardSet` (default: every shard in this process), or e.g.
        ``lambda root: RayShardSet.connect(address, root)``.
    verify : bool
        Check every file's SHA-256 (the top level's here; the shards' in the factory).
    """
    layout = ShardedLayout.load(path, verify=verify)
    if hasattr(shardset_factory, "open"):
        shardset = shardset_factory.open(layout.root, verify=verify)
    else:
        shardset = shardset_factory(layout.root)
    m = layout.manifest
    n_bits = int(layout.sp.n_columns)
    shape = m.get("image_shape") or [28, 28]
    table = ShardedTable(shardset, n_bits, (shape[0], shape[1]), bool(m.get("has_labels")))
    index = ShardedIndex(shardset, n_bits, str((m.get("index") or {}).get("backend", "exact")))
    return ShardedBundle(
        sp=layout.sp,
        shardset=shardset,
        table=table,
        index=index,
        encoder=dict(m.get("encoder") or {"threshold": 128}),
        dataset=dict(m.get("dataset") or {}),
        decoder=layout.decoder,
        manifest=m,
        path=layout.vdir,
        root=layout.root,
    )


def open_bundle(path: str | Path, *, verify: bool = True) -> Bundle | ShardedBundle:
    """The bundle at ``path``: :func:`open_sharded` (local shards) for a sharded one, else
    :meth:`Bundle.load` (what ``sdrindex query``, ``evaluate`` and ``serve`` open)."""
    from .layout import is_sharded

    if is_sharded(path):
        return open_sharded(path, verify=verify)
    return Bundle.load(path, verify=verify)
