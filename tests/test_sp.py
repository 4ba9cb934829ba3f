"""Tests of sdrindex.sp.SpatialPooler (NuPIC semantics, scikit-learn style).

Small seeded SPs (1-D 64 inputs x 32 columns, 2-D 12x12 inputs x 8x8 columns) and, for the
MNIST-shaped checks, a few hundred binarised test digits. The step-by-step agreement with
NuPIC itself is in test_sp_conformance.py; here: pools, determinism, sparsity, inhibition
rules, the inference API, back-projection, persistence, NuPIC parameters and input checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdrindex import DataError, ParameterError, SDRIndexError, SpatialPooler
from sdrindex.datasets import binarize, load_mnist
from sdrindex.sp import NUPIC_PARAM_NAMES
from sdrindex.sp import topology as T

# ------------------------------------------------------------------------------ helpers

BASE_1D: dict[str, Any] = dict(
    input_dimensions=(64,),
    column_dimensions=(32,),
    potential_radius=8,
    potential_pct=0.5,
    global_inhibition=True,
    num_active_columns_per_inh_area=4,
    seed=1,
)
BASE_2D: dict[str, Any] = dict(
    input_dimensions=(12, 12),
    column_dimensions=(8, 8),
    potential_radius=3,
    potential_pct=0.5,
    global_inhibition=True,
    num_active_columns_per_inh_area=5,
    seed=2,
)

FORUM_PARAMS: dict[str, Any] = dict(
    inputDimensions=(28, 28),
    columnDimensions=(37, 37),
    potentialRadius=36,
    potentialPct=1.0,
    globalInhibition=True,
    localAreaDensity=-1,
    numActiveColumnsPerInhArea=8,
    synPermInactiveDec=0.008,
    synPermActiveInc=0.05,
    synPermConnected=0.1,
    minPctOverlapDutyCycle=0.001,
    dutyCyclePeriod=1000,
    boostStrength=17,
)


def sp_1d(**kw: Any) -> SpatialPooler:
    return SpatialPooler(**{**BASE_1D, **kw})


def sp_2d(**kw: Any) -> SpatialPooler:
    return SpatialPooler(**{**BASE_2D, **kw})


def random_inputs(n: int, n_in: int, density: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, n_in)) < density).astype(np.uint8)


X1 = random_inputs(40, 64, 0.3, seed=10)
X2 = random_inputs(40, 144, 0.25, seed=11)


def state_of(sp: SpatialPooler) -> dict[str, Any]:
    """Every attribute of the estimator (parameters, learned state, private buffers), copied."""
    out = {}
    for key, value in vars(sp).items():
        if key == "_cache":  # derived data (parameters, plan), not state
            continue
        if isinstance(value, np.ndarray):
            out[key] = value.copy()
        elif isinstance(value, dict):
            out[key] = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in value.items()}
        else:
            out[key] = value
    return out


def assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def learned_attributes(sp: SpatialPooler) -> dict[str, Any]:
    return {k: v for k, v in state_of(sp).items() if k.endswith("_") and not k.startswith("_")}


def ref_global(vals: np.ndarray, k: int, stim: float) -> np.ndarray:
    """NuPIC's _inhibitColumnsGlobal: stable argsort, top k (ties to the higher index), >= stim."""
    order = np.argsort(vals, kind="stable")
    top = order[len(order) - k :] if k > 0 else order[:0]
    return np.sort(top[vals[top] >= stim])


def ref_density(sp: SpatialPooler, radius: int) -> float:
    """NuPIC's density used by _inhibitColumns."""
    if sp.local_area_density > 0:
        return float(sp.local_area_density)
    area = min(sp.n_columns, (2 * radius + 1) ** len(sp.column_dimensions))
    return min(float(sp.num_active_columns_per_inh_area) / area, 0.5)


def hood_fn(wrap: bool):
    return T.wrapping_neighborhood if wrap else T.neighborhood


def ref_local(vals, density, stim, radius, col_dims, wrap) -> np.ndarray:
    """NuPIC's _inhibitColumnsLocal, written out in Python."""
    hood = hood_fn(wrap)
    active = np.zeros(len(vals), bool)
    for c, v in enumerate(vals):
        if v >= stim:
            nb = hood(c, radius, col_dims)
            bigger = np.count_nonzero(vals[nb] > v)
            lost = np.count_nonzero(active[nb[vals[nb] == v]])
            if bigger + lost < int(0.5 + density * len(nb)):
                active[c] = True
    return np.flatnonzero(active)


@pytest.fixture(scope="module")
def mnist_x() -> np.ndarray:
    images, _ = load_mnist("test")
    return binarize(images[:300])


# ------------------------------------------------------------------------------ 2. potential pools

POOL_CONFIGS = {
    "1d-wrap": dict(BASE_1D, wrap_around=True),
    "1d-clip": dict(BASE_1D, wrap_around=False, potential_pct=0.3),
    "1d-radius-beyond-input": dict(BASE_1D, potential_radius=100, potential_pct=0.2),
    "1d-radius-0": dict(BASE_1D, potential_radius=0, potential_pct=1.0),
    "2d-wrap": dict(BASE_2D, wrap_around=True),
    "2d-clip": dict(BASE_2D, wrap_around=False, potential_pct=0.7),
    "2d-more-columns-than-inputs": dict(
        BASE_2D, input_dimensions=(6, 6), column_dimensions=(8, 8), potential_radius=2
    ),
}


@pytest.mark.parametrize("name", list(POOL_CONFIGS))
def test_potential_pools_lie_in_mapped_neighbourhood_with_exact_size(name):
    params = POOL_CONFIGS[name]
    sp = SpatialPooler(**params)
    sp.compute(np.zeros(sp.n_inputs, np.uint8), learn=False)  # initialises, learns nothing
    in_dims, col_dims = tuple(params["input_dimensions"]), tuple(params["column_dimensions"])
    radius = min(params["potential_radius"], sp.n_inputs)
    hood = hood_fn(params.get("wrap_around", True))
    assert sp.potential_.shape == sp.permanences_.shape == (sp.n_columns, sp.n_inputs)
    for c in range(sp.n_columns):
        allowed = hood(T.map_column(c, col_dims, in_dims), radius, in_dims)
        pool = np.flatnonzero(sp.potential_[c])
        assert set(pool.tolist()) <= set(allowed.tolist()), f"column {c}"
        assert pool.size == int(allowed.size * params["potential_pct"] + 0.5), f"column {c}"
    # permanences: zero outside the pool, in [0, 1], and either trimmed to 0 or >= the trim level
    assert np.all(sp.permanences_[sp.potential_ == 0] == 0)
    inside = sp.permanences_[sp.potential_ == 1]
    assert inside.min() >= 0 and inside.max() <= 1
    trim = np.float32(sp.syn_perm_active_inc / 2)
    assert np.all((inside == 0) | (inside >= trim))
    # about half the pool starts connected (NuPIC's initConnectedPct = 0.5)
    frac = sp.connected_matrix().sum() / sp.potential_.sum()
    assert 0.3 < frac < 0.7


