"""The ``nndescent`` backend: a k-NN graph built by NN-descent, searched by our own kernels.

A k-NN graph of the distinct SDRs, built by NN-descent (``bit_jaccard`` on packed rows;
brute force below 2,048 distinct SDRs), turned into a search graph (partly diversified
forward edges plus reverse edges, degree capped) and searched best-first with the overlap
itself as the score, so candidates come out ranked by exact overlap (the "re-rank" is the
search). Searches start from vertices sharing the query's active bits: far from the query
every overlap is 0 and a search has nothing to climb. Identical SDRs are one vertex standing
for all their ids. The search runs in this package's own numba kernels over plain arrays:
nothing is compiled per index, numba's disk cache serves every process, queries share no
buffers, and an index restores with ``np.load``.

SDRs added after the graph was built go to a small exact buffer (an inverted index searched
beside the graph), so they are found at once; ``rebuild`` folds them into the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._store import data_error
from .._threads import run_ranges
from ..errors import DataError, ParameterError
from ..sdr import n_bytes, readonly, to_words, validate
from ._graph_build import (
    _FEW_ACTIVE,
    _N_GLOBAL_ENTRIES,
    _bit_rows,
    _bit_samples,
    _distinct_rows,
    _diversify,
    _entry_points,
    _graph_neighbors,
    _mean_active,
    _search_graph_csr,
    knn_graph,
    locality_order,
    relabel,
)
from ._graph_search import GraphArrays, _graph_rows
from ._postings import Buffer, n_words
from .backend import Prepared
from .format import check_csr

__all__ = ["GraphBackend", "collection_search"]


def collection_search(n_items: int, packed: NDArray[np.uint8]) -> dict[str, Any]:
    """The ``ef`` / ``epsilon`` a graph searches with when it is one shard of a collection of
    ``n_items`` SDRs like ``packed`` (n, n_bytes): the collection's automatic beam, and a
    band no narrower than a small index's (0.1).

    A shard's own automatic setting follows its own size. 4 shards of the 1M sdrindex-mnist
    collection (250k each, merged top 10; 1,000 queries; 2026-11-30,
    /work/prof/shard_recall.py): recall@10 0.915 with each shard's own (27, 0.08), 0.973
    with the collection's (126, 0.05), 0.988 with (128, 0.076), 0.994 with (126, 0.1); one
    index over the whole: 0.992 at (126, 0.05). A shard must find its few of the global
    top 10 among near ties, so it needs the wider band.
    """
    ef, epsilon = _auto_search(int(n_items), _mean_active(to_words(packed)))
    return {"ef": ef, "epsilon": max(epsilon, 0.1)}


def _auto_search(n_distinct: int, mean_active: float) -> tuple[int, float]:
    """(ef, epsilon) for a graph of n_distinct SDRs when the user sets neither.

    (10, 0.1) up to 100,000 distinct SDRs. Beyond, with s = n / 1e5: ef = 10 * s ** 1.1 and
    epsilon = 0.1 / s ** 0.3, (126, 0.05) at 1,000,000, a wide beam and a narrow band: on
    sdrindex-mnist SDRs at 1M (60k plus noisy copies, 2026-11-30, scripts/bench_search.py
    --million) (128, 0.05) gave recall@10 0.993 at ~1,070 QPS where the former (32, 0.2)
    gave 0.997 at ~300 and (24, 0.15) 0.991 at ~680 (the band's slack grows with the
    distance to a perfect match, so a wide band visits a large share of the noisy copies).
    SDRs with few active bits (ties everywhere, the band barely acts) keep ef = 10 * sqrt(s),
    at least 16.
    """
    scale = max(1.0, n_distinct / 100_000)
    if mean_active < _FEW_ACTIVE:
        return max(round(10 * scale**0.5), 16), 0.1 * scale**0.3
    return round(10 * scale**1.1), 0.1 / scale**0.3


@dataclass(frozen=True)
class GraphBackend:
    """The search graph over the distinct SDRs of items 0..n_graph_items-1, plus a buffer."""

    name: ClassVar[str] = "nndescent"
    array_specs: ClassVar[dict[str, tuple[str, int]]] = {
        "words": ("<u8", 2),
        "vertex_bits": ("<u2", 2),
        "graph_indptr": ("<i8", 1),
        "graph_indices": ("<i4", 1),
        "entries": ("<i4", 1),
        "bit_entries": ("<i4", 2),
        "group_ptr": ("<i8", 1),
        "group_ids": ("<i8", 1),
        "buffer": ("|u1", 2),
    }
    search_params: ClassVar[tuple[str, ...]] = ("ef", "epsilon", "n_entry_points")

    words: NDArray[np.uint64]  # (n_distinct, n_words): the distinct SDRs of the graph items
    vbits: NDArray[np.uint16]  # (n_distinct, max active) for sparse SDRs, else (0, 0): ...
    # ... their active bits padded with n_bits, which a search then reads instead of words
    indptr: NDArray[np.int64]  # (n_distinct + 1,): search graph, CSR
    indices: NDArray[np.int32]
    entries: NDArray[np.int32]  # (n_global,): spread-out start vertices for every search
    bit_entries: NDArray[np.int32]  # (n_bits, entries_per_bit): start vertices per query bit
    group_ptr: NDArray[np.int64]  # (n_distinct + 1,): distinct SDR -> its item ids ...
    group_ids: NDArray[np.int64]  # (n_graph_items,): ... ascending
    buffer: Buffer  # items added since the graph was built, ids n_graph_items ...

    @cached_property
    def max_degree(self) -> int:
        """The largest number of edges of a vertex (sizes the search's scratch)."""
        return int(np.diff(self.indptr).max(initial=0))

    @cached_property
    def mean_active(self) -> float:
        """Mean number of active bits of the graph's distinct SDRs (tunes the search)."""
        return _mean_active(self.words)

    @cached_property
    def kernel_arrays(self) -> GraphArrays:
        """The structures as the search kernels read them."""
        buf = self.buffer.postings
        arrays = (
            self.words, self.vbits, self.indptr, self.indices, self.entries, self.bit_entries,
            self.group_ptr, self.group_ids, buf.indptr, buf.ids,
        )  # fmt: skip
        return GraphArrays(
            *(readonly(a) for a in arrays), self.max_degree, self.n_graph_items, buf.n
        )

    @property
    def n_graph_items(self) -> int:
        return self.group_ids.shape[0]

    @property
    def n_items(self) -> int:
        return self.n_graph_items + len(self.buffer)

    @property
    def n_buffered(self) -> int:
        return len(self.buffer)

    def graph_packed(self, n_bits: int) -> NDArray[np.uint8]:
        """The graph items' SDRs, packed, in id order, of shape (n_graph_items, n_bytes)."""
        distinct = self.words.view(np.uint8)[:, : n_bytes(n_bits)]
        sizes = np.diff(self.group_ptr)
        item_group = np.repeat(np.arange(self.words.shape[0]), sizes)
        out = np.empty((self.n_graph_items, n_bytes(n_bits)), dtype=np.uint8)
        out[self.group_ids] = distinct[item_group]
        return out

    # ------------------------------------------------------------------ build

    @classmethod
    def prepare(cls, n_bits: int, n_items: int, params: dict[str, Any]) -> Prepared | None:
        """Nothing: the build's kernels come from numba's cache."""
        return None

    @classmethod
    def build(
        cls,
        packed: NDArray[np.uint8],
        n_bits: int,
        params: dict[str, Any],
        prepared: Prepared | None = None,
    ) -> GraphBackend:
        distinct, group_ptr, group_ids = _distinct_rows(packed)
        words = to_words(distinct)
        knn = knn_graph(distinct, params)
        seed = int(params["random_state"] or 0)
        hamming = params["metric"] == "bit_hamming"
        kept, kept_d = _diversify(knn, words, float(params["diversify_prob"]), seed, hamming)
        n_neighbors = _graph_neighbors(params, distinct.shape[0], _mean_active(words))
        max_degree = max(1, round(params["pruning_degree_multiplier"] * n_neighbors))
        indptr, indices = _search_graph_csr(kept, kept_d, max_degree)
        entries = _entry_points(words, _N_GLOBAL_ENTRIES, seed)
        per_bit = np.int64(params["entries_per_bit"])
        bit_entries = _bit_samples(words, np.int64(n_bits), per_bit, np.int64(seed))
        vbits = _bit_rows(distinct, words, n_bits)
        a = relabel(
            locality_order(indptr, indices),
            {
                "words": words, "vbits": vbits, "indptr": indptr, "indices": indices,
                "entries": entries, "bit_entries": bit_entries, "group_ptr": group_ptr,
                "group_ids": group_ids,
            },
        )  # fmt: skip
        return cls(
            a["words"], a["vbits"], a["indptr"], a["indices"], a["entries"], a["bit_entries"],
            a["group_ptr"], a["group_ids"], Buffer.empty(n_bits, len(packed)),
        )  # fmt: skip

    def add(self, packed: NDArray[np.uint8], n_bits: int) -> GraphBackend:
        buffer = self.buffer.extended(packed, n_bits, self.n_items)
        return GraphBackend(
            self.words, self.vbits, self.indptr, self.indices, self.entries, self.bit_entries,
            self.group_ptr, self.group_ids, buffer,
        )  # fmt: skip

    def rebuild(self, n_bits: int, params: dict[str, Any]) -> GraphBackend:
        packed = np.concatenate([self.graph_packed(n_bits), self.buffer.packed])
        return GraphBackend.build(packed, n_bits, params)

    # ------------------------------------------------------------------ query

    def query(
        self, queries: NDArray[np.uint8], k: int, params: dict[str, Any], n_chunks: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        nq = queries.shape[0]
        out_ids = np.empty((nq, k), dtype=np.int64)
        out_ov = np.empty((nq, k), dtype=np.int32)
        auto_ef, auto_epsilon = _auto_search(self.words.shape[0], self.mean_active)
        ef = auto_ef if params["ef"] is None else int(params["ef"])
        epsilon = auto_epsilon if params["epsilon"] is None else float(params["epsilon"])
        q_words, g = to_words(queries), self.kernel_arrays
        search = (k, max(ef, k), epsilon, int(params["n_entry_points"]))
        # one kernel (one compiled copy) for both: lo and hi are Python ints either way
        if n_chunks > 1:
            run_ranges(
                lambda lo, hi: _graph_rows(queries, q_words, *search, lo, hi, out_ids, out_ov, *g),
                nq,
                n_chunks,
            )
        else:
            _graph_rows(queries, q_words, *search, 0, nq, out_ids, out_ov, *g)
        return out_ids, out_ov

    # ------------------------------------------------------------------ persistence

    def arrays(self, n_bits: int) -> dict[str, np.ndarray]:
        return {
            "words": self.words,
            "vertex_bits": self.vbits,
            "graph_indptr": self.indptr,
            "graph_indices": self.indices,
            "entries": self.entries,
            "bit_entries": self.bit_entries,
            "group_ptr": self.group_ptr,
            "group_ids": self.group_ids,
            "buffer": self.buffer.packed,
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], n_bits: int, n_items: int, path: Path
    ) -> GraphBackend:
        a = arrays

        def bad(name: str, why: str) -> DataError:
            return data_error(path / (name + ".npy"), why, "save the index again")

        words, buffer = a["words"], a["buffer"]
        n_distinct = words.shape[0]
        if n_distinct < 1 or words.shape[1] != n_words(n_bits):
            raise bad("words", f"expected shape (n_distinct >= 1, {n_words(n_bits)})")
        if buffer.shape[1] != n_bytes(n_bits):
            raise bad("buffer", f"expected {n_bytes(n_bits)} bytes per row")
        n_graph = a["group_ids"].shape[0]
        if n_graph + buffer.shape[0] != n_items:
            raise bad("group_ids", f"graph items + buffered items != n_items = {n_items}")
        for ptr in ("graph_indptr", "group_ptr"):
            if a[ptr].shape[0] != n_distinct + 1:
                raise bad(ptr, f"expected {n_distinct + 1} row pointers")
        check_csr(a, "graph_indptr", "graph_indices", n_distinct, path)
        check_csr(a, "group_ptr", "group_ids", n_graph, path)
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
        return cls(
            words, vbits, a["graph_indptr"], a["graph_indices"], entries, bit_entries,
            a["group_ptr"], a["group_ids"],
            Buffer.build(np.ascontiguousarray(buffer), n_bits, n_graph),
        )  # fmt: skip
