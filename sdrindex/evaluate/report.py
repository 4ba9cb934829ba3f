"""The report's files: ``report.json``, ``report.md`` and the PNG figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sdrindex.evaluate.methods import FIGURE_METHODS

__all__ = ["write_report", "markdown", "json_ready"]


def json_ready(obj: Any) -> Any:
    """The report without its private keys (``_...``), as plain JSON values (``inf`` and
    ``-inf`` as strings, NaN as null)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _encoder_text(encoder: dict[str, Any]) -> str:
    """The encoder in words: the thermometer planes, or the one threshold (and any deskew or
    blur before them)."""
    prep = encoder.get("preprocess") or {}
    steps = ["deskew"] if prep.get("deskew") else []
    if prep.get("blur"):
        steps.append(f"blur {prep['blur']}")
    if prep.get("planes"):
        steps.append("planes pixel >= " + ", ".join(f"{t:g}" for t in prep["planes"]))
    else:
        steps.append(f"threshold {encoder.get('threshold')}")
    return ", ".join(steps)


def markdown(report: dict[str, Any], figures: dict[str, str]) -> str:
    """``report.md``: the report as Markdown tables; ``figures`` maps a name to a PNG path."""
    c = report["classification"]
    sp = report["sp"]
    lines = [
        "# sdrindex evaluation",
        "",
        f"{report['n_queries']} MNIST test images against {report['n_train']} stored training "
        f"images; SP {sp['n_columns']} columns, {sp['active_bits_mean']:.1f} active on average "
        f"(sparsity {sp['sparsity']:.4f}); encoder {_encoder_text(report['encoder'])}; "
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
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out_dir``.

    Parameters
    ----------
    report : dict
        What :func:`~sdrindex.evaluate.evaluate` returns.
    out_dir : path
        Created if missing; files there of the same names are replaced.

    Returns
    -------
    dict
        ``json``, ``md`` and one path per figure (``comparison``, ``noise``, ``index``,
        ``activation``).
    """
    from sdrindex.evaluate import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    fig = report.get("_figure")
    if fig is not None:
        rows = {k: fig["rows"][k] for k in FIGURE_METHODS if k in fig["rows"]}
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
    (out / "report.json").write_text(json.dumps(json_ready(report), indent=2) + "\n")
    (out / "report.md").write_text(markdown(report, rel))
    return {"json": out / "report.json", "md": out / "report.md", **figs}
