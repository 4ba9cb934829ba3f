"""Reconstructors, labelers and the matching-pursuit baseline on a small MNIST bundle."""

from __future__ import annotations

import numpy as np
import pytest

from sdrindex.baselines import MatchingPursuitCoder
from sdrindex.bundle import Bundle
from sdrindex.datasets import load_mnist
from sdrindex.decoders import fit_backprojection, fit_logistic, train_decoder
from sdrindex.errors import ParameterError
from sdrindex.labels import KNNLabeler, LogisticLabeler, knn_vote, make_labeler
from sdrindex.pipeline import build_bundle
from sdrindex.reconstruct import (
    RECONSTRUCTORS,
    BackprojectionReconstructor,
    DecoderReconstructor,
    make_reconstructor,
)
from sdrindex.sdr import overlap
from sdrindex.sp import SpatialPooler

SMALL_SP = {
    "inputDimensions": [28, 28],
    "columnDimensions": [24, 24],
    "potentialRadius": 5,
    "potentialPct": 0.5,
    "globalInhibition": True,
    "localAreaDensity": 0.05,
    "synPermConnected": 0.2,
    "boostStrength": 2.0,
    "seed": 3,
}


def build_small(images, labels, backend="exact") -> Bundle:
    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    return build_bundle(images, labels, sp=sp, backend=backend, dataset={"source": "test"})


@pytest.fixture(scope="module")
def data():
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    return images[:600], labels[:600].astype(np.int64), test_images[:150], test_labels[:150]


@pytest.fixture(scope="module")
def bundle(data):
    images, labels, _, _ = data
    b = build_small(images, labels)
    b.decoder = {}
    b.decoder.update(train_decoder(b, "ridge", alpha=3.0))
    b.decoder.update(
        train_decoder(b, "mlp", hidden_layer_sizes=(64,), max_iter=40, learning_rate_init=3e-3)
    )
    return b


@pytest.fixture(scope="module")
def queries(bundle, data):
    return bundle.encode(data[2])


def _mse(a, b):
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.mark.parametrize(
    "name, params",
    [
        ("nearest", {}),
        ("knn", {"k": 5}),
        ("backprojection", {}),
        ("backprojection", {"weighted": True}),
        ("backprojection", {"rule": "topk"}),
        ("backprojection", {"rule": "max"}),
        ("decoder", {}),
        ("decoder", {"model": "ridge"}),
    ],
)
def test_shapes_and_ranges(bundle, queries, name, params):
    rec = make_reconstructor(name, bundle, **params)
    out = rec.reconstruct(queries)
    assert out.shape == (len(queries), 28, 28)
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    u8 = rec.reconstruct_uint8(queries[:3])
    assert u8.dtype == np.uint8 and u8.shape == (3, 28, 28)
    np.testing.assert_array_equal(u8, np.rint(out[:3] * 255).astype(np.uint8))
    # one SDR, dense layout, is accepted too
    dense = np.unpackbits(queries[:1], axis=1, count=bundle.sp.n_columns)
    np.testing.assert_allclose(rec.reconstruct(dense), out[:1], atol=1e-6)


def test_registered_names():
    assert set(RECONSTRUCTORS) == {"nearest", "knn", "backprojection", "decoder"}


def test_nearest_returns_the_stored_image(bundle):
    sdrs = np.asarray(bundle.table.sdrs)
    ov = overlap(sdrs, sdrs)
    self_ov = np.diag(ov).copy()
    np.fill_diagonal(ov, -1)
    unique = np.flatnonzero(ov.max(axis=1) < self_ov)[:50]
    assert unique.size >= 20
    out = make_reconstructor("nearest", bundle).reconstruct(sdrs[unique])
    np.testing.assert_array_equal(
        np.rint(out * 255).astype(np.uint8), np.asarray(bundle.table.images)[unique]
    )


def test_knn_with_k1_is_nearest_and_blend_beats_it(bundle, queries, data):
    near = make_reconstructor("nearest", bundle).reconstruct(queries)
    np.testing.assert_allclose(make_reconstructor("knn", bundle, k=1).reconstruct(queries), near)
    truth = data[2] / 255.0
    blend = make_reconstructor("knn", bundle, k=10).reconstruct(queries)
    assert _mse(blend, truth) < _mse(near, truth)


