"""The Spatial Pooler's learning as numba kernels, one per phase of NuPIC's ``compute``.

Every kernel reproduces one step of NuPIC's Python ``SpatialPooler`` (algorithm version 3)
with its float32 arithmetic: constants are rounded to float32 before they meet float32
state, exactly as numpy does when a Python float meets a float32 array. The names of the
NuPIC methods each kernel mirrors are given in its docstring. The kernels take the typed
structures of :mod:`._structs` (layouts documented there); inference is in :mod:`._infer`,
the kernels only local inhibition needs in :mod:`._local`.

One learning step (in :func:`learn_steps`) runs the phases in NuPIC's order:
:func:`calculate_overlap`, inhibition (:func:`inhibit_global` or :func:`inhibit_local`),
:func:`adapt_synapses`, :func:`update_duty_cycles`, :func:`bump_up_weak_columns`, the
boost update (:func:`boost_exponents_global` or :func:`boost_exponents_local`, then
:func:`update_boost_factors`), and every ``update_period`` steps
:func:`update_inhibition_radius` and the minimum duty cycles
(:func:`min_duty_cycles_global` or :func:`min_duty_cycles_local`). The choices between
global and local inhibition (and the stimulus-threshold shortcut) are made by arguments
that are None for the branches a configuration never takes: numba prunes those by type
before compiling, so the default (global) SP compiles none of :mod:`._local`.

Learning's default path lives in this one module (but sdr.popcount64) on purpose: numba's
cache keys a kernel on its own file only, so a kernel calling kernels of another module
keeps their old code in a warm cache after they are edited.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import types
from numba.extending import intrinsic

from sdrindex.sdr import popcount64

from ._local import (
    boost_exponents_local,
    box_neighbors,  # noqa: F401 - the reference tests/test_topology.py checks
    inhibit_local,
    inhibition_radius_local,
    min_duty_cycles_local,
    neighbours_for,
)
from ._structs import Params, Work

_NJIT = {"cache": True, "nogil": True}
# The boost update enters object mode (numpy's exp) and so holds the GIL, as must its callers.
_NJIT_GIL = {"cache": True}


@nb.njit(**_NJIT)
def overlaps_from_bits(conn_bits, xbits, acc, ov):
    """ov[c] = sum over words w of popcount(conn_bits[w, c] & xbits[w])."""
    acc[:] = 0
    n_cols = acc.shape[0]
    for w in range(xbits.shape[0]):
        xw = xbits[w]
        if xw == 0:
            continue
        row = conn_bits[w]
        for c in range(n_cols):
            acc[c] += popcount64(row[c] & xw)
    for c in range(n_cols):
        ov[c] = np.int32(acc[c])


@nb.njit(**_NJIT)
def inhibition_density(local_area_density, num_active_per_area, radius, ndim, n_columns):
    """density = localAreaDensity if > 0 else min(nActive / min(C, (2r+1)^D), 0.5)."""
    if local_area_density > 0:
        return local_area_density
    area = 1
    for _ in range(ndim):
        area *= 2 * radius + 1
    area = min(n_columns, area)
    density = float(num_active_per_area) / area
    return min(density, 0.5)


@nb.njit(**_NJIT)
def num_active_global(density, n_columns):
    """int(density * C), robust to the product landing a hair below an integer.

    NuPIC floors ``(k / C) * C`` directly, which gives k - 1 for some C (49 columns and
    k = 1 give 0.9999999999999999, so no column at all); the 1e-9 keeps exactly k.
    """
    return int(density * n_columns + 1e-9)


@intrinsic
def f32_bits(typingctx, x):
    """The bits of a float32 as a uint32: a bitcast, where an array ``.view`` would compile
    numba's layout checks and their error messages (0.5 s of a cold cache)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def bits_f32(typingctx, u):
    """The float32 whose bits are the uint32 ``u`` (the inverse of :func:`f32_bits`)."""
    if u != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())

    return types.float32(types.uint32), codegen


@nb.njit(**_NJIT)
def kth_largest_key(keys, n, k, hist):
    """The k-th largest of ``keys[:n]`` (uint32) by a three-pass radix select (11/11/10 bits).

    float32 values map to uint32 keys in the same order (see ``inhibit_global``), so this
    selects floats too, in O(n) whatever the number of ties (quickselect degrades on many
    equal values).
    """
    prefix = np.uint32(0)
    pmask = np.uint32(0)
    remaining = k
    for level in range(3):
        shift = 21 if level == 0 else (10 if level == 1 else 0)
        width = np.uint32(0x7FF if level < 2 else 0x3FF)
        hist[:2048] = 0
        for j in range(n):
            key = keys[j]
            if (key & pmask) == prefix:
                hist[(key >> np.uint32(shift)) & width] += 1
        b = np.int64(width)
        cum = 0
        while cum + hist[b] < remaining:
            cum += hist[b]
            b -= 1
        remaining -= cum
        prefix |= np.uint32(b) << np.uint32(shift)
        pmask |= width << np.uint32(shift)
    return prefix


