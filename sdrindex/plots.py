"""Figures: the original / SDR / back-projection comparison HTM users ask for."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def _grid_shape(n: int, column_dimensions: tuple[int, ...]) -> tuple[int, int]:
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
) -> Path:
    """Write a PNG: originals on top, their SDRs as column grids, then one row per method.

    Parameters
    ----------
    images : array of shape (n, H, W)
        The original images (uint8 or float).
    sdrs : array of shape (n, n_columns), 0/1
    rows : dict of name -> array of shape (n, H, W)
        Reconstructions, each scaled to [0, 1] per image for display.
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
            img = np.asarray(rec[j], dtype=np.float64)
            span = img.max() - img.min()
            axes[r, j].imshow((img - img.min()) / span if span > 0 else img, cmap="gray_r")
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
