"""The dyadic backend beside exact and nndescent: capacity, noise, storage, memory, speed.

    nice -n 5 .venv/bin/python scripts/bench_dyadic.py [--sets forum-global,forum-local,
        sdrindex-mnist] [--n 60000] [--queries 500] [--learn 10000] [--bundle /work/bench/mnist]
        [--cache DIR] [--plot docs/dyadic_capacity.png] [--no-synthetic]

Data sets. Real SDRs: ``forum-global`` (1,369 bits, 8 active) and ``forum-local`` (900 bits,
~37 active) from those SP presets learned on the first ``--learn`` MNIST training images,
then encoding the 60,000 training images (stored) and the test images (queries);
``sdrindex-mnist`` (6,241 bits, 624 active) from the bundle's table (``--bundle``; queries:
the test images encoded by its SP). Synthetic SDRs of the same shapes (``syn-...``): uniform
random SDRs with the real set's mean number of active bits.

Tables, each set with the three backends in the same run (``exact`` is the truth):

1. **backends** at ``--n`` stored items, queries = held-out SDRs (real sets: the test
   images; synthetic: stored items with 10 % of their active bits swapped): build seconds,
   memory (the bytes of the index's arrays), QPS one query per call on one thread (first
   300 queries) and batched, recall@1 and recall@10 (ties counted: a returned item is right
   when its overlap reaches the exact k-th best overlap).
2. **capacity**: recall@1 / @10 as the stored items grow (1k .. ``--n``), queries = stored
   items with 10 % swapped bits (the associative memory's use: a noisy cue of something
   stored); ``own@1``: the cued item itself comes first.
3. **noise**: at ``--n`` items, queries = stored items with 0-50 % swapped bits
   (``sdr.add_noise``); recall@1, @10 and own@1 per backend.
4. **storage**: the dense counter array (n_bits (n_bits-1)/2 x n_y one-byte counters, as
   Overmann's C code) against the sparse pair memory with all active bits (measured on a
   few items; bytes per item) and with ``max_bits`` of them (8, 16, 32 at 10k items:
   bytes per item, build, QPS of all queries in one call on one thread, recall@10 on the
   held-out queries).

The figure (``--plot``): recall@1 and @10 against stored items (capacity) and against the
swapped fraction (noise), dyadic beside nndescent. ``--json`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sdrindex import sdr
from sdrindex.bundle import Bundle
from sdrindex.datasets import binarize, load_mnist
from sdrindex.index import SDRIndex
from sdrindex.index.dyadic import DyadicBackend, DyadicConfig
from sdrindex.sp import sp_from_config, threshold_for

BACKENDS = ("exact", "nndescent", "dyadic")
NOISE = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
K = 10


# --------------------------------------------------------------------------- data


def cached(cache: Path | None, name: str, make: Any) -> np.ndarray:
    """``make()``, kept as cache/name.npy for the next run when a cache is given."""
    if cache is None:
        return make()
    path = cache / f"{name}.npy"
    if path.exists():
        return np.load(path)
    arr = make()
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


def preset_sdrs(name: str, n_learn: int, n_queries: int, cache: Path | None):
    """(stored 60k SDRs, query SDRs of test images, n_bits) of an SP preset learned here."""
    made: dict[str, np.ndarray] = {}

    def learn() -> None:
        if made:
            return
        train, _ = load_mnist("train")
        test, _ = load_mnist("test")
        sp = sp_from_config(name)
        thr = threshold_for(name)
        x = binarize(train, thr).reshape(len(train), -1)
        t = time.perf_counter()
        sp.fit(x[:n_learn])
        print(f"  SP {name}: learned {n_learn} images in {time.perf_counter() - t:.1f} s")
        made["db"] = sp.transform(x, packed=True)
        made["q"] = sp.transform(binarize(test[:n_queries], thr).reshape(-1, 784), packed=True)
        made["n_bits"] = np.array([sp.n_columns])

    def get(key: str):
        return lambda: (learn(), made[key])[1]

    tag = f"{name}-{n_learn}"
    db = cached(cache, f"{tag}-db", get("db"))
    q = cached(cache, f"{tag}-q{n_queries}", get("q"))
    n_bits = int(cached(cache, f"{tag}-nbits", get("n_bits"))[0])
    return db, q, n_bits


def bundle_sdrs(path: Path, n_queries: int):
    """The bundle table's SDRs and the test images encoded by its SP."""
    bundle = Bundle.load(path)
    test, _ = load_mnist("test")
    return (
        np.ascontiguousarray(bundle.table.sdrs),
        bundle.encode(test[:n_queries]),
        int(bundle.sp.n_columns),
    )


