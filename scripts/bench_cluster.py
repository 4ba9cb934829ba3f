"""1,000,000 SDRs in 4 shards on a two-node Ray cluster, beside one index in one process.

    # a two-node cluster on loopback only (private network + PID namespaces; see
    # tests/cluster_harness.py and ../shared/notes/ray.md), then the benchmark inside:
    nice -n 5 unshare -n -p -f --mount-proc bash -c '
      ip link set lo up
      ray start --head --port=6390 --node-ip-address=127.0.0.1 --num-cpus=1 \\
          --include-dashboard=false --disable-usage-stats
      ray start --address=127.0.0.1:6390 --node-ip-address=127.0.0.1 --num-cpus=1 \\
          --disable-usage-stats
      .venv/bin/python scripts/bench_cluster.py --address 127.0.0.1:6390 \\
          --cache /tmp/frontier_cache --bundle /work/bench/mnist --out /tmp/bench_cluster
      ray stop --force'

The data is ``scripts/bench_search.py --million``'s (its ``--cache`` directory is reused
when present, else made): the 60,000 MNIST training SDRs of the default preset plus noisy
copies (5 % of active bits swapped) up to 1,000,000, and the first ``--queries`` test
SDRs with their exact top-10 overlaps. Item ``g`` is training image ``g % 60000`` (its
SDR, or a noisy copy of it), so the shards hold images and labels like any bundle's.
``--bundle`` is a bundle built with the default preset (its ``sp.npz`` made those SDRs:
checked on the first rows); the shards share its SP.

Measured, in one run:

- **build**: the 4 shards' tables and nndescent graphs as Ray tasks (one CPU each, two
  nodes: two shards at a time), written as a sharded bundle; beside it one nndescent
  index over all 1,000,000 in this process (numba's threads on both cores);
- **search** (``RayShardSet``: one actor per shard, spread over the nodes; scatter to all
  four, merge) and the single index: queries per second one at a time and in one batch,
  p50/p99 latency of single queries, recall@10 against the exact top 10 (ties counted:
  a returned item is right when its overlap is >= the exact 10th best);
- **per shard**: items, the actor's resident memory, the shard's files on disk, one
  query's time inside a shard (in this process, the same files);
- **scatter-gather overhead**: a round of no-op calls to all four actors (Ray's own
  cost), and the sharded single-query latency minus the shards' own compute.

Then the 100M projection: from the measured per-shard figures, the shards, memory, build
time and query latency of 100,000,000 items on N machines (printed; quoted in the README).
These 2 cores cannot show a speed-up from more machines: the two "nodes" share them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import frontier  # noqa: E402 - scripts/frontier.py: the 1M set, recall with ties

K = 10
N_TRAIN = 60_000


# ----------------------------------------------------------------------------- data


def load_data(cache: Path, bundle: Path, n: int, n_queries: int):
    """(the n SDRs, n_bits, query SDRs, their exact top-10 overlaps), cached in ``cache``."""
    from sdrindex.bundle import Bundle

    b = Bundle.load(bundle, verify=False)
    db = frontier.cached_array(cache, "sdrindex-mnist-db", lambda: np.asarray(b.table.sdrs))
    if not np.array_equal(db[:500], np.asarray(b.table.sdrs[:500])):
        raise SystemExit(f"{bundle}'s SP did not make the SDRs in {cache}: use a matching bundle")
    n_bits = int(b.sp.n_columns)

    def queries_of_test_set() -> np.ndarray:
        from sdrindex.datasets import load_mnist

        test, _ = load_mnist("test")
        return b.encode(test)

    queries = frontier.cached_array(cache, "sdrindex-mnist-queries", queries_of_test_set)
    queries = np.ascontiguousarray(queries[:n_queries])
    name = "sdrindex-mnist-1M" if n == 1_000_000 else f"sdrindex-mnist-{n}"
    big = frontier.cached_array(cache, name, lambda: frontier.million(db, n_bits, n))
    truth = frontier.cached_array(
        cache,
        f"{name}-truth-{n_queries}",
        lambda: frontier.exact_overlaps(big, n_bits, queries),
    )
    return big, n_bits, queries, truth


# ----------------------------------------------------------------------------- the build


def shard_job(job: dict) -> dict:
    """One shard of the bench bundle (a Ray task): rows g % n == s, their graph, saved."""
    from sdrindex.bundle import Bundle
    from sdrindex.cluster.layout import RULE, shard_dir
    from sdrindex.datasets import load_mnist
    from sdrindex.index import SDRIndex, collection_search
    from sdrindex.sp import SpatialPooler
    from sdrindex.table import TrainingTable

    t0 = time.perf_counter()
    s, n_shards, n = job["shard"], job["n_shards"], job["n"]
    big = np.load(job["sdrs"], mmap_mode="r")
    ids = np.arange(s, n, n_shards, dtype=np.int64)
    sdrs = np.ascontiguousarray(big[ids])
    train, labels = load_mnist("train")
    images = np.ascontiguousarray(train[ids % N_TRAIN])
    sp = SpatialPooler.load(job["sp_file"])
    t_read = time.perf_counter() - t0
    # as sdrindex build --shards: each shard searches as wide as one graph over all n would
    index = SDRIndex("nndescent", **collection_search(n, sdrs)).fit(sdrs, sp.n_columns)
    t_index = time.perf_counter() - t0 - t_read
    table = TrainingTable(images, sdrs, sp.n_columns, labels=labels[ids % N_TRAIN].astype(np.int64))
    stamp = {"build": job["build"], "shard": s, "n_shards": n_shards, "rule": RULE}
    bundle = Bundle(
        sp=sp,
        table=table,
        index=index,
        encoder={"threshold": job["threshold"], "rule": "pixel >= threshold"},
        dataset={"source": "bench_cluster", "n_items": len(ids), "labels": True, "sharding": stamp},
        sp_file=Path(job["sp_file"]),
    )
    sdir = shard_dir(job["root"], s)
    bundle.save(sdir, switch=False, version=job["build"], created=job["created"])
    return {
        "shard": s,
        "version": str(sdir / job["build"]),
        "n_items": len(ids),
        "read_s": t_read,
        "index_s": t_index,
        "seconds": time.perf_counter() - t0,
        "node": os.uname().nodename,
        "pid": os.getpid(),
    }


def build_sharded_bench(args, sdrs_file: Path, n: int, bundle) -> tuple[Path, float, list[dict]]:
    """The sharded bench bundle, built as Ray tasks; (path, wall seconds, per-shard results)."""
    from sdrindex.bundle import new_version_name
    from sdrindex.cluster.layout import save_sharded
    from sdrindex.cluster.ray_build import ray_runner

    root = Path(args.out) / "sharded"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    build = new_version_name()
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    sp_file = Path(bundle.path) / "sp.npz"
    jobs = [
        {
            "root": str(root),
            "shard": s,
            "n_shards": args.shards,
            "n": n,
            "sdrs": str(sdrs_file),
            "sp_file": str(sp_file),
            "threshold": bundle.encoder.get("threshold", 128),
            "build": build,
            "created": created,
        }
        for s in range(args.shards)
    ]
    t = time.perf_counter()
    results = ray_runner(args.address)(shard_job, jobs, None)
    meta = {
        "build": build,
        "sp_params": bundle.sp.nupic_params(),
        "n_columns": int(bundle.sp.n_columns),
        "encoder": dict(bundle.encoder),
        "dataset": {"n_items": n, "labels": True, "source": "bench_cluster"},
        "index": {"backend": "nndescent"},
        "has_labels": True,
        "image_shape": [28, 28],
    }
    versions = [Path(r["version"]) for r in sorted(results, key=lambda r: r["shard"])]
    save_sharded(root, sp_file=sp_file, shard_versions=versions, meta=meta, name=build)
    return root, time.perf_counter() - t, results


# ----------------------------------------------------------------------------- search


def time_search(query, queries: np.ndarray, n_single: int) -> dict:
    """QPS one at a time and batched, p50/p99 latency, and the answers of the batch."""
    lat = []
    for i in range(n_single):
        t = time.perf_counter()
        query(queries[i : i + 1])
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    ids, ov = query(queries)
    batch_s = time.perf_counter() - t
    return {
        "qps_single": n_single / sum(lat),
        "qps_batch": len(queries) / batch_s,
        "p50_ms": 1000 * float(np.percentile(lat, 50)),
        "p99_ms": 1000 * float(np.percentile(lat, 99)),
        "ids": ids,
        "overlaps": ov,
    }


def bench_single(big: np.ndarray, n_bits: int, queries: np.ndarray, n_single: int):
    """One nndescent index over every item in this process: (build seconds, search figures)."""
    from sdrindex.index import SDRIndex

    t = time.perf_counter()
    single = SDRIndex("nndescent").fit(big, n_bits)
    build_s = time.perf_counter() - t
    single.query(queries[:2], K)  # warm
    return build_s, time_search(lambda q: single.query(q, K), queries, n_single)


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def shard_compute_ms(root: Path, queries: np.ndarray, n_single: int) -> list[list[float]]:
    """Each shard's own time for single queries, in this process (ms, per shard per query)."""
    from sdrindex.cluster.shardset import LocalShardSet

    local = LocalShardSet.open(root, verify=False)
    out = []
    for s in range(local.n_shards):
        shard = local.shard(s)
        shard.query(queries[:1], K, {})  # warm
        times = []
        for i in range(n_single):
            t = time.perf_counter()
            shard.query(queries[i : i + 1], K, {})
            times.append(1000 * (time.perf_counter() - t))
        out.append(times)
    local.close()
    return out


