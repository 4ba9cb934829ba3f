"""The on-disk layout of a sharded bundle: a versioned top level over N bundle-format shards.

::

    DIR/
        current -> v-20261130T150000123456Z-3f2a1c     the live top-level version
        v-20261130T150000123456Z-3f2a1c/
            manifest.json    format "sdrindex-sharded": n_shards, the sharding rule, n_items,
                             SP parameters, encoder, dataset, SHA-256 of every file here, and
                             per shard its folder, the version it was written as and the
                             SHA-256 of that version's manifest.json
            sp.npz           the one Spatial Pooler every shard encodes with
            decoder/         decoder weights fitted once on the whole data (optional)
        shards/
            shard-00000/     a normal bundle directory (``Bundle.load`` opens it alone)
            shard-00001/     ...

**Sharding rule** (hash class): global id ``g`` lives in shard ``g % n_shards`` at local
position ``g // n_shards``. Local ids ascending are global ids ascending within a shard, so
per-shard top-k lists merge into exactly one index's top-k (:func:`~.merge.merge_topk`).

**Each shard carries its own copy of ``sp.npz``** (1.3 MB for the default 6,241-column SP):
that keeps every shard a complete bundle that ``Bundle.load`` verifies and opens on its own
(what a shard actor on another node does), and its ``add`` encodes with its own copy.
The top level records the SP's SHA-256; a shard whose ``sp.npz`` differs is refused.

**Versions.** The top level is versioned like a bundle (:func:`sdrindex.bundle.write_version`:
temporary folder, fsync, rename, atomic swap of ``current``). A build writes every shard's
new version *without* making it live, then writes and swaps the top-level version that pins
them, and only then points each shard's ``current`` at its pinned version: a crash before
the top-level swap leaves the old sharded bundle live and whole. A shard version belongs to
a build (``dataset.sharding.build`` in its manifest, kept by adds). A shard is opened at its
live version when that belongs to the top level's build (it may hold items added since,
each add saved durably before it was acknowledged), else at the version the top level pins.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex._store import (
    bundle_errors,
    data_error,
    file_lock,
    reading,
    remove_quietly,
    sha256_file,
    swap_symlink,
    write_json,
)
from sdrindex.bundle import (
    CURRENT,
    MANIFEST,
    SHARDED_FORMAT,
    SHARDS_DIR,
    WRITER_LOCK,
    check_files,
    clean_leftovers,
    inspect_bundle,
    read_manifest,
    resolve_version,
    write_version,
)
from sdrindex.errors import BundleError, DataError, ParameterError

__all__ = [
    "RULE",
    "ShardEntry",
    "ShardedLayout",
    "clean_sharded",
    "is_sharded",
    "owner",
    "pin_live_shards",
    "save_sharded",
    "shard_dir",
    "shard_version_dir",
]

#: The sharding rule, as stored in the top-level manifest.
RULE: dict[str, str] = {"kind": "hash", "shard": "id % n_shards", "local": "id // n_shards"}
_FIX = "rebuild it with `sdrindex build --shards N --force`"
_DECODER = "decoder/weights.npz"


def shard_dir(root: str | Path, shard: int) -> Path:
    """The folder of shard ``shard`` under the sharded bundle ``root``."""
    return Path(root) / SHARDS_DIR / f"shard-{int(shard):05d}"


def owner(ids: NDArray[np.int64], n_shards: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(shard, local position) of each global id, shapes as ``ids`` (the hash-class rule)."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids % n_shards, ids // n_shards


def expected_counts(n_items: int, n_shards: int) -> NDArray[np.int64]:
    """Items each shard holds when ``n_items`` ids 0..n-1 are dealt round-robin."""
    counts = np.full(n_shards, n_items // n_shards, dtype=np.int64)
    counts[: n_items % n_shards] += 1
    return counts


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the top-level manifest pins it."""

    shard: int
    dir: str  # relative to the bundle root: shards/shard-00000
    version: str
    manifest_sha256: str
    n_items: int

    def as_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "dir": self.dir,
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "n_items": self.n_items,
        }


