"""Storage: how sdrindex writes, locks, checks and reads its files, in one place.

Writes are atomic: a file goes to a temporary file in the same folder, is fsynced, renamed
over its final name, and the folder is fsynced (:func:`atomic_write`); a directory is written
under a temporary name, fsynced file by file, then renamed (:func:`atomic_dir`); a symlink is
swapped with a rename (:func:`swap_symlink`). A reader or a crash at any moment sees the old
content or the new one, never half of one. Writers serialise on ``flock`` lock files
(:func:`file_lock`); readers never lock.

Error rule
----------
What goes wrong with a file -- an ``OSError`` (missing, permission denied, a folder where a
file should be, disk full, read-only file system), a format error (bad JSON, a bad ``.npy``
header, pickled content, an unknown format name or version, the wrong dtype or shape) -- is
turned into :class:`~sdrindex.errors.DataError` here, by :func:`reading` / :func:`writing` (or
:func:`data_error` for checks the caller makes). The message names the file, says what was
found and how to fix it; the error carries ``path`` and ``problem`` too. Every loader of one
part (``TrainingTable.load``, the index, the SP, the IDX reader) therefore raises
``DataError``, whether or not the part sits in a bundle. A *bundle* (``Bundle.load`` /
``Bundle.save``) turns those into :class:`~sdrindex.errors.BundleError` with
:func:`bundle_errors`, which names the damaged file and the bundle and says to rebuild it: in
short, ``DataError`` = this file is bad, ``BundleError`` = this bundle is unusable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from .errors import BundleError, DataError, SDRIndexError

__all__ = [
    "LockBusyError",
    "atomic_dir",
    "atomic_write",
    "bundle_errors",
    "check_format",
    "data_error",
    "file_lock",
    "fsync_dir",
    "fsync_tree",
    "load_array",
    "os_problem",
    "read_json",
    "reading",
    "remove_quietly",
    "save_arrays",
    "sha256_file",
    "swap_symlink",
    "write_json",
    "writing",
]

_T = TypeVar("_T")

# ============================================================================ errors


def _join(problem: str, fix: str) -> str:
    # A fix written as a sentence ("Re-download it ...") follows a full stop, a clause a semicolon.
    return f"{problem}. {fix}" if fix[:1].isupper() else f"{problem}; {fix}"


def data_error(path: str | os.PathLike[str], problem: str, fix: str) -> DataError:
    """A :class:`DataError` reading ``"{path}: {problem}; {fix}"``, carrying the three."""
    err = DataError(f"{path}: {_join(problem, fix)}")
    err.path, err.problem, err.fix = Path(path), problem, fix
    return err


def os_problem(exc: OSError, path: Path, write: bool = False) -> tuple[str, str | None]:
    """(what went wrong, its own fix or None when the caller's applies) for an OSError."""
    if isinstance(exc, FileNotFoundError):
        if write:
            return f"cannot write, the folder {path.parent} does not exist", "create it first"
        return f"no such file (not found in {path.parent})", None
    if isinstance(exc, PermissionError):
        if write:
            return "permission denied", f"check that you may write in {path.parent} (`ls -ld`)"
        return "permission denied", f"check that you may read it (`ls -l {path}`)"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, expected a file", "give the path of the file inside it"
    if isinstance(exc, NotADirectoryError):
        return "a part of the path is a file, not a folder", "check the path"
    # numpy's short write of an array carries no errno: "<n> requested and <m> written"
    short_write = exc.errno is None and " requested and " in str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or short_write:
        why = exc.strerror or exc
        return f"no space left on the device ({why})", "free some space and try again"
    if exc.errno == errno.EROFS:
        return "the file system is read-only", "write somewhere else"
    return f"{'cannot write' if write else 'cannot read'} ({exc.strerror or exc})", None


def _format_problem(exc: Exception, path: Path) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    kind = path.suffix or "data"
    return f"not a readable {kind} file ({exc})"


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], fix: str) -> Iterator[None]:
    """Map what goes wrong reading ``path`` inside the block to a DataError naming it.

    ``fix`` is the remedy for a missing or corrupt file ("save the table again"); permission,
    folder and device problems carry their own. Errors of the sdrindex family pass unchanged.
    """
    path = Path(path)
    try:
        yield
    except SDRIndexError:
        raise
    except OSError as exc:
        problem, own_fix = os_problem(exc, path)
        raise data_error(path, problem, own_fix or fix) from exc
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise data_error(path, _format_problem(exc, path), fix) from exc


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], fix: str = "try again") -> Iterator[None]:
    """Map an OSError raised inside the block (disk full, permission...) to a DataError naming
    ``path``; other errors pass unchanged."""
    path = Path(path)
    try:
        yield
    except OSError as exc:
        problem, own_fix = os_problem(exc, path, write=True)
        raise data_error(path, problem, own_fix or fix) from exc


