"""Spatial Pooler speed on MNIST: learning, batch-inference and one-step images/s.

    .venv/bin/python scripts/bench_sp.py [--learn N] [--infer N] [--compute N] [--repeats R]

Configs (see sdrindex/sp/presets.py): (a) forum-global, (b) htmcore-mnist, (c) forum-local.
Learning (``partial_fit``) is timed on N training images after a 200-image warm-up (numba
compiled and cached beforehand); inference (``transform``) on N images with the learned
SP; ``compute`` (NuPIC's one-step call, one Python call per image, the loop users write)
on N images with ``learn=True`` and then ``learn=False``. Each figure is the median of R
repeats; all configs are measured in the same run. Targets (2 cores) are printed beside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from sdrindex.datasets import binarize, load_mnist
from sdrindex.sp import PRESETS, SpatialPooler

TARGETS = {  # (learning, inference, compute(learn=True)) images/s
    "forum-global": (10_000, 20_000, 10_000),
    "htmcore-mnist": (4_000, 30_000, None),
    "forum-local": (1_000, None, None),
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--learn", type=int, default=10_000, help="images per learning run")
    ap.add_argument("--infer", type=int, default=20_000, help="images per inference run")
    ap.add_argument("--compute", type=int, default=2_000, help="images per compute() run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    images, _ = load_mnist("train")
    X = binarize(images, 128)
    print(
        f"cores: {os.cpu_count()}, learn N={args.learn}, infer N={args.infer}, "
        f"compute N={args.compute}, repeats={args.repeats}"
    )
    header = (
        "config",
        "columns",
        "learn img/s",
        "target",
        "infer img/s",
        "target",
        "compute learn",
        "target",
        "compute infer",
        "sparsity",
    )
    widths = (15, 8, 13, 8, 13, 8, 15, 8, 15, 10)
    print(
        "".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for name, (t_learn, t_infer, t_compute) in TARGETS.items():
        learn_rates, infer_rates, compute_rates, compute_infer_rates = [], [], [], []
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
            compute_rates.append(_compute_rate(sp, X[-args.compute :], learn=True))
            compute_infer_rates.append(_compute_rate(sp, X[: args.compute], learn=False))
        sparsity = np.unpackbits(sdrs[:1000], axis=1, count=sp.n_columns).mean()
        print(
            f"{name:<15}{sp.n_columns:>8}{statistics.median(learn_rates):>13,.0f}{t_learn:>8,}"
            f"{statistics.median(infer_rates):>13,.0f}{(t_infer or 0):>8,}"
            f"{statistics.median(compute_rates):>15,.0f}{(t_compute or 0):>8,}"
            f"{statistics.median(compute_infer_rates):>15,.0f}{sparsity:>10.4f}"
        )


def _compute_rate(sp: SpatialPooler, X: np.ndarray, learn: bool) -> float:
    """Images/s of one ``sp.compute(x, learn)`` Python call per row (after one warm-up)."""
    sp.compute(X[0], learn=learn)
    t = time.perf_counter()
    for x in X:
        sp.compute(x, learn=learn)
    return len(X) / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
