"""Kernels of the ``dyadic`` backend: identifier codes, the pair memory, its read and decode.

The memory is Overmann's Dyadic Memory (``x -> y``) with its counters stored sparsely: for
every pair ``(i, j)``, ``i < j``, of an item's selected active bits (key ``i * n_bits + j``)
the counters of the identifier bits written there. Only pairs that occur are stored, as a
CSR over the sorted pair keys; a row holds each identifier bit once, with its count.
"""

from __future__ import annotations

import numba
import numpy as np

from ..sdr import overlap_words

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True)
def _splitmix(x):
    """splitmix64's finaliser of x + golden ratio (a seeded, platform-independent hash)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _item_codes(seed, first_id, n, n_y, p_y):
    """codes[i] = p_y distinct bits < n_y, ascending, drawn from hash(seed, first_id + i)."""
    codes = np.empty((n, p_y), dtype=np.uint16)
    base = _splitmix(np.uint64(seed))
    for i in range(n):
        state = _splitmix(base ^ np.uint64(first_id + i))
        m = 0
        while m < p_y:
            state = _splitmix(state)
            b = np.uint16(state % np.uint64(n_y))
            dup = False
            for t in range(m):
                if codes[i, t] == b:
                    dup = True
            if dup:
                continue
            p = m  # insertion keeps the code ascending
            while p > 0 and codes[i, p - 1] > b:
                codes[i, p] = codes[i, p - 1]
                p -= 1
            codes[i, p] = b
            m += 1
    return codes


@numba.njit(cache=True, nogil=True)
def _select_bits(bits, lo, hi, rank, s, sel):
    """sel[:m] = the m = min(s, hi - lo) of bits[lo:hi] of smallest rank, ascending by bit.

    A fixed random rank over the bit positions, so two similar SDRs keep mostly the same
    bits (a bottom-s min-hash sketch). Returns m.
    """
    m = 0
    for p in range(lo, hi):
        b = bits[p]
        r = rank[b]
        if m == s and r >= rank[sel[m - 1]]:
            continue
        q = m if m < s else s - 1  # the worst kept one drops out when full
        while q > 0 and rank[sel[q - 1]] > r:
            sel[q] = sel[q - 1]
            q -= 1
        sel[q] = b
        if m < s:
            m += 1
    for j in range(1, m):  # ascending by bit, so pair keys read (low, high)
        b = sel[j]
        q = j
        while q > 0 and sel[q - 1] > b:
            sel[q] = sel[q - 1]
            q -= 1
        sel[q] = b
    return m


@numba.njit(cache=True, nogil=True)
def _pair_keys(row_indptr, row_bits, rank, s, n_bits):
    """(keys, items): key i * n_bits + j for every pair i < j of each row's selected bits."""
    n = row_indptr.shape[0] - 1
    sel = np.empty(s, dtype=np.int32)
    total = 0
    for r in range(n):
        m = min(s, row_indptr[r + 1] - row_indptr[r])
        total += m * (m - 1) // 2
    keys = np.empty(total, dtype=np.int64)
    items = np.empty(total, dtype=np.int32)
    p = 0
    for r in range(n):
        m = _select_bits(row_bits, row_indptr[r], row_indptr[r + 1], rank, s, sel)
        for a in range(m - 1):
            for b in range(a + 1, m):
                keys[p] = np.int64(sel[a]) * n_bits + sel[b]
                items[p] = r
                p += 1
    return keys, items


