"""Saving and loading a Spatial Pooler as a plain ``.npz`` (no pickle).

Format version 1: a ``meta`` JSON blob (parameters in NuPIC's camelCase, counters) and
the potential pools as CSR (``pool_ptr``, ``pool_idx``, ``pool_perm``) plus the four
per-column float32 arrays. Bundles store SPs in this format: it must keep loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sdrindex._store import atomic_write, check_format, data_error, reading
from sdrindex.errors import ParameterError

__all__ = ["FORMAT_VERSION", "save", "load"]

FORMAT = "sdrindex.SpatialPooler"
FORMAT_VERSION = 1
_FIX = "save a SpatialPooler there again with sp.save(path)"


def save(sp: Any, path: str | Path) -> None:
    """Save parameters and state as a ``.npz`` (no pickle); written atomically."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "params": sp.nupic_params(),
        "iteration_num": sp.iteration_num_,
        "iteration_learn_num": sp.iteration_learn_num_,
        "inhibition_radius": sp.inhibition_radius_,
    }
    # Pools as CSR (pointers, input indices, permanences): 1 MB instead of 25 MB dense.
    arrays = {
        "pool_ptr": sp._pot_ptr,
        "pool_idx": sp._pot_idx,
        "pool_perm": sp._perm_data,
        "boost_factors": sp.boost_factors_,
        "active_duty_cycles": sp.active_duty_cycles_,
        "overlap_duty_cycles": sp.overlap_duty_cycles_,
        "min_overlap_duty_cycles": sp.min_overlap_duty_cycles_,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load(cls: type, path: str | Path) -> Any:
    """Load a Spatial Pooler written by :meth:`save`; never unpickles."""
    path = Path(path)
    with reading(path, _FIX):
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded as z:
            data = {k: z[k] for k in z.files}
    try:
        meta = json.loads(bytes(data.pop("meta")).decode())
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
        params = meta["params"]
        radius = int(meta["inhibition_radius"])
        iteration_num = int(meta["iteration_num"])
        iteration_learn_num = int(meta["iteration_learn_num"])
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise data_error(path, f"missing or unreadable metadata ({exc})", _FIX) from exc
    check_format(meta, path, FORMAT, FORMAT_VERSION, _FIX, version_key="format_version")
    if not isinstance(params, dict):
        raise data_error(path, "metadata 'params' is not a table", _FIX)
    try:
        sp = cls.from_nupic_params(params)
    except ParameterError as exc:
        raise data_error(path, f"invalid SP parameters ({exc})", _FIX) from exc
    n_col, n_in = sp.n_columns, sp.n_inputs
    shapes = {
        "boost_factors": (n_col,),
        "active_duty_cycles": (n_col,),
        "overlap_duty_cycles": (n_col,),
        "min_overlap_duty_cycles": (n_col,),
        "pool_ptr": (n_col + 1,),
    }
    for key, shape in shapes.items():
        if key not in data or data[key].shape != shape:
            raise data_error(path, f"array {key!r} missing or not of shape {shape}", _FIX)
    ptr, idx, prm = data["pool_ptr"], data.get("pool_idx"), data.get("pool_perm")
    nnz = int(ptr[-1]) if ptr.size else 0
    if (
        idx is None
        or prm is None
        or idx.shape != (nnz,)
        or prm.shape != (nnz,)
        or ptr[0] != 0
        or np.any(np.diff(ptr) < 0)
        or (nnz and (idx.min() < 0 or idx.max() >= n_in))
        or not np.isfinite(prm).all()
    ):
        raise data_error(path, "inconsistent potential pools / permanences", _FIX)
    rows = np.repeat(np.arange(n_col), np.diff(ptr))
    pot = np.zeros((n_col, n_in), np.uint8)
    pot[rows, idx] = 1
    if int(pot.sum()) != nnz:
        raise data_error(path, "a potential pool lists an input twice", _FIX)
    dense = np.zeros((n_col, n_in), np.float32)
    dense[rows, idx] = prm
    sp._set_state(
        {"potential": pot, "permanences": dense, "inhibition_radius": radius},
        raise_perm=False,
    )
    sp.boost_factors_ = data["boost_factors"].astype(np.float32)
    sp.active_duty_cycles_ = data["active_duty_cycles"].astype(np.float32)
    sp.overlap_duty_cycles_ = data["overlap_duty_cycles"].astype(np.float32)
    sp.min_overlap_duty_cycles_ = data["min_overlap_duty_cycles"].astype(np.float32)
    sp.iteration_num_ = iteration_num
    sp.iteration_learn_num_ = iteration_learn_num
    return sp
