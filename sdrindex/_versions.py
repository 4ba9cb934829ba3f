"""Versioned directories: names, manifests, and what a bundle folder holds.

The read side of :mod:`sdrindex.bundle` (which re-exports every public name here): the
constants of the on-disk layout, finding the live version, checking a version's manifest
against its files, and sorting a folder into our versions, our leftovers and everything
else (:func:`inspect_bundle`). Writing, pruning and rollback stay in :mod:`sdrindex.bundle`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdrindex._store import bundle_errors, check_format, data_error, read_json, sha256_file
from sdrindex.errors import BundleError, DataError

__all__ = [
    "BundleDir",
    "Version",
    "check_files",
    "inspect_bundle",
    "read_manifest",
    "resolve_version",
]

FORMAT = "sdrindex-bundle"
FORMAT_VERSION = 1
#: The format of a sharded bundle's top-level versions (:mod:`sdrindex.cluster.layout`
#: writes them; named here so that this module recognises them as ours and never prunes
#: or reports them as foreign).
SHARDED_FORMAT = "sdrindex-sharded"
#: The folder of a sharded bundle that holds its shards (``shards/shard-00000``, ...).
SHARDS_DIR = "shards"
_SHARD_RE = re.compile(r"shard-\d{5}")
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


def _read_manifest(vdir: Path, fmt: str = FORMAT) -> dict[str, Any]:
    """The checked manifest of the version ``vdir`` (DataError naming it when it is bad)."""
    mpath = vdir / MANIFEST
    fix = "rebuild the bundle with this version of sdrindex"
    meta = read_json(mpath, fix)
    if fmt == FORMAT and isinstance(meta, dict) and meta.get("format") == SHARDED_FORMAT:
        raise BundleError(
            f"{vdir}: the top level of a sharded bundle ({meta.get('n_shards')} shards), not "
            "one bundle; open it with sdrindex.cluster.open_sharded (the sdrindex commands "
            "accept both)"
        )
    manifest = check_format(meta, mpath, fmt, FORMAT_VERSION, fix, version_key="format_version")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise data_error(mpath, "the manifest lists no files", fix)
    return manifest


def read_manifest(vdir: str | Path, fmt: str = FORMAT) -> dict[str, Any]:
    """The checked manifest of the version folder ``vdir`` of format ``fmt`` (:data:`FORMAT`
    or :data:`SHARDED_FORMAT`); :class:`DataError` naming it when it is bad."""
    return _read_manifest(Path(vdir), fmt)


def check_files(
    vdir: Path,
    manifest: dict[str, Any],
    hashes: bool = True,
    needed: tuple[str, ...] | None = None,
) -> None:
    """Check the version folder ``vdir`` against its ``manifest``: confined, complete, intact.

    Every entry is a relative path inside ``vdir`` (no absolute path, no ``..``, no link);
    the files loading always reads are listed; every file in the folder is listed; each
    listed file is there with its size and, when ``hashes``, its SHA-256 (``needed``: the
    files that must be listed, default a bundle's; the decoder's when it has one). Raises
    :class:`DataError` naming the manifest and the entry, or the file.
    """
    mpath = vdir / MANIFEST
    files = manifest["files"]
    expected = {rel: _entry(vdir, mpath, rel, info) for rel, info in files.items()}
    if needed is None:
        needed = _NEEDED
    needed = needed + ((_DECODER,) if manifest.get("has_decoder") else ())
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
    shards : Path or None
        The ``shards/`` folder of a sharded bundle (:mod:`sdrindex.cluster.layout`).
    """

    path: Path
    exists: bool
    is_version: bool = False
    link: str | None = None
    live: str | None = None
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    leftovers: list[Path] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)
    #: ``shards/`` of a sharded bundle (its shards are bundle directories of their own).
    shards: Path | None = None

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
        if _is_shards_dir(entry):
            state.shards = entry
            continue
        (state.leftovers if _is_leftover(entry) else state.foreign).append(entry)
    if state.link is not None:
        state.live = state.link if state.link in state.versions else None
    return state


def _our_manifest(vdir: Path) -> dict[str, Any] | None:
    for fmt in (FORMAT, SHARDED_FORMAT):
        try:
            return _read_manifest(vdir, fmt)
        except (DataError, BundleError):
            continue
    return None


def _is_shards_dir(entry: Path) -> bool:
    """``shards/`` of a sharded bundle: a plain folder holding only ``shard-NNNNN`` folders."""
    try:
        return (
            entry.name == SHARDS_DIR
            and entry.is_dir()
            and not entry.is_symlink()
            and all(
                _SHARD_RE.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
                for p in entry.iterdir()
            )
        )
    except OSError:
        return False


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
