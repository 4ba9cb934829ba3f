"""The evaluation report (schema, files), its metrics, the sweep and the CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdrindex.bundle import Bundle
from sdrindex.cli import main
from sdrindex.datasets import load_mnist
from sdrindex.decoders import train_decoder
from sdrindex.evaluate import (
    REFERENCE_METHODS,
    SDR_METHODS,
    evaluate,
    format_sweep,
    load_grid,
    mean_ssim,
    mse,
    psnr,
    recall_at_k,
    sweep,
    write_report,
)
from sdrindex.pipeline import build_bundle
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


def build_small(images, labels) -> Bundle:
    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    return build_bundle(images, labels, sp=sp, backend="exact", dataset={"source": "test"})


@pytest.fixture(scope="module")
def small_bundle():
    images, labels = load_mnist("train")
    b = build_small(images[:500], labels[:500].astype(np.int64))
    b.decoder = train_decoder(b, "ridge", alpha=3.0)
    return b


@pytest.fixture(scope="module")
def decoder_before(small_bundle):
    """The bundle's decoder arrays before the evaluation (the same objects)."""
    return dict(small_bundle.decoder)


@pytest.fixture(scope="module")
def report(small_bundle, decoder_before):
    return evaluate(
        small_bundle,
        limit=80,
        backends=("exact",),
        noise_fractions=(0.0, 0.3, 0.5),
        mp_limit=20,
        n_figure=6,
    )


def test_report_schema(report):
    assert report["n_queries"] == 80
    cls = report["classification"]
    for key in ("knn_accuracy", "nn1_accuracy", "logistic_accuracy"):
        assert 0.0 <= cls[key] <= 1.0
    assert cls["knn_accuracy"] > 0.5
    rec = report["reconstruction"]
    for method in SDR_METHODS + REFERENCE_METHODS:
        row = rec[method]
        for key in ("mse", "psnr", "ssim", "label_accuracy", "ms_per_query"):
            assert isinstance(row[key], float), (method, key)
        assert 0 <= row["mse"] <= 1 and -1 <= row["ssim"] <= 1
    assert rec["matching_pursuit"]["n_queries"] == 20
    assert rec["pca"]["n_components"] == round(report["sp"]["active_bits_mean"])
    # the references behave as they must
    assert rec["pixel_oracle"]["mse"] < rec["mean_image"]["mse"]
    assert rec["decoder"]["mse"] < rec["mean_image"]["mse"]
    assert rec["nearest"]["mse"] >= rec["pixel_oracle"]["mse"] - 1e-9
    assert report["index"]["exact"]["recall_at_10"] == 1.0
    assert report["index"]["exact"]["qps"] > 0
    noise = report["noise"]
    assert [r["swap_fraction"] for r in noise] == [0.0, 0.3, 0.5]
    assert noise[0]["accuracy"] == pytest.approx(cls["knn_accuracy"])
    assert noise[-1]["accuracy"] <= noise[0]["accuracy"] + 0.05
    for r in noise:
        assert {"swap_fraction", "accuracy", "mse"} <= set(r)
    sp = report["sp"]
    assert 0 < sp["sparsity"] < 0.5 and sp["columns_ever_active"] <= sp["n_columns"]
    assert sp["mean_column_entropy_bits"] > 0


def _assert_decoder_is(bundle, before):
    assert set(bundle.decoder) == set(before)
    for key, arr in before.items():
        assert bundle.decoder[key] is arr, key


def test_evaluate_leaves_the_bundle_alone(small_bundle, decoder_before, report):
    # the readout was fitted for the run (the bundle has only a ridge decoder) and not kept
    assert report["classification"]["logistic_accuracy"] > 0.5
    _assert_decoder_is(small_bundle, decoder_before)
    bare = Bundle(sp=small_bundle.sp, table=small_bundle.table, index=small_bundle.index)
    rep = evaluate(bare, limit=20, backends=("exact",), noise_fractions=(0.0,), mp_limit=5)
    assert bare.decoder is None
    assert rep["reconstruction"]["decoder"]["model"] == "ridge"  # trained for the run
    assert any("Ridge decoder was trained" in note for note in rep["notes"])


