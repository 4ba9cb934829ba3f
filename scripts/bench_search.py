"""SDR search on real MNIST SDRs: build, restore, memory, QPS and recall@10 per backend.

    .venv/bin/python scripts/bench_search.py [--config htmcore-mnist] [--queries 10000]
                                             [--million] [--peers]

Learns the SP (one epoch on the 60,000 training images), encodes the 10,000 test images as
queries, and measures each backend side by side in one run. Recall@10 counts ties: a
returned item is right when its overlap is >= the exact 10th-best overlap. QPS "single" is
one query per call on one thread; "batch" is one call for all queries. ``--million`` adds
the same at 1,000,000 items (the 60k SDRs plus noisy copies, 5% of active bits swapped).
``--peers`` adds faiss-cpu's IndexBinaryFlat and IndexBinaryHNSW when installed (with a
fixed number of active bits, Hamming order equals overlap order; with a varying number, as
here, it does not, and their recall shows that).
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
from sdrindex.presets import sp_from_config
from sdrindex.sdr import add_noise


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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="htmcore-mnist")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--million", action="store_true")
    ap.add_argument("--peers", action="store_true")
    args = ap.parse_args()

    train, _ = load_mnist("train")
    test, _ = load_mnist("test")
    sp = sp_from_config(args.config)
    t = time.perf_counter()
    sp.fit(binarize(train).reshape(len(train), -1))
    print(f"SP {args.config}: {sp.n_columns} columns, learned in {time.perf_counter() - t:.1f} s")
    db = sp.transform(binarize(train).reshape(len(train), -1), packed=True)
    queries = sp.transform(binarize(test[: args.queries]).reshape(-1, 784), packed=True)
    n_bits = sp.n_columns
    active = np.unpackbits(db, axis=1, count=n_bits).sum(axis=1)
    print(
        f"SDRs: {len(db)} stored, {len(queries)} queries, active bits mean {active.mean():.1f} "
        f"(min {active.min()}, max {active.max()})"
    )

    results: list = []
    exact = SDRIndex("exact").fit(db, n_bits)
    _, truth_ov = exact.query(queries, 10)
    bench_ours("MNIST 60k", "exact", db, n_bits, queries, truth_ov, results)
    bench_ours("MNIST 60k", "nndescent", db, n_bits, queries, truth_ov, results)
    if args.peers:
        bench_faiss("MNIST 60k", db, n_bits, queries, db, truth_ov, results)

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
        bench_ours("1M (MNIST + noisy copies)", "exact", big, n_bits, q_small, truth_big, results)
        bench_ours(
            "1M (MNIST + noisy copies)", "nndescent", big, n_bits, q_small, truth_big, results
        )
        if args.peers:
            bench_faiss("1M (MNIST + noisy copies)", big, n_bits, q_small, big, truth_big, results)

    print_table(results)
    by = {(r[0], r[1]): r for r in results}
    for name in sorted({r[0] for r in results}):
        e, nn = by.get((name, "exact")), by.get((name, "nndescent"))
        if e and nn:
            print(
                f"{name}: nndescent / exact QPS single {nn[6] / e[6]:.2f}x, batch "
                f"{nn[7] / e[7]:.2f}x"
            )


if __name__ == "__main__":
    main()
