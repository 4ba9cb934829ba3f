"""The graph backend's search: best-first over the search graph, overlap as the score.

The index reaches the kernels as the fields of one :class:`GraphArrays`. One entry kernel
(:func:`_graph_rows`) serves one query and a batch's row ranges alike, and the calls below
it are kept shallow: on a cold cache numba re-optimises all the code a function calls at
every level, so each level costs about a second of compile.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from ..sdr import overlap_words, popcount64
from ._postings import _scatter, _top_k_counts
from ._prefetch import prefetch_row


class GraphArrays(NamedTuple):
    """What a graph search reads: the graph over distinct SDRs, their items, the buffer."""

    words: NDArray[np.uint64]  # (n_distinct, n_words): the distinct SDRs
    vbits: NDArray[np.uint16]  # (n_distinct, max active) padded with n_bits, or (0, 0)
    indptr: NDArray[np.int64]  # (n_distinct + 1,): search graph, CSR ...
    indices: NDArray[np.int32]  # ... its edges
    entries: NDArray[np.int32]  # (n_global,): start vertices of queries sharing no bit
    bit_entries: NDArray[np.int32]  # (n_bits, entries_per_bit): start vertices per bit, -1 pad
    group_ptr: NDArray[np.int64]  # (n_distinct + 1,): distinct SDR -> its item ids ...
    group_ids: NDArray[np.int64]  # (n_graph_items,): ... ascending
    buf_indptr: NDArray[np.int64]  # (n_bits + 1,): posting lists of the buffered items ...
    buf_ids: NDArray[np.int32]  # ... whose ids follow the graph items'
    max_degree: int  # the largest number of edges of a vertex
    n_graph_items: int
    n_buf: int


# =========================================================================== heaps


@numba.njit(cache=True, nogil=True)
def _min_heap_push(keys, vals, size, key, val):
    """Insert (key, val) into the binary min-heap keys[:size]; return the new size."""
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if keys[parent] <= key:
            break
        keys[pos] = keys[parent]
        vals[pos] = vals[parent]
        pos = parent
    keys[pos] = key
    vals[pos] = val
    return size + 1


@numba.njit(cache=True, nogil=True)
def _min_heap_sift_down(keys, vals, size, key, val):
    """Place (key, val) at the root of the min-heap keys[:size] and sift it down."""
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[child] >= key:
            break
        keys[pos] = keys[child]
        vals[pos] = vals[child]
        pos = child
    keys[pos] = key
    vals[pos] = val


@numba.njit(cache=True, nogil=True)
def _grown(arr, n, need):
    """A copy of arr[:n] with room for max(2 * len(arr), need) items."""
    out = np.empty(max(2 * arr.shape[0], need), dtype=arr.dtype)
    for j in range(n):
        out[j] = arr[j]
    return out


# =========================================================================== search


@numba.njit(cache=True, nogil=True)
def _vertex_overlap(q_words, q_dense, words, vbits, v):
    """|q AND x_v| = sum_j q_dense[vbits[v, j]] when bit rows are stored, else popcounts.

    vbits rows list x_v's active bits padded with n_bits, where q_dense is 0.
    """
    if vbits.shape[0] > 0:
        total = 0
        for j in range(vbits.shape[1]):
            total += q_dense[vbits[v, j]]
        return np.int32(total)
    return overlap_words(q_words, words[v])


@numba.njit(cache=True, nogil=True)
def _prefetch_vertex(words, vbits, v):
    """Prefetch the row a search reads for vertex v (its bit row, else its words)."""
    if vbits.shape[0] > 0:
        prefetch_row(vbits, v)
    else:
        prefetch_row(words, v)


@numba.njit(cache=True, nogil=True)
def _mark(visited, v):
    """Set v's bit in the visited bitset; return whether it was set before."""
    bit = np.uint8(1 << (v & 7))
    seen = visited[v >> 3] & bit
    visited[v >> 3] |= bit
    return seen != 0