def test_report_sections_compose(small_bundle):
    """The sections are functions returning dataclasses; the report is their dicts."""
    from sdrindex.evaluate.sections import encode_queries, index_section, sp_stats

    images, _ = load_mnist("test")
    encoded = encode_queries(small_bundle, images[:30])
    stats = sp_stats(small_bundle, encoded.queries)
    d = stats.to_dict()
    assert d["n_columns"] == 576 and d["_activation_frequency"].shape == (576,)
    rows = index_section(small_bundle, encoded.queries, ("exact",), log=lambda msg: None)
    assert rows["exact"].recall_at_10 == 1.0 and rows["exact"].build_seconds is None
    assert set(rows["exact"].to_dict()) == {"recall_at_10", "qps", "qps_single", "build_seconds"}


def test_write_report_files(report, tmp_path):
    paths = write_report(report, tmp_path / "ev")
    data = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert data["n_queries"] == 80
    assert set(data["reconstruction"]) >= set(SDR_METHODS + REFERENCE_METHODS)
    assert "_figure" not in data and "activation_frequency" not in data["sp"]
    for key in ("comparison", "noise", "index", "activation"):
        assert paths[key].is_file() and paths[key].stat().st_size > 1000
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "| nearest |" in md and "comparison.png" in md


def test_metrics():
    a = np.zeros((2, 4, 4))
    b = np.full((2, 4, 4), 0.1)
    assert mse(a, b) == pytest.approx(0.01)
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(0.0) == float("inf")
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28))
    assert mean_ssim(x, x) == pytest.approx(1.0)
    assert mean_ssim(x, rng.random((3, 28, 28))) < 0.5


def test_recall_counts_ties():
    exact = np.array([[9, 8, 7, 7]])
    assert recall_at_k(np.array([[9, 8, 7, 7]]), exact, 4) == 1.0
    assert recall_at_k(np.array([[9, 7, 7, 7]]), exact, 4) == 1.0  # a tied item instead of 8
    assert recall_at_k(np.array([[9, 8, 7, 6]]), exact, 4) == 0.75
    assert recall_at_k(np.array([[9, 8, -1, -1]]), exact, 4) == 0.5


def test_sweep_grid(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        """
base = "forum-global"
limit_train = 300
limit_test = 60
k = [1, 3]
[grid]
columnDimensions = [[12, 12]]
numActiveColumnsPerInhArea = [6, 10]
[[configs]]
name = "local"
columnDimensions = [16, 16]
potentialRadius = 4
threshold = "mean"
"""
    )
    spec = load_grid(grid)
    rows = sweep(spec)
    assert [r["name"] for r in rows][-1] == "local"
    assert len(rows) == 3
    for r in rows:
        assert 0 <= r["knn1_accuracy"] <= 1 and 0 <= r["knn3_accuracy"] <= 1
        assert r["knn1_accuracy"] == r["nn1_accuracy"]
        assert r["build_seconds"] > 0 and 0 < r["sparsity"] < 1
    assert rows[0]["active_bits"] == pytest.approx(6, abs=0.5)
    table = format_sweep(rows)
    assert "SDR 3-NN" in table and "pixel 3-NN" in table and table.count("\n") == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("colums = 3\n")
    with pytest.raises(Exception, match="unknown keys"):
        load_grid(bad)


def test_cli_build_decoder_and_evaluate(tmp_path, capsys):
    cfg = tmp_path / "sp.json"
    cfg.write_text(json.dumps(SMALL_SP))
    assert (
        main(
            [
                "build",
                "--out",
                str(tmp_path / "bd"),
                "--limit",
                "300",
                "--config",
                str(cfg),
                "--backend",
                "exact",
                "--decoder",
                "all",
            ]
        )  # fmt: skip
        == 0
    )
    b = Bundle.load(tmp_path / "bd")
    for key in ("ridge_coef", "mlp_coef_0", "mlp_activation", "logistic_coef"):
        assert key in b.decoder  # "--decoder all": the MLP too
    assert b.manifest["has_decoder"] is True
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "bd"),
                "--limit",
                "40",
                "--out",
                str(tmp_path / "ev"),
                "--mp-limit",
                "10",
                "--backends",
                "exact",
            ]
        )  # fmt: skip
        == 0
    )
    out = capsys.readouterr().out
    assert "## Reconstruction" in out
    data = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert data["reconstruction"]["decoder"]["model"] == "ridge"
    assert data["reconstruction"]["decoder_mlp"]["model"] == "mlp"
    assert set(data["index"]) == {"exact"}


