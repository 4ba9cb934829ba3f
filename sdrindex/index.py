"""SDRIndex: nearest neighbours of SDRs by overlap, with an exact and a graph backend.

The score of a stored SDR ``x`` for a query ``q`` is their **overlap** ``|q AND x|`` (shared
active bits). Results are ordered by overlap descending, then id ascending, and ids are the
insertion positions: ``fit`` numbers its rows 0..n-1 and each ``add`` continues from there
(so an index built from ``TrainingTable.sdrs`` answers with table row positions).

Backends
--------
``"exact"``
    An inverted index: for every bit, the ascending ids of the SDRs having it (CSR posting
    lists, the forum's "sdr-id-map"). A query adds 1 to a counter per id in the posting
    lists of its active bits, then takes the top k in O(n) (binary search for the k-th count
    over branch-free counting passes, one collecting scan). When the query's lists are long
    (dense SDRs: more than ~0.3 ids per stored 64-bit word) it counts by AND + popcount over
    the packed rows instead, which is then cheaper. Exact by construction; the ground truth.
``"nndescent"``
    A k-NN graph of the distinct SDRs, built by pynndescent (``bit_jaccard`` on packed rows;
    brute force below 2,048 distinct SDRs), turned into a search graph (partly diversified
    forward edges plus reverse edges, degree capped) and searched best-first with the
    overlap itself as the score, so candidates come out ranked by exact overlap (the
    "re-rank" is the search). Searches start from vertices sharing the query's active bits:
    far from the query every overlap is 0 and a search has nothing to climb. Identical SDRs
    are one vertex standing for all their ids. The search runs in this module's own numba
    kernels over plain arrays: nothing is compiled per index, numba's disk cache serves every
    process, queries share no buffers, and an index restores with ``np.load``; pynndescent
    is imported only to build.

SDRs added after the graph was built go to a small exact buffer (an inverted index searched
beside the graph), so they are found at once; ``rebuild()`` folds them into the graph.

Thread safety: queries read an immutable snapshot of the index and allocate their own
work space, so any number of threads may query at once, also while another thread calls
``add`` or ``rebuild`` (mutations are serialised by a lock and publish a new snapshot).
Batched queries run in parallel over numba's threads (OpenMP layer here, which is thread
safe but not fork safe: fork worker processes before the first batched query).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._store import load_array, save_arrays
from .errors import BundleError, ParameterError, SDRIndexError
from .sdr import (
    _overlap_matrix,
    _overlap_words,
    n_bytes,
    popcount64,
    row_popcount,
    to_csr,
    to_words,
    validate,
)

__all__ = ["SDRIndex", "BACKENDS", "NNDESCENT_DEFAULTS"]

BACKENDS = ("exact", "nndescent")

#: Defaults of the ``nndescent`` backend, chosen on Spatial Pooler SDRs of MNIST (the
#: project's SP presets, 60k training images stored, 2k test images as queries; recall@10
#: counting ties; QPS ratio = single queries on one thread against the exact backend's in
#: the same run, 2-core machine; 2026-11-28):
#:
#: - ``sdrindex-mnist`` (6241 columns, 624 active): recall 0.998, 10x, graph built in 6-7 s
#:   (20 neighbours; 30 gave 0.999 in 10-11 s);
#: - ``forum-global`` (1369 columns, 8 active): recall 0.9996, 2.2-2.9x;
#: - ``forum-local`` (900 columns, ~37 active): recall 0.992, 1.8-3.3x (20 neighbours and
#:   ef 10 gave 0.971: hence the few-active-bits rule, ``_FEW_ACTIVE``);
#: - 1M = 60k + noisy copies: forum-global 0.997 and 28x; htmcore-mnist (1M distinct)
#:   0.992 and ~20x with the automatic (ef, epsilon) = (32, 0.2) (0.87 with (10, 0.1)).
#:
#: diversify_prob 0.5 keeps half the k-NN edges diversification would drop: 1.0 cost
#: htmcore-mnist recall (0.976), 0.0 bought nothing. epsilon widens the search only for
#: queries with many active bits (see ``_graph_one``). n_neighbors / ef / epsilon None:
#: chosen from the number of distinct SDRs and their mean active bits
#: (``_graph_neighbors``, ``_auto_search``). Start vertices share a query bit; more of them
#: (n_entry_points) cost little and rescue queries whose answer sits in a cluster the graph
#: barely links to. n_trees / n_iters None: pynndescent chooses.
NNDESCENT_DEFAULTS: dict[str, Any] = {
    "n_neighbors": None,
    "n_trees": None,
    "n_iters": None,
    "diversify_prob": 0.5,
    "pruning_degree_multiplier": 1.5,
    "ef": None,
    "epsilon": None,
    "n_entry_points": 128,
    "entries_per_bit": 4,
    "metric": "bit_jaccard",
    "random_state": 0,
    "n_jobs": None,
}

# nndescent: searches read each vertex's active bits (a uint16 row) instead of its packed
# words when the longest row is shorter than this many entries per word (16 bytes instead of
# 176 for 8-of-1369 SDRs; dense SDRs keep the vectorised popcounts).
_SPARSE_BELOW = 2.0
_N_GLOBAL_ENTRIES = 8  # nndescent: spread-out start vertices for queries sharing no bit with any
_EXACT_KNN_BELOW = 2048  # nndescent: brute-force k-NN graph for fewer distinct SDRs
_FORMAT = "sdrindex.index"
_FORMAT_VERSION = 1
_MERGE_MIN = 4096  # exact backend: fold the buffer into the main lists beyond this many items
# Exact backend: scan the packed words instead of the posting lists when the lists hold more
# than this many ids per stored uint64 word (measured: ~1 ns per random counter increment,
# ~0.3 ns per vectorised AND+popcount word).
_SCAN_COST = 0.3


# =========================================================================== kernels
# Inverted index


@numba.njit(cache=True, nogil=True)
def _build_postings(row_indptr, row_bits, n_bits, id_offset):
    """postings of bit b = ascending (i + id_offset) over rows i whose active bits include b."""
    counts = np.zeros(n_bits + 1, dtype=np.int64)
    for p in range(row_bits.shape[0]):
        counts[row_bits[p] + 1] += 1
    indptr = np.cumsum(counts)
    fill = indptr[:-1].copy()
    ids = np.empty(row_bits.shape[0], dtype=np.int32)
    for i in range(row_indptr.shape[0] - 1):
        for p in range(row_indptr[i], row_indptr[i + 1]):
            b = row_bits[p]
            ids[fill[b]] = i + id_offset
            fill[b] += 1
    return indptr, ids


@numba.njit(cache=True, nogil=True)
def _merge_postings(indptr_a, ids_a, indptr_b, ids_b):
    """postings of bit b = postings_a(b) followed by postings_b(b)."""
    n_bits = indptr_a.shape[0] - 1
    indptr = np.zeros(n_bits + 1, dtype=np.int64)
    for b in range(n_bits):
        indptr[b + 1] = (
            indptr[b] + (indptr_a[b + 1] - indptr_a[b]) + (indptr_b[b + 1] - indptr_b[b])
        )
    ids = np.empty(indptr[n_bits], dtype=np.int32)
    for b in range(n_bits):
        p = indptr[b]
        for j in range(indptr_a[b], indptr_a[b + 1]):
            ids[p] = ids_a[j]
            p += 1
        for j in range(indptr_b[b], indptr_b[b + 1]):
            ids[p] = ids_b[j]
            p += 1
    return indptr, ids


@numba.njit(inline="always", cache=True)
def _scatter(q_packed, indptr, ids, id_offset, counts):
    """counts[id - id_offset] += 1 for every id in the posting lists of the query's active bits."""
    for j in range(q_packed.shape[0]):
        byte = q_packed[j]
        if byte == 0:
            continue
        for t in range(8):
            if byte & (0x80 >> t):
                b = 8 * j + t
                for p in range(indptr[b], indptr[b + 1]):
                    counts[ids[p] - id_offset] += 1


@numba.njit(inline="always", cache=True)
def _count_at_least(counts, n, v):
    """#{i < n : counts[i] >= v} (a branch-free pass the compiler vectorises)."""
    total = 0
    for i in range(n):
        total += np.int64(counts[i] >= v)
    return total