def test_decoder_beats_the_mean_image(bundle, queries, data):
    truth = data[2] / 255.0
    mean_image = np.asarray(bundle.table.images).mean(axis=0) / 255.0
    base = _mse(np.broadcast_to(mean_image, truth.shape), truth)
    for model in ("ridge", "mlp"):
        rec = make_reconstructor("decoder", bundle, model=model)
        assert rec.model == model
        assert _mse(rec.reconstruct(queries), truth) < 0.9 * base, model


def test_calibrated_backprojection_beats_raw_and_mean(bundle, queries, data):
    truth = data[2] / 255.0
    mean_image = np.asarray(bundle.table.images).mean(axis=0) / 255.0
    base = _mse(np.broadcast_to(mean_image, truth.shape), truth)
    affine = make_reconstructor("backprojection", bundle).reconstruct(queries)
    raw = make_reconstructor("backprojection", bundle, rule="max").reconstruct(queries)
    assert _mse(affine, truth) < _mse(raw, truth)
    assert _mse(affine, truth) < base


def test_backprojection_raw_map_is_the_sp_inverse(bundle, queries):
    rec = BackprojectionReconstructor(bundle)
    raw = rec.raw_map(queries[:4])
    dense = np.unpackbits(queries[:4], axis=1, count=bundle.sp.n_columns)
    np.testing.assert_allclose(raw.reshape(4, -1), bundle.sp.inverse_transform(dense))
    # raw counts are integers: number of active columns connected to the pixel
    assert np.array_equal(raw, np.rint(raw)) and raw.max() >= 1


def test_backprojection_uses_stored_calibration(bundle, queries):
    arrays = fit_backprojection(bundle)
    scale_key = "backprojection_connected_scale"
    assert arrays[scale_key].shape == (784,)
    fake = dict(bundle.decoder)
    fake[scale_key] = np.zeros(784, np.float32)
    fake["backprojection_connected_offset"] = np.full(784, 0.25, np.float32)
    other = Bundle(sp=bundle.sp, table=bundle.table, index=bundle.index, decoder=fake)
    out = make_reconstructor("backprojection", other).reconstruct(queries[:3])
    np.testing.assert_allclose(out, 0.25)


def test_decoder_survives_save_and_load(bundle, queries, tmp_path):
    dec = {**bundle.decoder, **fit_backprojection(bundle), **fit_logistic(bundle)}
    b = Bundle(sp=bundle.sp, table=bundle.table, index=bundle.index, decoder=dec)
    b.save(tmp_path / "bd")
    loaded = Bundle.load(tmp_path / "bd")
    assert set(loaded.decoder) == set(dec)
    for name, params in [("decoder", {"model": "ridge"}), ("decoder", {}), ("backprojection", {})]:
        np.testing.assert_allclose(
            make_reconstructor(name, loaded, **params).reconstruct(queries),
            make_reconstructor(name, b, **params).reconstruct(queries),
            atol=1e-5,
        )
    np.testing.assert_array_equal(
        LogisticLabeler(loaded).predict(queries), LogisticLabeler(b).predict(queries)
    )


def test_missing_decoder_and_bad_names(bundle):
    bare = Bundle(sp=bundle.sp, table=bundle.table, index=bundle.index)
    with pytest.raises(ParameterError, match="--decoder"):
        make_reconstructor("decoder", bare)
    with pytest.raises(ParameterError, match="unknown reconstruction method"):
        make_reconstructor("magic", bundle)
    with pytest.raises(ParameterError, match="bad parameters"):
        make_reconstructor("nearest", bundle, k=3)
    with pytest.raises(ParameterError, match="k must be"):
        make_reconstructor("knn", bundle, k=0)
    with pytest.raises(ParameterError, match="rule"):
        make_reconstructor("backprojection", bundle, rule="nope")
    with pytest.raises(ParameterError, match="model"):
        DecoderReconstructor(bundle, model="svm")


