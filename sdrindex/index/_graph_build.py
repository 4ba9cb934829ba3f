"""The graph backend's build: the k-NN graph (NN-descent), then the search graph.

NN-descent (:mod:`._nndescent`) builds the k-NN graph of the distinct SDRs (``bit_jaccard`` on
packed rows; brute force below 2,048 distinct SDRs); the kernels here turn it into a search
graph (partly diversified forward edges plus reverse edges, degree capped) and pick the
start vertices.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from .._threads import n_threads, run_ranges
from ..sdr import popcount64, row_popcount, to_csr, to_words
from ._nndescent import edge_hash, nn_descent
from ._prefetch import prefetch_row

# nndescent: searches read each vertex's active bits (a uint16 row) instead of its packed
# words when the longest row is shorter than this many entries per word (16 bytes instead of
# 176 for 8-of-1369 SDRs; dense SDRs keep the vectorised popcounts).
_SPARSE_BELOW = 2.0
_N_GLOBAL_ENTRIES = 8  # nndescent: spread-out start vertices for queries sharing no bit with any
_EXACT_KNN_BELOW = 2048  # nndescent: brute-force k-NN graph for fewer distinct SDRs

#: SDRs with fewer active bits than this on average count as "few-bit" for the automatic
#: parameters: their overlaps take few values and tie a lot, so the graph needs more edges
#: and the search a wider beam (forum-local, 37 of 900 active: recall 0.971 with 20
#: neighbours and ef 10, 0.992 with 30 and 16).
_FEW_ACTIVE = 64


# =========================================================================== kernels


@numba.njit(cache=True, nogil=True)
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
    # stable insertion sort by distance (a row has a few dozen candidates): the order of
    # argsort(kind="mergesort") without its seconds of compile on a cold cache
    order = np.empty(m, dtype=np.int64)
    for t in range(m):
        u = t
        while u > 0 and cd[order[u - 1]] > cd[t]:
            order[u] = order[u - 1]
            u -= 1
        order[u] = t
    n_kept = 0
    for o in order:
        j = cand[o]
        keep = True
        for r in range(n_kept):
            if _distance_words(words[kept[i, r]], words[j], hamming) < cd[o]:
                # an int64 j: one compiled edge_hash for this and _bit_samples
                if edge_hash(i, np.int64(j), seed) < prob:
                    keep = False
                break
        if keep:
            kept[i, n_kept] = j
            kept_d[i, n_kept] = cd[o]
            n_kept += 1


@numba.njit(cache=True, nogil=True)
def _diversify_rows(knn, words, prob, seed, hamming, lo, hi, kept, kept_d):
    """Rows lo..hi-1 of _diversify (kept, kept_d filled with -1, inf)."""
    for i in range(lo, hi):
        if i + 1 < hi:  # the next row's neighbours: rows scattered over words (_prefetch)
            for s in range(knn.shape[1]):
                if knn[i + 1, s] >= 0:
                    prefetch_row(words, knn[i + 1, s])
        _diversify_row(i, knn, words, prob, seed, hamming, kept, kept_d)


def _diversify(
    knn: NDArray[np.int32], words: NDArray[np.uint64], prob: float, seed: int, hamming: bool
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Keep edge i->j (neighbours by distance) unless a kept r has d(r,j) < d(i,j), w.p. prob.

    Returns the kept neighbours (-1 padded, by distance) and their distances to i. Rows run
    as ranges on the thread pool (sdrindex._threads): a prange kernel compiled for seconds
    more on a cold cache.
    """
    n, kn = knn.shape
    kept = np.full((n, kn), -1, dtype=np.int32)
    kept_d = np.full((n, kn), np.inf, dtype=np.float32)
    knn, words = np.ascontiguousarray(knn), np.ascontiguousarray(words)
    prob, seed, hamming = float(prob), int(seed), bool(hamming)
    run_ranges(
        lambda lo, hi: _diversify_rows(knn, words, prob, seed, hamming, lo, hi, kept, kept_d),
        n,
        4 * n_threads(),
    )
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
        _exact_knn_row(np.int64(i), words, hamming, out)
    return out