def test_random_state_matches_the_state_the_sp_starts_from():
    sp = sp_2d()
    drawn = sp._random_state()
    sp.compute(np.zeros(144, np.uint8), learn=False)
    np.testing.assert_array_equal(sp.potential_, drawn["potential"])
    np.testing.assert_array_equal(sp.permanences_, drawn["permanences"])


def test_nupic_map_potential_examples_1d():
    # NuPIC testMapPotential1D: 12 inputs, 4 columns, potentialRadius 2, potentialPct 1.
    base = dict(
        input_dimensions=(12,),
        column_dimensions=(4,),
        potential_radius=2,
        potential_pct=1,
        global_inhibition=True,
        num_active_columns_per_inh_area=1,
        seed=5,
    )
    sp = SpatialPooler(**base, wrap_around=False)
    sp.compute(np.zeros(12, np.uint8), learn=False)
    assert sp.potential_[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert sp.potential_[2].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    sp = SpatialPooler(**base, wrap_around=True)
    sp.compute(np.zeros(12, np.uint8), learn=False)
    assert sp.potential_[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert sp.potential_[3].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    sp = SpatialPooler(**{**base, "potential_pct": 0.5}, wrap_around=True)
    sp.compute(np.zeros(12, np.uint8), learn=False)
    assert sp.potential_[0].sum() == 3
    assert set(np.flatnonzero(sp.potential_[0])) <= {11, 0, 1, 2, 3}


def test_nupic_map_potential_examples_2d():
    # NuPIC testMapPotential2D: columns [2, 4] over inputs [6, 12], potentialPct 1.
    base = dict(
        input_dimensions=(6, 12),
        column_dimensions=(2, 4),
        potential_pct=1,
        global_inhibition=True,
        num_active_columns_per_inh_area=1,
        seed=5,
    )
    sp = SpatialPooler(**base, potential_radius=1, wrap_around=False)
    sp.compute(np.zeros(72, np.uint8), learn=False)
    assert set(np.flatnonzero(sp.potential_[0])) == {0, 12, 24, 1, 13, 25, 2, 14, 26}
    assert set(np.flatnonzero(sp.potential_[2])) == {6, 18, 30, 7, 19, 31, 8, 20, 32}
    sp = SpatialPooler(**base, potential_radius=2, wrap_around=True)
    sp.compute(np.zeros(72, np.uint8), learn=False)
    assert set(np.flatnonzero(sp.potential_[0])) == {
        *(71, 11, 23, 35, 47),
        *(60, 0, 12, 24, 36),
        *(61, 1, 13, 25, 37),
        *(62, 2, 14, 26, 38),
        *(63, 3, 15, 27, 39),
    }
    assert set(np.flatnonzero(sp.potential_[3])) == {
        *(68, 8, 20, 32, 44),
        *(69, 9, 21, 33, 45),
        *(70, 10, 22, 34, 46),
        *(71, 11, 23, 35, 47),
        *(60, 0, 12, 24, 36),
    }


@pytest.mark.parametrize(("wrap", "stim"), [(True, 8), (False, 5)])
def test_initially_connected_synapses_reach_stimulus_threshold(wrap, stim):
    # Pools of up to 9 inputs (radius 4, pct 1; 5 at a clipped edge): about half start
    # connected, so most columns must be raised to the threshold.
    sp = sp_1d(potential_radius=4, potential_pct=1.0, stimulus_threshold=stim, wrap_around=wrap)
    drawn = sp._random_state()
    assert (drawn["permanences"] >= 0.1).sum(axis=1).min() < stim  # raising is needed
    sp.compute(np.zeros(64, np.uint8), learn=False)
    assert sp.connected_matrix().sum(axis=1).min() >= stim
    # ... and learning keeps it so
    sp.partial_fit(X1)
    assert sp.connected_matrix().sum(axis=1).min() >= stim


# ------------------------------------------------------------------------------ 3. determinism


def test_same_seed_same_state_and_output():
    a, b = sp_2d(seed=123).fit(X2[:20]), sp_2d(seed=123).fit(X2[:20])
    assert_same(learned_attributes(a), learned_attributes(b))
    np.testing.assert_array_equal(a.transform(X2), b.transform(X2))


def test_different_seeds_differ():
    a, b = sp_2d(seed=1), sp_2d(seed=2)
    for sp in (a, b):
        sp.compute(X2[0], learn=False)
    assert not np.array_equal(a.potential_, b.potential_)
    assert not np.array_equal(a.permanences_, b.permanences_)
    a.fit(X2[:20])
    b.fit(X2[:20])
    assert not np.array_equal(a.transform(X2), b.transform(X2))


def test_fit_restarts_from_initial_state():
    sp = sp_1d(seed=7, boost_strength=3.0)
    sp.fit(X1)
    first = learned_attributes(sp)
    out = sp.transform(X1)
    sp.fit(X1)
    assert_same(first, learned_attributes(sp))
    np.testing.assert_array_equal(out, sp.transform(X1))
    # a fit after unrelated partial_fit calls is the same as a fit on a fresh SP
    other = sp_1d(seed=7, boost_strength=3.0).partial_fit(X1[::-1]).partial_fit(X1[:5])
    other.fit(X1)
    assert_same(first, learned_attributes(other))


def test_fit_restarts_from_given_initial_state():
    src = sp_1d(seed=3)
    st = src._random_state()
    a = sp_1d(seed=99).initialize_state(st["potential"], st["permanences"])
    a.fit(X1)
    first = learned_attributes(a)
    a.fit(X1)
    assert_same(first, learned_attributes(a))
    # the given state, not one drawn from seed=99, is the starting point
    np.testing.assert_array_equal(a.potential_, st["potential"])
    b = sp_1d(seed=3).fit(X1)
    assert_same(first, learned_attributes(b))


def test_epochs_are_repeated_passes():
    a = sp_1d(boost_strength=2.0).fit(X1, epochs=2)
    b = sp_1d(boost_strength=2.0).partial_fit(X1).partial_fit(X1)
    assert_same(learned_attributes(a), learned_attributes(b))


def test_seed_minus_one_draws_differently_each_time():
    a, b = sp_1d(seed=-1), sp_1d(seed=-1)
    a.compute(X1[0], learn=False)
    b.compute(X1[0], learn=False)
    assert not np.array_equal(a.permanences_, b.permanences_)
    a.fit(X1[:5])
    first = a.permanences_.copy()
    a.fit(X1[:5])
    assert not np.array_equal(first, a.permanences_)


# ------------------------------------------------------------------------------ 4. exact sparsity


def _check_exactly(sp: SpatialPooler, X: np.ndarray, k: int) -> None:
    zero = np.zeros((1, X.shape[1]), np.uint8)
    Xz = np.concatenate([X, zero])
    for x in X[:15]:
        assert len(sp.compute(x, learn=True)) == k
    out = sp.transform(Xz)
    np.testing.assert_array_equal(out.sum(axis=1), np.full(len(Xz), k))
    # with every overlap tied at 0, NuPIC's rule picks the k highest indices
    assert np.flatnonzero(out[-1]).tolist() == list(range(sp.n_columns - k, sp.n_columns))
    for x in Xz[:5]:
        assert len(sp.compute(x, learn=False)) == k


@pytest.mark.parametrize("k", [1, 3, 5, 7, 16])
def test_global_inhibition_exactly_k_active_1d(k):
    _check_exactly(sp_1d(num_active_columns_per_inh_area=k, boost_strength=2.0), X1, k)


def test_global_inhibition_exactly_k_active_2d():
    _check_exactly(sp_2d(num_active_columns_per_inh_area=5, boost_strength=2.0), X2, 5)


@pytest.mark.parametrize(
    ("n_columns", "k"),
    [(49, 1), (49, 4), (100, 29), (36, 5)],
    ids=lambda v: str(v),
)
def test_global_inhibition_exactly_k_active_for_any_column_count(n_columns, k):
    # int((k / C) * C) is k - 1 in floating point for some (k, C), e.g. (1, 49) -> 0 columns.
    sp = sp_1d(column_dimensions=(n_columns,), num_active_columns_per_inh_area=k)
    sp.partial_fit(X1[:5])
    np.testing.assert_array_equal(sp.transform(X1).sum(axis=1), np.full(len(X1), k))
    assert len(sp.compute(X1[0], learn=True)) == k


@pytest.mark.parametrize(("density", "expected"), [(0.1, 3), (0.25, 8), (0.5, 16), (0.05, 1)])
def test_local_area_density_gives_int_density_times_columns_1d(density, expected):
    sp = sp_1d(local_area_density=density, num_active_columns_per_inh_area=-1)
    assert int(density * 32) == expected
    _check_exactly(sp, X1, expected)


def test_local_area_density_gives_int_density_times_columns_2d():
    sp = sp_2d(local_area_density=0.1, num_active_columns_per_inh_area=0)
    _check_exactly(sp, X2, int(0.1 * 64))


def test_stimulus_threshold_bounds_global_inhibition():
    k, stim = 5, 3
    sp = sp_1d(num_active_columns_per_inh_area=k, stimulus_threshold=stim, boost_strength=2.0)
    X = random_inputs(60, 64, 0.08, seed=12)
    sp.partial_fit(X[:1])
    sizes = []
    for x in X[1:40]:  # learning: boosted overlaps decide
        boosted = sp.boost_factors_ * sp.overlaps(x[None])[0].astype(np.float32)
        active = sp.compute(x, learn=True)
        assert len(active) <= k
        assert np.all(boosted[active] >= stim)
        np.testing.assert_array_equal(active, ref_global(boosted, k, stim))
        sizes.append(len(active))
    out = sp.transform(X)
    ov = sp.overlaps(X)
    for row, o in zip(out, ov, strict=True):
        active = np.flatnonzero(row)
        assert len(active) <= k
        assert np.all(o[active] >= stim)
        np.testing.assert_array_equal(active, ref_global(o.astype(np.float32), k, stim))
        sizes.append(len(active))
    # the threshold did bite somewhere, and did not silence everything
    assert min(sizes) < k and max(sizes) > 0


def _tie_sp(k: int) -> SpatialPooler:
    # 8 inputs, 8 columns; with all inputs on the overlaps are [2, 3, 3, 1, 3, 2, 0, 1].
    conn = np.array(
        [
            [1, 1, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0, 1, 0],
            [1, 0, 0, 0, 0, 1, 0, 1],
            [0, 0, 0, 0, 0, 0, 1, 1],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0, 0, 0],
        ],
        np.uint8,
    )
    potential = np.ones((8, 8), np.uint8)
    permanences = np.where(conn == 1, 0.5, 0.04).astype(np.float32)
    sp = SpatialPooler(
        input_dimensions=(8,),
        column_dimensions=(8,),
        potential_radius=8,
        potential_pct=1.0,
        global_inhibition=True,
        num_active_columns_per_inh_area=k,
        seed=0,
    )
    return sp.initialize_state(potential, permanences)


# k = 4 is the most NuPIC allows here (density is capped at 0.5).
@pytest.mark.parametrize(("k", "expected"), [(1, [4]), (2, [2, 4]), (4, [1, 2, 4, 5])])
def test_global_ties_go_to_the_higher_index(k, expected):
    sp = _tie_sp(k)
    x = np.ones(8, np.uint8)
    assert sp.overlaps(x[None])[0].tolist() == [2, 3, 3, 1, 3, 2, 0, 1]
    assert np.flatnonzero(sp.transform(x[None])[0]).tolist() == expected
    assert np.flatnonzero(sp.transform(x[None], boosted=True)[0]).tolist() == expected
    assert sp.compute(x, learn=False).tolist() == expected
    assert sp.compute(x, learn=True).tolist() == expected  # boost factors are still 1


def test_global_density_is_capped_at_one_half():
    sp = _tie_sp(7)
    x = np.ones(8, np.uint8)
    assert np.flatnonzero(sp.transform(x[None])[0]).tolist() == [1, 2, 4, 5]


def test_global_ties_random_inputs_match_nupic_rule():
    sp = _tie_sp(3)
    X = random_inputs(50, 8, 0.5, seed=13)
    ov = sp.overlaps(X)
    out = sp.transform(X)
    for row, o in zip(out, ov, strict=True):
        np.testing.assert_array_equal(np.flatnonzero(row), ref_global(o.astype(np.float32), 3, 0))


# ------------------------------------------------------------------------------ 5. local inhibition

LOCAL_CONFIGS = {
    "wrap-num-active": dict(num_active_columns_per_inh_area=3, wrap_around=True),
    "clip-num-active": dict(num_active_columns_per_inh_area=3, wrap_around=False),
    "wrap-density": dict(
        local_area_density=0.1, num_active_columns_per_inh_area=-1, wrap_around=True
    ),
    "clip-density-stim": dict(
        local_area_density=0.2,
        num_active_columns_per_inh_area=-1,
        wrap_around=False,
        stimulus_threshold=2,
    ),
}


@pytest.mark.parametrize("name", list(LOCAL_CONFIGS))
def test_local_inhibition_winners_have_few_stronger_neighbours(name):
    sp = sp_2d(global_inhibition=False, boost_strength=2.0, **LOCAL_CONFIGS[name])
    wrap = sp.wrap_around
    col_dims = sp.column_dimensions
    hood = hood_fn(wrap)
    stim = sp.stimulus_threshold
    # learning steps: boosted overlaps, the radius in force at that step (60 steps cross
    # step 50, where the inhibition radius is recomputed)
    learn = random_inputs(60, 144, 0.25, seed=17)
    sp.partial_fit(learn[:1])
    for x in learn[1:]:
        radius = sp.inhibition_radius_
        assert radius <= max(col_dims), "the test needs local (not global) inhibition"
        vals = sp.boost_factors_ * sp.overlaps(x[None])[0].astype(np.float32)
        active = sp.compute(x, learn=True)
        density = ref_density(sp, radius)
        expected = ref_local(vals, density, stim, radius, col_dims, wrap)
        np.testing.assert_array_equal(active, expected)
    radius = sp.inhibition_radius_
    assert 1 <= radius <= max(col_dims), "the test needs local (not global) inhibition"
    density = ref_density(sp, radius)
    X = X2
    out = sp.transform(X)
    ov = sp.overlaps(X)
    assert out.sum() > 0
    for row, o in zip(out, ov, strict=True):
        active = np.flatnonzero(row)
        for c in active:
            nb = hood(c, radius, col_dims)
            bigger = np.count_nonzero(o[nb] > o[c])
            assert bigger < int(0.5 + density * len(nb)), (c, bigger)
            assert o[c] >= stim
        np.testing.assert_array_equal(active, ref_local(o, density, stim, radius, col_dims, wrap))


# ------------------------------------------------------------------------------ 6. inference API


@pytest.mark.parametrize("make", [sp_1d, sp_2d], ids=["1d", "2d"])
def test_compute_without_learning_equals_transform(make):
    X = X1 if make is sp_1d else X2
    sp = make(boost_strength=3.0).fit(X[:20])
    out = sp.transform(X)
    for t, x in enumerate(X):
        np.testing.assert_array_equal(sp.compute(x, learn=False), np.flatnonzero(out[t]))


def test_compute_without_learning_equals_transform_local():
    sp = sp_2d(global_inhibition=False, num_active_columns_per_inh_area=3, boost_strength=3.0)
    sp.fit(X2[:20])
    out = sp.transform(X2)
    for t, x in enumerate(X2):
        np.testing.assert_array_equal(sp.compute(x, learn=False), np.flatnonzero(out[t]))


def test_compute_accepts_image_shaped_input():
    sp = sp_2d().fit(X2[:5])
    np.testing.assert_array_equal(
        sp.compute(X2[7].reshape(12, 12), learn=False), np.flatnonzero(sp.transform(X2[7:8])[0])
    )
    np.testing.assert_array_equal(sp.transform(X2.reshape(-1, 12, 12)), sp.transform(X2))


def test_compute_advances_iteration_counters():
    sp = sp_1d()
    sp.compute(X1[0], learn=True)
    assert (sp.iteration_num_, sp.iteration_learn_num_) == (1, 1)
    for t in range(1, 6):
        sp.compute(X1[t], learn=False)
        assert (sp.iteration_num_, sp.iteration_learn_num_) == (1 + t, 1)
    sp.compute(X1[6], learn=True)
    assert (sp.iteration_num_, sp.iteration_learn_num_) == (7, 2)
    sp.partial_fit(X1[:10])
    assert (sp.iteration_num_, sp.iteration_learn_num_) == (17, 12)


def test_compute_without_learning_changes_nothing_but_the_counter():
    sp = sp_1d(boost_strength=2.0).fit(X1[:10])
    before = state_of(sp)
    sp.compute(X1[20], learn=False)
    after = state_of(sp)
    assert after.pop("iteration_num_") == before.pop("iteration_num_") + 1
    assert_same(before, after)


@pytest.mark.parametrize("global_inhibition", [True, False])
def test_transform_changes_no_state(global_inhibition):
    sp = sp_2d(global_inhibition=global_inhibition, boost_strength=3.0).fit(X2[:20])
    before = state_of(sp)
    sp.transform(X2)
    sp.transform(X2, packed=True)
    sp.transform(X2, boosted=True)
    sp.overlaps(X2)
    sp.inverse_transform(sp.transform(X2[:3]))
    sp.inverse_transform(sp.transform(X2[:3]), weighted=True)
    sp.connected_matrix()
    sp.connected_synapses(3)
    assert_same(before, state_of(sp))


def test_compute_fills_active_array():
    sp = sp_2d().fit(X2[:10])
    arr = np.ones(64, np.int32)  # stale ones must be cleared
    active = sp.compute(X2[12], learn=False, active_array=arr)
    assert active.dtype == np.int64 and np.all(np.diff(active) > 0)
    np.testing.assert_array_equal(np.flatnonzero(arr), active)
    assert set(np.unique(arr)) <= {0, 1}
    grid = np.full((8, 8), 7, np.uint8)  # the column grid shape works too
    active = sp.compute(X2[13], learn=True, active_array=grid)
    np.testing.assert_array_equal(np.flatnonzero(grid), active)
    assert set(np.unique(grid)) <= {0, 1}


@pytest.mark.parametrize("n_columns", [32, 36, 45])
def test_packed_transform_is_packbits_of_dense(n_columns):
    sp = sp_1d(column_dimensions=(n_columns,), local_area_density=0.2)
    sp.fit(X1[:10])
    dense = sp.transform(X1)
    packed = sp.transform(X1, packed=True)
    assert dense.dtype == packed.dtype == np.uint8
    assert dense.shape == (len(X1), n_columns)
    assert packed.shape == (len(X1), math.ceil(n_columns / 8))
    np.testing.assert_array_equal(packed, np.packbits(dense, axis=1))


@pytest.mark.parametrize("global_inhibition", [True, False])
def test_transform_does_not_depend_on_batch_composition(global_inhibition):
    # Sparse and dense rows, alone and mixed: whatever overlap strategy a batch uses,
    # each row's SDR is the same, and equals compute(learn=False).
    sp = sp_2d(global_inhibition=global_inhibition, num_active_columns_per_inh_area=3)
    sp.fit(X2[:20])
    sparse = random_inputs(10, 144, 0.02, seed=15)
    dense = random_inputs(10, 144, 0.6, seed=16)
    mixed = np.concatenate([sparse, dense])
    whole = sp.transform(mixed)
    np.testing.assert_array_equal(whole[:10], sp.transform(sparse))
    np.testing.assert_array_equal(whole[10:], sp.transform(dense))
    for t, x in enumerate(mixed):
        np.testing.assert_array_equal(sp.transform(x[None])[0], whole[t])
        np.testing.assert_array_equal(sp.compute(x, learn=False), np.flatnonzero(whole[t]))


def test_boosted_transform_without_boosting_equals_default():
    sp = sp_2d(boost_strength=0.0).fit(X2[:20])
    np.testing.assert_array_equal(sp.boost_factors_, np.ones(64, np.float32))
    np.testing.assert_array_equal(sp.transform(X2, boosted=True), sp.transform(X2))


def test_boosted_transform_differs_only_through_boost_factors():
    k = 5
    sp = sp_2d(boost_strength=10.0, num_active_columns_per_inh_area=k).fit(X2[:30])
    assert not np.allclose(sp.boost_factors_, 1.0)
    boosted = sp.transform(X2, boosted=True)
    ov = sp.overlaps(X2).astype(np.float32)
    for row, o in zip(boosted, ov, strict=True):
        np.testing.assert_array_equal(np.flatnonzero(row), ref_global(sp.boost_factors_ * o, k, 0))
    assert not np.array_equal(boosted, sp.transform(X2))  # the boosts do matter here
    sp.boost_factors_ = np.ones(64, np.float32)
    np.testing.assert_array_equal(sp.transform(X2, boosted=True), sp.transform(X2))


def test_transform_before_fit_raises():
    with pytest.raises(ParameterError, match="fit"):
        sp_1d().transform(X1)
    with pytest.raises(ParameterError, match="fit"):
        sp_1d().inverse_transform(np.zeros(32, np.uint8))


def test_transform_popcount_and_scatter_paths_agree():
    from sdrindex.sp._infer import PATH_BITS, PATH_CSR

    for gi in (True, False):
        sp = sp_2d(global_inhibition=gi, boost_strength=3.0).fit(X2[:30])
        for boosted in (False, True):
            bits = sp._infer(X2, boosted, path=PATH_BITS)
            np.testing.assert_array_equal(bits, sp._infer(X2, boosted, path=PATH_CSR))
            np.testing.assert_array_equal(bits, sp.transform(X2, packed=True, boosted=boosted))


@pytest.mark.parametrize("global_inhibition", [True, False])
def test_inference_plan_is_kept_until_learning_changes_the_state(global_inhibition):
    kw = dict(global_inhibition=global_inhibition, boost_strength=3.0)
    a = sp_2d(**kw).fit(X2[:20])
    b = sp_2d(**kw).fit(X2[:20])
    a.transform(X2)
    plan = a._cache.plan
    assert plan is not None
    a.transform(X2[:1], packed=True)
    assert a._cache.plan is plan  # not rebuilt per call
    # learning (batch or one step) drops it; the next transform sees the new state
    for sp in (a, b):
        sp.partial_fit(X2[20:30])
        for x in X2[30:35]:
            sp.compute(x, learn=True)
    assert a._cache.plan is None
    np.testing.assert_array_equal(a.transform(X2), b.transform(X2))
    np.testing.assert_array_equal(a.transform(X2, boosted=True), b.transform(X2, boosted=True))


def test_set_params_after_fit_is_seen_by_the_next_call():
    sp = sp_2d().fit(X2[:20])
    sp.transform(X2)
    sp.set_params(num_active_columns_per_inh_area=2)
    assert (sp.transform(X2).sum(axis=1) == 2).all()
    with pytest.raises(ParameterError, match="potential_pct"):
        sp.set_params(potential_pct=2.0).transform(X2)


def test_deep_copy_of_a_used_sp_behaves_the_same():
    import copy

    sp = sp_2d(global_inhibition=False, boost_strength=3.0).fit(X2[:20])
    sp.transform(X2)
    sp.compute(X2[20], learn=True)  # the caches now hold numba handles
    twin = copy.deepcopy(sp)
    for s in (sp, twin):
        for x in X2[21:30]:
            s.compute(x, learn=True)
    assert_same(learned_attributes(sp), learned_attributes(twin))
    np.testing.assert_array_equal(twin.transform(X2), sp.transform(X2))


# ------------------------------------------------------------------------------ 7. back-projection


def _tiny_sp() -> SpatialPooler:
    potential = np.array(
        [
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [1, 0, 0, 0, 1, 1],
        ],
        np.uint8,
    )
    permanences = np.array(
        [
            # 0.0999995 >= 0.1 - 1e-6 (connected), 0.0999 is not, 0.05 is not
            [0.5, 0.1, 0.0999, 0.05, 0.0, 0.0],
            [0.0, 0.0, 0.3, 0.0999995, 0.2, 0.08],
            [0.9, 0.0, 0.0, 0.0, 0.1, 0.04],
        ],
        np.float32,
    )
    sp = SpatialPooler(
        input_dimensions=(6,),
        column_dimensions=(3,),
        potential_radius=3,
        potential_pct=1.0,
        global_inhibition=True,
        num_active_columns_per_inh_area=1,
        syn_perm_connected=0.1,
        seed=0,
    )
    return sp.initialize_state(potential, permanences, inhibition_radius=3)


TINY_CONNECTED = [
    [1, 1, 0, 0, 0, 0],
    [0, 0, 1, 1, 1, 0],
    [1, 0, 0, 0, 1, 0],
]


def test_connected_synapses_of_hand_made_sp():
    sp = _tiny_sp()
    for c in range(3):
        got = sp.connected_synapses(c)
        assert got.dtype == np.uint8 and got.tolist() == TINY_CONNECTED[c]
    assert sp.connected_matrix().tolist() == TINY_CONNECTED
    assert sp.connected_synapses(np.int64(2)).tolist() == TINY_CONNECTED[2]
    for bad in (3, -1, True, 1.0):
        with pytest.raises(ParameterError, match="column"):
            sp.connected_synapses(bad)


@pytest.mark.parametrize(
    ("active", "expected"),
    [
        ([0], [1, 1, 0, 0, 0, 0]),
        ([1], [0, 0, 1, 1, 1, 0]),
        ([2], [1, 0, 0, 0, 1, 0]),
        ([0, 1], [1, 1, 1, 1, 1, 0]),
        ([0, 2], [2, 1, 0, 0, 1, 0]),
        ([0, 1, 2], [2, 1, 1, 1, 2, 0]),
        ([], [0, 0, 0, 0, 0, 0]),
    ],
)
def test_inverse_transform_counts_connected_synapses(active, expected):
    sp = _tiny_sp()
    dense = np.zeros(3, np.uint8)
    dense[active] = 1
    single = sp.inverse_transform(dense)
    assert single.shape == (6,) and single.dtype == np.float32
    assert single.tolist() == expected
    assert sp.inverse_transform(dense[None]).tolist() == [expected]
    assert sp.inverse_transform([np.array(active, np.int64)]).tolist() == [expected]


def test_inverse_transform_batches_and_index_lists():
    sp = _tiny_sp()
    dense = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 1]], np.uint8)
    expected = [[1, 1, 0, 0, 0, 0], [2, 1, 1, 1, 2, 0], [0] * 6, [1, 0, 1, 1, 2, 0]]
    assert sp.inverse_transform(dense).tolist() == expected
    assert sp.inverse_transform(dense.astype(bool)).tolist() == expected
    index_lists = [np.array([0]), np.array([0, 1, 2]), np.array([], np.int64), np.array([1, 2])]
    assert sp.inverse_transform(index_lists).tolist() == expected


