"""MNIST as IDX files: read, write, verify, download, and the binarizing encoder.

The IDX format (LeCun's) is a 4-byte magic number -- two zero bytes, a type code, the number of
dimensions -- then one big-endian uint32 per dimension, then the items in C order. Only the
unsigned-byte type (0x08), the one MNIST uses, is supported. Files may be gzip-compressed; gzip is
recognised by its magic bytes (1f 8b), not by the file name.

MNIST files are checked against the SHA-256 of their *decompressed* bytes (`MNIST_FILES`), so a
file re-compressed by a different mirror or tool still verifies. Files are written atomically and
OS errors reported naming the file by :mod:`sdrindex._store`; downloads stream through
:mod:`sdrindex.fetch`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import math
import numbers
import os
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex._store import atomic_write, reading
from sdrindex.errors import DataError, ParameterError
from sdrindex.fetch import MirrorFailure, fetch_file, megabytes, mirror_url, resolve_mirrors

__all__ = [
    "DEFAULT_MIRRORS",
    "MNIST_FILES",
    "binarize",
    "fetch_mnist",
    "load_mnist",
    "read_idx",
    "verify_mnist_file",
    "write_idx",
]

logger = logging.getLogger(__name__)

#: File name -> (SHA-256 of the decompressed bytes, shape of the array it holds).
MNIST_FILES: dict[str, tuple[str, tuple[int, ...]]] = {
    "train-images-idx3-ubyte.gz": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        (60000, 28, 28),
    ),
    "train-labels-idx1-ubyte.gz": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        (60000,),
    ),
    "t10k-images-idx3-ubyte.gz": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        (10000, 28, 28),
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        (10000,),
    ),
}

#: Base URLs tried in order by `fetch_mnist`; SDRINDEX_MNIST_MIRRORS (comma-separated) overrides.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# The repository's bundled copy; absent when the package is installed outside a checkout.
_REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "short (int16)",
    0x0C: "int (int32)",
    0x0D: "float (float32)",
    0x0E: "double (float64)",
}
_CHUNK = 1 << 20
# No MNIST file is larger than 10 MB compressed; a mirror sending far more is broken or hostile.
_MAX_DOWNLOAD_BYTES = 128 * _CHUNK

# Successful verifications, (path, device, inode, size, mtime) -> SHA-256, so that repeated loads
# of the same unchanged file do not hash 47 MB again. Only successes are stored.
_verified: dict[tuple[str, int, int, int, int], str] = {}
_verified_lock = threading.Lock()


# --------------------------------------------------------------------------------------------
# messages


def _refetch_hint(path: Path) -> str:
    return (
        f"Re-download it with `sdrindex fetch-mnist --dir {path.parent}` "
        "or copy it from data/mnist/ in the sdrindex repository."
    )


def _fetch_hint() -> str:
    return (
        "Download the files with `sdrindex fetch-mnist --dir DIR` (or copy the four .gz files "
        "from data/mnist/ of an sdrindex checkout into DIR), then set SDRINDEX_MNIST_DIR=DIR "
        "or pass data_dir=DIR."
    )


def _first_bytes(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data) if data else "nothing"


# --------------------------------------------------------------------------------------------
# reading


@contextlib.contextmanager
def _open_maybe_gzip(path: Path) -> Iterator[tuple[BinaryIO, bool, os.stat_result]]:
    """Open `path` for reading, decompressing when it starts with the gzip magic bytes."""
    with reading(path, _refetch_hint(path)):
        raw = open(path, "rb")  # opened alone so that only opening maps to DataError
    with raw:
        st = os.fstat(raw.fileno())
        head = raw.read(2)
        raw.seek(0)
        if head == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield cast(BinaryIO, gz), True, st
        else:
            yield raw, False, st


class _StreamError(Exception):
    """Reading failed midway; the message says why, without the file name."""


def _read_upto(stream: BinaryIO, n: int, is_gzip: bool) -> bytes:
    """Read up to `n` bytes (fewer only at end of stream); read failures raise _StreamError."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < n:
            chunk = stream.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    except (EOFError, zlib.error, OSError) as exc:
        if is_gzip:
            raise _StreamError(f"the gzip stream is corrupt or truncated ({exc})") from None
        raise _StreamError(f"cannot read the file ({exc})") from None
    return b"".join(parts)