@contextlib.contextmanager
def bundle_errors(root: str | os.PathLike[str], fix: str) -> Iterator[None]:
    """Turn a DataError (or a stray OSError) about a part of the bundle ``root`` into a
    BundleError naming the damaged file and the bundle, with ``fix`` as the remedy."""
    try:
        yield
    except DataError as exc:
        if exc.path is not None and exc.problem is not None:
            cause = exc.__cause__
            if isinstance(cause, OSError) and os_problem(cause, exc.path)[1] is not None:
                fix = exc.fix or fix  # about the machine (permission, space): it still applies
            message = f"{exc.path}: {exc.problem}; {fix} (bundle {root})"
        else:
            message = f"{exc} ({fix}; bundle {root})"
        raise BundleError(message) from exc
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else Path(root)
        problem, own_fix = os_problem(exc, where)
        raise BundleError(f"{where}: {problem}; {own_fix or fix} (bundle {root})") from exc


# ============================================================================ fsync


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make renames in ``folder`` durable (best effort: not every platform opens a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file under ``root`` and every folder, ``root`` included."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ============================================================================ atomic writes


def remove_quietly(path: str | os.PathLike[str]) -> None:
    """Remove a file or a folder tree if it is there; errors are ignored (cleanup only)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _new_temp_file(folder: Path, name: str) -> tuple[int, Path]:
    """Create an empty, exclusively owned temporary file next to its final place."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.part"
        try:
            # 0o666 so that the umask, not mkstemp's 0o600, decides the final permissions.
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
        except FileExistsError:
            continue
        return fd, tmp
    raise data_error(folder, f"could not create a temporary file for {name}", "try again")


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], _T],
    check: Callable[[Path], None] | None = None,
) -> _T:
    """Write ``path`` atomically: ``write(fh)`` fills a temporary file in the same folder,
    which is fsynced, handed to ``check(temp_path)`` (raise to abandon it), renamed over
    ``path``, and the folder fsynced. Returns what ``write`` returns.

    On any failure, Ctrl-C included, the temporary file is removed and ``path`` keeps its
    old content. Raises DataError naming ``path`` for an OSError (missing folder, permission,
    disk full); exceptions of ``write`` or ``check`` pass unchanged.
    """
    path = Path(path)
    folder = path.parent
    with writing(path):
        fd, tmp = _new_temp_file(folder, path.name)
    try:
        with writing(path):
            with os.fdopen(fd, "wb") as fh:
                result = write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        with writing(path):
            os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(folder)
    return result


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], tmp_prefix: str = ".tmp-") -> Iterator[Path]:
    """Yield an empty temporary folder next to ``final``; when the block ends normally, fsync
    everything in it and rename it to ``final`` (which must not exist). On any failure the
    temporary folder is removed and ``final`` never appears."""
    final = Path(final)
    tmp = final.parent / f"{tmp_prefix}{final.name}"
    with writing(tmp):
        tmp.mkdir()
    try:
        yield tmp
        with writing(tmp):
            fsync_tree(tmp)
            os.rename(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise


def swap_symlink(link: str | os.PathLike[str], target: str) -> None:
    """Point the symlink ``link`` at ``target`` atomically (a new link renamed over it)."""
    link = Path(link)
    staged = link.parent / f".{link.name}-{secrets.token_hex(3)}"
    try:
        with writing(link):
            os.symlink(target, staged)
            os.replace(staged, link)
    except BaseException:
        remove_quietly(staged)
        raise
    fsync_dir(link.parent)


# ============================================================================ locks


class LockBusyError(BundleError):
    """Another writer holds the lock and the caller chose not to wait (any longer)."""


#: Seconds between two attempts to take a busy lock when waiting with a timeout.
_LOCK_POLL = 0.05


def _take_lock(fh: Any, path: Path, timeout: float | None, on_wait: Callable[[], None] | None):
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if on_wait is not None:
        on_wait()
    if timeout is None:
        # block in the kernel: the waiter shows in /proc/locks and wakes at the release
        fcntl.flock(fh, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
        time.sleep(_LOCK_POLL)  # flock has no timed wait
    raise LockBusyError(
        f"{path}: held by another writer for more than {timeout:g} s; try again once it has "
        "finished (or wait longer)"
    )


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str],
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created if missing) for the block.

    Parameters
    ----------
    path : path
        The lock file. The lock goes with the open file, so it is released when the block
        ends or the process dies; the file itself stays.
    timeout : float or None
        None waits for any other holder as long as it takes; a number of seconds waits at most
        that long (0: not at all) and then raises :class:`LockBusyError`.
    on_wait : callable or None
        Called once when the lock is busy, before waiting (to tell a user why nothing happens).
    """
    path = Path(path)
    with writing(path, "check the folder is writable"):
        fh = open(path, "a+")  # closed by the with below
    with fh:
        _take_lock(fh, path, timeout, on_wait)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ============================================================================ checksums, JSON


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read 1 MB at a time."""
    h = hashlib.sha256()
    with reading(path, "rebuild the file"), open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike[str], fix: str) -> Any:
    """Parse a JSON file; DataError naming it when it is missing, unreadable or not JSON."""
    with reading(path, fix):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON plus a newline (not atomic: use it inside
    :func:`atomic_dir`, or wrap it in :func:`atomic_write` for a file on its own)."""
    with writing(path):
        Path(path).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def check_format(
    meta: Any,
    path: str | os.PathLike[str],
    fmt: str,
    version: int,
    fix: str,
    version_key: str = "version",
) -> dict[str, Any]:
    """Check a format header: ``meta`` is a JSON object whose ``"format"`` is ``fmt`` and
    whose ``version_key`` is ``version``. Returns ``meta``; raises DataError naming ``path``,
    the format or version found, and ``fix``."""
    if not isinstance(meta, dict):
        raise data_error(path, f"holds {type(meta).__name__}, not a {fmt!r} header", fix)
    if meta.get("format") != fmt:
        found = meta.get("format")
        raise data_error(path, f"format {found!r}, expected {fmt!r} version {version}", fix)
    if meta.get(version_key) != version:
        raise data_error(
            path,
            f"{fmt} format version {meta.get(version_key)!r}, this sdrindex reads {version}",
            fix,
        )
    return meta


# ============================================================================ .npy arrays


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Write ``name.npy`` for each array; returns their ``{"dtype", "shape"}`` for the JSON."""
    for name, arr in arrays.items():
        with writing(path / f"{name}.npy"):
            np.save(path / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    return {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()}


def load_array(
    file: Path, mmap: bool, dtype: str | None, shape: list[int], what: str
) -> np.ndarray:
    """One array, memory-mapped read-only or read, as a plain ndarray.

    ``dtype`` None accepts any dtype. Raises :class:`DataError` naming the file when it is
    missing, unreadable, pickled, or not of the dtype and shape expected (``what``: "table",
    "index" names the directory to save again).
    """
    fix = f"save the {what} again"
    with reading(file, fix):
        arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    if (dtype is not None and arr.dtype.str != dtype) or list(arr.shape) != shape:
        raise data_error(
            file,
            f"holds {arr.dtype.str} {list(arr.shape)}, expected {dtype or 'integer'} {shape} "
            "(damaged or replaced)",
            fix,
        )
    # a plain ndarray view of the mapping: numba's dispatcher types np.memmap (a subclass)
    # on a slow path, ~0.5 us per argument per call
    return np.asarray(arr)
