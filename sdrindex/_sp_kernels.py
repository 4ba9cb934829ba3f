"""The Spatial Pooler's hot loops as numba kernels (no Python objects).

Every kernel reproduces one step of NuPIC's Python ``SpatialPooler`` (algorithm version 3)
with its float32 arithmetic: constants are rounded to float32 before they meet float32
state, exactly as numpy does when a Python float meets a float32 array. The names of the
NuPIC methods each kernel mirrors are given in its docstring.

State layout shared by the kernels (C columns, I inputs, D dimensions):

- ``pot_ptr`` (C + 1,) int64 and ``pot_idx`` (nnz,) int32: the potential pool of column
  ``c`` is ``pot_idx[pot_ptr[c]:pot_ptr[c + 1]]`` (CSR, ascending).
- ``pdata`` (nnz,) float32: the permanences of those synapses, aligned with ``pot_idx``
  (permanences outside the pool are zero by construction, so they are not stored; a
  dense (C, I) matrix would be 20 MB for 79x79 columns and turn learning memory-bound).
- ``conn_bits`` (ceil(I / 64), C) uint64: the connected synapses as bits, word-major, so
  that the overlaps of a packed input are, word by word, popcounts of
  ``conn_bits[w] & x[w]`` over all columns at once (a loop LLVM vectorises), and the
  input's empty words are skipped.
- ``boost, adc, odc, min_odc`` (C,) float32: boost factors, active / overlap duty cycles,
  minimum overlap duty cycles.
- ``istate`` int64: [iteration_num, iteration_learn_num, inhibition_radius].
- ``fpar`` float32: [syn_perm_active_inc, syn_perm_inactive_dec, connected threshold
  (syn_perm_connected - 1e-6), trim threshold (syn_perm_active_inc / 2),
  below-stimulus increment (syn_perm_connected / 10), boost_strength].
- ``dpar`` float64: [local_area_density, stimulus_threshold, min_pct_overlap_duty_cycle].
- ``ipar`` int64: [global_inhibition, wrap_around, num_active_columns_per_inh_area,
  duty_cycle_period, update_period].
- ``col_dims`` / ``in_dims`` int64 (D,); ``in_coords`` (I, D) int64.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .sdr import popcount64

_NJIT = {"cache": True, "nogil": True}


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


@nb.njit(**_NJIT)
def kth_largest_key(keys, n, k, hist):
    """The k-th largest of ``keys[:n]`` (uint32) by a three-pass radix select (11/11/10 bits).

    Non-negative float32 values order like their bit patterns, so this selects floats too,
    in O(n) whatever the number of ties (quickselect degrades on many equal values).
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
    nc = 0
    lowest = vals[0]
    for c in range(n):
        v = vals[c]
        if v < lowest:
            lowest = v
        if v >= stim:
            cand[nc] = c
            nc += 1
    if nc <= k:
        out[:nc] = cand[:nc]
        return nc
    if lowest >= 0:
        keys = np.empty(nc, np.uint32)
        bits = vals.view(np.uint32)
        for j in range(nc):
            keys[j] = bits[cand[j]]
        hist = np.empty(2048, np.int64)
        t_key = kth_largest_key(keys, nc, k, hist)
        t = np.empty(1, np.uint32)
        t[0] = t_key
        t = t.view(vals.dtype)[0]
    else:
        sub = np.empty(nc, vals.dtype)
        for j in range(nc):
            sub[j] = vals[cand[j]]
        t = np.partition(sub, nc - k)[nc - k]
    greater = 0
    for j in range(nc):
        if vals[cand[j]] > t:
            greater += 1
    ties = k - greater
    m = 0
    for j in range(nc - 1, -1, -1):
        c = cand[j]
        v = vals[c]
        if v > t or (v == t and ties > 0):
            if v == t:
                ties -= 1
            out[m] = c
            m += 1
    out[:m] = out[:m][::-1].copy()
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
    m = 0
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
    out[:m] = out[:m][::-1].copy()
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


@nb.njit(**_NJIT)
def raise_to_threshold(c, pdata, pot_ptr, fpar, stim, connected):
    """NuPIC's ``_raisePermanenceToThreshold`` after its clip: while fewer than ``stim``
    permanences exceed the connected threshold, add syn_perm_connected / 10 to the pool."""
    conn_thr = fpar[2]
    below_inc = fpar[4]
    a = pot_ptr[c]
    b = pot_ptr[c + 1]
    if b - a < stim or below_inc <= 0:
        return  # unreachable threshold: callers validate this; never loop forever
    while connected < stim:
        connected = 0
        for k in range(a, b):
            p = pdata[k] + below_inc
            pdata[k] = p
            connected += p > conn_thr


