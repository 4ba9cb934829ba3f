"""Bundles: everything needed to answer queries, in one verified directory.

A bundle directory holds immutable *versions* and a ``current`` symlink naming the live one::

    bundles/mnist/
        current -> v-20261128T142500Z-3f2a1c
        v-20261128T142500Z-3f2a1c/
            manifest.json     format version, creation time, library versions, SP parameters,
                              encoder, dataset, item count, SHA-256 and size of every file
            sp.npz            the Spatial Pooler (SpatialPooler.save)
            table/            TrainingTable (.npy files, memory-mapped on load)
            index/            SDRIndex (.npy files + index.json)
            decoder/          learned decoder weights (optional, .npz)

Saving writes a new version in a temporary directory (``.tmp-v-...``, marked as ours by a
``.sdrindex-partial`` file), fsyncs it, renames it into place and then swaps ``current`` with
an atomic ``rename`` of a symlink (staged as ``.current-xxxxxx``): a reader or a crash at any
moment sees either the old bundle or the new one, never half of one. The version that was
live before stays for :func:`rollback` (``keep_versions``); older ones are pruned. Only
what this module wrote is ever removed: a version is ours when its name has our pattern and
it holds a valid manifest, a leftover when its name and its contents are those of an
interrupted save of ours (:func:`inspect_bundle`); anything else in the folder is left alone.

Loading checks the format version, that every manifest entry is a plain path inside the
version folder, that every file in the folder is listed (so every file a loader reads is
checked), each file's size, and with ``verify`` its SHA-256, before reading anything; nothing
in a bundle is unpickled. The writes, the
locks (``.lock`` for the writer, ``.update.lock`` for :func:`update_lock`) and the checks
come from :mod:`sdrindex._store`; whatever goes wrong with one file of a bundle (a
``DataError`` from the part's loader, an ``OSError``) surfaces as a :class:`BundleError`
naming that file and the bundle.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex._store import (
    LockBusyError,
    atomic_dir,
    bundle_errors,
    check_format,
    data_error,
    file_lock,
    read_json,
    reading,
    remove_quietly,
    sha256_file,
    swap_symlink,
    write_json,
)
from sdrindex.errors import BundleError, DataError, ParameterError, SDRIndexError

__all__ = [
    "Bundle",
    "BundleDir",
    "LockBusyError",
    "Version",
    "check_labels_arg",
    "clean_leftovers",
    "inspect_bundle",
    "resolve_version",
    "rollback",
    "update_lock",
]

FORMAT = "sdrindex-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "current"
#: Lock file of the writer swapping versions (held by :meth:`Bundle.save` only).
WRITER_LOCK = ".lock"
#: Lock file held across a whole read-add-save cycle (``sdrindex add``, the service's
#: ``POST /v1/items``), so that two updaters never lose one another's items.
UPDATE_LOCK = ".update.lock"
_REBUILD = "rebuild the bundle with `sdrindex build`"
#: Versions this module writes: ``v-<UTC time>-<6 hex digits>``.
_VERSION_NAME = r"v-\d{8}T\d{6,12}Z-[0-9a-f]{6}"
_VERSION_RE = re.compile(_VERSION_NAME)
_PARTIAL_RE = re.compile(r"\.tmp-" + _VERSION_NAME)
_STAGED_RE = re.compile(rf"\.{CURRENT}-[0-9a-f]{{6}}")
#: File inside a version being written: the folder is an unfinished save of ours.
PARTIAL_MARKER = ".sdrindex-partial"
_PART_NAMES = frozenset({"sp.npz", "table", "index", "decoder", MANIFEST, PARTIAL_MARKER})
#: Files Bundle.load reads in every version, whatever the manifest lists.
_NEEDED = ("sp.npz", "table/table.json", "index/index.json")
_DECODER = "decoder/weights.npz"


def _versions() -> dict[str, str]:
    import numba

    import sdrindex

    out = {"sdrindex": sdrindex.__version__, "numpy": np.__version__, "numba": numba.__version__}
    try:
        from importlib.metadata import version

        out["scikit-learn"] = version("scikit-learn")
    except Exception:  # noqa: BLE001 - metadata is informative only
        pass
    return out


@contextlib.contextmanager
def update_lock(
    path: str | Path,
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Serialise read-modify-save cycles on the bundle directory ``path`` across processes.

    Hold it from before :meth:`Bundle.load` until after :meth:`Bundle.save` (``sdrindex add``,
    the service's ``POST /v1/items``), or around the save of a new build and a
    :func:`rollback`; readers never take it. (:meth:`Bundle.save` alone only serialises the
    swap of versions.)

    Parameters
    ----------
    path : path
        The bundle directory (it must exist).
    timeout : float or None
        None waits as long as another holder keeps it; seconds to wait at most, after which
        :class:`LockBusyError` (a :class:`BundleError`) is raised.
    on_wait : callable or None
        Called once if the lock is busy, before waiting.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no bundle directory here")
    with _locked(root, UPDATE_LOCK, timeout, on_wait):
        yield


@contextlib.contextmanager
def _locked(
    root: Path,
    name: str,
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold the lock file ``root/name``; only taking it maps to BundleError, not the block."""
    with contextlib.ExitStack() as stack:
        with bundle_errors(root, "check the bundle directory is writable"):
            stack.enter_context(file_lock(root / name, timeout, on_wait))
        yield