@numba.njit(cache=True, nogil=True)
def _graph_one(
    q_words, q_count, words, vbits, indptr, indices, starts, n_entries, pool, epsilon,
    visited, res_ov, res_id, q_dense, fresh, fresh_ov,
):  # fmt: skip
    """Best-first search for the `pool` vertices of largest overlap |q AND x_v|.

    Starts from starts[:n_entries]. A vertex joins the candidates when the pool is not
    full or its overlap exceeds bound = worst - floor(epsilon * (q_count - worst)), worst
    being the smallest overlap kept; the search stops when the best candidate left is below
    the bound (slack 0: HNSW's rule). The slack grows with the distance left to a perfect
    match, so sparse SDRs (few, tied overlap values) search as with epsilon = 0 and dense
    ones (fine-grained overlaps) explore further. Fills res_ov/res_id (a min-heap) and
    returns the number kept. visited, q_dense, fresh, fresh_ov: see _graph_rows.
    """
    for j in range(visited.shape[0]):
        visited[j] = 0
    n_res = np.int64(0)  # not a literal: a literal 0 compiles the heap kernels twice
    n_cand = np.int64(0)
    # candidates: a min-heap on -overlap, grown on demand (a search visits few vertices)
    cand_key = np.empty(max(64, 2 * n_entries), dtype=np.int64)
    cand_id = np.empty(max(64, 2 * n_entries), dtype=np.int64)
    for j in range(min(n_entries, 2)):
        _prefetch_vertex(words, vbits, starts[j])
    for j in range(n_entries):
        if j + 2 < n_entries:
            _prefetch_vertex(words, vbits, starts[j + 2])
        e = np.int64(starts[j])
        if _mark(visited, e):
            continue
        ov = np.int64(_vertex_overlap(q_words, q_dense, words, vbits, e))
        if n_res < pool:
            n_res = _min_heap_push(res_ov, res_id, n_res, ov, e)
        elif ov > res_ov[0]:
            _min_heap_sift_down(res_ov, res_id, n_res, ov, e)
        n_cand = _min_heap_push(cand_key, cand_id, n_cand, -ov, e)
    while n_cand > 0:
        c_ov = -cand_key[0]
        c = cand_id[0]
        n_cand -= 1
        if n_cand > 0:
            _min_heap_sift_down(cand_key, cand_id, n_cand, cand_key[n_cand], cand_id[n_cand])
        if n_res == pool and c_ov < res_ov[0] - np.int32(epsilon * (q_count - res_ov[0])):
            break
        # score the unvisited neighbours first, in a loop of independent loads
        n_fresh = 0
        for p in range(indptr[c], indptr[c + 1]):
            v = np.int64(indices[p])
            if not _mark(visited, v):
                fresh[n_fresh] = v
                n_fresh += 1
        # the rows of random vertices: ask for row j + 2 while row j is scored (_prefetch)
        for j in range(min(n_fresh, 2)):
            _prefetch_vertex(words, vbits, fresh[j])
        for j in range(n_fresh):
            if j + 2 < n_fresh:
                _prefetch_vertex(words, vbits, fresh[j + 2])
            fresh_ov[j] = _vertex_overlap(q_words, q_dense, words, vbits, np.int64(fresh[j]))
        if n_cand + n_fresh > cand_key.shape[0]:
            cand_key = _grown(cand_key, n_cand, n_cand + n_fresh)
            cand_id = _grown(cand_id, n_cand, n_cand + n_fresh)
        for j in range(n_fresh):
            ov = np.int64(fresh_ov[j])
            v = np.int64(fresh[j])
            if n_res < pool:
                n_res = _min_heap_push(res_ov, res_id, n_res, ov, v)
                n_cand = _min_heap_push(cand_key, cand_id, n_cand, -ov, v)
            else:
                worst = res_ov[0]
                if ov > worst - np.int32(epsilon * (q_count - worst)):
                    n_cand = _min_heap_push(cand_key, cand_id, n_cand, -ov, v)
                    if ov > worst:
                        _min_heap_sift_down(res_ov, res_id, n_res, ov, v)
    return n_res


