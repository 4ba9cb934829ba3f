"""The ``sdrindex`` command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from sdrindex.errors import SDRIndexError


def _threshold(value: str):
    return value if value == "mean" else int(value)


def cmd_fetch_mnist(args: argparse.Namespace) -> int:
    from sdrindex.datasets import fetch_mnist

    paths = fetch_mnist(args.dir, mirrors=args.mirror or None, timeout=args.timeout)
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    print(f"MNIST verified in {args.dir}; point SDRINDEX_MNIST_DIR there to use it.")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from sdrindex.datasets import binarize, load_mnist
    from sdrindex.plots import comparison_figure
    from sdrindex.presets import sp_from_config
    from sdrindex.sp import SpatialPooler

    t0 = time.perf_counter()
    if args.load_sp:
        sp = SpatialPooler.load(args.load_sp)
        print(f"loaded SP from {args.load_sp}", file=sys.stderr)
    else:
        sp = sp_from_config(args.config)
        images, _ = load_mnist("train", data_dir=args.data_dir)
        if args.limit:
            images = images[: args.limit]
        X = binarize(images, args.threshold)
        print(
            f"learning the SP on {len(X)} MNIST training images x {args.epochs} epoch(s) "
            f"({sp.n_columns} columns)...",
            file=sys.stderr,
        )
        t1 = time.perf_counter()
        sp.fit(X, epochs=args.epochs)
        print(f"  learned in {time.perf_counter() - t1:.1f} s", file=sys.stderr)
        if args.save_sp:
            sp.save(args.save_sp)
            print(f"  SP saved to {args.save_sp}", file=sys.stderr)
    test_images, test_labels = load_mnist("test", data_dir=args.data_dir)
    pick = np.arange(args.n)
    imgs = test_images[pick]
    sdrs = sp.transform(binarize(imgs, args.threshold))
    rows = {
        "back-projection\n(connected)": sp.inverse_transform(sdrs).reshape(imgs.shape),
        "back-projection\n(permanence)": sp.inverse_transform(sdrs, weighted=True).reshape(
            imgs.shape
        ),
    }
    out = comparison_figure(
        imgs,
        sdrs,
        rows,
        tuple(sp.column_dimensions),
        args.out,
        labels=test_labels[pick],
        title=f"MNIST test digits through the Spatial Pooler ({sp.n_columns} columns)",
    )
    sparsity = sdrs.mean()
    print(f"wrote {out} (SDR sparsity {sparsity:.4f}; {time.perf_counter() - t0:.1f} s in all)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdrindex",
        description="Spatial Pooler SDRs of images: learn, index, search, reconstruct.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch-mnist", help="download MNIST from mirrors and verify it")
    f.add_argument("--dir", required=True, type=Path, help="folder to write the four files to")
    f.add_argument(
        "--mirror",
        action="append",
        help="base URL of a mirror (repeatable); default: built-in list",
    )
    f.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    f.set_defaults(func=cmd_fetch_mnist)

    g = sub.add_parser(
        "figure", help="learn the SP on MNIST and draw original / SDR / back-projection"
    )
    g.add_argument("--out", required=True, type=Path, help="PNG file to write")
    g.add_argument(
        "--config",
        default=None,
        help="SP preset (forum-global, htmcore-mnist, forum-local) or a TOML/JSON file; "
        "default htmcore-mnist",
    )
    g.add_argument("--limit", type=int, default=0, help="learn on the first N training images only")
    g.add_argument("--epochs", type=int, default=1)
    g.add_argument("--threshold", type=_threshold, default=128, help="pixel >= T is on (or 'mean')")
    g.add_argument("--n", type=int, default=10, help="number of test digits to draw (default 10)")
    g.add_argument("--save-sp", type=Path, help="also save the learned SP (.npz)")
    g.add_argument("--load-sp", type=Path, help="use a saved SP instead of learning one")
    g.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default: bundled)")
    g.set_defaults(func=cmd_figure)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SDRIndexError as exc:
        print(f"sdrindex: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdrindex: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
