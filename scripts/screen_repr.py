"""Screen representation ideas of issue 12 that `sdrindex sweep` cannot express.

Several SPs side by side (their SDRs concatenated, so overlap is the sum of the members'
overlaps) and bit weighting by rarity (inverse document frequency, an overlap-family score
``sum_b w_b x_b y_b``). Each member SP learns once and its packed codes of the 60,000
training and the first ``--n-test`` test digits are cached in ``--cache``; ``score`` then
ranks exactly by overlap (a float32 matrix product per 1,000 queries) and prints SDR k-NN
(overlap-weighted vote, as ``sdrindex evaluate``), nearest-original and k = 10 blend MSEs
against the original test digits. ``pixel`` gives the same columns for Euclidean pixel k-NN
(one vote each, as the sweep). Memory: 0.24 GB per 1,000 columns of concatenated code.

The README's screening table came from (2026-11-30)::

    S="python scripts/screen_repr.py --cache /tmp/screen --n-test 10000"
    $S learn a '{}'
    $S learn b '{"seed": 2}'
    $S learn c '{"base": "sdrindex-mnist-planes", "seed": 3}'
    $S learn d '{"base": "sdrindex-mnist-planes", "planes": [26, 77, 128, 179, 230],
                 "inputDimensions": [28, 28, 5], "potentialPct": 0.01, "seed": 4}'
    $S pixel; $S score a; $S score a+b; $S score c; $S score c+d; $S score a+b+c+d
    $S score a --idf 1
    $S --learn-limit 5000 learn loc40 '{"globalInhibition": false, "columnDimensions": [40, 40]}'
    $S --learn-limit 5000 learn glob40 '{"columnDimensions": [40, 40]}'
    $S score loc40; $S score glob40

A member's JSON lays SP parameters (NuPIC camelCase) over ``base`` (default
``sdrindex-mnist``); ``planes`` (thresholds) or ``threshold`` set its input; every member
learns on the first ``--learn-limit`` training digits (default 15,000).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sdrindex.datasets import load_mnist
from sdrindex.labels import knn_vote
from sdrindex.preprocess import Preprocess
from sdrindex.sp import PRESETS, SpatialPooler, preprocess_for, threshold_for

K = 10


def _data(n_test: int):
    xtr, ytr = load_mnist("train")
    xte, yte = load_mnist("test")
    return xtr, ytr, xte[:n_test], yte[:n_test]


def learn(args: argparse.Namespace) -> None:
    """Learn one member SP and cache its packed codes."""
    spec = json.loads(args.spec)
    base = spec.pop("base", "sdrindex-mnist")
    prep = preprocess_for(base) or {}
    if "planes" in spec:
        prep = {"planes": spec.pop("planes")}
    threshold = spec.pop("threshold", threshold_for(base))
    params = {**PRESETS[base], **spec}
    xtr, _, xte, _ = _data(args.n_test)
    p = Preprocess.from_dict(prep)
    btr, bte = p.input_bits(xtr, threshold), p.input_bits(xte, threshold)
    sp = SpatialPooler.from_nupic_params(params)
    t = time.perf_counter()
    sp.fit(btr[: args.learn_limit])
    seconds = time.perf_counter() - t
    np.savez(
        args.cache / f"{args.name}.npz",
        train=sp.transform(btr, packed=True),
        test=sp.transform(bte, packed=True),
        n_bits=sp.n_columns,
    )
    print(f"{args.name}: {sp.n_columns} columns, learned on {args.learn_limit} in {seconds:.1f} s")


def _codes(cache: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for name in names:
        z = np.load(cache / f"{name}.npz")
        n = int(z["n_bits"])
        train.append(np.unpackbits(z["train"], axis=1, count=n).astype(np.float32))
        test.append(np.unpackbits(z["test"], axis=1, count=n).astype(np.float32))
    return np.hstack(train), np.hstack(test)


def _top(scores: np.ndarray, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    s = scores if largest else -scores
    top = np.argpartition(-s, K - 1, axis=1)[:, :K]
    v = np.take_along_axis(s, top, 1)
    order = np.lexsort((top, -v), axis=-1)  # best first, then the smaller id, as the index
    return np.take_along_axis(top, order, 1), np.take_along_axis(v, order, 1)


def _report(label: str, ids, weights, data) -> None:
    xtr, ytr, xte, yte = data
    classes = np.unique(ytr)
    row = {"config": label, "n_test": len(yte)}
    for k in (1, 5, 10):
        pred = knn_vote(ytr[ids[:, :k]], weights[:, :k].astype(np.float64), classes, power=1.0)
        row[f"knn{k}"] = round(100 * float(np.mean(pred == yte)), 2)
    truth = xte.reshape(len(xte), -1).astype(np.float32) / 255
    imgs = xtr.reshape(len(xtr), -1).astype(np.float32) / 255
    row["nearest_mse"] = round(float(np.mean((imgs[ids[:, 0]] - truth) ** 2)), 4)
    w = np.maximum(weights, 0).astype(np.float32)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-9)
    blend = np.einsum("nk,nkd->nd", w, imgs[ids])
    row["blend_mse"] = round(float(np.mean((blend - truth) ** 2)), 4)
    print(json.dumps(row), flush=True)


def score(args: argparse.Namespace) -> None:
    """Exact overlap k-NN over the concatenated codes of the members named a+b+..."""
    data = _data(args.n_test)
    train, test = _codes(args.cache, args.names.split("+"))
    if args.idf:
        w = np.log(len(train) / (train.sum(0) + 1)) ** args.idf
        test = test * w[None, :].astype(np.float32)
    ids = np.empty((len(test), K), np.int64)
    ov = np.empty((len(test), K), np.float32)
    for s in range(0, len(test), 1000):
        ids[s : s + 1000], ov[s : s + 1000] = _top(test[s : s + 1000] @ train.T, True)
    _report(args.names + (f" idf^{args.idf:g}" if args.idf else ""), ids, ov, data)


def pixel(args: argparse.Namespace) -> None:
    """Euclidean pixel k-NN on the grey images, one vote each."""
    data = _data(args.n_test)
    tr = data[0].reshape(len(data[0]), -1).astype(np.float32)
    te = data[2].reshape(len(data[2]), -1).astype(np.float32)
    norms = np.einsum("ij,ij->i", tr, tr)
    ids = np.empty((len(te), K), np.int64)
    for s in range(0, len(te), 1000):
        ids[s : s + 1000], _ = _top(norms[None, :] - 2 * te[s : s + 1000] @ tr.T, False)
    _report("pixel (Euclidean, one vote each)", ids, np.ones(ids.shape, np.float32), data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True, help="folder of the members' codes")
    ap.add_argument("--n-test", type=int, default=10000, help="first N test digits")
    ap.add_argument("--learn-limit", type=int, default=15000)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("learn")
    a.add_argument("name")
    a.add_argument("spec", help="JSON: base preset, SP parameters, planes or threshold")
    a.set_defaults(func=learn)
    s = sub.add_parser("score")
    s.add_argument("names", help="members joined by + (their SDRs concatenated)")
    s.add_argument("--idf", type=float, default=0.0, help="weight bits by log(N/df)^p")
    s.set_defaults(func=score)
    sub.add_parser("pixel").set_defaults(func=pixel)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
