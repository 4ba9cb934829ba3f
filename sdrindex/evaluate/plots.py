"""Figures: the original / SDR / back-projection comparison HTM users ask for, a query's
matches, and the evaluation report's noise, recall / QPS and activation charts.

Used by :func:`~sdrindex.evaluate.write_report` and by the ``figure`` and ``query``
commands; matplotlib is imported when a figure is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def _grid_shape(n: int, column_dimensions: tuple[int, ...]) -> tuple[int, int]:
    while len(column_dimensions) > 2 and column_dimensions[-1] == 1:  # (79, 79, 1): a sheet
        column_dimensions = column_dimensions[:-1]
    if len(column_dimensions) == 2:
        return int(column_dimensions[0]), int(column_dimensions[1])
    side = math.ceil(math.sqrt(n))
    return side, math.ceil(n / side)


def comparison_figure(
    images: NDArray,
    sdrs: NDArray,
    rows: dict[str, NDArray],
    column_dimensions: tuple[int, ...],
    out: str | Path,
    labels: NDArray | None = None,
    title: str | None = None,
    normalize: bool = True,
) -> Path:
    """Write a PNG: originals on top, their SDRs as column grids, then one row per method.

    Parameters
    ----------
    images : array of shape (n, H, W)
        The original images (uint8 or float).
    sdrs : array of shape (n, n_columns), 0/1
    rows : dict of name -> array of shape (n, H, W)
        Reconstructions, each scaled to [0, 1] per image for display when ``normalize``
        (raw maps); drawn as they are, on [0, 1], otherwise (calibrated reconstructions).
    column_dimensions : tuple of int
        The SP's column grid; 1-D and N-D grids are drawn as a near-square grid.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    n_rows = 2 + len(rows)
    fig, axes = plt.subplots(n_rows, n, figsize=(1.3 * n + 1.2, 1.45 * n_rows), squeeze=False)
    gh, gw = _grid_shape(sdrs.shape[1], column_dimensions)
    names = ["original", f"SDR ({gh}x{gw})"] + list(rows)
    for j in range(n):
        axes[0, j].imshow(images[j], cmap="gray_r" if images.max() > 1 else "gray_r")
        if labels is not None:
            axes[0, j].set_title(str(int(labels[j])), fontsize=9)
        grid = np.zeros(gh * gw, np.uint8)
        grid[: sdrs.shape[1]] = sdrs[j]
        axes[1, j].imshow(grid.reshape(gh, gw), cmap="Greys", interpolation="nearest")
        axes[1, j].set_xlabel(f"{int(sdrs[j].sum())} on", fontsize=7)
        for r, rec in enumerate(rows.values(), start=2):
            if j >= len(rec):
                continue
            img = np.asarray(rec[j], dtype=np.float64)
            if normalize:
                span = img.max() - img.min()
                axes[r, j].imshow((img - img.min()) / span if span > 0 else img, cmap="gray_r")
            else:
                axes[r, j].imshow(img, cmap="gray_r", vmin=0.0, vmax=1.0)
    for r in range(n_rows):
        axes[r, 0].set_ylabel(names[r], fontsize=8)
        for j in range(n):
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def matches_figure(queries: NDArray, stored: list[NDArray], results: list[dict], out) -> Path:
    """One row per query: the normalised query image, then its matches with overlaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(queries)
    k = max((len(s) for s in stored), default=0)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.3 * (k + 1) + 0.5, 1.5 * n), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(queries[r], cmap="gray_r")
        axes[r, 0].set_title("query", fontsize=8)
        for j in range(k):
            ax = axes[r, j + 1]
            if j < len(stored[r]):
                m = results[r]["matches"][j]
                ax.imshow(stored[r][j], cmap="gray_r")
                lab = "" if m["label"] is None else f"label {m['label']}, "
                ax.set_title(f"{lab}ov {m['overlap']}", fontsize=7)
            ax.axis("off")
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path, dpi: int = 110) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def noise_figure(rows: list[dict], out: str | Path) -> Path:
    """Accuracy and reconstruction MSE against the fraction of active bits swapped.

    ``rows``: the ``noise`` list of an evaluation report (``swap_fraction``, ``accuracy``,
    optional ``nn1_accuracy`` / ``logistic_accuracy``, ``mse``, ``mse_by_method``).
    """
    plt = _pyplot()
    x = [100 * r["swap_fraction"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.plot(x, [100 * r["accuracy"] for r in rows], "o-", label="k-NN vote")
    for key, lab in (("nn1_accuracy", "1-NN"), ("logistic_accuracy", "logistic")):
        if all(key in r for r in rows):
            a1.plot(x, [100 * r[key] for r in rows], "s--", label=lab)
    a1.set_xlabel("active bits swapped (%)")
    a1.set_ylabel("accuracy (%)")
    a1.set_title("labels from noisy SDRs", fontsize=10)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    methods = list(rows[0].get("mse_by_method", {"knn": None}))
    for m in methods:
        ys = [r.get("mse_by_method", {}).get(m, r["mse"]) for r in rows]
        a2.plot(x, ys, "o-", label=m)
    a2.set_xlabel("active bits swapped (%)")
    a2.set_ylabel("MSE on [0, 1] pixels")
    a2.set_title("reconstruction from noisy SDRs", fontsize=10)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    return _save(fig, out)


def recall_qps_figure(index: dict[str, dict], out: str | Path) -> Path:
    """Recall@10 against queries per second, one point (batched) and one (single) per backend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for b, r in index.items():
        rec = 1.0 if r.get("recall_at_10") is None else r["recall_at_10"]
        ax.scatter([r["qps"]], [rec], s=50, label=f"{b} (batched)")
        if r.get("qps_single"):
            ax.scatter([r["qps_single"]], [rec], s=50, marker="x", label=f"{b} (one at a time)")
    ax.set_xscale("log")
    ax.set_xlabel("queries per second")
    ax.set_ylabel("recall@10 (ties counted)")
    ax.set_title("SDR index: recall vs speed", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def activation_histogram(frequency: NDArray, out: str | Path) -> Path:
    """Histogram of how often each column is active over the training set."""
    plt = _pyplot()
    freq = np.asarray(frequency, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist(100 * freq, bins=60, color="0.3")
    ax.set_xlabel("% of training images activating the column")
    ax.set_ylabel("columns")
    never = int((freq == 0).sum())
    ax.set_title(f"column activation ({never} of {freq.size} never active)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, out)
