"""sdrindex.sdr: layouts, round trips, overlap, noise and synthetic SDRs."""

from __future__ import annotations

import numpy as np
import pytest

from sdrindex import sdr
from sdrindex.errors import ParameterError


def _dense(n: int, n_bits: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, n_bits)) < p).astype(np.uint8)


@pytest.mark.parametrize("n_bits", [1, 7, 8, 9, 64, 100, 1369])
def test_pack_unpack_round_trip(n_bits):
    dense = _dense(20, n_bits, 0.3, n_bits)
    packed = sdr.pack(dense)
    assert packed.dtype == np.uint8
    assert packed.shape == (20, sdr.n_bytes(n_bits))
    np.testing.assert_array_equal(packed, np.packbits(dense, axis=1))
    np.testing.assert_array_equal(sdr.unpack(packed, n_bits), dense)


def test_pack_accepts_bool_and_float():
    dense = _dense(5, 30, 0.5, 1)
    np.testing.assert_array_equal(sdr.pack(dense.astype(bool)), sdr.pack(dense))
    np.testing.assert_array_equal(sdr.pack(dense.astype(np.float32)), sdr.pack(dense))


@pytest.mark.parametrize("n_bits", [1, 13, 256, 1001])
def test_indices_round_trip(n_bits):
    dense = _dense(15, n_bits, 0.2, 7)
    dense[3] = 0  # an empty SDR
    packed = sdr.pack(dense)
    for layout in (packed, dense):
        rows = sdr.to_indices(layout, n_bits)
        assert len(rows) == 15
        for row, d in zip(rows, dense, strict=True):
            np.testing.assert_array_equal(row, np.flatnonzero(d))
    np.testing.assert_array_equal(sdr.from_indices(rows, n_bits), packed)


def test_from_indices_ignores_order_and_repeats():
    a = sdr.from_indices([[5, 1, 5, 9]], 10)
    np.testing.assert_array_equal(sdr.unpack(a, 10)[0], [0, 1, 0, 0, 0, 1, 0, 0, 0, 1])


@pytest.mark.parametrize("bad", [[[10]], [[-1]], [[0.5]]])
def test_from_indices_rejects_bad_positions(bad):
    with pytest.raises(ParameterError):
        sdr.from_indices(bad, 10)


def test_to_csr_and_active_counts():
    dense = _dense(9, 70, 0.25, 3)
    indptr, indices = sdr.to_csr(sdr.pack(dense), 70)
    np.testing.assert_array_equal(np.diff(indptr), dense.sum(1))
    np.testing.assert_array_equal(indices, np.nonzero(dense)[1])
    np.testing.assert_array_equal(sdr.active_counts(dense, 70), dense.sum(1))


@pytest.mark.parametrize("n_bits", [5, 64, 200, 1369])
def test_overlap_matches_numpy(n_bits):
    a = _dense(13, n_bits, 0.3, 1)
    b = _dense(17, n_bits, 0.3, 2)
    out = sdr.overlap(sdr.pack(a), sdr.pack(b))
    assert out.dtype == np.int32 and out.shape == (13, 17)
    np.testing.assert_array_equal(out, a.astype(np.int32) @ b.T.astype(np.int32))


def test_overlap_rejects_mismatched_or_dense_input():
    with pytest.raises(ParameterError, match="widths"):
        sdr.overlap(np.zeros((1, 3), np.uint8), np.zeros((1, 4), np.uint8))
    with pytest.raises(ParameterError, match="packed"):
        sdr.overlap(np.zeros((1, 3), bool), np.zeros((1, 3), bool))


