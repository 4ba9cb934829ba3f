"""The Spatial Pooler's learning loop: the phase kernels of :mod:`._kernels` in NuPIC's order.

The phases that differ between global and local inhibition are picked by the *type* of the
neighbour table: :class:`~._structs.GlobalNeighbours` (global inhibition, the default
configuration) or :class:`~._structs.Neighbours` (local). Each ``_pick_*`` below is a stub
whose numba overload returns the global phase alone for the first, the run-time choice for
the second, so a global SP never compiles the local-inhibition kernels (neighbourhood
tables, local inhibition, neighbourhood sums): about 4 s of a cold numba cache. Results do
not depend on the type: a global SP never took the local branches.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.extending import overload

from ._kernels import (
    adapt_synapses,
    boost_exponents_global,
    boost_exponents_local,
    bump_up_weak_columns,
    calculate_overlap,
    finish_column,
    inhibit_global,
    inhibit_local,
    inhibition_density,
    min_duty_cycles_global,
    min_duty_cycles_local,
    neighbours_for,
    num_active_global,
    raise_to_threshold,
    update_boost_factors,
    update_duty_cycles,
    update_inhibition_radius,
)
from ._structs import is_global_type

_NJIT = {"cache": True, "nogil": True}
# The boost update enters object mode (numpy's exp) and so holds the GIL, as must its callers.
_NJIT_GIL = {"cache": True}
# The stubs are one call each: inlined in numba's IR they add no kernel level (every level
# re-optimises its callees' code).
_INLINE = "always"


def _pick_neighbours(nbr, radius, params):  # pragma: no cover - replaced by the overload
    """The neighbour table for ``radius`` (:func:`~._kernels.neighbours_for`)."""
    raise NotImplementedError


@overload(_pick_neighbours, inline=_INLINE)
def _pick_neighbours_impl(nbr, radius, params):
    if is_global_type(nbr):
        return lambda nbr, radius, params: nbr
    return lambda nbr, radius, params: neighbours_for(nbr, radius, params)


def _pick_inhibition(vals, density, radius, params, nbr, work):  # pragma: no cover
    """NuPIC's ``_inhibitColumns`` on boosted overlaps ``vals``; the winners (ascending) go
    to ``work.winners``, their count is returned."""
    raise NotImplementedError


@overload(_pick_inhibition, inline=_INLINE)
def _pick_inhibition_impl(vals, density, radius, params, nbr, work):
    if is_global_type(nbr):

        def global_only(vals, density, radius, params, nbr, work):
            k = num_active_global(density, vals.shape[0])
            return inhibit_global(vals, k, params.stim, work.winners)

        return global_only

    def either(vals, density, radius, params, nbr, work):
        if params.global_inhibition or radius > params.max_col_dim:
            k = num_active_global(density, vals.shape[0])
            return inhibit_global(vals, k, params.stim, work.winners)
        return inhibit_local(vals, density, params.stim, nbr.ptr, nbr.idx, work.winners, work.flag)

    return either


def _pick_boost_exponents(radius, state, params, nbr, work):  # pragma: no cover
    """The exponents of the boost update into ``work.vals``."""
    raise NotImplementedError


@overload(_pick_boost_exponents, inline=_INLINE)
def _pick_boost_exponents_impl(radius, state, params, nbr, work):
    if is_global_type(nbr):
        return lambda radius, state, params, nbr, work: boost_exponents_global(
            radius, state, params, work
        )

    def either(radius, state, params, nbr, work):
        if params.global_inhibition:
            boost_exponents_global(radius, state, params, work)
        else:
            boost_exponents_local(state, params, nbr, work)

    return either


def _pick_min_duty_cycles(radius, n_inputs, state, params, nbr, work):  # pragma: no cover
    """NuPIC's ``_updateMinDutyCycles``: over the region (global, or a radius beyond the
    input count) or over each neighbourhood."""
    raise NotImplementedError


@overload(_pick_min_duty_cycles, inline=_INLINE)
def _pick_min_duty_cycles_impl(radius, n_inputs, state, params, nbr, work):
    if is_global_type(nbr):
        return lambda radius, n_inputs, state, params, nbr, work: min_duty_cycles_global(
            state, params
        )

    def either(radius, n_inputs, state, params, nbr, work):
        if params.global_inhibition or radius > n_inputs:
            min_duty_cycles_global(state, params)
        else:
            min_duty_cycles_local(state, params, nbr, work)

    return either


def _pick_radius(state, params, nbr):  # pragma: no cover - replaced by the overload
    """NuPIC's ``_updateInhibitionRadius`` (:func:`~._kernels.update_inhibition_radius`)."""
    raise NotImplementedError


