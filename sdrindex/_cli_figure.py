"""``sdrindex figure``: the SP learned (or loaded) and ten test digits drawn through it.

Argument parsing stays in :mod:`sdrindex.cli`. The images reach the SP through the preset's
encoder (thermometer planes for the default); a loaded SP whose input is one plane gets the
images binarised at the threshold.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def figure(args: argparse.Namespace) -> int:
    """``sdrindex figure``: learn the SP (or load one) and draw test digits through it."""
    from sdrindex.datasets import load_mnist
    from sdrindex.decoders import raw_backprojection
    from sdrindex.evaluate.plots import comparison_figure
    from sdrindex.preprocess import encode_input, input_size
    from sdrindex.sp import (
        SpatialPooler,
        learn_limit_for,
        preprocess_for,
        sp_from_config,
        threshold_for,
    )

    t0 = time.perf_counter()
    given = args.threshold
    if args.threshold is None:
        args.threshold = threshold_for(args.config)
    encoder = {"threshold": args.threshold, "preprocess": preprocess_for(args.config)}
    if args.load_sp:
        sp = SpatialPooler.load(args.load_sp)
        print(f"loaded SP from {args.load_sp}", file=sys.stderr)
        if sp.n_inputs != input_size((28, 28), encoder["preprocess"]):
            # a one-plane SP: the images binarised, by default at the one-plane MNIST
            # preset's rule (sdrindex-mnist's image mean), as before the planes default
            encoder["preprocess"] = None
            encoder["threshold"] = threshold_for("sdrindex-mnist") if given is None else given
    else:
        sp = sp_from_config(args.config)
        images, _ = load_mnist("train", data_dir=args.data_dir)
        limit = args.limit or learn_limit_for(args.config)
        if limit:
            images = images[:limit]
        X = encode_input(images, encoder)
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
    sdrs = sp.transform(encode_input(imgs, encoder))
    packed = np.packbits(sdrs, axis=1)
    rows = {  # planes summed per pixel (raw_backprojection)
        "back-projection\n(connected)": raw_backprojection(sp, packed, False).reshape(imgs.shape),
        "back-projection\n(permanence)": raw_backprojection(sp, packed, True).reshape(imgs.shape),
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