@numba.njit(inline="always", cache=True)
def _top_k_counts(counts, n, k, ties, out_ids, out_ov, id_offset):
    """out = the min(k, n) best (counts[i] desc, i asc) of counts[:n], in order; counts reset to 0.

    The k-th largest count t is found by binary search over branch-free counting passes;
    one scan then collects the few counts >= t (ids ascending), and a stable insertion sort
    orders those above t. ties is scratch of length >= k. Returns min(k, n).
    """
    kk = min(k, n)
    top = 0
    for i in range(n):
        top = max(top, counts[i])
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if _count_at_least(counts, n, mid) >= kk:
            lo = mid
        else:
            hi = mid - 1
    t = lo
    n_above = 0
    n_ties = 0
    for i in range(n):
        c = counts[i]
        if c >= t:
            if c > t:
                out_ids[n_above] = i + id_offset
                out_ov[n_above] = c
                n_above += 1
            elif n_ties < kk:
                ties[n_ties] = i + id_offset
                n_ties += 1
    for j in range(1, n_above):  # stable: ids stay ascending within an overlap
        key_id = out_ids[j]
        key_ov = out_ov[j]
        p = j - 1
        while p >= 0 and out_ov[p] < key_ov:
            out_ids[p + 1] = out_ids[p]
            out_ov[p + 1] = out_ov[p]
            p -= 1
        out_ids[p + 1] = key_id
        out_ov[p + 1] = key_ov
    for j in range(kk - n_above):
        out_ids[n_above + j] = ties[j]
        out_ov[n_above + j] = t
    for i in range(n):
        counts[i] = 0
    return kk


@numba.njit(inline="always", cache=True)
def _posting_cost(q_packed, indptr):
    """sum of the posting list lengths of the query's active bits."""
    cost = 0
    for j in range(q_packed.shape[0]):
        byte = q_packed[j]
        if byte == 0:
            continue
        for t in range(8):
            if byte & (0x80 >> t):
                b = 8 * j + t
                cost += indptr[b + 1] - indptr[b]
    return cost


@numba.njit(inline="always", cache=True)
def _exact_one(
    q, qw, indptr_a, ids_a, words_a, indptr_b, ids_b, n, k, counts, ties, out_ids, out_ov
):  # fmt: skip
    """Exact top k of one query over items 0..n-1 (set a, then set b), -1 padded.

    Set a is counted from its posting lists, or by a popcount scan of its words when the
    query's posting lists are long (dense SDRs); set b always from its posting lists.
    """
    n_a = words_a.shape[0]
    if _posting_cost(q, indptr_a) > _SCAN_COST * n_a * words_a.shape[1]:
        for i in range(n_a):
            counts[i] = _overlap_words(qw, words_a[i])
    else:
        _scatter(q, indptr_a, ids_a, 0, counts)
    _scatter(q, indptr_b, ids_b, 0, counts)
    kk = _top_k_counts(counts, n, k, ties, out_ids, out_ov, 0)
    for j in range(kk, k):
        out_ids[j] = -1
        out_ov[j] = -1


@numba.njit(cache=True, nogil=True)
def _exact_batch(
    queries, q_words, indptr_a, ids_a, words_a, indptr_b, ids_b, n, k, counts, lo, hi, out_ids,
    out_ov,
):  # fmt: skip
    """Rows lo..hi-1 of out = exact top k of those queries (counts: zeroed scratch, len >= n)."""
    ties = np.empty(k, dtype=np.int64)
    for i in range(lo, hi):
        _exact_one(
            queries[i], q_words[i], indptr_a, ids_a, words_a, indptr_b, ids_b, n, k, counts,
            ties, out_ids[i], out_ov[i],
        )  # fmt: skip


@numba.njit(cache=True, parallel=True)
def _exact_parallel(
    queries, q_words, indptr_a, ids_a, words_a, indptr_b, ids_b, n, k, n_chunks, out_ids, out_ov
):  # fmt: skip
    """Row i of out = exact top k of queries[i]; chunks of queries in parallel, own counters."""
    nq = queries.shape[0]
    for c in numba.prange(n_chunks):
        counts = np.zeros(n, dtype=np.int32)
        _exact_batch(
            queries, q_words, indptr_a, ids_a, words_a, indptr_b, ids_b, n, k, counts,
            c * nq // n_chunks, (c + 1) * nq // n_chunks, out_ids, out_ov,
        )  # fmt: skip


# --------------------------------------------------------------------------- graph building


@numba.njit(inline="always", cache=True)
def _distance_words(a, b, hamming):
    """|a XOR b| when hamming, else 1 - |a AND b| / |a OR b| (0 when both are empty)."""
    inter = np.uint64(0)
    union = np.uint64(0)
    for w in range(a.shape[0]):
        inter += popcount64(a[w] & b[w])
        union += popcount64(a[w] | b[w])
    if hamming:
        return np.float32(union - inter)
    if union == 0:
        return np.float32(0.0)
    return np.float32(1.0 - inter / union)


@numba.njit(inline="always", cache=True)
def _edge_hash(i, j, seed):
    """A uniform number in [0, 1) fixed by (i, j, seed): splitmix64 of the three."""
    z = np.uint64(i) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(j) + np.uint64(seed)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True)
def _diversify_row(i, knn, words, prob, seed, hamming, kept, kept_d):
    """Row i of _diversify."""
    kn = knn.shape[1]
    cand = np.empty(kn, dtype=np.int32)
    cd = np.empty(kn, dtype=np.float32)
    m = 0
    for s in range(kn):
        j = knn[i, s]
        if j >= 0 and j != i:
            cand[m] = j
            cd[m] = _distance_words(words[i], words[j], hamming)
            m += 1
    order = np.argsort(cd[:m], kind="mergesort")
    n_kept = 0
    for o in order:
        j = cand[o]
        keep = True
        for r in range(n_kept):
            if _distance_words(words[kept[i, r]], words[j], hamming) < cd[o]:
                if _edge_hash(i, j, seed) < prob:
                    keep = False
                break
        if keep:
            kept[i, n_kept] = j
            kept_d[i, n_kept] = cd[o]
            n_kept += 1


@numba.njit(cache=True, parallel=True)
def _diversify(knn, words, prob, seed, hamming):
    """Keep edge i->j (neighbours by distance) unless a kept r has d(r,j) < d(i,j), w.p. prob.

    Returns the kept neighbours (-1 padded, by distance) and their distances to i.
    """
    n, kn = knn.shape
    kept = np.full((n, kn), -1, dtype=np.int32)
    kept_d = np.full((n, kn), np.inf, dtype=np.float32)
    for i in numba.prange(n):
        _diversify_row(i, knn, words, prob, seed, hamming, kept, kept_d)
    return kept, kept_d


@numba.njit(cache=True, nogil=True)
def _exact_knn_row(i, words, hamming, out):
    """Row i of _exact_knn."""
    n = words.shape[0]
    d = np.empty(n, dtype=np.float32)
    for j in range(n):
        d[j] = _distance_words(words[i], words[j], hamming)
    d[i] = np.inf
    order = np.argsort(d, kind="mergesort")
    for s in range(out.shape[1]):
        out[i, s] = order[s]


@numba.njit(cache=True, parallel=True)
def _exact_knn(words, k, hamming):
    """out[i] = the k vertices j != i nearest to i (distance, then index), by brute force."""
    n = words.shape[0]
    out = np.empty((n, k), dtype=np.int32)
    for i in numba.prange(n):
        _exact_knn_row(i, words, hamming, out)
    return out


@numba.njit(cache=True, nogil=True)
def _search_graph_csr(kept, kept_d, max_degree):
    """Union of the kept edges and their reverses, each vertex keeping its max_degree closest."""
    n, kn = kept.shape
    deg = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for s in range(kn):
            j = kept[i, s]
            if j >= 0:
                deg[i + 1] += 1
                deg[j + 1] += 1
    all_ptr = np.cumsum(deg)
    fill = all_ptr[:-1].copy()
    all_nb = np.empty(all_ptr[n], dtype=np.int32)
    all_d = np.empty(all_ptr[n], dtype=np.float32)
    for i in range(n):
        for s in range(kn):
            j = kept[i, s]
            if j >= 0:
                all_nb[fill[i]] = j
                all_d[fill[i]] = kept_d[i, s]
                fill[i] += 1
                all_nb[fill[j]] = i
                all_d[fill[j]] = kept_d[i, s]
                fill[j] += 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(all_ptr[n], dtype=np.int32)
    seen = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        lo, hi = all_ptr[i], all_ptr[i + 1]
        order = np.argsort(all_d[lo:hi], kind="mergesort")
        p = indptr[i]
        for o in order:
            j = all_nb[lo + o]
            if seen[j] != i and p - indptr[i] < max_degree:
                seen[j] = i
                indices[p] = j
                p += 1
        indptr[i + 1] = p
    return indptr, indices[: indptr[n]].copy()