# ----------------------------------------------------------------------------- report


def project(per_shard: dict, target: int = 100_000_000) -> list[dict]:
    """100M items on N machines (16 cores, 64 GB each), from the measured per-shard figures.

    Shards keep the measured size (``items``): shards = target / items, one actor each. A
    machine holds shards / N of them; its memory is their measured resident memory; the
    build runs one shard per core at the measured per-shard time; a query runs the shards
    of a machine on its cores (shards / N / cores rounds of the measured per-shard compute,
    the machines in parallel) after the front end has sent one call per shard (the measured
    Ray cost per shard of a scatter, paid by the front end in turn: it bounds one front
    end's query rate, whatever the number of machines).
    """
    shards = int(np.ceil(target / per_shard["items"]))
    fanout_ms = shards * per_shard["call_ms"]
    rows = []
    for machines in (4, 8, 16, 32):
        cores, ram_gb = 16, 64
        per_machine = int(np.ceil(shards / machines))
        rounds = int(np.ceil(per_machine / cores))
        mem_gb = per_machine * per_shard["rss_mb"] / 1024
        rows.append(
            {
                "machines": machines,
                "shards": shards,
                "shards_per_machine": per_machine,
                "memory_gb_per_machine": mem_gb,
                "fits_64gb": mem_gb <= ram_gb * 0.8,
                "build_min": rounds * per_shard["build_s"] / 60,
                "compute_ms": rounds * per_shard["query_ms"],
                "fanout_ms": fanout_ms,
                "query_ms": rounds * per_shard["query_ms"] + fanout_ms,
                "front_end_qps": 1000.0 / fanout_ms,
            }
        )
    return rows