def resolve_version(path: str | Path) -> Path:
    """The directory of the live version of a bundle (or ``path`` itself if it is one)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    current = path / CURRENT
    if current.is_symlink() or current.exists():
        target = current.resolve()
        if (target / MANIFEST).is_file():
            return target
        raise BundleError(f"{current}: points to {target}, which has no {MANIFEST}")
    if not path.exists():
        raise BundleError(f"{path}: no such bundle; build one with `sdrindex build --out {path}`")
    raise BundleError(f"{path}: not a bundle (no {CURRENT} link and no {MANIFEST})")


@dataclass
class Bundle:
    """A Spatial Pooler, its training table, the SDR index and (optionally) a decoder."""

    sp: Any  # SpatialPooler
    table: Any  # TrainingTable
    index: Any  # SDRIndex
    encoder: dict[str, Any] = field(default_factory=lambda: {"threshold": 128})
    dataset: dict[str, Any] = field(default_factory=dict)
    decoder: dict[str, NDArray] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------------ encoding
    @property
    def threshold(self) -> int | str:
        return self.encoder.get("threshold", 128)

    def encode(self, images: ArrayLike) -> NDArray[np.uint8]:
        """Images (n, 28, 28) uint8 -> packed SDRs (n, ceil(n_columns/8)) with this SP."""
        from sdrindex.preprocess import encode_input

        # the encoder config (threshold, optional deskew/blur/planes) the SP was trained with
        return self.sp.transform(encode_input(images, self.encoder), packed=True)

    def add(self, images: ArrayLike, labels: ArrayLike | None = None) -> NDArray[np.int64]:
        """Encode and append items in memory (table + index); returns their ids.

        Call :meth:`save` to persist them. Nothing changes if encoding fails.
        """
        images = np.asarray(images)
        sdrs = self.encode(images)
        ids = self.table.append(images, sdrs, labels)
        try:
            index_ids = self.index.add(sdrs)
        except Exception:
            # Keep table and index in step: undo the append.
            n = len(self.table) - len(ids)
            self.table.images = self.table.images[:n]
            self.table.sdrs = self.table.sdrs[:n]
            self.table.ids = self.table.ids[:n]
            if self.table.labels is not None:
                self.table.labels = self.table.labels[:n]
            self.table._lookup = None
            raise
        if not np.array_equal(np.asarray(index_ids), ids):
            raise SDRIndexError(
                "table ids and index ids diverged; rebuild the bundle with `sdrindex build`"
            )
        return ids

    # ------------------------------------------------------------------ save
    def save(self, path: str | Path, keep_versions: int = 2, *, switch: bool = True) -> Path:
        """Write the bundle atomically as a new version of ``path``; returns its directory.

        Parameters
        ----------
        path : path
            The bundle directory (created if missing). What an interrupted save of ours left
            there is removed first; nothing else in it is touched.
        keep_versions : int
            Versions kept along the live one's history, the live one included: 2 (default)
            keeps the version this save replaces, for :func:`rollback`; 1 keeps none. Only
            versions sdrindex wrote are pruned; the live one is always kept.
        switch : bool
            Make the new version live (default). False writes it beside the live one, which
            stays live; ``rollback(path, to=name)`` switches to it later.

        Raises
        ------
        BundleError
            When the bundle cannot be written (permission, disk full), naming the file; the
            previous version stays live.
        """
        if keep_versions < 1:
            raise ParameterError(f"keep_versions must be >= 1, got {keep_versions}")
        root = Path(path)
        with bundle_errors(root, "save it again"):
            root.mkdir(parents=True, exist_ok=True)
        with _locked(root, WRITER_LOCK):
            _clean_locked(root)
            before = inspect_bundle(root)
            current = root / CURRENT
            if switch and before.link is None and (current.exists() or current.is_symlink()):
                raise BundleError(
                    f"{current}: not a link to a version written by sdrindex, so it is not "
                    "replaced; move it away, or save the bundle in another folder"
                )
            live = before.live
            stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
            name = f"v-{stamp}-{secrets.token_hex(3)}"
            with bundle_errors(root, "save it again"):
                with atomic_dir(root / name, tmp_prefix=".tmp-") as tmp:
                    write_json(tmp / PARTIAL_MARKER, {"format": f"{FORMAT}-partial"})
                    self._write(tmp, previous=live)
                    (tmp / PARTIAL_MARKER).unlink()
                if switch:
                    swap_symlink(root / CURRENT, name)
            _prune(root, keep_versions, protect={name})
        self.path = root / name
        return self.path

    def _write(self, out: Path, previous: str | None = None) -> None:
        self.sp.save(out / "sp.npz")
        self.table.save(out / "table")
        self.index.save(out / "index")
        if self.decoder:
            (out / "decoder").mkdir()
            with open(out / "decoder" / "weights.npz", "wb") as fh:
                np.savez(fh, **self.decoder)
        files = {}
        for p in sorted(out.rglob("*")):
            if p.is_file() and p.name != PARTIAL_MARKER:
                rel = p.relative_to(out).as_posix()
                files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "previous": previous,
            "versions": _versions(),
            "sp_params": self.sp.nupic_params(),
            "encoder": self.encoder,
            "dataset": self.dataset,
            "n_items": len(self.table),
            "n_columns": int(self.sp.n_columns),
            "index": {"backend": self.index.backend, "n_items": len(self.index)},
            "has_decoder": bool(self.decoder),
            "files": files,
        }
        write_json(out / MANIFEST, manifest)
        self.manifest = manifest

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str | Path, verify: bool = True, mmap: bool = True) -> Bundle:
        """Load the live version of a bundle, verifying it first.

        Every file in the version folder must be listed in its manifest (the files loading
        reads among them) with a plain path inside the folder, and have the listed size;
        ``verify`` (default) also compares every file's SHA-256. ``mmap`` maps the table's
        and the index's arrays read-only instead of reading them.

        Raises
        ------
        BundleError
            Naming the file, for a missing file, a checksum or size mismatch, an unknown
            format version, or an array that does not load. Nothing is half-loaded: the
            bundle object is only returned once every part loaded.
        """
        from sdrindex.index import SDRIndex
        from sdrindex.sp import SpatialPooler
        from sdrindex.table import TrainingTable

        vdir = resolve_version(path)
        with bundle_errors(vdir, _REBUILD):
            manifest = _read_manifest(vdir)
            check_files(vdir, manifest, hashes=verify)
            sp = SpatialPooler.load(vdir / "sp.npz")
            table = TrainingTable.load(vdir / "table", mmap=mmap)
            index = SDRIndex.load(vdir / "index", mmap=mmap)
            decoder = _load_decoder(vdir / "decoder" / "weights.npz")
        if len(table) != len(index) or table.n_bits != sp.n_columns or index.n_bits != sp.n_columns:
            raise BundleError(
                f"{vdir}: parts disagree (table {len(table)} rows of {table.n_bits} bits, index "
                f"{len(index)} items, SP {sp.n_columns} columns); rebuild the bundle"
            )
        return cls(
            sp=sp,
            table=table,
            index=index,
            encoder=dict(manifest.get("encoder") or {"threshold": 128}),
            dataset=dict(manifest.get("dataset") or {}),
            decoder=decoder,
            manifest=manifest,
            path=vdir,
        )

    def summary(self) -> dict[str, Any]:
        """A short description (for `sdrindex info` and the service's /v1/info)."""
        return {
            "path": str(self.path) if self.path else None,
            "created": self.manifest.get("created"),
            "format_version": self.manifest.get("format_version"),
            "versions": self.manifest.get("versions"),
            "n_items": len(self.table),
            "n_columns": int(self.sp.n_columns),
            "backend": self.index.backend,
            "encoder": self.encoder,
            "dataset": self.dataset,
            "sp_params": self.sp.nupic_params(),
            "has_labels": self.table.labels is not None,
            "has_decoder": bool(self.decoder),
        }


def _read_manifest(vdir: Path) -> dict[str, Any]:
    """The checked manifest of the version ``vdir`` (DataError naming it when it is bad)."""
    mpath = vdir / MANIFEST
    fix = "rebuild the bundle with this version of sdrindex"
    manifest = check_format(
        read_json(mpath, fix), mpath, FORMAT, FORMAT_VERSION, fix, version_key="format_version"
    )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise data_error(mpath, "the manifest lists no files", fix)
    return manifest


def check_files(vdir: Path, manifest: dict[str, Any], hashes: bool = True) -> None:
    """Check the version folder ``vdir`` against its ``manifest``: confined, complete, intact.

    Every entry is a relative path inside ``vdir`` (no absolute path, no ``..``, no link);
    the files loading always reads are listed; every file in the folder is listed; each
    listed file is there with its size and, when ``hashes``, its SHA-256. Raises
    :class:`DataError` naming the manifest and the entry, or the file.
    """
    mpath = vdir / MANIFEST
    files = manifest["files"]
    expected = {rel: _entry(vdir, mpath, rel, info) for rel, info in files.items()}
    needed = _NEEDED + ((_DECODER,) if manifest.get("has_decoder") else ())
    for rel in needed:
        if rel not in files:
            raise data_error(mpath, f"lists no {rel}, which loading the bundle reads", _REBUILD)
    _check_listed(vdir, files)
    for f, size, digest in expected.values():
        if not f.is_file():
            raise data_error(f, "missing from the bundle", _REBUILD)
        if f.stat().st_size != size:
            raise data_error(
                f, f"size {f.stat().st_size} bytes, the manifest says {size} (truncated or "
                "replaced)", _REBUILD
            )  # fmt: skip
        if hashes and sha256_file(f) != digest:
            raise data_error(f, "checksum mismatch (corrupted)", _REBUILD)


def _entry(vdir: Path, mpath: Path, rel: Any, info: Any) -> tuple[Path, int, str]:
    """(file, size, sha256) of one manifest entry, refusing a path that leaves ``vdir``."""
    parts = rel.split("/") if isinstance(rel, str) else [""]
    if (
        not isinstance(rel, str)
        or rel.startswith("/")
        or "\\" in rel
        or "\0" in rel
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise data_error(
            mpath,
            f"the entry {rel!r} is not a relative path inside the version folder (absolute, "
            "empty or with '..')",
            _REBUILD,
        )
    f = vdir / rel
    if not f.resolve().is_relative_to(vdir.resolve()):
        raise data_error(mpath, f"the entry {rel!r} leads outside the version folder", _REBUILD)
    try:
        size, digest = int(info["size"]), str(info["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise data_error(mpath, f"bad entry for {rel!r} (size, sha256)", _REBUILD) from exc
    if size < 0:
        raise data_error(mpath, f"bad entry for {rel!r}: negative size {size}", _REBUILD)
    return f, size, digest


def _check_listed(vdir: Path, files: dict[str, Any]) -> None:
    """No link anywhere in ``vdir`` and no file that the manifest does not list."""
    for dirpath, dirnames, filenames in os.walk(vdir):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                raise data_error(
                    p, f"a symbolic link (to {os.readlink(p)}); a bundle version holds plain "
                    "files only", _REBUILD
                )  # fmt: skip
        for name in filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(vdir).as_posix()
            if rel != MANIFEST and rel not in files:
                raise data_error(
                    p, "not listed in the bundle's manifest, so it cannot be verified", _REBUILD
                )


def _load_decoder(dfile: Path) -> dict[str, NDArray] | None:
    if not dfile.is_file():
        return None
    with reading(dfile, _REBUILD), np.load(dfile, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def check_labels_arg(labels: ArrayLike | None, n: int) -> NDArray[np.int64] | None:
    """Labels for n new items: None, one int for all, or n ints."""
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = np.full(n, int(arr), np.int64)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ParameterError(f"labels must be {n} integers, got shape {arr.shape} {arr.dtype}")
    return arr.astype(np.int64)


# ============================================================================ versions


@dataclass(frozen=True)
class Version:
    """One version of a bundle written by sdrindex (for listings: ``sdrindex versions``)."""

    name: str
    created: str | None
    n_items: int | None
    previous: str | None
    live: bool


@dataclass
class BundleDir:
    """What a bundle directory holds, sorted into what sdrindex wrote and what it did not.

    Attributes
    ----------
    path : Path
        The directory.
    exists : bool
        Whether anything is at ``path``.
    is_version : bool
        ``path`` is itself one version (it holds ``manifest.json``), not a bundle directory.
    link : str or None
        The version name that the ``current`` link names (None: no link, or a ``current``
        that sdrindex did not write, which counts as foreign).
    live : str or None
        The live version: ``link``, when it names one of ``versions``. A bundle exists at
        ``path`` only when this is set.
    versions : dict
        Our versions (name pattern and a valid manifest), name -> manifest.
    leftovers : list of Path
        What an interrupted save of ours left: ``.tmp-v-...`` folders holding only our part
        names (or our marker), ``.current-xxxxxx`` links naming a version.
    foreign : list of Path
        Everything else: never written, moved or removed by sdrindex.
    """

    path: Path
    exists: bool
    is_version: bool = False
    link: str | None = None
    live: str | None = None
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    leftovers: list[Path] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)

    @property
    def vacant(self) -> bool:
        """Nothing here but what an unfinished first build of ours left: a build may start."""
        if not self.exists:
            return True
        return not self.is_version and self.link is None and not self.foreign

    def previous(self, name: str) -> str | None:
        """The version that was live when ``name`` was saved, if it is still here.

        Manifests written before this field existed have no ``previous``: the next older
        version by name (the names sort by time) stands in for it.
        """
        manifest = self.versions.get(name, {})
        if "previous" in manifest:
            prev = manifest["previous"]
            return prev if isinstance(prev, str) and prev in self.versions else None
        older = sorted(v for v in self.versions if v < name)
        return older[-1] if older else None

    def lineage(self, name: str, n: int) -> list[str]:
        """``name`` and up to ``n - 1`` of the versions before it, newest first."""
        chain: list[str] = []
        current: str | None = name
        while current is not None and current not in chain and len(chain) < n:
            chain.append(current)
            current = self.previous(current)
        return chain

    def listing(self) -> list[Version]:
        """Our versions, newest first."""
        return [
            Version(
                name=name,
                created=m.get("created"),
                n_items=m.get("n_items"),
                previous=self.previous(name),
                live=name == self.live,
            )
            for name, m in sorted(self.versions.items(), reverse=True)
        ]


def inspect_bundle(path: str | Path) -> BundleDir:
    """Sort what is at ``path`` into our versions, our leftovers and everything else.

    Reads names, links and manifests only (no checksum): a version whose manifest does not
    parse is not recognised as ours, and is therefore never pruned.
    """
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        return BundleDir(root, exists=False)
    if not root.is_dir():
        return BundleDir(root, exists=True, foreign=[root])
    state = BundleDir(root, exists=True, is_version=(root / MANIFEST).is_file())
    with bundle_errors(root, "check that you may read the folder"):
        entries = sorted(root.iterdir())
    for entry in entries:
        name = entry.name
        if name in (WRITER_LOCK, UPDATE_LOCK) and entry.is_file() and not entry.is_symlink():
            continue
        if name == CURRENT and entry.is_symlink():
            target = os.readlink(entry).rstrip("/")
            if _VERSION_RE.fullmatch(target):  # a link of ours names a version beside it
                state.link = target
                continue
        if _VERSION_RE.fullmatch(name) and entry.is_dir() and not entry.is_symlink():
            manifest = _our_manifest(entry)
            if manifest is not None:
                state.versions[name] = manifest
                continue
        (state.leftovers if _is_leftover(entry) else state.foreign).append(entry)
    if state.link is not None:
        state.live = state.link if state.link in state.versions else None
    return state


def _our_manifest(vdir: Path) -> dict[str, Any] | None:
    try:
        return _read_manifest(vdir)
    except DataError:
        return None


def _is_leftover(entry: Path) -> bool:
    """An interrupted save's temporary folder or staged link: our name and our contents."""
    try:
        if _STAGED_RE.fullmatch(entry.name):
            return entry.is_symlink() and _VERSION_RE.fullmatch(os.readlink(entry)) is not None
        if _PARTIAL_RE.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            return all(p.name in _PART_NAMES and not p.is_symlink() for p in entry.iterdir())
    except OSError:
        return False
    return False


def _clean_locked(root: Path) -> list[Path]:
    """Remove our leftovers under ``root`` (the caller holds the writer lock)."""
    leftovers = inspect_bundle(root).leftovers
    for p in leftovers:
        remove_quietly(p)
    return leftovers


def clean_leftovers(path: str | Path) -> list[Path]:
    """Remove what interrupted saves left in the bundle directory ``path``; returns them.

    Only ``.tmp-v-...`` folders and ``.current-xxxxxx`` links that are ours by name and
    contents (see :class:`BundleDir`) go. While another writer holds the bundle's writer
    lock its temporary folder is work in progress, not a leftover: nothing is removed then.
    """
    root = Path(path)
    if not root.is_dir():
        return []
    try:
        with _locked(root, WRITER_LOCK, timeout=0):
            return _clean_locked(root)
    except LockBusyError:
        return []


def _prune(root: Path, keep_versions: int, protect: set[str]) -> None:
    """Remove our versions outside the history that :func:`rollback` may need.

    Kept: the live version, the ``protect``-ed ones, and for each of these the versions
    before it, ``keep_versions`` in all. Nothing that is not one of our versions is touched.
    """
    state = inspect_bundle(root)
    keep: set[str] = set()
    for name in protect | ({state.live} if state.live else set()):
        keep.update(state.lineage(name, keep_versions))
    for name in state.versions:
        if name not in keep:
            remove_quietly(root / name)


def rollback(
    path: str | Path,
    to: str | None = None,
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
) -> tuple[str | None, str]:
    """Make another version of the bundle ``path`` live; returns (was live, now live).

    Parameters
    ----------
    path : path
        The bundle directory.
    to : str or None
        The version's name (``sdrindex versions`` lists them). None: the version that was
        live before the live one was saved (undoes the last build, add or save).
    timeout, on_wait
        As for :func:`update_lock`, which is held, with the writer lock, during the switch.

    Raises
    ------
    BundleError
        No such version, none to go back to, or the version is damaged (it is verified,
        checksums included, before it goes live; the live version stays otherwise).
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory")
    with update_lock(root, timeout, on_wait), _locked(root, WRITER_LOCK):
        state = inspect_bundle(root)
        target = _rollback_target(state, to)
        vdir = root / target
        with bundle_errors(vdir, "name another version with --to (`sdrindex versions`)"):
            check_files(vdir, _read_manifest(vdir), hashes=True)
        if target != state.live:
            with bundle_errors(root, "try again"):
                swap_symlink(root / CURRENT, target)
        _clean_locked(root)
    return state.live, target


def _rollback_target(state: BundleDir, to: str | None) -> str:
    names = ", ".join(sorted(state.versions, reverse=True)) or "none"
    if to is None:
        if state.live is None:
            raise BundleError(
                f"{state.path}: `{CURRENT}` does not name a version written by sdrindex "
                f"({state.link!r}); name one with --to (versions here: {names})"
            )
        previous = state.previous(state.live)
        if previous is None:
            raise BundleError(
                f"{state.path}: no version before the live one ({state.live}) is kept; "
                f"versions here: {names}"
            )
        return previous
    name = to.rstrip("/")
    if name not in state.versions:
        raise BundleError(
            f"{state.path}: no version {to!r} written by sdrindex here; versions here: {names}"
        )
    return name