def _cache_key(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int]:
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _is_verified(key: tuple[str, int, int, int, int], sha256: str) -> bool:
    with _verified_lock:
        return _verified.get(key) == sha256


def _remember_verified(key: tuple[str, int, int, int, int], sha256: str) -> None:
    with _verified_lock:
        _verified[key] = sha256


def _read_idx(path: Path, expected_sha256: str | None = None) -> NDArray[np.uint8]:
    """Parse an IDX file; when `expected_sha256` is given, also check the decompressed bytes."""
    try:
        return _parse_idx(path, expected_sha256)
    except _StreamError as exc:
        raise DataError(f"{path}: {exc}. {_refetch_hint(path)}") from None


def _parse_idx(path: Path, expected_sha256: str | None) -> NDArray[np.uint8]:
    with _open_maybe_gzip(path) as (stream, is_gzip, st):
        key = _cache_key(path, st)
        hasher = None
        if expected_sha256 is not None and not _is_verified(key, expected_sha256):
            hasher = hashlib.sha256()
        content = "decompressed content" if is_gzip else "file"

        magic = _read_upto(stream, 4, is_gzip)
        if not magic:
            raise DataError(f"{path}: the {content} is empty. {_refetch_hint(path)}")
        if len(magic) < 4 or magic[:2] != b"\x00\x00":
            expected = "two zero bytes" if is_gzip else "two zero bytes (IDX) or 1f 8b (gzip)"
            raise DataError(
                f"{path}: bad magic number: the {content} starts with {_first_bytes(magic)}, "
                f"expected {expected}. This is not an IDX file. {_refetch_hint(path)}"
            )
        type_code, ndim = magic[2], magic[3]
        if type_code != _IDX_UBYTE:
            kind = _IDX_TYPE_NAMES.get(type_code)
            what = (
                f"type code 0x{type_code:02x} ({kind}) is not supported"
                if kind
                else f"unknown IDX type code 0x{type_code:02x}"
            )
            raise DataError(
                f"{path}: {what}; only 0x08 (unsigned byte, as in MNIST) can be read. "
                "Convert the data to uint8 and write it with sdrindex.datasets.write_idx."
            )
        if ndim == 0:
            raise DataError(
                f"{path}: bad magic number: the IDX header declares 0 dimensions (need at "
                f"least 1). {_refetch_hint(path)}"
            )
        dim_bytes = _read_upto(stream, 4 * ndim, is_gzip)
        if len(dim_bytes) < 4 * ndim:
            raise DataError(
                f"{path}: truncated header: {ndim} dimensions need {4 * ndim} bytes of sizes, "
                f"the {content} has only {len(dim_bytes)}. {_refetch_hint(path)}"
            )
        shape = struct.unpack(f">{ndim}I", dim_bytes)
        count = math.prod(shape)
        if hasher is not None:
            hasher.update(magic)
            hasher.update(dim_bytes)

        # Grow the buffer as data arrives rather than trusting the header's size up front.
        payload = bytearray()
        while len(payload) < count:
            chunk = _read_upto(stream, min(_CHUNK, count - len(payload)), is_gzip)
            if not chunk:
                break
            payload += chunk
            if hasher is not None:
                hasher.update(chunk)
        if len(payload) < count:
            raise DataError(
                f"{path}: truncated payload: the header's shape {shape} needs {count} bytes of "
                f"data, the {content} has only {len(payload)}. {_refetch_hint(path)}"
            )
        trailing = 0
        while chunk := _read_upto(stream, _CHUNK, is_gzip):
            trailing += len(chunk)
        if trailing:
            raise DataError(
                f"{path}: {trailing} trailing bytes after the {count}-byte payload of shape "
                f"{shape}; the header and the data disagree. {_refetch_hint(path)}"
            )
    if hasher is not None:
        digest = hasher.hexdigest()
        if digest != expected_sha256:
            raise DataError(
                _damaged_message(
                    path,
                    f"checksum mismatch: SHA-256 of the {content} is {digest}, "
                    f"expected {expected_sha256}",
                )
            )
        _remember_verified(key, digest)
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def read_idx(path: str | os.PathLike[str]) -> NDArray[np.uint8]:
    """Read an IDX file of unsigned bytes, gzip-compressed or raw.

    Parameters
    ----------
    path : str or path-like
        The file. Gzip compression is detected from the first two bytes (1f 8b), whatever the
        file is called.

    Returns
    -------
    numpy.ndarray of uint8
        A writable array with the shape stored in the header, e.g. of shape (60000, 28, 28) for
        MNIST's training images or (60000,) for its labels.

    Raises
    ------
    sdrindex.errors.DataError
        The file is missing or unreadable, the gzip stream is corrupt or truncated, the magic
        number is wrong, the type code is not 0x08 (unsigned byte), the header is truncated, or
        the payload is shorter or longer than the product of the dimensions. The message names
        the file, the problem and the fix.
    """
    return _read_idx(Path(path))


