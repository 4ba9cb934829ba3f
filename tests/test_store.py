"""The storage layer: atomic writes, locks, format headers and the one error mapping."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdrindex import _store
from sdrindex._store import (
    atomic_dir,
    atomic_write,
    bundle_errors,
    check_format,
    file_lock,
    load_array,
    read_json,
    reading,
    save_arrays,
    sha256_file,
    swap_symlink,
    write_json,
)
from sdrindex.errors import BundleError, DataError, SDRIndexError
from sdrindex.table import TrainingTable

# ------------------------------------------------------------------------------ atomic writes


class Crash(BaseException):
    """A crash mid-write: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("exc", [Crash, KeyboardInterrupt, RuntimeError])
def test_atomic_write_failing_midway_keeps_the_old_content(tmp_path, exc):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def half(fh):
        fh.write(b"new but only ha")
        raise exc

    with pytest.raises(exc):
        atomic_write(path, half)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no temporary file left


def test_atomic_write_check_can_refuse_the_new_content(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda fh: fh.write(b"old"))
    seen = []

    def refuse(tmp: Path) -> None:
        seen.append(tmp.read_bytes())  # the check sees the complete new bytes
        raise ValueError("bad content")

    with pytest.raises(ValueError, match="bad content"):
        atomic_write(path, lambda fh: fh.write(b"new"), refuse)
    assert seen == [b"new"] and path.read_bytes() == b"old"
    assert atomic_write(path, lambda fh: fh.write(b"new")) == 3  # what write returned
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_disk_full_names_the_file_and_keeps_the_old(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DataError) as info:
        atomic_write(path, lambda fh: fh.write(b"new"))
    monkeypatch.undo()
    assert str(path) in str(info.value) and "no space left" in str(info.value)
    assert "free some space" in str(info.value)
    assert info.value.path == path
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_into_a_missing_folder(tmp_path):
    path = tmp_path / "nowhere" / "f.bin"
    with pytest.raises(DataError) as info:
        atomic_write(path, lambda fh: fh.write(b"x"))
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value) and "create it first" in str(info.value)


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "v1"
    with pytest.raises(Crash):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("a")
            raise Crash
    assert os.listdir(tmp_path) == []
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
        assert not final.exists()
    assert (final / "sub" / "b.txt").read_text() == "b"
    assert os.listdir(tmp_path) == ["v1"]