def test_inverse_transform_accepts_empty_python_lists():
    # An empty SDR written as a plain list (e.g. from np.flatnonzero(row).tolist()).
    sp = _tiny_sp()
    assert sp.inverse_transform([[], [0, 2]]).tolist() == [[0] * 6, [2, 1, 0, 0, 1, 0]]


def test_inverse_transform_weighted_is_sum_of_permanences():
    sp = _tiny_sp()
    dense = np.array([[1, 0, 0], [1, 1, 1], [0, 1, 1], [0, 0, 0]], np.uint8)
    got = sp.inverse_transform(dense, weighted=True)
    expected = dense.astype(np.float64) @ sp.permanences_.astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got[1], [1.4, 0.1, 0.3999, 0.1499995, 0.3, 0.12], rtol=1e-5)


def test_inverse_transform_equals_forum_loop_on_learned_sp():
    sp = sp_2d(boost_strength=2.0).fit(X2[:20])
    sdrs = sp.transform(X2)
    back = sp.inverse_transform(sdrs)
    for row, got in zip(sdrs, back, strict=True):
        loop = np.zeros(sp.n_inputs)
        for c in np.flatnonzero(row):
            loop = loop + sp.connected_synapses(int(c))
        np.testing.assert_array_equal(got, loop)
    lists = [np.flatnonzero(r) for r in sdrs]
    np.testing.assert_array_equal(sp.inverse_transform(lists), back)
    weighted = sp.inverse_transform(sdrs, weighted=True)
    np.testing.assert_allclose(weighted, sdrs.astype(np.float64) @ sp.permanences_, rtol=1e-5)


