"""The ``dyadic`` backend: Overmann's Dyadic Memory as an index, re-ranked by true overlap.

The forum's associative alternative to searching by overlap (Peter Overmann's Dyadic
Memory, github.com/PeterOvermann/TriadicMemory). Each item gets a random sparse
**identifier code** ``y`` (:class:`DyadicConfig`: ``p_y`` of ``n_y`` bits, drawn from a
hash of the seed and the id, so an added item gets the code a build would give it). The
memory stores ``x -> y``: for every pair of ``x``'s selected active bits it adds 1 to the
counters of ``y``'s bits at that pair's address. A query sums the counters at its own pairs,
keeps the top ``k * p_y`` identifier bits (Overmann's binarisation, ties kept), decodes the
ids exactly against the stored codes (items ranked by how many of their code bits were
recalled; the best ``n_cand * k`` and ties become candidates), and re-ranks those by their
true overlap with the query. So ``query`` answers like the other backends (ids and true
overlaps, overlap descending then id ascending); it misses the items the memory fails to
recall, and pads with id -1 / overlap -1 when it recalls fewer than k (a query sharing no
pair of selected bits with any item recalls nothing; an item with fewer than 2 active bits
is stored but never recalled).

Storage (measured by ``scripts/bench_dyadic.py``, see the README): a dense counter array
has ``n_bits (n_bits - 1) / 2 x n_y`` counters (1,369-bit SDRs, ``n_y`` 32,768: 31 G) and
a 6,241-bit SDR with 624 active bits writes 194,376 pairs. So this backend stores only the
pairs that occur (sorted pair keys, each with its (identifier bit, count) row: the counters
that are not zero) and uses at most ``max_bits`` of an item's active bits: the ones of
smallest rank under a fixed random order of the bit positions (a bottom-s min-hash sketch,
so similar SDRs select mostly the same bits). SDRs with at most ``max_bits`` active bits
(forum-global's 8) are stored whole.

Items added after the build go to a small exact buffer (posting lists, as the graph
backend's), found at once; ``rebuild`` or a large buffer writes them into the memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._store import data_error
from .._threads import run_ranges
from ..errors import ParameterError
from ..sdr import n_bytes, readonly, to_csr, to_words, validate
from ._dyadic import _counter_rows, _dyadic_rows, _item_codes, _pair_keys
from ._postings import Buffer, _build_postings, n_words
from .backend import Prepared
from .format import check_csr

__all__ = ["DyadicBackend", "DyadicConfig", "DyadicMemory"]

_MERGE_MIN = 1024  # write the buffer into the memory beyond this many items (or n / 4)
_FIX = "save the index again"


@dataclass(frozen=True)
class DyadicConfig:
    """The memory's shape.

    Defaults (``scripts/bench_dyadic.py``, README "Dyadic memory"): ``n_y`` 32,768 and
    ``p_y`` 8: two codes share p_y^2 / n_y = 0.002 bits on average, so the recalled bits of
    one item are rarely another's; on forum-global SDRs (60,000 stored, test-image queries,
    ``max_bits`` 16, ``n_cand`` 8) recall@10 went 0.51 / 0.81 / 0.89 / 0.99 / 0.99 with
    ``n_y`` 2,048 / 8,192 / 16,384 / 32,768 / 65,536 while the memory grew 57 -> 87 MB
    (a pair's row holds at most n_y counters; the rows that occur hold far fewer) and the
    speed fell beyond 32,768. ``max_bits`` 16 (120 pairs per item) and ``n_cand`` 8
    (8k candidates re-ranked) trade recall on SDRs with many active bits for memory and speed
    (the storage table of the benchmark).
    """

    n_y: int = 32768  #: width of the identifier codes (<= 65,536: stored as uint16)
    p_y: int = 8  #: active bits per identifier code
    max_bits: int = 16  #: active bits of an SDR written/read, at most (>= 2)
    n_cand: int = 8  #: candidates re-ranked per result slot (n_cand * k per query)
    seed: int = 0  #: seeds the codes and the bit order (``random_state``)

    def __post_init__(self) -> None:
        checks = [
            ("n_y", 2 <= self.n_y <= 65536, "an integer in [2, 65536]"),
            ("p_y", 1 <= self.p_y <= self.n_y // 2, "an integer in [1, n_y / 2]"),
            ("max_bits", self.max_bits >= 2, "an integer >= 2"),
            ("n_cand", self.n_cand >= 1, "an integer >= 1"),
            ("seed", 0 <= self.seed < 2**63, "an integer in [0, 2**63)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ParameterError(f"dyadic {name} must be {rule}, got {getattr(self, name)}")

    def as_array(self) -> NDArray[np.int64]:
        """(n_y, p_y, max_bits, n_cand, seed) as saved in ``config.npy``."""
        return np.array([self.n_y, self.p_y, self.max_bits, self.n_cand, self.seed], dtype=np.int64)


@dataclass(frozen=True)
class DyadicMemory:
    """The pair memory of items 0..n-1 and their identifier codes."""

    rank: NDArray[np.int32]  # (n_bits,): the fixed random order selecting an SDR's bits
    codes: NDArray[np.uint16]  # (n, p_y): identifier codes, ascending bits
    pair_keys: NDArray[np.int64]  # (n_pairs,): i * n_bits + j, i < j, ascending
    row_ptr: NDArray[np.int64]  # (n_pairs + 1,): counter rows, CSR ...
    ybits: NDArray[np.uint16]  # ... identifier bit of each counter ...
    counts: NDArray[np.int32]  # ... and its count (>= 1)

    @classmethod
    def write(cls, packed: NDArray[np.uint8], n_bits: int, config: DyadicConfig) -> DyadicMemory:
        """The memory of ``packed`` (n, n_bytes) SDRs, ids 0..n-1."""
        rank = np.random.default_rng(config.seed).permutation(n_bits).astype(np.int32)
        n = packed.shape[0]
        codes = _item_codes(np.uint64(config.seed), np.int64(0), n, config.n_y, config.p_y)
        row_indptr, row_bits = to_csr(packed, n_bits)
        keys, items = _pair_keys(row_indptr, row_bits, rank, config.max_bits, np.int64(n_bits))
        order = np.argsort(keys, kind="stable")  # items stay ascending within a pair
        keys, items = keys[order], items[order]
        starts = np.flatnonzero(np.diff(keys, prepend=np.int64(-1)))
        pair_ptr = np.append(starts, keys.shape[0]).astype(np.int64)
        row_ptr, ybits, counts = _counter_rows(pair_ptr, items, codes, config.n_y)
        return cls(rank, codes, keys[starts], row_ptr, ybits, counts)

    @property
    def nbytes(self) -> int:
        """Bytes of the memory's arrays (codes and bit order included)."""
        return sum(a.nbytes for a in (self.rank, self.codes, self.pair_keys, self.row_ptr,
                                      self.ybits, self.counts))  # fmt: skip


@dataclass(frozen=True)
class DyadicBackend:
    """A dyadic memory of items 0..n_main-1, their SDRs for re-ranking, plus a buffer."""

    name: ClassVar[str] = "dyadic"
    array_specs: ClassVar[dict[str, tuple[str, int]]] = {
        "config": ("<i8", 1),
        "bit_rank": ("<i4", 1),
        "codes": ("<u2", 2),
        "pair_keys": ("<i8", 1),
        "counter_ptr": ("<i8", 1),
        "counter_bits": ("<u2", 1),
        "counter_counts": ("<i4", 1),
        "words": ("<u8", 2),
        "buffer": ("|u1", 2),
    }
    search_params: ClassVar[tuple[str, ...]] = ()

    config: DyadicConfig
    memory: DyadicMemory
    words: NDArray[np.uint64]  # (n_main, n_words): the items' SDRs, for the exact re-rank
    buffer: Buffer  # ids n_main ...
    scratch: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @property
    def n_main(self) -> int:
        return self.words.shape[0]

    @property
    def n_items(self) -> int:
        return self.n_main + len(self.buffer)

    @property
    def n_buffered(self) -> int:
        return len(self.buffer)

    @property
    def nbytes(self) -> int:
        """Bytes held: the memory, the SDRs kept for re-ranking, the decode lists, the buffer."""
        decode = self._decode
        buf = self.buffer
        held = (self.words, *decode, buf.packed, buf.postings.indptr, buf.postings.ids)
        return self.memory.nbytes + sum(a.nbytes for a in held)

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
    ) -> DyadicBackend:
        seed = params.get("random_state")
        seed = 0 if seed is None else int(seed)
        if seed < 0:
            raise ParameterError(f"random_state must be None or >= 0 for dyadic, got {seed}")
        return cls.with_config(packed, n_bits, DyadicConfig(seed=seed))

    @classmethod
    def with_config(
        cls, packed: NDArray[np.uint8], n_bits: int, config: DyadicConfig
    ) -> DyadicBackend:
        """A snapshot of ``packed`` (n, n_bytes) SDRs written with ``config`` (benchmarks)."""
        memory = DyadicMemory.write(packed, n_bits, config)
        return cls(config, memory, to_words(packed), Buffer.empty(n_bits, packed.shape[0]))

    def add(self, packed: NDArray[np.uint8], n_bits: int) -> DyadicBackend:
        buffer = self.buffer.extended(packed, n_bits, self.n_items)
        state = DyadicBackend(self.config, self.memory, self.words, buffer, self.scratch)
        if len(buffer) > max(_MERGE_MIN, self.n_main // 4):
            state = state.folded(n_bits)
        return state

    def rebuild(self, n_bits: int, params: dict[str, Any]) -> DyadicBackend:
        return self.folded(n_bits)

    def folded(self, n_bits: int) -> DyadicBackend:
        """The same items all written into the memory (written anew: one pass over them)."""
        if len(self.buffer) == 0:
            return self
        words = np.concatenate([self.words, to_words(self.buffer.packed)])
        packed = np.ascontiguousarray(words.view(np.uint8)[:, : n_bytes(n_bits)])
        memory = DyadicMemory.write(packed, n_bits, self.config)
        return DyadicBackend(self.config, memory, words, Buffer.empty(n_bits, self.n_items),
                             self.scratch)  # fmt: skip

    @cached_property
    def _decode(self) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Identifier bit -> ascending ids whose code has it (CSR): the exact decode."""
        n, p_y = self.memory.codes.shape
        row_indptr = np.arange(0, n * p_y + 1, p_y, dtype=np.int64)
        bits = self.memory.codes.reshape(-1).astype(np.int32)
        return _build_postings(row_indptr, bits, self.config.n_y, np.int64(0))

    @cached_property
    def _kernel_arrays(self) -> tuple:
        m, buf = self.memory, self.buffer.postings
        arrays = (m.rank, m.pair_keys, m.row_ptr, m.ybits, m.counts, m.codes, *self._decode,
                  self.words, buf.indptr, buf.ids)  # fmt: skip
        r = [readonly(a) for a in arrays]
        c = self.config
        return (r[0], np.int64(c.max_bits), np.int64(c.n_cand), *r[1:],
                np.int64(len(self.buffer)), np.int64(self.n_main))  # fmt: skip

    def _scratch(self) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        """This thread's zeroed work arrays (the kernel leaves them zeroed)."""
        n = max(self.n_main, len(self.buffer), 1)
        pair = getattr(self.scratch, "arrays", None)
        if pair is None or pair[0].shape[0] != self.config.n_y or pair[1].shape[0] < n:
            pair = (np.zeros(self.config.n_y, np.int32), np.zeros(n, np.int32))
            self.scratch.arrays = pair
        return pair

    def query(
        self, queries: NDArray[np.uint8], k: int, params: dict[str, Any], n_chunks: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        nq = queries.shape[0]
        out_ids = np.empty((nq, k), dtype=np.int64)
        out_ov = np.empty((nq, k), dtype=np.int32)
        x = self._kernel_arrays
        q_words = to_words(queries)
        k64 = np.int64(k)
        if n_chunks > 1:

            def rows(lo: int, hi: int) -> None:  # own work arrays per range
                acc = np.zeros(self.config.n_y, np.int32)
                hits = np.zeros(max(self.n_main, len(self.buffer), 1), np.int32)
                _dyadic_rows(queries, q_words, k64, lo, hi, out_ids, out_ov, acc, hits, *x)

            run_ranges(rows, nq, n_chunks)
        else:
            acc, hits = self._scratch()
            _dyadic_rows(queries, q_words, k64, np.int64(0), np.int64(nq), out_ids, out_ov,
                         acc, hits, *x)  # fmt: skip
        return out_ids, out_ov

    def arrays(self, n_bits: int) -> dict[str, np.ndarray]:
        # the buffer is saved as it is, unwritten: a loaded index answers as this one does
        m = self.memory
        return {
            "config": self.config.as_array(),
            "bit_rank": m.rank,
            "codes": m.codes,
            "pair_keys": m.pair_keys,
            "counter_ptr": m.row_ptr,
            "counter_bits": m.ybits,
            "counter_counts": m.counts,
            "words": self.words,
            "buffer": self.buffer.packed,
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], n_bits: int, n_items: int, path: Path
    ) -> DyadicBackend:
        a = arrays
        config = _check_config(a["config"], path)
        buffer = a["buffer"]
        n_main = n_items - buffer.shape[0]
        if buffer.shape[1] != n_bytes(n_bits) or n_main < 1:
            raise data_error(path / "buffer.npy", f"expected < {n_items} rows of "
                             f"{n_bytes(n_bits)} bytes", _FIX)  # fmt: skip
        try:
            validate(buffer, n_bits, "buffered SDRs")
        except ParameterError as exc:
            raise data_error(path / "buffer.npy", str(exc), _FIX) from exc
        rank = a["bit_rank"]
        in_range = rank.shape == (n_bits,) and rank.min() >= 0 and rank.max() < n_bits
        if not in_range or np.any(np.bincount(rank, minlength=n_bits) != 1):
            raise data_error(path / "bit_rank.npy", f"not a permutation of 0..{n_bits - 1}", _FIX)
        codes = a["codes"]
        if codes.shape != (n_main, config.p_y) or (codes.size and codes.max() >= config.n_y):
            raise data_error(
                path / "codes.npy", f"expected shape ({n_main}, {config.p_y}), bits < n_y", _FIX
            )
        keys = a["pair_keys"]
        if keys.size and (np.any(np.diff(keys) <= 0) or keys[0] < 0 or keys[-1] >= n_bits**2):
            raise data_error(path / "pair_keys.npy", "keys not ascending within n_bits**2", _FIX)
        if a["counter_ptr"].shape[0] != keys.shape[0] + 1:
            raise data_error(path / "counter_ptr.npy", "expected one row per pair key + 1", _FIX)
        check_csr(a, "counter_ptr", "counter_bits", config.n_y, path)
        counts = a["counter_counts"]
        if counts.shape != a["counter_bits"].shape or (counts.size and counts.min() < 1):
            raise data_error(path / "counter_counts.npy", "expected one count >= 1 per bit", _FIX)
        if a["words"].shape != (n_main, n_words(n_bits)):
            raise data_error(path / "words.npy", f"expected {n_main} rows", _FIX)
        memory = DyadicMemory(rank, codes, keys, a["counter_ptr"], a["counter_bits"], counts)
        buffer = Buffer.build(np.ascontiguousarray(buffer), n_bits, n_main)
        return cls(config, memory, a["words"], buffer)


def _check_config(arr: np.ndarray, path: Path) -> DyadicConfig:
    """The :class:`DyadicConfig` saved in ``config.npy``; DataError naming it when invalid."""
    if arr.shape != (5,):
        raise data_error(path / "config.npy", "expected 5 values", _FIX)
    try:
        return DyadicConfig(*(int(v) for v in arr))
    except ParameterError as exc:
        raise data_error(path / "config.npy", str(exc), _FIX) from exc
