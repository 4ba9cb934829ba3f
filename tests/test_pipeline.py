"""The one build pipeline: stages, progress events, the bundle it returns, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from sdrindex.bundle import Bundle
from sdrindex.datasets import binarize, load_mnist
from sdrindex.errors import ParameterError
from sdrindex.pipeline import STAGES, BuildTimes, StageEvent, build_bundle
from sdrindex.sp import SpatialPooler
from sdrindex.warmup import WARM_UP_FROM

SMALL_SP = {
    "inputDimensions": [28, 28],
    "columnDimensions": [16, 16],
    "potentialRadius": 5,
    "potentialPct": 0.5,
    "globalInhibition": True,
    "localAreaDensity": 0.05,
    "synPermConnected": 0.2,
    "boostStrength": 2.0,
    "seed": 5,
}


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist("train")
    return images[:300], labels[:300].astype(np.int64)


def test_pipeline_runs_every_stage_in_order_and_reports_it(digits, tmp_path):
    images, labels = digits
    events: list[StageEvent] = []
    times = BuildTimes()
    bundle = build_bundle(
        images,
        labels,
        sp=SpatialPooler.from_nupic_params(SMALL_SP),
        threshold=128,
        backend="exact",
        decoders="default",
        dataset={"source": "test"},
        progress=events.append,
        times=times,
    )
    stages = [e.stage for e in events if e.state == "start"]
    assert stages == list(STAGES)
    done = {e.stage: e.seconds for e in events if e.state == "done"}
    assert set(STAGES) <= set(done) and all(s >= 0 for s in done.values())
    assert list(times.seconds) == list(STAGES)
    # Each decoder step is reported as a sub-stage.
    assert any(s.startswith("decoders: ridge") for s in done)
    assert any(s.startswith("decoders: logistic") for s in done)

    # The same SDRs as running the stages by hand with an identically seeded SP.
    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    X = binarize(images, 128).reshape(len(images), -1)
    sdrs = sp.fit(X).transform(X, packed=True)
    np.testing.assert_array_equal(np.asarray(bundle.table.sdrs), sdrs)
    np.testing.assert_array_equal(np.asarray(bundle.table.labels), labels)
    # Every stored item finds itself first.
    ids, ov = bundle.index.query(sdrs[:20], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(20))
    assert {"ridge_coef", "logistic_coef", "backprojection_connected_scale"} <= set(bundle.decoder)
    assert bundle.dataset["source"] == "test" and bundle.dataset["n_items"] == 300

    again = Bundle.load(bundle.save(tmp_path / "b"))
    np.testing.assert_array_equal(np.asarray(again.table.sdrs), sdrs)


def test_pipeline_without_decoders_or_labels(digits):
    images, _ = digits
    events: list[StageEvent] = []
    bundle = build_bundle(
        images[:100],
        sp=SpatialPooler.from_nupic_params(SMALL_SP),
        backend="exact",
        progress=events.append,
    )
    assert "decoders" not in {e.stage for e in events}
    assert bundle.decoder is None and bundle.table.labels is None


def test_learn_limit_learns_on_the_first_images_and_encodes_them_all(digits, tmp_path):
    images, labels = digits
    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    bundle = build_bundle(images, labels, sp=sp, backend="exact", learn_limit=120)
    assert len(bundle.table) == 300 and bundle.dataset["sp_learned_on"] == 120
    ref = SpatialPooler.from_nupic_params(SMALL_SP)
    X = binarize(images, 128).reshape(300, -1)
    ref.fit(X[:120])  # the SP state of learning on the first 120 images only
    np.testing.assert_array_equal(np.asarray(bundle.table.sdrs), ref.transform(X, packed=True))
    np.testing.assert_array_equal(bundle.sp.permanences_, ref.permanences_)
    assert Bundle.load(bundle.save(tmp_path / "b")).dataset["sp_learned_on"] == 120
    everything = build_bundle(images, labels, sp=SpatialPooler.from_nupic_params(SMALL_SP),
                              backend="exact", learn_limit=10_000)  # fmt: skip
    assert everything.dataset["sp_learned_on"] == 300
    assert not np.array_equal(everything.sp.permanences_, ref.permanences_)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": np.zeros((5, 28, 28), np.float32)}, "uint8"),
        ({"images": np.zeros((5, 20, 20), np.uint8)}, "inputDimensions"),
        ({"images": np.zeros((0, 28, 28), np.uint8)}, "non-empty"),
        ({"labels": np.zeros(4, np.int64)}, "labels"),
        ({"decoders": "everything"}, "decoders"),
        ({"decoders": ["ridge", "svm"]}, "svm"),
        ({"epochs": 0}, "epochs"),
        ({"learn_limit": 0}, "learn_limit"),
        ({"learn_limit": True}, "learn_limit"),
    ],
)
def test_pipeline_bad_input_names_the_problem(kwargs, message):
    args = {"images": np.zeros((5, 28, 28), np.uint8), "labels": None}
    args.update(kwargs)
    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    with pytest.raises(ParameterError, match=message):
        build_bundle(args.pop("images"), args.pop("labels"), sp=sp, backend="exact", **args)


def _warm_up_children() -> list[int]:
    """PIDs of this process's children running the build's warm-up."""
    import os
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"sdrindex.warmup" in cmd:
            found.append(int(proc.name))
    return found


def test_a_failed_build_leaves_no_warm_up_process(monkeypatch):
    # WARM_UP_FROM images: enough for the build to start its warm-up process.
    def fail(self, X, y=None, epochs=1):
        assert _warm_up_children(), "the warm-up should be running during learning"
        raise RuntimeError("learning failed")

    monkeypatch.setattr(SpatialPooler, "fit", fail)
    with pytest.raises(RuntimeError, match="learning failed") as failure:
        build_bundle(
            np.zeros((WARM_UP_FROM, 28, 28), np.uint8),
            sp=SpatialPooler.from_nupic_params(SMALL_SP),
            backend="nndescent",
        )
    # The traceback keeps the build's frames alive: no garbage collector ends the
    # process here, only the pipeline's own clean-up.
    assert failure.traceback and _warm_up_children() == []
