"""Build time of the default bundle, stage by stage, and the decoders' quality.

    .venv/bin/python scripts/bench_build.py [--cold] [--limit N] [--test N] [--decoders SET]
        [--backend nndescent|exact] [--only-decoders]

Runs what ``sdrindex build --out DIR --decoder`` runs (MNIST training set, SP preset
``sdrindex-mnist``, :func:`sdrindex.pipeline.build_bundle`), without writing the bundle,
and prints each stage's wall seconds (the decoder stage split into its steps), the load
average before and after (the machine may be shared: quote figures with it), then the
Ridge decoder's pixel MSE and the logistic readout's accuracy on ``--test`` MNIST test
images encoded with the learned SP.

``--cold`` runs the benchmark in a child process whose numba cache is a fresh temporary
folder (NUMBA_CACHE_DIR), as on a fresh clone: every kernel compiles during the build.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def quality(bundle, n_test: int) -> dict[str, float]:
    """Ridge MSE on [0, 1] pixels and logistic accuracy on the first n_test test images."""
    from sdrindex.datasets import load_mnist

    images, labels = load_mnist("test")
    images, labels = images[:n_test], labels[:n_test]
    dense = np.unpackbits(bundle.encode(images), axis=1, count=bundle.sp.n_columns)
    dense = dense.astype(np.float32)
    dec, out = bundle.decoder, {}
    if "ridge_coef" in dec:
        pred = dense @ dec["ridge_coef"].T + dec["ridge_intercept"]
        target = images.reshape(len(images), -1).astype(np.float32) / 255.0
        out["ridge MSE"] = float(((pred - target) ** 2).mean())
    if "logistic_coef" in dec:
        scores = dense @ dec["logistic_coef"].T + dec["logistic_intercept"]
        pred = dec["logistic_classes"][scores.argmax(axis=1)]
        out["logistic accuracy"] = float((pred == labels).mean())
    return out


def run(args: argparse.Namespace) -> None:
    from sdrindex.datasets import load_mnist
    from sdrindex.decoders import train_decoders
    from sdrindex.pipeline import DECODER_SETS, BuildTimes, StageEvent, build_bundle
    from sdrindex.sp import learn_limit_for, preprocess_for, sp_from_config, threshold_for

    print(f"load average before: {load_avg()} ({os.cpu_count()} cores)")
    print(f"numba cache: {os.environ.get('NUMBA_CACHE_DIR', '(default: __pycache__)')}")
    details: dict[str, str] = {}

    def progress(event: StageEvent) -> None:
        if event.state == "start":
            details[event.stage] = event.detail
        else:
            detail = f"  ({details[event.stage]})" if details.get(event.stage) else ""
            print(f"  {event.stage:<48} {event.seconds:7.1f} s{detail}", flush=True)

    t = time.perf_counter()
    images, labels = load_mnist("train")
    images, labels = images[: args.limit], labels[: args.limit].astype(np.int64)
    times = BuildTimes({"load": time.perf_counter() - t})
    bundle = build_bundle(
        images,
        labels,
        sp=sp_from_config(None),
        threshold=threshold_for(None),
        preprocess=preprocess_for(None),
        learn_limit=learn_limit_for(None),
        backend="exact" if args.only_decoders else args.backend,
        decoders=None if args.only_decoders else args.decoders,
        progress=progress,
        times=times,
    )
    if args.only_decoders:  # the stage alone, after an untimed build without it
        t = time.perf_counter()
        log = lambda step, s: print(f"  decoders: {step:<38} {s:7.1f} s", flush=True)  # noqa: E731
        bundle.decoder = train_decoders(bundle, DECODER_SETS[args.decoders], log=log)
        times.seconds = {"decoders": time.perf_counter() - t}
    print(f"seconds: {times}")
    print(f"load average after: {load_avg()}")
    for name, value in quality(bundle, args.test).items():
        print(f"{name} on {args.test} test images: {value:.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cold", action="store_true", help="fresh temporary numba cache")
    ap.add_argument("--limit", type=int, default=60_000, help="training images (default all)")
    ap.add_argument("--test", type=int, default=10_000, help="test images for the quality")
    ap.add_argument("--decoders", default="default", choices=["default", "all"])
    ap.add_argument("--backend", default="nndescent", choices=["nndescent", "exact"])
    ap.add_argument(
        "--only-decoders",
        action="store_true",
        help="time the decoder stage alone (the build before it uses the exact index)",
    )
    args = ap.parse_args()
    if args.cold and "SDRINDEX_BENCH_CHILD" not in os.environ:
        with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, "SDRINDEX_BENCH_CHILD": "1"}
            sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
    run(args)


if __name__ == "__main__":
    main()
