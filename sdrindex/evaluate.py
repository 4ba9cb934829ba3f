"""How well each way back from an SDR works on digits the Spatial Pooler has never seen.

:func:`evaluate` runs a bundle on the MNIST test set (or its first N images) and returns a
report (also written as ``report.json``, ``report.md`` and PNG figures by
:func:`write_report`):

- ``classification``: labels from the SDRs, 1-NN and k-NN votes over the bundle's index and
  a logistic-regression readout;
- ``reconstruction``: per method, MSE and PSNR on [0, 1] pixels, SSIM (scikit-image), the
  accuracy of a fixed pixel-space classifier on the reconstructions and the time per query
  (batched, including the index search and any encoding the method does). Reference rows
  measured in the same run: ``pixel_oracle`` (the training image nearest in pixel space, the
  best any retrieval can do), ``mean_image``, ``pca`` (as many components as the SDRs have
  active bits) and ``matching_pursuit`` (:class:`~sdrindex.reconstruct.MatchingPursuitCoder`
  at the same atom budget);
- ``index``: recall@10 of every backend against the exact one (ties counted: a result is
  right when its overlap is at least the true 10th-best overlap) and queries per second;
- ``noise``: accuracy and MSE when a fraction of each query SDR's active bits is swapped for
  random inactive ones;
- ``sp``: sparsity, columns ever active, mean column entropy, activation frequencies.

:func:`sweep` learns a small grid of Spatial Pooler configurations and measures each
(k-NN accuracy, retrieval MSE, sparsity, build time) so users can tune.

Definitions: MSE is the mean over images and pixels of the squared error on [0, 1];
``psnr = 10 log10(1 / mse)`` of that mean; SSIM is the mean of scikit-image's
``structural_similarity(data_range=1)`` over images. The pixel-space classifier is
PCA (50 components) followed by a distance-weighted 3-NN vote, fitted on the training images
once and applied unchanged to originals and reconstructions.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import ParameterError

__all__ = [
    "evaluate",
    "write_report",
    "sweep",
    "load_grid",
    "mse",
    "psnr",
    "mean_ssim",
    "recall_at_k",
    "PixelClassifier",
    "REFERENCE_METHODS",
    "SDR_METHODS",
]

#: Reconstructors from SDRs reported (``decoder`` is the bundle's default decoder model).
SDR_METHODS = ("nearest", "knn", "backprojection", "decoder")
#: Reference rows measured beside them.
REFERENCE_METHODS = ("pixel_oracle", "mean_image", "pca", "matching_pursuit")
NOISE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


# =========================================================================== metrics


def mse(a: NDArray, b: NDArray) -> float:
    """Mean squared error over all images and pixels (inputs in [0, 1])."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.mean(d * d))


def psnr(m: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] pixels (``inf`` for 0)."""
    return float("inf") if m <= 0 else float(10.0 * math.log10(1.0 / m))


def mean_ssim(a: NDArray, b: NDArray) -> float:
    """Mean SSIM over images (scikit-image, ``data_range=1``), images (n, H, W) in [0, 1]."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(
        np.mean([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b, strict=True)])
    )


def recall_at_k(approx_overlaps: NDArray, exact_overlaps: NDArray, k: int = 10) -> float:
    """Recall@k with ties counted.

    A returned item is right when its overlap is at least the exact k-th best overlap of its
    query (items tied there are interchangeable). Overlaps are those the index returns (the
    backends rank by exact overlap, so they are true overlaps).
    """
    kth = exact_overlaps[:, k - 1 : k]
    got = approx_overlaps[:, :k]
    return float(np.mean((got >= kth) & (got >= 0)))


class PixelClassifier:
    """The fixed pixel-space classifier: PCA (50 components) + distance-weighted 3-NN.

    Fitted once on the training images and applied unchanged to originals and every
    reconstruction, so its accuracy measures how much of the digit a reconstruction keeps.
    """

    def __init__(self, n_components: int = 50, k: int = 3) -> None:
        self.n_components = n_components
        self.k = k

    def fit(self, images: NDArray, labels: NDArray) -> PixelClassifier:
        from sklearn.decomposition import PCA
        from sklearn.neighbors import KNeighborsClassifier

        x = _flat01(images)
        self.pca_ = PCA(n_components=min(self.n_components, *x.shape), random_state=0).fit(x)
        self.knn_ = KNeighborsClassifier(self.k, weights="distance", algorithm="brute")
        self.knn_.fit(self.pca_.transform(x), labels)
        return self

    def predict(self, images: NDArray) -> NDArray:
        return self.knn_.predict(self.pca_.transform(_flat01(images)))