def synthetic(db: np.ndarray, n_bits: int, n_queries: int, seed: int):
    """Uniform random SDRs shaped like db; queries = stored ones with 10 % swapped bits."""
    n_active = int(round(sdr.active_counts(db, n_bits).mean()))
    data = sdr.random_sdrs(db.shape[0], n_bits, n_active, seed=seed)
    rng = np.random.default_rng(seed + 1)
    cue = rng.choice(db.shape[0], n_queries, replace=False)
    return data, sdr.add_noise(data[cue], n_bits, 0.1, mode="swap", seed=seed + 2)


# --------------------------------------------------------------------------- measures


def recall(ov: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Recall@k with ties counted (the -1 padding never counts)."""
    got = ov[:, :k]
    return float(np.mean((got >= truth[:, k - 1 : k]) & (got >= 0)))


def index_bytes(index: SDRIndex) -> int:
    return sum(a.nbytes for a in index._arrays().values())


def run_backend(backend: str, db, n_bits, queries, truth) -> tuple[SDRIndex, dict[str, float]]:
    """(the index, its build s, memory, QPS single / batched, recall@1 and @10)."""
    t = time.perf_counter()
    index = SDRIndex(backend).fit(db, n_bits)
    build = time.perf_counter() - t
    index.query(queries[:2], K)
    index.query(queries[:1], K)
    n1 = min(300, len(queries))
    t = time.perf_counter()
    for i in range(n1):
        index.query(queries[i : i + 1], K)
    single = n1 / (time.perf_counter() - t)
    t = time.perf_counter()
    _, ov = index.query(queries, K)
    batch = len(queries) / (time.perf_counter() - t)
    return index, {
        "build_s": build,
        "mb": index_bytes(index) / 2**20,
        "qps1": single,
        "qpsb": batch,
        "r1": recall(ov, truth, 1),
        "r10": recall(ov, truth, K),
    }


def cued(db, n_bits, n, n_queries, fraction, seed):
    """(cue ids, queries): stored items among the first n with ``fraction`` swapped bits."""
    cue = np.random.default_rng(seed).choice(n, min(n_queries, n), replace=False)
    return cue, sdr.add_noise(db[cue], n_bits, fraction, mode="swap", seed=seed + 1)


def recall_row(indexes, db, n_bits, n, queries, cue) -> dict[str, tuple[float, float, float]]:
    """backend -> (recall@1, recall@10, own@1) of queries cued from stored items."""
    _, truth = indexes["exact"].query(queries, K)
    out = {}
    for b, index in indexes.items():
        ids, ov = index.query(queries, K)
        out[b] = (recall(ov, truth, 1), recall(ov, truth, K), float(np.mean(ids[:, 0] == cue)))
    return out


def capacity(db, n_bits, sizes, n_queries, seed, full):
    """Rows per stored count; ``full``: the indexes of all of db (reused for the last)."""
    rows = {}
    for n in sizes:
        cue, queries = cued(db, n_bits, n, n_queries, 0.1, seed)
        if n == db.shape[0]:
            indexes = full
        else:
            indexes = {b: SDRIndex(b).fit(db[:n], n_bits) for b in BACKENDS}
        rows[n] = recall_row(indexes, db, n_bits, n, queries, cue)
    return rows


def noise(db, n_bits, n_queries, seed, indexes):
    rows = {}
    for f in NOISE:
        cue, queries = cued(db, n_bits, db.shape[0], n_queries, f, seed)
        rows[f] = recall_row(indexes, db, n_bits, db.shape[0], queries, cue)
    return rows


def storage(db, n_bits, queries, truth, n_few: int) -> list[tuple]:
    """(what, bytes per item, build s, QPS, recall@10) rows; truth = exact over db[:10k]."""
    n_y = DyadicConfig().n_y
    active = sdr.active_counts(db, n_bits)
    dense = n_bits * (n_bits - 1) // 2 * n_y
    rows: list[tuple] = [("dense counters (1 byte each)", dense, None, None, None)]
    full = int(active.max())
    t = time.perf_counter()
    state = DyadicBackend.with_config(db[:n_few], n_bits, DyadicConfig(max_bits=full))
    rows.append(
        (f"sparse, all {full} bits, {n_few} items (pair memory alone)", state.memory.nbytes / n_few,
         time.perf_counter() - t, None, None)
    )  # fmt: skip
    n = min(10_000, db.shape[0])
    for s in (8, 16, 32):
        t = time.perf_counter()
        state = DyadicBackend.with_config(db[:n], n_bits, DyadicConfig(max_bits=s))
        build = time.perf_counter() - t
        state.query(queries[:2], K, {}, 1)
        t = time.perf_counter()
        _, ov = state.query(queries, K, {}, 1)
        qps = len(queries) / (time.perf_counter() - t)
        rows.append((f"sparse, max_bits {s}, {n} items (whole index)", state.nbytes / n, build, qps,
                     recall(ov, truth, K)))  # fmt: skip
    return rows


# --------------------------------------------------------------------------- output


def print_backends(name: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n### {name}: backends\n")
    print("| backend | build s | memory MB | QPS single | QPS batched | recall@1 | recall@10 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b, r in rows.items():
        print(f"| {b} | {r['build_s']:.2f} | {r['mb']:.1f} | {r['qps1']:,.0f} | "
              f"{r['qpsb']:,.0f} | {r['r1']:.3f} | {r['r10']:.3f} |")  # fmt: skip


def print_curve(name: str, what: str, rows: dict) -> None:
    print(f"\n### {name}: {what} (recall@1 / recall@10 / own@1)\n")
    print(f"| {what} | " + " | ".join(BACKENDS) + " |")
    print("| ---: |" + " --- |" * len(BACKENDS))
    for x, per in rows.items():
        cells = " | ".join("{:.3f} / {:.3f} / {:.3f}".format(*per[b]) for b in BACKENDS)
        print(f"| {x} | {cells} |")


def print_storage(name: str, rows: list[tuple]) -> None:
    print(f"\n### {name}: dyadic storage\n")
    print("| storage | bytes per item | build s | QPS (1 thread, 1 call) | recall@10 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for what, per_item, build, qps, r10 in rows:
        fmt = (
            f"{per_item:,.0f}" if "dense" not in what else f"{per_item / 1e9:,.1f} GB in all",
            "-" if build is None else f"{build:.2f}",
            "-" if qps is None else f"{qps:,.0f}",
            "-" if r10 is None else f"{r10:.3f}",
        )
        print(f"| {what} | " + " | ".join(fmt) + " |")


def plot(results: dict, path: Path) -> None:
    """Recall@1 and @10 (ties counted) against stored items (10 % swapped cues) and against
    the swapped fraction (all items stored): dyadic solid, nndescent dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, (name, res) in zip(colors, results.items(), strict=False):
        for b, style in (("dyadic", "-o"), ("nndescent", ":x")):
            for col, (curve, ax_row) in enumerate(((res["capacity"], 0), (res["noise"], 1))):
                xs = list(curve)
                for r in (0, 1):
                    ax = axes[ax_row, r]
                    ax.plot(xs, [curve[x][b][r] for x in xs], style, c=c,
                            label=f"{name} {b}" if col == 0 and r == 0 else None)  # fmt: skip
    for r, k in enumerate((1, 10)):
        axes[0, r].set(xscale="log", xlabel="stored items", ylabel=f"recall@{k} (ties counted)",
                       title=f"capacity: recall@{k}, cues 10 % swapped")  # fmt: skip
        axes[1, r].set(xlabel="fraction of active bits swapped", ylabel=f"recall@{k}",
                       title=f"noise: recall@{k}, all 60,000 items stored")  # fmt: skip
    for ax in axes.ravel():
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("dyadic memory (solid) against nndescent (dotted); exact = 1 everywhere")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"\nwrote {path}")


