"""``sweep``: learn a grid of Spatial Pooler configurations on MNIST and measure each.

Each configuration is built through the one pipeline (:func:`sdrindex.pipeline.build_bundle`,
exact index, no decoders) and measured with the same labeler and reconstructors as
:func:`~sdrindex.evaluate.evaluate`: k-NN accuracies (overlap-weighted vote) for every ``k``,
1-NN accuracy, nearest and knn-blend MSE, sparsity, columns ever active, build time.
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
from sdrindex.labels import KNNLabeler
from sdrindex.reconstruct import KNNReconstructor, NearestReconstructor

__all__ = ["load_grid", "sweep", "format_sweep"]

#: Neighbours blended in the ``knn_mse`` column.
BLEND_K = 10


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a sweep grid (TOML or JSON).

    Keys: ``base`` (a preset name or config file, default the default preset),
    ``limit_train`` / ``limit_test`` (images used), ``k`` (list of k-NN vote sizes),
    ``[grid]`` (parameter -> list of values; the cartesian product is run; ``threshold`` and
    ``epochs`` are accepted beside the SP parameters) and/or ``[[configs]]`` (explicit
    parameter tables, each optionally with a ``name``).
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
    unknown = set(spec) - {"base", "limit_train", "limit_test", "k", "grid", "configs"}
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


def _measure(bundle: Any, test_images: NDArray, test_labels: NDArray, ks: list[int]):
    """The accuracy and reconstruction columns of one configuration's row."""
    q = bundle.encode(test_images)
    ids, ov = bundle.index.query(q, max(ks + [BLEND_K]))
    truth = test_images.astype(np.float32) / 255.0
    row: dict[str, Any] = {}
    for k in ks:
        pred = KNNLabeler(bundle, k=k).predict_from_neighbours(ids, ov)
        row[f"knn{k}_accuracy"] = float(np.mean(pred == test_labels))
    row["nn1_accuracy"] = float(np.mean(nearest_labels(bundle, ids) == test_labels))
    row["nearest_mse"] = mse(truth, NearestReconstructor(bundle).from_neighbours(ids, ov))
    row["knn_mse"] = mse(truth, KNNReconstructor(bundle, k=BLEND_K).from_neighbours(ids, ov))
    return row, q


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
        One row per configuration: the parameters, k-NN accuracies (overlap-weighted vote)
        for every ``k``, 1-NN accuracy, nearest and knn-blend MSE, sparsity, columns ever
        active, build seconds (the pipeline: binarize, SP learning, encoding the training
        set, the exact index) and seconds in all.
    """
    from sdrindex.datasets import load_mnist
    from sdrindex.pipeline import build_bundle
    from sdrindex.sp import DEFAULT_PRESET, SpatialPooler

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
    rows = []
    for name, params in _grid_configs(spec):
        t0 = time.perf_counter()
        params = dict(params)
        threshold = params.pop("threshold", 128)
        epochs = int(params.pop("epochs", 1))
        sp = SpatialPooler.from_nupic_params(_sp_params(base, params))
        if verbose:
            print(f"[sweep] {name}: {sp.n_columns} columns...", file=sys.stderr, flush=True)
        bundle = build_bundle(
            train_images,
            train_labels,
            sp=sp,
            threshold=threshold,
            epochs=epochs,
            backend="exact",
            decoders=None,
        )
        build_s = time.perf_counter() - t0
        row: dict[str, Any] = {"name": name, "params": params, "threshold": threshold}
        row["epochs"] = epochs
        measured, q = _measure(bundle, test_images, test_labels, ks)
        row.update(measured)
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


def format_sweep(rows: list[dict[str, Any]], ks: list[int] | None = None) -> str:
    """The sweep rows as a Markdown table."""
    if not rows:
        return "(no configurations)"
    if ks is None:
        keys = [k for k in rows[0] if k.startswith("knn") and k.endswith("_accuracy")]
        ks = sorted(int(k[3:-9]) for k in keys)
    head = (
        ["config", "threshold", "epochs"]
        + [f"{k}-NN acc" for k in ks]
        + ["nearest MSE", "knn MSE", "columns", "active", "sparsity", "ever active", "build s"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["name"], str(r["threshold"]), str(r["epochs"])]
        cells += [f"{100 * r[f'knn{k}_accuracy']:.2f} %" for k in ks]
        cells += [
            f"{r['nearest_mse']:.4f}",
            f"{r['knn_mse']:.4f}",
            str(r["n_columns"]),
            f"{r['active_bits']:.0f}",
            f"{r['sparsity']:.4f}",
            str(r["columns_ever_active"]),
            f"{r['build_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