@nb.njit(**_NJIT)
def finish_column(c, pdata, pot_ptr, pot_idx, conn_bits, fpar):
    """Trim below syn_perm_active_inc / 2, clip to [0, 1], and refresh the connected bits."""
    conn_thr = fpar[2]
    trim = fpar[3]
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for w in range(conn_bits.shape[0]):
        conn_bits[w, c] = 0
    for k in range(pot_ptr[c], pot_ptr[c + 1]):
        i = np.intp(pot_idx[k])
        p = pdata[k]
        p = zero if p < trim else p
        p = min(max(p, zero), one)
        pdata[k] = p
        conn_bits[i >> 6, c] |= np.uint64(p >= conn_thr) << np.uint64(i & 63)


@nb.njit(**_NJIT)
def update_column(c, pdata, pot_ptr, pot_idx, conn_bits, fpar, stim, raise_perm):
    """NuPIC's ``_updatePermanencesForColumn``: optionally clip and raise to the stimulus
    threshold, then trim, clip and refresh the connected bits."""
    if raise_perm:
        conn_thr = fpar[2]
        zero = np.float32(0.0)
        one = np.float32(1.0)
        connected = 0
        for k in range(pot_ptr[c], pot_ptr[c + 1]):
            p = min(max(pdata[k], zero), one)
            pdata[k] = p
            connected += p > conn_thr
        raise_to_threshold(c, pdata, pot_ptr, fpar, stim, connected)
    finish_column(c, pdata, pot_ptr, pot_idx, conn_bits, fpar)


@nb.njit(**_NJIT)
def inhibition_radius_local(pdata, pot_ptr, pot_idx, conn_thr, in_coords, col_dims, in_dims):
    """NuPIC's ``_updateInhibitionRadius`` (local): mean connected span x columns per input."""
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
            i = pot_idx[k]
            if pdata[k] >= conn_thr:
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
        cpi += np.float64(np.float32(col_dims[d])) / in_dims[d]
    cpi /= nd
    radius = (avg_span * cpi - 1.0) / 2.0
    radius = max(1.0, radius)
    return int(radius + 0.5)