@overload(_pick_radius, inline=_INLINE)
def _pick_radius_impl(state, params, nbr):
    if is_global_type(nbr):

        def global_only(state, params, nbr):
            state.counters[2] = params.max_col_dim
            return state.counters[2]

        return global_only
    return lambda state, params, nbr: update_inhibition_radius(state, params)


@nb.njit(**_NJIT)
def update_columns(state, params, nbr, raise_perm):
    """NuPIC's ``_updatePermanencesForColumn`` on every column in order (a freshly set
    state): optionally clip and raise to the stimulus threshold, then trim, clip and
    refresh the connected bits. Returns the inhibition radius of the result (NuPIC's
    ``_updateInhibitionRadius``), so a new state costs one compiled kernel, not two.
    ``nbr`` only gives the inhibition mode (:func:`~._structs.no_neighbours`).
    """
    perm = state.perm
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for c in range(state.pot_ptr.shape[0] - 1):
        if raise_perm:
            connected = np.int64(0)  # not a literal 0: one compiled raise_to_threshold
            for k in range(state.pot_ptr[c], state.pot_ptr[c + 1]):
                p = min(max(perm[k], zero), one)
                perm[k] = p
                connected += p > params.conn_thr
            raise_to_threshold(c, state, params, connected)
        finish_column(c, state, params)
    return _pick_radius(state, params, nbr)


@nb.njit(**_NJIT_GIL)
def learn_steps(X, state, params, nbr, work, out_packed, out_overlaps):
    """NuPIC's ``compute(x, learn=True)`` on every 0/1 row of ``X`` (n, I) in order.

    Each step runs the phases in NuPIC's order; its winners are ascending in
    ``work.winners[:m]`` and its raw overlaps in ``work.ov``. Writes each step's active
    columns as packed bits into ``out_packed`` (n, ceil(C/8)) and, when ``out_overlaps``
    has n rows, the raw overlaps (n, C) int32. Returns the last step's number of winners
    and the neighbour table for the final radius.

    The steps are written out here rather than in a per-step kernel: numba re-optimises
    every callee's code at each level of kernels calling kernels, so one level less is
    3 s less compile on a cold cache.
    """
    counters = state.counters
    vals = work.vals
    n_cols = vals.shape[0]
    nd = params.col_dims.shape[0]
    record_ov = out_overlaps.shape[0] == X.shape[0]
    m = 0
    for t in range(X.shape[0]):
        x = X[t]
        counters[0] += 1
        counters[1] += 1
        it = counters[0]
        radius = counters[2]
        nbr = _pick_neighbours(nbr, radius, params)
        calculate_overlap(x, state.conn_bits, work)
        for c in range(n_cols):
            vals[c] = state.boost[c] * np.float32(work.ov[c])
        density = inhibition_density(
            params.local_area_density, params.num_active_per_area, radius, nd, n_cols
        )
        m = _pick_inhibition(vals, density, radius, params, nbr, work)
        adapt_synapses(x, m, state, params, work)
        update_duty_cycles(it, state, params, work)
        bump_up_weak_columns(state, params)
        _pick_boost_exponents(radius, state, params, nbr, work)
        update_boost_factors(state, work)
        if it % params.update_period == 0:
            radius = _pick_radius(state, params, nbr)
            nbr = _pick_neighbours(nbr, radius, params)
            _pick_min_duty_cycles(radius, x.shape[0], state, params, nbr, work)
        if record_ov:
            for c in range(n_cols):
                out_overlaps[t, c] = work.ov[c]
        for w in range(m):
            c = work.winners[w]
            out_packed[t, c >> 3] |= np.uint8(0x80 >> (c & 7))
    return m, nbr


@nb.njit(**_NJIT_GIL)
def learn_one(x, learner):
    """One learning step on the 0/1 row ``x`` through a :class:`~._structs.Learner` handle
    (cheap to call from Python); the handle keeps the neighbour table. Returns the number
    of winners (ascending in ``learner.work.winners``)."""
    work = learner.work
    n_cols = work.vals.shape[0]
    X = x.reshape((1, x.shape[0]))  # the type fit's kernel has: one compiled learn_steps
    packed = np.zeros((1, (n_cols + 7) >> 3), np.uint8)
    overlaps = np.zeros((0, n_cols), np.int32)
    m, nbr = learn_steps(X, learner.state, learner.params, learner.nbr, work, packed, overlaps)
    learner.nbr = nbr
    return m