# --------------------------------------------------------------------------------------------
# writing


def write_idx(path: str | os.PathLike[str], array: ArrayLike) -> Path:
    """Write a uint8 array of any rank as an IDX file, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination. The file is gzip-compressed when the name ends with ``.gz``. Its folder
        must exist. The data goes to a temporary file in that folder, which is fsynced and then
        renamed over `path`, so readers never see a half-written file.
    array : array-like of uint8
        Of any shape (d1, ..., dk) with 1 <= k <= 255 and every di < 2**32. Written in C order.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    sdrindex.errors.ParameterError
        `array` is not uint8, is 0-dimensional, or has too many or too large dimensions.
    sdrindex.errors.DataError
        The folder does not exist or cannot be written.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ParameterError(
            f"array: dtype must be uint8 (IDX type 0x08), got {arr.dtype}. Check the values are "
            "in 0..255 and convert with array.astype(np.uint8)."
        )
    if not 1 <= arr.ndim <= 255:
        raise ParameterError(
            f"array: must have 1 to 255 dimensions, got {arr.ndim}; reshape a scalar to (1,)."
        )
    if any(d >= 2**32 for d in arr.shape):
        raise ParameterError(f"array: every dimension must be < 2**32, got shape {arr.shape}.")
    header = bytes((0, 0, _IDX_UBYTE, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
    flat = np.ascontiguousarray(arr).reshape(-1)

    def write(f: BinaryIO) -> None:
        if path.name.lower().endswith(".gz"):
            # mtime=0 and the final name (not the temporary one) keep the output reproducible.
            with gzip.GzipFile(
                filename=path.name, mode="wb", fileobj=f, compresslevel=6, mtime=0
            ) as gz:
                gz.write(header)
                gz.write(flat.data)
        else:
            f.write(header)
            f.write(flat.data)

    atomic_write(path, write)
    return path


# --------------------------------------------------------------------------------------------
# verification


def _mnist_entry(path: Path) -> tuple[str, str, tuple[int, ...]]:
    """The MNIST_FILES entry for a file named like one of them, with or without ``.gz``."""
    name = path.name
    for candidate in (name, name + ".gz"):
        if candidate in MNIST_FILES:
            sha256, shape = MNIST_FILES[candidate]
            return candidate, sha256, shape
    raise DataError(
        f"{path}: not one of the MNIST files ({', '.join(MNIST_FILES)}), so there is no "
        "checksum to verify it against. Keep the original file names."
    )


def _idx_nbytes(shape: tuple[int, ...]) -> int:
    return 4 + 4 * len(shape) + math.prod(shape)


def _mnist_problem(path: Path, sha256: str, shape: tuple[int, ...]) -> str | None:
    """What is wrong with the decompressed bytes of `path`, or None when they match `sha256`.

    Reads at most one byte more than the expected size, so a huge bogus file costs little. A
    success is remembered in the verification cache.
    """
    expected_size = _idx_nbytes(shape)
    with _open_maybe_gzip(path) as (stream, is_gzip, st):
        key = _cache_key(path, st)
        if _is_verified(key, sha256):
            return None
        content = "decompressed content" if is_gzip else "file"
        hasher = hashlib.sha256()
        size = 0
        try:
            while size <= expected_size:
                chunk = _read_upto(stream, min(_CHUNK, expected_size + 1 - size), is_gzip)
                if not chunk:
                    break
                hasher.update(chunk)
                size += len(chunk)
        except _StreamError as exc:
            return str(exc)
    if size != expected_size:
        more = "more than " if size > expected_size else ""
        return f"checksum mismatch: the {content} is {more}{size} bytes, expected {expected_size}"
    digest = hasher.hexdigest()
    if digest != sha256:
        return f"checksum mismatch: SHA-256 of the {content} is {digest}, expected {sha256}"
    _remember_verified(key, digest)
    return None


def _damaged_message(path: Path, problem: str) -> str:
    return (
        f"{path}: {problem}. The file is damaged or is not the original MNIST file. "
        f"{_refetch_hint(path)}"
    )


def verify_mnist_file(path: str | os.PathLike[str]) -> None:
    """Check one MNIST file against the SHA-256 of its decompressed bytes.

    Which checksum applies is decided by the file name (one of `MNIST_FILES`, with or without
    ``.gz``). A successful check is remembered in-process for the same file, size and
    modification time, so checking an unchanged file again costs one ``stat``.

    Parameters
    ----------
    path : str or path-like
        An MNIST IDX file, gzip-compressed or raw.

    Raises
    ------
    sdrindex.errors.DataError
        The file is missing, unreadable, not named like an MNIST file, its gzip stream is
        corrupt, or its decompressed bytes do not match the published checksum.
    """
    path = Path(path)
    _, sha256, shape = _mnist_entry(path)
    problem = _mnist_problem(path, sha256, shape)
    if problem is not None:
        raise DataError(_damaged_message(path, problem))


# --------------------------------------------------------------------------------------------
# loading


def _resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        folder, source = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get("SDRINDEX_MNIST_DIR"):
        folder, source = Path(os.environ["SDRINDEX_MNIST_DIR"]).expanduser(), "SDRINDEX_MNIST_DIR"
    elif _REPO_DATA_DIR.is_dir():
        return _REPO_DATA_DIR
    else:
        raise DataError(
            "No MNIST folder: data_dir was not given, SDRINDEX_MNIST_DIR is not set, and the "
            f"repository copy {_REPO_DATA_DIR} does not exist. {_fetch_hint()}"
        )
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} (from {source}) does not exist. {_fetch_hint()}")
    return folder


def _locate(folder: Path, name: str) -> Path:
    """`name` in `folder`, falling back to its decompressed twin (name without ``.gz``)."""
    path = folder / name
    if path.exists():
        return path
    raw = folder / name.removesuffix(".gz")
    if raw.exists():
        return raw
    raise DataError(
        f"{path}: file not found in the MNIST folder {folder}. Download it with "
        f"`sdrindex fetch-mnist --dir {folder}` or copy it from data/mnist/ in the sdrindex "
        "repository."
    )


def load_mnist(
    split: Literal["train", "test"] = "train",
    data_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Load MNIST's training or test set.

    Parameters
    ----------
    split : {"train", "test"}
        "train" for the 60000 training digits, "test" for the 10000 test digits.
    data_dir : str or path-like, optional
        Folder holding the four files (``train-images-idx3-ubyte.gz`` etc.; uncompressed copies
        without ``.gz`` are accepted too). Default: the environment variable
        SDRINDEX_MNIST_DIR if set, else the repository's ``data/mnist``.
    verify : bool
        Check the SHA-256 of the decompressed bytes against `MNIST_FILES`. Verification happens
        while reading and is remembered in-process per (file, size, modification time), so
        loading the same files again does not hash them again.

    Returns
    -------
    images : numpy.ndarray of uint8, of shape (n_samples, 28, 28)
        Grey levels, 0 = background.
    labels : numpy.ndarray of uint8, of shape (n_samples,)
        Digits 0-9; ``labels[i]`` is the digit drawn in ``images[i]``.

    Raises
    ------
    sdrindex.errors.ParameterError
        `split` is not "train" or "test".
    sdrindex.errors.DataError
        No data folder can be found, a file is missing, damaged or fails its checksum, or the
        images and labels do not fit together.
    """
    if split not in _SPLITS:
        raise ParameterError(f"split: must be 'train' or 'test', got {split!r}.")
    folder = _resolve_data_dir(data_dir)
    arrays = []
    for name in _SPLITS[split]:
        sha256, shape = MNIST_FILES[name]
        arrays.append(_read_idx(_locate(folder, name), sha256 if verify else None))
    images, labels = arrays
    image_path, label_path = (folder / name for name in _SPLITS[split])
    # Without verification the content is unknown; still refuse arrays that cannot be MNIST.
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{image_path}: holds an array of shape {images.shape}, expected (n, 28, 28). "
            f"{_refetch_hint(image_path)}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{label_path}: holds an array of shape {labels.shape} but the images are "
            f"{images.shape}; expected ({images.shape[0]},). {_refetch_hint(label_path)}"
        )
    if labels.size and labels.max() > 9:
        raise DataError(
            f"{label_path}: holds label {int(labels.max())}, expected digits 0-9. "
            f"{_refetch_hint(label_path)}"
        )
    return images, labels


