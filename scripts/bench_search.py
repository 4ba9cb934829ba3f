"""SDR search on real MNIST SDRs: the recall/QPS frontier of ours and the peers; the backend table.

    .venv/bin/python scripts/bench_search.py [--config sdrindex-mnist[,forum-global,...]]
        [--million] [--cache DIR] [--frontier-queries 1000] [--peers KIND,...|none]
        [--million-peers KIND,...|none]
        [--frontier-only] [--peers-only] [--skip-60k] [--ours-index DIR]
        [--rounds 3] [--plot docs/frontier.png]
        [--queries 10000] [--faiss] [--bundle]

For each SP config (default: the default preset): learns the SP (one epoch on the 60,000
training images) and encodes the 10,000 test images as queries (with ``--cache DIR`` the
SDRs, the 1M set, the exact truth and the peers' indexes are kept in DIR and reused; never
commit them). The graph backend's kernels are compiled (or loaded from numba's cache) first,
on 3,000 random SDRs of the same width, and timed apart.

**The frontier** (``scripts/frontier.py``): at 60k (and at 1,000,000 items with
``--million``: the 60k SDRs plus noisy copies, 5 % of active bits swapped), recall@10
against single-query QPS (one query per call, one thread) for several search settings of
each backend: ours (ef / epsilon sweep), usearch HNSW (binary Tanimoto, M 16 and 32; our
overlap as a numba-compiled metric, M 16), faiss-cpu IndexBinaryHNSW (M 32), each built once
(build time and memory printed apart), on the first ``--frontier-queries`` test queries;
every backend is built first, then its settings are timed in ``--rounds`` interleaved rounds
(QPS: the median; on a shared machine a passing load then hits every backend alike).
The curve goes to ``--plot``. Peers need ``pip install '.[bench]'``.

**The backend table** (60k; skipped with ``--frontier-only``): exact and nndescent, build,
restore, memory, disk, QPS single and batch, recall@10 on ``--queries`` queries; ``--faiss``
adds faiss-cpu's IndexBinaryFlat and IndexBinaryHNSW (M 32, ef 128) rows.
Recall@10 counts ties: a returned item is right when its overlap is >= the exact 10th-best
overlap. ``--bundle`` times, for the first config, the whole ``sdrindex build`` of a
full-MNIST bundle (a subprocess, wall clock) and ``Bundle.load`` + one query in fresh
processes (median of 3; numba's cache is warm by then).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import frontier
import numpy as np

from sdrindex.datasets import load_mnist
from sdrindex.index import SDRIndex
from sdrindex.preprocess import encode_input, encoder_config
from sdrindex.sdr import random_sdrs
from sdrindex.sp import preprocess_for, sp_from_config, threshold_for

PEERS = "usearch-tanimoto-M16,usearch-tanimoto-M32,usearch-overlap-M16,faiss-hnsw-M32"


rss_mb = frontier.rss_mb
recall_at_10 = frontier.recall_at_10
overlaps_of = frontier.overlaps_of


def time_queries(index, queries: np.ndarray, k: int = 10, single: int = 2000):
    n = min(single, len(queries))
    t = time.perf_counter()
    for q in range(n):
        index.query(queries[q : q + 1], k)
    qps_single = n / (time.perf_counter() - t)
    t = time.perf_counter()
    ids, ov = index.query(queries, k)
    qps_batch = len(queries) / (time.perf_counter() - t)
    return qps_single, qps_batch, ids, ov


def bench_ours(name, backend, db, n_bits, queries, truth_ov, results):
    gc.collect()
    m0 = rss_mb()
    t = time.perf_counter()
    index = SDRIndex(backend).fit(db, n_bits)
    build = time.perf_counter() - t
    mem = rss_mb() - m0
    index.query(queries[:10], 10)  # warm-up (compilation is cached on disk)
    with tempfile.TemporaryDirectory() as d:
        index.save(d)
        disk = sum(f.stat().st_size for f in Path(d).iterdir()) / 2**20
        t = time.perf_counter()
        restored = SDRIndex.load(d)
        restored.query(queries[:1], 10)
        restore = time.perf_counter() - t
        del restored
    s, b, ids, ov = time_queries(index, queries)
    rec = recall_at_10(truth_ov, ov)
    results.append((name, backend, build, restore, mem, disk, s, b, rec))
    return index


def bench_faiss(name, db_packed, n_bits, queries_packed, db_for_overlap, truth_ov, results):
    try:
        import faiss
    except ImportError:
        print(f"  ({name}: faiss-cpu not installed, skipped)")
        return
    d = db_packed.shape[1] * 8
    for kind in ("IndexBinaryFlat", "IndexBinaryHNSW"):
        t = time.perf_counter()
        if kind == "IndexBinaryFlat":
            idx = faiss.IndexBinaryFlat(d)
        else:
            idx = faiss.IndexBinaryHNSW(d, 32)
            idx.hnsw.efSearch = 128
        idx.add(db_packed)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        n = min(2000, len(queries_packed))
        t = time.perf_counter()
        for q in range(n):
            idx.search(queries_packed[q : q + 1], 10)
        single = n / (time.perf_counter() - t)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        _, ids = idx.search(queries_packed, 10)
        batch = len(queries_packed) / (time.perf_counter() - t)
        ov = overlaps_of(db_for_overlap, queries_packed, ids.astype(np.int64))
        results.append(
            (
                name,
                f"faiss {kind}",
                build,
                float("nan"),
                float("nan"),
                float("nan"),
                single,
                batch,
                recall_at_10(truth_ov, ov),
            )
        )


def print_table(results):
    print()
    print(
        "| data | backend | build s | restore s | memory MB | disk MB | QPS single | "
        "QPS batch | recall@10 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, backend, build, restore, mem, disk, s, b, rec in results:

        def f(x, fmt):
            return "-" if x != x else format(x, fmt)

        print(
            f"| {name} | {backend} | {build:.1f} | {f(restore, '.2f')} | {f(mem, '.0f')} | "
            f"{f(disk, '.0f')} | {s:,.0f} | {b:,.0f} | {rec:.4f} |"
        )


def bench_bundle(config: str) -> None:
    """Wall time of `sdrindex build` (full MNIST) and of loading the bundle in a new process."""
    import statistics
    import subprocess
    import sys

    cli = [sys.executable, "-m", "sdrindex.cli"]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "bundle"
        t = time.perf_counter()
        run = subprocess.run(
            [*cli, "build", "--out", str(out), "--config", config],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - t
        summary = [line for line in run.stdout.splitlines() if line.startswith("seconds:")]
        print(f"\nbundle build ({config}, full MNIST, nndescent): {wall:.1f} s wall")
        print("  " + (summary[0] if summary else run.stdout.strip()))
        probe = (
            "import time; t = time.perf_counter(); import numpy as np; "
            "from sdrindex.bundle import Bundle; "
            f"b = Bundle.load({str(out)!r}); "
            "b.index.query(np.asarray(b.table.sdrs[:1]), 10); "
            "print(time.perf_counter() - t)"
        )
        loads = []
        for _ in range(3):
            got = subprocess.run(
                [sys.executable, "-c", probe], capture_output=True, text=True, check=True
            )
            loads.append(float(got.stdout.strip().splitlines()[-1]))
        print(
            "bundle load + first query in a new process (imports included, checksums "
            f"verified): median {statistics.median(loads):.2f} s of "
            + ", ".join(f"{x:.2f}" for x in loads)
        )


def sp_sdrs(config: str, cache: Path | None) -> tuple[np.ndarray, np.ndarray, int]:
    """The SP's SDRs of the 60,000 training images and of the 10,000 test images (cached)."""
    made: dict = {}

    def learn() -> None:
        if made:
            return
        train, _ = load_mnist("train")
        test, _ = load_mnist("test")
        encoder = encoder_config(threshold_for(config), preprocess_for(config))
        sp = sp_from_config(config)
        X = encode_input(train, encoder)
        t = time.perf_counter()
        sp.fit(X)
        print(f"SP {config}: {sp.n_columns} columns, learned in {time.perf_counter() - t:.1f} s")
        made["db"] = sp.transform(X, packed=True)
        made["q"] = sp.transform(encode_input(test, encoder), packed=True)
        made["n_bits"] = np.array([sp.n_columns])

    def get(key: str):
        return lambda: (learn(), made[key])[1]

    db = frontier.cached_array(cache, f"{config}-db", get("db"))
    queries = frontier.cached_array(cache, f"{config}-queries", get("q"))
    n_bits = int(frontier.cached_array(cache, f"{config}-n_bits", get("n_bits"))[0])
    return db, queries, n_bits


