"""The ``exact`` backend: posting lists, or a popcount scan for dense SDRs.

An inverted index: for every bit, the ascending ids of the SDRs having it (CSR posting
lists, the forum's "sdr-id-map"). A query adds 1 to a counter per id in the posting lists
of its active bits, then takes the top k in O(n) (binary search for the k-th count over
branch-free counting passes, one collecting scan). When the query's lists are long (dense
SDRs: more than ~0.3 ids per stored 64-bit word) it counts by AND + popcount over the
packed rows instead, which is then cheaper. Exact by construction; the ground truth.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from .._store import data_error
from .._threads import run_ranges
from ..sdr import overlap_words, readonly, to_words
from ._postings import Buffer, Postings, _posting_cost, _scatter, _top_k_counts, n_words
from .backend import Prepared
from .format import check_csr

__all__ = ["ExactBackend"]

_MERGE_MIN = 4096  # fold the buffer into the main lists beyond this many items
# Scan the packed words instead of the posting lists when the lists hold more than this many
# ids per stored uint64 word (measured: ~1 ns per random counter increment, ~0.3 ns per
# vectorised AND+popcount word).
_SCAN_COST = 0.3


class ExactArrays(NamedTuple):
    """What the exact kernels read: items 0..n-1 are set a (lists and words), then set b."""

    indptr_a: NDArray[np.int64]  # (n_bits + 1,)
    ids_a: NDArray[np.int32]
    words_a: NDArray[np.uint64]  # (n_a, n_words)
    indptr_b: NDArray[np.int64]  # (n_bits + 1,)
    ids_b: NDArray[np.int32]
    n: int


# =========================================================================== kernels


@numba.njit(cache=True, nogil=True)
def _exact_rows(queries, q_words, k, counts, lo, hi, out_ids, out_ov, *arrays):
    """Rows lo..hi-1 of out = exact top k of those queries over items 0..n-1, -1 padded.

    Set a is counted from its posting lists, or by a popcount scan of its words when the
    query's posting lists are long (dense SDRs); set b always from its posting lists.
    counts: zeroed scratch of length >= n, left zeroed. One kernel for one query and for a
    batch's row ranges, calling its helpers directly: on a cold cache numba re-optimises
    all the code a function calls at every level. arrays: the fields of an ExactArrays,
    spread because numba's dispatcher types plain arrays on its fast path and a namedtuple
    on a slow one.
    """
    indptr_a, ids_a, words_a, indptr_b, ids_b, n = arrays
    n_a = words_a.shape[0]
    no_offset = np.int64(0)  # not a literal 0: the graph backend's copies serve
    ties = np.empty(k, dtype=np.int64)
    for i in range(lo, hi):
        q = queries[i]
        if _posting_cost(q, indptr_a) > _SCAN_COST * n_a * words_a.shape[1]:
            for j in range(n_a):
                counts[j] = overlap_words(q_words[i], words_a[j])
        else:
            _scatter(q, indptr_a, ids_a, no_offset, counts)
        _scatter(q, indptr_b, ids_b, no_offset, counts)
        kk = _top_k_counts(counts, n, k, ties, out_ids[i], out_ov[i], no_offset)
        for j in range(kk, k):
            out_ids[i, j] = -1
            out_ov[i, j] = -1


# =========================================================================== backend


@dataclass(frozen=True)
class ExactBackend:
    """Posting lists of items 0..main.n-1 plus a buffer of those added since (ids after)."""

    name: ClassVar[str] = "exact"
    array_specs: ClassVar[dict[str, tuple[str, int]]] = {
        "postings_indptr": ("<i8", 1),
        "postings_ids": ("<i4", 1),
        "words": ("<u8", 2),
    }
    search_params: ClassVar[tuple[str, ...]] = ()

    main: Postings  # ids 0 .. main.n - 1
    words: NDArray[np.uint64]  # (main.n, n_words): the same items, for popcount scans
    buffer: Buffer  # ids main.n ...
    # each thread's zeroed counters for serial queries, handed on from snapshot to snapshot
    scratch: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @property
    def n_items(self) -> int:
        return self.main.n + len(self.buffer)

    @property
    def n_buffered(self) -> int:
        return len(self.buffer)

    @classmethod
    def prepare(cls, n_bits: int, n_items: int, params: dict[str, Any]) -> Prepared | None:
        return None

    @classmethod
    def build(
        cls,
        packed: NDArray[np.uint8],
        n_bits: int,
        params: dict[str, Any],
        prepared: Prepared | None = None,
    ) -> ExactBackend:
        main = Postings.build(packed, n_bits, 0)
        return cls(main, to_words(packed), Buffer.empty(n_bits, packed.shape[0]))

    def add(self, packed: NDArray[np.uint8], n_bits: int) -> ExactBackend:
        buffer = self.buffer.extended(packed, n_bits, self.n_items)
        state = ExactBackend(self.main, self.words, buffer, self.scratch)
        if len(buffer) > max(_MERGE_MIN, self.main.n // 4):
            state = state.folded(n_bits)
        return state

    def rebuild(self, n_bits: int, params: dict[str, Any]) -> ExactBackend:
        return self.folded(n_bits)

    def folded(self, n_bits: int) -> ExactBackend:
        """The same items with the buffer merged into the main lists."""
        if len(self.buffer) == 0:
            return self
        words = np.concatenate([self.words, to_words(self.buffer.packed)])
        main = self.main.merged(self.buffer.postings)
        return ExactBackend(main, words, Buffer.empty(n_bits, self.n_items), self.scratch)

    def query(
        self, queries: NDArray[np.uint8], k: int, params: dict[str, Any], n_chunks: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        nq = queries.shape[0]
        out_ids = np.empty((nq, k), dtype=np.int64)
        out_ov = np.empty((nq, k), dtype=np.int32)
        x = self._kernel_arrays
        q_words = to_words(queries)
        if n_chunks > 1:

            def rows(lo: int, hi: int) -> None:  # own counters per range
                counts = np.zeros(x.n, dtype=np.int32)
                _exact_rows(queries, q_words, k, counts, lo, hi, out_ids, out_ov, *x)

            run_ranges(rows, nq, n_chunks)
        else:
            _exact_rows(queries, q_words, k, self._counts(x.n), 0, nq, out_ids, out_ov, *x)
        return out_ids, out_ov

    @cached_property
    def _kernel_arrays(self) -> ExactArrays:
        a, b = self.main, self.buffer.postings
        arrays = (a.indptr, a.ids, self.words, b.indptr, b.ids)
        return ExactArrays(*(readonly(x) for x in arrays), self.n_items)

    def _counts(self, n: int) -> NDArray[np.int32]:
        """This thread's zeroed counter array of length >= n (the kernels leave it zeroed)."""
        counts = getattr(self.scratch, "counts", None)
        if counts is None or counts.shape[0] < n:
            counts = np.zeros(max(n, 1), dtype=np.int32)
            self.scratch.counts = counts
        return counts

    def arrays(self, n_bits: int) -> dict[str, np.ndarray]:
        folded = self.folded(n_bits)
        return {
            "postings_indptr": folded.main.indptr,
            "postings_ids": folded.main.ids,
            "words": folded.words,
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], n_bits: int, n_items: int, path: Path
    ) -> ExactBackend:
        a = arrays
        if a["postings_indptr"].shape[0] != n_bits + 1:
            raise data_error(
                path / "postings_indptr.npy",
                f"expected {n_bits + 1} row pointers (n_bits + 1)",
                "save the index again",
            )
        check_csr(a, "postings_indptr", "postings_ids", n_items, path)
        if a["words"].shape != (n_items, n_words(n_bits)):
            raise data_error(
                path / "words.npy",
                f"expected shape ({n_items}, {n_words(n_bits)})",
                "save the index again",
            )
        main = Postings(a["postings_indptr"], a["postings_ids"], n_items)
        return cls(main, a["words"], Buffer.empty(n_bits, n_items))
