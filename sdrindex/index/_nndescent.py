"""The k-NN graph of packed SDRs by NN-descent (Dong, Charikar and Li, WWW 2011), our kernels.

pynndescent's NN-descent compiled for ~47 s in every process (its metric-specialised
closures never reach numba's cache) after a ~20 s cold import: more than the whole build of
a 60k-item graph. These kernels are the same algorithm on the packed words, cached by
numba like every other kernel, so a build compiles them once per machine.

The algorithm: every vertex keeps its ``k`` nearest candidates found so far in a max-heap
(the worst on top). Start from min-hash neighbours: vertices adjacent when sorted by a
few min-hashes of their active bits share bits (their Jaccard similarity is the chance
that a min-hash agrees), plus random ones. Then, round by round, every vertex
introduces its neighbours to each other (a "local join": a neighbour of a neighbour is
likely a neighbour), each pair involving at least one candidate new since the last
round, with forward and reverse neighbours sampled to ``max_candidates``. Stop when a
round improves fewer than ``delta * n * k`` heap entries.

Threads: the local join runs in blocks of vertices; per block, ranges of vertices compute
their pairs' distances on the thread pool and record those that would enter a heap
(phase A, heaps only read), then each thread applies the updates of the rows it owns
(phase B, rows by residue: no two threads touch a row). The result does not depend on
the number of threads or their timing.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from .._threads import n_threads, run_ranges
from ..sdr import popcount64, row_popcount
from ._prefetch import prefetch_row

__all__ = ["nn_descent", "edge_hash"]

_BLOCK = 8192  # vertices per local-join block: bounds the update buffers (~60 MB at 20)
_N_MINHASH_SORTS = 6  # default sorted orders by min-hash keys the start draws from
_MINHASH_WINDOW = 3  # each vertex meets this many followers in each sorted order
_N_RANDOM = 4  # random start neighbours per vertex (connect the min-hash clusters)
#: Above _LARGE SDRs a round costs minutes: 5 rounds at most and 15 candidates sampled per
#: vertex (pairs per round ~ m^2: 330 instead of 1,335 at k = 30). At 1M sdrindex-mnist SDRs
#: (2026-11-30) that graph has k-NN recall 0.72 on a sample, yet the search reaches recall@10
#: 0.993 (ef 128, epsilon 0.05); the defaults below _LARGE are pynndescent's.
_LARGE = 100_000
_LARGE_CANDIDATES = 15


# =========================================================================== kernels


@numba.njit(cache=True, nogil=True)
def edge_hash(a, b, seed):
    """A uniform number in [0, 1) fixed by (a, b, seed): splitmix64 of the three."""
    z = np.uint64(a) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(b) + np.uint64(seed)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True)
def _dist(words, counts, p, q, hamming):
    """d(p, q): |p XOR q| when hamming, else 1 - |p AND q| / |p OR q| (0 when both empty)."""
    inter = np.uint64(0)
    for w in range(words.shape[1]):
        inter += popcount64(words[p, w] & words[q, w])
    union = np.uint64(counts[p] + counts[q]) - inter
    if hamming:
        return np.float32(union - inter)
    if union == 0:
        return np.float32(0.0)
    return np.float32(1.0 - inter / union)


@numba.njit(cache=True, nogil=True)
def _heap_push(idx, key, flag, i, j, d, new):
    """Offer j at ``d`` to row i's max-heap (idx, key, flag); 1 when it entered."""
    k = idx.shape[1]
    if d >= key[i, 0]:
        return 0
    for s in range(k):
        if idx[i, s] == j:
            return 0
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= k:
            break
        c = left
        if left + 1 < k and key[i, left + 1] > key[i, left]:
            c = left + 1
        if key[i, c] <= d:
            break
        idx[i, pos] = idx[i, c]
        key[i, pos] = key[i, c]
        flag[i, pos] = flag[i, c]
        pos = c
    idx[i, pos] = j
    key[i, pos] = d
    flag[i, pos] = new
    return 1


@numba.njit(cache=True, nogil=True)
def _start_rows(lo, hi, words, counts, hamming, seed, orders, window, n_random, idx, key, flag):
    """Rows lo..hi of the start: min-hash followers in each sorted order, then random ones.

    ``orders[h]`` lists the vertices in the h-th sorted order and ``orders[h + H]`` each
    vertex's position in it (H = number of orders); a row only fills itself.
    """
    n = words.shape[0]
    n_orders = orders.shape[0] // 2
    for i in range(lo, hi):
        for h in range(n_orders):
            if i + 1 < hi:  # the next row's followers in this order, while i's are scored
                nxt = orders[h + n_orders, i + 1]
                for s in range(max(0, nxt - window), min(n, nxt + window + 1)):
                    prefetch_row(words, orders[h, s])
            at = orders[h + n_orders, i]
            for s in range(max(0, at - window), min(n, at + window + 1)):
                j = orders[h, s]
                if j != i:
                    _heap_push(idx, key, flag, i, j, _dist(words, counts, i, j, hamming), 1)
        for t in range(n_random):
            j = np.int64(edge_hash(i, t, seed) * n)
            if j != i:
                _heap_push(idx, key, flag, i, j, _dist(words, counts, i, j, hamming), 1)