def _ordered_float32_sums(packed: np.ndarray, n_col: int, weights: np.ndarray) -> np.ndarray:
    """Per sample, the weights of its active columns added in ascending column order in
    float32 (the back-projection's summation order, so equal to the last bit)."""
    dense = np.unpackbits(packed, axis=1, count=n_col)
    out = np.zeros((len(packed), weights.shape[1]), np.float32)
    for s, row in enumerate(dense):
        for c in np.flatnonzero(row):
            out[s] += weights[c]
    return out


@pytest.mark.parametrize("weighted", [False, True])
def test_inverse_transform_accepts_packed_sdrs_bit_identically(weighted):
    # reconstruct.py calls sp.inverse_transform(packed, weighted=...) on stored SDRs
    sp = sp_2d(boost_strength=2.0).fit(X2[:20])
    packed = sp.transform(X2, packed=True)
    dense = sp.transform(X2)
    got = sp.inverse_transform(packed, weighted=weighted)
    assert got.dtype == np.float32 and got.shape == (len(X2), sp.n_inputs)
    np.testing.assert_array_equal(got, sp.inverse_transform(dense, weighted=weighted))
    weights = sp.permanences_ if weighted else sp.connected_matrix().astype(np.float32)
    expected = _ordered_float32_sums(packed, sp.n_columns, weights)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    # one packed row (1-D) gives one map; batches below and above the serial cut agree
    np.testing.assert_array_equal(sp.inverse_transform(packed[3], weighted=weighted), got[3])
    for n in (1, 5, 40):
        np.testing.assert_array_equal(sp.inverse_transform(packed[:n], weighted=weighted), got[:n])


