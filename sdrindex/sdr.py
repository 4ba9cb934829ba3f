"""SDR batches: pack/unpack bits, active indices, overlap, noise.

Two layouts cross the API boundary, and every function here takes the SDR width ``n_bits``
explicitly so the two are never confused:

- **dense**: shape (n, n_bits), values 0/1 (bool or any integer/float dtype);
- **packed**: shape (n, ceil(n_bits / 8)) uint8, the rows of ``np.packbits(dense, axis=1)``:
  bit ``j`` of a row is bit ``7 - j % 8`` of byte ``j // 8``, and the padding bits after
  ``n_bits`` are zero.

A width equal to ``n_bits`` means dense, a width equal to ``ceil(n_bits / 8)`` means packed.
Internally everything is packed; the numba kernels see the packed rows zero-padded to whole
uint64 words (:func:`to_words`) so that an overlap is a few hardware popcounts.
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numpy.typing import ArrayLike, NDArray

from .errors import ParameterError

__all__ = [
    "n_bytes",
    "pack",
    "unpack",
    "validate",
    "to_indices",
    "from_indices",
    "to_csr",
    "to_words",
    "active_counts",
    "row_popcount",
    "popcount64",
    "overlap",
    "add_noise",
    "random_sdrs",
]

_MODES = ("swap", "drop", "add")


# --------------------------------------------------------------------------- kernels


@intrinsic
def popcount64(typingctx, x):
    """popcount(x) for a uint64: LLVM's ctpop, one POPCNT instruction.

    The project's one popcount: every numba kernel (SP, index, SDR batches) calls this one.
    """
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.ctpop.i64")
        return builder.call(fn, [args[0]])

    return sig, codegen


def row_popcount(arr: NDArray[np.unsignedinteger]) -> NDArray[np.int64]:
    """Set bits of each row of a packed (uint8) or word (uint64) array, of shape (n,).

    The numpy-level twin of :func:`popcount64` for callers outside numba (no validation:
    use :func:`active_counts` for SDRs that come from a user).
    """
    arr = np.asarray(arr)
    return np.bitwise_count(arr).sum(axis=-1, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def overlap_words(a, b):
    """|a AND b| = sum_w popcount(a[w] & b[w]) for two rows of uint64 words."""
    total = np.uint64(0)
    for w in range(a.shape[0]):
        total += popcount64(a[w] & b[w])
    return np.int32(total)


@numba.njit(parallel=True, cache=True)
def overlap_matrix(a_words, b_words, out):
    """out[i, j] = |a_i AND b_j| for every pair of rows."""
    for i in numba.prange(a_words.shape[0]):
        for j in range(b_words.shape[0]):
            out[i, j] = overlap_words(a_words[i], b_words[j])


@numba.njit(cache=True, nogil=True)
def _row_counts(packed):
    """counts[i] = number of set bits of row i of a packed (n, n_bytes) uint8 array."""
    counts = np.zeros(packed.shape[0], dtype=np.int64)
    for i in range(packed.shape[0]):
        c = 0
        for j in range(packed.shape[1]):
            c += popcount64(np.uint64(packed[i, j]))
        counts[i] = c
    return counts


@numba.njit(cache=True, nogil=True)
def _fill_indices(packed, indptr, indices):
    """indices[indptr[i]:indptr[i+1]] = ascending positions of the set bits of row i."""
    for i in range(packed.shape[0]):
        pos = indptr[i]
        for j in range(packed.shape[1]):
            byte = packed[i, j]
            if byte == 0:
                continue
            for t in range(8):
                if byte & (0x80 >> t):
                    indices[pos] = 8 * j + t
                    pos += 1


@numba.njit(cache=True, nogil=True)
def _set_bits(indptr, indices, out):
    """out[i, b // 8] |= 0x80 >> (b % 8) for every b in indices[indptr[i]:indptr[i+1]]."""
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i], indptr[i + 1]):
            b = indices[p]
            out[i, b >> 3] |= np.uint8(0x80 >> (b & 7))


# --------------------------------------------------------------------------- layout


def readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view of ``arr`` (``arr`` itself when it is read-only already).

    numba compiles a kernel once per argument type and "read-only" is part of the type:
    structures handed to kernels are made read-only wherever they come from (built in
    memory or mapped from a file) so one compiled version, cached on disk, serves both.
    """
    if not arr.flags.writeable:
        return arr
    view = arr.view()
    view.flags.writeable = False
    return view


def n_bytes(n_bits: int) -> int:
    """Bytes in one packed row of ``n_bits`` bits: ``ceil(n_bits / 8)``."""
    return (int(n_bits) + 7) // 8


def _check_n_bits(n_bits: int) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer) or n_bits < 1:
        raise ParameterError(f"n_bits must be a positive integer (the SDR width), got {n_bits!r}")
    return int(n_bits)


def _as_2d(sdrs: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(sdrs)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ParameterError(
            f"{what} must be 2-D, of shape (n, n_bits) dense or (n, ceil(n_bits/8)) packed; "
            f"got shape {arr.shape}"
        )
    return arr


def _check_binary(arr: np.ndarray, what: str) -> None:
    if arr.dtype == np.bool_ or arr.size == 0:
        return
    if np.issubdtype(arr.dtype, np.integer):
        bad = arr.min() < 0 or arr.max() > 1
    elif np.issubdtype(arr.dtype, np.floating):
        bad = bool(np.any((arr != 0) & (arr != 1)))
    else:
        raise ParameterError(f"{what} must be numeric 0/1 or bool, got dtype {arr.dtype}")
    if bad:
        raise ParameterError(
            f"{what} are not binary: dense SDRs must contain only 0 and 1 "
            "(threshold them first, e.g. sdrs > 0)"
        )


def _pad_mask(n_bits: int) -> int:
    """Mask of the padding bits in the last byte of a packed row (0 when n_bits % 8 == 0)."""
    used = n_bits % 8
    return 0 if used == 0 else (0xFF >> used)


def _check_packed(arr: np.ndarray, n_bits: int, what: str) -> None:
    if arr.dtype != np.uint8:
        raise ParameterError(
            f"packed {what} must be uint8 (rows of np.packbits), got dtype {arr.dtype}"
        )
    mask = _pad_mask(n_bits)
    if mask and arr.shape[0] and np.any(arr[:, -1] & mask):
        raise ParameterError(
            f"packed {what} have bits set beyond n_bits={n_bits}: "
            "check n_bits, or pack with sdrindex.sdr.pack"
        )


def _is_dense(arr: np.ndarray, n_bits: int) -> bool:
    """Decide the layout from the width (see the module docstring)."""
    width = arr.shape[1]
    if width == n_bits and width != n_bytes(n_bits):
        return True
    if width == n_bytes(n_bits) and width != n_bits:
        return False
    if width == n_bits:  # n_bits == 1: both layouts are one column wide
        return arr.dtype != np.uint8 or arr.size == 0 or int(arr.max()) <= 1
    raise ParameterError(
        f"SDRs of width {width} do not match n_bits={n_bits}: expected {n_bits} columns "
        f"(dense 0/1) or {n_bytes(n_bits)} columns (packed uint8)"
    )


def validate(sdrs: ArrayLike, n_bits: int, what: str = "SDRs") -> NDArray[np.uint8]:
    """Check a batch of SDRs and return it packed.

    Parameters
    ----------
    sdrs : array_like
        Dense of shape (n, n_bits) with 0/1 values, or packed of shape (n, ceil(n_bits/8))
        uint8. A 1-D array is taken as one SDR.
    n_bits : int
        The SDR width.
    what : str
        Name used in error messages.

    Returns
    -------
    ndarray of shape (n, ceil(n_bits/8)), uint8, C-contiguous
        The packed rows (the input itself when it is already packed and contiguous).

    Raises
    ------
    ParameterError
        For the wrong width or rank, non-binary values, a packed array that is not uint8 or
        has padding bits set.
    """
    if (
        type(sdrs) is np.ndarray
        and type(n_bits) is int
        and sdrs.ndim == 2
        and sdrs.dtype == np.uint8
        and 8 < n_bits
        and sdrs.shape[1] == (n_bits + 7) >> 3
        and sdrs.flags.c_contiguous
    ):  # packed, the common case: kept cheap for single queries
        mask = _pad_mask(n_bits)
        if not mask or sdrs.shape[0] == 0:
            return sdrs
        if sdrs.shape[0] == 1:
            if not sdrs[0, -1] & mask:
                return sdrs
        elif not (sdrs[:, -1] & mask).any():
            return sdrs
    n_bits = _check_n_bits(n_bits)
    arr = _as_2d(sdrs, what)
    if _is_dense(arr, n_bits):
        _check_binary(arr, what)
        return np.packbits(arr.astype(bool, copy=False), axis=1)
    _check_packed(arr, n_bits, what)
    return np.ascontiguousarray(arr)


def pack(dense: ArrayLike) -> NDArray[np.uint8]:
    """Pack dense 0/1 SDRs into bits.

    Parameters
    ----------
    dense : array_like of shape (n, n_bits)
        Values 0/1 (bool, integer or float).

    Returns
    -------
    ndarray of shape (n, ceil(n_bits/8)), uint8
    """
    arr = _as_2d(dense, "dense SDRs")
    _check_binary(arr, "dense SDRs")
    return np.packbits(arr.astype(bool, copy=False), axis=1)


def unpack(packed: ArrayLike, n_bits: int) -> NDArray[np.uint8]:
    """Unpack packed SDRs to dense 0/1.

    Parameters
    ----------
    packed : array_like of shape (n, ceil(n_bits/8)), uint8
    n_bits : int

    Returns
    -------
    ndarray of shape (n, n_bits), uint8 with values 0/1
    """
    n_bits = _check_n_bits(n_bits)
    arr = _as_2d(packed, "packed SDRs")
    if arr.shape[1] != n_bytes(n_bits):
        raise ParameterError(
            f"packed SDRs of width {arr.shape[1]} do not match n_bits={n_bits} "
            f"(expected {n_bytes(n_bits)} bytes per row)"
        )
    _check_packed(arr, n_bits, "SDRs")
    return np.unpackbits(arr, axis=1, count=n_bits)


def active_counts(sdrs: ArrayLike, n_bits: int) -> NDArray[np.int64]:
    """Number of active bits of each SDR, of shape (n,)."""
    return _row_counts(validate(sdrs, n_bits))


def to_csr(sdrs: ArrayLike, n_bits: int) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Active bits of a batch in CSR form.

    Returns
    -------
    indptr : ndarray of shape (n + 1,), int64
    indices : ndarray of shape (indptr[-1],), int32
        Row ``i`` has its active bits, ascending, in ``indices[indptr[i]:indptr[i + 1]]``.
    """
    packed = validate(sdrs, n_bits)
    indptr = np.zeros(packed.shape[0] + 1, dtype=np.int64)
    np.cumsum(_row_counts(packed), out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    _fill_indices(packed, indptr, indices)
    return indptr, indices


def to_indices(sdrs: ArrayLike, n_bits: int) -> list[NDArray[np.int32]]:
    """Active bit positions of each SDR.

    Parameters
    ----------
    sdrs : array_like
        Dense (n, n_bits) or packed (n, ceil(n_bits/8)).
    n_bits : int

    Returns
    -------
    list of n int32 arrays, each ascending
    """
    indptr, indices = to_csr(sdrs, n_bits)
    return np.split(indices, indptr[1:-1])


def from_indices(indices: list[ArrayLike], n_bits: int) -> NDArray[np.uint8]:
    """Pack lists of active bit positions.

    Parameters
    ----------
    indices : list of n array_like of int
        Active positions of each SDR, each in [0, n_bits); order and repeats do not matter.
    n_bits : int

    Returns
    -------
    ndarray of shape (n, ceil(n_bits/8)), uint8
    """
    n_bits = _check_n_bits(n_bits)
    rows = [np.asarray(r).reshape(-1) for r in indices]
    for r in rows:
        if r.size and not np.issubdtype(r.dtype, np.integer):
            raise ParameterError(f"active bit positions must be integers, got dtype {r.dtype}")
    flat = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= n_bits):
        raise ParameterError(
            f"active bit positions must lie in [0, {n_bits}), got values from "
            f"{flat.min()} to {flat.max()}"
        )
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([r.size for r in rows], out=indptr[1:])
    out = np.zeros((len(rows), n_bytes(n_bits)), dtype=np.uint8)
    _set_bits(indptr, flat, out)
    return out


