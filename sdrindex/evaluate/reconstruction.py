"""The report's reconstruction rows: the ways back from SDRs and the references beside them.

Each row holds MSE and PSNR on [0, 1] pixels, SSIM, the accuracy of the fixed pixel-space
classifier on the reconstructions and the time per query (batched, including the index
search and any encoding the method does). References, measured in the same run:
``pixel_oracle`` (the training image nearest in pixel space, the best any retrieval can do),
``mean_image``, ``pca`` (as many components as the SDRs have active bits) and
``matching_pursuit`` (:class:`~sdrindex.baselines.MatchingPursuitCoder` at the same atom
budget).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.baselines import MatchingPursuitCoder
from sdrindex.decoders import train_decoder
from sdrindex.evaluate.methods import sdr_method_rows
from sdrindex.evaluate.metrics import PixelClassifier, flat01, mean_ssim, mse, pixel_oracle, psnr
from sdrindex.evaluate.sections import Log, Section, TestSet
from sdrindex.reconstruct import DecoderReconstructor, make_reconstructor

__all__ = [
    "ReconstructionRow",
    "Reconstructions",
    "PixelClassifierSection",
    "score",
    "pixel_classifier_section",
    "with_decoder",
    "sdr_reconstructions",
    "reference_reconstructions",
]


@dataclass
class ReconstructionRow(Section):
    """One method's reconstruction quality; ``extra`` holds its own fields (``params``,
    ``model``, ``n_components``...), reported after the common ones."""

    mse: float
    psnr: float
    ssim: float
    label_accuracy: float
    ms_per_query: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        common = {k: v for k, v in super().to_dict().items() if k != "extra"}
        return {**common, **self.extra}


def score(
    truth01: NDArray, rec: NDArray, labels: NDArray, clf: PixelClassifier, seconds: float
) -> ReconstructionRow:
    """Compare reconstructions (n, H, W) with the truth (n, H, W), both on [0, 1]."""
    m = mse(truth01, rec)
    return ReconstructionRow(
        mse=m,
        psnr=psnr(m),
        ssim=mean_ssim(truth01, rec),
        label_accuracy=float(np.mean(clf.predict(rec) == labels)),
        ms_per_query=1000.0 * seconds / max(len(rec), 1),
    )


@dataclass
class Reconstructions:
    """Rows by name, the first reconstructions of each for the figure, and the SDR
    reconstructors used (name -> object, for the noise section)."""

    rows: dict[str, ReconstructionRow] = field(default_factory=dict)
    figure: dict[str, NDArray] = field(default_factory=dict)
    reconstructors: dict[str, Any] = field(default_factory=dict)


@dataclass
class PixelClassifierSection(Section):
    """The pixel-space classifier and its accuracy on the original test images."""

    description: str
    accuracy_on_originals: float


def pixel_classifier_section(
    bundle: Any, test: TestSet
) -> tuple[PixelClassifier, PixelClassifierSection]:
    """Fit the pixel-space classifier on the bundle's training images; score the originals."""
    clf = PixelClassifier().fit(np.asarray(bundle.table.images), np.asarray(bundle.table.labels))
    accuracy = float(np.mean(clf.predict(test.truth) == test.labels))
    return clf, PixelClassifierSection(PixelClassifier.description, accuracy)


def with_decoder(bundle: Any, log: Log) -> tuple[Any, str | None]:
    """A shallow copy of ``bundle`` with its own decoder dict, holding a Ridge decoder.

    When the bundle has no decoder one is trained into the copy's dict (the caller's bundle
    is never changed). Returns the copy and a note for the report (None if nothing was
    trained).
    """
    view = copy.copy(bundle)
    view.decoder = dict(bundle.decoder or {})
    if "ridge_coef" in view.decoder or "mlp_coef_0" in view.decoder:
        return view, None
    log("  the bundle has no decoder: training a Ridge decoder...")
    t = time.perf_counter()
    view.decoder.update(train_decoder(bundle, "ridge"))
    note = (
        f"the bundle had no decoder: a Ridge decoder was trained during the evaluation "
        f"({time.perf_counter() - t:.0f} s); build with `sdrindex build --decoder`"
    )
    return view, note