def test_validate_returns_packed_and_rejects_bad_input():
    dense = _dense(4, 20, 0.4, 5)
    packed = sdr.pack(dense)
    np.testing.assert_array_equal(sdr.validate(dense, 20), packed)
    assert sdr.validate(packed, 20) is packed
    np.testing.assert_array_equal(sdr.validate(dense[0], 20), packed[:1])  # 1-D: one SDR
    with pytest.raises(ParameterError, match="width 21"):
        sdr.validate(np.zeros((2, 21), np.uint8), 20)
    with pytest.raises(ParameterError, match="not binary"):
        sdr.validate(np.full((2, 20), 2, np.uint8), 20)
    with pytest.raises(ParameterError, match="not binary"):
        sdr.validate(np.full((2, 20), 0.5), 20)
    with pytest.raises(ParameterError, match="beyond n_bits"):
        sdr.validate(np.full((2, 3), 255, np.uint8), 20)  # padding bits set
    with pytest.raises(ParameterError, match="uint8"):
        sdr.validate(np.zeros((2, 3), np.int64), 20)
    with pytest.raises(ParameterError, match="2-D"):
        sdr.validate(np.zeros((2, 3, 4), np.uint8), 20)
    with pytest.raises(ParameterError, match="n_bits"):
        sdr.validate(packed, 0)


@pytest.mark.parametrize("mode", ["swap", "drop", "add"])
def test_add_noise_counts(mode):
    n_bits = 300
    x = sdr.random_sdrs(50, n_bits, 40, seed=0)
    y = sdr.add_noise(x, n_bits, 0.25, mode=mode, seed=1)
    before, after = sdr.active_counts(x, n_bits), sdr.active_counts(y, n_bits)
    shared = np.diagonal(sdr.overlap(x, y))
    m = 10  # round(0.25 * 40)
    if mode == "swap":
        np.testing.assert_array_equal(after, before)
        np.testing.assert_array_equal(shared, before - m)
    elif mode == "drop":
        np.testing.assert_array_equal(after, before - m)
        np.testing.assert_array_equal(shared, after)
    else:
        np.testing.assert_array_equal(after, before + m)
        np.testing.assert_array_equal(shared, before)


def test_add_noise_is_seeded_and_leaves_input_alone():
    x = sdr.random_sdrs(20, 100, 10, seed=0)
    copy = x.copy()
    a = sdr.add_noise(x, 100, 0.3, seed=42)
    np.testing.assert_array_equal(a, sdr.add_noise(x, 100, 0.3, seed=42))
    assert not np.array_equal(a, sdr.add_noise(x, 100, 0.3, seed=43))
    np.testing.assert_array_equal(x, copy)
    np.testing.assert_array_equal(sdr.add_noise(x, 100, 0.0, seed=1), x)


def test_add_noise_rounds_halves_up_and_caps_at_free_bits():
    x = sdr.from_indices([[0, 1, 2, 3, 4]], 8)
    y = sdr.add_noise(x, 8, 0.5, mode="drop", seed=0)  # 2.5 -> 3
    assert sdr.active_counts(y, 8)[0] == 2
    z = sdr.add_noise(x, 8, 1.0, mode="swap", seed=0)  # only 3 inactive bits to move to
    assert sdr.active_counts(z, 8)[0] == 5
    assert sdr.overlap(x, z)[0, 0] == 2


@pytest.mark.parametrize("kwargs", [{"mode": "flip"}, {"fraction": 1.5}, {"fraction": -0.1}])
def test_add_noise_rejects_bad_arguments(kwargs):
    args = {"fraction": 0.1, "mode": "swap"} | kwargs
    with pytest.raises(ParameterError):
        sdr.add_noise(np.zeros((1, 2), np.uint8), 16, seed=0, **args)


def test_random_sdrs_counts_seed_and_clusters():
    x = sdr.random_sdrs(400, 512, 20, seed=3, clusters=4, spread=0.3)
    np.testing.assert_array_equal(sdr.active_counts(x, 512), np.full(400, 20))
    np.testing.assert_array_equal(x, sdr.random_sdrs(400, 512, 20, seed=3, clusters=4, spread=0.3))
    ov = sdr.overlap(x, x)
    np.fill_diagonal(ov, 0)
    # with 4 clusters each SDR has many close relatives; uniform SDRs share ~0.8 bits
    assert np.median(ov.max(axis=1)) >= 12
    u = sdr.random_sdrs(400, 512, 20, seed=3)
    ou = sdr.overlap(u, u)
    np.fill_diagonal(ou, 0)
    assert ou.mean() < 1.5
    with pytest.raises(ParameterError):
        sdr.random_sdrs(5, 10, 11, seed=0)