# --------------------------------------------------------------------------- graph search


@numba.njit(inline="always", cache=True)
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


@numba.njit(inline="always", cache=True)
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


@numba.njit(inline="always", cache=True)
def _grown(arr, n, need):
    """A copy of arr[:n] with room for max(2 * len(arr), need) items."""
    out = np.empty(max(2 * arr.shape[0], need), dtype=arr.dtype)
    for j in range(n):
        out[j] = arr[j]
    return out


@numba.njit(inline="always", cache=True)
def _vertex_overlap(q_words, q_dense, words, vbits, v):
    """|q AND x_v| = sum_j q_dense[vbits[v, j]] when bit rows are stored, else popcounts.

    vbits rows list x_v's active bits padded with n_bits, where q_dense is 0.
    """
    if vbits.shape[0] > 0:
        total = 0
        for j in range(vbits.shape[1]):
            total += q_dense[vbits[v, j]]
        return np.int32(total)
    return _overlap_words(q_words, words[v])


@numba.njit(inline="always", cache=True)
def _mark(visited, v):
    """Set v's bit in the visited bitset; return whether it was set before."""
    bit = np.uint8(1 << (v & 7))
    seen = visited[v >> 3] & bit
    visited[v >> 3] |= bit
    return seen != 0


@numba.njit(inline="always", cache=True)
def _graph_one(
    q_words, q_dense, q_count, words, vbits, indptr, indices, entries, n_entries, pool,
    epsilon, visited, res_ov, res_id, fresh, fresh_ov,
):  # fmt: skip
    """Best-first search for the `pool` vertices of largest overlap |q AND x_v|.

    Starts from entries[:n_entries]. A vertex joins the candidates when the pool is not full
    or its overlap exceeds bound = worst - floor(epsilon * (q_count - worst)), worst being
    the smallest overlap kept; the search stops when the best candidate left is below the
    bound (slack 0: HNSW's rule). The slack grows with the distance left to a perfect match,
    so sparse SDRs (few, tied overlap values) search as with epsilon = 0 and dense ones
    (fine-grained overlaps) explore further. Fills res_ov/res_id (a min-heap) and returns the number
    kept. fresh/fresh_ov are scratch of length >= the largest degree.
    """
    for j in range(visited.shape[0]):
        visited[j] = 0
    n_res = 0
    n_cand = 0
    # candidates: a min-heap on -overlap, grown on demand (a search visits few vertices)
    cand_key = np.empty(max(64, 2 * n_entries), dtype=np.int32)
    cand_id = np.empty(max(64, 2 * n_entries), dtype=np.int32)
    for j in range(n_entries):
        e = entries[j]
        if _mark(visited, e):
            continue
        ov = _vertex_overlap(q_words, q_dense, words, vbits, e)
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
            v = indices[p]
            if not _mark(visited, v):
                fresh[n_fresh] = v
                n_fresh += 1
        for j in range(n_fresh):
            fresh_ov[j] = _vertex_overlap(q_words, q_dense, words, vbits, fresh[j])
        if n_cand + n_fresh > cand_key.shape[0]:
            cand_key = _grown(cand_key, n_cand, n_cand + n_fresh)
            cand_id = _grown(cand_id, n_cand, n_cand + n_fresh)
        for j in range(n_fresh):
            ov = fresh_ov[j]
            v = fresh[j]
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


@numba.njit(inline="always", cache=True)
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


@numba.njit(inline="always", cache=True)
def _graph_query_one(
    q_packed, q_words, words, vbits, indptr, indices, entries, bit_entries, max_entries,
    group_ptr, group_ids, buf_indptr, buf_ids, n_graph_items, n_buf, k, pool, epsilon, ws,
    out_ids, out_ov,
):  # fmt: skip
    """Top k of one query: graph search over distinct SDRs, expanded to their items, merged
    with the exact top k of the buffer; ordered by (overlap desc, id asc), -1 padded."""
    (visited, res_ov, res_id, counts, ties, ws_ids, ws_ov, q_bits, starts, q_dense, fresh,
     fresh_ov) = ws  # fmt: skip
    q_count = 0
    for w in range(q_words.shape[0]):
        q_count += popcount64(q_words[w])
    m = 0
    if words.shape[0] > 0:
        n_entries = _query_entries(q_packed, bit_entries, entries, max_entries, q_bits, starts)
        if vbits.shape[0] > 0:
            for j in range(q_dense.shape[0]):
                q_dense[j] = 0
            for j in range(q_count):
                q_dense[q_bits[j]] = 1
        n_res = _graph_one(
            q_words, q_dense, q_count, words, vbits, indptr, indices, starts, n_entries, pool,
            epsilon, visited, res_ov, res_id, fresh, fresh_ov,
        )  # fmt: skip
        # each distinct SDR stands for its items (ascending ids); only the k first can win
        for r in range(n_res):
            g = res_id[r]
            hi = min(group_ptr[g + 1], group_ptr[g] + k)
            for p in range(group_ptr[g], hi):
                ws_ids[m] = group_ids[p]
                ws_ov[m] = res_ov[r]
                m += 1
    if n_buf > 0:
        _scatter(q_packed, buf_indptr, buf_ids, n_graph_items, counts)
        m += _top_k_counts(counts, n_buf, k, ties, ws_ids[m:], ws_ov[m:], n_graph_items)
    keys = np.empty(m, dtype=np.int64)
    for j in range(m):
        keys[j] = -np.int64(ws_ov[j]) * 4294967296 + ws_ids[j]
    order = np.argsort(keys)
    kk = min(k, m)
    for j in range(kk):
        out_ids[j] = ws_ids[order[j]]
        out_ov[j] = ws_ov[order[j]]
    for j in range(kk, k):
        out_ids[j] = -1
        out_ov[j] = -1


@numba.njit(cache=True, nogil=True)
def _graph_batch(
    q_packed, q_words, words, vbits, indptr, indices, max_degree, entries, bit_entries,
    max_entries, group_ptr, group_ids, buf_indptr, buf_ids, n_graph_items, n_buf, k, pool,
    epsilon, lo, hi, out_ids, out_ov,
):  # fmt: skip
    """Rows lo..hi-1 of out = top k of those queries, sharing one work space."""
    n_bits_pad = 8 * q_packed.shape[1] + 1
    ws = (
        np.zeros((words.shape[0] >> 3) + 1, dtype=np.uint8),  # visited
        np.empty(pool, dtype=np.int32),  # res_ov
        np.empty(pool, dtype=np.int32),  # res_id
        np.zeros(max(n_buf, 1), dtype=np.int32),  # counts
        np.empty(k, dtype=np.int64),  # ties
        np.empty(min(pool * k, n_graph_items) + k, dtype=np.int64),  # ws_ids
        np.empty(min(pool * k, n_graph_items) + k, dtype=np.int32),  # ws_ov
        np.empty(n_bits_pad, dtype=np.int32),  # q_bits
        np.empty(max_entries + entries.shape[0], dtype=np.int32),  # starts
        np.zeros(n_bits_pad, dtype=np.uint8),  # q_dense
        np.empty(max(max_degree, 1), dtype=np.int32),  # fresh
        np.empty(max(max_degree, 1), dtype=np.int32),  # fresh_ov
    )
    for i in range(lo, hi):
        _graph_query_one(
            q_packed[i], q_words[i], words, vbits, indptr, indices, entries, bit_entries,
            max_entries, group_ptr, group_ids, buf_indptr, buf_ids, n_graph_items, n_buf, k,
            pool, epsilon, ws, out_ids[i], out_ov[i],
        )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _graph_serial(
    q_packed, q_words, words, vbits, indptr, indices, max_degree, entries, bit_entries,
    max_entries, group_ptr, group_ids, buf_indptr, buf_ids, n_graph_items, n_buf, k, pool,
    epsilon, out_ids, out_ov,
):  # fmt: skip
    """Row i of out = top k of query i (see _graph_query_one), on the calling thread."""
    _graph_batch(
        q_packed, q_words, words, vbits, indptr, indices, max_degree, entries, bit_entries,
        max_entries, group_ptr, group_ids, buf_indptr, buf_ids, n_graph_items, n_buf, k, pool,
        epsilon, 0, q_packed.shape[0], out_ids, out_ov,
    )  # fmt: skip