def test_cli_sweep(tmp_path, capsys):
    grid = tmp_path / "g.json"
    grid.write_text(
        json.dumps(
            {
                "base": "forum-global",
                "limit_train": 200,
                "limit_test": 40,
                "configs": [{"name": "tiny", "columnDimensions": [10, 10]}],
            }
        )
    )
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "rows.json")]) == 0
    assert "| tiny |" in capsys.readouterr().out
    assert json.loads((tmp_path / "rows.json").read_text())[0]["n_columns"] == 100


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the MLP decoder alone takes minutes: over the suite's 600 s
def test_full_mnist_targets(tmp_path):
    """The project's quality goals on the default full-MNIST bundle (minutes; -m slow)."""
    args = ["build", "--out", str(tmp_path / "full"), "--backend", "exact", "--decoder", "all"]
    assert main(args) == 0
    rep = evaluate(Bundle.load(tmp_path / "full"), backends=("exact",), mp_limit=200)
    rec = rep["reconstruction"]
    # The shipped default's measured levels (sdrindex-mnist-planes learning on 15,000 digits;
    # README, representation sweep, 2026-11-30: 5-NN 96.80 %, 1-NN 96.32 %, MSE nearest
    # 0.0284, knn 0.0158, back-projection 0.0156, Ridge 0.0052, noise drop 0.23 points) with
    # a small margin; back-projection and Ridge are issue 12's targets (0.020, 0.006).
    assert rec["nearest"]["mse"] <= 0.0290
    assert rec["knn"]["mse"] <= 0.0165
    assert rec["decoder"]["mse"] <= 0.0058
    assert rec["backprojection"]["mse"] <= 0.0165
    assert rep["noise_drop_at_30pct_points"] <= 1.0
    assert rep["classification"]["knn_accuracy"] >= 0.964  # issue 12's 0.975: see README
    assert rep["classification"]["nn1_accuracy"] >= 0.958


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, knn5, backprojection, ridge",
    [  # measured (README, representation sweep): 97.53 %; 96.90 %, 0.0235, 0.0081
        ("sdrindex-mnist-deskew", 0.972, None, None),
        ("sdrindex-mnist", 0.965, 0.0245, 0.0088),  # the default before issue 12
    ],
)
def test_preset_levels(name, knn5, backprojection, ridge):
    """The other MNIST presets' SDR 5-NN and reconstructions on full MNIST (minutes each)."""
    from sdrindex.evaluate.metrics import mse
    from sdrindex.labels import KNNLabeler
    from sdrindex.reconstruct import BackprojectionReconstructor, DecoderReconstructor
    from sdrindex.sp import learn_limit_for, preprocess_for, sp_from_config, threshold_for

    train, train_labels = load_mnist("train")
    test, test_labels = load_mnist("test")
    bundle = build_bundle(
        train,
        train_labels,
        sp=sp_from_config(name),
        threshold=threshold_for(name),
        preprocess=preprocess_for(name),
        learn_limit=learn_limit_for(name),
        backend="exact",
    )
    q = bundle.encode(test)
    ids, ov = bundle.index.query(q, 5)
    pred = KNNLabeler(bundle, k=5).predict_from_neighbours(ids, ov)
    assert np.mean(pred == test_labels) >= knn5
    if backprojection is not None:
        truth = test.astype(np.float32) / 255.0
        assert mse(truth, BackprojectionReconstructor(bundle).reconstruct(q)) <= backprojection
        bundle.decoder = train_decoder(bundle, "ridge")
        assert mse(truth, DecoderReconstructor(bundle, "ridge").reconstruct(q)) <= ridge


def test_report_names_the_encoder_planes_or_threshold():
    from sdrindex.evaluate.report import _encoder_text

    assert _encoder_text({"threshold": "mean"}) == "threshold mean"
    planes = {"threshold": 128, "preprocess": {"deskew": False, "blur": 0.0, "planes": [32, 224]}}
    assert _encoder_text(planes) == "planes pixel >= 32, 224"  # the threshold plays no part
    both = {"threshold": "mean", "preprocess": {"deskew": True, "blur": 0.5, "planes": []}}
    assert _encoder_text(both) == "deskew, blur 0.5, threshold mean"
