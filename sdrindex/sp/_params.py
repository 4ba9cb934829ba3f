"""The Spatial Pooler's parameters: NuPIC's names, their validation, the kernels' view.

:func:`check_params` is NuPIC's constructor checks (with messages naming the fix);
:func:`kernel_params` turns checked parameters into the typed :class:`~._structs.Params`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import ParameterError

from ._structs import Params

__all__ = ["NUPIC_PARAM_NAMES", "PERMANENCE_EPSILON", "UPDATE_PERIOD", "check_params", "dims"]

PERMANENCE_EPSILON = 1e-6
UPDATE_PERIOD = 50

#: NuPIC's camelCase names -> ours.
NUPIC_PARAM_NAMES: dict[str, str] = {
    "inputDimensions": "input_dimensions",
    "columnDimensions": "column_dimensions",
    "potentialRadius": "potential_radius",
    "potentialPct": "potential_pct",
    "globalInhibition": "global_inhibition",
    "localAreaDensity": "local_area_density",
    "numActiveColumnsPerInhArea": "num_active_columns_per_inh_area",
    "stimulusThreshold": "stimulus_threshold",
    "synPermInactiveDec": "syn_perm_inactive_dec",
    "synPermActiveInc": "syn_perm_active_inc",
    "synPermConnected": "syn_perm_connected",
    "minPctOverlapDutyCycle": "min_pct_overlap_duty_cycle",
    "dutyCyclePeriod": "duty_cycle_period",
    "boostStrength": "boost_strength",
    "seed": "seed",
    "wrapAround": "wrap_around",
    "spVerbosity": "sp_verbosity",
}


def dims(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        value = (value,)
    try:
        dims = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{name} must be a sequence of positive integers, got {value!r}"
        ) from None
    if (
        not dims
        or any(d <= 0 for d in dims)
        or any(float(d) != float(v) for d, v in zip(dims, value, strict=True))
    ):
        raise ParameterError(
            f"{name} must be a non-empty sequence of positive integers, got {value!r}"
        )
    return dims


def all_binary(arr: NDArray) -> bool:
    """Every value is 0 or 1 (cheap for the usual uint8 / bool input: one min and max)."""
    if arr.dtype == np.bool_:
        return True
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return int(arr.max()) <= 1
    if np.issubdtype(arr.dtype, np.integer):
        return int(arr.min()) >= 0 and int(arr.max()) <= 1
    return bool(((arr == 0) | (arr == 1)).all())  # floats: also refuses NaN and 0.5


def check_params(sp: Any) -> None:
    """Validate the estimator's parameters as NuPIC's constructor does; raise ParameterError."""
    in_dims = dims(sp.input_dimensions, "input_dimensions")
    col_dims = dims(sp.column_dimensions, "column_dimensions")
    if len(in_dims) != len(col_dims):
        raise ParameterError(
            f"input_dimensions {in_dims} and column_dimensions {col_dims} must have the same "
            "number of dimensions (NuPIC requires it); e.g. (28, 28) with (37, 37)"
        )

    def num(name, lo=None, hi=None, lo_open=False, integer=False):
        v = getattr(sp, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ParameterError(f"{name} must be a number, got {v!r}")
        if not math.isfinite(float(v)):
            raise ParameterError(f"{name} must be finite, got {v!r}")
        if integer and float(v) != int(v):
            raise ParameterError(f"{name} must be an integer, got {v!r}")
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ParameterError(f"{name} must be in {rng}, got {v!r}")
        if hi is not None and v > hi:
            raise ParameterError(f"{name} must be in {rng}, got {v!r}")

    num("potential_radius", 0, None, integer=True)
    num("potential_pct", 0, 1, lo_open=True)
    num("stimulus_threshold", 0)
    for name in ("syn_perm_inactive_dec", "syn_perm_active_inc", "syn_perm_connected"):
        num(name, 0, 1)
    num("min_pct_overlap_duty_cycle", 0, 1)
    num("duty_cycle_period", 1, None, integer=True)
    num("boost_strength", 0)
    num("seed", -1, None, integer=True)
    num("local_area_density", -math.inf, 1)
    num("num_active_columns_per_inh_area", -math.inf, None)
    lad = float(sp.local_area_density)
    nac = float(sp.num_active_columns_per_inh_area)
    if lad > 0:
        if lad > 0.5:
            raise ParameterError(
                f"local_area_density must be in (0, 0.5] (NuPIC's limit), got {lad!r}"
            )
    elif nac <= 0:
        raise ParameterError(
            "no density given: set local_area_density in (0, 0.5] or "
            f"num_active_columns_per_inh_area > 0 (got {lad!r} and {nac!r})"
        )
    if sp.syn_perm_active_inc / 2.0 >= sp.syn_perm_connected:
        raise ParameterError(
            "syn_perm_active_inc / 2 (the trim threshold) must be below syn_perm_connected: "
            f"got syn_perm_active_inc={sp.syn_perm_active_inc!r}, "
            f"syn_perm_connected={sp.syn_perm_connected!r}"
        )
    if sp.syn_perm_connected <= 0 and sp.stimulus_threshold > 0:
        raise ParameterError("syn_perm_connected must be > 0 when stimulus_threshold > 0")
    if not isinstance(sp.global_inhibition, (bool, np.bool_)):
        raise ParameterError(
            f"global_inhibition must be True or False, got {sp.global_inhibition!r}"
        )
    if not isinstance(sp.wrap_around, (bool, np.bool_)):
        raise ParameterError(f"wrap_around must be True or False, got {sp.wrap_around!r}")
    # The smallest potential pool must hold stimulus_threshold synapses, or NuPIC's
    # raise-to-threshold loop can never finish.
    n_in = int(np.prod(in_dims))
    radius = int(min(sp.potential_radius, n_in))
    smallest = 1
    for d in in_dims:
        side = min(d, 2 * radius + 1) if sp.wrap_around else min(d, radius + 1)
        smallest *= side
    pool = int(smallest * float(sp.potential_pct) + 0.5)
    if pool < float(sp.stimulus_threshold):
        raise ParameterError(
            f"stimulus_threshold={sp.stimulus_threshold!r} is above the smallest potential "
            f"pool ({pool} inputs with potential_radius={sp.potential_radius}, "
            f"potential_pct={sp.potential_pct}); lower it or widen the pool"
        )


_KEY_NAMES = tuple(NUPIC_PARAM_NAMES.values())[2:]


def params_key(sp: Any) -> tuple:
    """The parameter values as a comparable tuple: a different key means re-check.

    Called on every public call, so kept to a few attribute reads; the two dimension
    parameters (lists, tuples or arrays) are frozen to tuples.
    """
    d = sp.__dict__
    return (_frozen(d["input_dimensions"]), _frozen(d["column_dimensions"])) + tuple(
        map(d.__getitem__, _KEY_NAMES)
    )


def _frozen(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, np.ndarray)) else v


def kernel_params(sp: Any) -> Params:
    """The checked parameters of ``sp`` as the kernels take them."""
    in_dims = dims(sp.input_dimensions, "input_dimensions")
    col_dims = dims(sp.column_dimensions, "column_dimensions")
    n_in = int(np.prod(in_dims))
    in_coords = np.stack(np.unravel_index(np.arange(n_in), in_dims), axis=1).astype(np.int64)
    return Params(
        inc=np.float32(sp.syn_perm_active_inc),
        dec=np.float32(sp.syn_perm_inactive_dec),
        conn_thr=np.float32(sp.syn_perm_connected - PERMANENCE_EPSILON),
        trim=np.float32(sp.syn_perm_active_inc / 2.0),
        below_inc=np.float32(sp.syn_perm_connected / 10.0),
        boost_strength=np.float32(sp.boost_strength),
        local_area_density=float(sp.local_area_density),
        stim=float(sp.stimulus_threshold),
        min_pct=float(sp.min_pct_overlap_duty_cycle),
        global_inhibition=bool(sp.global_inhibition),
        wrap_around=bool(sp.wrap_around),
        num_active_per_area=int(sp.num_active_columns_per_inh_area),
        duty_cycle_period=int(sp.duty_cycle_period),
        update_period=UPDATE_PERIOD,
        max_col_dim=int(max(col_dims)),
        col_dims=np.asarray(col_dims, np.int64),
        in_dims=np.asarray(in_dims, np.int64),
        in_coords=np.ascontiguousarray(in_coords),
    )
