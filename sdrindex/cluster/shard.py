"""One shard of a sharded bundle: its Bundle (memory-mapped) and the global id rule.

A :class:`Shard` answers in **global** ids: local row ``j`` of shard ``s`` out of ``N`` is
global id ``j * N + s`` (:mod:`sdrindex.cluster.layout`). It is what every shard set runs per
shard: :class:`~sdrindex.cluster.shardset.LocalShardSet` holds all of them in one process,
a Ray actor holds one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex._store import bundle_errors, sha256_file
from sdrindex.bundle import Bundle, check_labels_arg, update_lock
from sdrindex.errors import BundleError, ParameterError
from sdrindex.sdr import readonly

from .layout import read_top, shard_dir, shard_version_dir

__all__ = ["Shard"]


class Shard:
    """One shard of a sharded bundle: its Bundle (memory-mapped) and the id rule.

    Parameters
    ----------
    bundle : Bundle
        The shard's bundle (local ids 0..m-1).
    shard, n_shards : int
        Which shard of how many.
    root : Path
        The sharded bundle folder (the shard lives in ``root/shards/shard-NNNNN``).
    """

    def __init__(self, bundle: Bundle, shard: int, n_shards: int, root: Path) -> None:
        self.bundle = bundle
        self.shard = int(shard)
        self.n_shards = int(n_shards)
        self.root = Path(root)

    @classmethod
    def open(cls, path: str | Path, shard: int, n_shards: int, *, verify: bool = True) -> Shard:
        """Open shard ``shard`` of the sharded bundle ``path`` (memory-mapped).

        Opens the shard's live version when it belongs to the top level's build, else the
        version the top level pins (see :mod:`sdrindex.cluster.layout`); ``verify`` checks
        every file's SHA-256 (sizes are always checked).

        Raises
        ------
        BundleError
            Naming the folder or file: the shard is missing or damaged, its SP is not the
            bundle's, or ``n_shards`` is not the bundle's.
        """
        root, vdir, top, entries = read_top(path)
        if n_shards != len(entries) or not 0 <= shard < len(entries):
            raise BundleError(
                f"{root}: holds {len(entries)} shards; asked for shard {shard} of {n_shards}"
            )
        sver = shard_version_dir(root, top, entries[shard], verify=verify)
        bundle = Bundle.load(sver, verify=verify)
        top_sp = (top.get("files") or {}).get("sp.npz", {}).get("sha256")
        with bundle_errors(sver, "rebuild the sharded bundle"):
            own_sp = bundle.manifest["files"]["sp.npz"]["sha256"]
            if verify and sha256_file(vdir / "sp.npz") != top_sp:
                raise BundleError(f"{vdir / 'sp.npz'}: checksum mismatch (corrupted)")
        if own_sp != top_sp:
            raise BundleError(
                f"{sver / 'sp.npz'}: not the SP of the sharded bundle {root}; rebuild it with "
                "`sdrindex build --shards N --force`"
            )
        return cls(bundle, shard, n_shards, root)

    def refresh(self) -> bool:
        """Re-open the shard if its version on disk moved on (an add by another process);
        returns whether it did."""
        root, _vdir, top, entries = read_top(self.root)
        if len(entries) != self.n_shards:
            raise BundleError(f"{root}: now holds {len(entries)} shards, was {self.n_shards}")
        sver = shard_version_dir(root, top, entries[self.shard], verify=False)
        if (
            self.bundle.path is not None
            and Path(sver).resolve() == Path(self.bundle.path).resolve()
        ):
            return False
        self.bundle = Bundle.load(sver, verify=False)
        return True

    # ------------------------------------------------------------------ sizes

    @property
    def n_items(self) -> int:
        """Items in this shard."""
        return len(self.bundle.table)

    @property
    def version(self) -> str:
        return Path(self.bundle.path).name if self.bundle.path else ""

    def status(self) -> dict[str, Any]:
        """``{"shard", "n_items", "version", "backend"}`` (for ``/readyz`` and ``info``)."""
        return {
            "shard": self.shard,
            "n_items": self.n_items,
            "version": self.version,
            "backend": self.bundle.index.backend,
        }

    # ------------------------------------------------------------------ ids

    def _global(self, local: NDArray[np.int64]) -> NDArray[np.int64]:
        local = np.asarray(local, dtype=np.int64)
        return np.where(local >= 0, local * self.n_shards + self.shard, -1)

    def _local(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        ids = np.atleast_1d(np.asarray(ids))
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ParameterError(
                f"ids must be integers in a 1-D array, got {ids.dtype} {ids.shape}"
            )
        ids = ids.astype(np.int64, copy=False)
        bad = (
            (ids < 0) | (ids % self.n_shards != self.shard) | (ids // self.n_shards >= self.n_items)
        )
        if bad.any():
            shown = ", ".join(str(int(v)) for v in ids[bad][:5])
            raise ParameterError(
                f"id(s) {shown} not held by shard {self.shard} of {self.n_shards} (it holds the "
                f"ids g with g % {self.n_shards} == {self.shard}, {self.n_items} of them)"
            )
        return ids // self.n_shards

    # ------------------------------------------------------------------ queries

    def query(
        self, packed: NDArray[np.uint8], k: int, params: dict[str, Any]
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Top ``k`` of this shard for packed queries (nq, n_bytes), in global ids.

        Returns
        -------
        ids : ndarray of shape (nq, k), int64
        overlaps : ndarray of shape (nq, k), int32
            Overlap descending then id ascending; padded with -1 / -1.
        """
        ids, ov = self.bundle.index.query(packed, k, **(params or {}))
        return self._global(ids), ov

    def rows(
        self, ids: NDArray[np.int64]
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64] | None, NDArray[np.uint8]]:
        """Rows of global ``ids`` (all owned by this shard), in the order given.

        Returns
        -------
        images : ndarray of shape (m, H, W), uint8
        labels : ndarray of shape (m,), int64, or None when the bundle has no labels
        sdrs : ndarray of shape (m, n_bytes), uint8, packed
        """
        got = self.bundle.table.get(self._local(ids))
        labels = None if got.labels is None else got.labels.astype(np.int64)
        return got.images, labels, readonly(got.sdrs)

    # ------------------------------------------------------------------ writes

    def add(
        self, images: NDArray[np.uint8], labels: NDArray[np.int64] | None, first_id: int
    ) -> NDArray[np.int64]:
        """Encode and append items whose global ids are ``first_id + n_shards * j``.

        ``first_id`` must be this shard's next id (``n_items * n_shards + shard``). The
        shard's new version is saved (``Bundle.save`` of the shard folder: fsynced, swapped
        in atomically) before the ids are returned; on any failure the shard stays as it was,
        on disk and here.

        Returns
        -------
        ndarray of shape (m,), int64
            The global ids.
        """
        images = np.asarray(images)
        m = images.shape[0] if images.ndim == 3 else 0
        labels = check_labels_arg(labels, m)
        sdir = shard_dir(self.root, self.shard)
        with update_lock(sdir):
            self.refresh()  # another process may have added since this shard was opened
            expected = self.n_items * self.n_shards + self.shard
            if int(first_id) != expected:
                raise ParameterError(
                    f"shard {self.shard}'s next id is {expected}, got first_id {first_id} (ids "
                    "are dealt round-robin: id g goes to shard g % n_shards, in id order)"
                )
            bundle = Bundle.load(self.bundle.path, verify=False, mmap=True)
            bundle.sp_file = Path(self.bundle.path) / "sp.npz"  # the shared SP's bytes
            local = bundle.add(images, labels)
            vdir = bundle.save(sdir)
        # re-open the saved version memory-mapped: the appended arrays are not held twice
        self.bundle = Bundle.load(vdir, verify=False)
        return self._global(local)
