"""The Spatial Pooler's learning as numba kernels, one per phase of NuPIC's ``compute``.

Every kernel reproduces one step of NuPIC's Python ``SpatialPooler`` (algorithm version 3)
with its float32 arithmetic: constants are rounded to float32 before they meet float32
state, exactly as numpy does when a Python float meets a float32 array. The names of the
NuPIC methods each kernel mirrors are given in its docstring. The kernels take the typed
structures of :mod:`._structs` (layouts documented there); inference is in :mod:`._infer`.

One learning step (:func:`._step.learn_steps`) runs the phases in NuPIC's order:
:func:`calculate_overlap`, inhibition (:func:`inhibit_global` or :func:`inhibit_local`),
:func:`adapt_synapses`, :func:`update_duty_cycles`, :func:`bump_up_weak_columns`, the
boost update (:func:`boost_exponents_global` or :func:`boost_exponents_local`, then
:func:`update_boost_factors`), and every ``update_period`` steps
:func:`update_inhibition_radius` and the minimum duty cycles
(:func:`min_duty_cycles_global` or :func:`min_duty_cycles_local`).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import types
from numba.extending import intrinsic

from sdrindex.sdr import popcount64

from ._structs import Neighbours, Work

_NJIT = {"cache": True, "nogil": True}
# The boost update enters object mode (numpy's exp) and so holds the GIL, as must its callers.
_NJIT_GIL = {"cache": True}


@nb.njit(**_NJIT)
def box_neighbors(center, radius, dims, wrap, out):
    """Fill ``out`` with the flat indices within ``radius`` of ``center``; return the count.

    Row-major order over the (clipped or wrapped) hyper-cube, as NuPIC's topology module.
    """
    nd = dims.shape[0]
    lo = np.empty(nd, np.int64)
    length = np.empty(nd, np.int64)
    rem = center
    for d in range(nd - 1, -1, -1):
        p = rem % dims[d]
        rem //= dims[d]
        if wrap:
            left = p - radius
            right = min(p + radius, left + dims[d] - 1)
        else:
            left = max(0, p - radius)
            right = min(dims[d] - 1, p + radius)
        lo[d] = left
        length[d] = right - left + 1
    total = 1
    for d in range(nd):
        total *= length[d]
    off = np.zeros(nd, np.int64)
    for n in range(total):
        flat = 0
        for d in range(nd):
            v = lo[d] + off[d]
            if wrap:
                v = v % dims[d]
            flat = flat * dims[d] + v
        out[n] = flat
        d = nd - 1
        while d >= 0:
            off[d] += 1
            if off[d] < length[d]:
                break
            off[d] = 0
            d -= 1
    return total


@nb.njit(**_NJIT)
def neighbor_table(radius, dims, wrap):
    """CSR (ptr, idx) of every column's neighbourhood, in ``box_neighbors`` order."""
    n = 1
    for d in range(dims.shape[0]):
        n *= dims[d]
    side = 1
    for d in range(dims.shape[0]):
        side *= min(dims[d], 2 * radius + 1)
    buf = np.empty(side, np.int64)
    ptr = np.zeros(n + 1, np.int64)
    idx = np.empty(n * side, np.int32)
    for c in range(n):
        cnt = box_neighbors(c, radius, dims, wrap, buf)
        for j in range(cnt):
            idx[ptr[c] + j] = buf[j]
        ptr[c + 1] = ptr[c] + cnt
    return ptr, idx[: ptr[n]]


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
def pairwise_sum_f32(a, n):
    """numpy's float32 pairwise summation of ``a[:n]`` (same grouping, same rounding)."""
    if n < 8:
        s = np.float32(-0.0)
        for i in range(n):
            s = s + a[i]
        return s
    if n <= 128:
        r0 = a[0]
        r1 = a[1]
        r2 = a[2]
        r3 = a[3]
        r4 = a[4]
        r5 = a[5]
        r6 = a[6]
        r7 = a[7]
        i = 8
        while i < n - (n % 8):
            r0 = r0 + a[i + 0]
            r1 = r1 + a[i + 1]
            r2 = r2 + a[i + 2]
            r3 = r3 + a[i + 3]
            r4 = r4 + a[i + 4]
            r5 = r5 + a[i + 5]
            r6 = r6 + a[i + 6]
            r7 = r7 + a[i + 7]
            i += 8
        s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            s = s + a[i]
            i += 1
        return s
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum_f32(a, n2) + pairwise_sum_f32(a[n2:], n - n2)


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