def test_inverse_transform_follows_learning():
    # the weights are kept between calls, and dropped when learning changes the permanences
    sp = sp_2d(boost_strength=2.0).fit(X2[:20])
    sdrs = sp.transform(X2[:8], packed=True)
    before = sp.inverse_transform(sdrs, weighted=True)
    sp.partial_fit(X2[20:30])
    after = sp.inverse_transform(sdrs, weighted=True)
    np.testing.assert_allclose(
        after, np.unpackbits(sdrs, axis=1, count=64) @ sp.permanences_, rtol=1e-5
    )
    assert not np.array_equal(before, after)


# ------------------------------------------------------------------------------ 8. save / load


def _trained_local_sp() -> SpatialPooler:
    sp = sp_2d(global_inhibition=False, num_active_columns_per_inh_area=3, boost_strength=3.0)
    return sp.partial_fit(X2[:30])


def test_save_load_round_trip(tmp_path: Path):
    sp = _trained_local_sp()
    path = tmp_path / "sp.npz"
    sp.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sp.npz"]  # no temporary left over
    loaded = SpatialPooler.load(path)
    assert loaded.get_params() == sp.get_params()
    assert_same(learned_attributes(sp), learned_attributes(loaded))
    np.testing.assert_array_equal(loaded._conn_bits, sp._conn_bits)
    np.testing.assert_array_equal(loaded.transform(X2), sp.transform(X2))
    np.testing.assert_array_equal(
        loaded.transform(X2, boosted=True), sp.transform(X2, boosted=True)
    )
    # continuing to learn after the round trip is the same as never saving (crosses step 50,
    # where the inhibition radius and minimum duty cycles are updated)
    more = random_inputs(40, 144, 0.25, seed=14)
    for s in (sp, loaded):
        s.partial_fit(more)
    assert_same(learned_attributes(sp), learned_attributes(loaded))
    np.testing.assert_array_equal(loaded.transform(X2), sp.transform(X2))