@nb.njit(cache=True)
def learn_steps(
    X,
    pdata,
    pot_ptr,
    pot_idx,
    conn_bits,
    boost,
    adc,
    odc,
    min_odc,
    istate,
    fpar,
    dpar,
    ipar,
    col_dims,
    in_coords,
    in_dims,
    out_packed,
    out_overlaps,
):
    """Run NuPIC's ``compute(x, learn=True)`` on every row of ``X`` (n, I) in order.

    Writes each step's active columns as packed bits into ``out_packed`` (n, ceil(C/8))
    and, when ``out_overlaps`` has n rows, the raw overlaps (n, C) int32.
    """
    n_steps, n_in = X.shape
    n_cols = pot_ptr.shape[0] - 1
    nd = col_dims.shape[0]
    inc = fpar[0]
    dec = fpar[1]
    neg_dec = -dec
    conn_thr = fpar[2]
    below_inc = fpar[4]
    strength = fpar[5]
    lad = dpar[0]
    stim = dpar[1]
    min_pct = dpar[2]
    global_inh = ipar[0] != 0
    wrap = ipar[1] != 0
    nac = ipar[2]
    dcp = ipar[3]
    upd = ipar[4]
    max_col_dim = 0
    for d in range(nd):
        max_col_dim = max(max_col_dim, col_dims[d])

    act_in = np.empty(n_in, np.int64)
    n_words = conn_bits.shape[0]
    xbits = np.zeros(n_words, np.uint64)
    acc = np.zeros(n_cols, np.uint64)
    ov = np.zeros(n_cols, np.int32)
    vals = np.empty(n_cols, np.float32)
    winners = np.empty(n_cols, np.int64)
    is_win = np.zeros(n_cols, np.bool_)
    flag = np.zeros(n_cols, np.bool_)
    gather = np.empty(n_cols, np.float32)
    record_ov = out_overlaps.shape[0] == n_steps
    table_radius = -1
    nb_ptr = np.zeros(1, np.int64)
    nb_idx = np.zeros(0, np.int32)
    one = np.float32(1.0)
    zero = np.float32(0.0)

    for t in range(n_steps):
        istate[0] += 1
        istate[1] += 1
        it = istate[0]
        radius = istate[2]
        if not global_inh and radius != table_radius:
            nb_ptr, nb_idx = neighbor_table(radius, col_dims, wrap)  # local neighbourhoods
            table_radius = radius
        x = X[t]
        na = 0
        for i in range(n_in):
            if x[i] != 0:
                act_in[na] = i
                na += 1
        xbits[:] = 0
        for j in range(na):
            i = act_in[j]
            xbits[i >> 6] |= np.uint64(1) << np.uint64(i & 63)
        overlaps_from_bits(conn_bits, xbits, acc, ov)
        if record_ov:
            out_overlaps[t, :] = ov
        for c in range(n_cols):
            vals[c] = boost[c] * np.float32(ov[c])

        density = inhibition_density(lad, nac, radius, nd, n_cols)
        if global_inh or radius > max_col_dim:
            m = inhibit_global(vals, num_active_global(density, n_cols), stim, winners)
        else:
            m = inhibit_local(vals, density, stim, nb_ptr, nb_idx, winners, flag)

        # _adaptSynapses (+ the clip and count that open _raisePermanenceToThreshold)
        is_win[:] = False
        for w in range(m):
            c = winners[w]
            is_win[c] = True
            connected = 0
            for k in range(pot_ptr[c], pot_ptr[c + 1]):
                p = pdata[k] + (inc if x[np.intp(pot_idx[k])] != 0 else neg_dec)
                p = min(max(p, zero), one)
                pdata[k] = p
                connected += p > conn_thr
            raise_to_threshold(c, pdata, pot_ptr, fpar, stim, connected)
            finish_column(c, pdata, pot_ptr, pot_idx, conn_bits, fpar)

        # _updateDutyCycles
        period = min(dcp, it)
        pm1 = np.float32(period - 1.0)
        pf = np.float32(period)
        for c in range(n_cols):
            odc[c] = (odc[c] * pm1 + np.float32(ov[c] > 0)) / pf
            adc[c] = (adc[c] * pm1 + np.float32(is_win[c])) / pf

        # _bumpUpWeakColumns
        for c in range(n_cols):
            if odc[c] < min_odc[c]:
                for k in range(pot_ptr[c], pot_ptr[c + 1]):
                    pdata[k] = pdata[k] + below_inc
                update_column(c, pdata, pot_ptr, pot_idx, conn_bits, fpar, stim, False)

        # _updateBoostFactors. The exponential is numpy's own float32 exp (it differs from
        # libm's expf in the last bit for ~40% of inputs, enough to flip boosted-overlap ties).
        if global_inh:
            target = np.float32(inhibition_density(lad, nac, radius, nd, n_cols))
            for c in range(n_cols):
                vals[c] = (target - adc[c]) * strength
        else:
            for c in range(n_cols):
                a = nb_ptr[c]
                cnt = nb_ptr[c + 1] - a
                for j in range(cnt):
                    gather[j] = adc[nb_idx[a + j]]
                mean = pairwise_sum_f32(gather, cnt) / np.float32(cnt)
                vals[c] = (mean - adc[c]) * strength
        with nb.objmode():
            np.exp(vals, out=boost)

        if it % upd == 0:
            # _updateInhibitionRadius
            if global_inh:
                istate[2] = max_col_dim
            else:
                istate[2] = inhibition_radius_local(
                    pdata, pot_ptr, pot_idx, fpar[2], in_coords, col_dims, in_dims
                )
            radius = istate[2]
            if not global_inh and radius != table_radius:
                nb_ptr, nb_idx = neighbor_table(radius, col_dims, wrap)
                table_radius = radius
            # _updateMinDutyCycles
            if global_inh or radius > n_in:
                top = odc[0]
                for c in range(1, n_cols):
                    if odc[c] > top:
                        top = odc[c]
                v = np.float32(min_pct) * top
                for c in range(n_cols):
                    min_odc[c] = v
            else:
                for c in range(n_cols):
                    a = nb_ptr[c]
                    cnt = nb_ptr[c + 1] - a
                    top = odc[nb_idx[a]]
                    for j in range(a + 1, a + cnt):
                        if odc[nb_idx[j]] > top:
                            top = odc[nb_idx[j]]
                    vals[c] = top * np.float32(min_pct)
                for c in range(n_cols):
                    min_odc[c] = vals[c]

        for w in range(m):
            c = winners[w]
            out_packed[t, c >> 3] |= np.uint8(0x80 >> (c & 7))


