"""TrainingTable: images, their SDRs, optional labels and stable ids, row by row.

Row ``i`` pairs ``images[i]`` with ``sdrs[i]`` (packed, see :mod:`sdrindex.sdr`), ``labels[i]``
(when the dataset has labels) and ``ids[i]``. Ids are stable integers: ``0..n-1`` for a new
table unless given, and each :meth:`TrainingTable.append` continues from the largest id + 1.

On disk a table is a directory of plain ``.npy`` files (``images.npy``, ``sdrs.npy``,
``ids.npy``, ``labels.npy`` when there are labels) and ``table.json``. :meth:`load` maps the
arrays read-only (``mmap_mode="r"``) by default, so several server workers share one copy
through the page cache; nothing is unpickled. A missing or damaged file raises
:class:`~sdrindex.errors.DataError` naming it (inside a bundle, ``Bundle.load`` reports it as a
:class:`~sdrindex.errors.BundleError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._store import check_format, data_error, load_array, read_json, save_arrays, write_json
from .errors import ParameterError
from .sdr import n_bytes, validate

__all__ = ["TrainingTable", "TableRows"]

_FORMAT = "sdrindex.table"
_FORMAT_VERSION = 1
_FIX = "save the table again with TrainingTable.save"


@dataclass(frozen=True)
class TableRows:
    """Some rows of a :class:`TrainingTable`, in the order they were asked for.

    Attributes
    ----------
    ids : ndarray of shape (m,), int64
    images : ndarray of shape (m, H, W), uint8
    sdrs : ndarray of shape (m, ceil(n_bits/8)), uint8, packed
    labels : ndarray of shape (m,), or None when the table has no labels
    """

    ids: NDArray[np.int64]
    images: NDArray[np.uint8]
    sdrs: NDArray[np.uint8]
    labels: NDArray[np.integer] | None


def _check_images(images: ArrayLike, what: str = "images") -> NDArray[np.uint8]:
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise ParameterError(f"{what} must have shape (n, height, width), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ParameterError(
            f"{what} must be uint8 (0-255), got {arr.dtype}; convert with "
            "np.clip(x, 0, 255).astype(np.uint8) after scaling"
        )
    return arr


def _check_labels(labels: ArrayLike, n: int) -> NDArray[np.integer]:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ParameterError(f"labels must have shape ({n},), one per row, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ParameterError(
            f"labels must be integers, got dtype {arr.dtype}; map class names to integers first"
        )
    return arr


def _check_ids(ids: ArrayLike, n: int) -> NDArray[np.int64]:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ParameterError(f"ids must have shape ({n},), one per row, got {arr.shape}")
    if n and not np.issubdtype(arr.dtype, np.integer):
        raise ParameterError(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if n and arr.min() < 0:
        raise ParameterError(f"ids must be >= 0, got {arr.min()}")
    if np.unique(arr).shape[0] != n:
        raise ParameterError("ids must be unique; leave ids=None to number the rows 0..n-1")
    return arr


class TrainingTable:
    """Images, their SDRs, optional labels and stable integer ids.

    Parameters
    ----------
    images : array_like of shape (n, H, W), uint8
    sdrs : array_like
        Packed (n, ceil(n_bits/8)) uint8 or dense (n, n_bits) 0/1; stored packed.
    n_bits : int
        SDR width.
    labels : array_like of shape (n,), integer, optional
        None for datasets without labels.
    ids : array_like of shape (n,), integer, optional
        Unique non-negative ids; default ``0..n-1``.

    Raises
    ------
    ParameterError
        For an empty table, mismatched lengths, wrong dtypes or shapes.
    """

    def __init__(
        self,
        images: ArrayLike,
        sdrs: ArrayLike,
        n_bits: int,
        labels: ArrayLike | None = None,
        ids: ArrayLike | None = None,
    ) -> None:
        images = _check_images(images)
        n = images.shape[0]
        if n == 0:
            raise ParameterError(
                "a TrainingTable needs at least one row: build it from the first batch, then append"
            )
        packed = validate(sdrs, n_bits, "SDRs")
        if packed.shape[0] != n:
            raise ParameterError(f"{n} images but {packed.shape[0]} SDRs: pass one SDR per image")
        self.n_bits = int(n_bits)
        self.images = images
        self.sdrs = packed
        self.labels = None if labels is None else _check_labels(labels, n)
        self.ids = np.arange(n, dtype=np.int64) if ids is None else _check_ids(ids, n)
        self._lookup: tuple[NDArray[np.int64] | None, NDArray[np.int64]] | None = None

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def __repr__(self) -> str:
        return (
            f"TrainingTable(n={len(self)}, image_shape={self.image_shape}, "
            f"n_bits={self.n_bits}, labels={'yes' if self.has_labels else 'no'})"
        )

    # ------------------------------------------------------------------ rows

    def positions(self, ids: ArrayLike) -> NDArray[np.int64]:
        """Row positions of the given ids.

        Parameters
        ----------
        ids : int or array_like of int, shape (m,)

        Returns
        -------
        ndarray of shape (m,), int64

        Raises
        ------
        ParameterError
            When an id is not in the table (the message lists a few).
        """
        wanted = np.atleast_1d(np.asarray(ids))
        if wanted.ndim != 1 or (wanted.size and not np.issubdtype(wanted.dtype, np.integer)):
            raise ParameterError(
                f"ids must be integers in a 1-D array, got {wanted.dtype} {wanted.shape}"
            )
        wanted = wanted.astype(np.int64, copy=False)
        n = len(self)
        order, sorted_ids = self._lookup_arrays()
        if order is None:  # ids are 0..n-1: an id is its position
            pos = wanted
            missing = (wanted < 0) | (wanted >= n)
        else:
            at = np.clip(np.searchsorted(sorted_ids, wanted), 0, n - 1)
            missing = sorted_ids[at] != wanted
            pos = order[at]
        if missing.any():
            bad = np.unique(wanted[missing])
            shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
            raise ParameterError(
                f"{bad.size} id(s) not in the table: {shown} "
                f"(ids run from {self.ids.min()} to {self.ids.max()}, {n} rows)"
            )
        return pos

    def get(self, ids: ArrayLike) -> TableRows:
        """The rows with the given ids, in that order (see :class:`TableRows`)."""
        pos = self.positions(ids)
        return TableRows(
            ids=np.asarray(self.ids[pos]),
            images=np.asarray(self.images[pos]),
            sdrs=np.asarray(self.sdrs[pos]),
            labels=None if self.labels is None else np.asarray(self.labels[pos]),
        )

    def _lookup_arrays(self) -> tuple[NDArray[np.int64] | None, NDArray[np.int64]]:
        """(order, sorted ids) for id -> position look-ups; order is None when ids == 0..n-1."""
        if self._lookup is None:
            n = len(self)
            if (
                self.ids[0] == 0
                and self.ids[-1] == n - 1
                and np.array_equal(self.ids, np.arange(n))
            ):
                self._lookup = (None, self.ids)
            else:
                order = np.argsort(self.ids, kind="stable")
                self._lookup = (order, self.ids[order])
        return self._lookup

    # ------------------------------------------------------------------ growth

    def append(
        self, images: ArrayLike, sdrs: ArrayLike, labels: ArrayLike | None = None
    ) -> NDArray[np.int64]:
        """Add rows; returns their new ids, shape (m,), continuing from the largest id + 1.

        The arrays are concatenated into memory (a memory-mapped table becomes an ordinary
        one; save it again to share it).
        """
        images = _check_images(images, "appended images")
        m = images.shape[0]
        if images.shape[1:] != self.images.shape[1:]:
            raise ParameterError(
                f"appended images are {images.shape[1:]}, the table holds {self.image_shape}"
            )
        packed = validate(sdrs, self.n_bits, "appended SDRs")
        if packed.shape[0] != m:
            raise ParameterError(f"{m} images but {packed.shape[0]} SDRs: pass one SDR per image")
        if self.labels is not None and labels is None:
            raise ParameterError("the table has labels: pass labels for the appended rows")
        if self.labels is None and labels is not None:
            raise ParameterError("the table has no labels: append without labels")
        new_labels = None if labels is None else _check_labels(labels, m)
        start = int(self.ids.max()) + 1
        new_ids = np.arange(start, start + m, dtype=np.int64)
        self.images = np.concatenate([self.images, images])
        self.sdrs = np.concatenate([self.sdrs, packed])
        if self.labels is not None:
            self.labels = np.concatenate([self.labels, new_labels])
        self.ids = np.concatenate([self.ids, new_ids])
        self._lookup = None
        return new_ids

    # ------------------------------------------------------------------ persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"images": self.images, "sdrs": self.sdrs, "ids": self.ids}
        if self.labels is not None:
            arrays["labels"] = self.labels
        return arrays

    def save(self, path: str | Path) -> None:
        """Write the table to a directory (created if needed) as ``.npy`` files + table.json.

        Not atomic on its own: ``Bundle.save`` writes it inside a new version directory.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = self._arrays()
        specs = save_arrays(path, arrays)
        if self.labels is None and (path / "labels.npy").exists():
            (path / "labels.npy").unlink()  # a stale file from an earlier save
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "n_rows": len(self),
            "n_bits": self.n_bits,
            "image_shape": list(self.image_shape),
            "has_labels": self.has_labels,
            "arrays": specs,
        }
        write_json(path / "table.json", meta)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> TrainingTable:
        """Read a table written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
        mmap : bool
            Map the arrays read-only (shared through the page cache); False reads them.

        Raises
        ------
        DataError
            When a file is missing, unreadable or inconsistent; the message names it.
        """
        path = Path(path)
        meta_file = path / "table.json"
        meta = read_json(meta_file, f"is {path} a table saved by TrainingTable.save?")
        n, n_bits, shape, has_labels = _check_meta(meta, meta_file)
        expected = {
            "images": ("|u1", [n, *shape]),
            "sdrs": ("|u1", [n, n_bytes(n_bits)]),
            "ids": ("<i8", [n]),
        }
        arrays: dict[str, Any] = {}
        for name, (dtype, dims) in expected.items():
            arrays[name] = load_array(path / f"{name}.npy", mmap, dtype, dims, "table")
        labels = None
        if has_labels:
            labels = load_array(path / "labels.npy", mmap, None, [n], "table")
            if not np.issubdtype(labels.dtype, np.integer):
                raise data_error(
                    path / "labels.npy", f"labels must be integers, got {labels.dtype}", _FIX
                )
        try:
            return cls(arrays["images"], arrays["sdrs"], n_bits, labels, arrays["ids"])
        except ParameterError as exc:
            raise data_error(path, f"inconsistent table ({exc})", _FIX) from exc


def _check_meta(meta: Any, meta_file: Path) -> tuple[int, int, list[int], bool]:
    def bad(why: str) -> Exception:
        return data_error(meta_file, why, _FIX)

    check_format(meta, meta_file, _FORMAT, _FORMAT_VERSION, _FIX)

    def pos_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    n, n_bits, shape = meta.get("n_rows"), meta.get("n_bits"), meta.get("image_shape")
    if not pos_int(n):
        raise bad(f"n_rows must be a positive integer, got {n!r}")
    if not pos_int(n_bits):
        raise bad(f"n_bits must be a positive integer, got {n_bits!r}")
    if not (isinstance(shape, list) and len(shape) == 2 and all(pos_int(d) for d in shape)):
        raise bad(f"image_shape must be [height, width], got {shape!r}")
    has_labels = meta.get("has_labels")
    if not isinstance(has_labels, bool):
        raise bad(f"has_labels must be true or false, got {has_labels!r}")
    return n, n_bits, shape, has_labels