@numba.njit(cache=True, parallel=True)
def _graph_parallel(
    q_packed, q_words, words, vbits, indptr, indices, max_degree, entries, bit_entries,
    max_entries, group_ptr, group_ids, buf_indptr, buf_ids, n_graph_items, n_buf, k, pool,
    epsilon, n_chunks, out_ids, out_ov,
):  # fmt: skip
    """Row i of out = top k of query i (see _graph_query_one); chunks of queries in parallel."""
    nq = q_packed.shape[0]
    for c in numba.prange(n_chunks):
        _graph_batch(
            q_packed, q_words, words, vbits, indptr, indices, max_degree, entries, bit_entries,
            max_entries, group_ptr, group_ids, buf_indptr, buf_ids, n_graph_items, n_buf, k,
            pool, epsilon, c * nq // n_chunks, (c + 1) * nq // n_chunks, out_ids, out_ov,
        )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _pick_bit_entries(indptr, ids, per_bit, seed):
    """out[b] = up to per_bit vertices having bit b, drawn without replacement (-1 padded)."""
    n_bits = indptr.shape[0] - 1
    out = np.full((n_bits, per_bit), -1, dtype=np.int32)
    for b in range(n_bits):
        lo = indptr[b]
        size = indptr[b + 1] - lo
        chosen = 0
        # Floyd-like rejection on a hash stream: sizes are large, per_bit small
        attempt = 0
        while chosen < min(per_bit, size):
            r = lo + np.int64(_edge_hash(b, attempt, seed) * size)
            attempt += 1
            v = ids[r]
            dup = False
            for j in range(chosen):
                if out[b, j] == v:
                    dup = True
            if not dup:
                out[b, chosen] = v
                chosen += 1
    return out


# =========================================================================== state
# A query reads one immutable snapshot; add/rebuild publish a new one under the lock.


@dataclass(frozen=True)
class _Postings:
    """Posting lists (bit -> ascending ids) of n items."""

    indptr: NDArray[np.int64]  # (n_bits + 1,)
    ids: NDArray[np.int32]  # (indptr[-1],)
    n: int

    @classmethod
    def build(cls, packed: NDArray[np.uint8], n_bits: int, id_offset: int) -> _Postings:
        row_indptr, row_bits = to_csr(packed, n_bits)
        indptr, ids = _build_postings(row_indptr, row_bits, n_bits, id_offset)
        return cls(indptr, ids, packed.shape[0])

    def merged(self, other: _Postings) -> _Postings:
        indptr, ids = _merge_postings(self.indptr, self.ids, other.indptr, other.ids)
        return _Postings(indptr, ids, self.n + other.n)


@dataclass(frozen=True)
class _Buffer:
    """Items added since the last build: their SDRs and an inverted index over them."""

    packed: NDArray[np.uint8]  # (n, n_bytes)
    postings: _Postings  # ids are global: id_offset .. id_offset + n - 1

    @classmethod
    def build(cls, packed: NDArray[np.uint8], n_bits: int, id_offset: int) -> _Buffer:
        return cls(packed, _Postings.build(packed, n_bits, id_offset))

    def __len__(self) -> int:
        return self.packed.shape[0]


@dataclass(frozen=True)
class _ExactState:
    main: _Postings  # ids 0 .. main.n - 1
    words: NDArray[np.uint64]  # (main.n, n_words): the same items, for popcount scans
    buffer: _Buffer  # ids main.n ...

    @property
    def n_items(self) -> int:
        return self.main.n + len(self.buffer)

    @classmethod
    def build(cls, packed: NDArray[np.uint8], n_bits: int) -> _ExactState:
        main = _Postings.build(packed, n_bits, 0)
        return cls(main, to_words(packed), _empty_buffer(n_bits, packed.shape[0]))

    def folded(self, n_bits: int) -> _ExactState:
        """The same items with the buffer merged into the main lists."""
        if len(self.buffer) == 0:
            return self
        words = np.concatenate([self.words, to_words(self.buffer.packed)])
        main = self.main.merged(self.buffer.postings)
        return _ExactState(main, words, _empty_buffer(n_bits, self.n_items))


@dataclass(frozen=True)
class _GraphState:
    words: NDArray[np.uint64]  # (n_distinct, n_words): the distinct SDRs of the graph items
    vbits: NDArray[np.uint16]  # (n_distinct, max active) for sparse SDRs, else (0, 0): ...
    # ... their active bits padded with n_bits, which a search then reads instead of words
    indptr: NDArray[np.int64]  # (n_distinct + 1,): search graph, CSR
    indices: NDArray[np.int32]
    entries: NDArray[np.int32]  # (n_global,): spread-out start vertices for every search
    bit_entries: NDArray[np.int32]  # (n_bits, entries_per_bit): start vertices per query bit
    group_ptr: NDArray[np.int64]  # (n_distinct + 1,): distinct SDR -> its item ids ...
    group_ids: NDArray[np.int64]  # (n_graph_items,): ... ascending
    buffer: _Buffer  # items added since the graph was built, ids n_graph_items ...

    @property
    def max_degree(self) -> int:
        """The largest number of edges of a vertex (sizes the search's scratch)."""
        degree = self.__dict__.get("_max_degree")
        if degree is None:
            degree = int(np.diff(self.indptr).max(initial=0))
            object.__setattr__(self, "_max_degree", degree)
        return degree

    @property
    def mean_active(self) -> float:
        """Mean number of active bits of the graph's distinct SDRs (tunes the search)."""
        value = self.__dict__.get("_mean_active")
        if value is None:
            value = _mean_active(self.words)
            object.__setattr__(self, "_mean_active", value)
        return value

    @property
    def n_graph_items(self) -> int:
        return self.group_ids.shape[0]

    @property
    def n_items(self) -> int:
        return self.n_graph_items + len(self.buffer)

    def graph_packed(self, n_bits: int) -> NDArray[np.uint8]:
        """The graph items' SDRs, packed, in id order, of shape (n_graph_items, n_bytes)."""
        distinct = self.words.view(np.uint8)[:, : n_bytes(n_bits)]
        sizes = np.diff(self.group_ptr)
        item_group = np.repeat(np.arange(self.words.shape[0]), sizes)
        out = np.empty((self.n_graph_items, n_bytes(n_bits)), dtype=np.uint8)
        out[self.group_ids] = distinct[item_group]
        return out


# =========================================================================== building


def _distinct_rows(
    packed: NDArray[np.uint8],
) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64]]:
    """Distinct rows and, for each, its item ids ascending (group_ptr, group_ids) in CSR."""
    width = packed.shape[1]
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, width))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    # number the groups by their first item so the graph order follows the data order
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    group_of_item = rank[inverse.ravel()]
    order = np.argsort(group_of_item, kind="stable")
    group_ptr = np.zeros(first.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(group_of_item, minlength=first.shape[0]), out=group_ptr[1:])
    distinct = packed[np.sort(first)]
    return distinct, group_ptr, order.astype(np.int64)


def _knn_graph(distinct: NDArray[np.uint8], params: dict[str, Any]) -> NDArray[np.int32]:
    """k-NN graph of the distinct SDRs, (n_distinct, n_neighbors) int32, -1 padded.

    pynndescent builds it; below _EXACT_KNN_BELOW SDRs brute force is quicker than starting
    pynndescent (whose NN-descent compiles for ~30 s in every process) and exact.
    """
    n = distinct.shape[0]
    k = _graph_neighbors(params, n, _mean_active(to_words(distinct)))
    hamming = params["metric"] == "bit_hamming"
    if n <= 1:
        return np.full((n, 1), -1, dtype=np.int32)
    if n < _EXACT_KNN_BELOW or n <= k + 1:
        return _exact_knn(to_words(distinct), min(k, n - 1), hamming)
    from pynndescent import NNDescent  # slow import (~14 s cold): only when building

    nnd = NNDescent(
        distinct,
        metric=params["metric"],
        n_neighbors=k + 1,  # its public graph lists each point as its own first neighbour
        n_trees=params["n_trees"],
        n_iters=params["n_iters"],
        random_state=params["random_state"],
        n_jobs=params["n_jobs"],
        low_memory=True,
        verbose=False,
    )
    indices, _ = nnd.neighbor_graph
    return np.ascontiguousarray(indices[:, 1:], dtype=np.int32)