# --------------------------------------------------------------------------- main


def one_set(name, db, queries, n_bits, args, results) -> None:
    t0 = time.perf_counter()
    n_active = sdr.active_counts(db, n_bits).mean()
    print(f"\n## {name}: {db.shape[0]} stored, {n_bits} bits, {n_active:.1f} active on average")
    _, truth = SDRIndex("exact").fit(db, n_bits).query(queries, K)
    runs = {b: run_backend(b, db, n_bits, queries, truth) for b in BACKENDS}
    print_backends(name, {b: r[1] for b, r in runs.items()})
    full = {b: r[0] for b, r in runs.items()}
    sizes = [n for n in (1000, 3000, 10_000, 30_000) if n < db.shape[0]] + [db.shape[0]]
    cap = capacity(db, n_bits, sizes, args.queries, 1, full)
    print_curve(name, "stored items", cap)
    noi = noise(db, n_bits, args.queries, 2, full)
    print_curve(name, "swapped fraction", noi)
    n10 = min(10_000, db.shape[0])
    _, truth10 = SDRIndex("exact").fit(db[:n10], n_bits).query(queries, K)
    few = 20 if n_active > 200 else 2000  # 624 active bits: 194,376 pairs per item
    print_storage(name, storage(db, n_bits, queries, truth10, few))
    results[name] = {"capacity": cap, "noise": noi}
    print(f"\n({name}: {time.perf_counter() - t0:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="forum-global,forum-local,sdrindex-mnist")
    ap.add_argument("--n", type=int, default=60_000, help="stored items (at most 60,000)")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--learn", type=int, default=10_000, help="images the presets learn on")
    ap.add_argument("--bundle", type=Path, default=Path("/work/bench/mnist"))
    ap.add_argument("--cache", type=Path, default=None, help="keep the SDRs here (not in git)")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the capacity/noise numbers")
    ap.add_argument("--no-synthetic", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    # compile (or load from numba's cache) every backend's kernels apart from the timings
    warm = sdr.random_sdrs(3000, 256, 10, seed=0)
    for b in BACKENDS:
        SDRIndex(b).fit(warm, 256).query(warm[:3], K)
        SDRIndex(b).fit(warm, 256).query(warm[:1], K)
    print(f"warm-up (compile or load the kernels): {time.perf_counter() - t0:.1f} s")
    results: dict = {}
    for i, name in enumerate(s.strip() for s in args.sets.split(",")):
        if name == "sdrindex-mnist":
            db, queries, n_bits = bundle_sdrs(args.bundle, args.queries)
        else:
            db, queries, n_bits = preset_sdrs(name, args.learn, args.queries, args.cache)
        db = np.ascontiguousarray(db[: args.n])
        one_set(name, db, queries, n_bits, args, results)
        if not args.no_synthetic:
            syn, syn_q = synthetic(db, n_bits, args.queries, seed=10 + i)
            one_set(f"syn-{name}", syn, syn_q, n_bits, args, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
