"""The HTM Spatial Pooler as a scikit-learn style estimator, with NuPIC's semantics.

``SpatialPooler`` takes NuPIC's parameters (in snake_case; ``from_nupic_params`` takes the
camelCase dictionary as users have it), learns online one input at a time in NuPIC's
order, and reproduces NuPIC's Python ``SpatialPooler`` (algorithm version 3) step for
step when started from the same state: the conformance vectors in ``tests/data`` replay
exactly. The hot loops live in :mod:`sdrindex._sp_kernels`.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin

from sdrindex import _sp_kernels as K
from sdrindex import topology
from sdrindex.errors import DataError, ParameterError

__all__ = ["SpatialPooler", "NUPIC_PARAM_NAMES", "FORMAT_VERSION"]

FORMAT_VERSION = 1
PERMANENCE_EPSILON = 1e-6
UPDATE_PERIOD = 50
#: Inference cost model: one vectorised AND+popcount word costs 1/BITS_SPEEDUP of one
#: scattered add (times 2: csr_cost below). 6.0 from 20,000 MNIST images after 10,000 learned,
#: 2026-11-28: the popcount path ran 1.2x (htmcore-mnist), 1.65x (sdrindex-mnist), 16x
#: (forum-global) and 1.0x (forum-local) the scatter path; 4.0 had picked the slower one
#: for htmcore-mnist.
BITS_SPEEDUP = 6.0
INIT_CONNECTED_PCT = 0.5

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


def _dims(value: Any, name: str) -> tuple[int, ...]:
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


def _all_binary(arr: NDArray) -> bool:
    """Every value is 0 or 1 (cheap for the usual uint8 / bool input: one min and max)."""
    if arr.dtype == np.bool_:
        return True
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return int(arr.max()) <= 1
    if np.issubdtype(arr.dtype, np.integer):
        return int(arr.min()) >= 0 and int(arr.max()) <= 1
    return bool(((arr == 0) | (arr == 1)).all())  # floats: also refuses NaN and 0.5


class SpatialPooler(TransformerMixin, BaseEstimator):
    """HTM Spatial Pooler: binary input vectors -> sparse sets of active columns.

    Parameters follow NuPIC's ``SpatialPooler`` (same defaults, same meaning), in snake_case.

    Parameters
    ----------
    input_dimensions, column_dimensions : tuple of int
        Shapes of the input and of the column grid; both of the same rank (any rank).
    potential_radius : int
        Half-width of the hyper-cube of inputs a column may connect to.
    potential_pct : float in (0, 1]
        Fraction of that cube sampled into the column's potential pool.
    global_inhibition : bool
        Pick winners over the whole region (True) or per inhibition neighbourhood.
    local_area_density : float
        Target density of active columns; used when > 0 (in (0, 0.5]), else
        ``num_active_columns_per_inh_area`` is used.
    num_active_columns_per_inh_area : int
        Active columns per inhibition area when ``local_area_density <= 0``.
    stimulus_threshold : float >= 0
        Minimum (boosted, while learning) overlap for a column to become active.
    syn_perm_inactive_dec, syn_perm_active_inc, syn_perm_connected : float in [0, 1]
        Permanence decrement / increment and the connected threshold.
    min_pct_overlap_duty_cycle : float in [0, 1]
        Floor on a column's overlap duty cycle, relative to its neighbours' maximum.
    duty_cycle_period : int >= 1
        Period of the duty-cycle moving averages.
    boost_strength : float >= 0
        Strength of homeostatic boosting (0: none).
    seed : int
        Seed of the random initial state; -1 (NuPIC's default) draws a fresh one.
    wrap_around : bool
        Whether neighbourhoods wrap around the edges.
    sp_verbosity : int
        Accepted for NuPIC compatibility; unused.

    Attributes
    ----------
    permanences_ : ndarray of shape (n_columns, n_inputs), float32
    potential_ : ndarray of shape (n_columns, n_inputs), uint8
    boost_factors_, active_duty_cycles_, overlap_duty_cycles_,
    min_overlap_duty_cycles_ : ndarray of shape (n_columns,), float32
    inhibition_radius_ : int
    iteration_num_, iteration_learn_num_ : int
    """

    def __init__(
        self,
        input_dimensions: Sequence[int] = (32, 32),
        column_dimensions: Sequence[int] = (64, 64),
        potential_radius: int = 16,
        potential_pct: float = 0.5,
        global_inhibition: bool = False,
        local_area_density: float = -1.0,
        num_active_columns_per_inh_area: int = 10,
        stimulus_threshold: float = 0,
        syn_perm_inactive_dec: float = 0.008,
        syn_perm_active_inc: float = 0.05,
        syn_perm_connected: float = 0.10,
        min_pct_overlap_duty_cycle: float = 0.001,
        duty_cycle_period: int = 1000,
        boost_strength: float = 0.0,
        seed: int = -1,
        wrap_around: bool = True,
        sp_verbosity: int = 0,
    ):
        self.input_dimensions = input_dimensions
        self.column_dimensions = column_dimensions
        self.potential_radius = potential_radius
        self.potential_pct = potential_pct
        self.global_inhibition = global_inhibition
        self.local_area_density = local_area_density
        self.num_active_columns_per_inh_area = num_active_columns_per_inh_area
        self.stimulus_threshold = stimulus_threshold
        self.syn_perm_inactive_dec = syn_perm_inactive_dec
        self.syn_perm_active_inc = syn_perm_active_inc
        self.syn_perm_connected = syn_perm_connected
        self.min_pct_overlap_duty_cycle = min_pct_overlap_duty_cycle
        self.duty_cycle_period = duty_cycle_period
        self.boost_strength = boost_strength
        self.seed = seed
        self.wrap_around = wrap_around
        self.sp_verbosity = sp_verbosity
        # Fail fast, as NuPIC's constructor does (fit validates again after set_params).
        self._check_params()

    # ------------------------------------------------------------------ parameters
    @classmethod
    def from_nupic_params(cls, params: dict[str, Any]) -> SpatialPooler:
        """Build from NuPIC's camelCase constructor dictionary.

        Unknown keys raise :class:`ParameterError` naming the key. Snake_case names are
        accepted too, so a dictionary from :meth:`nupic_params` round-trips.
        """
        kwargs: dict[str, Any] = {}
        ours = set(NUPIC_PARAM_NAMES.values())
        for key, value in params.items():
            if key in NUPIC_PARAM_NAMES:
                kwargs[NUPIC_PARAM_NAMES[key]] = value
            elif key in ours:
                kwargs[key] = value
            else:
                raise ParameterError(
                    f"unknown Spatial Pooler parameter {key!r}; known: "
                    + ", ".join(sorted(NUPIC_PARAM_NAMES))
                )
        for key in ("input_dimensions", "column_dimensions"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def nupic_params(self) -> dict[str, Any]:
        """The parameters as NuPIC's camelCase dictionary (JSON-serialisable)."""
        out: dict[str, Any] = {}
        for camel, snake in NUPIC_PARAM_NAMES.items():
            v = getattr(self, snake)
            if snake in ("input_dimensions", "column_dimensions"):
                v = list(_dims(v, snake))
            elif isinstance(v, (np.generic,)):
                v = v.item()
            out[camel] = v
        return out

    def _check_params(self) -> None:
        in_dims = _dims(self.input_dimensions, "input_dimensions")
        col_dims = _dims(self.column_dimensions, "column_dimensions")
        if len(in_dims) != len(col_dims):
            raise ParameterError(
                f"input_dimensions {in_dims} and column_dimensions {col_dims} must have the same "
                "number of dimensions (NuPIC requires it); e.g. (28, 28) with (37, 37)"
            )

        def num(name, lo=None, hi=None, lo_open=False, integer=False):
            v = getattr(self, name)
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
        lad = float(self.local_area_density)
        nac = float(self.num_active_columns_per_inh_area)
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
        if self.syn_perm_active_inc / 2.0 >= self.syn_perm_connected:
            raise ParameterError(
                "syn_perm_active_inc / 2 (the trim threshold) must be below syn_perm_connected: "
                f"got syn_perm_active_inc={self.syn_perm_active_inc!r}, "
                f"syn_perm_connected={self.syn_perm_connected!r}"
            )
        if self.syn_perm_connected <= 0 and self.stimulus_threshold > 0:
            raise ParameterError("syn_perm_connected must be > 0 when stimulus_threshold > 0")
        if not isinstance(self.global_inhibition, (bool, np.bool_)):
            raise ParameterError(
                f"global_inhibition must be True or False, got {self.global_inhibition!r}"
            )
        if not isinstance(self.wrap_around, (bool, np.bool_)):
            raise ParameterError(f"wrap_around must be True or False, got {self.wrap_around!r}")
        # The smallest potential pool must hold stimulus_threshold synapses, or NuPIC's
        # raise-to-threshold loop can never finish.
        n_in = int(np.prod(in_dims))
        radius = int(min(self.potential_radius, n_in))
        smallest = 1
        for d in in_dims:
            side = min(d, 2 * radius + 1) if self.wrap_around else min(d, radius + 1)
            smallest *= side
        pool = int(smallest * float(self.potential_pct) + 0.5)
        if pool < float(self.stimulus_threshold):
            raise ParameterError(
                f"stimulus_threshold={self.stimulus_threshold!r} is above the smallest potential "
                f"pool ({pool} inputs with potential_radius={self.potential_radius}, "
                f"potential_pct={self.potential_pct}); lower it or widen the pool"
            )

    # ------------------------------------------------------------------ shapes
    @property
    def n_inputs(self) -> int:
        return int(np.prod(_dims(self.input_dimensions, "input_dimensions")))

    @property
    def n_columns(self) -> int:
        return int(np.prod(_dims(self.column_dimensions, "column_dimensions")))

    def _in_dims(self) -> tuple[int, ...]:
        return _dims(self.input_dimensions, "input_dimensions")

    def _col_dims(self) -> tuple[int, ...]:
        return _dims(self.column_dimensions, "column_dimensions")

    def _is_initialized(self) -> bool:
        return hasattr(self, "_perm_data")

    # ------------------------------------------------------------------ initial state
    def _random_state(self) -> dict[str, Any]:
        """NuPIC's initialisation procedure (potential pools, permanences) on our RNG."""
        in_dims, col_dims = self._in_dims(), self._col_dims()
        n_in, n_col = self.n_inputs, self.n_columns
        seed = None if int(self.seed) == -1 else int(self.seed)
        rng = np.random.default_rng(seed)
        radius = int(min(self.potential_radius, n_in))
        conn = float(self.syn_perm_connected)
        trim = np.float32(self.syn_perm_active_inc / 2.0)
        potential = np.zeros((n_col, n_in), np.uint8)
        perm = np.zeros((n_col, n_in), np.float32)
        hood = topology.wrapping_neighborhood if self.wrap_around else topology.neighborhood
        for c in range(n_col):
            center = topology.map_column(c, col_dims, in_dims)
            inputs = hood(center, radius, in_dims)
            n_pot = int(inputs.size * float(self.potential_pct) + 0.5)
            chosen = np.sort(rng.choice(inputs, size=n_pot, replace=False))
            potential[c, chosen] = 1
            connected = rng.random(n_pot) <= INIT_CONNECTED_PCT
            r = rng.random(n_pot)
            p = np.where(connected, conn + (1.0 - conn) * r, conn * r)
            p = np.floor(p * 100000) / 100000.0
            row = p.astype(np.float32)
            row[row < trim] = 0
            perm[c, chosen] = row
        return {"potential": potential, "permanences": perm, "inhibition_radius": None}

    def initialize_state(
        self,
        potential: ArrayLike,
        permanences: ArrayLike,
        inhibition_radius: int | None = None,
    ) -> SpatialPooler:
        """Start from a given state instead of a random one.

        Parameters
        ----------
        potential : array of shape (n_columns, n_inputs), 0/1
            The potential pool of each column.
        permanences : array of shape (n_columns, n_inputs), float
            Permanences in [0, 1], zero outside the potential pool.
        inhibition_radius : int, optional
            NuPIC's radius after construction; computed as NuPIC does when omitted.

        Duty cycles start at 0 and boost factors at 1, as after NuPIC's constructor.
        ``fit`` restarts from this state; ``partial_fit`` and ``compute`` continue from it.
        """
        self._check_params()
        n_col, n_in = self.n_columns, self.n_inputs
        pot = np.asarray(potential)
        prm = np.asarray(permanences)
        if pot.shape != (n_col, n_in):
            raise ParameterError(f"potential must have shape {(n_col, n_in)}, got {pot.shape}")
        if prm.shape != (n_col, n_in):
            raise ParameterError(f"permanences must have shape {(n_col, n_in)}, got {prm.shape}")
        if not np.isin(pot, (0, 1)).all():
            raise ParameterError("potential must hold only 0 and 1")
        prm = prm.astype(np.float32)
        if not np.isfinite(prm).all() or prm.min(initial=0) < 0 or prm.max(initial=0) > 1:
            raise ParameterError("permanences must be finite and in [0, 1]")
        if np.any(prm[pot == 0] != 0):
            raise ParameterError("permanences must be zero outside the potential pool")
        if inhibition_radius is not None and (int(inhibition_radius) < 0):
            raise ParameterError(f"inhibition_radius must be >= 0, got {inhibition_radius!r}")
        self._initial_state = {
            "potential": pot.astype(np.uint8).copy(),
            "permanences": prm.copy(),
            "inhibition_radius": None if inhibition_radius is None else int(inhibition_radius),
        }
        self._set_state(self._initial_state, raise_perm=inhibition_radius is None)
        return self

    def _set_state(self, state: dict[str, Any], raise_perm: bool) -> None:
        n_col, n_in = self.n_columns, self.n_inputs
        self.potential_ = np.ascontiguousarray(state["potential"], dtype=np.uint8).copy()
        self._build_pools()
        rows = np.repeat(np.arange(n_col), np.diff(self._pot_ptr))
        dense = np.asarray(state["permanences"], dtype=np.float32)
        self._perm_data = np.ascontiguousarray(dense[rows, self._pot_idx], dtype=np.float32)
        self._state_changed()
        self._conn_bits = np.zeros(((n_in + 63) // 64, n_col), np.uint64)
        fpar = self._fpar()
        stim = float(self.stimulus_threshold)
        for c in range(n_col):
            K.update_column(
                c,
                self._perm_data,
                self._pot_ptr,
                self._pot_idx,
                self._conn_bits,
                fpar,
                stim,
                raise_perm,
            )
        self.boost_factors_ = np.ones(n_col, np.float32)
        self.active_duty_cycles_ = np.zeros(n_col, np.float32)
        self.overlap_duty_cycles_ = np.zeros(n_col, np.float32)
        self.min_overlap_duty_cycles_ = np.zeros(n_col, np.float32)
        self.iteration_num_ = 0
        self.iteration_learn_num_ = 0
        radius = state.get("inhibition_radius")
        self.inhibition_radius_ = (
            self._compute_inhibition_radius() if radius is None else int(radius)
        )

    def _build_pools(self) -> None:
        rows, cols = np.nonzero(self.potential_)
        self._pot_idx = cols.astype(np.int32)
        counts = np.bincount(rows, minlength=self.n_columns)
        self._pot_ptr = np.zeros(self.n_columns + 1, np.int64)
        np.cumsum(counts, out=self._pot_ptr[1:])
        self._in_coords = np.stack(
            np.unravel_index(np.arange(self.n_inputs), self._in_dims()), axis=1
        ).astype(np.int64)

    def _compute_inhibition_radius(self) -> int:
        if self.global_inhibition:
            return int(max(self._col_dims()))
        return int(
            K.inhibition_radius_local(
                self._perm_data,
                self._pot_ptr,
                self._pot_idx,
                self._fpar()[2],
                self._in_coords,
                np.asarray(self._col_dims(), np.int64),
                np.asarray(self._in_dims(), np.int64),
            )
        )

    def _initialize(self) -> None:
        self._check_params()
        state = getattr(self, "_initial_state", None)
        if state is None:
            self._set_state(self._random_state(), raise_perm=True)
        else:
            self._set_state(state, raise_perm=state["inhibition_radius"] is None)

    # ------------------------------------------------------------------ kernel params
    def _fpar(self) -> NDArray[np.float32]:
        return np.array(
            [
                self.syn_perm_active_inc,
                self.syn_perm_inactive_dec,
                self.syn_perm_connected - PERMANENCE_EPSILON,
                self.syn_perm_active_inc / 2.0,
                self.syn_perm_connected / 10.0,
                self.boost_strength,
            ],
            dtype=np.float32,
        )

    def _dpar(self) -> NDArray[np.float64]:
        return np.array(
            [self.local_area_density, self.stimulus_threshold, self.min_pct_overlap_duty_cycle],
            dtype=np.float64,
        )

    def _ipar(self) -> NDArray[np.int64]:
        return np.array(
            [
                int(bool(self.global_inhibition)),
                int(bool(self.wrap_around)),
                int(self.num_active_columns_per_inh_area),
                int(self.duty_cycle_period),
                UPDATE_PERIOD,
            ],
            dtype=np.int64,
        )

    # ------------------------------------------------------------------ input checks
    def _check_inputs(self, X: ArrayLike, name: str = "X") -> NDArray[np.uint8]:
        """Binary input vectors as a C-contiguous uint8 array of shape (n, n_inputs)."""
        arr = np.asarray(X)
        n_in = self.n_inputs
        in_dims = self._in_dims()
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.integer)
            or np.issubdtype(arr.dtype, np.bool_)
            or np.issubdtype(arr.dtype, np.floating)
        ):
            raise ParameterError(f"{name} must be a numeric array of 0/1, got dtype {arr.dtype}")
        if arr.ndim == len(in_dims) + 1 and arr.shape[1:] == in_dims:
            arr = arr.reshape(-1, n_in)
        elif arr.ndim == 2 and arr.shape[1] == n_in:
            pass
        else:
            raise ParameterError(
                f"{name} must have shape (n_samples, {n_in}) or (n_samples, *{in_dims}); "
                f"got {arr.shape}. Images go through sdrindex.binarize first."
            )
        if arr.size and not _all_binary(arr):
            raise ParameterError(
                f"{name} must be binary (0/1); it holds other values. "
                "Binarize images with sdrindex.binarize(images, threshold=128)."
            )
        return np.ascontiguousarray(arr, dtype=np.uint8)

    def _check_pools(self) -> None:
        """Every potential pool must hold stimulus_threshold synapses (else raising
        permanences to the threshold could never finish)."""
        sizes = np.diff(self._pot_ptr)
        if sizes.size and sizes.min() < float(self.stimulus_threshold):
            raise ParameterError(
                f"stimulus_threshold={self.stimulus_threshold!r} is above the smallest potential "
                f"pool of this SP ({int(sizes.min())} inputs); lower it"
            )

    def _require_fitted(self) -> None:
        if not self._is_initialized():
            raise ParameterError(
                "this SpatialPooler has no state yet: call fit, partial_fit, compute or "
                "initialize_state first"
            )

    # ------------------------------------------------------------------ learning
    def _perm_dense_token(self) -> object:
        """An object that changes whenever the permanences may have changed."""
        token = getattr(self, "_state_token", None)
        if token is None:
            token = self._state_token = object()
        return token

    def _state_changed(self) -> None:
        self._state_token = object()
        self._perm_dense = None

    @property
    def permanences_(self) -> NDArray[np.float32]:
        """Permanences, shape (n_columns, n_inputs), float32, zero outside the pools.

        A read-only dense view of the pool-aligned storage the kernels learn on.
        """
        if not hasattr(self, "_perm_data"):
            raise AttributeError("permanences_ (the SpatialPooler has no state yet)")
        if self._perm_dense is None:
            dense = np.zeros((self.n_columns, self.n_inputs), np.float32)
            rows = np.repeat(np.arange(self.n_columns), np.diff(self._pot_ptr))
            dense[rows, self._pot_idx] = self._perm_data
            dense.flags.writeable = False
            self._perm_dense = dense
        return self._perm_dense

    def _learn(self, X: NDArray[np.uint8], record_overlaps: bool = False, progress: bool = False):
        n = X.shape[0]
        n_col = self.n_columns
        packed = np.zeros((n, (n_col + 7) // 8), np.uint8)
        overlaps = np.zeros((n if record_overlaps else 0, n_col), np.int32)
        istate = np.array(
            [self.iteration_num_, self.iteration_learn_num_, self.inhibition_radius_], np.int64
        )
        self._state_changed()
        args = (
            self._perm_data,
            self._pot_ptr,
            self._pot_idx,
            self._conn_bits,
            self.boost_factors_,
            self.active_duty_cycles_,
            self.overlap_duty_cycles_,
            self.min_overlap_duty_cycles_,
            istate,
            self._fpar(),
            self._dpar(),
            self._ipar(),
            np.asarray(self._col_dims(), np.int64),
            self._in_coords,
            np.asarray(self._in_dims(), np.int64),
        )
        bar = None
        if progress and n >= 2000 and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=n, unit="img", desc="SP learning", file=sys.stderr)
        step = 1000 if bar is not None else max(n, 1)
        try:
            for start in range(0, n, step):
                stop = min(n, start + step)
                K.learn_steps(
                    X[start:stop],
                    *args,
                    packed[start:stop],
                    overlaps[start:stop] if record_overlaps else overlaps,
                )
                self.iteration_num_, self.iteration_learn_num_, self.inhibition_radius_ = (
                    int(v) for v in istate
                )
                if bar is not None:
                    bar.update(stop - start)
        finally:
            if bar is not None:
                bar.close()
        return packed, overlaps

    def partial_fit(self, X: ArrayLike, y: Any = None) -> SpatialPooler:
        """Learn online from each row of ``X`` in order (NuPIC's ``compute(x, learn=True)``).

        Parameters
        ----------
        X : array of shape (n_samples, n_inputs) or (n_samples, *input_dimensions), 0/1
        """
        self._check_params()
        Xc = self._check_inputs(X)
        if not self._is_initialized():
            self._initialize()
        self._check_pools()
        self._learn(Xc, progress=True)
        return self

    def fit(self, X: ArrayLike, y: Any = None, epochs: int = 1) -> SpatialPooler:
        """Learn from scratch: reset to the initial state, then ``epochs`` passes over ``X``.

        The initial state is the one given to :meth:`initialize_state`, if any, else a
        random one drawn from ``seed``.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ParameterError(f"epochs must be an integer >= 1, got {epochs!r}")
        Xc = self._check_inputs(X)
        self._initialize()
        for _ in range(int(epochs)):
            self._learn(Xc, progress=True)
        return self

    def compute(
        self, x: ArrayLike, learn: bool, active_array: NDArray | None = None
    ) -> NDArray[np.int64]:
        """NuPIC's one-step call: the active column indices (ascending) for one input.

        Like NuPIC, every call (learning or not) advances ``iteration_num_``. When
        ``active_array`` (n_columns,) is given it is filled with 0/1 as NuPIC does.
        """
        self._check_params()
        if active_array is not None and (
            not isinstance(active_array, np.ndarray) or active_array.size != self.n_columns
        ):
            raise ParameterError(
                f"active_array must be a numpy array of {self.n_columns} elements, got "
                f"{getattr(active_array, 'shape', type(active_array).__name__)}"
            )
        xv = np.asarray(x)
        if xv.size != self.n_inputs:
            raise ParameterError(
                f"input vector must have {self.n_inputs} elements, got {xv.size} (shape {xv.shape})"
            )
        Xc = self._check_inputs(xv.reshape(1, -1), name="x")
        if not self._is_initialized():
            self._initialize()
        if learn:
            self._check_pools()
            packed, _ = self._learn(Xc)
        else:
            packed = self._infer(Xc, boosted=False)
            self.iteration_num_ += 1
        active = np.flatnonzero(np.unpackbits(packed[0], count=self.n_columns)).astype(np.int64)
        if active_array is not None:
            active_array[...] = 0
            active_array.reshape(-1)[active] = 1
        return active

    # ------------------------------------------------------------------ inference
    def _infer(
        self, X: NDArray[np.uint8], boosted: bool, force_path: str | None = None
    ) -> NDArray[np.uint8]:
        n_col = self.n_columns
        fpar = self._fpar()
        # The input-major connected table only changes when learning does: keep it until then
        # (rebuilding it was ~1 ms of a 1.3 ms single-image transform).
        cache = getattr(self, "_csr_cache", None)
        if cache is None or cache[0] is not self._perm_dense_token():
            cptr, ccols = K.connected_csr(
                self._perm_data, self._pot_ptr, self._pot_idx, fpar[2], self.n_inputs
            )
            self._csr_cache = (self._perm_dense_token(), cptr, ccols)
        else:
            cptr, ccols = cache[1], cache[2]
        radius = int(self.inhibition_radius_)
        col_dims = self._col_dims()
        density = K.inhibition_density(
            float(self.local_area_density),
            int(self.num_active_columns_per_inh_area),
            radius,
            len(col_dims),
            n_col,
        )
        global_mode = bool(self.global_inhibition) or radius > max(col_dims)
        if global_mode:
            nb_ptr, nb_idx = np.zeros(1, np.int64), np.zeros(0, np.int32)
        else:
            nb_ptr, nb_idx = K.neighbor_table(
                radius, np.asarray(col_dims, np.int64), bool(self.wrap_around)
            )
        # Cost model: vectorised popcounts over every (word, column) pair vs scattered
        # adds per active input; the constants were fitted on MNIST (bench_sp.py).
        active_inputs = float(X[: min(len(X), 256)].sum(axis=1).mean()) if len(X) else 0.0
        bits_cost = self._conn_bits.size / BITS_SPEEDUP
        csr_cost = 2.0 * active_inputs * len(ccols) / max(self.n_inputs, 1)
        if force_path is not None:
            bits_cost, csr_cost = (0.0, 1.0) if force_path == "bits" else (1.0, 0.0)
        out = np.zeros((X.shape[0], (n_col + 7) // 8), np.uint8)
        K.infer_batch(
            X,
            bits_cost < csr_cost,
            self._conn_bits,
            cptr,
            ccols,
            n_col,
            self.boost_factors_,
            bool(boosted),
            float(density),
            K.num_active_global(density, n_col),
            float(self.stimulus_threshold),
            global_mode,
            nb_ptr,
            nb_idx,
            out,
        )
        return out

    def transform(
        self, X: ArrayLike, packed: bool = False, boosted: bool = False
    ) -> NDArray[np.uint8]:
        """Batch inference: the SDR of every row of ``X``; the state does not change.

        Parameters
        ----------
        X : array of shape (n_samples, n_inputs) or (n_samples, *input_dimensions), 0/1
        packed : bool
            Return rows of ``np.packbits`` (n_samples, ceil(n_columns / 8)) instead of
            dense 0/1 (n_samples, n_columns).
        boosted : bool
            Multiply overlaps by the boost factors before inhibition, as htm.core's
            inference does; NuPIC (the default, False) uses raw overlaps.

        Returns
        -------
        ndarray of uint8, shape (n_samples, n_columns) or packed as above.
        """
        self._require_fitted()
        self._check_params()
        Xc = self._check_inputs(X)
        out = self._infer(Xc, boosted=boosted)
        if packed:
            return out
        return np.unpackbits(out, axis=1, count=self.n_columns)

    def inverse_transform(self, sdrs: ArrayLike, weighted: bool = False) -> NDArray[np.float32]:
        """Synapse back-projection: SDRs -> input space.

        For each input, the number of connected synapses from the active columns onto it
        (the forum's ``getConnectedSynapses`` loop, vectorised); with ``weighted=True`` the
        sum of the active columns' permanences onto it (over their whole potential pools,
        connected or not).

        Parameters
        ----------
        sdrs : array of shape (n_samples, n_columns) or (n_columns,), 0/1
            Or a list of arrays of active column indices.

        Returns
        -------
        ndarray of shape (n_samples, n_inputs) (or (n_inputs,)), float32
        """
        self._require_fitted()
        n_col = self.n_columns
        single = False
        if isinstance(sdrs, list) and (not sdrs or not np.isscalar(sdrs[0])):
            dense = np.zeros((len(sdrs), n_col), np.uint8)
            for r, idx in enumerate(sdrs):
                idx = np.asarray(idx)
                if idx.size == 0:
                    continue
                if (
                    idx.ndim != 1
                    or not np.issubdtype(idx.dtype, np.integer)
                    or idx.min() < 0
                    or idx.max() >= n_col
                ):
                    raise ParameterError(f"active column indices must be integers in [0, {n_col})")
                dense[r, idx] = 1
        else:
            dense = np.asarray(sdrs)
            if dense.ndim == 1:
                single = True
                dense = dense[None, :]
            if dense.ndim != 2 or dense.shape[1] != n_col:
                raise ParameterError(
                    f"sdrs must have shape (n_samples, {n_col}) or ({n_col},), got {np.shape(sdrs)}"
                )
            if dense.size and not np.isin(dense, (0, 1)).all():
                raise ParameterError("sdrs must be binary (0/1)")
        weights = self.permanences_ if weighted else self.connected_matrix().astype(np.float32)
        packed = np.packbits(dense.astype(np.uint8), axis=1)
        out = K.back_project(packed, n_col, np.ascontiguousarray(weights, np.float32))
        return out[0] if single else out

    def connected_matrix(self) -> NDArray[np.uint8]:
        """Connected synapses, shape (n_columns, n_inputs), uint8 0/1."""
        self._require_fitted()
        thr = np.float32(self.syn_perm_connected - PERMANENCE_EPSILON)
        return ((self.permanences_ >= thr) & (self.potential_ != 0)).astype(np.uint8)

    def connected_synapses(self, column: int) -> NDArray[np.uint8]:
        """The connected synapses of one column as a 0/1 vector of shape (n_inputs,)."""
        self._require_fitted()
        if (
            isinstance(column, bool)
            or not isinstance(column, (int, np.integer))
            or not (0 <= column < self.n_columns)
        ):
            raise ParameterError(
                f"column must be an integer in [0, {self.n_columns}), got {column!r}"
            )
        thr = np.float32(self.syn_perm_connected - PERMANENCE_EPSILON)
        c = int(column)
        return ((self.permanences_[c] >= thr) & (self.potential_[c] != 0)).astype(np.uint8)

    def overlaps(self, X: ArrayLike) -> NDArray[np.int32]:
        """Raw overlap of every column with each input, shape (n_samples, n_columns)."""
        self._require_fitted()
        Xc = self._check_inputs(X)
        return (Xc.astype(np.int32) @ self.connected_matrix().T.astype(np.int32)).astype(np.int32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Save parameters and state as a ``.npz`` (no pickle); written atomically."""
        self._require_fitted()
        path = Path(path)
        meta = {
            "format": "sdrindex.SpatialPooler",
            "format_version": FORMAT_VERSION,
            "params": self.nupic_params(),
            "iteration_num": self.iteration_num_,
            "iteration_learn_num": self.iteration_learn_num_,
            "inhibition_radius": self.inhibition_radius_,
        }
        # Pools as CSR (pointers, input indices, permanences): 1 MB instead of 25 MB dense.
        arrays = {
            "pool_ptr": self._pot_ptr,
            "pool_idx": self._pot_idx,
            "pool_perm": self._perm_data,
            "boost_factors": self.boost_factors_,
            "active_duty_cycles": self.active_duty_cycles_,
            "overlap_duty_cycles": self.overlap_duty_cycles_,
            "min_overlap_duty_cycles": self.min_overlap_duty_cycles_,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> SpatialPooler:
        """Load a Spatial Pooler written by :meth:`save`; never unpickles."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file; save a SpatialPooler there with sp.save(path)")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with loaded as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, io.UnsupportedOperation) as exc:
            raise DataError(f"{path}: not a readable .npz file ({exc}); re-save it") from exc
        try:
            meta = json.loads(bytes(data.pop("meta")).decode())
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a JSON object")
            params = meta["params"]
            radius = int(meta["inhibition_radius"])
            iteration_num = int(meta["iteration_num"])
            iteration_learn_num = int(meta["iteration_learn_num"])
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: missing or unreadable metadata ({exc}); re-save it") from exc
        if (
            meta.get("format") != "sdrindex.SpatialPooler"
            or meta.get("format_version") != FORMAT_VERSION
        ):
            raise DataError(
                f"{path}: unknown format {meta.get('format')!r} "
                f"version {meta.get('format_version')!r} "
                f"(this sdrindex reads version {FORMAT_VERSION})"
            )
        if not isinstance(params, dict):
            raise DataError(f"{path}: metadata 'params' is not a table; re-save it")
        try:
            sp = cls.from_nupic_params(params)
        except ParameterError as exc:
            raise DataError(f"{path}: invalid SP parameters ({exc}); re-save it") from exc
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
                raise DataError(
                    f"{path}: array {key!r} missing or not of shape {shape}; re-save it"
                )
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
            raise DataError(f"{path}: inconsistent potential pools / permanences; re-save it")
        rows = np.repeat(np.arange(n_col), np.diff(ptr))
        pot = np.zeros((n_col, n_in), np.uint8)
        pot[rows, idx] = 1
        if int(pot.sum()) != nnz:
            raise DataError(f"{path}: a potential pool lists an input twice; re-save it")
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
