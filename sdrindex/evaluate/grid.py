"""``sweep``: learn a grid of Spatial Pooler configurations on MNIST and measure each.

Each configuration is built through the one pipeline (:func:`sdrindex.pipeline.build_bundle`,
exact index, no decoders) and measured with the same labeler and reconstructors as
:func:`~sdrindex.evaluate.evaluate`: k-NN accuracies (overlap-weighted vote) for every ``k``,
1-NN accuracy, the MSE against the **original** test images of the nearest original, the
k-NN blend, the calibrated back-projection and a ridge decoder, the k-NN accuracy lost at
30 % swapped bits, sparsity, columns ever active, build time.

So that what the SP adds shows apart from what preprocessing adds, every row also reports
plain pixel k-NN (Euclidean on grey levels, the same ``k``, one vote each with the nearest
breaking ties) on the same preprocessed images (:mod:`sdrindex.preprocess`: ``deskew``,
``blur``; the grey levels the thresholds or thermometer planes are taken from).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import ParameterError
from sdrindex.evaluate.metrics import mse
from sdrindex.evaluate.sections import nearest_labels
from sdrindex.labels import KNNLabeler, knn_vote
from sdrindex.preprocess import Preprocess
from sdrindex.reconstruct import (
    BackprojectionReconstructor,
    DecoderReconstructor,
    KNNReconstructor,
    NearestReconstructor,
)

__all__ = ["load_grid", "sweep", "format_sweep"]

#: Neighbours blended in the ``knn_mse`` column.
BLEND_K = 10

#: Fraction of active bits swapped for the ``noise_drop`` column (the issue's 30 %).
NOISE_SWAP = 0.3

#: Keys of a configuration that describe the input rather than the SP.
PREPROCESS_KEYS = ("deskew", "blur", "planes", "original")


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a sweep grid (TOML or JSON).

    Keys: ``base`` (a preset name or config file, default the default preset),
    ``limit_train`` / ``limit_test`` (images used), ``learn_limit`` (the SP learns on the
    first N training images only, "all": every one; default the base preset's; also
    accepted per configuration), ``k`` (list of k-NN vote sizes),
    ``[grid]`` (parameter -> list of values; the cartesian product is run; ``threshold`` and
    ``epochs`` are accepted beside the SP parameters, and the preprocessing keys ``deskew``,
    ``blur`` and ``planes``; with ``planes`` and no ``inputDimensions`` the SP gets
    ``(28, 28, P)`` inputs and a third column dimension of 1) and/or ``[[configs]]``
    (explicit parameter tables, each optionally with a ``name``).
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{path}: no such grid file")
    text = path.read_text()
    try:
        spec = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ParameterError(f"{path}: not valid {path.suffix.lstrip('.')}: {exc}") from exc
    if not isinstance(spec, dict):
        raise ParameterError(f"{path}: expected a table")
    known = {"base", "limit_train", "limit_test", "learn_limit", "k", "grid", "configs"}
    unknown = set(spec) - known
    if unknown:
        raise ParameterError(f"{path}: unknown keys {sorted(unknown)}")
    return spec


def _grid_configs(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    configs: list[tuple[str, dict[str, Any]]] = []
    grid = spec.get("grid") or {}
    if grid:
        keys = list(grid)
        values = [v if isinstance(v, list) else [v] for v in grid.values()]
        for combo in itertools.product(*values):
            params = dict(zip(keys, combo, strict=True))
            name = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
            configs.append((name, params))
    for i, c in enumerate(spec.get("configs") or []):
        c = dict(c)
        name = str(c.pop("name", f"config {i + 1}"))
        configs.append((name, c))
    if not configs:
        configs.append(("base", {}))
    return configs


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    return str(v)


def _sp_params(base: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The base preset (or config file) with ``params`` laid over it."""
    from sdrindex.sp import PRESETS, sp_from_config

    out = dict(PRESETS[str(base)]) if str(base) in PRESETS else sp_from_config(base).nupic_params()
    out.update(params)
    return out


def _pixel_knn(
    train: NDArray[np.float32],
    train_labels: NDArray,
    test: NDArray[np.float32],
    ks: list[int],
    chunk: int = 500,
) -> dict[int, NDArray]:
    """Pixel k-NN predictions (squared Euclidean, one vote each, the nearest breaks ties)."""
    kmax = max(ks)
    xtr = train.reshape(len(train), -1)
    norms = np.einsum("ij,ij->i", xtr, xtr)
    classes = np.unique(train_labels)
    labels = np.asarray(train_labels)
    nbrs = np.empty((len(test), kmax), np.int64)
    for s in range(0, len(test), chunk):
        q = test[s : s + chunk].reshape(-1, xtr.shape[1])
        d = norms[None, :] - 2.0 * (q @ xtr.T)  # |q|^2 is the same for every item
        top = np.argpartition(d, kmax - 1, axis=1)[:, :kmax]
        order = np.argsort(np.take_along_axis(d, top, axis=1), axis=1, kind="stable")
        nbrs[s : s + chunk] = np.take_along_axis(top, order, axis=1)
    ones = np.ones(nbrs.shape, np.float64)
    return {k: knn_vote(labels[nbrs[:, :k]], ones[:, :k], classes, power=0.0) for k in ks}


