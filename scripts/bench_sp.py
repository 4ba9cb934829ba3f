"""Spatial Pooler speed on MNIST: learning and batch-inference images/s for three configs.

    .venv/bin/python scripts/bench_sp.py [--learn N] [--infer N] [--repeats R]

Configs (see sdrindex/presets.py): (a) forum-global, (b) htmcore-mnist, (c) forum-local.
Learning is timed on N training images after a 200-image warm-up (numba compiled and
cached beforehand); inference on N images with the learned SP. Each figure is the median
of R repeats; all configs are measured in the same run. Targets (2 cores) are printed beside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from sdrindex.datasets import binarize, load_mnist
from sdrindex.sp import PRESETS
from sdrindex.sp import SpatialPooler

TARGETS = {  # (learning, inference) images/s
    "forum-global": (10_000, 20_000),
    "htmcore-mnist": (4_000, 30_000),
    "forum-local": (1_000, None),
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--learn", type=int, default=10_000, help="images per learning run")
    ap.add_argument("--infer", type=int, default=20_000, help="images per inference run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    images, _ = load_mnist("train")
    X = binarize(images, 128)
    print(
        f"cores: {os.cpu_count()}, learn N={args.learn}, infer N={args.infer}, "
        f"repeats={args.repeats}"
    )
    header = ("config", "columns", "learn img/s", "target", "infer img/s", "target", "sparsity")
    widths = (15, 8, 13, 8, 13, 8, 10)
    print(
        "".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for name, (t_learn, t_infer) in TARGETS.items():
        learn_rates, infer_rates = [], []
        sp = None
        for _ in range(args.repeats):
            sp = SpatialPooler.from_nupic_params(dict(PRESETS[name]))
            sp.partial_fit(X[:200])
            t = time.perf_counter()
            sp.partial_fit(X[200 : 200 + args.learn])
            learn_rates.append(args.learn / (time.perf_counter() - t))
            sp.transform(X[:500])
            t = time.perf_counter()
            sdrs = sp.transform(X[: args.infer], packed=True)
            infer_rates.append(args.infer / (time.perf_counter() - t))
        sparsity = np.unpackbits(sdrs[:1000], axis=1, count=sp.n_columns).mean()
        print(
            f"{name:<15}{sp.n_columns:>8}{statistics.median(learn_rates):>13,.0f}{t_learn:>8,}"
            f"{statistics.median(infer_rates):>13,.0f}{(t_infer or 0):>8,}{sparsity:>10.4f}"
        )


if __name__ == "__main__":
    main()
