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

Saving writes a new version in a temporary directory, fsyncs it, renames it into place
and then swaps ``current`` with an atomic ``rename`` of a symlink: a reader or a crash at
any moment sees either the old bundle or the new one, never half of one. Old versions
are removed afterwards. Loading checks the format version and every file's size and
SHA-256 before reading anything, and nothing in a bundle is unpickled. The writes, the
locks (``.lock`` for the writer, ``.update.lock`` for :func:`update_lock`) and the checks
come from :mod:`sdrindex._store`; whatever goes wrong with one file of a bundle (a
``DataError`` from the part's loader, an ``OSError``) surfaces as a :class:`BundleError`
naming that file and the bundle.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex._store import (
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
from sdrindex.errors import BundleError, ParameterError, SDRIndexError

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


def _versions() -> dict[str, str]:
    import numba

    import sdrindex

    out = {"sdrindex": sdrindex.__version__, "numpy": np.__version__, "numba": numba.__version__}
    try:
        from importlib.metadata import version

        out["pynndescent"] = version("pynndescent")
        out["scikit-learn"] = version("scikit-learn")
    except Exception:  # noqa: BLE001 - metadata is informative only
        pass
    return out


@contextlib.contextmanager
def update_lock(path: str | Path) -> Iterator[None]:
    """Serialise read-modify-save cycles on the bundle directory ``path`` across processes.

    Hold it from before :meth:`Bundle.load` until after :meth:`Bundle.save`; readers
    never take it. (:meth:`Bundle.save` alone only serialises the swap of versions.)
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no bundle directory here")
    with _locked(root, UPDATE_LOCK):
        yield


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    """Hold the lock file ``root/name``; only taking it maps to BundleError, not the block."""
    with contextlib.ExitStack() as stack:
        with bundle_errors(root, "check the bundle directory is writable"):
            stack.enter_context(file_lock(root / name))
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
        from sdrindex.datasets import binarize

        arr = np.asarray(images)
        if arr.ndim == 2:
            arr = arr[None]
        X = binarize(arr, self.threshold).reshape(arr.shape[0], -1)
        return self.sp.transform(X, packed=True)

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
    def save(self, path: str | Path, keep_versions: int = 1) -> Path:
        """Write the bundle atomically as a new version of ``path``; returns its directory.

        Raises
        ------
        BundleError
            When the bundle cannot be written (permission, disk full), naming the file; the
            previous version stays live.
        """
        root = Path(path)
        with bundle_errors(root, "save it again"):
            root.mkdir(parents=True, exist_ok=True)
        with _locked(root, WRITER_LOCK):
            for stale in root.glob(".tmp-*"):
                remove_quietly(stale)
            stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
            name = f"v-{stamp}-{secrets.token_hex(3)}"
            with bundle_errors(root, "save it again"):
                with atomic_dir(root / name, tmp_prefix=".tmp-") as tmp:
                    self._write(tmp)
                swap_symlink(root / CURRENT, name)
            versions = sorted(p for p in root.glob("v-*") if p.is_dir() and p.name != name)
            for old in versions[: max(0, len(versions) - (keep_versions - 1))]:
                remove_quietly(old)
        self.path = root / name
        return self.path

    def _write(self, out: Path) -> None:
        self.sp.save(out / "sp.npz")
        self.table.save(out / "table")
        self.index.save(out / "index")
        if self.decoder:
            (out / "decoder").mkdir()
            with open(out / "decoder" / "weights.npz", "wb") as fh:
                np.savez(fh, **self.decoder)
        files = {}
        for p in sorted(out.rglob("*")):
            if p.is_file():
                rel = p.relative_to(out).as_posix()
                files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
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
            if verify:
                _verify_files(vdir, manifest["files"])
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


def _verify_files(vdir: Path, files: dict[str, Any]) -> None:
    """Every file the manifest lists is there with its size and SHA-256."""
    for rel, info in files.items():
        f = vdir / rel
        if not f.is_file():
            raise data_error(f, "missing from the bundle", _REBUILD)
        try:
            size, digest = int(info["size"]), str(info["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise data_error(vdir / MANIFEST, f"bad entry for {rel}", _REBUILD) from exc
        if f.stat().st_size != size:
            raise data_error(
                f, f"size {f.stat().st_size} bytes, the manifest says {size} (truncated or "
                "replaced)", _REBUILD
            )  # fmt: skip
        if sha256_file(f) != digest:
            raise data_error(f, "checksum mismatch (corrupted)", _REBUILD)


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
