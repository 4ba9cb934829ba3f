"""The ``dyadic`` index backend: the memory against a dense reference, codes, decode, re-rank,
persistence, threads and bad input (the protocol tests in test_index.py cover it too)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import numpy as np
import pytest

from sdrindex import sdr
from sdrindex.errors import DataError, ParameterError
from sdrindex.index import SDRIndex
from sdrindex.index._dyadic import _item_codes
from sdrindex.index.dyadic import DyadicBackend, DyadicConfig


def dense_memory(packed, n_bits, config, rank):
    """Reference: Overmann's dense counter array, one row per pair (i, j) of the selected bits."""
    codes = _item_codes(np.uint64(config.seed), np.int64(0), packed.shape[0], config.n_y,
                        config.p_y)  # fmt: skip
    memory = np.zeros((n_bits * n_bits, config.n_y), dtype=np.int64)
    for x, y in zip(sdr.to_indices(packed, n_bits), codes, strict=True):
        selected = sorted(sorted(x, key=lambda b: rank[b])[: config.max_bits])
        for i, j in combinations(selected, 2):
            memory[i * n_bits + j, y] += 1
    return memory


@pytest.mark.parametrize("max_bits", [4, 32])  # 4: fewer than the 6 active bits, a subsample
def test_memory_equals_the_dense_counter_array(max_bits):
    n_bits = 48
    data = sdr.random_sdrs(300, n_bits, 6, seed=1, clusters=5)
    config = DyadicConfig(n_y=64, p_y=4, max_bits=max_bits, seed=3)
    m = DyadicBackend.with_config(data, n_bits, config).memory
    ref = dense_memory(data, n_bits, config, m.rank)
    sparse = np.zeros_like(ref)
    for u, key in enumerate(m.pair_keys):
        lo, hi = m.row_ptr[u], m.row_ptr[u + 1]
        sparse[key, m.ybits[lo:hi]] = m.counts[lo:hi]
    np.testing.assert_array_equal(sparse, ref)
    # only the pairs that occur are stored, each once
    np.testing.assert_array_equal(m.pair_keys, np.flatnonzero(ref.any(axis=1)))
    assert np.all(np.diff(m.pair_keys) > 0) and np.all(m.counts >= 1)


def test_codes_are_seeded_distinct_and_an_added_item_gets_the_code_a_build_gives():
    codes = _item_codes(np.uint64(7), np.int64(0), 500, 2048, 8)
    assert codes.shape == (500, 8) and codes.dtype == np.uint16
    assert np.all(np.diff(codes.astype(int), axis=1) > 0)  # distinct, ascending
    assert len({tuple(c) for c in codes}) == 500
    np.testing.assert_array_equal(_item_codes(np.uint64(7), np.int64(100), 5, 2048, 8),
                                  codes[100:105])  # fmt: skip
    assert not np.array_equal(_item_codes(np.uint64(8), np.int64(0), 500, 2048, 8), codes)
    # roughly uniform over the 2048 bits: no bit holds more than 3x its share
    assert np.bincount(codes.ravel(), minlength=2048).max() < 3 * 500 * 8 / 2048 + 5
    # fit(a) + add(b) + rebuild writes the same memory as fit(a + b)
    n_bits = 200
    data = sdr.random_sdrs(400, n_bits, 10, seed=2)
    grown = SDRIndex("dyadic").fit(data[:300], n_bits=n_bits)
    grown.add(data[300:])
    grown.rebuild()
    whole = SDRIndex("dyadic").fit(data, n_bits=n_bits)
    for name, a in whole._arrays().items():
        np.testing.assert_array_equal(grown._arrays()[name], a, err_msg=name)


def test_recalls_stored_and_noisy_sdrs_and_returns_true_overlaps_in_order():
    n_bits, n_active = 1369, 8  # forum-global's shape, far below the memory's capacity
    data = sdr.random_sdrs(5000, n_bits, n_active, seed=4)
    index = SDRIndex("dyadic").fit(data, n_bits=n_bits)
    ids, ov = index.query(data[:300], 10)
    np.testing.assert_array_equal(ids[:, 0], np.arange(300))
    np.testing.assert_array_equal(ov[:, 0], n_active)
    # one bit of 8 swapped (the noise helper): the stored item is still found first
    noisy = sdr.add_noise(data[:300], n_bits, 1 / 8, mode="swap", seed=5)
    ids, ov = index.query(noisy, 10)
    assert np.mean(ids[:, 0] == np.arange(300)) >= 0.99
    valid = ids >= 0
    true = np.take_along_axis(sdr.overlap(noisy, data), np.where(valid, ids, 0), axis=1)
    np.testing.assert_array_equal(ov[valid], true[valid])
    np.testing.assert_array_equal(ov[~valid], -1)
    for row_ids, row_ov in zip(ids, ov, strict=True):  # overlap desc, then id asc
        keys = list(zip(-row_ov[row_ids >= 0], row_ids[row_ids >= 0], strict=True))
        assert keys == sorted(keys) and len(set(row_ids[row_ids >= 0])) == len(keys)