def test_saved_file_is_plain_npz(tmp_path: Path):
    sp = sp_1d().fit(X1[:5])
    path = tmp_path / "sp.npz"
    sp.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    # Pools are stored as CSR: pointers, input indices, permanences.
    ptr, idx, perm = arrays["pool_ptr"], arrays["pool_idx"], arrays["pool_perm"]
    rows = np.repeat(np.arange(sp.n_columns), np.diff(ptr))
    potential = np.zeros_like(sp.potential_)
    potential[rows, idx] = 1
    permanences = np.zeros_like(sp.permanences_)
    permanences[rows, idx] = perm
    np.testing.assert_array_equal(potential, sp.potential_)
    np.testing.assert_array_equal(permanences, sp.permanences_)
    assert all(a.dtype != object for a in arrays.values())


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, Any]]:
    path = tmp_path / "sp.npz"
    sp_1d().fit(X1[:5]).save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    return path, arrays, meta


def _meta_array(meta: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_load_truncated_file_raises_data_error(saved, tmp_path, fraction):
    path = saved[0]
    data = path.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DataError, match="truncated.npz"):
        SpatialPooler.load(bad)


def test_load_text_file_raises_data_error(tmp_path):
    bad = tmp_path / "notes.npz"
    bad.write_text("this is not a Spatial Pooler\n")
    with pytest.raises(DataError):
        SpatialPooler.load(bad)


def test_load_npy_file_raises_data_error(tmp_path):
    bad = tmp_path / "perm.npy"
    np.save(bad, np.zeros((32, 64), np.float32))
    with pytest.raises(DataError):
        SpatialPooler.load(bad)


def test_load_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        SpatialPooler.load(tmp_path / "absent.npz")