@numba.njit(cache=True, nogil=True)
def _stable_order(keys, order, tmp):
    """order = argsort(keys, kind="mergesort"): a bottom-up merge sort over runs of 16
    sorted by insertion (np.argsort costs ~4 s of compile on a cold cache); tmp: scratch
    of the same length."""
    n = keys.shape[0]
    for lo in range(0, n, 16):
        hi = min(lo + 16, n)
        for t in range(lo, hi):
            u = t
            while u > lo and keys[order[u - 1]] > keys[t]:
                order[u] = order[u - 1]
                u -= 1
            order[u] = t
    src, dst = order, tmp
    in_tmp = False
    width = 16
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            a, b = lo, mid
            for p in range(lo, hi):
                # the right run's item first only when strictly smaller: stable
                if b < hi and (a >= mid or keys[src[b]] < keys[src[a]]):
                    dst[p] = src[b]
                    b += 1
                else:
                    dst[p] = src[a]
                    a += 1
        src, dst = dst, src
        in_tmp = not in_tmp
        width *= 2
    if in_tmp:
        for p in range(n):
            order[p] = src[p]


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
    # loops, not np.cumsum / np.full: each numpy function a kernel calls is one more
    # compile on a cold cache
    all_ptr = deg
    for i in range(n):
        all_ptr[i + 1] += all_ptr[i]
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
    seen = np.empty(n, dtype=np.int64)
    for i in range(n):
        seen[i] = -1
    longest = np.int64(0)
    for i in range(n):
        longest = max(longest, all_ptr[i + 1] - all_ptr[i])
    order_buf = np.empty(longest, dtype=np.int64)
    tmp_buf = np.empty(longest, dtype=np.int64)
    for i in range(n):
        lo, hi = all_ptr[i], all_ptr[i + 1]
        order = order_buf[: hi - lo]
        _stable_order(all_d[lo:hi], order, tmp_buf[: hi - lo])
        p = indptr[i]
        for o in order:
            j = all_nb[lo + o]
            if seen[j] != i and p - indptr[i] < max_degree:
                seen[j] = i
                indices[p] = j
                p += 1
        indptr[i + 1] = p
    return indptr, indices[: indptr[n]].copy()


@numba.njit(cache=True, nogil=True)
def _bfs_order(indptr, indices):
    """Vertices in breadth-first order over the edges; an unreached vertex starts a new tree.

    order[t] = the t-th vertex reached, trees rooted at the unreached vertices in id order.
    """
    n = indptr.shape[0] - 1
    order = np.empty(n, dtype=np.int64)
    seen = np.zeros(n, dtype=np.uint8)
    head = np.int64(0)
    tail = np.int64(0)
    for root in range(n):
        if seen[root]:
            continue
        seen[root] = 1
        order[tail] = root
        tail += 1
        while head < tail:
            v = order[head]
            head += 1
            for p in range(indptr[v], indptr[v + 1]):
                u = indices[p]
                if not seen[u]:
                    seen[u] = 1
                    order[tail] = u
                    tail += 1
    return order


@numba.njit(cache=True, nogil=True)
def _bit_samples(words, n_bits, per_bit, seed):
    """out[b] = the up to per_bit vertices having bit b of smallest edge_hash(v, b, seed),
    in that order, -1 padded: a uniform sample without replacement, one pass over the rows.

    (Sampling from posting lists needed the lists: 2.5 GB of int32 at 1M SDRs of 624
    active bits, and ~10 s to build them.)
    """
    out = np.empty((n_bits, per_bit), dtype=np.int32)  # np.full: one more compile
    key = np.empty((n_bits, per_bit), dtype=np.float64)
    size = np.zeros(n_bits, dtype=np.int64)
    worst = np.empty(n_bits, dtype=np.float64)  # the largest key kept once a row is full
    for b in range(n_bits):
        worst[b] = 2.0
        for j in range(per_bit):
            out[b, j] = -1
            key[b, j] = 2.0
    for v in range(words.shape[0]):
        for w in range(words.shape[1]):
            x = words[v, w]
            while x:
                tz = popcount64((x & (~x + np.uint64(1))) - np.uint64(1))
                x &= x - np.uint64(1)
                # the SDR's bit: bytes in order, bits from the most significant (packbits)
                b = w * 64 + (tz & ~7) + 7 - (tz & 7)
                h = edge_hash(np.int64(v), np.int64(b), seed)
                if h >= worst[b]:
                    continue
                # insert in ascending order, dropping the largest when full
                j = min(size[b], per_bit - 1)
                while j > 0 and key[b, j - 1] > h:
                    key[b, j] = key[b, j - 1]
                    out[b, j] = out[b, j - 1]
                    j -= 1
                key[b, j] = h
                out[b, j] = v
                size[b] = min(size[b] + 1, per_bit)
                if size[b] == per_bit:
                    worst[b] = key[b, per_bit - 1]
    return out


# =========================================================================== building


def permute_rows(
    perm: NDArray[np.int64], indptr: NDArray[np.int64], values: NDArray
) -> tuple[NDArray[np.int64], NDArray]:
    """The CSR rows perm[0], perm[1], ... as rows 0, 1, ... (values keep their row order)."""
    sizes = np.diff(indptr)[perm]
    new_ptr = np.zeros(perm.shape[0] + 1, dtype=np.int64)
    np.cumsum(sizes, out=new_ptr[1:])
    # position of each new slot in the old values: its old row's start + its rank in the row
    src = np.repeat(indptr[perm] - new_ptr[:-1], sizes) + np.arange(new_ptr[-1])
    return new_ptr, values[src]


