"""The HTM Spatial Pooler as a scikit-learn style estimator, with NuPIC's semantics.

``SpatialPooler`` takes NuPIC's parameters (in snake_case; ``from_nupic_params`` takes the
camelCase dictionary as users have it), learns online one input at a time in NuPIC's
order, and reproduces NuPIC's Python ``SpatialPooler`` (algorithm version 3) step for
step when started from the same state: the conformance vectors in ``tests/data`` replay
exactly. The hot loops live in :mod:`._kernels` (learning, one kernel per NuPIC phase),
:mod:`._local` (those only local inhibition needs) and :mod:`._infer` (inference,
back-projection).

What the kernels need besides the learned state is derived once and kept in a private
cache: the typed parameters (rebuilt when a parameter changes) and the inference plan
(connected-synapse table, inhibition neighbourhoods, density, back-projection weights;
dropped by :meth:`SpatialPooler._state_changed` whenever learning or loading changes the
state). So single-image ``compute``, ``transform`` and ``inverse_transform`` calls pay
only for their kernel.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin

from sdrindex import sdr
from sdrindex._threads import n_threads, run_ranges
from sdrindex.errors import ParameterError

from . import _infer as I
from . import _io
from . import _kernels as K
from ._cache import Cache
from ._init import random_state
from ._io import FORMAT_VERSION
from ._params import (
    NUPIC_PARAM_NAMES,
    PERMANENCE_EPSILON,
    all_binary,
    check_params,
    dims,
    kernel_params,
    params_key,
)
from ._structs import (
    InferModel,
    Learner,
    Params,
    State,
    new_infer_handle,
    new_learner,
)

__all__ = ["SpatialPooler", "NUPIC_PARAM_NAMES", "FORMAT_VERSION"]

#: Inference cost model: one vectorised AND+popcount word costs 1/BITS_SPEEDUP of one
#: scattered add (times 2: csr_cost below). 6.0 from 20,000 MNIST images after 10,000 learned,
#: 2026-11-28: the popcount path ran 1.2x (htmcore-mnist), 1.65x (sdrindex-mnist), 16x
#: (forum-global) and 1.0x (forum-local) the scatter path; 4.0 had picked the slower one
#: for htmcore-mnist.
BITS_SPEEDUP = 6.0
#: Rows per range of a back-projection on a thread (fewer run on the calling thread).
SERIAL_BACKPROJECTION_ROWS = 16


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
                v = list(dims(v, snake))
            elif isinstance(v, (np.generic,)):
                v = v.item()
            out[camel] = v
        return out

    def _check_params(self) -> None:
        check_params(self)

    # ------------------------------------------------------------------ shapes
    @property
    def n_inputs(self) -> int:
        return int(np.prod(dims(self.input_dimensions, "input_dimensions")))

    @property
    def n_columns(self) -> int:
        return int(np.prod(dims(self.column_dimensions, "column_dimensions")))

    def _in_dims(self) -> tuple[int, ...]:
        return dims(self.input_dimensions, "input_dimensions")

    def _col_dims(self) -> tuple[int, ...]:
        return dims(self.column_dimensions, "column_dimensions")

    def _is_initialized(self) -> bool:
        return hasattr(self, "_perm_data")

    # ------------------------------------------------------------------ initial state
    def _random_state(self) -> dict[str, Any]:
        """NuPIC's initialisation procedure (potential pools, permanences) on our RNG."""
        return random_state(self)

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
        params = self._kernel_params()
        self.potential_ = np.ascontiguousarray(state["potential"], dtype=np.uint8).copy()
        self._build_pools()
        rows = np.repeat(np.arange(n_col), np.diff(self._pot_ptr))
        dense = np.asarray(state["permanences"], dtype=np.float32)
        self._perm_data = np.ascontiguousarray(dense[rows, self._pot_idx], dtype=np.float32)
        self._state_changed()
        self._conn_bits = np.zeros(((n_in + 63) // 64, n_col), np.uint64)
        self.boost_factors_ = np.ones(n_col, np.float32)
        self.active_duty_cycles_ = np.zeros(n_col, np.float32)
        self.overlap_duty_cycles_ = np.zeros(n_col, np.float32)
        self.min_overlap_duty_cycles_ = np.zeros(n_col, np.float32)
        self.iteration_num_ = 0
        self.iteration_learn_num_ = 0
        kstate = self._kernel_state(np.zeros(3, np.int64))
        computed = K.update_columns(kstate, params, raise_perm, K.local_arg(params))
        radius = state.get("inhibition_radius")
        self.inhibition_radius_ = int(computed if radius is None else radius)

    def _build_pools(self) -> None:
        rows, cols = np.nonzero(self.potential_)
        self._pot_idx = cols.astype(np.int32)
        counts = np.bincount(rows, minlength=self.n_columns)
        self._pot_ptr = np.zeros(self.n_columns + 1, np.int64)
        np.cumsum(counts, out=self._pot_ptr[1:])

    def _initialize(self) -> None:
        self._check_params()
        state = getattr(self, "_initial_state", None)
        if state is None:
            self._set_state(self._random_state(), raise_perm=True)
        else:
            self._set_state(state, raise_perm=state["inhibition_radius"] is None)

    # ------------------------------------------------------------------ derived data
    def _derived(self) -> Cache:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = self._cache = Cache()
        return cache

    def _kernel_params(self) -> Params:
        """The typed parameters, checked and rebuilt only when a parameter changed."""
        cache = self._derived()
        key = params_key(self)
        if cache.params is None or cache.key != key:
            check_params(self)
            fresh = Cache()
            fresh.key, fresh.params = key, kernel_params(self)
            fresh.n_columns = self.n_columns
            fresh.perm_dense = cache.perm_dense  # the permanences do not depend on them
            self._cache = cache = fresh
        return cache.params

    def _kernel_state(self, counters: NDArray[np.int64]) -> State:
        return State(
            self._pot_ptr,
            self._pot_idx,
            self._perm_data,
            self._conn_bits,
            self.boost_factors_,
            self.active_duty_cycles_,
            self.overlap_duty_cycles_,
            self.min_overlap_duty_cycles_,
            counters,
        )

    def _state_changed(self) -> None:
        """Drop everything derived from the learned state (learning or loading changed it)."""
        cache = self._derived()
        cache.plan = None
        cache.infer_handle = None
        cache.weights = {}
        cache.perm_dense = None

    def _plan(self) -> InferModel:
        """The inference plan for the current state, built on first use after a change."""
        params = self._kernel_params()
        cache = self._derived()
        radius = int(self.inhibition_radius_)
        plan = cache.plan
        if plan is not None and plan.conn_bits is self._conn_bits and cache.plan_radius == radius:
            return plan
        n_col, n_in = cache.n_columns, params.in_coords.shape[0]
        cptr, ccols = I.connected_csr(
            self._pot_ptr, self._pot_idx, self._perm_data, params.conn_thr, n_in
        )
        nd = params.col_dims.shape[0]
        density = float(
            K.inhibition_density(
                params.local_area_density, params.num_active_per_area, radius, nd, n_col
            )
        )
        global_mode = params.global_inhibition or radius > params.max_col_dim
        nbr = cache.neighbours
        if not global_mode:
            nbr = cache.neighbours = K.neighbours_for(nbr, radius, params)
        # Cost model: vectorised popcounts over every (word, column) pair vs scattered
        # adds per active input; the constants were fitted on MNIST (bench_sp.py).
        cache.plan = InferModel(
            conn_bits=self._conn_bits,
            cptr=cptr,
            ccols=ccols,
            density=density,
            num_active=int(K.num_active_global(density, n_col)),
            stim=params.stim,
            global_mode=bool(global_mode),
            nb_ptr=nbr.ptr,
            nb_idx=nbr.idx,
            bits_cost=self._conn_bits.size / BITS_SPEEDUP,
            csr_cost_per_input=2.0 * len(ccols) / max(n_in, 1),
        )
        cache.plan_radius = radius
        cache.infer_handle = None
        return cache.plan

    # ------------------------------------------------------------------ input checks
    def _check_inputs(
        self, X: ArrayLike, name: str = "X", params: Params | None = None
    ) -> NDArray[np.uint8]:
        """Binary input vectors as a C-contiguous uint8 array of shape (n, n_inputs)."""
        arr = X if type(X) is np.ndarray else np.asarray(X)
        n_in = (params or self._kernel_params()).in_coords.shape[0]
        if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == n_in:
            # the usual input (binarize's output), kept cheap for single images
            if arr.size and int(arr.max()) > 1:
                raise ParameterError(self._not_binary(name))
            return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
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
        if arr.size and not all_binary(arr):
            raise ParameterError(self._not_binary(name))
        return np.ascontiguousarray(arr, dtype=np.uint8)

    @staticmethod
    def _not_binary(name: str) -> str:
        return (
            f"{name} must be binary (0/1); it holds other values. "
            "Binarize images with sdrindex.binarize(images, threshold=128)."
        )

    def _check_pools(self, params: Params | None = None) -> None:
        """Every potential pool must hold stimulus_threshold synapses (else raising
        permanences to the threshold could never finish)."""
        if params is None:
            self._kernel_params()  # a parameter change resets the cache
        cache = self._derived()
        if cache.pools_checked is self._pot_ptr:
            return
        sizes = np.diff(self._pot_ptr)
        if sizes.size and sizes.min() < float(self.stimulus_threshold):
            raise ParameterError(
                f"stimulus_threshold={self.stimulus_threshold!r} is above the smallest potential "
                f"pool of this SP ({int(sizes.min())} inputs); lower it"
            )
        cache.pools_checked = self._pot_ptr

    def _require_fitted(self) -> None:
        if not self._is_initialized():
            raise ParameterError(
                "this SpatialPooler has no state yet: call fit, partial_fit, compute or "
                "initialize_state first"
            )

    # ------------------------------------------------------------------ learning
    @property
    def permanences_(self) -> NDArray[np.float32]:
        """Permanences, shape (n_columns, n_inputs), float32, zero outside the pools.

        A read-only dense view of the pool-aligned storage the kernels learn on.
        """
        if not hasattr(self, "_perm_data"):
            raise AttributeError("permanences_ (the SpatialPooler has no state yet)")
        cache = self._derived()
        if cache.perm_dense is None:
            dense = np.zeros((self.n_columns, self.n_inputs), np.float32)
            rows = np.repeat(np.arange(self.n_columns), np.diff(self._pot_ptr))
            dense[rows, self._pot_idx] = self._perm_data
            dense.flags.writeable = False
            cache.perm_dense = dense
        return cache.perm_dense

    def _counters(self) -> NDArray[np.int64]:
        return np.array(
            [self.iteration_num_, self.iteration_learn_num_, self.inhibition_radius_], np.int64
        )

    def _set_counters(self, counters: NDArray[np.int64]) -> None:
        self.iteration_num_, self.iteration_learn_num_, self.inhibition_radius_ = counters.tolist()

    def _learn(self, X: NDArray[np.uint8], record_overlaps: bool = False, progress: bool = False):
        n = X.shape[0]
        params = self._kernel_params()
        cache = self._derived()
        packed = np.zeros((n, (cache.n_columns + 7) // 8), np.uint8)
        overlaps = np.zeros((n if record_overlaps else 0, cache.n_columns), np.int32)
        counters = self._counters()
        self._state_changed()
        state = self._kernel_state(counters)
        if cache.work is None:
            cache.work = K.new_work(self._conn_bits.shape[0], cache.n_columns)
        work = cache.work
        bar = None
        if progress and n >= 2000 and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=n, unit="img", desc="SP learning", file=sys.stderr)
        step = 1000 if bar is not None else max(n, 1)
        try:
            for start in range(0, n, step):
                stop = min(n, start + step)
                _, cache.neighbours = K.learn_steps(
                    X[start:stop],
                    state,
                    params,
                    cache.neighbours,
                    work,
                    packed[start:stop],
                    overlaps[start:stop] if record_overlaps else overlaps,
                    *K.mode_args(params),
                )
                self._set_counters(counters)
                if bar is not None:
                    bar.update(stop - start)
        finally:
            if bar is not None:
                bar.close()
        return packed, overlaps

    def _learner(self, params: Params) -> Learner:
        """The one-step learning handle on the current state arrays (rebuilt when one of
        them was replaced: a new state, a load, an assigned ``boost_factors_``)."""
        cache = self._derived()
        arrays = (
            self._pot_ptr,
            self._pot_idx,
            self._perm_data,
            self._conn_bits,
            self.boost_factors_,
            self.active_duty_cycles_,
            self.overlap_duty_cycles_,
            self.min_overlap_duty_cycles_,
        )
        same = len(arrays) == len(cache.learner_arrays) and all(
            map(operator.is_, arrays, cache.learner_arrays)
        )
        if cache.learner is None or not same:
            if cache.work is None:
                cache.work = K.new_work(self._conn_bits.shape[0], cache.n_columns)
            state = State(*arrays, np.zeros(3, np.int64))
            cache.learner_counters = state.counters
            cache.learner = new_learner(state, params, cache.neighbours, cache.work)
            cache.learner_arrays = arrays
        return cache.learner

    def _learn_one(self, x: NDArray[np.uint8], params: Params) -> NDArray[np.int64]:
        """One learning step on a 0/1 row; the active columns, ascending."""
        learner = self._learner(params)
        cache = self._derived()
        counters = cache.learner_counters
        counters[0] = self.iteration_num_
        counters[1] = self.iteration_learn_num_
        counters[2] = self.inhibition_radius_
        self._state_changed()
        m = K.learn_one(x, learner, *K.mode_args(params))
        self._set_counters(counters)
        return cache.work.winners[:m].copy()

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

        Parameters
        ----------
        x : array of n_inputs elements (any shape), 0/1
        learn : bool
            Learn from ``x`` (NuPIC's ``learn=True``) or only infer.
        active_array : ndarray of n_columns elements, optional

        Returns
        -------
        ndarray of int64, the active columns in ascending order.
        """
        params = self._kernel_params()
        n_col, n_in = self._derived().n_columns, params.in_coords.shape[0]
        if active_array is not None and (
            not isinstance(active_array, np.ndarray) or active_array.size != n_col
        ):
            raise ParameterError(
                f"active_array must be a numpy array of {n_col} elements, got "
                f"{getattr(active_array, 'shape', type(active_array).__name__)}"
            )
        xv = x if type(x) is np.ndarray else np.asarray(x)
        if xv.size != n_in:
            raise ParameterError(
                f"input vector must have {n_in} elements, got {xv.size} (shape {xv.shape})"
            )
        Xc = self._check_inputs(xv.reshape(1, -1), name="x", params=params)
        if not self._is_initialized():
            self._initialize()
        if learn:
            self._check_pools(params)
            active = self._learn_one(Xc[0], params)
        else:
            packed = self._infer(Xc, boosted=False)
            self.iteration_num_ += 1
            active = np.flatnonzero(np.unpackbits(packed[0], count=n_col)).astype(np.int64)
        if active_array is not None:
            active_array[...] = 0
            active_array.reshape(-1)[active] = 1
        return active

    # ------------------------------------------------------------------ inference
    def _infer(
        self, X: NDArray[np.uint8], boosted: bool, path: int = I.PATH_AUTO
    ) -> NDArray[np.uint8]:
        """Packed SDRs of checked rows ``X``; ``path`` forces an overlap method (tests)."""
        plan = self._plan()
        cache = self._derived()
        handle = cache.infer_handle
        if handle is None or cache.infer_boost is not self.boost_factors_:
            handle = cache.infer_handle = new_infer_handle(plan, self.boost_factors_)
            cache.infer_boost = self.boost_factors_
        out = np.zeros((X.shape[0], (cache.n_columns + 7) // 8), np.uint8)
        boosted = bool(boosted)
        local = K.local_arg(cache.params)  # set by _plan
        run_ranges(
            lambda lo, hi: I.infer_small(X[lo:hi], handle, boosted, path, out[lo:hi], local),
            X.shape[0],
            min(-(-X.shape[0] // I.CHUNK), 4 * n_threads()),
        )
        return out

    def transform(
        self, X: ArrayLike, packed: bool = False, boosted: bool = False
    ) -> NDArray[np.uint8]:
        """Batch inference: the SDR of every row of ``X``; the state does not change.

        The tables inference needs are built once per learned state, so repeated calls
        (single images included) cost only the kernel: a server calls
        ``transform(X, packed=True)`` directly.

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
        Xc = self._check_inputs(X)
        out = self._infer(Xc, boosted=boosted)
        if packed:
            return out
        return np.unpackbits(out, axis=1, count=self._derived().n_columns)

    def inverse_transform(self, sdrs: ArrayLike, weighted: bool = False) -> NDArray[np.float32]:
        """Synapse back-projection: SDRs -> input space.

        For each input, the number of connected synapses from the active columns onto it
        (the forum's ``getConnectedSynapses`` loop, vectorised); with ``weighted=True`` the
        sum of the active columns' permanences onto it (over their whole potential pools,
        connected or not). The weight matrix is kept until learning changes the state, so
        repeated calls cost only the kernel.

        Parameters
        ----------
        sdrs : array of shape (n_samples, n_columns) or (n_columns,), 0/1
            Dense SDRs; or packed ones, shape (n_samples, ceil(n_columns / 8)) uint8 (rows
            of ``np.packbits``, as ``transform(X, packed=True)`` returns; see
            :func:`sdrindex.sdr.validate`); or a list of arrays of active column indices.
        weighted : bool
            Sum permanences instead of counting connected synapses.

        Returns
        -------
        ndarray of shape (n_samples, n_inputs) (or (n_inputs,) for one 1-D SDR), float32
        """
        self._require_fitted()
        n_col = self._derived().n_columns
        single = False
        if isinstance(sdrs, list) and (not sdrs or not np.isscalar(sdrs[0])):
            packed = np.packbits(self._dense_from_indices(sdrs), axis=1)
        else:
            arr = sdrs if type(sdrs) is np.ndarray else np.asarray(sdrs)
            single = arr.ndim == 1
            packed = sdr.validate(arr, n_col, "sdrs")
        # read-only views: one compiled kernel whether the arrays are mapped or in memory
        packed = sdr.readonly(packed)
        weights = sdr.readonly(self._backprojection_weights(bool(weighted)))
        out = np.zeros((packed.shape[0], weights.shape[1]), np.float32)
        run_ranges(
            lambda lo, hi: I.back_project(packed[lo:hi], n_col, weights, out[lo:hi]),
            packed.shape[0],
            min(packed.shape[0] // SERIAL_BACKPROJECTION_ROWS, 4 * n_threads()),
        )
        return out[0] if single else out

    def _dense_from_indices(self, lists: list) -> NDArray[np.uint8]:
        n_col = self._derived().n_columns
        dense = np.zeros((len(lists), n_col), np.uint8)
        for r, idx in enumerate(lists):
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
        return dense

    def _backprojection_weights(self, weighted: bool) -> NDArray[np.float32]:
        """(n_columns, n_inputs) float32: permanences, or connected synapses as 0/1."""
        self._kernel_params()
        cache = self._derived()
        w = cache.weights.get(weighted)
        if w is None:
            if weighted:
                w = np.ascontiguousarray(self.permanences_, dtype=np.float32)
            else:
                w = np.ascontiguousarray(self.connected_matrix(), dtype=np.float32)
            cache.weights[weighted] = w
        return w

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
        _io.save(self, path)

    @classmethod
    def load(cls, path: str | Path) -> SpatialPooler:
        """Load a Spatial Pooler written by :meth:`save`; never unpickles."""
        return _io.load(cls, path)