@numba.njit(cache=True, nogil=True)
def _query_entries(q_packed, bit_entries, entries, max_entries, q_bits, out):
    """Start vertices of a query: vertices sharing its active bits (else the global ones).

    Takes bit_entries[b, r] for rounds r = 0, 1, ... over up to max_entries active bits b of
    the query spread evenly across them. Sharing a bit gives the search an overlap to climb
    from: far from the query every overlap is 0. Queries without such vertices start from
    the global entries. Writes the query's active bits to q_bits; returns the number of
    start vertices written to out (length >= max_entries + len(entries)).
    """
    n_q = 0
    for j in range(q_packed.shape[0]):
        byte = q_packed[j]
        if byte == 0:
            continue
        for t in range(8):
            if byte & (0x80 >> t):
                q_bits[n_q] = 8 * j + t
                n_q += 1
    n_out = 0
    if n_q > 0:
        n_use = min(n_q, max_entries)
        for r in range(bit_entries.shape[1]):
            for u in range(n_use):
                if n_out >= max_entries:
                    break
                v = bit_entries[q_bits[u * n_q // n_use], r]
                if v >= 0:
                    out[n_out] = v
                    n_out += 1
    if n_out == 0:
        for e in entries:
            out[n_out] = e
            n_out += 1
    return n_out


@numba.njit(cache=True, nogil=True)
def _best_first(ov, ids, m, kk):
    """Positions of the kk best of the m candidates, by (overlap desc, id asc).

    Keys -ov * 2^32 + id are distinct; the kk smallest are kept in a min-heap on -key and
    popped largest first. (np.argsort would do, at ~2 s more compile time on a cold cache.)
    """
    heap_key = np.empty(max(kk, 1), dtype=np.int64)
    heap_pos = np.empty(max(kk, 1), dtype=np.int64)
    n = np.int64(0)
    for j in range(m):
        neg = np.int64(ov[j]) * 4294967296 - ids[j]
        if n < kk:
            n = _min_heap_push(heap_key, heap_pos, n, neg, j)
        elif neg > heap_key[0]:
            _min_heap_sift_down(heap_key, heap_pos, n, neg, j)
    order = np.empty(kk, dtype=np.int64)
    for pos in range(n - 1, -1, -1):
        order[pos] = heap_pos[0]
        if pos > 0:
            _min_heap_sift_down(heap_key, heap_pos, pos, heap_key[pos], heap_pos[pos])
    return order


@numba.njit(cache=True, nogil=True)
def _graph_rows(q_packed, q_words, k, pool, epsilon, max_entries, lo, hi, out_ids, out_ov, *arrays):
    """Rows lo..hi-1 of out = top k of those queries, sharing one work space.

    Row i: the graph search over distinct SDRs, expanded to their items, merged with the
    exact top k of the buffer; ordered by (overlap desc, id asc), -1 padded. One kernel
    for one query and for a row range of a batch: every level of numba calls re-optimises
    all the code below it on a cold cache (~1.3 s a level here). arrays: the fields of a
    GraphArrays, spread because numba's dispatcher types plain arrays on its fast path and
    a namedtuple on a slow one (~5 us more per call).
    """
    (words, vbits, indptr, indices, entries, bit_entries, group_ptr, group_ids, buf_indptr,
     buf_ids, max_degree, n_graph_items, n_buf) = arrays  # fmt: skip
    # the scratch the rows share (plain locals: a namedtuple of them passed down compiled
    # slower)
    n_bits_pad = 8 * q_packed.shape[1] + 1
    n_cand = min(pool * k, n_graph_items) + k
    visited = np.zeros((words.shape[0] >> 3) + 1, dtype=np.uint8)  # bitset over vertices
    # int64 like every heap of the search: one compiled copy of each heap kernel, not 5
    res_ov = np.empty(pool, dtype=np.int64)  # min-heap of the best overlaps ...
    res_id = np.empty(pool, dtype=np.int64)  # ... and their vertices
    counts = np.zeros(max(n_buf, 1), dtype=np.int32)  # the buffer's counters, kept zeroed
    ties = np.empty(k, dtype=np.int64)
    ws_ids = np.empty(n_cand, dtype=np.int64)  # candidate items (graph then buffer) ...
    ws_ov = np.empty(n_cand, dtype=np.int32)  # ... and their overlaps
    q_bits = np.empty(n_bits_pad, dtype=np.int32)  # the query's active bits
    starts = np.empty(max_entries + entries.shape[0], dtype=np.int32)  # its start vertices
    q_dense = np.zeros(n_bits_pad, dtype=np.uint8)  # the query as 0/1 per bit, for vbits
    fresh = np.empty(max(max_degree, 1), dtype=np.int32)  # unvisited neighbours ...
    fresh_ov = np.empty(max(max_degree, 1), dtype=np.int32)  # ... and their overlaps
    for i in range(lo, hi):
        q_p, q_w = q_packed[i], q_words[i]
        # candidates: the items of the pool's vertices (each distinct SDR stands for its
        # items, ascending ids; only the k first can win), then the buffer's exact top k
        q_count = np.int64(0)  # not a literal 0: that would type _graph_one a second time
        for w in range(q_w.shape[0]):
            q_count += popcount64(q_w[w])
        m = np.int64(0)
        if words.shape[0] > 0:
            n_entries = _query_entries(q_p, bit_entries, entries, max_entries, q_bits, starts)
            if vbits.shape[0] > 0:
                for j in range(q_dense.shape[0]):
                    q_dense[j] = 0
                for j in range(q_count):
                    q_dense[q_bits[j]] = 1
            n_res = _graph_one(
                q_w, q_count, words, vbits, indptr, indices, starts, n_entries, pool, epsilon,
                visited, res_ov, res_id, q_dense, fresh, fresh_ov,
            )  # fmt: skip
            for r in range(n_res):
                v = res_id[r]
                for p in range(group_ptr[v], min(group_ptr[v + 1], group_ptr[v] + k)):
                    ws_ids[m] = group_ids[p]
                    ws_ov[m] = res_ov[r]
                    m += 1
        if n_buf > 0:
            _scatter(q_p, buf_indptr, buf_ids, n_graph_items, counts)
            m += _top_k_counts(counts, n_buf, k, ties, ws_ids[m:], ws_ov[m:], n_graph_items)
        kk = min(k, m)
        order = _best_first(ws_ov, ws_ids, m, kk)
        for j in range(kk):
            out_ids[i, j] = ws_ids[order[j]]
            out_ov[i, j] = ws_ov[order[j]]
        for j in range(kk, k):
            out_ids[i, j] = -1
            out_ov[i, j] = -1