def to_words(packed: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Packed rows zero-padded to whole 64-bit words, the layout the kernels read.

    Parameters
    ----------
    packed : ndarray of shape (n, n_bytes), uint8

    Returns
    -------
    ndarray of shape (n, ceil(n_bytes/8)), uint64
        Byte ``j`` of a packed row is byte ``j`` of the row's memory, whatever the
        endianness, so popcounts of ANDs are unchanged.
    """
    n, width = packed.shape
    n_words = max(1, (width + 7) // 8)
    padded = np.zeros((n, n_words * 8), dtype=np.uint8)
    padded[:, :width] = packed
    return padded.view(np.uint64)


def overlap(a: ArrayLike, b: ArrayLike) -> NDArray[np.int32]:
    """Overlap (number of shared active bits) between two batches of packed SDRs.

    Parameters
    ----------
    a : array_like of shape (n_a, n_bytes), uint8, packed
    b : array_like of shape (n_b, n_bytes), uint8, packed

    Returns
    -------
    ndarray of shape (n_a, n_b), int32
        ``out[i, j] = popcount(a[i] & b[j])``.
    """
    a2 = _as_2d(a, "packed SDRs a")
    b2 = _as_2d(b, "packed SDRs b")
    if a2.dtype != np.uint8 or b2.dtype != np.uint8:
        raise ParameterError(
            "overlap takes packed uint8 SDRs (use sdrindex.sdr.pack), "
            f"got {a2.dtype} and {b2.dtype}"
        )
    if a2.shape[1] != b2.shape[1]:
        raise ParameterError(
            f"packed SDRs of different widths: {a2.shape[1]} and {b2.shape[1]} bytes per row"
        )
    out = np.empty((a2.shape[0], b2.shape[0]), dtype=np.int32)
    if out.size:
        overlap_matrix(to_words(a2), to_words(b2), out)
    return out


# --------------------------------------------------------------------------- noise, synthetic data


def _half_up(x: float) -> int:
    """round(x) with halves rounded up (Python's round() rounds halves to even)."""
    return int(np.floor(x + 0.5))


def add_noise(
    packed: ArrayLike,
    n_bits: int,
    fraction: float,
    mode: Literal["swap", "drop", "add"] = "swap",
    seed: int | np.random.Generator | None = None,
) -> NDArray[np.uint8]:
    """Corrupt SDRs by dropping, adding or moving a fraction of their active bits.

    For a row with ``a`` active bits, ``m = round(fraction * a)`` (halves up) bits change:

    - ``"drop"``: ``m`` active bits are cleared;
    - ``"add"``: ``m`` inactive bits are set (fewer if not enough are inactive);
    - ``"swap"``: ``m`` active bits move to positions that were inactive, so the number of
      active bits is unchanged (``m`` is capped at the number of inactive bits).

    Parameters
    ----------
    packed : array_like of shape (n, ceil(n_bits/8)), uint8 (dense (n, n_bits) also accepted)
    n_bits : int
    fraction : float in [0, 1]
    mode : {"swap", "drop", "add"}
    seed : int, numpy Generator or None
        The same seed gives the same noise.

    Returns
    -------
    ndarray of shape (n, ceil(n_bits/8)), uint8
        A new array; the input is not modified.
    """
    if mode not in _MODES:
        raise ParameterError(f"mode must be one of {_MODES}, got {mode!r}")
    if not (np.isscalar(fraction) and 0.0 <= float(fraction) <= 1.0):
        raise ParameterError(f"fraction must be a number in [0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    dense = unpack(validate(packed, n_bits), n_bits)
    for row in dense:
        active = np.flatnonzero(row)
        m = _half_up(float(fraction) * active.size)
        if m == 0:
            continue
        if mode in ("add", "swap"):
            inactive = np.flatnonzero(row == 0)
            m = min(m, inactive.size)
            if m == 0:
                continue
            row[rng.choice(inactive, size=m, replace=False)] = 1
        if mode in ("drop", "swap"):
            row[rng.choice(active, size=m, replace=False)] = 0
    return np.packbits(dense, axis=1)


def random_sdrs(
    n: int,
    n_bits: int,
    n_active: int,
    seed: int | np.random.Generator | None = None,
    clusters: int = 0,
    spread: float = 0.5,
) -> NDArray[np.uint8]:
    """Random SDRs with exactly ``n_active`` active bits, optionally clustered.

    With ``clusters > 0`` each SDR belongs to one of ``clusters`` random prototypes (chosen
    uniformly) and keeps each prototype bit with a probability falling from 1 at
    ``spread = 0`` to ``n_active / n_bits`` at ``spread = 1``: its active bits are the
    ``n_active`` largest of ``u + (1 - spread) * prototype``, ``u`` uniform on [0, 1).

    Parameters
    ----------
    n, n_bits, n_active : int
        Number of SDRs, width, active bits per SDR (``0 <= n_active <= n_bits``).
    seed : int, numpy Generator or None
    clusters : int
        0 for independent uniform SDRs.
    spread : float in [0, 1]
        How far members stray from their prototype.

    Returns
    -------
    ndarray of shape (n, ceil(n_bits/8)), uint8
    """
    n_bits = _check_n_bits(n_bits)
    if not 0 <= n_active <= n_bits:
        raise ParameterError(f"n_active must lie in [0, n_bits={n_bits}], got {n_active}")
    if n < 0 or clusters < 0:
        raise ParameterError(f"n and clusters must be >= 0, got n={n}, clusters={clusters}")
    if not 0.0 <= spread <= 1.0:
        raise ParameterError(f"spread must lie in [0, 1], got {spread}")
    rng = np.random.default_rng(seed)
    if clusters:
        protos = np.zeros((clusters, n_bits), dtype=np.float32)
        for p in protos:
            p[rng.choice(n_bits, size=n_active, replace=False)] = 1.0 - spread
        members = rng.integers(0, clusters, size=n)
    out = np.zeros((n, n_bytes(n_bits)), dtype=np.uint8)
    chunk = max(1, 2**24 // n_bits)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        scores = rng.random((stop - start, n_bits), dtype=np.float32)
        if clusters:
            scores += protos[members[start:stop]]
        top = np.argpartition(-scores, n_active - 1, axis=1)[:, :n_active] if n_active else None
        dense = np.zeros((stop - start, n_bits), dtype=bool)
        if top is not None:
            np.put_along_axis(dense, top, True, axis=1)
        out[start:stop] = np.packbits(dense, axis=1)
    return out
