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
import secrets
import shutil
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
    file_lock,
    reading,
    remove_quietly,
    sha256_file,
    swap_symlink,
    write_json,
)
from sdrindex._versions import (
    _REBUILD,
    _VERSION_RE,
    CURRENT,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PARTIAL_MARKER,
    SHARDED_FORMAT,
    SHARDS_DIR,
    UPDATE_LOCK,
    WRITER_LOCK,
    BundleDir,
    Version,
    _read_manifest,
    check_files,
    inspect_bundle,
    read_manifest,
    resolve_version,
)
from sdrindex.errors import BundleError, ParameterError, SDRIndexError

__all__ = [
    "CURRENT",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "PARTIAL_MARKER",
    "SHARDED_FORMAT",
    "SHARDS_DIR",
    "UPDATE_LOCK",
    "WRITER_LOCK",
    "Bundle",
    "BundleDir",
    "LockBusyError",
    "Version",
    "check_files",
    "check_labels_arg",
    "clean_leftovers",
    "inspect_bundle",
    "library_versions",
    "new_version_name",
    "read_manifest",
    "resolve_version",
    "rollback",
    "update_lock",
    "write_version",
]


def library_versions() -> dict[str, str]:
    """The versions of sdrindex and the libraries its files depend on (for manifests)."""
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
    #: When set, ``save`` copies this file as ``sp.npz`` instead of saving ``sp`` (which
    #: must be the SP it holds): the bytes stay identical, which a sharded bundle checks
    #: (``np.savez`` stamps the time into the archive).
    sp_file: Path | None = None

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
    def save(
        self,
        path: str | Path,
        keep_versions: int = 2,
        *,
        switch: bool = True,
        version: str | None = None,
        created: str | None = None,
    ) -> Path:
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
        version, created : str, optional
            The new version's name (``v-<UTC time>-<6 hex>``; it must not exist yet) and the
            manifest's creation time. Default: now. A sharded build gives every shard the
            build's name and time, so that a shard written twice is byte-identical.

        Raises
        ------
        BundleError
            When the bundle cannot be written (permission, disk full), naming the file; the
            previous version stays live.
        """
        self.path = write_version(
            path,
            lambda out, previous: self._write(out, previous, created),
            keep_versions,
            switch=switch,
            name=version,
        )
        return self.path

    def _write(self, out: Path, previous: str | None = None, created: str | None = None) -> None:
        if self.sp_file is not None:
            with bundle_errors(out, "save it again"):
                shutil.copyfile(self.sp_file, out / "sp.npz")
        else:
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
            "created": created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "previous": previous,
            "versions": library_versions(),
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
            "has_labels": self.table.has_labels,
            "has_decoder": bool(self.decoder),
        }


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


# ============================================================================ writing versions


def new_version_name() -> str:
    """A fresh version name, ``v-<UTC time to the microsecond>-<6 random hex digits>``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"v-{stamp}-{secrets.token_hex(3)}"


def write_version(
    path: str | Path,
    write: Callable[[Path, str | None], None],
    keep_versions: int = 2,
    *,
    switch: bool = True,
    name: str | None = None,
) -> Path:
    """Write a new version of the versioned directory ``path`` atomically; returns it.

    The one writer of versions: :meth:`Bundle.save` and the top level of a sharded bundle
    (:mod:`sdrindex.cluster.layout`) both call it. Under the writer lock it removes our
    leftovers, calls ``write(tmp, previous_live)`` to fill a temporary folder (which must end
    up holding ``manifest.json``), renames it to ``name`` (default :func:`new_version_name`),
    swaps ``current`` when ``switch`` and prunes versions as :meth:`Bundle.save` describes.
    """
    if keep_versions < 1:
        raise ParameterError(f"keep_versions must be >= 1, got {keep_versions}")
    if name is not None and not _VERSION_RE.fullmatch(name):
        raise ParameterError(
            f"a version name looks like v-20261130T150000123456Z-3f2a1c, got {name!r}"
        )
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
        name = name or new_version_name()
        with bundle_errors(root, "save it again"):
            with atomic_dir(root / name, tmp_prefix=".tmp-") as tmp:
                write_json(tmp / PARTIAL_MARKER, {"format": f"{FORMAT}-partial"})
                write(tmp, before.live)
                (tmp / PARTIAL_MARKER).unlink()
            if switch:
                swap_symlink(root / CURRENT, name)
        _prune(root, keep_versions, protect={name})
    return root / name


# ============================================================================ versions


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
            # the top level of a sharded bundle is versioned the same way (its shards are
            # checked when it is opened)
            fmt = state.versions[target].get("format", FORMAT)
            needed = ("sp.npz",) if fmt == SHARDED_FORMAT else None
            check_files(vdir, _read_manifest(vdir, fmt), hashes=True, needed=needed)
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