@numba.njit(cache=True, nogil=True)
def _candidates(idx, flag, seed, round_, new_c, new_p, old_c, old_p, scratch):
    """Sample each row's forward and reverse neighbours into new/old candidate lists.

    A list keeps the ``max_candidates`` entries of least random priority (a max-heap on
    priority), so a vertex with many reverse neighbours meets a fair sample of them.
    Clears the flag of each new forward candidate that was sampled. ``scratch`` (uint8,
    the lists' shape) takes the heap's flags, which candidate lists do not use.
    """
    n, k = idx.shape
    new_c[:] = -1
    old_c[:] = -1
    new_p[:] = np.inf
    old_p[:] = np.inf
    for i in range(n):
        for s in range(k):
            j = idx[i, s]
            if j < 0:
                continue
            pri = np.float32(edge_hash(i * 1_000_003 + j, round_, seed))
            if flag[i, s]:
                _heap_push(new_c, new_p, scratch, i, j, pri, 0)
                _heap_push(new_c, new_p, scratch, j, i, pri, 0)
            else:
                _heap_push(old_c, old_p, scratch, i, j, pri, 0)
                _heap_push(old_c, old_p, scratch, j, i, pri, 0)
    for i in range(n):
        for s in range(k):
            if flag[i, s]:
                j = idx[i, s]
                for c in range(new_c.shape[1]):
                    if new_c[i, c] == j:
                        flag[i, s] = 0
                        break


@numba.njit(cache=True, nogil=True)
def _join_rows(lo, hi, words, counts, hamming, key, new_c, old_c, up_p, up_q, up_d, at):
    """Phase A for rows lo..hi: the local join's pairs that would enter a heap.

    Pairs: new x new (each once) and new x old. Writes them from ``at`` on in (up_p, up_q,
    up_d) and returns the end; heaps are only read (their current worst distance). The two
    pair loops repeat their body on purpose: as one shared kernel returning ``at`` the
    join ran 1.65x slower (2.6 s against 1.55 s for a 20k graph).
    """
    m = new_c.shape[1]
    for i in range(lo, hi):
        for a in range(m):
            if i + 1 < hi:  # the next row's candidates, while i's pairs are scored
                if new_c[i + 1, a] >= 0:
                    prefetch_row(words, new_c[i + 1, a])
                if old_c[i + 1, a] >= 0:
                    prefetch_row(words, old_c[i + 1, a])
            p = new_c[i, a]
            if p < 0:
                continue
            for b in range(a + 1, m):
                q = new_c[i, b]
                if q < 0 or q == p:
                    continue
                d = _dist(words, counts, p, q, hamming)
                if d < key[p, 0] or d < key[q, 0]:
                    up_p[at] = p
                    up_q[at] = q
                    up_d[at] = d
                    at += 1
            for b in range(m):
                q = old_c[i, b]
                if q < 0 or q == p:
                    continue
                d = _dist(words, counts, p, q, hamming)
                if d < key[p, 0] or d < key[q, 0]:
                    up_p[at] = p
                    up_q[at] = q
                    up_d[at] = d
                    at += 1
    return at


@numba.njit(cache=True, nogil=True)
def _apply_owned(owner, n_owners, up_p, up_q, up_d, starts, ends, idx, key, flag):
    """Phase B: apply the recorded updates to the rows r with r % n_owners == owner."""
    changed = 0
    for r in range(starts.shape[0]):
        for u in range(starts[r], ends[r]):
            p = up_p[u]
            q = up_q[u]
            if p % n_owners == owner:
                changed += _heap_push(idx, key, flag, p, q, up_d[u], 1)
            if q % n_owners == owner:
                changed += _heap_push(idx, key, flag, q, p, up_d[u], 1)
    return changed


@numba.njit(cache=True, nogil=True)
def _sorted_rows(idx, key):
    """Each row's heap as a list by distance, then index (in place)."""
    n, k = idx.shape
    for i in range(n):
        for t in range(1, k):
            j, d = idx[i, t], key[i, t]
            u = t
            while u > 0 and (key[i, u - 1] > d or (key[i, u - 1] == d and idx[i, u - 1] > j)):
                idx[i, u] = idx[i, u - 1]
                key[i, u] = key[i, u - 1]
                u -= 1
            idx[i, u] = j
            key[i, u] = d