def report(
    args, big, queries, truth, builds, res_single, res_sharded, results, status, compute, pings
) -> dict:
    """Print the tables and the 100M projection; the figures as a JSON-ready dict."""
    single_build_s, sharded_build_s = builds
    n = len(big)

    def recall(res: dict) -> float:
        got = frontier.overlaps_of(big, queries, res["ids"])
        return frontier.recall_at_10(truth, got)

    rows = [("single process", res_single), (f"{args.shards} shards on Ray", res_sharded)]
    print()
    print("| index | build (s) | QPS single | QPS batch | p50 ms | p99 ms | recall@10 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (name, r), b in zip(rows, (single_build_s, sharded_build_s), strict=True):
        print(
            f"| {name} | {b:.1f} | {r['qps_single']:.0f} | {r['qps_batch']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {recall(r):.4f} |"
        )
    print()
    print("| shard | items | node | actor RSS MB | files MB | one query in the shard, p50 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for st, c in zip(status, compute, strict=True):
        files = dir_mb(Path(results[0]["version"]).parent.parent / f"shard-{st['shard']:05d}")
        print(
            f"| {st['shard']} | {st['n_items']:,} | {st['node_id'][:8]} | {st['rss_mb']:.0f} | "
            f"{files:.0f} | {statistics.median(c):.2f} |"
        )
    per_query_sum = [sum(c[i] for c in compute) for i in range(args.single)]
    per_query_max = [max(c[i] for c in compute) for i in range(args.single)]
    ping_p50 = 1000 * pings[len(pings) // 2]
    overhead = res_sharded["p50_ms"] - statistics.median(per_query_sum) / 2
    print()
    print(
        f"scatter-gather: a no-op round to all {args.shards} actors p50 {ping_p50:.2f} ms; "
        f"the shards' own compute per query p50: sum {statistics.median(per_query_sum):.2f} ms, "
        f"max {statistics.median(per_query_max):.2f} ms; sharded p50 {res_sharded['p50_ms']:.2f} "
        f"ms, i.e. {overhead:.2f} ms over the shards' compute spread on the 2 cores"
    )
    per_shard = {
        "items": n // args.shards,
        "rss_mb": statistics.mean(st["rss_mb"] for st in status),
        "build_s": statistics.mean(r["seconds"] for r in results),
        "query_ms": statistics.median(per_query_max),
        "call_ms": ping_p50 / args.shards,
    }
    print()
    print(
        "100M projection (shards of the measured size; machines of 16 cores and 64 GB; "
        f"per shard: {per_shard['items']:,} items, {per_shard['rss_mb']:.0f} MB resident, "
        f"built in {per_shard['build_s']:.0f} s on one core, {per_shard['query_ms']:.2f} ms a "
        f"query, {per_shard['call_ms']:.2f} ms of Ray per shard per query):"
    )
    print(
        "| machines | shards | shards / machine | memory GB / machine | build (min) | "
        "query: compute + fan-out (ms) | queries/s of one front end |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    proj = project(per_shard)
    for p in proj:
        print(
            f"| {p['machines']} | {p['shards']} | {p['shards_per_machine']} | "
            f"{p['memory_gb_per_machine']:.0f}{'' if p['fits_64gb'] else ' (over 80 %)'} | "
            f"{p['build_min']:.1f} | {p['compute_ms']:.1f} + {p['fanout_ms']:.0f} | "
            f"{p['front_end_qps']:.0f} |"
        )
    return {
        "n": n,
        "shards": args.shards,
        "builds": {"single_s": single_build_s, "sharded_s": sharded_build_s},
        "search": {
            name: {k: v for k, v in r.items() if k not in ("ids", "overlaps")}
            | {"recall": recall(r)}
            for name, r in rows
        },
        "shard_status": status,
        "ping_p50_ms": ping_p50,
        "per_shard": per_shard,
        "projection": proj,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--address", required=True, help="the Ray cluster's head, HOST:PORT")
    ap.add_argument("--cache", default="/tmp/frontier_cache", help="bench_search.py's cache")
    ap.add_argument("--bundle", default="/work/bench/mnist", help="a default-preset bundle")
    ap.add_argument("--out", default="/tmp/bench_cluster", help="scratch (the shards); not git")
    ap.add_argument("--n", type=int, default=1_000_000, help="items (default 1,000,000)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--queries", type=int, default=1000, help="queries (exact truth cached)")
    ap.add_argument("--single", type=int, default=300, help="single queries timed")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    from sdrindex.bundle import Bundle
    from sdrindex.cluster.ray_connect import connect
    from sdrindex.cluster.ray_search import RayShardSet

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    bundle = Bundle.load(args.bundle, verify=False)
    t = time.perf_counter()
    big, n_bits, queries, truth = load_data(cache, Path(args.bundle), args.n, args.queries)
    n = len(big)
    sdrs_file = cache / ("sdrindex-mnist-1M.npy" if n == 1_000_000 else f"sdrindex-mnist-{n}.npy")
    took = time.perf_counter() - t
    print(f"data: {n:,} SDRs of {n_bits} bits, {len(queries)} queries ({took:.1f} s)")
    ray = connect(args.address)
    nodes = [x for x in ray.nodes() if x["Alive"]]
    print(
        f"cluster: {len(nodes)} nodes, {sum(x['Resources'].get('CPU', 0) for x in nodes):.0f} CPUs"
    )

    # ---- build: sharded on the cluster, then one index here
    root, sharded_build_s, results = build_sharded_bench(args, sdrs_file, n, bundle)
    print(f"sharded build ({args.shards} shards, Ray tasks): {sharded_build_s:.1f} s wall")
    for r in sorted(results, key=lambda r: r["shard"]):
        print(
            f"  shard {r['shard']}: {r['n_items']:,} items, read {r['read_s']:.1f} s, "
            f"graph {r['index_s']:.1f} s, all {r['seconds']:.1f} s (pid {r['pid']})"
        )
    single_build_s, res_single = bench_single(big, n_bits, queries, args.single)
    print(f"single-process build (1 index, numba threads on both cores): {single_build_s:.1f} s")

    # ---- search
    rs = RayShardSet.connect(args.address, root, replicas=1, timeout_s=120.0)
    res_sharded = time_search(lambda q: rs.query(q, K, {}), queries, args.single)
    pings = sorted(rs.ping() for _ in range(200))
    status = rs.status()
    compute = shard_compute_ms(root, queries, args.single)

    figures = report(
        args,
        big,
        queries,
        truth,
        (single_build_s, sharded_build_s),
        res_single,
        res_sharded,
        results,
        status,
        compute,
        pings,
    )
    rs.close()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