def _compile_nn_descent(n_bits: int, metric: str) -> None:
    """Run pynndescent once on a few random SDRs of this width: compiles its NN-descent."""
    from pynndescent import NNDescent

    dummy = np.packbits(np.random.default_rng(0).random((300, n_bits)) < 0.1, axis=1)
    NNDescent(dummy, metric=metric, n_neighbors=5, n_trees=1, n_iters=1,
              low_memory=True, random_state=0, verbose=False)  # fmt: skip


class GraphBuilder:
    """A worker process that compiles pynndescent's NN-descent ahead of the graph build.

    pynndescent's ``nn_descent`` cannot use numba's on-disk cache (it asks numba for the
    thread count inside compiled code, a "dynamic global"), so every process that builds a
    graph compiles it first: ~30 s here, more than the build itself (~10 s for 60k MNIST
    SDRs). ``sdrindex build`` starts one of these before learning the SP: the worker
    (``python -m sdrindex._graph_worker``) compiles on the other core while the SP learns
    and encodes (a thread would not do: the compiler holds the GIL, which the SP's boosting
    step takes 60,000 times), then builds the k-NN graph. The SDRs and the graph travel as
    ``.npy`` files in a private temporary directory. If the worker fails in any way,
    :meth:`knn_graph` builds in this process instead.
    """

    def __init__(self, n_bits: int, metric: str) -> None:
        import subprocess
        import sys
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="sdrindex-graph-")
        self.compile_seconds: float | None = None
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "sdrindex._graph_worker", str(int(n_bits)), metric],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def knn_graph(self, distinct: NDArray[np.uint8], params: dict[str, Any]) -> NDArray[np.int32]:
        """The k-NN graph from the worker (or from this process if the worker failed)."""
        proc = self._proc
        try:
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise OSError("no worker")
            src, dst = Path(self._tmp.name, "sdrs.npy"), Path(self._tmp.name, "graph.npy")
            np.save(src, distinct, allow_pickle=False)
            proc.stdin.write(json.dumps({"input": str(src), "output": str(dst), "params": params}))
            proc.stdin.write("\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline() or "{}")
            if not reply.get("ok"):
                raise OSError(reply.get("error", "the worker stopped"))
            self.compile_seconds = reply.get("compile_seconds")
            graph = np.load(dst, allow_pickle=False)
            if graph.dtype != np.int32 or graph.shape[0] != distinct.shape[0]:
                raise OSError(f"unexpected graph {graph.dtype} {graph.shape}")
            return graph
        except (OSError, ValueError):
            return _knn_graph(distinct, params)
        finally:
            self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:  # a dead worker's stdin: the unsent request is moot
                        pass
        self._tmp.cleanup()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _entry_points(words: NDArray[np.uint64], n_entry: int, seed: int) -> NDArray[np.int32]:
    """Spread-out start vertices: greedy farthest-point (least max overlap ratio) on a sample."""
    n = words.shape[0]
    n_entry = min(n_entry, n)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max(20 * n_entry, 2000)), replace=False))
    sw = words[sample]
    counts = np.maximum(row_popcount(sw), 1).astype(np.float64)
    chosen = [int(rng.integers(sample.shape[0]))]
    closeness = np.zeros(sample.shape[0])
    for _ in range(n_entry - 1):
        ov = np.empty((1, sample.shape[0]), dtype=np.int32)
        _overlap_matrix(sw[chosen[-1] : chosen[-1] + 1], sw, ov)
        closeness = np.maximum(closeness, ov[0] / counts)
        closeness[chosen] = np.inf
        chosen.append(int(np.argmin(closeness)))
    return np.sort(sample[chosen]).astype(np.int32)


def _build_graph(
    packed: NDArray[np.uint8],
    n_bits: int,
    params: dict[str, Any],
    builder: GraphBuilder | None = None,
) -> _GraphState:
    """Search structures of the nndescent backend over packed items (ids 0..n-1)."""
    distinct, group_ptr, group_ids = _distinct_rows(packed)
    words = to_words(distinct)
    if builder is not None and distinct.shape[0] >= _EXACT_KNN_BELOW:
        knn = builder.knn_graph(distinct, params)
    else:
        knn = _knn_graph(distinct, params)
    seed = int(params["random_state"] or 0)
    hamming = params["metric"] == "bit_hamming"
    kept, kept_d = _diversify(knn, words, float(params["diversify_prob"]), seed, hamming)
    n_neighbors = _graph_neighbors(params, distinct.shape[0], _mean_active(words))
    max_degree = max(1, round(params["pruning_degree_multiplier"] * n_neighbors))
    indptr, indices = _search_graph_csr(kept, kept_d, max_degree)
    entries = _entry_points(words, _N_GLOBAL_ENTRIES, seed)
    vertex_indptr, vertex_bits = to_csr(distinct, n_bits)
    bit_indptr, bit_vertices = _build_postings(vertex_indptr, vertex_bits, n_bits, 0)
    bit_entries = _pick_bit_entries(bit_indptr, bit_vertices, int(params["entries_per_bit"]), seed)
    vbits = _bit_rows(vertex_indptr, vertex_bits, n_bits, words.shape[1])
    return _GraphState(
        words, vbits, indptr, indices, entries, bit_entries, group_ptr, group_ids,
        _empty_buffer(n_bits, len(packed)),
    )  # fmt: skip


def _bit_rows(
    indptr: NDArray[np.int64], bits: NDArray[np.int32], n_bits: int, n_words: int
) -> NDArray[np.uint16]:
    """Active bits of each row, (n, max active) uint16 padded with n_bits, when that is cheap.

    Returns an empty (0, 0) array when rows are dense (max active >= _SPARSE_BELOW *
    n_words) or too wide for uint16: searches then use the packed words.
    """
    counts = np.diff(indptr)
    width = int(counts.max()) if counts.size else 0
    if n_bits >= 65535 or width >= _SPARSE_BELOW * n_words or width == 0:
        return np.zeros((0, 0), dtype=np.uint16)
    rows = np.full((counts.shape[0], width), n_bits, dtype=np.uint16)
    row_of = np.repeat(np.arange(counts.shape[0]), counts)
    rows[row_of, np.arange(bits.shape[0]) - indptr[row_of]] = bits
    return rows