def test_labelers(bundle, queries, data):
    labels = data[3]
    knn = make_labeler("knn", bundle, k=5)
    assert isinstance(knn, KNNLabeler)
    pred = knn.predict(queries)
    assert pred.shape == (len(queries),) and np.mean(pred == labels) > 0.6
    b = Bundle(sp=bundle.sp, table=bundle.table, index=bundle.index, decoder={})
    log = make_labeler("logistic", b)
    assert b.decoder == {} and log.fitted  # trained here, kept in the labeler
    b.decoder.update(log.arrays)  # what a caller does to keep it for saving
    stored = make_labeler("logistic", b)
    assert not stored.fitted
    np.testing.assert_array_equal(stored.predict(queries), log.predict(queries))
    proba = log.predict_proba(queries)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.mean(log.predict(queries) == labels) > 0.6
    with pytest.raises(ParameterError, match="unknown label method"):
        make_labeler("svm", bundle)


def test_matching_pursuit_budget_and_tolerance(data):
    images, _, test_images, _ = data
    truth = test_images[:20] / 255.0
    errors = []
    for budget in (5, 40):
        mp = MatchingPursuitCoder(n_atoms=budget, n_patches=16, stride=3).fit(images)
        codes = mp.transform(test_images[:20])
        assert codes.shape == (20, mp.dictionary_.shape[0])
        assert ((codes != 0).sum(axis=1) <= budget).all()
        out = mp.inverse_transform(codes)
        assert out.shape == (20, 28, 28) and out.min() >= 0 and out.max() <= 1
        errors.append(_mse(out, truth))
    assert errors[1] < errors[0]
    mp = MatchingPursuitCoder(n_atoms=40, tol=0.01, n_patches=16).fit(images)
    codes = mp.transform(test_images[:20])
    assert ((codes != 0).sum(axis=1) <= 40).all()
    res = ((codes @ mp.dictionary_ - truth.reshape(20, -1)) ** 2).mean(axis=1)
    stopped_early = (codes != 0).sum(axis=1) < 40
    assert stopped_early.any() and (res[stopped_early] <= 0.01 + 1e-9).all()


def _decoder_snapshot(bundle):
    return None if bundle.decoder is None else dict(bundle.decoder)


def _assert_same_decoder(bundle, before):
    if before is None:
        assert bundle.decoder is None
        return
    assert set(bundle.decoder) == set(before)
    for key, arr in before.items():
        assert bundle.decoder[key] is arr, key


@pytest.mark.parametrize("decoder", [None, {}, "ridge only"])
def test_fitting_on_demand_leaves_the_bundle_alone(bundle, queries, decoder):
    """A labeler or reconstructor that fits what the bundle lacks keeps it to itself."""
    if decoder == "ridge only":
        decoder = {k: bundle.decoder[k] for k in ("ridge_coef", "ridge_intercept")}
    b = Bundle(sp=bundle.sp, table=bundle.table, index=bundle.index, decoder=decoder)
    before = _decoder_snapshot(b)
    log = LogisticLabeler(b)
    assert log.fitted and set(log.arrays) == {
        "logistic_coef",
        "logistic_intercept",
        "logistic_classes",
    }
    rec = BackprojectionReconstructor(b)  # calibrated here: no stored calibration
    rec.reconstruct(queries[:3])
    _assert_same_decoder(b, before)


def test_knn_vote_weights_ties_and_missing():
    classes = np.array([3, 7, 9])
    labels = np.array([[7, 3, 3], [9, 7, 7], [3, 9, 9]])
    overlaps = np.array([[10, 6, 6], [5, 5, 0], [4, 4, 4]])
    valid = np.array([[True, True, True], [True, True, True], [True, False, False]])
    # row 0: 3 outvotes 7 (12 > 10); row 1: 9 ties 7, nearest breaks it; row 2: only 3 votes
    np.testing.assert_array_equal(knn_vote(labels, overlaps, classes, valid=valid), [3, 9, 3])
    # power 0: one vote each, so 7 wins row 1 (2 against 1)
    np.testing.assert_array_equal(knn_vote(labels, overlaps, classes, power=0.0)[1], 7)