# --------------------------------------------------------------------------------------------
# encoding


def binarize(images: ArrayLike, threshold: float | Literal["mean"] = 128) -> NDArray[np.uint8]:
    """Turn grey-level images into flat 0/1 input vectors for the Spatial Pooler.

    A pixel is on when ``pixel >= threshold``. The default 128 is the middle of the 0-255
    range. ``threshold=1`` gives the rule ``pixel > 0`` used on the HTM forum (for integer
    images). ``threshold="mean"`` gives htm.core's MNIST example: a pixel is on when it is
    ``>=`` the mean of its own image (so an all-black image comes out all ones, as there).

    Parameters
    ----------
    images : array-like, of shape (n_images, height, width) or (height, width)
        Grey levels in 0..255: uint8, or any integer or float dtype with values in that range.
    threshold : float or "mean"
        A number in 1..255, or "mean".

    Returns
    -------
    numpy.ndarray of uint8
        Of shape (n_images, height * width) for a batch, (height * width,) for one image; each
        image flattened in C (row-major) order.

    Raises
    ------
    sdrindex.errors.ParameterError
        `images` has a non-numeric dtype, values outside 0..255 or NaN, no pixels, or not 2 or 3
        dimensions; or `threshold` is not "mean" nor a number in 1..255.
    """
    if isinstance(threshold, str):
        if threshold != "mean":
            raise ParameterError(
                f"threshold: must be a number in 1..255 or 'mean', got {threshold!r}."
            )
    elif isinstance(threshold, bool | np.bool_) or not isinstance(threshold, numbers.Real):
        raise ParameterError(f"threshold: must be a number in 1..255 or 'mean', got {threshold!r}.")
    elif not 1 <= float(threshold) <= 255:  # also False for NaN
        raise ParameterError(f"threshold: must be in 1..255 or 'mean', got {threshold!r}.")

    arr = np.asarray(images)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ParameterError(
            f"images: dtype must be uint8, or an integer or float dtype with values in 0..255; "
            f"got {arr.dtype}."
        )
    if arr.ndim not in (2, 3):
        raise ParameterError(
            "images: must have shape (height, width) for one image or (n_images, height, width) "
            f"for a batch; got shape {arr.shape}. Reshape flat vectors to their image shape."
        )
    single = arr.ndim == 2
    flat = arr.reshape(1 if single else arr.shape[0], math.prod(arr.shape[-2:]))
    if flat.shape[1] == 0:
        raise ParameterError(f"images: images have no pixels (shape {arr.shape}).")
    if arr.dtype != np.uint8 and arr.size:
        lo, hi = flat.min(), flat.max()
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 255):
            raise ParameterError(
                f"images: values must be in 0..255 (no NaN or infinity); got min {lo}, max {hi}. "
                "Scale images to 0..255 first."
            )
        if np.issubdtype(arr.dtype, np.floating) and 0 < hi <= 1 and threshold != "mean":
            warnings.warn(
                "binarize: float images with values in 0..1 look normalised; the threshold "
                "applies to the 0..255 scale, so most pixels will be off. Multiply by 255 first.",
                stacklevel=2,
            )

    if threshold == "mean":
        cut: float | NDArray[np.float64] = flat.mean(axis=1, dtype=np.float64, keepdims=True)
    else:
        cut = float(threshold)
    out = (flat >= cut).astype(np.uint8)
    return out[0] if single else out