@numba.njit(cache=True, nogil=True)
def _counter_rows(pair_ptr, pair_items, codes, n_y):
    """Row u = (bit, count) for every identifier bit written at pair u: count = #items whose
    code has the bit among pair u's items (two passes: sizes, then fill)."""
    n_pairs = pair_ptr.shape[0] - 1
    p_y = codes.shape[1]
    acc = np.zeros(n_y, dtype=np.int32)
    touched = np.empty(n_y, dtype=np.int32)
    row_ptr = np.zeros(n_pairs + 1, dtype=np.int64)
    for u in range(n_pairs):
        m = 0
        for p in range(pair_ptr[u], pair_ptr[u + 1]):
            for t in range(p_y):
                b = codes[pair_items[p], t]
                if acc[b] == 0:
                    touched[m] = b
                    m += 1
                acc[b] = 1
        for t in range(m):
            acc[touched[t]] = 0
        row_ptr[u + 1] = row_ptr[u] + m
    ybits = np.empty(row_ptr[n_pairs], dtype=np.uint16)
    counts = np.empty(row_ptr[n_pairs], dtype=np.int32)
    for u in range(n_pairs):
        m = 0
        for p in range(pair_ptr[u], pair_ptr[u + 1]):
            for t in range(p_y):
                b = codes[pair_items[p], t]
                if acc[b] == 0:
                    touched[m] = b
                    m += 1
                acc[b] += 1
        base = row_ptr[u]
        for t in range(m):
            ybits[base + t] = touched[t]
            counts[base + t] = acc[touched[t]]
            acc[touched[t]] = 0
    return row_ptr, ybits, counts


@numba.njit(cache=True, nogil=True)
def _find(keys, key):
    """Position of key in ascending keys, or -1 (binary search)."""
    lo, hi = 0, keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < keys.shape[0] and keys[lo] == key:
        return lo
    return -1


@numba.njit(cache=True, nogil=True)
def _kth_largest(values, idx, m, kk):
    """The kk-th largest of values[idx[:m]] (0 when m < kk), by binary search on counts."""
    top = 0
    for t in range(m):
        top = max(top, values[idx[t]])
    if m < kk:
        return 0
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        c = 0
        for t in range(m):
            c += np.int64(values[idx[t]] >= mid)
        if c >= kk:
            lo = mid
        else:
            hi = mid - 1
    return lo


@numba.njit(cache=True, nogil=True)
def _recall(q, n_bits, rank, s, pair_keys, row_ptr, ybits, counts, acc, touched, sel, qbits):
    """acc[b] = sum over the query's selected pairs of their counter of identifier bit b
    (the Dyadic Memory read); touched[:m] lists the bits with acc > 0. Returns m."""
    a = 0
    for j in range(q.shape[0]):
        byte = q[j]
        if byte == 0:
            continue
        for t in range(8):
            if byte & (0x80 >> t):
                qbits[a] = 8 * j + t
                a += 1
    ms = _select_bits(qbits, 0, a, rank, s, sel)
    m = 0
    for i in range(ms - 1):
        for j in range(i + 1, ms):
            u = _find(pair_keys, np.int64(sel[i]) * n_bits + sel[j])
            if u < 0:
                continue
            for p in range(row_ptr[u], row_ptr[u + 1]):
                b = ybits[p]
                if acc[b] == 0:
                    touched[m] = b
                    m += 1
                acc[b] += counts[p]
    return m


@numba.njit(cache=True, nogil=True)
def _insert_best(best_ids, best_val, n, item, val):
    """Insert (item, val) into the sorted best-n list (val desc, item asc), capacity
    len(best_ids); returns the new n."""
    cap = best_ids.shape[0]
    if n == cap and (
        val < best_val[cap - 1] or (val == best_val[cap - 1] and item > best_ids[cap - 1])
    ):
        return n
    p = n if n < cap else cap - 1
    while p > 0 and (best_val[p - 1] < val or (best_val[p - 1] == val and best_ids[p - 1] > item)):
        best_ids[p] = best_ids[p - 1]
        best_val[p] = best_val[p - 1]
        p -= 1
    best_ids[p] = item
    best_val[p] = val
    return n + 1 if n < cap else n