@pytest.mark.parametrize(
    ("key", "value"), [("format_version", 2), ("format_version", "1"), ("format", "x")]
)
def test_load_wrong_format_version_raises_data_error(saved, tmp_path, key, value):
    _, arrays, meta = saved
    bad = tmp_path / "future.npz"
    np.savez(bad, **{**arrays, "meta": _meta_array({**meta, key: value})})
    with pytest.raises(DataError, match="version"):
        SpatialPooler.load(bad)


@pytest.mark.parametrize(
    "missing",
    [
        "pool_ptr",
        "pool_idx",
        "pool_perm",
        "boost_factors",
        "active_duty_cycles",
        "overlap_duty_cycles",
        "min_overlap_duty_cycles",
        "meta",
    ],
)
def test_load_missing_array_raises_data_error(saved, tmp_path, missing):
    _, arrays, _ = saved
    bad = tmp_path / "partial.npz"
    np.savez(bad, **{k: v for k, v in arrays.items() if k != missing})
    with pytest.raises(DataError):
        SpatialPooler.load(bad)


def test_load_wrongly_shaped_array_raises_data_error(saved, tmp_path):
    _, arrays, _ = saved
    bad = tmp_path / "shape.npz"
    np.savez(bad, **{**arrays, "boost_factors": np.ones(31, np.float32)})
    with pytest.raises(DataError, match="boost_factors"):
        SpatialPooler.load(bad)


@pytest.mark.parametrize(
    "damage",
    ["index out of range", "duplicate input", "short permanences", "pointer decreasing", "nan"],
)
def test_load_inconsistent_pools_raises_data_error(saved, tmp_path, damage):
    _, arrays, _ = saved
    ptr, idx, perm = (
        arrays["pool_ptr"].copy(),
        arrays["pool_idx"].copy(),
        arrays["pool_perm"].copy(),
    )
    if damage == "index out of range":
        idx[0] = 10_000
    elif damage == "duplicate input":
        idx[1] = idx[0]
    elif damage == "short permanences":
        perm = perm[:-1]
    elif damage == "pointer decreasing":
        ptr[1], ptr[2] = ptr[2], ptr[1]
    else:
        perm[0] = np.nan
    bad = tmp_path / "inconsistent.npz"
    np.savez(bad, **{**arrays, "pool_ptr": ptr, "pool_idx": idx, "pool_perm": perm})
    with pytest.raises(DataError):
        SpatialPooler.load(bad)


@pytest.mark.parametrize("drop", ["iteration_num", "inhibition_radius", "params"])
def test_load_incomplete_metadata_raises_data_error(saved, tmp_path, drop):
    _, arrays, meta = saved
    bad = tmp_path / "meta.npz"
    np.savez(bad, **{**arrays, "meta": _meta_array({k: v for k, v in meta.items() if k != drop})})
    with pytest.raises(DataError):
        SpatialPooler.load(bad)


def test_load_non_object_metadata_raises_data_error(saved, tmp_path):
    _, arrays, _ = saved
    bad = tmp_path / "meta.npz"
    np.savez(bad, **{**arrays, "meta": _meta_array([1, 2, 3])})
    with pytest.raises(DataError):
        SpatialPooler.load(bad)


# ------------------------------------------------------------------------------ 9. NuPIC params


def test_from_nupic_params_forum_dictionary_on_mnist(mnist_x):
    params = {**FORUM_PARAMS, "seed": 1956, "spVerbosity": 1}
    sp = SpatialPooler.from_nupic_params(params)
    assert sp.input_dimensions == (28, 28) and sp.column_dimensions == (37, 37)
    assert sp.potential_radius == 36 and sp.potential_pct == 1.0
    assert sp.global_inhibition is True and sp.local_area_density == -1
    assert sp.num_active_columns_per_inh_area == 8
    assert sp.syn_perm_inactive_dec == 0.008 and sp.syn_perm_active_inc == 0.05
    assert sp.syn_perm_connected == 0.1 and sp.min_pct_overlap_duty_cycle == 0.001
    assert sp.duty_cycle_period == 1000 and sp.boost_strength == 17
    assert sp.seed == 1956 and sp.sp_verbosity == 1
    assert sp.stimulus_threshold == 0 and sp.wrap_around is True  # NuPIC defaults
    assert mnist_x.shape == (300, 784)
    for x in mnist_x[:30]:
        assert len(sp.compute(x, learn=True)) == 8
    sp.partial_fit(mnist_x[30:150])
    out = sp.transform(mnist_x)
    np.testing.assert_array_equal(out.sum(axis=1), np.full(300, 8))
    assert sp.iteration_num_ == 150
    # potential pools cover the whole image (radius 36 > 28, pct 1.0)
    assert sp.potential_.sum() == 37 * 37 * 784


def test_positive_local_area_density_wins_over_negative_num_active(mnist_x):
    params = {**FORUM_PARAMS, "localAreaDensity": 0.1, "numActiveColumnsPerInhArea": -1, "seed": 3}
    sp = SpatialPooler.from_nupic_params(params).fit(mnist_x[:40])
    np.testing.assert_array_equal(sp.transform(mnist_x).sum(axis=1), np.full(300, int(0.1 * 1369)))


def test_positive_local_area_density_wins_over_positive_num_active():
    params = {
        "inputDimensions": [12, 12],
        "columnDimensions": [8, 8],
        "potentialRadius": 3,
        "globalInhibition": True,
        "localAreaDensity": 0.1,
        "numActiveColumnsPerInhArea": 20,
        "seed": 4,
    }
    sp = SpatialPooler.from_nupic_params(params).fit(X2[:10])
    assert sp.input_dimensions == (12, 12)  # lists become tuples
    np.testing.assert_array_equal(sp.transform(X2).sum(axis=1), np.full(len(X2), 6))


def test_from_nupic_params_unknown_key_names_it():
    with pytest.raises(ParameterError, match="potentialRadiu'"):
        SpatialPooler.from_nupic_params({**FORUM_PARAMS, "potentialRadiu": 3})
    with pytest.raises(ParameterError, match="maxBoost"):
        SpatialPooler.from_nupic_params({"maxBoost": 10.0})


def test_from_nupic_params_validates_values():
    with pytest.raises(ParameterError, match="potential_pct"):
        SpatialPooler.from_nupic_params({**FORUM_PARAMS, "potentialPct": 1.5})


def test_nupic_params_round_trip():
    sp = SpatialPooler.from_nupic_params({**FORUM_PARAMS, "seed": 7, "spVerbosity": 2})
    params = sp.nupic_params()
    assert set(params) == set(NUPIC_PARAM_NAMES)
    for key, value in FORUM_PARAMS.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert params[key] == expected, key
    again = SpatialPooler.from_nupic_params(json.loads(json.dumps(params)))
    assert again.get_params() == sp.get_params()
    assert again.nupic_params() == params
    # snake_case dictionaries (get_params) are accepted too
    assert SpatialPooler.from_nupic_params(sp.get_params()).get_params() == sp.get_params()