def sdr_reconstructions(
    bundle: Any,
    test: TestSet,
    queries: NDArray[np.uint8],
    clf: PixelClassifier,
    k_blend: int,
    n_figure: int,
    log: Log,
) -> Reconstructions:
    """Every reconstruction from the query SDRs (:func:`~.methods.sdr_method_rows`), timed
    after a warm-up call. ``bundle`` must hold a decoder (see :func:`with_decoder`)."""
    out = Reconstructions()
    default_model = DecoderReconstructor(bundle).model
    for row, name, params in sdr_method_rows(k_blend, bundle.decoder, default_model):
        log(f"reconstruction: {row}...")
        rec = make_reconstructor(name, bundle, **params)
        out.reconstructors[row] = rec
        rec.reconstruct(queries[:2])  # warm-up
        t = time.perf_counter()
        images = rec.reconstruct(queries)
        secs = time.perf_counter() - t
        out.rows[row] = score(test.truth, images, test.labels, clf, secs)
        out.rows[row].extra["params"] = params
        if name == "decoder":
            out.rows[row].extra["model"] = rec.model
        out.figure[row] = images[:n_figure]
    return out


def _pixel_oracle_row(train01: NDArray, test: TestSet, clf: PixelClassifier):
    t = time.perf_counter()
    pos = pixel_oracle(train01, test.truth.reshape(test.n, -1))
    images = train01[pos].reshape(test.truth.shape)
    return score(test.truth, images, test.labels, clf, time.perf_counter() - t), images


def _mean_image_row(train01: NDArray, test: TestSet, clf: PixelClassifier):
    t = time.perf_counter()
    mean_img = train01.mean(axis=0)
    images = np.broadcast_to(mean_img.reshape(test.truth.shape[1:]), test.truth.shape)
    return score(test.truth, images, test.labels, clf, time.perf_counter() - t), images


def _pca_row(train01: NDArray, test: TestSet, clf: PixelClassifier, n_active: int, seed: int):
    from sklearn.decomposition import PCA

    n_comp = min(n_active, *train01.shape)
    pca = PCA(n_components=n_comp, random_state=seed).fit(train01)
    t = time.perf_counter()
    images = np.clip(pca.inverse_transform(pca.transform(test.truth.reshape(test.n, -1))), 0, 1)
    images = images.reshape(test.truth.shape).astype(np.float32)
    row = score(test.truth, images, test.labels, clf, time.perf_counter() - t)
    row.extra["n_components"] = n_comp
    return row, images


def _matching_pursuit_row(
    train_images: NDArray,
    test: TestSet,
    clf: PixelClassifier,
    n_active: int,
    n_mp: int,
    tol: float | None,
    seed: int,
):
    mp = MatchingPursuitCoder(n_atoms=n_active, tol=tol, seed=seed).fit(train_images)
    t = time.perf_counter()
    codes = mp.transform(test.images[:n_mp])
    images = mp.inverse_transform(codes)
    secs = time.perf_counter() - t
    row = score(test.truth[:n_mp], images, test.labels[:n_mp], clf, secs)
    row.extra.update(
        {
            "n_atoms": n_active,
            "tol": tol,
            "mean_atoms_used": float((codes != 0).sum(axis=1).mean()),
            "n_dictionary": int(mp.dictionary_.shape[0]),
            "n_queries": n_mp,
        }
    )
    return row, images


def reference_reconstructions(
    bundle: Any,
    test: TestSet,
    queries: NDArray[np.uint8],
    clf: PixelClassifier,
    *,
    mp_limit: int | None,
    mp_tol: float | None,
    n_figure: int,
    seed: int,
    log: Log,
) -> Reconstructions:
    """The reference rows (``REFERENCE_METHODS``); PCA and matching pursuit get as many
    components / atoms as the query SDRs have active bits on average."""
    out = Reconstructions()
    train_images = np.asarray(bundle.table.images)
    train01 = flat01(train_images)
    n_bits = int(bundle.sp.n_columns)
    n_active = max(1, int(round(np.unpackbits(queries, axis=1, count=n_bits).sum(1).mean())))
    log("reference: pixel-space nearest neighbour...")
    out.rows["pixel_oracle"], images = _pixel_oracle_row(train01, test, clf)
    out.figure["pixel_oracle"] = images[:n_figure]
    out.rows["mean_image"], _ = _mean_image_row(train01, test, clf)
    log(f"reference: PCA with {n_active} components...")
    out.rows["pca"], images = _pca_row(train01, test, clf, n_active, seed)
    out.figure["pca"] = images[:n_figure]
    n_mp = test.n if not mp_limit else min(test.n, int(mp_limit))
    log(f"reference: matching pursuit, <= {n_active} atoms, {n_mp} images...")
    out.rows["matching_pursuit"], images = _matching_pursuit_row(
        train_images, test, clf, n_active, n_mp, mp_tol, seed
    )
    out.figure["matching_pursuit"] = images[: min(n_figure, n_mp)]
    return out