def _flat01(images: NDArray) -> NDArray[np.float32]:
    arr = np.asarray(images)
    x = arr.reshape(arr.shape[0], -1).astype(np.float32)
    return x / 255.0 if arr.dtype == np.uint8 else x


def _row(truth01: NDArray, rec: NDArray, labels: NDArray, clf: PixelClassifier, seconds: float):
    m = mse(truth01, rec)
    return {
        "mse": m,
        "psnr": psnr(m),
        "ssim": mean_ssim(truth01, rec),
        "label_accuracy": float(np.mean(clf.predict(rec) == labels)),
        "ms_per_query": 1000.0 * seconds / max(len(rec), 1),
    }


def _log(msg: str, verbose: bool) -> None:
    if verbose:
        import sys

        print(msg, file=sys.stderr, flush=True)


# =========================================================================== evaluation


def _pixel_oracle(train01: NDArray[np.float32], test01: NDArray[np.float32]) -> NDArray:
    """Row positions of the training images nearest (Euclidean) to each test image."""
    sq = np.einsum("ij,ij->i", train01, train01)
    out = np.empty(test01.shape[0], np.int64)
    for lo in range(0, test01.shape[0], 1000):
        d = sq[None, :] - 2.0 * (test01[lo : lo + 1000] @ train01.T)
        out[lo : lo + 1000] = np.argmin(d, axis=1)
    return out


def _sp_stats(bundle: Any, test_packed: NDArray[np.uint8]) -> dict[str, Any]:
    n_bits = int(bundle.sp.n_columns)
    train = np.asarray(bundle.table.sdrs)
    freq = np.zeros(n_bits, np.float64)
    for lo in range(0, train.shape[0], 8192):
        freq += np.unpackbits(train[lo : lo + 8192], axis=1, count=n_bits).sum(axis=0)
    freq /= max(train.shape[0], 1)
    test_dense = np.unpackbits(test_packed, axis=1, count=n_bits)
    active = test_dense.sum(axis=1)
    p = np.clip(freq, 1e-12, 1 - 1e-12)
    entropy = np.where((freq > 0) & (freq < 1), -(p * np.log2(p) + (1 - p) * np.log2(1 - p)), 0.0)
    counts, edges = np.histogram(freq, bins=20, range=(0.0, max(float(freq.max()), 1e-9)))
    return {
        "n_columns": n_bits,
        "active_bits_mean": float(active.mean()),
        "active_bits_min": int(active.min()),
        "active_bits_max": int(active.max()),
        "sparsity": float(active.mean() / n_bits),
        "columns_ever_active": int((freq > 0).sum()),
        "columns_ever_active_test": int((test_dense.sum(axis=0) > 0).sum()),
        "mean_column_entropy_bits": float(entropy.mean()),
        "activation_histogram": {
            "bin_edges": edges.tolist(),
            "counts": counts.tolist(),
            "what": "columns by the fraction of training images that activate them",
        },
        "_activation_frequency": freq,  # for the figure; not written to report.json
    }


