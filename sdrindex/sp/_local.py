"""The Spatial Pooler's local-inhibition kernels: neighbourhoods and what uses them.

Kept apart from :mod:`._kernels` because a global SP (the default configuration) never
runs them: :func:`~._kernels.learn_steps` and :func:`~._infer.infer_small` reach them only
through branches numba prunes for it (their ``local`` argument is None), so they compile
only for local inhibition. Same conventions as :mod:`._kernels` (NuPIC's float32
arithmetic, the structures of :mod:`._structs`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._structs import Neighbours

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


@nb.njit(**_NJIT)
def neighbours_for(nbr, radius, params):
    """``nbr`` if it is the table for ``radius`` (or inhibition is global), else a new one."""
    if params.global_inhibition or nbr.radius == radius:
        return nbr
    ptr, idx = neighbor_table(radius, params.col_dims, params.wrap_around)
    return Neighbours(radius, ptr, idx)


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
