"""sdrindex.table.TrainingTable: rows, ids, append, save/load with memory maps, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdrindex import sdr
from sdrindex.errors import DataError, ParameterError
from sdrindex.table import TrainingTable

N_BITS = 100


def _rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
    sdrs = sdr.random_sdrs(n, N_BITS, 9, seed=seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    return images, sdrs, labels


@pytest.fixture
def table():
    images, sdrs, labels = _rows(12)
    return TrainingTable(images, sdrs, N_BITS, labels=labels)


def test_new_table_numbers_rows_and_gets_them(table):
    assert len(table) == 12
    assert table.image_shape == (6, 5) and table.has_labels
    np.testing.assert_array_equal(table.ids, np.arange(12))
    rows = table.get([7, 2, 7])
    np.testing.assert_array_equal(rows.ids, [7, 2, 7])
    np.testing.assert_array_equal(rows.images, table.images[[7, 2, 7]])
    np.testing.assert_array_equal(rows.sdrs, table.sdrs[[7, 2, 7]])
    np.testing.assert_array_equal(rows.labels, table.labels[[7, 2, 7]])
    assert table.get(3).images.shape == (1, 6, 5)


def test_dense_sdrs_are_stored_packed():
    images, sdrs, _ = _rows(4)
    t = TrainingTable(images, sdr.unpack(sdrs, N_BITS), N_BITS)
    np.testing.assert_array_equal(t.sdrs, sdrs)
    assert t.labels is None and t.get([0]).labels is None


def test_append_continues_ids_from_the_largest(table):
    images, sdrs, labels = _rows(3, seed=1)
    new = table.append(images, sdrs, labels)
    np.testing.assert_array_equal(new, [12, 13, 14])
    assert len(table) == 15
    np.testing.assert_array_equal(table.get(new).images, images)
    custom = TrainingTable(*_rows(3)[:2], N_BITS, ids=[5, 40, 7])
    np.testing.assert_array_equal(custom.append(*_rows(2)[:2]), [41, 42])
    np.testing.assert_array_equal(custom.positions([40, 42, 5]), [1, 4, 0])


def test_unknown_ids_are_refused_with_the_range(table):
    with pytest.raises(ParameterError, match=r"not in the table: -1, 12 \(ids run from 0 to 11"):
        table.get([0, 12, -1])
    with pytest.raises(ParameterError, match="integers"):
        table.get([0.5])
    custom = TrainingTable(*_rows(3)[:2], N_BITS, ids=[5, 40, 7])
    with pytest.raises(ParameterError, match="not in the table: 6"):
        custom.get([6])


def test_labels_must_match_the_table(table):
    images, sdrs, labels = _rows(2, seed=2)
    with pytest.raises(ParameterError, match="has labels"):
        table.append(images, sdrs)
    unlabelled = TrainingTable(*_rows(3)[:2], N_BITS)
    with pytest.raises(ParameterError, match="no labels"):
        unlabelled.append(images, sdrs, labels)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"images": np.zeros((0, 6, 5), np.uint8), "sdrs": np.zeros((0, 13), np.uint8)},
            "at least one row",
        ),
        ({"images": np.zeros((4, 6, 5), np.float32)}, "uint8"),
        ({"images": np.zeros((4, 30), np.uint8)}, "height, width"),
        ({"sdrs": np.zeros((3, 13), np.uint8)}, "4 images but 3 SDRs"),
        ({"sdrs": np.zeros((4, 12), np.uint8)}, "width 12"),
        ({"labels": np.zeros(3, int)}, r"labels must have shape \(4,\)"),
        ({"labels": np.zeros(4)}, "labels must be integers"),
        ({"ids": [0, 1, 1, 2]}, "unique"),
        ({"ids": [0, 1, -2, 3]}, ">= 0"),
    ],
)
def test_bad_construction(change, message):
    images, sdrs, labels = _rows(4)
    args = {"images": images, "sdrs": sdrs, "labels": labels, "ids": None} | change
    with pytest.raises(ParameterError, match=message):
        TrainingTable(args["images"], args["sdrs"], N_BITS, args["labels"], args["ids"])


def test_append_checks_shapes(table):
    images, sdrs, labels = _rows(2)
    with pytest.raises(ParameterError, match="appended images"):
        table.append(np.zeros((2, 5, 5), np.uint8), sdrs, labels)
    with pytest.raises(ParameterError, match="2 images but 1 SDRs"):
        table.append(images, sdrs[:1], labels)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(table, tmp_path, mmap):
    table.append(*_rows(2, seed=5))
    table.save(tmp_path / "t")
    loaded = TrainingTable.load(tmp_path / "t", mmap=mmap)
    for name in ("images", "sdrs", "labels", "ids"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))
    assert loaded.n_bits == N_BITS
    # memory-mapped arrays are read-only views of the files, shared through the page cache
    assert loaded.images.flags.writeable is (not mmap)
    np.testing.assert_array_equal(loaded.get([13]).images, table.get([13]).images)
    # appending to a mapped table copies into memory; it saves again
    new = loaded.append(*_rows(1, seed=9))
    assert new.tolist() == [14]
    loaded.save(tmp_path / "t2")
    assert len(TrainingTable.load(tmp_path / "t2")) == 15


def test_save_without_labels(tmp_path):
    t = TrainingTable(*_rows(3)[:2], N_BITS)
    t.save(tmp_path)
    assert not (tmp_path / "labels.npy").exists()
    assert TrainingTable.load(tmp_path).labels is None


@pytest.mark.parametrize("damage", ["missing", "truncated", "pickle", "shape", "json", "version"])
def test_damaged_directory_raises_data_error_naming_the_file(table, tmp_path, damage):
    table.save(tmp_path)
    target = "table.json" if damage in ("json", "version") else "sdrs.npy"
    file = tmp_path / target
    if damage == "missing":
        file.unlink()
    elif damage == "truncated":
        file.write_bytes(file.read_bytes()[:-40])
    elif damage == "pickle":
        np.save(file, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif damage == "shape":
        np.save(file, np.zeros((12, 12), np.uint8))
    elif damage == "json":
        file.write_text("{not json")
    else:
        meta = json.loads(file.read_text())
        meta["version"] = 99
        file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=target.replace(".", r"\.")):
        TrainingTable.load(tmp_path)


def test_inconsistent_ids_file_raises_data_error(table, tmp_path):
    table.save(tmp_path)
    np.save(tmp_path / "ids.npy", np.zeros(12, np.int64))  # not unique
    with pytest.raises(DataError, match="unique"):
        TrainingTable.load(tmp_path)