# ------------------------------------------------------------------------------ 10. bad input


def test_parameter_error_is_a_value_error():
    assert issubclass(ParameterError, ValueError)
    assert issubclass(ParameterError, SDRIndexError)
    assert issubclass(DataError, ValueError)


BAD_PARAMS = [
    (dict(local_area_density=-1.0, num_active_columns_per_inh_area=0), "num_active_columns"),
    (dict(local_area_density=0.0, num_active_columns_per_inh_area=-1), "local_area_density"),
    # pools of int(5 * 0.5 + 0.5) = 3 inputs cannot reach a threshold of 4
    (dict(potential_radius=2, stimulus_threshold=4), "stimulus_threshold"),
    (dict(potential_pct=0), "potential_pct"),
    (dict(potential_pct=1.5), "potential_pct"),
    (dict(column_dimensions=(4, 8)), "column_dimensions"),
    (dict(input_dimensions=(8, 8)), "input_dimensions"),
    (dict(boost_strength=-0.5), "boost_strength"),
    (dict(duty_cycle_period=0), "duty_cycle_period"),
    (dict(local_area_density=0.7), "local_area_density"),
    (dict(potential_radius=-1), "potential_radius"),
    (dict(syn_perm_connected=1.5), "syn_perm_connected"),
    (dict(seed=-2), "seed"),
    (dict(input_dimensions=(0,)), "input_dimensions"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_PARAMS, ids=[b[1] for b in BAD_PARAMS])
def test_invalid_parameters_raise_naming_the_parameter(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        sp_1d(**kwargs)


def test_no_density_message_names_both_parameters():
    with pytest.raises(ParameterError) as info:
        sp_1d(local_area_density=-1.0, num_active_columns_per_inh_area=0)
    assert "local_area_density" in str(info.value)
    assert "num_active_columns_per_inh_area" in str(info.value)


@pytest.mark.parametrize(("kwargs", "name"), BAD_PARAMS[:10], ids=[b[1] for b in BAD_PARAMS[:10]])
def test_invalid_parameters_set_later_are_caught_by_fit(kwargs, name):
    sp = sp_1d()
    sp.set_params(**kwargs)
    with pytest.raises(ParameterError, match=name):
        sp.fit(X1[:3])


SET_LATER = [
    (dict(duty_cycle_period=0), "duty_cycle_period"),
    (dict(local_area_density=0.7), "local_area_density"),
    # above the 9-input pools; with boost factors of 1 nothing can win, so this cannot hang
    (dict(stimulus_threshold=50), "stimulus_threshold"),
]


@pytest.mark.parametrize("method", ["partial_fit", "compute"])
@pytest.mark.parametrize(("kwargs", "name"), SET_LATER, ids=[s[1] for s in SET_LATER])
def test_invalid_parameters_set_later_are_caught_by_online_learning(kwargs, name, method):
    sp = sp_1d(boost_strength=0.0).partial_fit(X1[:5])
    sp.set_params(**kwargs)
    before = state_of(sp)
    with pytest.raises(ParameterError, match=name):
        if method == "partial_fit":
            sp.partial_fit(X1[5:10])
        else:
            sp.compute(X1[5], learn=True)
    assert_same(before, state_of(sp))


BAD_INPUTS = {
    "too short": (X1[:, :63], "64"),
    "too long": (np.zeros((3, 65), np.uint8), "64"),
    "non-binary 2": (X1 * 2, "binary"),
    "non-binary 0.5": (X1 * 0.5, "binary"),
    "negative": (-X1.astype(np.int8), "binary"),
    "nan": (np.full((2, 64), np.nan), "binary"),
    "one vector": (X1[0], "shape"),
    "scalar": (np.uint8(1), "shape"),
    "extra axis": (X1[None], "shape"),
    "object": (X1.astype(object), "dtype"),
    "strings": (X1.astype(str), "dtype"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("method", ["transform", "partial_fit", "fit", "overlaps"])
def test_bad_inputs_raise_and_leave_the_sp_unchanged(case, method):
    X, words = BAD_INPUTS[case]
    sp = sp_1d(boost_strength=2.0).partial_fit(X1[:10])
    before = state_of(sp)
    with pytest.raises(ParameterError, match=words):
        getattr(sp, method)(X)
    assert_same(before, state_of(sp))


BAD_VECTORS = {
    "too short": (X1[0, :63], "64"),
    "two rows": (X1[:2], "64"),
    "non-binary": (X1[0] * 3, "binary"),
    "nan": (np.full(64, np.nan), "binary"),
    "object": (X1[0].astype(object), "dtype"),
}


@pytest.mark.parametrize("case", list(BAD_VECTORS))
@pytest.mark.parametrize("learn", [True, False])
def test_bad_compute_inputs_raise_and_leave_the_sp_unchanged(case, learn):
    x, words = BAD_VECTORS[case]
    sp = sp_1d(boost_strength=2.0).partial_fit(X1[:10])
    before = state_of(sp)
    with pytest.raises(ParameterError, match=words):
        sp.compute(x, learn=learn)
    assert_same(before, state_of(sp))


@pytest.mark.parametrize("learn", [True, False])
def test_compute_with_wrong_active_array_raises_and_leaves_the_sp_unchanged(learn):
    sp = sp_1d(boost_strength=2.0).partial_fit(X1[:10])
    before = state_of(sp)
    with pytest.raises(ParameterError, match="active_array"):
        sp.compute(X1[11], learn=learn, active_array=np.zeros(10, np.uint8))
    assert_same(before, state_of(sp))


BAD_SDRS = {
    "wrong length": (np.zeros((2, 31), np.uint8), "32"),
    "non-binary": (np.full((2, 32), 2, np.uint8), "binary"),
    "3-d": (np.zeros((2, 2, 32), np.uint8), "32"),
    "index out of range": ([np.array([0, 32])], r"\[0, 32\)"),
    "negative index": ([np.array([-1])], r"\[0, 32\)"),
    "float index": ([np.array([1.5])], "integer"),
}


@pytest.mark.parametrize("case", list(BAD_SDRS))
def test_bad_inverse_transform_inputs_raise_and_leave_the_sp_unchanged(case):
    sdrs, words = BAD_SDRS[case]
    sp = sp_1d().partial_fit(X1[:10])
    before = state_of(sp)
    with pytest.raises(ParameterError, match=words):
        sp.inverse_transform(sdrs)
    assert_same(before, state_of(sp))


def test_bad_epochs_raise_and_leave_the_sp_unchanged():
    sp = sp_1d().partial_fit(X1[:10])
    before = state_of(sp)
    for epochs in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="epochs"):
            sp.fit(X1, epochs=epochs)
    assert_same(before, state_of(sp))
