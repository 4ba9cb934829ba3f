"""Recall@10 against single-query QPS, several search settings per backend, in one run.

Imported by ``scripts/bench_search.py``. Each backend is built once (build time reported
apart) and then queried one query per call on one thread for each of its search settings:

- ``sdrindex nndescent``: the ``SDRIndex`` API with per-call ``ef`` / ``epsilon`` /
  ``n_entry_points`` overrides (``auto`` = the index's own choice);
- ``usearch HNSW Tanimoto M16/M32``: usearch's binary Tanimoto on the packed bits,
  ``expansion_search`` swept;
- ``usearch HNSW overlap M16``: usearch's HNSW with our overlap as its metric, a numba
  ``cfunc`` (``n_bits - |a AND b|`` over the padded uint64 words) passed as a
  ``CompiledMetric``;
- ``faiss IndexBinaryHNSW M32``: faiss-cpu's binary HNSW (Hamming), ``efSearch`` swept.

Recall@10 counts ties (a returned item is right when its overlap is >= the exact 10th
best). The expensive inputs (the SP's SDRs, the 1M set, the exact truth, the peers' built
indexes) go to a cache directory when one is given, so a rerun only queries; nothing there
belongs in git.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdrindex.index import SDRIndex
from sdrindex.sdr import add_noise, overlap

K = 10

#: ours: (ef, epsilon, n_entry_points); None = the index's automatic choice
OURS_SETTINGS: tuple[tuple[int | None, float | None, int | None], ...] = (
    (None, None, None),
    (10, 0.0, None),
    (16, 0.0, None),
    (24, 0.0, None),
    (32, 0.0, None),
    (48, 0.0, None),
    (64, 0.0, None),
    (96, 0.0, None),
    (128, 0.0, None),
    (16, 0.1, None),
    (32, 0.1, None),
    (48, 0.1, None),
    (64, 0.1, None),
    (40, 0.12, None),
    (64, 0.05, None),
    (96, 0.05, None),
    (112, 0.05, None),
    (128, 0.05, None),
    (160, 0.05, None),
)
PEER_EF: tuple[int, ...] = (16, 32, 64, 96, 128, 160, 192, 256)


@dataclass
class Point:
    """One search setting of one backend on one data set."""

    data: str
    backend: str
    setting: str
    qps: float
    recall: float


@dataclass
class Build:
    """One built index: its build time (cached = read from an earlier run's record)."""

    data: str
    backend: str
    seconds: float
    memory_mb: float
    cached: bool


# =========================================================================== inputs


def cached_array(cache: Path | None, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
    """``make()``, saved as cache/name.npy and read from there on the next run."""
    if cache is None:
        return make()
    path = cache / f"{name}.npy"
    if path.exists():
        return np.load(path)
    arr = make()
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr


def million(db: np.ndarray, n_bits: int, n: int = 1_000_000) -> np.ndarray:
    """The 1M set: db followed by noisy copies of it (5 % of active bits swapped)."""
    reps = []
    seed = 0
    while sum(len(r) for r in reps) + len(db) < n:
        seed += 1
        reps.append(add_noise(db, n_bits, 0.05, mode="swap", seed=seed))
    return np.concatenate([db, *reps])[:n]


def exact_overlaps(db: np.ndarray, n_bits: int, queries: np.ndarray) -> np.ndarray:
    """The exact top-10 overlaps of each query, (n_queries, 10) int32."""
    _, ov = SDRIndex("exact").fit(db, n_bits).query(queries, K)
    return ov


def overlaps_of(db: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Exact overlaps of each query with the returned ids (-1 where the id is < 0)."""
    out = np.full(ids.shape, -1, np.int64)
    for q in range(len(queries)):
        ok = ids[q] >= 0
        out[q, ok] = overlap(queries[q : q + 1], db[ids[q, ok]])[0]
    return out


def recall_at_10(truth_ov: np.ndarray, got_ov: np.ndarray) -> float:
    """Mean fraction of the 10 returned whose overlap >= the exact 10th-best overlap."""
    return float((got_ov >= truth_ov[:, K - 1][:, None]).mean())


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _padded(packed: np.ndarray) -> np.ndarray:
    """Rows zero-padded to whole uint64 words (usearch's custom metric reads words)."""
    width = -(-packed.shape[1] // 8) * 8
    out = np.zeros((packed.shape[0], width), dtype=np.uint8)
    out[:, : packed.shape[1]] = packed
    return out


# =========================================================================== backends


class Ours:
    """sdrindex's graph backend through the SDRIndex API."""

    name = "sdrindex nndescent"

    def __init__(self, params: dict | None = None, prebuilt: Path | None = None) -> None:
        self.params = params or {}
        self.prebuilt = prebuilt

    def build(self, db: np.ndarray, n_bits: int, cache_dir: Path | None) -> None:
        if self.prebuilt is not None:
            self.index = SDRIndex.load(self.prebuilt, mmap=False)
            if len(self.index) != len(db):
                raise SystemExit(f"{self.prebuilt} holds {len(self.index)} items, not {len(db)}")
            return
        self.index = SDRIndex("nndescent", **self.params).fit(db, n_bits)

    def settings(self) -> Sequence[tuple]:
        return OURS_SETTINGS

    @staticmethod
    def label(s: tuple) -> str:
        if s == (None, None, None):
            return "auto"
        ef, eps, ent = s
        return f"ef {ef} eps {eps:g}" + ("" if ent is None else f" entries {ent}")

    def run(self, queries: np.ndarray, s: tuple) -> np.ndarray:
        ef, eps, ent = s
        ids = np.empty((len(queries), K), dtype=np.int64)
        for q in range(len(queries)):
            ids[q] = self.index.query(
                queries[q : q + 1], K, ef=ef, epsilon=eps, n_entry_points=ent
            )[0][0]
        return ids


def _overlap_metric(n_words: int, n_bits: int):
    """usearch CompiledMetric: n_bits - |a AND b| over n_words uint64 words (a numba cfunc)."""
    from numba import carray, cfunc, types
    from usearch.index import CompiledMetric, MetricKind, MetricSignature

    from sdrindex.sdr import popcount64

    sig = types.float32(types.CPointer(types.uint64), types.CPointer(types.uint64))

    @cfunc(sig)
    def neg_overlap(a, b):
        x = carray(a, n_words)
        y = carray(b, n_words)
        s = 0
        for i in range(n_words):
            s += popcount64(x[i] & y[i])
        return types.float32(n_bits - s)

    return CompiledMetric(neg_overlap.address, MetricKind.Tanimoto, MetricSignature.ArrayArray)


class USearch:
    """usearch's HNSW on the packed bits: binary Tanimoto, or our overlap as the metric."""

    def __init__(self, connectivity: int, metric: str = "tanimoto") -> None:
        self.m = connectivity
        self.metric = metric
        self.name = f"usearch HNSW {metric} M{connectivity}"

    def _new(self, n_bytes_padded: int, n_bits: int):
        from usearch.index import Index, MetricKind, ScalarKind

        metric = (
            MetricKind.Tanimoto
            if self.metric == "tanimoto"
            else _overlap_metric(n_bytes_padded // 8, n_bits)
        )
        return Index(
            ndim=8 * n_bytes_padded, metric=metric, dtype=ScalarKind.B1, connectivity=self.m
        )

    def build(self, db: np.ndarray, n_bits: int, cache_dir: Path | None) -> None:
        vecs = _padded(db)
        self.index = self._new(vecs.shape[1], n_bits)
        path = None if cache_dir is None else cache_dir / f"usearch-{self.metric}-M{self.m}.usearch"
        if path is not None and path.exists():
            self.index.load(str(path))
            return
        self.index.add(np.arange(len(db), dtype=np.uint64), vecs, threads=0)
        if path is not None:
            self.index.save(str(path))

    def settings(self) -> Sequence[int]:
        return PEER_EF

    @staticmethod
    def label(s: int) -> str:
        return f"expansion_search {s}"

    def run(self, queries: np.ndarray, s: int) -> np.ndarray:
        self.index.expansion_search = s
        qs = _padded(queries)
        ids = np.empty((len(qs), K), dtype=np.int64)
        for q in range(len(qs)):
            got = self.index.search(qs[q], K, threads=1)
            ids[q] = -1
            ids[q, : len(got.keys)] = got.keys
        return ids


class FaissHNSW:
    """faiss-cpu's IndexBinaryHNSW (Hamming distance)."""

    def __init__(self, m: int = 32) -> None:
        self.m = m
        self.name = f"faiss IndexBinaryHNSW M{m}"

    def build(self, db: np.ndarray, n_bits: int, cache_dir: Path | None) -> None:
        import faiss

        path = None if cache_dir is None else cache_dir / f"faiss-hnsw-M{self.m}.faissindex"
        if path is not None and path.exists():
            self.index = faiss.read_index_binary(str(path))
            return
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        self.index = faiss.IndexBinaryHNSW(db.shape[1] * 8, self.m)
        self.index.add(db)
        if path is not None:
            faiss.write_index_binary(self.index, str(path))

    def settings(self) -> Sequence[int]:
        return PEER_EF

    @staticmethod
    def label(s: int) -> str:
        return f"efSearch {s}"

    def run(self, queries: np.ndarray, s: int) -> np.ndarray:
        import faiss

        faiss.omp_set_num_threads(1)
        self.index.hnsw.efSearch = s
        ids = np.empty((len(queries), K), dtype=np.int64)
        for q in range(len(queries)):
            ids[q] = self.index.search(queries[q : q + 1], K)[1][0]
        return ids


def available_peers(kinds: Sequence[str]) -> list:
    """The peer backends named in kinds whose library is installed (a note for the others)."""
    out: list = []
    try:
        import usearch  # noqa: F401

        for kind in kinds:
            if kind.startswith("usearch-"):
                _, metric, m = kind.split("-")
                out.append(USearch(int(m[1:]), metric))
    except ImportError:
        print("  (usearch not installed: pip install '.[bench]')")
    try:
        import faiss  # noqa: F401

        out += [FaissHNSW(int(k.split("-M")[1])) for k in kinds if k.startswith("faiss-")]
    except ImportError:
        print("  (faiss-cpu not installed: pip install '.[bench]')")
    return out


# =========================================================================== the run


def _build_record(cache_dir: Path | None, backend: str) -> Path | None:
    return None if cache_dir is None else cache_dir / f"build-{backend.replace(' ', '_')}.json"


def build(
    data: str,
    backend,
    db: np.ndarray,
    n_bits: int,
    cache_dir: Path | None,
    builds: list[Build],
) -> None:
    """Build one backend (or load its cached build) and record its build time and memory."""
    record = _build_record(cache_dir, backend.name)
    ours = isinstance(backend, Ours)
    cached = record is not None and record.exists() and not ours
    if ours and backend.prebuilt is not None:
        # an index saved by an earlier build: its build.json holds that build's seconds
        record, cached = backend.prebuilt / "build.json", True
    m0 = rss_mb()
    t = time.perf_counter()
    backend.build(db, n_bits, cache_dir)
    seconds = time.perf_counter() - t
    mem = rss_mb() - m0
    if cached:
        seconds = json.loads(record.read_text())["seconds"]
    elif record is not None and not ours:
        record.write_text(json.dumps({"seconds": seconds}))
    builds.append(Build(data, backend.name, seconds, mem, cached))
    print(f"  {backend.name}: built in {seconds:.1f} s{' (cached)' if cached else ''}", flush=True)


def measure(
    data: str,
    backends: Sequence,
    db: np.ndarray,
    queries: np.ndarray,
    truth_ov: np.ndarray,
    points: list[Point],
    rounds: int = 1,
) -> None:
    """Time every search setting of every (built) backend, ``rounds`` times interleaved.

    Round r runs each backend's settings in turn, so a load that comes and goes on a shared
    machine falls on every backend alike; a point's QPS is the median over the rounds.
    Recall is deterministic and taken from the first round.
    """
    qps: dict[tuple[str, str], list[float]] = {}
    recall: dict[tuple[str, str], float] = {}
    for backend in backends:
        backend.run(queries[:20], backend.settings()[0])  # warm-up
    for r in range(rounds):
        for backend in backends:
            for s in backend.settings():
                key = (backend.name, backend.label(s))
                t = time.perf_counter()
                ids = backend.run(queries, s)
                qps.setdefault(key, []).append(len(queries) / (time.perf_counter() - t))
                if r == 0:
                    recall[key] = recall_at_10(truth_ov, overlaps_of(db, queries, ids))
                    print(f"    {key[0]} {key[1]}: {qps[key][0]:,.0f} QPS, recall@10 "
                          f"{recall[key]:.4f}", flush=True)  # fmt: skip
        if rounds > 1:
            print(f"  round {r + 1}/{rounds} done", flush=True)
    for key, values in qps.items():
        points.append(Point(data, key[0], key[1], float(np.median(values)), recall[key]))


def print_frontier(builds: list[Build], points: list[Point]) -> None:
    """The build table, then the recall/QPS table (markdown)."""
    print("\n| data | backend | build s | memory MB |")
    print("| --- | --- | --- | --- |")
    for b in builds:
        star = " (cached)" if b.cached else ""
        print(f"| {b.data} | {b.backend} | {b.seconds:.1f}{star} | {b.memory_mb:.0f} |")
    print("\n| data | backend | setting | QPS single | recall@10 |")
    print("| --- | --- | --- | --- | --- |")
    for p in points:
        print(f"| {p.data} | {p.backend} | {p.setting} | {p.qps:,.0f} | {p.recall:.4f} |")
    for data in dict.fromkeys(p.data for p in points):
        best: dict[str, Point] = {}
        for p in points:
            if p.data != data or p.recall < 0.99:
                continue
            if p.backend not in best or p.qps > best[p.backend].qps:
                best[p.backend] = p
        line = ", ".join(f"{b} {p.qps:,.0f} ({p.setting})" for b, p in best.items())
        print(f"{data}: fastest at recall@10 >= 0.99: {line or 'none'}")


def pareto(ps: list[Point]) -> list[Point]:
    """The settings no other setting beats in both QPS and recall, by QPS ascending."""
    front = [p for p in ps if not any(
        o.qps >= p.qps and o.recall >= p.recall and (o.qps, o.recall) != (p.qps, p.recall)
        for o in ps
    )]  # fmt: skip
    return sorted(front, key=lambda p: p.qps)


def plot_frontier(points: list[Point], path: Path) -> None:
    """Recall@10 against QPS (log scale), one panel per data set; per backend a line through
    its Pareto-optimal settings and crosses for the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = list(dict.fromkeys(p.data for p in points))
    fig, axes = plt.subplots(1, len(datas), figsize=(6.5 * len(datas), 4.8), squeeze=False)
    for ax, data in zip(axes[0], datas, strict=True):
        for backend in dict.fromkeys(p.backend for p in points if p.data == data):
            ps = [p for p in points if p.data == data and p.backend == backend]
            front = pareto(ps)
            style = "o-" if backend.startswith("sdrindex") else ".--"
            (line,) = ax.plot([p.qps for p in front], [p.recall for p in front], style,
                              label=backend)  # fmt: skip
            others = [p for p in ps if p not in front]
            ax.plot([p.qps for p in others], [p.recall for p in others], "x",
                    color=line.get_color(), alpha=0.5)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("queries per second, one at a time, one thread")
        ax.set_ylabel("recall@10 (ties counted)")
        ax.set_ylim(0.9, 1.002)  # the region that matters; settings below it are cut off
        ax.axhline(0.99, color="grey", lw=0.6)
        ax.set_title(data)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"frontier figure: {path}")
