"""``evaluate``: the report sections composed into one run over the MNIST test set."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import ParameterError
from sdrindex.evaluate.methods import NOISE_FRACTIONS, SDR_METHODS
from sdrindex.evaluate.reconstruction import (
    PixelClassifierSection,
    ReconstructionRow,
    Reconstructions,
    pixel_classifier_section,
    reference_reconstructions,
    sdr_reconstructions,
    with_decoder,
)
from sdrindex.evaluate.sections import (
    Classification,
    IndexRow,
    Log,
    NoiseSection,
    Section,
    SPStats,
    TestSet,
    classification_section,
    encode_queries,
    find_neighbours,
    index_section,
    load_test_set,
    noise_section,
    sp_stats,
)
from sdrindex.labels import KNNLabeler, LogisticLabeler

__all__ = ["Report", "evaluate"]


@dataclass
class Report(Section):
    """The whole evaluation; ``to_dict()`` is the report (``report.json`` without the keys
    starting with ``_``)."""

    n_queries: int
    n_train: int
    bundle: str | None
    sp_params: dict[str, Any]
    encoder: dict[str, Any]
    index_backend: str
    settings: dict[str, Any]
    notes: list[str]
    encode_ms_per_query: float
    classification: Classification
    pixel_classifier: PixelClassifierSection
    reconstruction: dict[str, ReconstructionRow]
    index: dict[str, IndexRow]
    noise: NoiseSection
    sp: SPStats
    seconds: float
    #: Arrays for the comparison figure (originals, labels, dense SDRs, rows, column grid).
    figure: dict[str, Any] = field(default_factory=dict, metadata={"key": "_figure"})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        noise = out.pop("noise")
        rest = {k: out.pop(k) for k in ("sp", "seconds", "_figure")}
        out["noise"] = [row.to_dict() for row in noise.rows]
        if noise.drop_at_30pct_points is not None:
            out["noise_drop_at_30pct_points"] = noise.drop_at_30pct_points
        return {**out, **rest}


def _logger(verbose: bool) -> Log:
    def log(msg: str) -> None:
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    return log


def _figure(
    test_images: NDArray,
    test_labels: NDArray,
    queries: NDArray,
    bundle: Any,
    rows: dict[str, NDArray],
    n_figure: int,
) -> dict[str, Any]:
    return {
        "images": test_images[:n_figure],
        "labels": test_labels[:n_figure],
        "sdrs": np.unpackbits(queries[:n_figure], axis=1, count=int(bundle.sp.n_columns)),
        "rows": rows,
        "column_dimensions": tuple(int(d) for d in bundle.sp.column_dimensions),
    }


def _bundle_facts(bundle: Any) -> dict[str, Any]:
    """The report's description of the bundle evaluated."""
    return {
        "n_train": int(len(bundle.table)),
        "bundle": str(bundle.path) if bundle.path else None,
        "sp_params": bundle.sp.nupic_params(),
        "encoder": dict(bundle.encoder),
        "index_backend": bundle.index.backend,
    }


def _labels(
    bundle: Any,
    test: TestSet,
    queries: NDArray[np.uint8],
    k_vote: int,
    kmax: int,
    notes: list[str],
) -> tuple[Classification, KNNLabeler, LogisticLabeler]:
    """The classification section and the two labelers (the noise section reuses them);
    a note when the logistic readout had to be trained."""
    neighbours = find_neighbours(bundle, queries, kmax)
    knn = KNNLabeler(bundle, k=k_vote)
    t = time.perf_counter()
    logistic = LogisticLabeler(bundle)
    fit_s = time.perf_counter() - t
    classification = classification_section(bundle, test, queries, neighbours, knn, logistic)
    if fit_s > 0.5:
        notes.append(
            f"the logistic readout was trained during the evaluation ({fit_s:.0f} s); "
            "`sdrindex build --decoder` stores it in the bundle"
        )
    return classification, knn, logistic


def _reconstructions(
    bundle: Any,
    test: TestSet,
    queries: NDArray[np.uint8],
    k_blend: int,
    mp_limit: int | None,
    mp_tol: float | None,
    n_figure: int,
    seed: int,
    log: Log,
    notes: list[str],
) -> tuple[PixelClassifierSection, Reconstructions, Reconstructions]:
    """The pixel classifier, the rows from SDRs and the reference rows; a note when a
    decoder had to be trained for the run."""
    log("fitting the pixel-space classifier...")
    clf, pixel_section = pixel_classifier_section(bundle, test)
    view, note = with_decoder(bundle, log)
    notes += [note] if note else []
    sdr = sdr_reconstructions(view, test, queries, clf, k_blend, n_figure, log)
    refs = reference_reconstructions(
        bundle,
        test,
        queries,
        clf,
        mp_limit=mp_limit,
        mp_tol=mp_tol,
        n_figure=n_figure,
        seed=seed,
        log=log,
    )
    return pixel_section, sdr, refs


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

    The bundle is read, never changed: a readout or decoder it lacks is fitted for this run
    only (and the report's notes say so).

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
    noise_fractions : tuple of float
        Fractions of active bits swapped in the ``noise`` section.
    mp_limit : int, optional
        Matching pursuit is slow (a Python loop per image inside scikit-learn): it runs on
        the first ``mp_limit`` queries only (its row says how many).
    mp_tol : float, optional
        Matching pursuit's residual threshold (mean squared error per pixel); its atom budget
        is the SDRs' mean number of active bits. It stops at whichever comes first.
    n_figure : int
        Test images drawn in the comparison figure.

    Returns
    -------
    dict
        :meth:`Report.to_dict`: see :mod:`sdrindex.evaluate`; private arrays for the
        figures are under keys starting with ``_`` and are not written to ``report.json``.
    """
    if bundle.table.labels is None:
        raise ParameterError("evaluate needs a bundle with labels (built from MNIST)")
    t_start = time.perf_counter()
    log = _logger(verbose)
    test = load_test_set(limit, data_dir)
    notes: list[str] = []
    log(f"encoding {test.n} test images...")
    encoded = encode_queries(bundle, test.images)
    queries = encoded.queries

    log("classification from SDRs...")
    kmax = max(k_vote, k_blend, 10)
    classification, knn, logistic = _labels(bundle, test, queries, k_vote, kmax, notes)

    pixel_section, sdr, refs = _reconstructions(
        bundle, test, queries, k_blend, mp_limit, mp_tol, n_figure, seed, log, notes
    )

    log("index: recall and speed per backend...")
    index = index_section(bundle, queries, backends, log)
    log("noise robustness...")
    noisy_methods = {m: sdr.reconstructors[m] for m in SDR_METHODS}
    noise = noise_section(
        bundle, test, queries, noise_fractions, kmax, knn, logistic, noisy_methods, seed
    )
    return Report(
        n_queries=test.n,
        **_bundle_facts(bundle),
        settings={"k_vote": k_vote, "k_blend": k_blend, "seed": seed},
        notes=notes,
        encode_ms_per_query=encoded.ms_per_query,
        classification=classification,
        pixel_classifier=pixel_section,
        reconstruction={**sdr.rows, **refs.rows},
        index=index,
        noise=noise,
        sp=sp_stats(bundle, queries),
        seconds=time.perf_counter() - t_start,
        figure=_figure(
            test.images, test.labels, queries, bundle, {**sdr.figure, **refs.figure}, n_figure
        ),
    ).to_dict()