def locality_order(indptr: NDArray[np.int64], indices: NDArray[np.int32]) -> NDArray[np.int64]:
    """The vertex order a search graph is stored in: breadth-first over its edges.

    A search reads the rows of a vertex's neighbours one after another; numbered in
    breadth-first order, neighbours get nearby numbers, so their rows share pages and cache
    lines. At 1M sdrindex-mnist SDRs this raised single-query QPS 1.35x at the same answers
    (the build's order: 1.0x; min-hash sorted: 1.10x; reverse Cuthill-McKee: 1.31x;
    2026-11-30, /work/prof/reorder_exp.py side by side). Costs ~1 s at 1M.
    """
    return _bfs_order(indptr, indices)


def relabel(perm: NDArray[np.int64], arrays: dict[str, NDArray]) -> dict[str, NDArray]:
    """The graph's arrays with vertex perm[t] renumbered t (answers do not change).

    A search visits the same vertices in the same order under any numbering (edges keep
    their order, item ids are untouched), so its answers are identical.
    """
    a = arrays
    inv = np.empty(perm.shape[0], dtype=np.int64)
    inv[perm] = np.arange(perm.shape[0])
    indptr, nbrs = permute_rows(perm, a["indptr"], a["indices"])
    group_ptr, group_ids = permute_rows(perm, a["group_ptr"], a["group_ids"])
    bit_entries = a["bit_entries"].copy()
    used = bit_entries >= 0
    bit_entries[used] = inv[bit_entries[used]]
    vbits = a["vbits"][perm] if a["vbits"].shape[0] else a["vbits"]
    return {
        "words": a["words"][perm],
        "vbits": vbits,
        "indptr": indptr,
        "indices": inv[nbrs].astype(np.int32),
        "entries": inv[a["entries"]].astype(np.int32),
        "bit_entries": bit_entries,
        "group_ptr": group_ptr,
        "group_ids": group_ids,
    }


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


def knn_graph(distinct: NDArray[np.uint8], params: dict[str, Any]) -> NDArray[np.int32]:
    """k-NN graph of the distinct SDRs, (n_distinct, n_neighbors) int32, -1 padded.

    NN-descent (:func:`~._nndescent.nn_descent`) builds it; below _EXACT_KNN_BELOW SDRs brute
    force is as quick, and exact.
    """
    n = distinct.shape[0]
    words = to_words(distinct)
    k = _graph_neighbors(params, n, _mean_active(words))
    hamming = params["metric"] == "bit_hamming"
    if n <= 1:
        return np.full((n, 1), -1, dtype=np.int32)
    if n < _EXACT_KNN_BELOW or n <= k + 1:
        return _exact_knn(words, min(k, n - 1), hamming)
    return nn_descent(
        words,
        distinct.shape[1] * 8,
        k,
        hamming=hamming,
        seed=int(params["random_state"] or 0),
        n_iters=params["n_iters"],
        n_starts=params["n_trees"],
        threads=params["n_jobs"],
    )


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
        # numpy, not sdr.overlap_matrix: a prange kernel compiling ~2 s for 7 small rows
        ov = np.bitwise_count(sw & sw[chosen[-1]]).sum(axis=1, dtype=np.int64)
        closeness = np.maximum(closeness, ov / counts)
        closeness[chosen] = np.inf
        chosen.append(int(np.argmin(closeness)))
    return np.sort(sample[chosen]).astype(np.int32)


def _bit_rows(
    distinct: NDArray[np.uint8], words: NDArray[np.uint64], n_bits: int
) -> NDArray[np.uint16]:
    """Active bits of each row, (n, max active) uint16 padded with n_bits, when that is cheap.

    Returns an empty (0, 0) array when rows are dense (max active >= _SPARSE_BELOW *
    n_words) or too wide for uint16: searches then use the packed words.
    """
    width = int(row_popcount(words).max(initial=0))
    if n_bits >= 65535 or width >= _SPARSE_BELOW * words.shape[1] or width == 0:
        return np.zeros((0, 0), dtype=np.uint16)
    indptr, bits = to_csr(distinct, n_bits)
    counts = np.diff(indptr)
    rows = np.full((counts.shape[0], width), n_bits, dtype=np.uint16)
    row_of = np.repeat(np.arange(counts.shape[0]), counts)
    rows[row_of, np.arange(bits.shape[0]) - indptr[row_of]] = bits
    return rows


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