@numba.njit(cache=True, nogil=True)
def _minhash_rows(words, perms, by_rank, lo, hi, out):
    """out[h, i] = min over the active bits b < n_bits of row i of perms[h, b] (n_bits when
    none), for rows lo..hi-1; by_rank[h, t] is the bit b with perms[h, b] = t.

    A dense row probes its bits in by_rank order and stops at the first active one
    (~n_bits / active probes per key: ~10 for 624 of 6,241 bits, against 624 for the scan);
    a sparse row scans its active bits. Both give the same minimum.
    """
    n_bits = perms.shape[1]
    n_keys = perms.shape[0]
    for i in range(lo, hi):
        active = 0
        for w in range(words.shape[1]):
            active += popcount64(words[i, w])
        if active * active > n_bits:
            for h in range(n_keys):
                out[h, i] = n_bits
                for t in range(n_bits):
                    b = by_rank[h, t]
                    if (words[i, b >> 6] >> np.uint64(b & 63)) & np.uint64(1):
                        out[h, i] = t
                        break
            continue
        for h in range(n_keys):
            out[h, i] = n_bits
        for w in range(words.shape[1]):
            x = words[i, w]
            while x:
                b = w * 64 + popcount64((x & (~x + np.uint64(1))) - np.uint64(1))
                x &= x - np.uint64(1)
                if b < n_bits:
                    for h in range(n_keys):
                        if perms[h, b] < out[h, i]:
                            out[h, i] = perms[h, b]


# =========================================================================== driver


def _start_orders(
    words: NDArray[np.uint64], n_bits: int, n_orders: int, seed: int, threads: int
) -> NDArray[np.int64]:
    """``n_orders`` min-hash sorted orders and each vertex's position in them, (2 H, n)."""
    n = words.shape[0]
    rng = np.random.default_rng(seed)
    per_key = 3  # three min-hashes per order: followers share several, not one, bit
    perms = np.empty((n_orders * per_key, n_bits), dtype=np.int64)
    for h in range(perms.shape[0]):
        perms[h] = rng.permutation(n_bits)
    by_rank = np.argsort(perms, axis=1)
    mh = np.empty((perms.shape[0], n), dtype=np.int64)
    run_ranges(
        lambda lo, hi: _minhash_rows(words, perms, by_rank, np.int64(lo), np.int64(hi), mh),
        n,
        threads,
    )
    orders = np.empty((2 * n_orders, n), dtype=np.int64)
    for h in range(n_orders):
        a, b, c = mh[per_key * h : per_key * h + per_key]
        order = np.lexsort((c, b, a))
        orders[h] = order
        orders[h + n_orders, order] = np.arange(n)
    return orders


def nn_descent(
    words: NDArray[np.uint64],
    n_bits: int,
    k: int,
    *,
    hamming: bool = False,
    seed: int = 0,
    n_iters: int | None = None,
    n_starts: int | None = None,
    max_candidates: int | None = None,
    delta: float = 0.001,
    threads: int | None = None,
) -> NDArray[np.int32]:
    """The approximate k-NN graph of the rows of ``words`` (packed SDRs as uint64 words).

    Parameters
    ----------
    words : ndarray of shape (n, n_words), uint64
        Distinct SDRs (duplicates would fill each other's lists at distance 0).
    n_bits : int
        SDR width.
    k : int
        Neighbours per vertex (< n).
    hamming : bool
        Hamming distance instead of Jaccard's (1 - overlap / union).
    seed : int
        Fixes the start and the samples: the same graph for the same input.
    n_iters : int, optional
        Rounds at most; default max(5, round(log2 n)) as pynndescent, 5 above 100,000 SDRs.
    n_starts : int, optional
        Min-hash sorted orders the start draws from (the part pynndescent's random
        projection trees play); default 6.
    max_candidates : int, optional
        Forward and reverse neighbours sampled per vertex and round; default min(60, k),
        min(15, k) above 100,000 SDRs.
    delta : float
        Stop when a round improves fewer than ``delta * n * k`` entries.
    threads : int, optional
        Threads (default: numba's setting); the graph is the same for any number.

    Returns
    -------
    ndarray of shape (n, k), int32
        Row i: its k nearest found, by distance then index.
    """
    words = np.ascontiguousarray(words, dtype=np.uint64)
    n = words.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be in 1..{n - 1} for {n} SDRs, got {k}")
    large = n > _LARGE
    if n_iters is None:
        n_iters = 5 if large else max(5, round(np.log2(n)))
    m = min(_LARGE_CANDIDATES if large else 60, k) if max_candidates is None else max_candidates
    n_iters, m = int(n_iters), int(m)
    n_thr = max(1, n_threads() if threads is None else int(threads))
    counts = row_popcount(words).astype(np.int64)
    idx = np.full((n, k), -1, dtype=np.int32)
    key = np.full((n, k), np.inf, dtype=np.float32)
    flag = np.zeros((n, k), dtype=np.uint8)
    n_orders = _N_MINHASH_SORTS if n_starts is None else int(n_starts)
    orders = _start_orders(words, n_bits, n_orders, seed, n_thr)
    perm = None
    if large:  # rows in the first min-hash order: a join's rows lie nearer in memory
        perm, orders, words, counts = _locality_first(orders, n_orders, words, counts)
    run_ranges(
        lambda lo, hi: _start_rows(
            np.int64(lo), np.int64(hi), words, counts, hamming, np.int64(seed), orders,
            np.int64(_MINHASH_WINDOW), np.int64(_N_RANDOM), idx, key, flag,
        ),
        n,
        n_thr,
    )  # fmt: skip
    new_c = np.empty((n, m), dtype=np.int32)
    old_c = np.empty((n, m), dtype=np.int32)
    new_p = np.empty((n, m), dtype=np.float32)
    old_p = np.empty((n, m), dtype=np.float32)
    scratch = np.empty((n, m), dtype=np.uint8)
    per_row = m * (m - 1) // 2 + m * m
    block = min(_BLOCK, n)
    up_p = np.empty(block * per_row, dtype=np.int32)
    up_q = np.empty(block * per_row, dtype=np.int32)
    up_d = np.empty(block * per_row, dtype=np.float32)
    for round_ in range(n_iters):
        _candidates(
            idx, flag, np.int64(seed), np.int64(round_), new_c, new_p, old_c, old_p, scratch
        )
        changed = 0
        for b_lo in range(0, n, block):
            changed += _join_block(
                b_lo, min(n, b_lo + block), n_thr, per_row, words, counts, hamming,
                idx, key, flag, new_c, old_c, up_p, up_q, up_d,
            )  # fmt: skip
        if changed <= delta * n * k:
            break
    if perm is not None:  # back to the callers' numbering
        idx, key = _renumbered(idx, key, perm)
    _sorted_rows(idx, key)
    return idx


