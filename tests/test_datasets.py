"""Tests of sdrindex.datasets: IDX files, MNIST loading and verification, binarize, fetch."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import logging
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdrindex import datasets
from sdrindex._store import atomic_write
from sdrindex.datasets import (
    DEFAULT_MIRRORS,
    MNIST_FILES,
    binarize,
    fetch_mnist,
    load_mnist,
    read_idx,
    verify_mnist_file,
    write_idx,
)
from sdrindex.errors import DataError, ParameterError

REPO_MNIST = Path(__file__).resolve().parent.parent / "data" / "mnist"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"

# The published checksums (data/mnist/README.md), restated so that a typo in MNIST_FILES shows.
README_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding written independently of write_idx."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def sha256_decompressed(path: Path) -> str:
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


def flip_first_item(src: Path, dst: Path, offset: int) -> None:
    """Copy a gzipped IDX file, changing one byte of its decompressed payload."""
    data = bytearray(gzip.decompress(src.read_bytes()))
    data[offset] = (data[offset] + 1) % 10  # a label stays a digit
    dst.write_bytes(gzip.compress(bytes(data), compresslevel=1))


# ------------------------------------------------------------------------------ IDX round trip


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(
    "shape", [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)], ids=lambda s: f"r{len(s)}"
)
def test_idx_round_trip(tmp_path: Path, shape: tuple[int, ...], gz: bool) -> None:
    array = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    assert write_idx(path, array) == path
    raw = path.read_bytes()
    if gz:
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw == idx_bytes(array)
    back = read_idx(path)
    assert back.dtype == np.uint8
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # the result is writable
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_idx_round_trip_property(shape: tuple[int, ...], gz: bool, seed: int) -> None:
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("x.gz" if gz else "x")
        write_idx(path, array)
        back = read_idx(path)
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_gzip_detected_by_magic_bytes_not_by_name(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "compressed.idx").write_bytes(gzip.compress(idx_bytes(array)))
    (tmp_path / "plain.gz").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)


def test_write_idx_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros(3, np.uint8))
    write_idx(path, np.ones((2, 2), np.uint8))
    np.testing.assert_array_equal(read_idx(path), np.ones((2, 2), np.uint8))
    assert os.listdir(tmp_path) == ["a.idx"]


def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a.idx"
    write_idx(path, np.full(4, 9, np.uint8))

    def interrupted(f):
        f.write(b"\x00\x00\x08\x01partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    np.testing.assert_array_equal(read_idx(path), np.full(4, 9, np.uint8))
    assert os.listdir(tmp_path) == ["a.idx"]


@pytest.mark.parametrize(
    "array", [np.zeros(3, np.float32), np.zeros(3, np.int64), np.uint8(3)], ids=str
)
def test_write_idx_rejects_non_uint8_and_scalars(tmp_path: Path, array: np.ndarray) -> None:
    with pytest.raises(ParameterError, match="array"):
        write_idx(tmp_path / "a.idx", array)
    assert os.listdir(tmp_path) == []


def test_write_idx_into_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "a.idx"
    with pytest.raises(DataError, match="does not exist"):
        write_idx(path, np.zeros(3, np.uint8))


# ------------------------------------------------------------------------- damaged IDX files

_GOOD = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))

# name -> (file content, a fragment the message must contain)
DAMAGED = {
    "bad-magic-raw": (b"\x01\x02" + _GOOD[2:], "bad magic number"),
    "bad-magic-gz": (gzip.compress(b"\x00\x01" + _GOOD[2:]), "bad magic number"),
    "html-page": (b"<!DOCTYPE html><html>Not Found</html>", "bad magic number"),
    "type-float32": (_GOOD[:2] + b"\x0d" + _GOOD[3:], "0x0d"),
    "type-unknown": (_GOOD[:2] + b"\x42" + _GOOD[3:], "unknown IDX type code 0x42"),
    "zero-dims": (b"\x00\x00\x08\x00", "0 dimensions"),
    "truncated-header": (_GOOD[:10], "truncated header"),
    "truncated-payload-raw": (_GOOD[:-1], "truncated payload"),
    "truncated-payload-gz": (gzip.compress(_GOOD[:-7]), "truncated payload"),
    "trailing-bytes-raw": (_GOOD + b"\x00", "1 trailing bytes"),
    "trailing-bytes-gz": (gzip.compress(_GOOD + b"abc"), "3 trailing bytes"),
    "truncated-gzip": (gzip.compress(_GOOD)[:-12], "gzip stream is corrupt or truncated"),
    "half-gzip": (gzip.compress(_GOOD)[:20], "gzip stream is corrupt or truncated"),
    "gzip-crc": (
        gzip.compress(_GOOD)[:-8] + b"\x00\x00\x00\x00" + gzip.compress(_GOOD)[-4:],
        "gzip stream is corrupt or truncated",
    ),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_idx_raises_data_error_naming_the_file(tmp_path: Path, case: str) -> None:
    content, fragment = DAMAGED[case]
    path = tmp_path / f"{case}.idx.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message


def test_missing_file_raises_data_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here-idx1-ubyte.gz"
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert not isinstance(info.value, FileNotFoundError)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)
    assert "sdrindex fetch-mnist --dir" in str(info.value)


# ------------------------------------------------------------------------------ bundled MNIST


def test_mnist_files_table_matches_readme_and_bundled_data() -> None:
    assert {name: sha for name, (sha, _) in MNIST_FILES.items()} == README_SHA256
    for name, (sha, shape) in MNIST_FILES.items():
        assert sha256_decompressed(REPO_MNIST / name) == sha
        assert read_idx(REPO_MNIST / name).shape == shape


def test_load_bundled_mnist() -> None:
    images, labels = load_mnist("train", data_dir=REPO_MNIST)
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    images, labels = load_mnist("test", data_dir=REPO_MNIST)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert set(np.unique(labels).tolist()) == set(range(10))


def test_load_mnist_default_folder_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SDRINDEX_MNIST_DIR", raising=False)
    _, labels = load_mnist("test")  # the repository's data/mnist
    assert labels[:3].tolist() == [7, 2, 1]

    for name in (TEST_IMAGES, TEST_LABELS):
        shutil.copyfile(REPO_MNIST / name, tmp_path / name)
    flip_first_item(REPO_MNIST / TEST_LABELS, tmp_path / TEST_LABELS, offset=8)
    monkeypatch.setenv("SDRINDEX_MNIST_DIR", str(tmp_path))
    _, labels = load_mnist("test", verify=False)  # proves the environment folder was used
    assert labels[0] == 8

    monkeypatch.setenv("SDRINDEX_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="SDRINDEX_MNIST_DIR"):
        load_mnist("test")


def test_load_mnist_without_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDRINDEX_MNIST_DIR", raising=False)
    monkeypatch.setattr(datasets, "_REPO_DATA_DIR", tmp_path / "no-checkout")
    with pytest.raises(DataError) as info:
        load_mnist("test")
    assert "sdrindex fetch-mnist --dir" in str(info.value)
    assert "SDRINDEX_MNIST_DIR" in str(info.value)


def test_load_mnist_missing_file(tmp_path: Path) -> None:
    shutil.copyfile(REPO_MNIST / TEST_IMAGES, tmp_path / TEST_IMAGES)
    with pytest.raises(DataError) as info:
        load_mnist("test", data_dir=tmp_path)
    assert str(tmp_path / TEST_LABELS) in str(info.value)


def test_load_mnist_accepts_decompressed_files(tmp_path: Path) -> None:
    for name in (TEST_IMAGES, TEST_LABELS):
        (tmp_path / name.removesuffix(".gz")).write_bytes(
            gzip.decompress((REPO_MNIST / name).read_bytes())
        )
    images, labels = load_mnist("test", data_dir=tmp_path)
    assert images.shape == (10000, 28, 28)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_load_mnist_bad_split() -> None:
    with pytest.raises(ParameterError, match="split"):
        load_mnist("validation")  # type: ignore[arg-type]


def test_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    shutil.copyfile(REPO_MNIST / TEST_IMAGES, tmp_path / TEST_IMAGES)
    flip_first_item(REPO_MNIST / TEST_LABELS, tmp_path / TEST_LABELS, offset=8)
    with pytest.raises(DataError) as info:
        load_mnist("test", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / TEST_LABELS) in message
    assert "checksum mismatch" in message
    assert "sdrindex fetch-mnist --dir" in message
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_mnist_file(tmp_path / TEST_LABELS)
    # Without verification the (damaged) content loads.
    _, labels = load_mnist("test", data_dir=tmp_path, verify=False)
    assert labels[0] == 8


def test_verify_mnist_file_rejects_unknown_names(tmp_path: Path) -> None:
    path = tmp_path / "digits.gz"
    shutil.copyfile(REPO_MNIST / TEST_LABELS, path)
    with pytest.raises(DataError, match="not one of the MNIST files"):
        verify_mnist_file(path)


def test_verification_is_cached_but_sees_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / TEST_LABELS
    shutil.copyfile(REPO_MNIST / TEST_LABELS, path)
    shutil.copyfile(REPO_MNIST / TEST_IMAGES, tmp_path / TEST_IMAGES)
    calls = []
    real_sha256 = hashlib.sha256

    def counting_sha256(*args, **kwargs):
        calls.append(1)
        return real_sha256(*args, **kwargs)

    monkeypatch.setattr(datasets.hashlib, "sha256", counting_sha256)
    verify_mnist_file(path)
    verify_mnist_file(path)
    assert len(calls) == 1
    load_mnist("test", data_dir=tmp_path)  # hashes the images only: the labels are known good
    load_mnist("test", data_dir=tmp_path)
    assert len(calls) == 2

    # Same path, new content: the cache must not vouch for it.
    mtime = path.stat().st_mtime_ns
    flip_first_item(REPO_MNIST / TEST_LABELS, path, offset=8)
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_mnist_file(path)


# ---------------------------------------------------------------------------------- binarize


def test_binarize_default_threshold_128() -> None:
    image = np.array([[0, 1, 127], [128, 200, 255]], dtype=np.uint8)
    out = binarize(image)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 0, 1, 1, 1]
    batch = binarize(np.stack([image, 255 - image]))
    assert batch.shape == (2, 6)
    assert batch.tolist() == [[0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert binarize(image, threshold=255).tolist() == [0, 0, 0, 0, 0, 1]


def test_binarize_threshold_1_is_the_forum_rule_on_mnist() -> None:
    images, _ = load_mnist("test", data_dir=REPO_MNIST)
    images = images[:200]
    out = binarize(images, threshold=1)
    assert out.shape == (200, 784)
    np.testing.assert_array_equal(out, (images.reshape(200, -1) > 0).astype(np.uint8))
    default = binarize(images)
    assert 0 < default.sum() < out.sum()  # 128 keeps fewer pixels than > 0


def test_binarize_mean_is_htmcore_rule() -> None:
    images, _ = load_mnist("test", data_dir=REPO_MNIST)
    images = images[:50]
    flat = images.reshape(50, -1).astype(np.float64)
    expected = (flat >= flat.mean(axis=1, keepdims=True)).astype(np.uint8)
    np.testing.assert_array_equal(binarize(images, threshold="mean"), expected)
    # htm.core's rule turns a blank image fully on (every pixel >= its mean of 0).
    assert binarize(np.zeros((28, 28), np.uint8), threshold="mean").sum() == 784


def test_binarize_accepts_integer_and_float_grey_levels() -> None:
    image = np.array([[0, 127], [128, 255]], dtype=np.uint8)
    for dtype in (np.int64, np.uint16, np.float32, np.float64):
        np.testing.assert_array_equal(binarize(image.astype(dtype)), binarize(image))
    assert binarize(image.astype(np.float64), threshold=127.5).tolist() == [0, 0, 1, 1]
    assert binarize(np.zeros((0, 28, 28), np.uint8)).shape == (0, 784)


def test_binarize_warns_about_normalised_floats() -> None:
    with pytest.warns(UserWarning, match="0..1"):
        binarize(np.full((2, 2), 0.7))


@pytest.mark.parametrize("threshold", [0, 256, -1, 0.5, 255.5, float("nan"), "median", True, None])
def test_binarize_rejects_bad_thresholds(threshold: object) -> None:
    with pytest.raises(ParameterError, match="threshold") as info:
        binarize(np.zeros((2, 2), np.uint8), threshold=threshold)  # type: ignore[arg-type]
    assert "1..255" in str(info.value)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros(784, np.uint8),  # flat vector: ambiguous, must be reshaped
        np.zeros((1, 2, 28, 28), np.uint8),
        np.full((2, 2), 300, np.int64),
        np.full((2, 2), -1, np.int64),
        np.full((2, 2), np.nan),
        np.zeros((2, 2), bool),
        np.array([["a", "b"], ["c", "d"]]),
        np.zeros((3, 0, 0), np.uint8),
    ],
    ids=["1d", "4d", "above-255", "negative", "nan", "bool", "str", "no-pixels"],
)
def test_binarize_rejects_bad_images(images: np.ndarray) -> None:
    with pytest.raises(ParameterError, match="images"):
        binarize(images)


# ------------------------------------------------------------------------------------- fetch


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """Start real HTTP servers on 127.0.0.1, each serving one folder; returns its base URL."""
    running = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture(autouse=True)
def _no_proxy_no_mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy would intercept the 127.0.0.1 servers; the mirror variable would change defaults.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("SDRINDEX_MNIST_MIRRORS", raising=False)


def warnings_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "sdrindex.datasets")


def test_fetch_falls_back_across_mirrors(
    tmp_path: Path,
    serve: Callable[[Path], str],
    dead_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    shutil.copyfile(REPO_MNIST / TRAIN_IMAGES, bad / TRAIN_IMAGES)
    shutil.copyfile(REPO_MNIST / TEST_IMAGES, bad / TEST_IMAGES)
    flip_first_item(REPO_MNIST / TRAIN_LABELS, bad / TRAIN_LABELS, offset=8)
    # TEST_LABELS is missing on the bad mirror: a 404.
    bad_url, good_url = serve(bad), serve(REPO_MNIST)
    dest = tmp_path / "dest"
    caplog.set_level(logging.WARNING, logger="sdrindex.datasets")

    paths = fetch_mnist(dest, mirrors=[dead_url, bad_url, good_url], timeout=10, progress=False)

    assert paths == {name: dest / name for name in MNIST_FILES}
    assert sorted(os.listdir(dest)) == sorted(MNIST_FILES)  # nothing else, no temporaries
    for name, (sha, _) in MNIST_FILES.items():
        assert sha256_decompressed(dest / name) == sha
    reported = warnings_text(caplog)
    assert f"{dead_url}{TRAIN_IMAGES}: cannot connect" in reported
    assert f"{dead_url}{TRAIN_LABELS}" not in reported  # an unreachable mirror is not retried
    assert f"{bad_url}{TRAIN_LABELS}: verification failed: checksum mismatch" in reported
    assert f"{bad_url}{TEST_LABELS}: HTTP 404" in reported
    assert f"{bad_url}{TRAIN_IMAGES}" not in reported
    images, labels = load_mnist("test", data_dir=dest)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

    # Present and valid files are kept: a dead mirror is never contacted.
    caplog.clear()
    assert fetch_mnist(dest, mirrors=[dead_url], progress=False) == paths
    assert warnings_text(caplog) == ""


def test_fetch_all_mirrors_bad(tmp_path: Path, serve: Callable[[Path], str], dead_url: str) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    truncated = tmp_path / "truncated-mirror"
    truncated.mkdir()
    (truncated / TRAIN_IMAGES).write_bytes((REPO_MNIST / TRAIN_IMAGES).read_bytes()[:50_000])
    empty_url, truncated_url = serve(empty), serve(truncated)
    dest = tmp_path / "dest"

    with pytest.raises(DataError) as info:
        fetch_mnist(dest, mirrors=[dead_url, empty_url, truncated_url], timeout=10, progress=False)

    message = str(info.value)
    assert f"{dead_url}{TRAIN_IMAGES}: cannot connect" in message
    assert f"{empty_url}{TRAIN_IMAGES}: HTTP 404" in message
    assert f"{truncated_url}{TRAIN_IMAGES}: verification failed" in message
    assert "copy the four files" in message and "SDRINDEX_MNIST_DIR" in message
    assert os.listdir(dest) == []


def test_fetch_replaces_a_damaged_file_using_env_mirrors(
    tmp_path: Path,
    serve: Callable[[Path], str],
    dead_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES):
        shutil.copyfile(REPO_MNIST / name, dest / name)
    flip_first_item(REPO_MNIST / TEST_LABELS, dest / TEST_LABELS, offset=8)
    monkeypatch.setenv("SDRINDEX_MNIST_MIRRORS", f" {dead_url} , {serve(REPO_MNIST)} ")
    caplog.set_level(logging.WARNING, logger="sdrindex.datasets")

    fetch_mnist(dest, timeout=10)  # mirrors=None: the environment variable decides

    assert sha256_decompressed(dest / TEST_LABELS) == MNIST_FILES[TEST_LABELS][0]
    assert sorted(os.listdir(dest)) == sorted(MNIST_FILES)
    assert f"{dest / TEST_LABELS}: checksum mismatch" in warnings_text(caplog)
    err = capsys.readouterr().err
    assert "already present" in err and "SHA-256 verified" in err


def test_fetch_from_a_local_folder(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES):
        shutil.copyfile(REPO_MNIST / name, dest / name)
    paths = fetch_mnist(dest, mirrors=[str(REPO_MNIST)], progress=False)
    assert sha256_decompressed(paths[TEST_LABELS]) == MNIST_FILES[TEST_LABELS][0]


def test_fetch_interrupted_leaves_no_partial_file(
    tmp_path: Path, serve: Callable[[Path], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "_mnist_problem", interrupt)
    dest = tmp_path / "dest"
    with pytest.raises(KeyboardInterrupt):
        fetch_mnist(dest, mirrors=[serve(REPO_MNIST)], progress=False)
    assert os.listdir(dest) == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mirrors": []}, "mirrors"),
        ({"mirrors": ["ossci-datasets.s3.amazonaws.com/mnist"]}, "mirrors"),
        ({"mirrors": ["ftp://example.org/mnist/"]}, "mirrors"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
    ],
)
def test_fetch_rejects_bad_parameters(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        fetch_mnist(tmp_path / "dest", progress=False, **kwargs)


def test_fetch_rejects_bad_env_mirrors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDRINDEX_MNIST_MIRRORS", "not a url")
    with pytest.raises(ParameterError, match="SDRINDEX_MNIST_MIRRORS"):
        fetch_mnist(tmp_path / "dest", progress=False)


def test_default_mirrors() -> None:
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in DEFAULT_MIRRORS
    assert "https://storage.googleapis.com/cvdf-datasets/mnist/" in DEFAULT_MIRRORS
    assert all(url.startswith("https://") and url.endswith("/") for url in DEFAULT_MIRRORS)