@nb.njit(**_NJIT)
def reverse(a, m):
    """Reverse ``a[:m]`` in place (a slice copy would compile numba's shape-error message:
    about 3 s of string code on a cold cache)."""
    for i in range(m // 2):
        j = m - 1 - i
        v = a[i]
        a[i] = a[j]
        a[j] = v


@nb.njit(**_NJIT)
def inhibit_global(vals, num_active, stim, out):
    """Top ``num_active`` columns by value, ties to the higher index, then value >= stim.

    Writes the winners ascending into ``out``; returns their count (NuPIC's
    ``_inhibitColumnsGlobal``, whose stable argsort puts tied higher indices on top).
    Selecting among the columns >= stim first gives the same set: if more than
    ``num_active`` columns pass the threshold the top ones all do, else all of them win.
    """
    n = vals.shape[0]
    k = min(num_active, n)
    if k <= 0:
        return 0
    cand = np.empty(n, np.int64)
    nc = np.int64(0)  # not a literal: one compiled kth_largest_key
    for c in range(n):
        if vals[c] >= stim:
            cand[nc] = c
            nc += 1
    if nc <= k:
        for j in range(nc):  # loops, not slice copies: those compile a shape-error message
            out[j] = cand[j]
        return nc
    # float32 -> uint32 keys in the same order (sign bit flipped for v >= +0, all bits
    # for v < 0): one radix select for any sign, and no np.partition (10 s of compile)
    sign = np.uint32(0x80000000)
    keys = np.empty(nc, np.uint32)
    for j in range(nc):
        u = f32_bits(vals[cand[j]])
        keys[j] = u ^ sign if u < sign else ~u
    hist = np.empty(2048, np.int64)
    t_key = kth_largest_key(keys, nc, k, hist)
    t = bits_f32(np.uint32(t_key ^ sign if t_key >= sign else ~t_key))
    greater = 0
    for j in range(nc):
        if vals[cand[j]] > t:
            greater += 1
    ties = k - greater
    m = np.int64(0)  # not a literal 0: one compiled reverse
    for j in range(nc - 1, -1, -1):
        c = cand[j]
        v = vals[c]
        if v > t or (v == t and ties > 0):
            if v == t:
                ties -= 1
            out[m] = c
            m += 1
    reverse(out, m)
    return m


@nb.njit(**_NJIT)
def inhibit_global_counts(counts, num_active, stim, hist, out):
    """``inhibit_global`` for integer overlaps by counting: O(C + max overlap)."""
    n = counts.shape[0]
    k = min(num_active, n)
    if k <= 0:
        return 0
    top = 0
    for c in range(n):
        if counts[c] > top:
            top = counts[c]
    hist[: top + 1] = 0
    for c in range(n):
        hist[counts[c]] += 1
    above = 0
    t = top
    while t > 0 and above + hist[t] < k:
        above += hist[t]
        t -= 1
    ties = k - above
    m = np.int64(0)  # not a literal 0: one compiled reverse
    for c in range(n - 1, -1, -1):
        v = counts[c]
        take = False
        if v > t:
            take = True
        elif v == t and ties > 0:
            ties -= 1
            take = True
        if take and v >= stim:
            out[m] = c
            m += 1
    reverse(out, m)
    return m


# ------------------------------------------------------------------ synapse updates


@nb.njit(**_NJIT)
def raise_to_threshold(c, state, params, connected):
    """NuPIC's ``_raisePermanenceToThreshold`` after its clip: while fewer than ``stim``
    permanences exceed the connected threshold, add syn_perm_connected / 10 to the pool."""
    perm = state.perm
    stim = params.stim
    below_inc = params.below_inc
    a = state.pot_ptr[c]
    b = state.pot_ptr[c + 1]
    if b - a < stim or below_inc <= 0:
        return  # unreachable threshold: callers validate this; never loop forever
    while connected < stim:
        connected = 0
        for k in range(a, b):
            p = perm[k] + below_inc
            perm[k] = p
            connected += p > params.conn_thr


@nb.njit(**_NJIT)
def finish_column(c, state, params):
    """Trim below syn_perm_active_inc / 2, clip to [0, 1], and refresh the connected bits.

    The connected bits of each 64-input word are gathered in a register (the pool is
    ascending), so every word of the column is written once.
    """
    perm = state.perm
    pot_idx = state.pot_idx
    conn_thr = params.conn_thr
    trim = params.trim
    zero = np.float32(0.0)
    one = np.float32(1.0)
    k = state.pot_ptr[c]
    b = state.pot_ptr[c + 1]
    for w in range(state.conn_bits.shape[0]):
        word = np.uint64(0)
        end = (w + 1) << 6
        while k < b and pot_idx[k] < end:
            p = perm[k]
            p = zero if p < trim else p
            p = min(max(p, zero), one)
            perm[k] = p
            word |= np.uint64(p >= conn_thr) << np.uint64(pot_idx[k] & 63)
            k += 1
        state.conn_bits[w, c] = word


@nb.njit(**_NJIT)
def adapt_and_finish_column(c, x, state, params):
    """``adapt_synapses`` and ``finish_column`` of one winner in a single pass, for
    stimulus_threshold <= 0 (the raise to threshold between them cannot trigger):
    p = trim(clip(p + (inc if x on else -dec))), connected bits refreshed."""
    perm = state.perm
    pot_idx = state.pot_idx
    inc = params.inc
    neg_dec = -params.dec
    conn_thr = params.conn_thr
    trim = params.trim
    zero = np.float32(0.0)
    one = np.float32(1.0)
    k = state.pot_ptr[c]
    b = state.pot_ptr[c + 1]
    for w in range(state.conn_bits.shape[0]):
        word = np.uint64(0)
        end = (w + 1) << 6
        while k < b and pot_idx[k] < end:
            i = np.intp(pot_idx[k])
            p = perm[k] + (inc if x[i] != 0 else neg_dec)
            p = min(max(p, zero), one)
            p = zero if p < trim else p
            perm[k] = p
            word |= np.uint64(p >= conn_thr) << np.uint64(i & 63)
            k += 1
        state.conn_bits[w, c] = word


# ------------------------------------------------------------------ one learning step


def new_work(n_words: int, n_cols: int) -> Work:
    """Scratch buffers for learning steps on ``n_cols`` columns and ``n_words`` input words
    (plain numpy: a kernel for this compiled for a second)."""
    return Work(
        np.zeros(n_words, np.uint64),
        np.zeros(n_cols, np.uint64),
        np.zeros(n_cols, np.int32),
        np.zeros(n_cols, np.float32),
        np.zeros(n_cols, np.int64),
        np.zeros(n_cols, np.bool_),
        np.zeros(n_cols, np.bool_),
        np.zeros(n_cols, np.float32),
        np.zeros(n_words << 6, np.float32),
    )


@nb.njit(**_NJIT)
def calculate_overlap(x, conn_bits, work):
    """NuPIC's ``_calculateOverlap``: ov[c] = |connected(c) AND x| for a 0/1 row ``x``."""
    xbits = work.xbits
    xbits[:] = 0
    for i in range(x.shape[0]):
        if x[i] != 0:
            xbits[i >> 6] |= np.uint64(1) << np.uint64(i & 63)
    overlaps_from_bits(conn_bits, xbits, work.acc, work.ov)


@nb.njit(**_NJIT)
def adapt_synapses(x, m, state, params, work, stim_free):
    """NuPIC's ``_adaptSynapses`` on the ``m`` winners: p += inc where x is on, else -= dec,
    clipped to [0, 1], raised to the stimulus threshold, trimmed; marks ``work.is_win``.

    ``stim_free`` is None when stimulus_threshold > 0 (then numba prunes, by type, the
    shortcut for a threshold <= 0 and never compiles :func:`adapt_and_finish_column`),
    else True.

    One pass per winner: the clipped values wait in ``work.spare`` and the connected ones
    are counted, so the rare column left with fewer than stim connected synapses is redone
    the long way (restored, raised to the threshold, finished).
    """
    perm = state.perm
    pot_idx = state.pot_idx
    inc = params.inc
    neg_dec = -params.dec
    conn_thr = params.conn_thr
    trim = params.trim
    zero = np.float32(0.0)
    one = np.float32(1.0)
    spare = work.spare
    work.is_win[:] = False
    for w in range(m):
        c = work.winners[w]
        work.is_win[c] = True
        if stim_free is not None and params.stim <= 0:
            adapt_and_finish_column(c, x, state, params)
            continue
        # The same loop as adapt_and_finish_column plus the spare copy and the count, kept
        # inline: as a second callee here it stopped LLVM inlining and cost 2.4x (htmcore).
        a = state.pot_ptr[c]
        b = state.pot_ptr[c + 1]
        k = a
        connected = np.int64(0)
        for wd in range(state.conn_bits.shape[0]):
            word = np.uint64(0)
            end = (wd + 1) << 6
            while k < b and pot_idx[k] < end:
                i = np.intp(pot_idx[k])
                p = perm[k] + (inc if x[i] != 0 else neg_dec)
                p = min(max(p, zero), one)
                spare[k - a] = p
                connected += p > conn_thr
                p = zero if p < trim else p
                perm[k] = p
                word |= np.uint64(p >= conn_thr) << np.uint64(i & 63)
                k += 1
            state.conn_bits[wd, c] = word
        if connected < params.stim:
            for k in range(a, b):
                perm[k] = spare[k - a]
            raise_to_threshold(c, state, params, connected)
            finish_column(c, state, params)


@nb.njit(**_NJIT)
def update_duty_cycles(it, state, params, work):
    """NuPIC's ``_updateDutyCycles``: d = (d * (T - 1) + new) / T, T = min(period, it)."""
    odc = state.overlap_duty
    adc = state.active_duty
    ov = work.ov
    is_win = work.is_win
    period = min(params.duty_cycle_period, it)
    pm1 = np.float32(period - 1.0)
    pf = np.float32(period)
    for c in range(odc.shape[0]):
        odc[c] = (odc[c] * pm1 + np.float32(ov[c] > 0)) / pf
        adc[c] = (adc[c] * pm1 + np.float32(is_win[c])) / pf


@nb.njit(**_NJIT)
def bump_up_weak_columns(state, params):
    """NuPIC's ``_bumpUpWeakColumns``: a column whose overlap duty cycle is below its
    minimum gets syn_perm_connected / 10 added to its whole pool."""
    for c in range(state.overlap_duty.shape[0]):
        if state.overlap_duty[c] < state.min_overlap_duty[c]:
            for k in range(state.pot_ptr[c], state.pot_ptr[c + 1]):
                state.perm[k] = state.perm[k] + params.below_inc
            finish_column(c, state, params)  # update_columns' step without the raise


@nb.njit(**_NJIT)
def boost_exponents_global(radius, state, params, work):
    """The exponents of NuPIC's ``_updateBoostFactors`` under global inhibition,
    (target density - active duty) * strength, into ``work.vals``."""
    adc = state.active_duty
    vals = work.vals
    n_cols = adc.shape[0]
    strength = params.boost_strength
    nd = params.col_dims.shape[0]
    density = inhibition_density(
        params.local_area_density, params.num_active_per_area, radius, nd, n_cols
    )
    target = np.float32(density)
    for c in range(n_cols):
        vals[c] = (target - adc[c]) * strength


@nb.njit(**_NJIT_GIL)
def update_boost_factors(state, work):
    """NuPIC's ``_updateBoostFactors``: b = exp(the exponents in ``work.vals``), see
    :func:`boost_exponents_global` and :func:`boost_exponents_local`."""
    vals = work.vals
    boost = state.boost
    # numpy's own float32 exp: libm's expf differs from it in the last bit for ~40% of
    # inputs, enough to flip boosted-overlap ties against NuPIC's runs.
    with nb.objmode():
        np.exp(vals, out=boost)


@nb.njit(**_NJIT)
def update_inhibition_radius(state, params):
    """NuPIC's ``_updateInhibitionRadius``: the largest column dimension (global), else the
    mean connected span scaled to columns; stored in ``state.counters[2]``."""
    if params.global_inhibition:
        state.counters[2] = params.max_col_dim
    else:
        state.counters[2] = inhibition_radius_local(state, params)
    return state.counters[2]


@nb.njit(**_NJIT)
def min_duty_cycles_global(state, params):
    """NuPIC's ``_updateMinDutyCycles`` over the whole region (global inhibition, or a
    radius beyond the input count): min_pct x the largest overlap duty cycle."""
    odc = state.overlap_duty
    min_odc = state.min_overlap_duty
    top = odc[0]
    for c in range(1, odc.shape[0]):
        if odc[c] > top:
            top = odc[c]
    v = np.float32(params.min_pct) * top
    for c in range(odc.shape[0]):
        min_odc[c] = v


# ------------------------------------------------------------------ the learning loop


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
