"""Preprocessing before the SP (deskew, blur, thermometer planes) and its path through bundles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import affine_transform

from sdrindex.bundle import Bundle
from sdrindex.datasets import binarize, load_mnist
from sdrindex.errors import ParameterError
from sdrindex.evaluate import format_sweep, sweep
from sdrindex.evaluate.grid import _pixel_knn
from sdrindex.pipeline import build_bundle
from sdrindex.preprocess import (
    Preprocess,
    blur,
    deskew,
    encode_input,
    input_image,
    input_size,
    thermometer,
)
from sdrindex.reconstruct import BackprojectionReconstructor
from sdrindex.sp import SpatialPooler

SP3 = {  # a small SP over three input planes per pixel
    "inputDimensions": [28, 28, 3],
    "columnDimensions": [16, 16, 1],
    "potentialRadius": 5,
    "potentialPct": 0.3,
    "globalInhibition": True,
    "numActiveColumnsPerInhArea": 12,
    "boostStrength": 1.0,
    "seed": 7,
}


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist("train")
    return images[:400], labels[:400]


def _scipy_deskew(img: np.ndarray) -> np.ndarray:
    """The textbook moments deskew (scipy), zeros interpolated in past the edges."""
    img = img.astype(np.float64)
    c0, c1 = np.mgrid[: img.shape[0], : img.shape[1]]
    total = img.sum()
    m0, m1 = (c0 * img).sum() / total, (c1 * img).sum() / total
    alpha = ((c0 - m0) * (c1 - m1) * img).sum() / ((c0 - m0) ** 2 * img).sum()
    affine = np.array([[1.0, 0.0], [alpha, 1.0]])
    offset = np.array([m0, m1]) - affine @ (np.array(img.shape) / 2.0)
    return affine_transform(img, affine, offset=offset, order=1, mode="grid-constant")


def test_deskew_matches_the_scipy_moments_deskew(digits):
    images = digits[0][:50]
    ours = deskew(images)
    ref = np.clip(np.stack([_scipy_deskew(x) for x in images]), 0, 255)
    assert ours.shape == images.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=0.05)


def test_deskew_straightens_a_slanted_bar_and_keeps_blanks():
    img = np.zeros((1, 28, 28), np.uint8)
    for r in range(6, 22):  # a bar leaning right: one column over per two rows
        img[0, r, 10 + (21 - r) // 2] = 255
    out = deskew(img)[0]
    rows, cols = np.nonzero(out > 64)
    assert np.ptp(cols) <= 2 < np.ptp(np.nonzero(img[0])[1])  # upright now
    com = np.array([(out * np.arange(28)[:, None]).sum(), (out * np.arange(28)).sum()])
    np.testing.assert_allclose(com / out.sum(), [14.0, 14.0], atol=0.6)  # and centred
    assert not deskew(np.zeros((2, 28, 28), np.uint8)).any()
    np.testing.assert_array_equal(deskew(img), deskew(img))  # deterministic


def test_blur_spreads_a_point_symmetrically_and_keeps_its_mass():
    img = np.zeros((1, 28, 28), np.float32)
    img[0, 14, 14] = 200.0
    out = blur(img, 1.0)[0]
    assert out.sum() == pytest.approx(200.0, rel=1e-5)
    assert out[14, 14] == out.max() < 200
    np.testing.assert_allclose(out, out.T, atol=1e-5)
    win = out[10:19, 10:19]  # centred on the point
    np.testing.assert_allclose(win, win[::-1, ::-1], atol=1e-5)
    np.testing.assert_array_equal(blur(img, 0.0), img)


def test_thermometer_planes_are_pixel_major_and_monotone(digits):
    images = digits[0][:20]
    bits = thermometer(images, (32, 128, 224))
    assert bits.shape == (20, 28 * 28 * 3) and set(np.unique(bits)) <= {0, 1}
    planes = bits.reshape(20, 28, 28, 3)
    for p, t in enumerate((32, 128, 224)):
        np.testing.assert_array_equal(planes[..., p], images >= t)
    assert (planes[..., 0] >= planes[..., 1]).all() and (planes[..., 1] >= planes[..., 2]).all()


def test_original_planes_come_first_then_the_deskewed_ones(digits):
    images = digits[0][:10]
    p = Preprocess(deskew=True, planes=(64, 192), original=True)
    bits = p.input_bits(images).reshape(10, 28, 28, 4)
    np.testing.assert_array_equal(bits[..., :2].reshape(10, -1), thermometer(images, (64, 192)))
    np.testing.assert_array_equal(
        bits[..., 2:].reshape(10, -1), thermometer(deskew(images), (64, 192))
    )
    assert p.n_planes == 4 and input_size((28, 28), p.to_dict()) == 28 * 28 * 4


def test_encoder_without_preprocess_is_binarize_bit_for_bit(digits):
    images = digits[0][:30]
    for t in (128, "mean", 1):
        np.testing.assert_array_equal(
            encode_input(images, {"threshold": t}), binarize(images, t).reshape(30, -1)
        )


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"deskw": True}, "unknown keys"),
        ({"planes": [128, 64]}, "increasing"),
        ({"planes": [0, 64]}, "1..255"),
        ({"planes": 64}, "must be a list"),
        ({"blur": -1}, "sigma"),
        ({"blur": "x"}, "sigma"),
        ({"deskew": "yes"}, "true or false"),
        ({"original": True}, "needs deskew"),
    ],
)
def test_bad_preprocess_tables_are_refused_by_name(spec, match):
    with pytest.raises(ParameterError, match=match):
        Preprocess.from_dict(spec)


def test_bundle_applies_its_preprocessing_to_queries(tmp_path, digits):
    images, labels = digits
    prep = {"deskew": True, "blur": 0.5, "planes": [32, 128, 224]}
    sp = SpatialPooler.from_nupic_params(dict(SP3))
    bundle = build_bundle(images, labels, sp=sp, preprocess=prep, backend="exact")
    assert bundle.encoder["preprocess"] == {**prep, "blur": 0.5}
    bundle.save(tmp_path / "b")
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.encoder["preprocess"]["planes"] == [32, 128, 224]
    # a stored image queried again encodes to its stored SDR: the same preprocessing ran
    np.testing.assert_array_equal(loaded.encode(images[:50]), np.asarray(loaded.table.sdrs)[:50])
    direct = sp.transform(Preprocess.from_dict(prep).input_bits(images[:50]), packed=True)
    np.testing.assert_array_equal(loaded.encode(images[:50]), direct)
    ids, _ = loaded.index.query(loaded.encode(images[:50]), 1)
    assert (ids[:, 0] == np.arange(50)).mean() > 0.9
    # the back-projection folds the planes back onto the image's pixels
    rec = BackprojectionReconstructor(loaded).reconstruct(loaded.encode(images[:5]))
    assert rec.shape == (5, 28, 28) and np.isfinite(rec).all()


def test_build_refuses_an_sp_whose_inputs_do_not_match_the_planes(digits):
    sp = SpatialPooler.from_nupic_params(dict(SP3))  # 3 planes
    with pytest.raises(ParameterError, match="planes"):
        build_bundle(digits[0][:50], sp=sp, preprocess={"planes": [64, 128]}, backend="exact")
    with pytest.raises(ParameterError, match="unknown keys"):
        build_bundle(digits[0][:50], sp=sp, preprocess={"plane": [1, 2, 3]}, backend="exact")


def test_pixel_knn_agrees_with_scikit_learn(digits):
    from sklearn.neighbors import KNeighborsClassifier

    images, labels = digits
    train, test = images[:300].astype(np.float32), images[300:].astype(np.float32)
    ours = _pixel_knn(train, labels[:300], test, [1, 5], chunk=37)
    for k in (1, 5):
        ref = KNeighborsClassifier(k, algorithm="brute").fit(train.reshape(300, -1), labels[:300])
        agree = np.mean(ours[k] == ref.predict(test.reshape(100, -1)))
        # k = 5: sklearn breaks vote ties to the smaller label, ours to the nearest item
        assert agree == 1.0 if k == 1 else agree >= 0.97


def test_sweep_rows_report_pixel_and_sdr_accuracy_on_the_same_input(tmp_path):
    grid = {
        "base": "forum-global",
        "limit_train": 300,
        "limit_test": 60,
        "k": [1, 3],
        "configs": [
            {"name": "plain", "columnDimensions": [12, 12]},
            {"name": "deskew", "columnDimensions": [12, 12], "deskew": True},
            {"name": "planes", "columnDimensions": [12, 12], "deskew": True, "planes": [64, 192]},
        ],
    }
    rows = sweep(grid)
    assert [r["preprocess"] for r in rows][:2] == [{}, {"deskew": True}]
    assert rows[2]["params"]["inputDimensions"] == [28, 28, 2]
    # same grey images, same pixel k-NN; deskewing changes it
    assert rows[1]["pixel_knn1_accuracy"] == rows[2]["pixel_knn1_accuracy"]
    assert rows[0]["pixel_knn1_accuracy"] != rows[1]["pixel_knn1_accuracy"]
    for r in rows:
        for key in ("nearest_mse", "knn_mse", "backprojection_mse", "decoder_mse"):
            assert 0 < r[key] < 0.2
        assert -100 <= r["noise_drop_points"] <= 100
    table = format_sweep(rows)
    assert "pixel 1-NN" in table and "decoder MSE" in table and table.count("\n") == 4
    assert "deskew, planes 64/192" in table


def test_warm_up_runs_an_sp_over_planes():
    """The warm-up (sdrindex.warmup) feeds a planes SP 2-D images through planes, as builds do."""
    from sdrindex.warmup import warm_up

    sp = SpatialPooler.from_nupic_params(dict(SP3))
    warm_up(sp.get_params(), backend="exact", decoders=())  # raised a shape error before


def test_blurred_full_white_stays_in_range_for_binarize():
    img = np.full((1, 28, 28), 255, np.uint8)  # float rounding once gave 255.00003
    out = blur(img, 0.5)
    assert out.max() <= 255.0
    enc = encode_input(img, {"threshold": "mean", "preprocess": {"blur": 0.5}})
    assert enc.shape == (1, 784)


def test_deskew_preset_builds_a_bundle_that_deskews_its_queries(tmp_path, digits):
    from sdrindex.cli import main
    from sdrindex.sp import preprocess_for, threshold_for

    assert preprocess_for("sdrindex-mnist-deskew") == {"deskew": True}
    assert preprocess_for(None) == {"planes": [32, 128, 224]}  # the default preset's
    assert preprocess_for("sdrindex-mnist") is None and preprocess_for("forum-global") is None
    assert threshold_for("sdrindex-mnist-deskew") == "mean"
    args = ["build", "--out", str(tmp_path / "b"), "--limit", "300"]
    assert main([*args, "--config", "sdrindex-mnist-deskew", "--backend", "exact"]) == 0
    b = Bundle.load(tmp_path / "b")
    assert b.encoder["preprocess"]["deskew"] is True
    np.testing.assert_array_equal(b.encode(digits[0][:20]), np.asarray(b.table.sdrs)[:20])
    plain = b.sp.transform(binarize(digits[0][:20], "mean"), packed=True)
    assert not np.array_equal(b.encode(digits[0][:20]), plain)  # deskewed, not plain


def test_planes_preset_builds_queries_and_draws_through_its_planes(tmp_path, digits):
    from sdrindex.cli import main

    args = ["build", "--out", str(tmp_path / "b"), "--limit", "300", "--backend", "exact"]
    assert main([*args, "--config", "sdrindex-mnist-planes"]) == 0
    b = Bundle.load(tmp_path / "b")
    assert b.sp.n_inputs == 28 * 28 * 3 and b.encoder["preprocess"]["planes"] == [32, 128, 224]
    np.testing.assert_array_equal(b.encode(digits[0][:20]), np.asarray(b.table.sdrs)[:20])
    fig = ["figure", "--out", str(tmp_path / "f.png"), "--limit", "200", "--n", "4"]
    assert main([*fig, "--config", "sdrindex-mnist-planes"]) == 0  # binarize() alone: 784 inputs
    assert (tmp_path / "f.png").stat().st_size > 0


def test_input_image_shows_what_the_sp_sees(digits):
    images = digits[0][:5]
    one = input_image(images, {"threshold": 128})
    np.testing.assert_array_equal(one, binarize(images, 128).reshape(images.shape) * 255)
    three = input_image(images, {"threshold": 128, "preprocess": {"planes": [32, 128, 224]}})
    steps = (images >= 32).astype(int) + (images >= 128) + (images >= 224)
    np.testing.assert_array_equal(three, np.rint(steps / 3 * 255).astype(np.uint8))


def test_cli_learn_limit_defaults_to_the_presets_and_takes_all_or_a_number(tmp_path, digits):
    from sdrindex.cli import main
    from sdrindex.sp import learn_limit_for

    base = ["build", "--limit", "300", "--backend", "exact", "--config", "sdrindex-mnist-planes"]
    assert learn_limit_for("sdrindex-mnist-planes") == 15000  # more than these 300: all
    assert main([*base, "--out", str(tmp_path / "a"), "--learn-limit", "120"]) == 0
    assert Bundle.load(tmp_path / "a").dataset["sp_learned_on"] == 120
    assert main([*base, "--out", str(tmp_path / "b"), "--learn-limit", "all"]) == 0
    assert Bundle.load(tmp_path / "b").dataset["sp_learned_on"] == 300
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "c"), "--learn-limit", "some"])
    assert not (tmp_path / "c").exists()