# --------------------------------------------------------------------------------------------
# downloading


def _fetch_one(
    url: str, final: Path, sha256: str, shape: tuple[int, ...], timeout: float, progress: bool
) -> None:
    """Download `url` to `final` atomically, renamed into place only once verified."""

    def check(tmp: Path) -> str | None:
        return _mnist_problem(tmp, sha256, shape)

    size = fetch_file(url, final, check, timeout, progress, _MAX_DOWNLOAD_BYTES)
    with contextlib.suppress(OSError):
        # The renamed file is the one just verified: record it so that a following load is fast.
        _remember_verified(_cache_key(final, os.stat(final)), sha256)
    if progress:
        print(f"  {final.name}: {megabytes(size)}, SHA-256 verified", file=sys.stderr)


def fetch_mnist(
    dest_dir: str | os.PathLike[str],
    mirrors: str | Sequence[str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> dict[str, Path]:
    """Download the four MNIST files into `dest_dir`, verifying each one.

    A file already present whose decompressed bytes match `MNIST_FILES` is kept. Otherwise the
    mirrors are tried in order; each download goes to a temporary file in `dest_dir`, its
    decompressed SHA-256 is checked, and only then is it renamed into place, so `dest_dir`
    never holds a partial or unverified file (not even after Ctrl-C). A failing mirror (HTTP
    error, no connection, wrong checksum) is logged as a warning on the ``sdrindex.datasets``
    logger and the next one is tried; a mirror that cannot be reached at all is not tried again
    for the remaining files.

    Parameters
    ----------
    dest_dir : str or path-like
        Destination folder; created if missing.
    mirrors : sequence of str, optional
        Base URLs (``http://``, ``https://``, ``file://``) or local folders, each holding the
        four ``.gz`` files. Default: the comma-separated environment variable
        SDRINDEX_MNIST_MIRRORS if set, else `DEFAULT_MIRRORS`.
    timeout : float
        Seconds to wait for a connection or for data before giving up on a mirror.
    progress : bool
        Print progress to standard error.

    Returns
    -------
    dict of str to pathlib.Path
        File name (a key of `MNIST_FILES`) -> its path in `dest_dir`.

    Raises
    ------
    sdrindex.errors.ParameterError
        `mirrors` is empty or holds something that is not a URL or folder; `timeout` is not a
        positive number.
    sdrindex.errors.DataError
        Every mirror failed for some file (the message lists each mirror's failure), or
        `dest_dir` cannot be created or written.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not 0 < float(timeout) < math.inf
    ):
        raise ParameterError(f"timeout: must be a positive number of seconds, got {timeout!r}.")
    bases = resolve_mirrors(mirrors, DEFAULT_MIRRORS, "SDRINDEX_MNIST_MIRRORS")
    dest = Path(dest_dir).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the folder ({exc.strerror or exc}).") from None

    unreachable: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for name, (sha256, shape) in MNIST_FILES.items():
        final = dest / name
        if final.exists():
            problem = _mnist_problem(final, sha256, shape)
            if problem is not None:
                logger.warning("%s: %s; downloading it again", final, problem)
            else:
                if progress:
                    print(f"  {name}: already present, SHA-256 verified", file=sys.stderr)
                paths[name] = final
                continue
        failures: list[str] = []
        for base in bases:
            url = mirror_url(base, name)
            if base in unreachable:
                failures.append(f"  - {url}: skipped, the mirror was unreachable")
                continue
            if progress:
                print(f"fetching {url}", file=sys.stderr)
            try:
                _fetch_one(url, final, sha256, shape, float(timeout), progress)
            except MirrorFailure as exc:
                logger.warning("mirror failed for %s: %s: %s", name, url, exc)
                failures.append(f"  - {url}: {exc}")
                if exc.unreachable:
                    unreachable[base] = str(exc)
                continue
            paths[name] = final
            break
        else:
            raise DataError(
                f"{final}: could not download {name}; every mirror failed:\n"
                + "\n".join(failures)
                + "\nCheck the network, or give other mirrors (`sdrindex fetch-mnist --mirror URL`"
                " or SDRINDEX_MNIST_MIRRORS=URL1,URL2). Without network access, copy the four "
                f"files ({', '.join(MNIST_FILES)}) from a machine that has them (an sdrindex "
                f"checkout has them in data/mnist/) into {dest.resolve()}, then set "
                f"SDRINDEX_MNIST_DIR={dest.resolve()}."
            )
    return paths