def _measure(bundle: Any, test_images: NDArray, test_labels: NDArray, ks: list[int]):
    """The accuracy, reconstruction and noise columns of one configuration's row."""
    from sdrindex.decoders import train_decoder
    from sdrindex.sdr import add_noise

    q = bundle.encode(test_images)
    ids, ov = bundle.index.query(q, max(ks + [BLEND_K]))
    truth = test_images.astype(np.float32) / 255.0  # always the original images
    row: dict[str, Any] = {}
    for k in ks:
        pred = KNNLabeler(bundle, k=k).predict_from_neighbours(ids, ov)
        row[f"knn{k}_accuracy"] = float(np.mean(pred == test_labels))
    row["nn1_accuracy"] = float(np.mean(nearest_labels(bundle, ids) == test_labels))
    row["nearest_mse"] = mse(truth, NearestReconstructor(bundle).from_neighbours(ids, ov))
    row["knn_mse"] = mse(truth, KNNReconstructor(bundle, k=BLEND_K).from_neighbours(ids, ov))
    row["backprojection_mse"] = mse(truth, BackprojectionReconstructor(bundle).reconstruct(q))
    bundle.decoder = train_decoder(bundle, "ridge")
    row["decoder_mse"] = mse(truth, DecoderReconstructor(bundle, "ridge").reconstruct(q))
    k_noise = 5 if 5 in ks else ks[0]
    noisy = add_noise(q, bundle.sp.n_columns, NOISE_SWAP, "swap", seed=0)
    nids, nov = bundle.index.query(noisy, k_noise)
    noisy_acc = np.mean(
        KNNLabeler(bundle, k=k_noise).predict_from_neighbours(nids, nov) == test_labels
    )
    row["noise_k"] = k_noise
    row["noise_drop_points"] = 100.0 * (row[f"knn{k_noise}_accuracy"] - float(noisy_acc))
    return row, q


