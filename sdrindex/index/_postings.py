"""Posting lists (bit -> ascending ids) and the top-k of their counts, shared by the backends.

The exact backend counts a query's overlaps from the posting lists of its active bits; the
graph backend keeps the SDRs added since its build in the same structure (the buffer) and
searches it exactly beside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from ..sdr import n_bytes, to_csr

# =========================================================================== kernels


@numba.njit(cache=True, nogil=True)
def _build_postings(row_indptr, row_bits, n_bits, id_offset):
    """postings of bit b = ascending (i + id_offset) over rows i whose active bits include b."""
    counts = np.zeros(n_bits + 1, dtype=np.int64)
    for p in range(row_bits.shape[0]):
        counts[row_bits[p] + 1] += 1
    indptr = counts  # a running sum in place: np.cumsum costs one more compile (cold cache)
    for j in range(n_bits):
        indptr[j + 1] += indptr[j]
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


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
def _count_at_least(counts, n, v):
    """#{i < n : counts[i] >= v} (a branch-free pass the compiler vectorises)."""
    total = 0
    for i in range(n):
        total += np.int64(counts[i] >= v)
    return total


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
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


# =========================================================================== structures
# Immutable: a query reads one snapshot while add/rebuild publish new ones.


@dataclass(frozen=True)
class Postings:
    """Posting lists (bit -> ascending ids) of n items."""

    indptr: NDArray[np.int64]  # (n_bits + 1,)
    ids: NDArray[np.int32]  # (indptr[-1],)
    n: int

    @classmethod
    def build(cls, packed: NDArray[np.uint8], n_bits: int, id_offset: int) -> Postings:
        row_indptr, row_bits = to_csr(packed, n_bits)
        indptr, ids = _build_postings(row_indptr, row_bits, n_bits, id_offset)
        return cls(indptr, ids, packed.shape[0])

    def merged(self, other: Postings) -> Postings:
        indptr, ids = _merge_postings(self.indptr, self.ids, other.indptr, other.ids)
        return Postings(indptr, ids, self.n + other.n)


@dataclass(frozen=True)
class Buffer:
    """Items added since the last build: their SDRs and an inverted index over them."""

    packed: NDArray[np.uint8]  # (n, n_bytes)
    postings: Postings  # ids are global: id_offset .. id_offset + n - 1

    @classmethod
    def build(cls, packed: NDArray[np.uint8], n_bits: int, id_offset: int) -> Buffer:
        return cls(packed, Postings.build(packed, n_bits, id_offset))

    @classmethod
    def empty(cls, n_bits: int, id_offset: int) -> Buffer:
        return cls.build(np.zeros((0, n_bytes(n_bits)), dtype=np.uint8), n_bits, id_offset)

    def extended(self, packed: NDArray[np.uint8], n_bits: int, n_items: int) -> Buffer:
        """This buffer plus ``packed``, the index holding ``n_items`` items before them."""
        buffered = np.concatenate([self.packed, packed])
        return Buffer.build(buffered, n_bits, n_items - len(self))

    def __len__(self) -> int:
        return self.packed.shape[0]


def n_words(n_bits: int) -> int:
    """uint64 words per row in the kernels' layout (see sdr.to_words)."""
    return max(1, (n_bytes(n_bits) + 7) // 8)