def _index_section(
    bundle: Any, queries: NDArray[np.uint8], backends: tuple[str, ...], verbose: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recall@10 against exact and QPS per backend; also returns the indexes built."""
    from sdrindex.index import SDRIndex

    n_bits = int(bundle.sp.n_columns)
    sdrs = np.asarray(bundle.table.sdrs)
    indexes: dict[str, Any] = {}
    builds: dict[str, float] = {}
    for b in backends:
        if bundle.index.backend == b:
            indexes[b] = bundle.index
            builds[b] = float("nan")
        else:
            _log(f"  building the {b} index...", verbose)
            t = time.perf_counter()
            indexes[b] = SDRIndex(b).fit(sdrs, n_bits)
            builds[b] = time.perf_counter() - t
    results: dict[str, Any] = {}
    exact_ov = None
    for b in ("exact", *[x for x in backends if x != "exact"]):
        if b not in indexes:
            continue
        idx = indexes[b]
        idx.query(queries[:2], 10)  # warm-up: numba dispatch of the batched path
        idx.query(queries[:1], 10)  # and of the one-query path
        t = time.perf_counter()
        _, ov = idx.query(queries, 10)
        batch_s = time.perf_counter() - t
        n_single = min(300, queries.shape[0])
        t = time.perf_counter()
        for i in range(n_single):
            idx.query(queries[i : i + 1], 10)
        single_s = time.perf_counter() - t
        if b == "exact":
            exact_ov = ov
        results[b] = {
            "recall_at_10": recall_at_k(ov, exact_ov, 10) if exact_ov is not None else None,
            "qps": queries.shape[0] / max(batch_s, 1e-9),
            "qps_single": n_single / max(single_s, 1e-9),
            "build_seconds": None if math.isnan(builds[b]) else builds[b],
        }
    return results, indexes


def evaluate(
    bundle: Any,
    limit: int | None = None,
    *,
    k_vote: int = 5,
    k_blend: int = 10,
    backends: tuple[str, ...] = ("exact", "nndescent"),
    noise_fractions: tuple[float, ...] = NOISE_FRACTIONS,
    mp_limit: int | None = 2000,
    mp_tol: float | None = 0.005,
    n_figure: int = 10,
    data_dir: str | Path | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """Evaluate a bundle on the MNIST test set; returns the report (a JSON-able dict).

    Parameters
    ----------
    bundle : Bundle
        Built from MNIST training images with labels.
    limit : int, optional
        Use the first ``limit`` test images (default all 10,000).
    k_vote, k_blend : int
        Neighbours in the k-NN label vote and in the ``knn`` blend.
    backends : tuple of str
        Index backends measured in the ``index`` section.
    mp_limit : int, optional
        Matching pursuit is slow (a Python loop per image inside scikit-learn): it runs on
        the first ``mp_limit`` queries only (its row says how many).
    mp_tol : float, optional
        Matching pursuit's residual threshold (mean squared error per pixel); its atom budget
        is the SDRs' mean number of active bits. It stops at whichever comes first.

    Returns
    -------
    dict
        See the module docstring; private arrays for the figures are under keys starting
        with ``_`` and are not written to ``report.json``.
    """
    from sdrindex.datasets import load_mnist
    from sdrindex.reconstruct import (
        DecoderReconstructor,
        KNNLabeler,
        LogisticLabeler,
        MatchingPursuitCoder,
        make_reconstructor,
        train_decoder,
    )
    from sdrindex.sdr import add_noise

    if bundle.table.labels is None:
        raise ParameterError("evaluate needs a bundle with labels (built from MNIST)")
    t_start = time.perf_counter()
    test_images, test_labels = load_mnist("test", data_dir=data_dir)
    if limit:
        test_images, test_labels = test_images[:limit], test_labels[:limit]
    n = int(test_images.shape[0])
    truth = test_images.astype(np.float32) / 255.0
    n_bits = int(bundle.sp.n_columns)
    train_images = np.asarray(bundle.table.images)
    train_labels = np.asarray(bundle.table.labels)
    report: dict[str, Any] = {
        "n_queries": n,
        "n_train": int(len(bundle.table)),
        "bundle": str(bundle.path) if bundle.path else None,
        "sp_params": bundle.sp.nupic_params(),
        "encoder": dict(bundle.encoder),
        "index_backend": bundle.index.backend,
        "settings": {"k_vote": k_vote, "k_blend": k_blend, "seed": seed},
        "notes": [],
    }

    _log(f"encoding {n} test images...", verbose)
    t = time.perf_counter()
    queries = bundle.encode(test_images)
    encode_s = time.perf_counter() - t
    report["encode_ms_per_query"] = 1000.0 * encode_s / n

    # ---------------------------------------------------------------- classification
    _log("classification from SDRs...", verbose)
    kmax = max(k_vote, k_blend, 10)
    bundle.index.query(queries[:2], kmax)
    t = time.perf_counter()
    ids, ov = bundle.index.query(queries, kmax)
    query_s = time.perf_counter() - t
    table = bundle.table
    nn1 = train_labels[table.positions(ids[:, 0])]
    knn_labeler = KNNLabeler(bundle, k=k_vote)
    knn_pred = knn_labeler.predict_from_neighbours(ids, ov)
    t = time.perf_counter()
    logistic = LogisticLabeler(bundle)
    fit_s = time.perf_counter() - t
    logistic_pred = logistic.predict(queries)
    report["classification"] = {
        "nn1_accuracy": float(np.mean(nn1 == test_labels)),
        "knn_accuracy": float(np.mean(knn_pred == test_labels)),
        "logistic_accuracy": float(np.mean(logistic_pred == test_labels)),
        "k": k_vote,
        "vote": "overlap-weighted",
        "index_ms_per_query": 1000.0 * query_s / n,
    }
    if fit_s > 0.5:
        report["notes"].append(
            f"the logistic readout was trained during the evaluation ({fit_s:.0f} s); "
            "`sdrindex build --decoder` stores it in the bundle"
        )

    # ---------------------------------------------------------------- reconstructions
    _log("fitting the pixel-space classifier...", verbose)
    clf = PixelClassifier().fit(train_images, train_labels)
    pixel_acc = float(np.mean(clf.predict(truth) == test_labels))
    report["pixel_classifier"] = {
        "description": "PCA(50) + distance-weighted 3-NN on [0,1] pixels, fitted on the "
        "training images",
        "accuracy_on_originals": pixel_acc,
    }
    dec = bundle.decoder or {}
    if "ridge_coef" not in dec and "mlp_coef_0" not in dec:
        _log("  the bundle has no decoder: training a Ridge decoder...", verbose)
        t = time.perf_counter()
        if bundle.decoder is None:
            bundle.decoder = {}
        bundle.decoder.update(train_decoder(bundle, "ridge"))
        report["notes"].append(
            f"the bundle had no decoder: a Ridge decoder was trained during the evaluation "
            f"({time.perf_counter() - t:.0f} s); build with `sdrindex build --decoder`"
        )
    recon: dict[str, Any] = {}
    images_for_figure: dict[str, NDArray] = {}
    methods: list[tuple[str, str, dict[str, Any]]] = [
        ("nearest", "nearest", {}),
        ("knn", "knn", {"k": k_blend}),
        ("backprojection", "backprojection", {}),
        ("decoder", "decoder", {}),
    ]
    default_model = DecoderReconstructor(bundle).model
    for model in ("ridge", "mlp"):
        key = "ridge_coef" if model == "ridge" else "mlp_coef_0"
        if key in bundle.decoder and model != default_model:
            methods.append((f"decoder_{model}", "decoder", {"model": model}))
    methods += [
        ("backprojection_topk", "backprojection", {"rule": "topk"}),
        ("backprojection_max", "backprojection", {"rule": "max"}),
        ("backprojection_weighted", "backprojection", {"weighted": True}),
    ]
    reconstructors: dict[str, Any] = {}
    for label, name, params in methods:
        _log(f"reconstruction: {label}...", verbose)
        rec = make_reconstructor(name, bundle, **params)
        reconstructors[label] = rec
        rec.reconstruct(queries[:2])  # warm-up
        t = time.perf_counter()
        out = rec.reconstruct(queries)
        secs = time.perf_counter() - t
        recon[label] = _row(truth, out, test_labels, clf, secs)
        recon[label]["params"] = params
        if name == "decoder":
            recon[label]["model"] = rec.model
        images_for_figure[label] = out[:n_figure]

    # ---------------------------------------------------------------- references
    _log("reference: pixel-space nearest neighbour...", verbose)
    train01 = _flat01(train_images)
    t = time.perf_counter()
    pos = _pixel_oracle(train01, truth.reshape(n, -1))
    out = train01[pos].reshape(truth.shape)
    recon["pixel_oracle"] = _row(truth, out, test_labels, clf, time.perf_counter() - t)
    images_for_figure["pixel_oracle"] = out[:n_figure]

    t = time.perf_counter()
    mean_img = train01.mean(axis=0)
    out = np.broadcast_to(mean_img.reshape(truth.shape[1:]), truth.shape)
    recon["mean_image"] = _row(truth, out, test_labels, clf, time.perf_counter() - t)

    n_active = max(1, int(round(np.unpackbits(queries, axis=1, count=n_bits).sum(1).mean())))
    _log(f"reference: PCA with {n_active} components...", verbose)
    from sklearn.decomposition import PCA

    n_comp = min(n_active, *train01.shape)
    pca = PCA(n_components=n_comp, random_state=seed).fit(train01)
    t = time.perf_counter()
    out = np.clip(pca.inverse_transform(pca.transform(truth.reshape(n, -1))), 0, 1)
    out = out.reshape(truth.shape).astype(np.float32)
    recon["pca"] = _row(truth, out, test_labels, clf, time.perf_counter() - t)
    recon["pca"]["n_components"] = n_comp
    images_for_figure["pca"] = out[:n_figure]

    n_mp = n if not mp_limit else min(n, int(mp_limit))
    _log(f"reference: matching pursuit, <= {n_active} atoms, {n_mp} images...", verbose)
    mp = MatchingPursuitCoder(n_atoms=n_active, tol=mp_tol, seed=seed).fit(train_images)
    t = time.perf_counter()
    codes = mp.transform(test_images[:n_mp])
    out = mp.inverse_transform(codes)
    recon["matching_pursuit"] = _row(
        truth[:n_mp], out, test_labels[:n_mp], clf, time.perf_counter() - t
    )
    recon["matching_pursuit"].update(
        {
            "n_atoms": n_active,
            "tol": mp_tol,
            "mean_atoms_used": float((codes != 0).sum(axis=1).mean()),
            "n_dictionary": int(mp.dictionary_.shape[0]),
            "n_queries": n_mp,
        }
    )
    images_for_figure["matching_pursuit"] = out[: min(n_figure, n_mp)]
    report["reconstruction"] = recon

    # ---------------------------------------------------------------- index
    _log("index: recall and speed per backend...", verbose)
    report["index"], _ = _index_section(bundle, queries, backends, verbose)

    # ---------------------------------------------------------------- noise
    _log("noise robustness...", verbose)
    noise_rows = []
    labels = test_labels
    noisy_methods = ("nearest", "knn", "backprojection", "decoder")
    for f in noise_fractions:
        noisy = queries if f == 0 else add_noise(queries, n_bits, f, "swap", seed=seed)
        nids, nov = bundle.index.query(noisy, kmax)
        pred = knn_labeler.predict_from_neighbours(nids, nov)
        by_method = {}
        for m in noisy_methods:
            rec = reconstructors[m]
            if hasattr(rec, "from_neighbours"):
                img = rec.from_neighbours(nids, nov)
            else:
                img = rec.reconstruct(noisy)
            by_method[m] = mse(truth, img)
        noise_rows.append(
            {
                "swap_fraction": float(f),
                "accuracy": float(np.mean(pred == test_labels)),
                "nn1_accuracy": float(np.mean(train_labels[table.positions(nids[:, 0])] == labels)),
                "logistic_accuracy": float(np.mean(logistic.predict(noisy) == test_labels)),
                "mse": by_method["knn"],
                "mse_by_method": by_method,
            }
        )
    report["noise"] = noise_rows
    base = noise_rows[0]["accuracy"]
    at30 = [r for r in noise_rows if abs(r["swap_fraction"] - 0.3) < 1e-9]
    if at30:
        report["noise_drop_at_30pct_points"] = 100.0 * (base - at30[0]["accuracy"])

    # ---------------------------------------------------------------- SP statistics
    report["sp"] = _sp_stats(bundle, queries)
    report["seconds"] = time.perf_counter() - t_start
    report["_figure"] = {
        "images": test_images[:n_figure],
        "labels": test_labels[:n_figure],
        "sdrs": np.unpackbits(queries[:n_figure], axis=1, count=n_bits),
        "rows": images_for_figure,
        "column_dimensions": tuple(int(d) for d in bundle.sp.column_dimensions),
    }
    return report


# =========================================================================== report files


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _markdown(report: dict[str, Any], figures: dict[str, str]) -> str:
    c = report["classification"]
    sp = report["sp"]
    lines = [
        "# sdrindex evaluation",
        "",
        f"{report['n_queries']} MNIST test images against {report['n_train']} stored training "
        f"images; SP {sp['n_columns']} columns, {sp['active_bits_mean']:.1f} active on average "
        f"(sparsity {sp['sparsity']:.4f}); encoder threshold {report['encoder'].get('threshold')}; "
        f"index backend `{report['index_backend']}`.",
        "",
        "## Labels from SDRs",
        "",
        "| method | accuracy |",
        "| --- | --- |",
        f"| 1-NN (overlap) | {100 * c['nn1_accuracy']:.2f} % |",
        f"| {c['k']}-NN, overlap-weighted vote | {100 * c['knn_accuracy']:.2f} % |",
        f"| logistic regression readout | {100 * c['logistic_accuracy']:.2f} % |",
        "",
        "## Reconstruction",
        "",
        "Pixel classifier: " + report["pixel_classifier"]["description"] + f" "
        f"({100 * report['pixel_classifier']['accuracy_on_originals']:.2f} % on the originals).",
        "",
        "| method | MSE | PSNR (dB) | SSIM | label accuracy | ms / query |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in report["reconstruction"].items():
        extra = ""
        if "n_queries" in r:
            extra = f" (first {r['n_queries']})"
        lines.append(
            f"| {name}{extra} | {r['mse']:.4f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
            f"{100 * r['label_accuracy']:.2f} % | {r['ms_per_query']:.3f} |"
        )
    lines += [
        "",
        "## Index",
        "",
        "| backend | recall@10 (ties counted) | QPS batched | QPS one at a time |",
        "| --- | --- | --- | --- |",
    ]
    for b, r in report["index"].items():
        rec = "-" if r["recall_at_10"] is None else f"{r['recall_at_10']:.4f}"
        lines.append(f"| {b} | {rec} | {r['qps']:.0f} | {r['qps_single']:.0f} |")
    lines += [
        "",
        "## Noise (active bits swapped for random ones)",
        "",
        "| swapped | k-NN accuracy | 1-NN accuracy | logistic accuracy | knn-blend MSE |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["noise"]:
        lines.append(
            f"| {100 * r['swap_fraction']:.0f} % | {100 * r['accuracy']:.2f} % | "
            f"{100 * r['nn1_accuracy']:.2f} % | {100 * r['logistic_accuracy']:.2f} % | "
            f"{r['mse']:.4f} |"
        )
    lines += [
        "",
        "## Spatial Pooler",
        "",
        f"- sparsity {sp['sparsity']:.4f} ({sp['active_bits_mean']:.1f} active, "
        f"min {sp['active_bits_min']}, max {sp['active_bits_max']})",
        f"- columns ever active: {sp['columns_ever_active']} of {sp['n_columns']} "
        f"(training set), {sp['columns_ever_active_test']} on the test queries",
        f"- mean column entropy: {sp['mean_column_entropy_bits']:.4f} bits",
        "",
    ]
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{k}]({v})" for k, v in figures.items()] + [""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out_dir``."""
    from sdrindex import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    fig = report.get("_figure")
    if fig is not None:
        wanted = ["nearest", "knn", "backprojection", "decoder", "pixel_oracle", "pca"]
        rows = {k: fig["rows"][k] for k in wanted if k in fig["rows"]}
        figs["comparison"] = plots.comparison_figure(
            fig["images"],
            fig["sdrs"],
            rows,
            fig["column_dimensions"],
            out / "comparison.png",
            labels=fig["labels"],
            title="MNIST test digits: original, SDR, and the ways back",
            normalize=False,
        )
    figs["noise"] = plots.noise_figure(report["noise"], out / "noise.png")
    figs["index"] = plots.recall_qps_figure(report["index"], out / "recall_qps.png")
    freq = report.get("sp", {}).get("_activation_frequency")
    if freq is not None:
        figs["activation"] = plots.activation_histogram(
            np.asarray(freq), out / "activation_histogram.png"
        )
    rel = {k: p.name for k, p in figs.items()}
    (out / "report.json").write_text(json.dumps(_json_ready(report), indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report, rel))
    return {"json": out / "report.json", "md": out / "report.md", **figs}


# =========================================================================== sweep

_GRID_SETTINGS = ("threshold", "epochs")


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


def sweep(
    spec: dict[str, Any], data_dir: str | Path | None = None, verbose: bool = False
) -> list[dict[str, Any]]:
    """Learn each configuration of a grid on MNIST and measure it.

    Each row: the parameters, k-NN accuracies (overlap-weighted vote) for every ``k``, 1-NN
    accuracy, nearest and knn-blend MSE, sparsity, columns ever active, build seconds (SP
    learning + encoding the training set + the exact index) and seconds in all.
    """
    from sdrindex.datasets import binarize, load_mnist
    from sdrindex.index import SDRIndex
    from sdrindex.sp import DEFAULT_PRESET, PRESETS, sp_from_config

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
    truth = test_images.reshape(len(test_images), -1).astype(np.float32) / 255.0
    train01 = train_images.reshape(len(train_images), -1)
    rows = []
    for name, params in _grid_configs(spec):
        t0 = time.perf_counter()
        params = dict(params)
        threshold = params.pop("threshold", 128)
        epochs = int(params.pop("epochs", 1))
        if str(base) in PRESETS:
            sp_params = dict(PRESETS[str(base)])
        else:
            sp_params = sp_from_config(base).nupic_params()
        sp_params.update(params)
        from sdrindex.sp import SpatialPooler

        sp = SpatialPooler.from_nupic_params(sp_params)
        _log(f"[sweep] {name}: {sp.n_columns} columns...", verbose)
        X = binarize(train_images, threshold).reshape(len(train_images), -1)
        T = binarize(test_images, threshold).reshape(len(test_images), -1)
        sp.fit(X, epochs=epochs)
        sdrs = sp.transform(X, packed=True)
        index = SDRIndex("exact").fit(sdrs, sp.n_columns)
        build_s = time.perf_counter() - t0
        q = sp.transform(T, packed=True)
        ids, ov = index.query(q, max(ks + [10]))
        lab = train_labels[ids]
        row: dict[str, Any] = {"name": name, "params": params, "threshold": threshold}
        row["epochs"] = epochs
        for k in ks:
            pred = _vote(lab[:, :k], ov[:, :k])
            row[f"knn{k}_accuracy"] = float(np.mean(pred == test_labels))
        row["nn1_accuracy"] = float(np.mean(lab[:, 0] == test_labels))
        row["nearest_mse"] = mse(truth, train01[ids[:, 0]].astype(np.float32) / 255.0)
        w = np.maximum(ov[:, :10], 0).astype(np.float32)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        blend = np.einsum("qk,qkp->qp", w, train01[ids[:, :10]].astype(np.float32) / 255.0)
        row["knn_mse"] = mse(truth, blend)
        active = np.unpackbits(q, axis=1, count=sp.n_columns).sum(axis=1)
        row["n_columns"] = sp.n_columns
        row["active_bits"] = float(active.mean())
        row["sparsity"] = float(active.mean() / sp.n_columns)
        train_dense_any = np.bitwise_or.reduce(sdrs, axis=0)
        row["columns_ever_active"] = int(np.unpackbits(train_dense_any)[: sp.n_columns].sum())
        row["build_seconds"] = build_s
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        _log("  " + format_sweep([row], ks).splitlines()[-1], verbose)
    return rows


def _vote(labels: NDArray, overlaps: NDArray, n_classes: int = 10) -> NDArray:
    w = np.maximum(overlaps, 0).astype(np.float64)
    w[:, 0] += 1e-9
    votes = np.zeros((labels.shape[0], max(n_classes, int(labels.max()) + 1)))
    rows = np.repeat(np.arange(labels.shape[0]), labels.shape[1])
    np.add.at(votes, (rows, labels.ravel()), w.ravel())
    return votes.argmax(axis=1)


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
