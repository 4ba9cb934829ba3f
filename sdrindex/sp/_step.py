"""The Spatial Pooler's learning loop: the phase kernels of :mod:`._kernels` in NuPIC's order.

The phases that differ between global and local inhibition are chosen by a ``local``
argument that is None under global inhibition (the default configuration): numba prunes
the branches it decides by type before compiling, so a global SP never compiles the
local-inhibition kernels. Results do not depend on it: a global SP never took the local
branches.
"""

from __future__ import annotations

import numba as nb
import numpy as np

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
from ._structs import Params

_NJIT = {"cache": True, "nogil": True}
# The boost update enters object mode (numpy's exp) and so holds the GIL, as must its callers.
_NJIT_GIL = {"cache": True}


def local_arg(params: Params) -> bool | None:
    """The ``local`` argument of the kernels here: None under global inhibition, else True."""
    return None if params.global_inhibition else True


def mode_args(params: Params) -> tuple[bool | None, bool | None]:
    """The ``local`` and ``stim_free`` arguments of :func:`learn_steps` and :func:`learn_one`
    (None for the branches a configuration never takes, pruned by numba before typing)."""
    return local_arg(params), (True if params.stim <= 0 else None)


@nb.njit(**_NJIT)
def update_columns(state, params, raise_perm, local):
    """NuPIC's ``_updatePermanencesForColumn`` on every column in order (a freshly set
    state): optionally clip and raise to the stimulus threshold, then trim, clip and
    refresh the connected bits. Returns the inhibition radius of the result (NuPIC's
    ``_updateInhibitionRadius``), so a new state costs one compiled kernel, not two.
    ``local`` is None under global inhibition (see :func:`learn_steps`).
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
    if local is None:  # update_inhibition_radius without its local branch
        state.counters[2] = params.max_col_dim
        return state.counters[2]
    return update_inhibition_radius(state, params)


@nb.njit(**_NJIT_GIL)
def learn_steps(X, state, params, nbr, work, out_packed, out_overlaps, local, stim_free):
    """NuPIC's ``compute(x, learn=True)`` on every 0/1 row of ``X`` (n, I) in order.

    Each step runs the phases in NuPIC's order; its winners are ascending in
    ``work.winners[:m]`` and its raw overlaps in ``work.ov``. Writes each step's active
    columns as packed bits into ``out_packed`` (n, ceil(C/8)) and, when ``out_overlaps``
    has n rows, the raw overlaps (n, C) int32. Returns the last step's number of winners
    and the neighbour table for the final radius.

    ``local`` is None under global inhibition (``params.global_inhibition``), anything
    else (True) under local inhibition. numba prunes the ``local is None`` branches by the
    argument's type before typing, so a global SP compiles none of the local-inhibition
    kernels (neighbourhood tables, local inhibition, neighbourhood sums): about 4 s of a
    cold cache the default configuration never runs. A local SP keeps NuPIC's run-time
    choices (a radius wider than the grid inhibits globally). ``stim_free`` is None when
    stimulus_threshold > 0, else True (see :func:`~._kernels.adapt_synapses`); both come
    from :func:`mode_args`.

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
        if local is not None:
            nbr = neighbours_for(nbr, radius, params)
        calculate_overlap(x, state.conn_bits, work)
        for c in range(n_cols):
            vals[c] = state.boost[c] * np.float32(work.ov[c])
        density = inhibition_density(
            params.local_area_density, params.num_active_per_area, radius, nd, n_cols
        )
        # NuPIC's _inhibitColumns on the boosted overlaps
        if local is None or params.global_inhibition or radius > params.max_col_dim:
            k = num_active_global(density, n_cols)
            m = inhibit_global(vals, k, params.stim, work.winners)
        else:
            m = inhibit_local(vals, density, params.stim, nbr.ptr, nbr.idx, work.winners, work.flag)
        adapt_synapses(x, m, state, params, work, stim_free)
        update_duty_cycles(it, state, params, work)
        bump_up_weak_columns(state, params)
        if local is None or params.global_inhibition:
            boost_exponents_global(radius, state, params, work)
        else:
            boost_exponents_local(state, params, nbr, work)
        update_boost_factors(state, work)
        if it % params.update_period == 0:
            if local is None:  # update_inhibition_radius without its local branch
                counters[2] = params.max_col_dim
                radius = counters[2]
                min_duty_cycles_global(state, params)
            else:
                radius = update_inhibition_radius(state, params)
                nbr = neighbours_for(nbr, radius, params)
                if params.global_inhibition or radius > x.shape[0]:
                    min_duty_cycles_global(state, params)
                else:
                    min_duty_cycles_local(state, params, nbr, work)
        if record_ov:
            for c in range(n_cols):
                out_overlaps[t, c] = work.ov[c]
        for w in range(m):
            c = work.winners[w]
            out_packed[t, c >> 3] |= np.uint8(0x80 >> (c & 7))
    return m, nbr


@nb.njit(**_NJIT_GIL)
def learn_one(x, learner, local, stim_free):
    """One learning step on the 0/1 row ``x`` through a :class:`~._structs.Learner` handle
    (cheap to call from Python); the handle keeps the neighbour table. Returns the number
    of winners (ascending in ``learner.work.winners``); ``local`` and
    ``stim_free`` as for :func:`learn_steps`."""
    work = learner.work
    n_cols = work.vals.shape[0]
    X = x.reshape((1, x.shape[0]))  # the type fit's kernel has: one compiled learn_steps
    packed = np.zeros((1, (n_cols + 7) >> 3), np.uint8)
    overlaps = np.zeros((0, n_cols), np.int32)
    state, params = learner.state, learner.params
    m, nbr = learn_steps(X, state, params, learner.nbr, work, packed, overlaps, local, stim_free)
    learner.nbr = nbr
    return m