@nb.njit(**_NJIT)
def inhibit_local(vals, density, stim, nb_ptr, nb_idx, out, flag):
    """NuPIC's ``_inhibitColumnsLocal``: scan columns in index order; column c wins when
    #(neighbours with a larger value) + #(tied neighbours already chosen)
    < int(0.5 + density * neighbourhood size). Returns the count written to ``out``."""
    n = vals.shape[0]
    flag[:n] = False
    m = 0
    for c in range(n):
        v = vals[c]
        if v >= stim:
            a = nb_ptr[c]
            cnt = nb_ptr[c + 1] - a
            bigger = 0
            lost = 0
            for j in range(a, a + cnt):
                u = vals[nb_idx[j]]
                if u > v:
                    bigger += 1
                elif u == v and flag[nb_idx[j]]:
                    lost += 1
            if bigger + lost < int(0.5 + density * cnt):
                flag[c] = True
                out[m] = c
                m += 1
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


@nb.njit(**_NJIT)
def inhibition_radius_local(state, params):
    """NuPIC's ``_updateInhibitionRadius`` (local): mean connected span x columns per input."""
    pot_ptr = state.pot_ptr
    in_coords = params.in_coords
    in_dims = params.in_dims
    n_cols = pot_ptr.shape[0] - 1
    nd = in_dims.shape[0]
    mn = np.empty(nd, np.int64)
    mx = np.empty(nd, np.int64)
    total = 0.0
    for c in range(n_cols):
        any_conn = False
        for d in range(nd):
            mn[d] = 1 << 62
            mx[d] = -1
        for k in range(pot_ptr[c], pot_ptr[c + 1]):
            i = state.pot_idx[k]
            if state.perm[k] >= params.conn_thr:
                any_conn = True
                for d in range(nd):
                    v = in_coords[i, d]
                    if v < mn[d]:
                        mn[d] = v
                    if v > mx[d]:
                        mx[d] = v
        if any_conn:
            span = 0.0
            for d in range(nd):
                span += mx[d] - mn[d] + 1
            total += span / nd
    avg_span = total / n_cols
    cpi = 0.0
    for d in range(nd):
        cpi += np.float64(np.float32(params.col_dims[d])) / in_dims[d]
    cpi /= nd
    radius = (avg_span * cpi - 1.0) / 2.0
    radius = max(1.0, radius)
    return int(radius + 0.5)


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
def neighbours_for(nbr, radius, params):
    """``nbr`` if it is the table for ``radius`` (or inhibition is global), else a new one."""
    if params.global_inhibition or nbr.radius == radius:
        return nbr
    ptr, idx = neighbor_table(radius, params.col_dims, params.wrap_around)
    return Neighbours(radius, ptr, idx)


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


@nb.njit(**_NJIT)
def boost_exponents_local(state, params, nbr, work):
    """The exponents of NuPIC's ``_updateBoostFactors`` under local inhibition, the target
    being the neighbourhood's mean active duty cycle, into ``work.vals``."""
    adc = state.active_duty
    vals = work.vals
    strength = params.boost_strength
    gather = work.gather
    for c in range(adc.shape[0]):
        a = nbr.ptr[c]
        cnt = nbr.ptr[c + 1] - a
        for j in range(cnt):
            gather[j] = adc[nbr.idx[a + j]]
        mean = pairwise_sum_f32(gather, cnt) / np.float32(cnt)
        vals[c] = (mean - adc[c]) * strength


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


@nb.njit(**_NJIT)
def min_duty_cycles_local(state, params, nbr, work):
    """NuPIC's ``_updateMinDutyCycles`` over each column's neighbourhood."""
    odc = state.overlap_duty
    min_odc = state.min_overlap_duty
    n_cols = odc.shape[0]
    vals = work.vals
    for c in range(n_cols):
        a = nbr.ptr[c]
        top = odc[nbr.idx[a]]
        for j in range(a + 1, nbr.ptr[c + 1]):
            if odc[nbr.idx[j]] > top:
                top = odc[nbr.idx[j]]
        vals[c] = top * np.float32(params.min_pct)
    for c in range(n_cols):
        min_odc[c] = vals[c]
