"""The typed structures the SP's kernels take (numba-compatible named tuples).

Each kernel receives a few of these instead of a long list of positional arrays: the
parameters (:class:`Params`, built once per parameter set), the learned state
(:class:`State`, views of the estimator's arrays), the inhibition neighbourhoods
(:class:`Neighbours`, rebuilt when the inhibition radius changes), reusable scratch
buffers (:class:`Work`) and the inference plan (:class:`InferModel`, rebuilt when learning
changes the state). Field types are fixed (float32 where a value meets float32 state, as
numpy rounds a Python float meeting a float32 array) so numba compiles each kernel once.

Layouts (C columns, I inputs, D dimensions, W = ceil(I / 64) words):

- ``pot_ptr`` (C + 1,) int64 and ``pot_idx`` (nnz,) int32: the potential pool of column
  ``c`` is ``pot_idx[pot_ptr[c]:pot_ptr[c + 1]]`` (CSR, ascending).
- ``perm`` (nnz,) float32: the permanences of those synapses, aligned with ``pot_idx``
  (permanences outside the pool are zero by construction, so they are not stored; a
  dense (C, I) matrix would be 20 MB for 79x79 columns and turn learning memory-bound).
- ``conn_bits`` (W, C) uint64: the connected synapses as bits, word-major, so that the
  overlaps of a packed input are, word by word, popcounts of ``conn_bits[w] & x[w]`` over
  all columns at once (a loop LLVM vectorises), and the input's empty words are skipped.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np
from numba.core import types
from numba.experimental import structref
from numba.extending import overload
from numpy.typing import NDArray

__all__ = [
    "Params",
    "State",
    "Neighbours",
    "Work",
    "InferModel",
    "Learner",
    "InferHandle",
    "new_learner",
    "new_infer_handle",
]


class Params(NamedTuple):
    """The Spatial Pooler's parameters, typed for the kernels."""

    inc: np.float32  # syn_perm_active_inc
    dec: np.float32  # syn_perm_inactive_dec
    conn_thr: np.float32  # syn_perm_connected - PERMANENCE_EPSILON
    trim: np.float32  # syn_perm_active_inc / 2: smaller permanences are zeroed
    below_inc: np.float32  # syn_perm_connected / 10: the raise-to-threshold and bump step
    boost_strength: np.float32
    local_area_density: float
    stim: float  # stimulus_threshold
    min_pct: float  # min_pct_overlap_duty_cycle
    global_inhibition: bool
    wrap_around: bool
    num_active_per_area: int  # num_active_columns_per_inh_area
    duty_cycle_period: int
    update_period: int  # steps between inhibition-radius / min-duty-cycle updates
    max_col_dim: int
    col_dims: NDArray[np.int64]  # (D,)
    in_dims: NDArray[np.int64]  # (D,)
    in_coords: NDArray[np.int64]  # (I, D): coordinates of every input


class State(NamedTuple):
    """The learned state the kernels update in place (views of the estimator's arrays)."""

    pot_ptr: NDArray[np.int64]  # (C + 1,)
    pot_idx: NDArray[np.int32]  # (nnz,)
    perm: NDArray[np.float32]  # (nnz,)
    conn_bits: NDArray[np.uint64]  # (W, C)
    boost: NDArray[np.float32]  # (C,) boost factors
    active_duty: NDArray[np.float32]  # (C,)
    overlap_duty: NDArray[np.float32]  # (C,)
    min_overlap_duty: NDArray[np.float32]  # (C,)
    counters: NDArray[np.int64]  # [iteration_num, iteration_learn_num, inhibition_radius]


class Neighbours(NamedTuple):
    """Every column's inhibition neighbourhood for one radius, as CSR (``ptr``, ``idx``).

    ``radius`` -1 with empty arrays stands for "not built" (global inhibition needs none).
    """

    radius: int
    ptr: NDArray[np.int64]  # (C + 1,)
    idx: NDArray[np.int32]  # (sum of neighbourhood sizes,)


class Work(NamedTuple):
    """Scratch buffers of one learning step, allocated once and reused."""

    xbits: NDArray[np.uint64]  # (W,) the input as bits
    acc: NDArray[np.uint64]  # (C,) popcount accumulators
    ov: NDArray[np.int32]  # (C,) raw overlaps of the step
    vals: NDArray[np.float32]  # (C,) boosted overlaps, then boost exponents, ...
    winners: NDArray[np.int64]  # (C,) active columns of the step, ascending
    is_win: NDArray[np.bool_]  # (C,)
    flag: NDArray[np.bool_]  # (C,) local inhibition: chosen so far
    gather: NDArray[np.float32]  # (C,) a neighbourhood's active duty cycles
    spare: NDArray[np.float32]  # (64 W,) a winner's clipped permanences before the trim


class InferModel(NamedTuple):
    """Everything inference reads besides the input and the boost factors.

    Built from the learned state once and kept until learning changes it (see
    ``SpatialPooler._plan``).
    """

    conn_bits: NDArray[np.uint64]  # (W, C)
    cptr: NDArray[np.int64]  # (I + 1,) input-major CSR of connected synapses
    ccols: NDArray[np.int32]  # (n_connected,) their columns
    density: float  # inhibition density at the current radius
    num_active: int  # winners under global inhibition
    stim: float  # stimulus_threshold
    global_mode: bool  # global inhibition (or a radius wider than the grid)
    nb_ptr: NDArray[np.int64]  # local inhibition neighbourhoods (CSR)
    nb_idx: NDArray[np.int32]
    bits_cost: float  # cost model: popcount pass over every (word, column) pair
    csr_cost_per_input: float  # cost model: scattered adds per active input


# ------------------------------------------------------------------ handles for Python callers
# Calling a kernel with named tuples makes numba type every field in Python on every call
# (about 20 us for the learning structures, a third of a learning step). A StructRef is
# typed by one attribute read, so the per-call entry points take one of these handles,
# built once per learned state.


@structref.register
class LearnerType(types.StructRef):
    """numba type of :class:`Learner`."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class Learner(structref.StructRefProxy):
    """Handle on (state, params, nbr, work) for one-step learning; ``nbr`` is updated
    in place by the kernel when the inhibition radius changes."""


@structref.register
class InferHandleType(types.StructRef):
    """numba type of :class:`InferHandle`."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class InferHandle(structref.StructRefProxy):
    """Handle on an :class:`InferModel` and the boost factors it is used with."""


structref.define_boxing(LearnerType, Learner)
structref.define_boxing(InferHandleType, InferHandle)


def _make_learner(state, params, nbr, work):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(_make_learner)
def _make_learner_impl(state, params, nbr, work):
    typ = LearnerType([("state", state), ("params", params), ("nbr", nbr), ("work", work)])

    def impl(state, params, nbr, work):
        lr = structref.new(typ)
        lr.state = state
        lr.params = params
        lr.nbr = nbr
        lr.work = work
        return lr

    return impl


def _make_infer_handle(model, boost):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(_make_infer_handle)
def _make_infer_handle_impl(model, boost):
    typ = InferHandleType([("model", model), ("boost", boost)])

    def impl(model, boost):
        h = structref.new(typ)
        h.model = model
        h.boost = boost
        return h

    return impl


@nb.njit(cache=True)
def new_learner(state, params, nbr, work):
    """A :class:`Learner` on these structures (they are shared, not copied)."""
    return _make_learner(state, params, nbr, work)


@nb.njit(cache=True)
def new_infer_handle(model, boost):
    """An :class:`InferHandle` on ``model`` and ``boost`` (shared, not copied)."""
    return _make_infer_handle(model, boost)