def test_swap_symlink_replaces_the_link(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    swap_symlink(tmp_path / "current", "v1")
    assert os.readlink(tmp_path / "current") == "v1"
    swap_symlink(tmp_path / "current", "v2")
    assert os.readlink(tmp_path / "current") == "v2"
    assert sorted(os.listdir(tmp_path)) == ["current", "v1", "v2"]


# ------------------------------------------------------------------------------ locks

_TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a+") as fh:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(3)
"""


def _other_process_can_lock(path: Path) -> bool:
    code = subprocess.run([sys.executable, "-c", _TRY_LOCK, str(path)], timeout=60).returncode
    assert code in (0, 3)
    return code == 0


def test_file_lock_excludes_a_second_holder(tmp_path):
    lock = tmp_path / ".update.lock"
    with file_lock(lock):
        assert lock.exists()
        # a second open file description in this process is refused too, without waiting
        with open(lock, "a+") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not _other_process_can_lock(lock)
    assert _other_process_can_lock(lock)  # released at the end of the block


def test_file_lock_is_released_when_the_block_raises(tmp_path):
    lock = tmp_path / ".lock"
    with pytest.raises(RuntimeError):
        with file_lock(lock):
            raise RuntimeError("boom")
    with open(lock, "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


def test_file_lock_in_a_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        with file_lock(tmp_path / "gone" / ".lock"):
            pass


# ------------------------------------------------------------------------------ error mapping


@pytest.mark.parametrize(
    ("exc", "fragment", "fix"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), "no such file", "save it again"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied", "ls -l"),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), "is a folder", "file inside it"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left", "free some"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only", "somewhere else"),
        (OSError(errno.EIO, "Input/output error"), "cannot read (Input/output error)", "save it"),
        (ValueError("the magic string is not correct"), "not a readable .npy file", "save it"),
        (EOFError("No data left"), "not a readable .npy file", "save it again"),
    ],
)
def test_reading_maps_os_and_format_errors_naming_the_file(tmp_path, exc, fragment, fix):
    path = tmp_path / "part.npy"
    with pytest.raises(DataError) as info:
        with reading(path, "save it again"):
            raise exc
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message and fix in message
    assert info.value.path == path and info.value.problem in message
    assert info.value.__cause__ is exc


def test_reading_lets_the_family_and_other_errors_through(tmp_path):
    own = SDRIndexError("already clear")
    with pytest.raises(SDRIndexError) as info:
        with reading(tmp_path / "x", "fix"):
            raise own
    assert info.value is own
    with pytest.raises(KeyError):
        with reading(tmp_path / "x", "fix"):
            raise KeyError("not a file problem")


def test_read_json_missing_and_corrupt(tmp_path):
    missing = tmp_path / "meta.json"
    with pytest.raises(DataError) as info:
        read_json(missing, "save it again")
    assert str(missing) in str(info.value) and "no such file" in str(info.value)
    missing.write_text('{"format": 1,')
    with pytest.raises(DataError, match=r"meta\.json: not valid JSON .* line 1"):
        read_json(missing, "save it again")
    missing.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="not UTF-8"):
        read_json(missing, "save it again")
    with pytest.raises(DataError, match="is a folder"):
        read_json(tmp_path, "save it again")
    write_json(missing, {"a": [1, 2]})
    assert missing.read_text() == json.dumps({"a": [1, 2]}, indent=2) + "\n"
    assert read_json(missing, "fix") == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("meta", "fragment"),
    [
        ([1, 2], "holds list"),
        ({"format": "other", "version": 1}, "format 'other', expected 'sdrindex.thing' version 1"),
        ({"format": "sdrindex.thing", "version": 7}, "version 7, this sdrindex reads 1"),
        ({"format": "sdrindex.thing"}, "version None"),
    ],
)
def test_check_format_names_the_file_what_was_found_and_the_fix(tmp_path, meta, fragment):
    path = tmp_path / "thing.json"
    with pytest.raises(DataError) as info:
        check_format(meta, path, "sdrindex.thing", 1, "save the thing again")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message
    assert message.endswith("save the thing again")


def test_check_format_accepts_the_expected_header(tmp_path):
    meta = {"format": "sdrindex-bundle", "format_version": 1, "n": 3}
    got = check_format(meta, tmp_path / "m.json", "sdrindex-bundle", 1, "x", "format_version")
    assert got is meta


def test_bundle_errors_names_the_damaged_file_and_the_bundle(tmp_path):
    part = tmp_path / "v1" / "table" / "sdrs.npy"
    with pytest.raises(BundleError) as info:
        with bundle_errors(tmp_path / "v1", "rebuild the bundle"):
            with reading(part, "save the table again"):
                raise FileNotFoundError(errno.ENOENT, "No such file")
    message = str(info.value)
    assert message.startswith(f"{part}: no such file") and "rebuild the bundle" in message
    assert f"bundle {tmp_path / 'v1'}" in message
    assert "save the table again" not in message  # the bundle's fix replaces the part's
    with pytest.raises(BundleError) as info:  # a fix about the machine is kept
        with bundle_errors(tmp_path / "v1", "rebuild the bundle"):
            with reading(part, "save the table again"):
                raise PermissionError(errno.EACCES, "Permission denied")
    assert str(info.value).startswith(f"{part}: permission denied; check that you may read")
    with pytest.raises(BundleError, match=r"sp\.npz: no such file.*rebuild"):
        with bundle_errors(tmp_path, "rebuild"):
            raise DataError(f"{tmp_path / 'sp.npz'}: no such file; re-save it")
    with pytest.raises(BundleError, match=r"weights\.npz: permission denied"):
        with bundle_errors(tmp_path, "rebuild"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "weights.npz"))


# ------------------------------------------------------------------------------ .npy arrays


def test_save_and_load_arrays(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.ones(4, np.uint8)}
    specs = save_arrays(tmp_path, arrays)
    assert specs == {"a": {"dtype": "<i8", "shape": [2, 3]}, "b": {"dtype": "|u1", "shape": [4]}}
    for mmap in (True, False):
        a = load_array(tmp_path / "a.npy", mmap, "<i8", [2, 3], "index")
        # a plain ndarray, never np.memmap: numba's dispatcher is slow on the subclass
        assert type(a) is np.ndarray
        np.testing.assert_array_equal(a, arrays["a"])
        assert a.flags.writeable is (not mmap)
    assert load_array(tmp_path / "b.npy", True, None, [4], "index").dtype == np.uint8


@pytest.mark.parametrize("damage", ["missing", "text", "pickle", "dtype", "shape", "truncated"])
def test_load_array_refuses_a_damaged_file_naming_it(tmp_path, damage):
    file = tmp_path / "sdrs.npy"
    np.save(file, np.zeros((5, 4), np.uint8))
    if damage == "missing":
        file.unlink()
    elif damage == "text":
        file.write_text("not an array")
    elif damage == "pickle":
        np.save(file, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif damage == "dtype":
        np.save(file, np.zeros((5, 4), np.int64))
    elif damage == "shape":
        np.save(file, np.zeros((4, 4), np.uint8))
    else:
        file.write_bytes(file.read_bytes()[:-7])
    with pytest.raises(DataError) as info:
        load_array(file, True, "|u1", [5, 4], "table")
    assert str(info.value).startswith(f"{file}: ") and "save the table again" in str(info.value)


def test_sha256_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(DataError, match="no such file"):
        sha256_file(tmp_path / "gone")


def test_table_load_permission_denied_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    table = TrainingTable(np.zeros((2, 3, 3), np.uint8), np.zeros((2, 1), np.uint8), 8)
    table.save(tmp_path)
    real_load = np.load

    def denied(file, *args, **kwargs):
        if Path(file).name == "ids.npy":
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", denied)
    with pytest.raises(DataError) as info:
        TrainingTable.load(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'ids.npy'}: permission denied")


def test_store_module_is_the_only_home_of_fsync_and_flock():
    root = Path(_store.__file__).parent
    for module in ("bundle.py", "datasets.py", "table.py", "fetch.py"):
        text = (root / module).read_text()
        for word in ("os.fsync", "fcntl", "os.replace", "os.rename", "np.save("):
            assert word not in text, f"{module} writes with {word}: use sdrindex._store"


def test_numpy_short_write_reads_as_a_full_disk():
    """numpy reports a full disk mid-array as "<n> requested and <m> written", no errno."""
    from sdrindex._store import os_problem

    what, fix = os_problem(OSError("7840000 requested and 1048448 written"), Path("a.npy"), True)
    assert what.startswith("no space left on the device"), what
    assert fix == "free some space and try again"
    what, _ = os_problem(OSError("something else"), Path("a.npy"), True)
    assert what.startswith("cannot write"), what