def test_pads_where_the_memory_recalls_nothing_and_breaks_past_its_capacity():
    n_bits = 64
    data = sdr.from_indices([[0, 1, 2, 3], [10, 11, 12, 13]], n_bits)
    index = SDRIndex("dyadic").fit(data, n_bits=n_bits)
    # shares one active bit with item 0 but no pair of bits: nothing is recalled
    ids, ov = index.query(sdr.from_indices([[0, 40, 41, 42]], n_bits), 2)
    np.testing.assert_array_equal(ids, [[-1, -1]])
    np.testing.assert_array_equal(ov, [[-1, -1]])
    ids, ov = index.query(sdr.from_indices([[0, 1, 40, 41]], n_bits), 2)
    np.testing.assert_array_equal(ids, [[0, -1]])
    np.testing.assert_array_equal(ov, [[2, -1]])
    # past its capacity: 5,000 items on 64-bit SDRs with 8 active bits write each of the
    # 2,016 pair addresses ~70 times; with 64-bit identifier codes the crosstalk buries the
    # stored item's own code, with the default 32,768-bit codes it does not
    many = sdr.random_sdrs(5000, 64, 8, seed=6)
    small = DyadicBackend.with_config(many, 64, DyadicConfig(n_y=64, p_y=4, n_cand=1))
    ids, _ = small.query(many[:300], 1, {}, 1)
    assert np.mean(ids[:, 0] == np.arange(300)) < 0.5
    wide = DyadicBackend.with_config(many, 64, DyadicConfig(n_cand=1))
    ids, _ = wide.query(many[:300], 1, {}, 1)
    assert np.mean(ids[:, 0] == np.arange(300)) > 0.95


def test_save_load_plain_npy_and_damage_names_the_file(tmp_path):
    n_bits = 300
    data = sdr.random_sdrs(800, n_bits, 12, seed=7, clusters=8)
    index = SDRIndex("dyadic", random_state=5).fit(data, n_bits=n_bits)
    index.add(data[:4])
    index.save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    assert meta["backend"] == "dyadic" and meta["n_items"] == 804
    for name in meta["arrays"]:
        np.load(tmp_path / f"{name}.npy", allow_pickle=False)  # nothing needs unpickling
    np.testing.assert_array_equal(np.load(tmp_path / "config.npy"), [32768, 8, 16, 8, 5])
    loaded = SDRIndex.load(tmp_path)
    assert loaded.n_buffered == 4 and len(loaded) == 804
    for a, b in zip(loaded.query(data[:50], 10), index.query(data[:50], 10), strict=True):
        np.testing.assert_array_equal(a, b)

    def damaged(file, change):
        arr = np.load(tmp_path / file)
        np.save(tmp_path / file, change(arr.copy()))
        with pytest.raises(DataError, match=file.replace(".", r"\.")):
            SDRIndex.load(tmp_path)
        np.save(tmp_path / file, arr)

    def set_at(i, v):
        def change(a):
            a[i] = v
            return a

        return change

    damaged("bit_rank.npy", set_at(0, 1))  # not a permutation
    damaged("bit_rank.npy", set_at(0, -1))
    damaged("counter_bits.npy", set_at(0, 40000))  # beyond n_y
    damaged("counter_counts.npy", set_at(0, 0))
    damaged("pair_keys.npy", set_at(1, 0))  # not ascending
    damaged("config.npy", set_at(1, 20000))  # p_y > n_y / 2
    damaged("codes.npy", lambda a: a[:-1])
    damaged("buffer.npy", lambda a: np.full_like(a, 255))  # bits beyond n_bits=300
    SDRIndex.load(tmp_path)  # restored: loads again


