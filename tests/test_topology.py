"""Tests of sdrindex.sp.topology (neighbourhoods, column -> input mapping) and of the numba
neighbourhood kernel ``sp._kernels.box_neighbors`` that must agree with it element for element.

Expected values are written out by hand or taken from NuPIC's own unit tests
(``tests/unit/nupic/algorithms/spatial_pooler_unit_test.py``, ``testMapColumn``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sdrindex.sp import _kernels as K
from sdrindex.sp import topology as T

# ------------------------------------------------------------------------ coordinates


@pytest.mark.parametrize(
    ("index", "dims", "coords"),
    [
        (0, (10,), (0,)),
        (7, (10,), (7,)),
        (0, (4, 5), (0, 0)),
        (7, (4, 5), (1, 2)),
        (19, (4, 5), (3, 4)),
        (23, (2, 3, 4), (1, 2, 3)),
        (13, (2, 3, 4), (1, 0, 1)),
    ],
)
def test_coordinates_round_trip(index, dims, coords):
    assert T.coordinates_from_index(index, dims) == coords
    assert T.index_from_coordinates(coords, dims) == index


# ------------------------------------------------------------------------ 1-D neighbourhoods


@pytest.mark.parametrize(
    ("center", "radius", "expected"),
    [
        (0, 2, [0, 1, 2]),  # left edge: clipped
        (5, 2, [3, 4, 5, 6, 7]),  # centre
        (9, 2, [7, 8, 9]),  # right edge: clipped
        (4, 0, [4]),  # radius 0: the centre alone
        (0, 0, [0]),
        (3, 20, list(range(10))),  # radius beyond the dimension: everything once
        (9, 9, list(range(10))),
    ],
)
def test_neighborhood_1d(center, radius, expected):
    got = T.neighborhood(center, radius, (10,))
    assert got.dtype == np.int64
    assert got.tolist() == expected


@pytest.mark.parametrize(
    ("center", "radius", "expected"),
    [
        (0, 2, [8, 9, 0, 1, 2]),  # wraps to the right end, row-major from the left side
        (5, 2, [3, 4, 5, 6, 7]),  # centre: same as without wrap
        (9, 2, [7, 8, 9, 0, 1]),
        (4, 0, [4]),
        (9, 0, [9]),
        # 2r + 1 = 11 > 10: each side is capped at the dimension, no index twice
        (0, 5, [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]),
        (3, 20, [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]),
    ],
)
def test_wrapping_neighborhood_1d(center, radius, expected):
    got = T.wrapping_neighborhood(center, radius, (10,))
    assert got.tolist() == expected
    assert len(set(got.tolist())) == len(got)


def test_wrapping_neighborhood_1d_never_repeats_for_any_radius():
    for d in (1, 2, 3, 7, 10):
        for center in range(d):
            for radius in range(0, 2 * d + 3):
                got = T.wrapping_neighborhood(center, radius, (d,)).tolist()
                assert len(got) == len(set(got)) == min(d, 2 * radius + 1), (d, center, radius)
                assert center in got


# ------------------------------------------------------------------------ 2-D neighbourhoods
# Grid (4, 5): index = 5 * row + col.


@pytest.mark.parametrize(
    ("center", "radius", "expected"),
    [
        (0, 1, [0, 1, 5, 6]),  # top-left corner
        (12, 1, [6, 7, 8, 11, 12, 13, 16, 17, 18]),  # (2, 2): full 3x3 box
        (19, 1, [13, 14, 18, 19]),  # bottom-right corner
        (4, 1, [3, 4, 8, 9]),  # top-right corner
        (12, 0, [12]),
        (7, 10, list(range(20))),
    ],
)
def test_neighborhood_2d(center, radius, expected):
    assert T.neighborhood(center, radius, (4, 5)).tolist() == expected


@pytest.mark.parametrize(
    ("center", "radius", "expected"),
    [
        # rows [3, 0, 1] x cols [4, 0, 1], row-major
        (0, 1, [19, 15, 16, 4, 0, 1, 9, 5, 6]),
        (12, 1, [6, 7, 8, 11, 12, 13, 16, 17, 18]),
        # (3, 4): rows [2, 3, 0] x cols [3, 4, 0]
        (19, 1, [13, 14, 10, 18, 19, 15, 3, 4, 0]),
        (12, 0, [12]),
        # radius 3: rows capped at 4 ([3, 0, 1, 2] for row 2 -> left = -1), cols capped at 5
        (
            12,
            3,
            [
                *[5 * 3 + c for c in (4, 0, 1, 2, 3)],
                *[5 * 0 + c for c in (4, 0, 1, 2, 3)],
                *[5 * 1 + c for c in (4, 0, 1, 2, 3)],
                *[5 * 2 + c for c in (4, 0, 1, 2, 3)],
            ],
        ),
    ],
)
def test_wrapping_neighborhood_2d(center, radius, expected):
    got = T.wrapping_neighborhood(center, radius, (4, 5)).tolist()
    assert got == expected
    assert len(set(got)) == len(got)


def _brute_force(center, radius, dims, wrap):
    """Every index whose per-dimension distance (circular when wrapping) is <= radius."""
    pos = T.coordinates_from_index(center, dims)
    out = set()
    for coords in itertools.product(*[range(d) for d in dims]):
        ok = True
        for p, q, d in zip(pos, coords, dims, strict=True):
            dist = abs(p - q)
            if wrap:
                dist = min(dist, d - dist)
            ok &= dist <= radius
        if ok:
            out.add(T.index_from_coordinates(coords, dims))
    return out


@pytest.mark.parametrize("wrap", [False, True])
def test_neighborhoods_match_brute_force_sets(wrap):
    rng = np.random.default_rng(7)
    hood = T.wrapping_neighborhood if wrap else T.neighborhood
    for _ in range(150):
        nd = int(rng.integers(1, 4))
        dims = tuple(int(v) for v in rng.integers(1, 7, size=nd))
        center = int(rng.integers(0, int(np.prod(dims))))
        radius = int(rng.integers(0, 8))
        got = hood(center, radius, dims).tolist()
        assert len(got) == len(set(got)), (dims, center, radius)
        assert set(got) == _brute_force(center, radius, dims, wrap), (dims, center, radius)


# ------------------------------------------------------------------------ map_column


def test_map_column_nupic_docstring_1d_example():
    # NuPIC's _mapColumn docstring: 3 columns over 7 inputs, column 1 -> input 3.
    assert T.map_column(1, (3,), (7,)) == 3


def test_map_column_nupic_docstring_2d_example():
    # NuPIC's _mapColumn docstring says column 3 of [3, 5] over [7, 11] -> input 8, but that
    # sentence predates NuPIC's centred mapping; NuPIC's code (and its unit tests below)
    # give coords (0, 3) -> (int(7/3 * 0 + 7/6), int(11/5 * 3 + 11/10)) = (1, 7) -> 1 * 11 + 7.
    assert T.map_column(3, (3, 5), (7, 11)) == 18


@pytest.mark.parametrize(
    ("column_dims", "input_dims", "pairs"),
    [
        # NuPIC testMapColumn
        ((4,), (12,), [(0, 1), (1, 4), (2, 7), (3, 10)]),
        ((4,), (4,), [(0, 0), (1, 1), (2, 2), (3, 3)]),
        ((1,), (1,), [(0, 0)]),
        ((12, 4), (36, 12), [(0, 13), (4, 49), (5, 52), (7, 58), (47, 418)]),
        ((4, 4), (3, 5), [(0, 0), (3, 4), (15, 14)]),
        # 37x37 columns over MNIST: first and last column
        ((37, 37), (28, 28), [(0, 0), (37 * 37 - 1, 28 * 28 - 1)]),
    ],
)
def test_map_column_nupic_unit_test_values(column_dims, input_dims, pairs):
    for column, expected in pairs:
        assert T.map_column(column, column_dims, input_dims) == expected, column


def test_map_column_is_monotone_and_in_range_1d():
    for n_cols, n_in in [(32, 64), (64, 32), (7, 7), (5, 13)]:
        mapped = [T.map_column(c, (n_cols,), (n_in,)) for c in range(n_cols)]
        assert all(0 <= m < n_in for m in mapped)
        assert mapped == sorted(mapped)


# ------------------------------------------------------------------------ numba kernel


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_box_neighbors_kernel_equals_python(nd, wrap):
    rng = np.random.default_rng(100 * nd + int(wrap))
    hood = T.wrapping_neighborhood if wrap else T.neighborhood
    for _ in range(120):
        dims = tuple(int(v) for v in rng.integers(1, 9, size=nd))
        n = int(np.prod(dims))
        center = int(rng.integers(0, n))
        radius = int(rng.integers(0, 10))
        out = np.full(n, -1, np.int64)
        count = K.box_neighbors(center, radius, np.asarray(dims, np.int64), wrap, out)
        expected = hood(center, radius, dims)
        assert count == len(expected), (dims, center, radius)
        np.testing.assert_array_equal(out[:count], expected, err_msg=f"{dims} {center} {radius}")


def test_box_neighbors_kernel_hand_examples():
    out = np.empty(20, np.int64)
    dims = np.array([4, 5], np.int64)
    n = K.box_neighbors(0, 1, dims, True, out)
    assert out[:n].tolist() == [19, 15, 16, 4, 0, 1, 9, 5, 6]
    n = K.box_neighbors(0, 1, dims, False, out)
    assert out[:n].tolist() == [0, 1, 5, 6]
    n = K.box_neighbors(12, 0, dims, True, out)
    assert out[:n].tolist() == [12]
    n = K.box_neighbors(3, 20, np.array([10], np.int64), True, out)
    assert out[:n].tolist() == [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
