"""The decoder stage: the sparse-Gram Ridge equals sklearn's, the logistic readout matches
sklearn's accuracy, and the stored keys, shapes and dtypes stay what the bundle format says."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge

from sdrindex.decoders import fit_logistic, ridge_from_gram, sdr_gram, train_decoder

N_BITS = 203  # not a multiple of 8 or 64: the padding bits must not count


def fake_bundle(n=600, n_bits=N_BITS, n_classes=4, seed=0):
    """Labelled SDRs whose active bits depend on the label, with images to decode."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    prefer = rng.random((n_classes, n_bits)) < 0.15
    p = np.where(prefer[labels], 0.5, 0.05)
    dense = (rng.random((n, n_bits)) < p).astype(np.uint8)
    proj = rng.normal(size=(n_bits, 36))
    images = np.clip(dense @ proj * 20 + 100, 0, 255).astype(np.uint8).reshape(n, 6, 6)
    table = FakeTable(np.packbits(dense, axis=1), images, labels.astype(np.int64))
    return SimpleNamespace(sp=SimpleNamespace(n_columns=n_bits), table=table), dense, labels


class FakeTable:
    """What the decoders read of a TrainingTable."""

    def __init__(self, sdrs, images, labels):
        self.sdrs, self.images, self.labels = sdrs, images, labels

    def __len__(self):
        return len(self.sdrs)


def test_gram_counts_pairs_of_active_bits():
    _, dense, _ = fake_bundle()
    values = np.arange(dense.shape[0] * 3).reshape(-1, 3) % 256
    gram = sdr_gram(np.packbits(dense, axis=1), N_BITS, values.astype(np.uint8))
    full = dense.T.astype(np.int64) @ dense
    assert np.array_equal(np.triu(gram.counts), np.triu(full))
    assert np.array_equal(gram.col_counts, dense.sum(axis=0))
    assert np.array_equal(gram.xty, dense.T.astype(np.int64) @ values)
    assert np.array_equal(gram.v_sum, values.sum(axis=0))


@pytest.mark.parametrize("alpha", [0.5, 10.0])
def test_ridge_equals_sklearn(alpha):
    bundle, dense, _ = fake_bundle()
    arrays = train_decoder(bundle, "ridge", alpha=alpha)
    y = bundle.table.images.reshape(len(dense), -1) / 255.0
    ref = Ridge(alpha=alpha, fit_intercept=True).fit(dense.astype(np.float64), y)
    assert arrays["ridge_coef"].dtype == np.float32
    assert arrays["ridge_coef"].shape == (36, N_BITS)
    assert arrays["ridge_intercept"].dtype == np.float32
    assert arrays["ridge_intercept"].shape == (36,)
    scale = np.abs(ref.coef_).max()
    assert np.abs(arrays["ridge_coef"] - ref.coef_).max() <= 1e-5 * scale
    assert np.abs(arrays["ridge_intercept"] - ref.intercept_).max() <= 1e-5
    pred = dense @ arrays["ridge_coef"].T + arrays["ridge_intercept"]
    mse, ref_mse = ((pred - y) ** 2).mean(), ((ref.predict(dense) - y) ** 2).mean()
    assert mse == pytest.approx(ref_mse, rel=1e-5)


def test_ridge_from_gram_needs_values():
    _, dense, _ = fake_bundle(n=50)
    with pytest.raises(Exception, match="values"):
        ridge_from_gram(sdr_gram(np.packbits(dense, axis=1), N_BITS), 1.0)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_logistic_matches_sklearn(n_classes):
    bundle, dense, labels = fake_bundle(n_classes=n_classes)
    arrays = fit_logistic(bundle, C=0.1, max_iter=300, tol=1e-10)
    k = 1 if n_classes == 2 else n_classes
    assert arrays["logistic_coef"].shape == (k, N_BITS)
    assert arrays["logistic_coef"].dtype == np.float32
    assert arrays["logistic_intercept"].shape == (k,)
    assert arrays["logistic_intercept"].dtype == np.float32
    assert arrays["logistic_classes"].dtype == np.int64
    assert list(arrays["logistic_classes"]) == list(range(n_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = LogisticRegression(C=0.1, max_iter=1000, tol=1e-8).fit(dense, labels)
    # the same optimum: coefficients agree to the solvers' tolerance
    scale = np.abs(ref.coef_).max()
    assert np.abs(arrays["logistic_coef"] - ref.coef_).max() <= 2e-3 * scale
    scores = dense @ arrays["logistic_coef"].T + arrays["logistic_intercept"]
    pred = (scores[:, 0] > 0).astype(int) if k == 1 else scores.argmax(axis=1)
    assert (pred == ref.predict(dense)).mean() >= 0.99
    assert (pred == labels).mean() > 0.9


def test_logistic_default_tolerance_keeps_the_accuracy():
    bundle, dense, labels = fake_bundle(n=1000)
    arrays = fit_logistic(bundle)  # C=0.01, default stopping rule
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = LogisticRegression(C=0.01, max_iter=300).fit(dense, labels)
    pred = (dense @ arrays["logistic_coef"].T + arrays["logistic_intercept"]).argmax(axis=1)
    assert (pred == labels).mean() >= (ref.predict(dense) == labels).mean() - 0.01


def test_logistic_needs_labels():
    bundle, _, _ = fake_bundle(n=50)
    bundle.table.labels = None
    with pytest.raises(Exception, match="no labels"):
        fit_logistic(bundle)


def test_pipeline_fits_decoders_while_the_graph_index_builds():
    import numba

    from sdrindex.datasets import load_mnist
    from sdrindex.decoders import train_decoders
    from sdrindex.pipeline import StageEvent, build_bundle
    from sdrindex.sp import SpatialPooler

    images, labels = load_mnist("train")
    images, labels = images[:300], labels[:300].astype(np.int64)
    params = {
        "inputDimensions": [28, 28],
        "columnDimensions": [16, 16],
        "potentialRadius": 5,
        "potentialPct": 0.5,
        "globalInhibition": True,
        "localAreaDensity": 0.05,
        "synPermConnected": 0.2,
        "seed": 5,
    }
    events: list[StageEvent] = []
    bundle = build_bundle(
        images,
        labels,
        sp=SpatialPooler.from_nupic_params(params),
        threshold=128,
        backend="nndescent",
        decoders="default",
        progress=events.append,
    )
    starts = [e for e in events if e.state == "start"]
    assert [e.stage for e in starts][-2:] == ["index", "decoders"]
    overlapped = "while the index built" in starts[-1].detail
    try:
        safe = numba.threading_layer() in ("omp", "tbb")
    except ValueError:
        safe = False
    assert overlapped == safe
    # the same arrays as the decoder stage run on its own, after the index
    alone = train_decoders(bundle, ("calibration", "ridge", "logistic"))
    assert set(alone) == set(bundle.decoder)
    for key, value in alone.items():
        np.testing.assert_allclose(bundle.decoder[key], value, rtol=1e-5, atol=1e-6)