def run_frontier(data, db, n_bits, queries, truth_ov, args, cache_dir, builds, points) -> None:
    """Ours and the peers over their search settings on one data set."""
    print(f"frontier on {data}: {len(db):,} stored, {len(queries):,} queries", flush=True)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    prebuilt = None
    if args.ours_index and "1M" in data:
        prebuilt = Path(args.ours_index)
    backends = [] if args.peers_only else [frontier.Ours(prebuilt=prebuilt)]
    peers = args.million_peers if "1M" in data and args.million_peers else args.peers
    if peers != "none":
        backends += frontier.available_peers(peers.split(","))
    # every backend built (or loaded) first and kept: their settings are then timed in
    # interleaved rounds (frontier.measure), so load on a shared machine hits them alike
    for backend in backends:
        frontier.build(data, backend, db, n_bits, cache_dir, builds)
        gc.collect()
    frontier.measure(data, backends, db, queries, truth_ov, points, rounds=args.rounds)


def bench_config(config: str, args, results: list, builds: list, points: list) -> None:
    cache = None if args.cache is None else Path(args.cache)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    db, queries, n_bits = sp_sdrs(config, cache)
    queries = queries[: args.queries]
    active = np.unpackbits(db, axis=1, count=n_bits).sum(axis=1)
    print(
        f"SDRs: {len(db)} stored, {len(queries)} queries, active bits mean {active.mean():.1f} "
        f"(min {active.min()}, max {active.max()})"
    )
    t = time.perf_counter()
    warm = random_sdrs(3000, n_bits, max(1, int(active.mean())), seed=0)
    SDRIndex("nndescent").fit(warm, n_bits).query(warm[:2], 10)
    print(f"graph kernels compiled or loaded from the cache: {time.perf_counter() - t:.1f} s")

    name = f"{config} 60k"
    if not args.frontier_only:
        exact = SDRIndex("exact").fit(db, n_bits)
        _, truth_ov = exact.query(queries, 10)
        bench_ours(name, "exact", db, n_bits, queries, truth_ov, results)
        bench_ours(name, "nndescent", db, n_bits, queries, truth_ov, results)
        if args.faiss:
            bench_faiss(name, db, n_bits, queries, db, truth_ov, results)
    fq = queries[: args.frontier_queries]

    def sub(tag: str) -> Path | None:
        return None if cache is None else cache / f"{config}-{tag}"

    if not args.skip_60k:
        truth = frontier.cached_array(
            cache, f"{config}-60k-truth-{len(fq)}", lambda: frontier.exact_overlaps(db, n_bits, fq)
        )
        run_frontier(name, db, n_bits, fq, truth, args, sub("60k"), builds, points)

    if args.million:
        big = frontier.cached_array(cache, f"{config}-1M", lambda: frontier.million(db, n_bits))
        t = time.perf_counter()
        truth = frontier.cached_array(
            cache, f"{config}-1M-truth-{len(fq)}", lambda: frontier.exact_overlaps(big, n_bits, fq)
        )
        print(f"1M set and exact truth ready in {time.perf_counter() - t:.1f} s")
        name = f"{config} 1M (MNIST + noisy copies)"
        run_frontier(name, big, n_bits, fq, truth, args, sub("1M"), builds, points)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(  # the README's search figures were measured on sdrindex-mnist's SDRs
        "--config", default="sdrindex-mnist", help="preset(s), comma-separated"
    )
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--million", action="store_true")
    ap.add_argument("--faiss", action="store_true", help="faiss rows in the backend table")
    ap.add_argument("--bundle", action="store_true")
    ap.add_argument("--cache", default=None, help="directory for the SDRs, 1M set, truth, peers")
    ap.add_argument("--frontier-queries", type=int, default=1000)
    ap.add_argument("--peers", default=PEERS, help="comma-separated, or 'none'")
    ap.add_argument("--frontier-only", action="store_true", help="skip the backend table")
    ap.add_argument("--peers-only", action="store_true", help="frontier without ours")
    ap.add_argument("--million-peers", default=None, help="peers at 1M (default: --peers)")
    ap.add_argument(
        "--ours-index",
        default=None,
        help="at 1M, load this saved index (SDRIndex.save; its build.json holds the build's "
        "seconds) instead of building one",
    )
    ap.add_argument("--skip-60k", action="store_true", help="no frontier at 60k")
    ap.add_argument(
        "--rounds", type=int, default=3, help="frontier: timing rounds, interleaved (median)"
    )
    ap.add_argument("--plot", default="docs/frontier.png")
    args = ap.parse_args()
    configs = [c.strip() for c in args.config.split(",") if c.strip()]

    results: list = []
    builds: list = []
    points: list = []
    for config in configs:
        bench_config(config, args, results, builds, points)
    if results:
        print_table(results)
    by = {(r[0], r[1]): r for r in results}
    for name in dict.fromkeys(r[0] for r in results):
        e, nn = by.get((name, "exact")), by.get((name, "nndescent"))
        if e and nn:
            print(
                f"{name}: nndescent / exact QPS single {nn[6] / e[6]:.2f}x, batch "
                f"{nn[7] / e[7]:.2f}x"
            )
    if points:
        frontier.print_frontier(builds, points)
        if args.plot:
            frontier.plot_frontier(points, Path(args.plot))
    if args.bundle:
        bench_bundle(configs[0])


if __name__ == "__main__":
    main()