def _n_words(n_bits: int) -> int:
    """uint64 words per row in the kernels' layout (see sdr.to_words)."""
    return max(1, (n_bytes(n_bits) + 7) // 8)


def _empty_buffer(n_bits: int, id_offset: int) -> _Buffer:
    return _Buffer.build(np.zeros((0, n_bytes(n_bits)), dtype=np.uint8), n_bits, id_offset)


def _check_params(backend: str, params: dict[str, Any]) -> None:
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {BACKENDS}, got {backend!r}")

    def need(name: str, ok: bool, rule: str) -> None:
        if not ok:
            raise ParameterError(f"{name} must be {rule}, got {params[name]!r}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)

    p = params
    need(
        "n_neighbors",
        p["n_neighbors"] is None or (is_int(p["n_neighbors"]) and p["n_neighbors"] >= 2),
        "None or an integer >= 2",
    )
    need("n_trees", p["n_trees"] is None or (is_int(p["n_trees"]) and p["n_trees"] >= 1),
         "None or an integer >= 1")  # fmt: skip
    need("n_iters", p["n_iters"] is None or (is_int(p["n_iters"]) and p["n_iters"] >= 1),
         "None or an integer >= 1")  # fmt: skip
    need("diversify_prob", is_num(p["diversify_prob"]) and 0 <= p["diversify_prob"] <= 1,
         "a number in [0, 1]")  # fmt: skip
    need("pruning_degree_multiplier",
         is_num(p["pruning_degree_multiplier"]) and p["pruning_degree_multiplier"] > 0,
         "a number > 0")  # fmt: skip
    need("ef", p["ef"] is None or (is_int(p["ef"]) and p["ef"] >= 1),
         "None (automatic) or an integer >= 1")  # fmt: skip
    need("epsilon", p["epsilon"] is None or (is_num(p["epsilon"]) and p["epsilon"] >= 0),
         "None (automatic) or a number >= 0")  # fmt: skip
    need("n_entry_points", is_int(p["n_entry_points"]) and p["n_entry_points"] >= 1,
         "an integer >= 1")  # fmt: skip
    need("entries_per_bit", is_int(p["entries_per_bit"]) and p["entries_per_bit"] >= 1,
         "an integer >= 1")  # fmt: skip
    need("metric", p["metric"] in ("bit_jaccard", "bit_hamming"), "'bit_jaccard' or 'bit_hamming'")
    need("random_state", p["random_state"] is None or is_int(p["random_state"]),
         "None or an integer")  # fmt: skip
    need("n_jobs", p["n_jobs"] is None or is_int(p["n_jobs"]), "None or an integer")


#: SDRs with fewer active bits than this on average count as "few-bit" for the automatic
#: parameters: their overlaps take few values and tie a lot, so the graph needs more edges
#: and the search a wider beam (forum-local, 37 of 900 active: recall 0.971 with 20
#: neighbours and ef 10, 0.992 with 30 and 16).
_FEW_ACTIVE = 64


def _mean_active(words: NDArray[np.uint64]) -> float:
    return float(row_popcount(words).mean()) if words.shape[0] else 0.0


def _graph_neighbors(params: dict[str, Any], n_distinct: int, mean_active: float) -> int:
    """The k of the k-NN graph: ``n_neighbors``, or when None 20 for up to 100,000 distinct
    SDRs with many active bits, else 30. On 60k sdrindex-mnist SDRs 20 builds in 6 s
    instead of 10-11 s for recall@10 0.998 instead of 0.999; 30 is what the 1M
    measurement used."""
    if params["n_neighbors"] is not None:
        return int(params["n_neighbors"])
    return 20 if n_distinct <= 100_000 and mean_active >= _FEW_ACTIVE else 30


def _auto_search(n_distinct: int, mean_active: float) -> tuple[int, float]:
    """(ef, epsilon) for a graph of n_distinct SDRs when the user sets neither.

    (10, 0.1) up to 100,000 distinct SDRs, then ef = 10 * sqrt(n / 1e5) and epsilon =
    0.1 * (n / 1e5) ** 0.3: (32, 0.2) at 1,000,000. Fitted to two measurements on MNIST SDRs
    of the htmcore-mnist preset: 60k stored needs (10, 0.1) for recall@10 0.995; 1M (60k
    plus noisy copies) needs about (30, 0.2) for 0.992, where (10, 0.1) gives 0.87.
    """
    scale = max(1.0, n_distinct / 100_000)
    ef = round(10 * scale**0.5)
    if mean_active < _FEW_ACTIVE:
        ef = max(ef, 16)
    return ef, 0.1 * scale**0.3


def _parallel_ok() -> bool:
    """False under numba's workqueue threading layer, which must not be entered concurrently."""
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel function has run yet
        return True


# =========================================================================== the index


class SDRIndex:
    """Nearest neighbours of SDRs by overlap.

    Parameters
    ----------
    backend : {"exact", "nndescent"}
        ``"exact"``: inverted index, exact. ``"nndescent"``: approximate, graph search. The
        other parameters concern nndescent only (defaults: ``NNDESCENT_DEFAULTS``).
    n_neighbors : int or None
        nndescent: neighbours per distinct SDR in the k-NN graph pynndescent builds (None:
        20 for up to 100,000 distinct SDRs with >= 64 active bits on average, else 30;
        ``_graph_neighbors``).
    n_trees, n_iters : int or None
        nndescent: pynndescent's random projection trees and NN-descent iterations (None:
        pynndescent's size-based choice).
    diversify_prob : float in [0, 1]
        nndescent: probability of dropping an edge i->j when a kept neighbour of i is closer
        to j than i is (0 keeps every k-NN edge).
    pruning_degree_multiplier : float
        nndescent: the search graph keeps at most ``round(multiplier * n_neighbors)`` edges
        per vertex (the closest of the kept and reverse edges).
    ef : int or None
        nndescent: the search keeps the ``max(ef, k)`` best distinct SDRs it meets
        (more: higher recall, slower). None: 10 (16 for SDRs with < 64 active bits on
        average), growing beyond 100k distinct SDRs (``_auto_search``: 32 at 1M). Can be
        overridden per query.
    epsilon : float >= 0 or None
        nndescent: vertices are explored while their overlap exceeds
        ``worst - floor(epsilon * (active_query_bits - worst))`` (``worst``: the smallest
        overlap kept), so only queries with many active bits search wider. None: 0.1,
        growing beyond 100k distinct SDRs (0.2 at 1M). Can be overridden per query.
    n_entry_points : int
        nndescent: start vertices per query, at most, taken among vertices that share the
        query's active bits (``entries_per_bit`` per bit; a query without any starts from
        8 spread-out vertices). Can be overridden per query.
    entries_per_bit : int
        nndescent: random vertices remembered per bit as start vertices (build time).
    metric : {"bit_jaccard", "bit_hamming"}
        nndescent: metric of the k-NN graph (both order neighbours by overlap when all SDRs
        have the same number of active bits).
    random_state : int or None
        nndescent: seed of the build.
    n_jobs : int or None
        nndescent: threads used by pynndescent while building (None: all).

    Notes
    -----
    Ids are insertion positions (``fit``: 0..n-1, then ``add`` continues). ``query`` returns
    exactly k columns: when the index holds fewer than k items, the missing slots have id -1
    and overlap -1 (padding, not clamping, keeps result shapes fixed).

    nndescent returns true overlaps, ordered like the exact backend; it may miss items
    (approximate), and among equal overlaps it may return other ids than the exact backend's
    lowest ones. The build needs pynndescent (its NN-descent compiles for ~30 s in each
    process); queries and loading do not import it.

    Examples
    --------
    >>> index = SDRIndex("nndescent").fit(sdrs, n_bits=1369)  # doctest: +SKIP
    >>> ids, overlaps = index.query(queries, k=10)  # doctest: +SKIP
    >>> index.save("index/"); index = SDRIndex.load("index/")  # doctest: +SKIP
    """

    def __init__(
        self,
        backend: str = "exact",
        *,
        n_neighbors: int | None = NNDESCENT_DEFAULTS["n_neighbors"],
        n_trees: int | None = NNDESCENT_DEFAULTS["n_trees"],
        n_iters: int | None = NNDESCENT_DEFAULTS["n_iters"],
        diversify_prob: float = NNDESCENT_DEFAULTS["diversify_prob"],
        pruning_degree_multiplier: float = NNDESCENT_DEFAULTS["pruning_degree_multiplier"],
        ef: int | None = NNDESCENT_DEFAULTS["ef"],
        epsilon: float | None = NNDESCENT_DEFAULTS["epsilon"],
        n_entry_points: int = NNDESCENT_DEFAULTS["n_entry_points"],
        entries_per_bit: int = NNDESCENT_DEFAULTS["entries_per_bit"],
        metric: str = NNDESCENT_DEFAULTS["metric"],
        random_state: int | None = NNDESCENT_DEFAULTS["random_state"],
        n_jobs: int | None = NNDESCENT_DEFAULTS["n_jobs"],
    ) -> None:
        self.backend = backend
        self.params: dict[str, Any] = {
            "n_neighbors": n_neighbors,
            "n_trees": n_trees,
            "n_iters": n_iters,
            "diversify_prob": diversify_prob,
            "pruning_degree_multiplier": pruning_degree_multiplier,
            "ef": ef,
            "epsilon": epsilon,
            "n_entry_points": n_entry_points,
            "entries_per_bit": entries_per_bit,
            "metric": metric,
            "random_state": random_state,
            "n_jobs": n_jobs,
        }
        _check_params(backend, self.params)
        self.n_bits: int | None = None
        self._state: _ExactState | _GraphState | None = None
        self._lock = threading.Lock()
        self._scratch = threading.local()
        self._builder: GraphBuilder | None = None

    # ------------------------------------------------------------------ sizes

    def __len__(self) -> int:
        state = self._state
        return 0 if state is None else state.n_items

    @property
    def n_buffered(self) -> int:
        """Items added since the last build/rebuild, searched exactly beside the graph."""
        state = self._state
        return 0 if state is None else len(state.buffer)

    def __repr__(self) -> str:
        return f"SDRIndex(backend={self.backend!r}, n_bits={self.n_bits}, n_items={len(self)})"

    # ------------------------------------------------------------------ input

    def _packed(self, sdrs: ArrayLike, n_bits: int | None, what: str) -> NDArray[np.uint8]:
        if n_bits is None:
            arr = np.asarray(sdrs)
            if arr.ndim != 2:
                raise ParameterError(
                    f"{what} must be 2-D (n, n_bits) dense 0/1, or packed with n_bits given; "
                    f"got shape {arr.shape}"
                )
            if arr.dtype == np.uint8 and arr.size and int(arr.max()) > 1:
                raise ParameterError(
                    f"{what} look packed (uint8 values above 1): pass n_bits= to say the SDR width"
                )
            n_bits = arr.shape[1]
        return validate(sdrs, n_bits, what)

    def _query_packed(self, sdrs: ArrayLike) -> NDArray[np.uint8]:
        if self._state is None or self.n_bits is None:
            raise SDRIndexError("the index is empty: call fit(sdrs) before query or add")
        return validate(sdrs, self.n_bits, "query SDRs")

    # ------------------------------------------------------------------ build

    def prepare_fit(self, n_bits: int, n_items: int) -> None:
        """Start, in a background process, the one-off work a later ``fit`` of ``n_items``
        ``n_bits``-bit SDRs begins with (compiling pynndescent's NN-descent, see
        :class:`GraphBuilder`), so that it overlaps with whatever the caller does first.
        The next ``fit`` uses (and then stops) the worker; it does nothing when the fit
        will not need pynndescent."""
        if self.backend != "nndescent" or n_items < _EXACT_KNN_BELOW:
            return
        if self._builder is not None:
            self._builder.close()
        self._builder = GraphBuilder(n_bits, self.params["metric"])

    def fit(self, sdrs: ArrayLike, n_bits: int | None = None) -> SDRIndex:
        """Index a batch of SDRs (replacing anything indexed before).

        Parameters
        ----------
        sdrs : array_like
            Dense of shape (n, n_bits) with 0/1 values, or packed of shape
            (n, ceil(n_bits/8)) uint8 together with ``n_bits``.
        n_bits : int, optional
            The SDR width; required for packed input, inferred from dense input.

        Returns
        -------
        self
        """
        packed = self._packed(sdrs, n_bits, "SDRs")
        if packed.shape[0] == 0:
            raise ParameterError("cannot fit an index on 0 SDRs: pass at least one row")
        if packed.shape[0] >= 2**31:
            raise ParameterError("at most 2**31 - 1 SDRs can be indexed")
        n_bits = n_bits if n_bits is not None else np.asarray(sdrs).shape[-1]
        builder, self._builder = self._builder, None
        with self._lock:
            if self.backend == "exact":
                state: _ExactState | _GraphState = _ExactState.build(packed, n_bits)
            else:
                state = _build_graph(packed, n_bits, self.params, builder)
            self.n_bits = int(n_bits)
            self._state = state
        return self

    def add(self, sdrs: ArrayLike) -> NDArray[np.int64]:
        """Add SDRs; they are found by the very next query.

        Parameters
        ----------
        sdrs : array_like
            Dense (n, n_bits) 0/1 or packed (n, ceil(n_bits/8)) uint8, of the fitted width.

        Returns
        -------
        ndarray of shape (n,), int64
            The new ids, continuing after the largest id so far.
        """
        packed = self._query_packed(sdrs)
        with self._lock:
            state = self._state
            n_bits = self.n_bits
            start = state.n_items
            if packed.shape[0] == 0:
                return np.zeros(0, dtype=np.int64)
            if start + packed.shape[0] >= 2**31:
                raise ParameterError("at most 2**31 - 1 SDRs can be indexed")
            buffered = np.concatenate([state.buffer.packed, packed])
            offset = start - len(state.buffer)
            buffer = _Buffer.build(buffered, n_bits, offset)
            if isinstance(state, _ExactState):
                new_state: _ExactState | _GraphState = _ExactState(state.main, state.words, buffer)
                if len(buffer) > max(_MERGE_MIN, state.main.n // 4):
                    new_state = new_state.folded(n_bits)
            else:
                new_state = _GraphState(
                    state.words, state.vbits, state.indptr, state.indices,
                    state.entries, state.bit_entries, state.group_ptr, state.group_ids, buffer,
                )  # fmt: skip
            self._state = new_state
        return np.arange(start, start + packed.shape[0], dtype=np.int64)

    def rebuild(self) -> SDRIndex:
        """Fold the added SDRs into the main structure (nndescent: rebuilds the graph)."""
        with self._lock:
            state = self._state
            if state is None or len(state.buffer) == 0:
                return self
            n_bits = self.n_bits
            if isinstance(state, _ExactState):
                self._state = state.folded(n_bits)
            else:
                packed = np.concatenate([state.graph_packed(n_bits), state.buffer.packed])
                self._state = _build_graph(packed, n_bits, self.params)
        return self

    # ------------------------------------------------------------------ query

    def query(
        self,
        sdrs: ArrayLike,
        k: int = 10,
        *,
        ef: int | None = None,
        epsilon: float | None = None,
        n_entry_points: int | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """The k stored SDRs of largest overlap with each query.

        Parameters
        ----------
        sdrs : array_like
            Queries, dense (n_queries, n_bits) 0/1 or packed (n_queries, ceil(n_bits/8))
            uint8; a 1-D array is one query.
        k : int
            Neighbours per query.
        ef, epsilon, n_entry_points : optional
            nndescent: override the search parameters of the same names for this call.

        Returns
        -------
        ids : ndarray of shape (n_queries, k), int64
        overlaps : ndarray of shape (n_queries, k), int32
            Row i is ordered by overlap descending, then id ascending. When fewer than k
            items are indexed the remaining slots hold id -1 and overlap -1.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ParameterError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        queries = self._query_packed(sdrs)
        state = self._state  # one snapshot for the whole call
        nq = queries.shape[0]
        out_ids = np.empty((nq, k), dtype=np.int64)
        out_ov = np.empty((nq, k), dtype=np.int32)
        if nq == 0:
            return out_ids, out_ov
        parallel = nq > 1 and _parallel_ok()
        n_chunks = min(nq, 4 * numba.get_num_threads()) if parallel else 1
        if isinstance(state, _ExactState):
            a, b = state.main, state.buffer.postings
            q_words = to_words(queries)
            args = (
                queries,
                q_words,
                a.indptr,
                a.ids,
                state.words,
                b.indptr,
                b.ids,
                state.n_items,
                k,
            )
            if parallel:
                _exact_parallel(*args, n_chunks, out_ids, out_ov)
            else:
                _exact_batch(*args, self._counts(state.n_items), 0, nq, out_ids, out_ov)
            return out_ids, out_ov
        p = self.params
        if ef is not None or epsilon is not None or n_entry_points is not None:
            over = {"ef": ef, "epsilon": epsilon, "n_entry_points": n_entry_points}
            p = {**p, **{n: v for n, v in over.items() if v is not None}}
            _check_params(self.backend, p)
        auto_ef, auto_epsilon = _auto_search(state.words.shape[0], state.mean_active)
        ef = auto_ef if p["ef"] is None else int(p["ef"])
        epsilon = auto_epsilon if p["epsilon"] is None else float(p["epsilon"])
        buf = state.buffer.postings
        args = (
            queries, to_words(queries), state.words, state.vbits, state.indptr, state.indices,
            state.max_degree, state.entries, state.bit_entries, int(p["n_entry_points"]),
            state.group_ptr, state.group_ids, buf.indptr, buf.ids, state.n_graph_items, buf.n, k,
            max(ef, k), epsilon,
        )  # fmt: skip
        if parallel:
            _graph_parallel(*args, n_chunks, out_ids, out_ov)
        else:
            _graph_serial(*args, out_ids, out_ov)
        return out_ids, out_ov

    def _counts(self, n: int) -> NDArray[np.int32]:
        """This thread's zeroed counter array of length >= n (the kernels leave it zeroed)."""
        counts = getattr(self._scratch, "counts", None)
        if counts is None or counts.shape[0] < n:
            counts = np.zeros(max(n, 1), dtype=np.int32)
            self._scratch.counts = counts
        return counts

    # ------------------------------------------------------------------ persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        state = self._state
        if isinstance(state, _ExactState):
            folded = state.folded(self.n_bits)
            return {
                "postings_indptr": folded.main.indptr,
                "postings_ids": folded.main.ids,
                "words": folded.words,
            }
        return {
            "words": state.words,
            "vertex_bits": state.vbits,
            "graph_indptr": state.indptr,
            "graph_indices": state.indices,
            "entries": state.entries,
            "bit_entries": state.bit_entries,
            "group_ptr": state.group_ptr,
            "group_ids": state.group_ids,
            "buffer": state.buffer.packed,
        }

    def save(self, path: str | Path) -> None:
        """Write the index to a directory as plain ``.npy`` files and ``index.json``.

        Nothing is pickled. Existing files of the same names are replaced; the directory is
        created if needed. (For atomic replacement, save into a fresh directory and rename.)
        """
        state = self._state
        if state is None:
            raise SDRIndexError("nothing to save: call fit(sdrs) first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = self._arrays()
        specs = save_arrays(path, arrays)
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "backend": self.backend,
            "n_bits": self.n_bits,
            "n_items": state.n_items,
            "params": self.params,
            "arrays": specs,
        }
        (path / "index.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> SDRIndex:
        """Read an index written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
            The directory.
        mmap : bool
            Map the arrays read-only (``mmap_mode="r"``) so processes share one copy through
            the page cache; ``False`` reads them into memory.

        Raises
        ------
        BundleError
            When a file is missing, unreadable, of the wrong dtype/shape, or inconsistent;
            the message names the file.
        """
        path = Path(path)
        meta_file = path / "index.json"
        try:
            meta = json.loads(meta_file.read_text())
        except FileNotFoundError:
            raise BundleError(
                f"{meta_file}: missing; is {path} an index saved by SDRIndex.save?"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{meta_file}: unreadable ({exc}); save the index again") from exc
        _check_meta(meta, meta_file)
        backend = meta["backend"]
        index = cls(backend, **meta["params"])
        n_bits, n_items = meta["n_bits"], meta["n_items"]
        arrays = {
            name: load_array(path / f"{name}.npy", mmap, spec["dtype"], spec["shape"], "index")
            for name, spec in meta["arrays"].items()
        }
        index.n_bits = n_bits
        index._state = _state_from_arrays(backend, arrays, n_bits, n_items, path)
        return index


# =========================================================================== loading checks


_EXPECTED = {
    "exact": {"postings_indptr": ("<i8", 1), "postings_ids": ("<i4", 1), "words": ("<u8", 2)},
    "nndescent": {
        "words": ("<u8", 2),
        "vertex_bits": ("<u2", 2),
        "graph_indptr": ("<i8", 1),
        "graph_indices": ("<i4", 1),
        "entries": ("<i4", 1),
        "bit_entries": ("<i4", 2),
        "group_ptr": ("<i8", 1),
        "group_ids": ("<i8", 1),
        "buffer": ("|u1", 2),
    },
}


def _check_meta(meta: Any, meta_file: Path) -> None:
    def bad(why: str) -> BundleError:
        return BundleError(f"{meta_file}: {why}; save the index again with SDRIndex.save")

    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise bad(f"not an sdrindex index (format {_FORMAT!r} expected)")
    if meta.get("version") != _FORMAT_VERSION:
        raise bad(
            f"unknown format version {meta.get('version')!r} (this code reads {_FORMAT_VERSION})"
        )
    backend = meta.get("backend")
    if backend not in BACKENDS:
        raise bad(f"unknown backend {backend!r}")
    for key in ("n_bits", "n_items"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad(f"{key} must be a positive integer, got {v!r}")
    params = meta.get("params")
    if not isinstance(params, dict) or set(params) != set(NNDESCENT_DEFAULTS):
        raise bad("params are missing or unknown")
    try:
        _check_params(backend, params)
    except ParameterError as exc:
        raise bad(str(exc)) from exc
    arrays = meta.get("arrays")
    expected = _EXPECTED[backend]
    if not isinstance(arrays, dict) or set(arrays) != set(expected):
        raise bad(f"arrays must be {sorted(expected)}")
    for name, spec in arrays.items():
        dtype, ndim = expected[name]
        ok = (
            isinstance(spec, dict)
            and spec.get("dtype") == dtype
            and isinstance(spec.get("shape"), list)
            and len(spec["shape"]) == ndim
            and all(isinstance(d, int) and d >= 0 for d in spec["shape"])
        )
        if not ok:
            raise bad(f"array {name!r} must be {ndim}-D of dtype {dtype}, got {spec!r}")


def _check_csr(a: dict[str, np.ndarray], ptr: str, idx: str, n_cols: int, path: Path) -> None:
    """a[ptr] starts at 0, never decreases, ends at len(a[idx]); a[idx] lies in [0, n_cols)."""
    indptr, indices = a[ptr], a[idx]
    if indptr.shape[0] == 0 or indptr[0] != 0 or indptr[-1] != indices.shape[0]:
        raise BundleError(
            f"{path / (ptr + '.npy')}: row pointers do not span {idx}.npy; save the index again"
        )
    if np.any(np.diff(indptr) < 0):
        raise BundleError(f"{path / (ptr + '.npy')}: row pointers decrease; save the index again")
    if indices.shape[0] and (indices.min() < 0 or indices.max() >= n_cols):
        raise BundleError(
            f"{path / (idx + '.npy')}: entries outside [0, {n_cols}); save the index again"
        )


def _state_from_arrays(
    backend: str, a: dict[str, np.ndarray], n_bits: int, n_items: int, path: Path
) -> _ExactState | _GraphState:
    def bad(name: str, why: str) -> BundleError:
        return BundleError(f"{path / (name + '.npy')}: {why}; save the index again")

    if backend == "exact":
        if a["postings_indptr"].shape[0] != n_bits + 1:
            raise bad("postings_indptr", f"expected {n_bits + 1} row pointers (n_bits + 1)")
        _check_csr(a, "postings_indptr", "postings_ids", n_items, path)
        if a["words"].shape != (n_items, _n_words(n_bits)):
            raise bad("words", f"expected shape ({n_items}, {_n_words(n_bits)})")
        main = _Postings(a["postings_indptr"], a["postings_ids"], n_items)
        return _ExactState(main, a["words"], _empty_buffer(n_bits, n_items))
    words, buffer = a["words"], a["buffer"]
    n_distinct = words.shape[0]
    if n_distinct < 1 or words.shape[1] != _n_words(n_bits):
        raise bad("words", f"expected shape (n_distinct >= 1, {_n_words(n_bits)})")
    if buffer.shape[1] != n_bytes(n_bits):
        raise bad("buffer", f"expected {n_bytes(n_bits)} bytes per row")
    n_graph = a["group_ids"].shape[0]
    if n_graph + buffer.shape[0] != n_items:
        raise bad("group_ids", f"graph items + buffered items != n_items = {n_items}")
    for ptr in ("graph_indptr", "group_ptr"):
        if a[ptr].shape[0] != n_distinct + 1:
            raise bad(ptr, f"expected {n_distinct + 1} row pointers")
    _check_csr(a, "graph_indptr", "graph_indices", n_distinct, path)
    _check_csr(a, "group_ptr", "group_ids", n_graph, path)
    if np.bincount(a["group_ids"], minlength=n_graph).max(initial=1) != 1:
        raise bad("group_ids", "item ids repeat")
    entries, bit_entries = a["entries"], a["bit_entries"]
    if entries.shape[0] == 0 or entries.min() < 0 or entries.max() >= n_distinct:
        raise bad("entries", f"entry points must be 1 or more vertices in [0, {n_distinct})")
    if bit_entries.shape[0] != n_bits or bit_entries.shape[1] < 1:
        raise bad("bit_entries", f"expected shape ({n_bits}, entries_per_bit >= 1)")
    if bit_entries.min() < -1 or bit_entries.max() >= n_distinct:
        raise bad("bit_entries", f"entries must be -1 or vertices in [0, {n_distinct})")
    try:
        validate(buffer, n_bits, "buffered SDRs")
    except ParameterError as exc:
        raise bad("buffer", str(exc)) from exc
    vbits = a["vertex_bits"]
    if vbits.shape[0] not in (0, n_distinct) or (vbits.shape[0] == 0) != (vbits.shape[1] == 0):
        raise bad("vertex_bits", f"expected shape (0, 0) or ({n_distinct}, max active bits)")
    if vbits.size and vbits.max() > n_bits:
        raise bad("vertex_bits", f"bit positions must lie in [0, {n_bits}]")
    return _GraphState(
        words, vbits, a["graph_indptr"], a["graph_indices"], entries, bit_entries,
        a["group_ptr"], a["group_ids"],
        _Buffer.build(np.ascontiguousarray(buffer), n_bits, n_graph),
    )  # fmt: skip