def test_concurrent_single_and_batched_queries_match_serial():
    n_bits = 900
    data = sdr.random_sdrs(3000, n_bits, 30, seed=8, clusters=40, spread=0.6)
    queries = sdr.add_noise(data[:120], n_bits, 0.2, mode="swap", seed=9)
    index = SDRIndex("dyadic").fit(data, n_bits=n_bits)
    index.add(data[:10])  # the buffer is searched too
    serial = [index.query(q, 10) for q in queries]
    ids = np.vstack([s[0] for s in serial])
    ov = np.vstack([s[1] for s in serial])
    barrier = threading.Barrier(6)

    def work(t):
        barrier.wait()
        if t % 2:
            return index.query(queries, 10)
        rows = [index.query(q, 10) for q in queries]
        return np.vstack([r[0] for r in rows]), np.vstack([r[1] for r in rows])

    with ThreadPoolExecutor(6) as pool:
        for got_ids, got_ov in pool.map(work, range(6)):
            np.testing.assert_array_equal(got_ids, ids)
            np.testing.assert_array_equal(got_ov, ov)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ParameterError, match="dyadic p_y"):
        DyadicConfig(n_y=64, p_y=40)
    with pytest.raises(ParameterError, match="dyadic n_y"):
        DyadicConfig(n_y=70000)
    with pytest.raises(ParameterError, match="dyadic max_bits"):
        DyadicConfig(max_bits=1)
    data = sdr.random_sdrs(50, 100, 8, seed=10)
    with pytest.raises(ParameterError, match="random_state"):
        SDRIndex("dyadic", random_state=-1).fit(data, n_bits=100)
    index = SDRIndex("dyadic").fit(data, n_bits=100)
    with pytest.raises(ParameterError, match="width 12"):
        index.query(np.zeros((1, 12), np.uint8), 3)
    with pytest.raises(ParameterError, match="k must be"):
        index.query(data, 0)
    with pytest.raises(ParameterError, match="width 101"):
        index.add(np.zeros((1, 101), np.uint8))
    assert len(index) == 50 and index.n_buffered == 0  # refused input changed nothing


def test_evaluate_measures_the_dyadic_row_and_the_cli_offers_it(tmp_path, capsys):
    from types import SimpleNamespace

    from sdrindex.cli import main
    from sdrindex.evaluate.sections import index_section

    n_bits = 400
    data = sdr.random_sdrs(2000, n_bits, 12, seed=11, clusters=30, spread=0.6)
    queries = sdr.add_noise(data[:60], n_bits, 0.2, mode="swap", seed=12)
    bundle = SimpleNamespace(
        sp=SimpleNamespace(n_columns=n_bits),
        table=SimpleNamespace(sdrs=data),
        index=SDRIndex("exact").fit(data, n_bits=n_bits),
    )
    rows = index_section(bundle, queries, ("exact", "nndescent", "dyadic"), lambda _: None)
    assert list(rows) == ["exact", "nndescent", "dyadic"]
    assert rows["exact"].recall_at_10 == 1.0 and rows["dyadic"].build_seconds > 0
    assert 0.5 <= rows["dyadic"].recall_at_10 <= 1.0 and rows["dyadic"].qps > 0
    # the evaluate command takes the name, and refuses an unknown one naming the choices
    # (before it reads anything)
    assert main(["evaluate", str(tmp_path / "none"), "--backends", "exact,hnsw"]) == 2
    assert "exact, nndescent, dyadic" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "none"), "--backends", "exact,dyadic"]) != 2
    # build offers it too (argparse refuses a name it does not list, naming the choices)
    with pytest.raises(SystemExit):
        main(["build", "--out", str(tmp_path / "b"), "--backend", "hnsw"])
    assert "'dyadic'" in capsys.readouterr().err


def test_a_bundle_indexed_by_dyadic_serves_queries(tmp_path):
    pytest.importorskip("fastapi", reason="the service extras are not installed")
    from fastapi.testclient import TestClient

    from helpers import build_small_bundle
    from sdr_service import Settings, create_app
    from sdrindex.bundle import Bundle

    path = build_small_bundle(tmp_path / "b", n=400, decoder=False, backend="dyadic")
    bundle = Bundle.load(path)
    assert bundle.index.backend == "dyadic" and len(bundle.index) == 400
    with TestClient(create_app(Settings(bundle=path)), raise_server_exceptions=False) as c:
        for _ in range(600):  # the app loads the bundle in the background
            if c.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        for i in (5, 123):
            pixels = np.asarray(bundle.table.images[i]).tolist()
            r = c.post("/v1/reconstruct?k=3&methods=nearest", json={"pixels": pixels})
            assert r.status_code == 200, r.text
            top = r.json()["matches"][0]
            assert top["id"] == i and top["jaccard"] == 1.0