def _top_root(path: str | Path) -> tuple[Path, Path]:
    """(bundle root, live top-level version folder) of a sharded bundle path."""
    path = Path(path)
    vdir = resolve_version(path)
    root = path if vdir.resolve() != path.resolve() else vdir.parent
    return root, vdir


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` (a bundle folder or one of its versions) is a sharded bundle."""
    try:
        _root, vdir = _top_root(path)
        with open(vdir / MANIFEST, encoding="utf-8") as fh:
            return json.load(fh).get("format") == SHARDED_FORMAT
    except (BundleError, OSError, ValueError, AttributeError):
        return False


def _entries(manifest: dict[str, Any], mpath: Path) -> list[ShardEntry]:
    """The shard entries of a top-level manifest, checked (DataError naming it)."""
    n = manifest.get("n_shards")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise data_error(mpath, f"n_shards must be an integer >= 1, got {n!r}", _FIX)
    if manifest.get("rule") != RULE:
        raise data_error(mpath, f"unknown sharding rule {manifest.get('rule')!r}", _FIX)
    raw = manifest.get("shards")
    if not isinstance(raw, list) or len(raw) != n:
        raise data_error(mpath, f"must list {n} shards, lists {raw!r:.60}", _FIX)
    out = []
    for i, e in enumerate(raw):
        try:
            entry = ShardEntry(
                int(e["shard"]), str(e["dir"]), str(e["version"]), str(e["manifest_sha256"]),
                int(e["n_items"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise data_error(mpath, f"bad entry for shard {i}: {e!r:.80}", _FIX) from exc
        if entry.shard != i or entry.dir != f"{SHARDS_DIR}/shard-{i:05d}":
            raise data_error(mpath, f"entry {i} names shard {entry.shard} in {entry.dir!r}", _FIX)
        out.append(entry)
    return out


def read_top(path: str | Path) -> tuple[Path, Path, dict[str, Any], list[ShardEntry]]:
    """(root, live top-level version, its manifest, its shard entries), checked; no file
    other than the manifest is read. Raises :class:`BundleError` naming the file."""
    root, vdir = _top_root(path)
    with bundle_errors(vdir, _FIX):
        manifest = read_manifest(vdir, SHARDED_FORMAT)
        entries = _entries(manifest, vdir / MANIFEST)
    return root, vdir, manifest, entries


def _sharding_stamp(manifest: dict[str, Any]) -> dict[str, Any] | None:
    stamp = (manifest.get("dataset") or {}).get("sharding")
    return stamp if isinstance(stamp, dict) else None


def shard_version_dir(
    root: Path, top: dict[str, Any], entry: ShardEntry, verify: bool = True
) -> Path:
    """The version of a shard to open: its live one when it belongs to the top level's build,
    else the one the top level pins (checked against the pinned manifest checksum).

    Raises
    ------
    BundleError
        Naming the shard folder or file when the shard is missing, replaced or damaged.
    """
    sdir = root / entry.dir
    if not sdir.is_dir():
        raise BundleError(
            f"{sdir}: shard {entry.shard} of {top['n_shards']} is missing (no such folder); "
            f"restore the folder, or {_FIX}"
        )
    want = {"build": top["build"], "shard": entry.shard, "n_shards": top["n_shards"]}
    with contextlib.suppress(BundleError, DataError, OSError):
        live = resolve_version(sdir)
        stamp = _sharding_stamp(read_manifest(live))
        if stamp is not None and {k: stamp.get(k) for k in want} == want:
            return live
    pinned = sdir / entry.version
    mfile = pinned / MANIFEST
    if not mfile.is_file():
        raise BundleError(
            f"{pinned}: the version of shard {entry.shard} that the top-level manifest names "
            f"is missing; restore it, or {_FIX}"
        )
    if verify and sha256_file(mfile) != entry.manifest_sha256:
        raise BundleError(f"{mfile}: checksum mismatch with the top-level manifest; {_FIX}")
    return pinned


def _load_decoder(dfile: Path) -> dict[str, NDArray] | None:
    if not dfile.is_file():
        return None
    with reading(dfile, _FIX), np.load(dfile, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass
class ShardedLayout:
    """A sharded bundle's top level, loaded: manifest, shard entries, SP and decoder."""

    root: Path
    vdir: Path
    manifest: dict[str, Any]
    shards: list[ShardEntry]
    sp: Any  # SpatialPooler
    decoder: dict[str, NDArray] | None

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def build(self) -> str:
        return str(self.manifest["build"])

    def shard_dir(self, shard: int) -> Path:
        return shard_dir(self.root, shard)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> ShardedLayout:
        """Load the live top level of the sharded bundle ``path``, checking every file it
        lists (sizes; SHA-256 too with ``verify``). Shards are opened by :class:`Shard`.

        Raises
        ------
        BundleError
            Naming the file, when the top level is missing, damaged or of another format.
        """
        from sdrindex.sp import SpatialPooler

        root, vdir, manifest, entries = read_top(path)
        with bundle_errors(vdir, _FIX):
            check_files(vdir, manifest, hashes=verify, needed=("sp.npz",))
            sp = SpatialPooler.load(vdir / "sp.npz")
            decoder = _load_decoder(vdir / _DECODER)
        return cls(root, vdir, manifest, entries, sp, decoder)


def _place(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to the immutable ``src`` (a copy where links are refused)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _shard_entry(root: Path, shard: int, vdir: Path) -> ShardEntry:
    manifest = read_manifest(vdir)
    return ShardEntry(
        shard,
        f"{SHARDS_DIR}/shard-{shard:05d}",
        vdir.name,
        sha256_file(vdir / MANIFEST),
        int(manifest["n_items"]),
    )


def save_sharded(
    root: str | Path,
    *,
    sp_file: Path,
    shard_versions: list[Path],
    meta: dict[str, Any],
    decoder: dict[str, NDArray] | Path | None = None,
    name: str | None = None,
    keep_versions: int = 2,
) -> Path:
    """Write a new top-level version pinning ``shard_versions`` and make it live.

    Parameters
    ----------
    root : path
        The sharded bundle folder.
    sp_file : Path
        The SP's ``sp.npz`` (linked or copied in; every shard's copy must match it).
    shard_versions : list of Path
        Shard i's version folder, for i = 0..N-1 (written, verified, not necessarily live).
    meta : dict
        Manifest fields: ``build``, ``sp_params``, ``n_columns``, ``encoder``, ``dataset``,
        ``index``, ``has_labels``, ``image_shape``.
    decoder : dict of arrays, path of a ``weights.npz``, or None
    name : str, optional
        The version's name (a build uses its build name).

    Returns
    -------
    Path
        The new top-level version. Each shard's ``current`` then names its pinned version.
    """
    root = Path(root)
    entries = [_shard_entry(root, i, Path(v)) for i, v in enumerate(shard_versions)]
    sp_sha = sha256_file(sp_file)
    for v in shard_versions:
        if sha256_file(Path(v) / "sp.npz") != sp_sha:
            raise BundleError(f"{v}/sp.npz: not the SP of the sharded bundle; {_FIX}")

    def write(tmp: Path, previous: str | None) -> None:
        _place(sp_file, tmp / "sp.npz")
        if isinstance(decoder, Path):
            _place(decoder, tmp / _DECODER)
        elif decoder:
            (tmp / "decoder").mkdir()
            with open(tmp / _DECODER, "wb") as fh:
                np.savez(fh, **decoder)
        files = {
            p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != ".sdrindex-partial"
        }
        write_json(tmp / MANIFEST, _top_manifest(meta, entries, files, previous))

    vdir = write_version(root, write, keep_versions, name=name)
    for e in entries:
        _point_current(root / e.dir, e.version)
    return vdir


def _top_manifest(
    meta: dict[str, Any], entries: list[ShardEntry], files: dict[str, Any], previous: str | None
) -> dict[str, Any]:
    from sdrindex.bundle import FORMAT_VERSION, library_versions

    return {
        "format": SHARDED_FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "sharded",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "previous": previous,
        "versions": library_versions(),
        **meta,
        "n_shards": len(entries),
        "rule": RULE,
        "n_items": int(sum(e.n_items for e in entries)),
        "has_decoder": _DECODER in files,
        "files": files,
        "shards": [e.as_json() for e in entries],
    }


def _point_current(sdir: Path, version: str) -> None:
    """Make ``version`` the shard's live version (after the top level pinned it)."""
    with file_lock(sdir / WRITER_LOCK):
        state = inspect_bundle(sdir)
        if state.link != version and version in state.versions:
            with bundle_errors(sdir, "build again"):
                swap_symlink(sdir / CURRENT, version)


def pin_live_shards(path: str | Path, keep_versions: int = 2) -> Path:
    """A new top-level version pinning every shard's live version (after adds), same build.

    The caller holds the top level's update lock (:func:`sdrindex.bundle.update_lock`).
    Other readers of the bundle (another server process) see the added items once this new
    version is live; the shards themselves already hold them durably.
    """
    layout = ShardedLayout.load(path, verify=False)
    versions = [
        shard_version_dir(layout.root, layout.manifest, e, verify=False) for e in layout.shards
    ]
    meta = {
        k: v
        for k, v in layout.manifest.items()
        if k
        not in {"format", "format_version", "kind", "created", "previous", "versions",
                "n_shards", "rule", "n_items", "has_decoder", "files", "shards"}
    }  # fmt: skip
    dec = layout.vdir / _DECODER
    return save_sharded(
        layout.root,
        sp_file=layout.vdir / "sp.npz",
        shard_versions=versions,
        meta=meta,
        decoder=dec if dec.is_file() else None,
        keep_versions=keep_versions,
    )


def clean_sharded(path: str | Path) -> list[Path]:
    """Remove what interrupted builds and saves of ours left in a sharded bundle; returns it.

    Removed: the top level's and each shard's leftovers (:func:`sdrindex.bundle.clean_leftovers`:
    temporary folders and staged links that are ours by name and contents), and shard
    versions of ours (our name, a valid manifest) that belong to no build a top-level
    version names and are not their shard's live version (a build that stopped before its
    top-level swap). Nothing else is touched.
    """
    root = Path(path)
    removed = clean_leftovers(root)
    state = inspect_bundle(root)
    builds = {m.get("build") for m in state.versions.values()}
    if state.shards is None:
        return removed
    for sdir in sorted(state.shards.iterdir()):
        removed += clean_leftovers(sdir)
        try:
            with file_lock(sdir / WRITER_LOCK, timeout=0):
                s = inspect_bundle(sdir)
                for name, manifest in s.versions.items():
                    stamp = _sharding_stamp(manifest) or {}
                    if name != s.live and stamp.get("build") not in builds:
                        remove_quietly(sdir / name)
                        removed.append(sdir / name)
        except BundleError:  # busy: another writer is at work there
            continue
    return removed


def check_shard_count(n_shards: int, n_items: int) -> None:
    """ParameterError unless 1 <= n_shards <= n_items (every shard holds an item)."""
    if isinstance(n_shards, bool) or not isinstance(n_shards, int | np.integer) or n_shards < 1:
        raise ParameterError(f"the number of shards must be an integer >= 1, got {n_shards!r}")
    if n_shards > n_items:
        raise ParameterError(
            f"{n_shards} shards for {n_items} items: every shard needs at least one item; "
            f"use --shards {max(1, n_items)} or fewer"
        )
