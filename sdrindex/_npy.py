"""The ``.npy`` directories of tables and indexes: save arrays, load them checked, no pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Write ``name.npy`` for each array; returns their ``{"dtype", "shape"}`` for the JSON."""
    for name, arr in arrays.items():
        np.save(path / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    return {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()}


def load_array(
    file: Path, mmap: bool, dtype: str | None, shape: list[int], what: str
) -> np.ndarray:
    """One array, memory-mapped read-only or read, as a plain ndarray.

    ``dtype`` None accepts any dtype. Raises :class:`BundleError` naming the file when it is
    missing, unreadable or not of the dtype and shape expected (``what``: "table", "index").
    """
    try:
        arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise BundleError(
            f"{file}: missing; the {what} directory is incomplete, save it again"
        ) from None
    except (OSError, ValueError, EOFError) as exc:
        raise BundleError(
            f"{file}: not a readable .npy file ({exc}); save the {what} again"
        ) from exc
    if (dtype is not None and arr.dtype.str != dtype) or list(arr.shape) != shape:
        raise BundleError(
            f"{file}: holds {arr.dtype.str} {list(arr.shape)}, expected "
            f"{dtype or 'integer'} {shape}; the file was damaged or replaced, save the {what} "
            "again"
        )
    # a plain ndarray view of the mapping: numba's dispatcher types np.memmap (a subclass)
    # on a slow path, ~0.5 us per argument per call
    return np.asarray(arr)