@nb.njit(**_NJIT)
def connected_csr(pdata, pot_ptr, pot_idx, conn_thr, n_inputs):
    """Input-major CSR of connected synapses: input i -> columns with perm >= threshold."""
    n_cols = pot_ptr.shape[0] - 1
    counts = np.zeros(n_inputs + 1, np.int64)
    for c in range(n_cols):
        for k in range(pot_ptr[c], pot_ptr[c + 1]):
            i = pot_idx[k]
            if pdata[k] >= conn_thr:
                counts[i + 1] += 1
    for i in range(n_inputs):
        counts[i + 1] += counts[i]
    cols = np.empty(counts[n_inputs], np.int32)
    fill = counts[:-1].copy()
    for c in range(n_cols):
        for k in range(pot_ptr[c], pot_ptr[c + 1]):
            i = pot_idx[k]
            if pdata[k] >= conn_thr:
                cols[fill[i]] = c
                fill[i] += 1
    return counts, cols


@nb.njit(parallel=True, **_NJIT)
def infer_batch(
    X,
    use_bits,
    conn_bits,
    cptr,
    ccols,
    n_cols,
    boost,
    use_boost,
    density,
    num_active,
    stim,
    global_mode,
    nb_ptr,
    nb_idx,
    out_packed,
):
    """Batch inference (NuPIC's ``compute(x, learn=False)`` per row, no state change).

    Overlaps by popcount over the columns' connected bits (``use_bits``) or by scattering
    the active inputs' connected columns (input-major CSR ``cptr``/``ccols``), whichever
    the caller found cheaper; raw overlaps (or boosted, htm.core style, when
    ``use_boost``); global or local inhibition; winners written as packed bits.
    """
    n = X.shape[0]
    n_in = X.shape[1]
    n_words = conn_bits.shape[0]
    chunk = 256
    n_chunks = (n + chunk - 1) // chunk
    for ch in nb.prange(n_chunks):
        counts = np.zeros(n_cols, np.int32)
        vals = np.empty(n_cols, np.float32)
        hist = np.zeros(n_in + 2, np.int64)
        winners = np.empty(n_cols, np.int64)
        flag = np.zeros(n_cols, np.bool_)
        xbits = np.zeros(n_words, np.uint64)
        acc = np.zeros(n_cols, np.uint64)
        start = ch * chunk
        stop = min(n, start + chunk)
        for t in range(start, stop):
            x = X[t]
            if use_bits:
                xbits[:] = 0
                for i in range(n_in):
                    if x[i] != 0:
                        xbits[i >> 6] |= np.uint64(1) << np.uint64(i & 63)
                overlaps_from_bits(conn_bits, xbits, acc, counts)
            else:
                counts[:] = 0
                for i in range(n_in):
                    if x[i] != 0:
                        for k in range(cptr[i], cptr[i + 1]):
                            counts[ccols[k]] += 1
            if use_boost:
                for c in range(n_cols):
                    vals[c] = boost[c] * np.float32(counts[c])
                if global_mode:
                    m = inhibit_global(vals, num_active, stim, winners)
                else:
                    m = inhibit_local(vals, density, stim, nb_ptr, nb_idx, winners, flag)
            else:
                if global_mode:
                    m = inhibit_global_counts(counts, num_active, stim, hist, winners)
                else:
                    m = inhibit_local(counts, density, stim, nb_ptr, nb_idx, winners, flag)
            for w in range(m):
                c = winners[w]
                out_packed[t, c >> 3] |= np.uint8(0x80 >> (c & 7))


@nb.njit(parallel=True, **_NJIT)
def back_project(packed, n_cols, weights):
    """out[s, i] = sum over active columns c of sample s of weights[c, i]."""
    n = packed.shape[0]
    n_in = weights.shape[1]
    out = np.zeros((n, n_in), np.float32)
    for s in nb.prange(n):
        for c in range(n_cols):
            if packed[s, c >> 3] & (0x80 >> (c & 7)):
                for i in range(n_in):
                    out[s, i] += weights[c, i]
    return out
