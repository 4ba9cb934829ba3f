"""SDR search on real MNIST SDRs: build, restore, memory, QPS and recall@10 per backend.

    .venv/bin/python scripts/bench_search.py [--config sdrindex-mnist[,forum-global,...]]
                                             [--queries 10000] [--million] [--peers]
                                             [--bundle]

For each SP config (default: the default preset): learns the SP (one epoch on the 60,000
training images), encodes the 10,000 test images as queries, and measures each backend side
by side in one run. The graph backend's kernels are compiled (or loaded from numba's cache)
first, on 3,000 random SDRs of the same width, and timed apart: "build s" is the build alone.
Recall@10 counts ties: a returned item is right when its overlap is >= the exact 10th-best
overlap. QPS "single" is one query per call on one thread; "batch" is one call for all
queries. ``--million`` adds the same at 1,000,000 items (the 60k SDRs plus noisy copies, 5%
of active bits swapped). ``--bundle`` times, for the first config, the whole ``sdrindex
build`` of a full-MNIST bundle (a subprocess, wall clock) and ``Bundle.load`` + one query
in fresh processes (median of 3; numba's cache is warm by then). ``--peers`` adds
faiss-cpu's IndexBinaryFlat and IndexBinaryHNSW when installed (with a fixed number of
active bits, Hamming order equals overlap order; with a varying number it does not, and
their recall shows that).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sdrindex.datasets import binarize, load_mnist
from sdrindex.index import SDRIndex
from sdrindex.sdr import add_noise, random_sdrs
from sdrindex.sp import DEFAULT_PRESET, sp_from_config, threshold_for


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def recall_at_10(ids_true_ov: np.ndarray, got_ov: np.ndarray) -> float:
    """Mean fraction of the 10 returned whose overlap >= the exact 10th-best overlap."""
    kth = ids_true_ov[:, 9][:, None]
    return float((got_ov >= kth).mean())


def overlaps_of(sdrs_db: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Exact overlaps of each query with the returned ids (-1 where id is -1)."""
    from sdrindex.sdr import overlap

    out = np.full(ids.shape, -1, np.int64)
    for q in range(len(queries)):
        ok = ids[q] >= 0
        out[q, ok] = overlap(queries[q : q + 1], sdrs_db[ids[q, ok]])[0]
    return out


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


def bench_config(config: str, args, results: list) -> None:
    train, _ = load_mnist("train")
    test, _ = load_mnist("test")
    threshold = threshold_for(config)
    sp = sp_from_config(config)
    X = binarize(train, threshold).reshape(len(train), -1)
    t = time.perf_counter()
    sp.fit(X)
    print(f"SP {config}: {sp.n_columns} columns, learned in {time.perf_counter() - t:.1f} s")
    db = sp.transform(X, packed=True)
    queries = sp.transform(binarize(test[: args.queries], threshold).reshape(-1, 784), packed=True)
    n_bits = sp.n_columns
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
    exact = SDRIndex("exact").fit(db, n_bits)
    _, truth_ov = exact.query(queries, 10)
    bench_ours(name, "exact", db, n_bits, queries, truth_ov, results)
    bench_ours(name, "nndescent", db, n_bits, queries, truth_ov, results)
    if args.peers:
        bench_faiss(name, db, n_bits, queries, db, truth_ov, results)

    if args.million:
        reps = []
        rng_seed = 0
        while sum(len(r) for r in reps) + len(db) < 1_000_000:
            rng_seed += 1
            reps.append(add_noise(db, n_bits, 0.05, mode="swap", seed=rng_seed))
        big = np.concatenate([db, *reps])[:1_000_000]
        del reps
        q_small = queries[:2000]
        exact_big = SDRIndex("exact").fit(big, n_bits)
        _, truth_big = exact_big.query(q_small, 10)
        del exact_big
        name = f"{config} 1M (MNIST + noisy copies)"
        bench_ours(name, "exact", big, n_bits, q_small, truth_big, results)
        bench_ours(name, "nndescent", big, n_bits, q_small, truth_big, results)
        if args.peers:
            bench_faiss(name, big, n_bits, q_small, big, truth_big, results)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=DEFAULT_PRESET, help="preset(s), comma-separated")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--million", action="store_true")
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--bundle", action="store_true")
    args = ap.parse_args()
    configs = [c.strip() for c in args.config.split(",") if c.strip()]

    results: list = []
    for config in configs:
        bench_config(config, args, results)
    print_table(results)
    by = {(r[0], r[1]): r for r in results}
    for name in dict.fromkeys(r[0] for r in results):
        e, nn = by.get((name, "exact")), by.get((name, "nndescent"))
        if e and nn:
            print(
                f"{name}: nndescent / exact QPS single {nn[6] / e[6]:.2f}x, batch "
                f"{nn[7] / e[7]:.2f}x"
            )
    if args.bundle:
        bench_bundle(configs[0])


if __name__ == "__main__":
    main()
