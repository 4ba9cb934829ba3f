"""Replay NuPIC's reference Spatial Pooler runs (tests/data/*.npz, see CONFORMANCE.md).

Started from NuPIC's initial state and fed the same inputs, our SP must make the same
columns active at every learning and inference step and end in the same state.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdrindex import SpatialPooler

DATA = Path(__file__).parent / "data"
VECTORS = sorted(DATA.glob("*.npz"))
TOL = 1e-5


def _ragged(d, name, t):
    off = d[name + "_offsets"]
    return d[name][off[t] : off[t + 1]]


def test_all_five_vectors_present():
    names = {p.stem for p in VECTORS}
    assert names == {"walkthrough-1d", "seed-global", "seed-local", "htmcore-like", "local-1d"}


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_replay(path):
    d = np.load(path, allow_pickle=False)
    sp = SpatialPooler.from_nupic_params(json.loads(str(d["params"])))
    sp.initialize_state(
        d["init_potential"], d["init_permanences"], int(d["init_inhibition_radius"])
    )
    assert sp.inhibition_radius_ == int(d["init_inhibition_radius"])

    for t, x in enumerate(d["learn_inputs"]):
        overlaps = sp.overlaps(x[None])[0]
        np.testing.assert_array_equal(
            overlaps, d["learn_overlaps"][t], err_msg=f"overlaps, step {t}"
        )
        active = sp.compute(x, learn=True)
        np.testing.assert_array_equal(
            active, _ragged(d, "learn_active", t), err_msg=f"learning step {t}"
        )

    infer = d["infer_inputs"]
    batch = sp.transform(infer)
    for t, x in enumerate(infer):
        expected = _ragged(d, "infer_active", t)
        np.testing.assert_array_equal(
            sp.compute(x, learn=False), expected, err_msg=f"inference {t}"
        )
        np.testing.assert_array_equal(np.flatnonzero(batch[t]), expected, err_msg=f"transform {t}")

    np.testing.assert_allclose(sp.permanences_, d["final_permanences"], atol=TOL, rtol=0)
    np.testing.assert_allclose(sp.boost_factors_, d["final_boost_factors"], atol=TOL, rtol=0)
    np.testing.assert_allclose(
        sp.active_duty_cycles_, d["final_active_duty_cycles"], atol=TOL, rtol=0
    )
    np.testing.assert_allclose(
        sp.overlap_duty_cycles_, d["final_overlap_duty_cycles"], atol=TOL, rtol=0
    )
    np.testing.assert_allclose(
        sp.min_overlap_duty_cycles_, d["final_min_overlap_duty_cycles"], atol=TOL, rtol=0
    )
    assert sp.inhibition_radius_ == int(d["final_inhibition_radius"])
    assert sp.iteration_num_ == int(d["final_iteration_num"])


@pytest.mark.parametrize("path", VECTORS[:2], ids=lambda p: p.stem)
def test_batch_learning_equals_stepwise(path):
    """partial_fit on the whole batch is the same as one compute(learn=True) per row."""
    d = np.load(path, allow_pickle=False)
    sp = SpatialPooler.from_nupic_params(json.loads(str(d["params"])))
    sp.initialize_state(
        d["init_potential"], d["init_permanences"], int(d["init_inhibition_radius"])
    )
    sp.partial_fit(d["learn_inputs"])
    np.testing.assert_array_equal(sp.permanences_, d["final_permanences"])
    np.testing.assert_array_equal(
        sp.transform(d["infer_inputs"][:5], packed=True),
        np.packbits(
            [np.isin(np.arange(sp.n_columns), _ragged(d, "infer_active", t)) for t in range(5)],
            axis=1,
        ),
    )