@numba.njit(cache=True, nogil=True)
def _decode(acc, touched, m, t_y, codes, code_ptr, code_ids, hits, hit_ids, cand_ids, cand_key):
    """cand_ids[:c] = the c best items by (hits, soft) desc, id asc, c <= len(cand_ids):
    hits[i] = |code_i AND recalled|, recalled = {b : acc[b] >= t_y}; soft[i] = sum of acc
    over code_i breaks ties. Leaves acc (at touched[:m]) and hits zeroed; returns c."""
    n_hit = 0
    for t in range(m):
        b = touched[t]
        if acc[b] >= t_y:
            for p in range(code_ptr[b], code_ptr[b + 1]):
                item = code_ids[p]
                if hits[item] == 0:
                    hit_ids[n_hit] = item
                    n_hit += 1
                hits[item] += 1
    c = 0
    for t in range(n_hit):
        item = hit_ids[t]
        soft = np.int64(0)
        for j in range(codes.shape[1]):
            soft += acc[codes[item, j]]
        c = _insert_best(cand_ids, cand_key, c, np.int64(item), (np.int64(hits[item]) << 40) + soft)
        hits[item] = 0
    for t in range(m):
        acc[touched[t]] = 0
    return c


@numba.njit(cache=True, nogil=True)
def _dyadic_rows(queries, q_words, k, lo, hi, out_ids, out_ov, scratch_y, scratch_n, *arrays):
    """Rows lo..hi-1 of out = top k (overlap desc, id asc) of the items the memory recalls,
    re-ranked by true overlap, plus the buffered items (counted exactly); -1 padded.

    Read: acc = summed counters of the query's selected pairs; recalled bits = acc at least
    its (k * p_y)-th largest value (and >= 1). Decode: the n_cand * k items with the most
    code bits recalled (``_decode``), then their true overlaps. scratch_y: zeroed int32 of
    length n_y; scratch_n: zeroed int32 of length >= n_main and >= the buffer's size; both
    left zeroed.
    """
    (rank, s, n_cand, pair_keys, row_ptr, ybits, counts, codes, code_ptr, code_ids, words,
     buf_indptr, buf_ids, n_buf, n_main) = arrays  # fmt: skip
    n_bits = rank.shape[0]
    p_y = codes.shape[1]
    touched = np.empty(scratch_y.shape[0], dtype=np.int32)
    sel = np.empty(s, dtype=np.int32)
    qbits = np.empty(n_bits, dtype=np.int32)
    hit_ids = np.empty(max(n_main, 1), dtype=np.int32)
    cand_ids = np.empty(n_cand * k, dtype=np.int64)
    cand_key = np.empty(n_cand * k, dtype=np.int64)
    best_ids = np.empty(k, dtype=np.int64)
    best_ov = np.empty(k, dtype=np.int64)
    for i in range(lo, hi):
        q = queries[i]
        m = _recall(q, n_bits, rank, s, pair_keys, row_ptr, ybits, counts, scratch_y,
                    touched, sel, qbits)  # fmt: skip
        t_y = max(1, _kth_largest(scratch_y, touched, m, k * p_y))
        c = _decode(scratch_y, touched, m, t_y, codes, code_ptr, code_ids, scratch_n, hit_ids,
                    cand_ids, cand_key)  # fmt: skip
        n_best = 0
        for t in range(c):
            ov = np.int64(overlap_words(q_words[i], words[cand_ids[t]]))
            n_best = _insert_best(best_ids, best_ov, n_best, cand_ids[t], ov)
        if n_buf > 0:
            for j in range(q.shape[0]):
                byte = q[j]
                if byte == 0:
                    continue
                for t in range(8):
                    if byte & (0x80 >> t):
                        b = 8 * j + t
                        for p in range(buf_indptr[b], buf_indptr[b + 1]):
                            scratch_n[buf_ids[p] - n_main] += 1
            for j in range(n_buf):
                c = scratch_n[j]
                if c > 0:
                    n_best = _insert_best(best_ids, best_ov, n_best, n_main + j, np.int64(c))
                    scratch_n[j] = 0
        for j in range(k):
            out_ids[i, j] = best_ids[j] if j < n_best else -1
            out_ov[i, j] = best_ov[j] if j < n_best else -1
