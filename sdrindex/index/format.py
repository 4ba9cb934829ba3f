"""The on-disk index: ``index.json`` (header, parameters, array specs) plus one ``.npy`` per array.

``index.json`` holds ``format`` ("sdrindex.index"), ``version`` (1), ``backend``, ``n_bits``,
``n_items``, ``params`` (every parameter of :data:`NNDESCENT_DEFAULTS`) and ``arrays``
(name -> ``{"dtype", "shape"}``; the names and dtypes are the backend's ``array_specs``).
The checks here refuse anything else with a :class:`DataError` naming the file and the fix
(a bundle turns it into a ``BundleError`` naming the bundle too).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._store import check_format, data_error
from ..errors import DataError, ParameterError
from .params import NNDESCENT_DEFAULTS, check_params

__all__ = ["FORMAT", "FORMAT_VERSION", "check_header", "check_array_specs", "check_csr"]

FORMAT = "sdrindex.index"
FORMAT_VERSION = 1


_FIX = "save the index again with SDRIndex.save"


def _bad(meta_file: Path, why: str) -> DataError:
    return data_error(meta_file, why, _FIX)


def check_header(meta: Any, meta_file: Path, backends: Collection[str]) -> None:
    """Check everything in ``index.json`` but the arrays (see :func:`check_array_specs`)."""
    check_format(meta, meta_file, FORMAT, FORMAT_VERSION, _FIX)
    backend = meta.get("backend")
    if backend not in backends:
        raise _bad(meta_file, f"unknown backend {backend!r}")
    for key in ("n_bits", "n_items"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _bad(meta_file, f"{key} must be a positive integer, got {v!r}")
    params = meta.get("params")
    if not isinstance(params, dict) or set(params) != set(NNDESCENT_DEFAULTS):
        raise _bad(meta_file, "params are missing or unknown")
    try:
        check_params(params)
    except ParameterError as exc:
        raise _bad(meta_file, str(exc)) from exc


def check_array_specs(
    meta: dict[str, Any], meta_file: Path, expected: Mapping[str, tuple[str, int]]
) -> None:
    """``meta["arrays"]`` names exactly the ``expected`` arrays, each of its dtype and ndim."""
    arrays = meta.get("arrays")
    if not isinstance(arrays, dict) or set(arrays) != set(expected):
        raise _bad(meta_file, f"arrays must be {sorted(expected)}")
    for name, spec in arrays.items():
        dtype, ndim = expected[name]
        ok = (
            isinstance(spec, dict)
            and spec.get("dtype") == dtype
            and isinstance(spec.get("shape"), list)
            and len(spec["shape"]) == ndim
            and all(isinstance(d, int) and d >= 0 for d in spec["shape"])
        )
        if not ok:
            raise _bad(meta_file, f"array {name!r} must be {ndim}-D of dtype {dtype}, got {spec!r}")


def check_csr(a: dict[str, np.ndarray], ptr: str, idx: str, n_cols: int, path: Path) -> None:
    """a[ptr] starts at 0, never decreases, ends at len(a[idx]); a[idx] lies in [0, n_cols)."""
    indptr, indices = a[ptr], a[idx]
    if indptr.shape[0] == 0 or indptr[0] != 0 or indptr[-1] != indices.shape[0]:
        raise data_error(path / (ptr + ".npy"), f"row pointers do not span {idx}.npy", _FIX)
    if np.any(np.diff(indptr) < 0):
        raise data_error(path / (ptr + ".npy"), "row pointers decrease", _FIX)
    if indices.shape[0] and (indices.min() < 0 or indices.max() >= n_cols):
        raise data_error(path / (idx + ".npy"), f"entries outside [0, {n_cols})", _FIX)
