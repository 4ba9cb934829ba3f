"""Which methods the evaluation reports: the one list every section and figure reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdrindex.reconstruct import RECONSTRUCTORS

__all__ = [
    "SDR_METHODS",
    "REFERENCE_METHODS",
    "SDR_VARIANTS",
    "FIGURE_METHODS",
    "NOISE_FRACTIONS",
    "sdr_method_rows",
]

#: Reconstructors from SDRs reported, one row each under its registered name (``decoder``
#: is the bundle's default decoder model); also the methods measured under noise.
SDR_METHODS: tuple[str, ...] = tuple(RECONSTRUCTORS)
#: Reference rows measured beside them (no SDR involved).
REFERENCE_METHODS: tuple[str, ...] = ("pixel_oracle", "mean_image", "pca", "matching_pursuit")
#: Variants of the SDR methods reported after them: (row, reconstructor, parameters).
SDR_VARIANTS: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("backprojection_topk", "backprojection", {"rule": "topk"}),
    ("backprojection_max", "backprojection", {"rule": "max"}),
    ("backprojection_weighted", "backprojection", {"weighted": True}),
)
#: Rows drawn in the comparison figure, top to bottom.
FIGURE_METHODS: tuple[str, ...] = (*SDR_METHODS, "pixel_oracle", "pca")
#: Fractions of each query's active bits swapped for random inactive ones.
NOISE_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def sdr_method_rows(
    k_blend: int, decoder: Mapping[str, Any], default_model: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """The reconstruction rows from SDRs, in report order: (row, reconstructor, parameters).

    Every :data:`SDR_METHODS` entry (``knn`` blending ``k_blend`` neighbours), then a row
    per stored decoder model other than the default (``decoder_ridge``, ``decoder_mlp``),
    then :data:`SDR_VARIANTS`.
    """
    rows = [(name, name, {"k": k_blend} if name == "knn" else {}) for name in SDR_METHODS]
    for model, key in (("ridge", "ridge_coef"), ("mlp", "mlp_coef_0")):
        if key in decoder and model != default_model:
            rows.append((f"decoder_{model}", "decoder", {"model": model}))
    rows += [(row, name, dict(params)) for row, name, params in SDR_VARIANTS]
    return rows