def _split_params(
    params: dict[str, Any], base_params: dict[str, Any], base_prep: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(SP parameters, preprocess table or None) of one configuration: the base preset's
    preprocessing with the configuration's keys laid over it."""
    prep = {**(base_prep or {}), **{k: params.pop(k) for k in PREPROCESS_KEYS if k in params}}
    if not prep:
        return params, None
    n_planes = Preprocess.from_dict(prep).n_planes  # checks the values
    if n_planes > 1 and "inputDimensions" not in params:
        params["inputDimensions"] = [*list(base_params["inputDimensions"])[:2], n_planes]
        cols = params.get("columnDimensions", base_params["columnDimensions"])
        params["columnDimensions"] = [*list(cols)[:2], 1]
    return params, prep


def _pixel_row(cache: dict, prep: dict | None, data: tuple, ks: list[int]) -> dict[str, float]:
    """Pixel k-NN accuracies on the preprocessed grey images (cached per preprocessing)."""
    grey_keys = ("deskew", "blur")  # what the grey levels depend on
    p = Preprocess.from_dict({k: v for k, v in (prep or {}).items() if k in grey_keys})
    key = (p.deskew, p.blur)
    if key not in cache:
        train_images, train_labels, test_images, test_labels = data
        preds = _pixel_knn(p.grey(train_images), train_labels, p.grey(test_images), ks)
        cache[key] = {f"pixel_knn{k}_accuracy": float(np.mean(preds[k] == test_labels)) for k in ks}
    return cache[key]


def sweep(
    spec: dict[str, Any], data_dir: str | Path | None = None, verbose: bool = False
) -> list[dict[str, Any]]:
    """Learn each configuration of a grid on MNIST and measure it.

    Parameters
    ----------
    spec : dict
        A grid (:func:`load_grid`).
    data_dir : path, optional
        Where the MNIST files are (default: the usual search).

    Returns
    -------
    list of dict
        One row per configuration: the parameters and preprocessing, SDR k-NN accuracies
        (overlap-weighted vote) and pixel k-NN accuracies on the same preprocessed images for
        every ``k``, SDR 1-NN accuracy, MSEs against the original images (nearest, knn blend,
        back-projection, ridge decoder), the k-NN accuracy drop at 30 % swapped bits (points),
        sparsity, columns ever active, build seconds (the pipeline: preprocessing, SP learning,
        encoding the training set, the exact index) and seconds in all.
    """
    from sdrindex.datasets import load_mnist
    from sdrindex.pipeline import build_bundle
    from sdrindex.sp import DEFAULT_PRESET, SpatialPooler, learn_limit_for, preprocess_for

    base = spec.get("base", DEFAULT_PRESET)
    ks = [int(k) for k in (spec.get("k") or [1, 5, 10])]
    train_images, train_labels = load_mnist("train", data_dir=data_dir)
    test_images, test_labels = load_mnist("test", data_dir=data_dir)
    if spec.get("limit_train"):
        n_tr = int(spec["limit_train"])
        train_images, train_labels = train_images[:n_tr], train_labels[:n_tr]
    if spec.get("limit_test"):
        n_te = int(spec["limit_test"])
        test_images, test_labels = test_images[:n_te], test_labels[:n_te]
    data = (train_images, train_labels, test_images, test_labels)
    pixel_cache: dict = {}
    rows = []
    for name, params in _grid_configs(spec):
        t0 = time.perf_counter()
        params = dict(params)
        threshold = params.pop("threshold", 128)
        epochs = int(params.pop("epochs", 1))
        learn_limit = params.pop("learn_limit", spec.get("learn_limit", learn_limit_for(base)))
        learn_limit = None if learn_limit in (None, "all") else int(learn_limit)
        params, prep = _split_params(params, _sp_params(base, {}), preprocess_for(base))
        sp = SpatialPooler.from_nupic_params(_sp_params(base, params))
        if verbose:
            print(f"[sweep] {name}: {sp.n_columns} columns...", file=sys.stderr, flush=True)
        bundle = build_bundle(
            train_images,
            train_labels,
            sp=sp,
            threshold=threshold,
            preprocess=prep,
            epochs=epochs,
            learn_limit=learn_limit,
            backend="exact",
            decoders=None,
        )
        build_s = time.perf_counter() - t0
        row: dict[str, Any] = {"name": name, "params": params, "threshold": threshold}
        row["preprocess"] = prep or {}
        row["epochs"] = epochs
        row["learned_on"] = int(bundle.dataset["sp_learned_on"])
        measured, q = _measure(bundle, test_images, test_labels, ks)
        row.update(measured)
        row.update(_pixel_row(pixel_cache, prep, data, ks))
        active = np.unpackbits(q, axis=1, count=sp.n_columns).sum(axis=1)
        row["n_columns"] = sp.n_columns
        row["active_bits"] = float(active.mean())
        row["sparsity"] = float(active.mean() / sp.n_columns)
        train_any = np.bitwise_or.reduce(np.asarray(bundle.table.sdrs), axis=0)
        row["columns_ever_active"] = int(np.unpackbits(train_any)[: sp.n_columns].sum())
        row["build_seconds"] = build_s
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if verbose:
            print("  " + format_sweep([row], ks).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def _prep_label(prep: dict[str, Any]) -> str:
    parts = ["deskew"] if prep.get("deskew") else []
    if prep.get("blur"):
        parts.append(f"blur {prep['blur']}")
    if prep.get("planes"):
        parts.append("planes " + "/".join(str(t) for t in prep["planes"]))
    if prep.get("original"):
        parts.append("+ original")
    return ", ".join(parts) or "-"


def format_sweep(rows: list[dict[str, Any]], ks: list[int] | None = None) -> str:
    """The sweep rows as a Markdown table (accuracies in %, MSEs against the originals)."""
    if not rows:
        return "(no configurations)"
    if ks is None:
        keys = [k for k in rows[0] if k.startswith("knn") and k.endswith("_accuracy")]
        ks = sorted(int(k[3:-9]) for k in keys)
    pix = [k for k in ks if f"pixel_knn{k}_accuracy" in rows[0]]
    head = (
        ["config", "preprocess", "threshold", "epochs", "learned on"]
        + [f"SDR {k}-NN" for k in ks]
        + [f"pixel {k}-NN" for k in pix]
        + ["nearest MSE", "knn MSE", "backproj MSE", "decoder MSE", "noise drop"]
        + ["columns", "active", "ever active", "build s"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    opt = lambda r, key, fmt: fmt.format(r[key]) if key in r else "-"  # noqa: E731
    for r in rows:
        prep = r.get("preprocess") or {}
        threshold = "-" if prep.get("planes") else str(r["threshold"])  # planes replace it
        cells = [r["name"], _prep_label(prep), threshold]
        cells.append(str(r["epochs"]))
        cells.append(f"{r['learned_on']:,}" if "learned_on" in r else "-")
        cells += [f"{100 * r[f'knn{k}_accuracy']:.2f}" for k in ks]
        cells += [f"{100 * r[f'pixel_knn{k}_accuracy']:.2f}" for k in pix]
        cells += [f"{r['nearest_mse']:.4f}", f"{r['knn_mse']:.4f}"]
        cells += [opt(r, "backprojection_mse", "{:.4f}"), opt(r, "decoder_mse", "{:.4f}")]
        cells.append(opt(r, "noise_drop_points", "{:.2f}"))
        cells += [str(r["n_columns"]), f"{r['active_bits']:.0f}", str(r["columns_ever_active"])]
        cells.append(f"{r['build_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