def _locality_first(
    orders: NDArray[np.int64], n_orders: int, words: NDArray[np.uint64], counts: NDArray
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64], NDArray]:
    """(perm, orders, words, counts) renumbered: vertex perm[t] becomes t, its rank in the
    first order.

    A local join reads the rows of a vertex's neighbours; in that order similar rows, so
    often a vertex's neighbours, lie near each other in memory.
    """
    perm = orders[0].copy()
    rank = orders[n_orders]  # rank[v] = position of v in the first order
    out = np.empty_like(orders)
    for h in range(n_orders):
        out[h] = rank[orders[h]]
        out[h + n_orders] = orders[h + n_orders][perm]
    return perm, out, words[perm], counts[perm]


def _renumbered(
    idx: NDArray[np.int32], key: NDArray[np.float32], perm: NDArray[np.int64]
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """The heaps of vertices numbered perm[t] -> t, in the original numbering."""
    out_idx = np.empty_like(idx)
    out_key = np.empty_like(key)
    out_idx[perm] = np.where(idx >= 0, perm[np.maximum(idx, 0)], -1)
    out_key[perm] = key
    return out_idx, out_key


def _join_block(
    lo: int,
    hi: int,
    n_thr: int,
    per_row: int,
    words: NDArray[np.uint64],
    counts: NDArray[np.int64],
    hamming: bool,
    idx: NDArray[np.int32],
    key: NDArray[np.float32],
    flag: NDArray[np.uint8],
    new_c: NDArray[np.int32],
    old_c: NDArray[np.int32],
    up_p: NDArray[np.int32],
    up_q: NDArray[np.int32],
    up_d: NDArray[np.float32],
) -> int:
    """One block of the local join (phase A on ranges, then phase B by row owner)."""
    size = hi - lo
    n_ranges = max(1, min(n_thr, size))
    # run_ranges' bounds: range r starts at r * size // n_ranges (relative to lo)
    first = {r * size // n_ranges: r for r in range(n_ranges)}
    starts = np.array([r * size // n_ranges * per_row for r in range(n_ranges)], dtype=np.int64)
    ends = starts.copy()

    def join(a: int, b: int) -> None:
        r = first[a]
        ends[r] = _join_rows(
            np.int64(lo + a), np.int64(lo + b), words, counts, hamming, key, new_c, old_c,
            up_p, up_q, up_d, np.int64(starts[r]),
        )  # fmt: skip

    run_ranges(join, size, n_ranges)
    changed = np.zeros(n_thr, dtype=np.int64)

    def apply(a: int, b: int) -> None:
        for owner in range(a, b):
            changed[owner] = _apply_owned(
                np.int64(owner), np.int64(n_thr), up_p, up_q, up_d, starts, ends, idx, key, flag
            )

    run_ranges(apply, n_thr, n_thr)
    return int(changed.sum())
