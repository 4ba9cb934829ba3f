"""Bundles on disk: manifest paths confined and every loaded file checked; versions that
sdrindex wrote told apart from everything else (pruning, leftovers of a killed save, serve)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import SMALL_SP
from sdrindex.bundle import (
    Bundle,
    clean_leftovers,
    inspect_bundle,
    resolve_version,
    rollback,
)
from sdrindex.datasets import binarize, load_mnist
from sdrindex.errors import BundleError
from sdrindex.index import SDRIndex
from sdrindex.sp import SpatialPooler
from sdrindex.table import TrainingTable


@pytest.fixture(scope="module")
def small() -> Bundle:
    images, labels = load_mnist("train")
    images, labels = images[:120], labels[:120].astype(np.int64)
    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    X = binarize(images).reshape(len(images), -1)
    sp.fit(X)
    sdrs = sp.transform(X, packed=True)
    table = TrainingTable(images, sdrs, sp.n_columns, labels=labels)
    index = SDRIndex("exact").fit(sdrs, sp.n_columns)
    return Bundle(sp=sp, table=table, index=index, dataset={"source": "test"})


def _manifest(vdir: Path) -> dict:
    return json.loads((vdir / "manifest.json").read_text())


def _write_manifest(vdir: Path, manifest: dict) -> None:
    (vdir / "manifest.json").write_text(json.dumps(manifest))


def _entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


# ============================================================================ manifest paths


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_a_manifest_path_outside_the_version_is_refused(tmp_path, small, kind):
    """Today the entry's file is hashed and its size echoed wherever it is."""
    small.save(tmp_path / "bd")
    v = resolve_version(tmp_path / "bd")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours" * 10)
    rel = os.path.relpath(secret, v) if kind == "dotdot" else str(secret)
    assert rel.startswith("../") if kind == "dotdot" else rel.startswith("/")
    m = _manifest(v)
    m["files"][rel] = _entry(secret)
    _write_manifest(v, m)
    for verify in (True, False):
        with pytest.raises(BundleError) as info:
            Bundle.load(tmp_path / "bd", verify=verify)
        message = str(info.value)
        assert str(v / "manifest.json") in message and repr(rel) in message
        assert "inside the version folder" in message


def test_a_link_escaping_the_version_is_refused(tmp_path, small):
    small.save(tmp_path / "bd")
    v = resolve_version(tmp_path / "bd")
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros(4, np.uint8))
    link = v / "table" / "extra.npy"
    link.symlink_to(outside)
    m = _manifest(v)
    m["files"]["table/extra.npy"] = _entry(outside)
    _write_manifest(v, m)
    with pytest.raises(BundleError) as info:
        Bundle.load(tmp_path / "bd")
    message = str(info.value)
    assert str(v / "manifest.json") in message and "'table/extra.npy' leads outside" in message
    # not listed either: the link itself is refused
    del m["files"]["table/extra.npy"]
    _write_manifest(v, m)
    with pytest.raises(BundleError) as info:
        Bundle.load(tmp_path / "bd", verify=False)
    assert str(link) in str(info.value) and "symbolic link" in str(info.value)


def test_a_file_loaded_but_not_listed_is_refused(tmp_path, small):
    """Today a file the manifest leaves out is loaded unchecked."""
    small.save(tmp_path / "bd")
    v = resolve_version(tmp_path / "bd")
    m = _manifest(v)
    del m["files"]["table/labels.npy"]
    _write_manifest(v, m)
    for verify in (True, False):
        with pytest.raises(BundleError) as info:
            Bundle.load(tmp_path / "bd", verify=verify)
        assert f"{v / 'table' / 'labels.npy'}: not listed in the bundle's manifest" in str(
            info.value
        )


def test_a_needed_file_missing_from_the_manifest_is_named(tmp_path, small):
    small.save(tmp_path / "bd")
    v = resolve_version(tmp_path / "bd")
    m = _manifest(v)
    del m["files"]["index/index.json"]
    _write_manifest(v, m)
    (v / "index" / "index.json").unlink()
    with pytest.raises(BundleError) as info:
        Bundle.load(tmp_path / "bd")
    assert f"{v / 'manifest.json'}: lists no index/index.json" in str(info.value)


def test_unverified_load_still_checks_sizes(tmp_path, small):
    """verify=False skips the hashes, not the sizes (today it checks nothing)."""
    small.save(tmp_path / "bd")
    v = resolve_version(tmp_path / "bd")
    meta = v / "index" / "index.json"
    meta.write_text(meta.read_text() + "\n\n")  # still valid JSON, loads without the check
    with pytest.raises(BundleError) as info:
        Bundle.load(tmp_path / "bd", verify=False)
    assert str(meta) in str(info.value) and "the manifest says" in str(info.value)


def test_a_manifest_without_the_new_fields_still_loads(tmp_path, small):
    """Bundles written before `previous` existed load, and roll back by version order."""
    small.save(tmp_path / "bd")
    first = resolve_version(tmp_path / "bd")
    small.save(tmp_path / "bd")
    second = resolve_version(tmp_path / "bd")
    for v in (first, second):
        m = _manifest(v)
        del m["previous"]
        _write_manifest(v, m)
    assert len(Bundle.load(tmp_path / "bd").table) == 120
    assert rollback(tmp_path / "bd") == (second.name, first.name)
    assert resolve_version(tmp_path / "bd") == first


# ============================================================================ versions


def _foreign(root: Path) -> dict[str, Path]:
    """Folders that look like ours by name but are not: they must survive every save."""
    made = {}
    for name in (
        "v-keep",
        "v-20200101T000000Z-abcdef",
        ".tmp-mine",
        ".tmp-v-20200101T000000Z-abcdef",
    ):
        d = root / name
        d.mkdir(parents=True)
        (d / "notes.txt").write_text("mine")
        made[name] = d
    (root / ".current-abcdef").write_text("a file, not our staged link")
    made[".current-abcdef"] = root / ".current-abcdef"
    return made


def test_saves_prune_only_their_own_versions(tmp_path, small):
    """Today every v-* and .tmp-* folder is deleted, whoever wrote it."""
    root = tmp_path / "bd"
    small.save(root)
    mine = _foreign(root)
    names = [small.save(root).name for _ in range(3)]
    for p in mine.values():
        assert p.exists(), f"{p.name} was removed"
    state = inspect_bundle(root)
    assert sorted(state.versions) == sorted(names[-2:])  # the live one and the one before
    assert state.live == names[-1]
    assert sorted(p.name for p in state.foreign) == sorted(mine)


def test_keep_versions_counts_along_the_history(tmp_path, small):
    root = tmp_path / "bd"
    names = [small.save(root, keep_versions=3).name for _ in range(4)]
    assert sorted(inspect_bundle(root).versions) == sorted(names[1:])
    assert rollback(root) == (names[3], names[2])
    # after a rollback, the next save keeps its own history: 2 <- new, 3 (rolled back) goes
    new = small.save(root).name
    assert sorted(inspect_bundle(root).versions) == sorted([names[2], new])
    assert _manifest(root / new)["previous"] == names[2]


def test_rollback_verifies_the_version_first(tmp_path, small):
    root = tmp_path / "bd"
    old = small.save(root).name
    new = small.save(root).name
    (root / old / "sp.npz").write_bytes(b"damaged")
    with pytest.raises(BundleError) as info:
        rollback(root)
    assert str(root / old / "sp.npz") in str(info.value)
    assert os.readlink(root / "current") == new
    with pytest.raises(BundleError, match="no version 'v-nope'"):
        rollback(root, to="v-nope")


# ============================================================================ leftovers


def _leftovers(root: Path, version: str) -> list[Path]:
    """What a build killed mid-write (old code: no marker) or mid-swap leaves."""
    legacy = root / ".tmp-v-20261130T010203123456Z-0a1b2c"
    (legacy / "table").mkdir(parents=True)
    (legacy / "sp.npz").write_bytes(b"partial")
    marked = root / ".tmp-v-20261130T010204123456Z-0a1b2d"
    marked.mkdir()
    (marked / ".sdrindex-partial").write_text("{}")
    staged = root / ".current-0a1b2c"
    staged.symlink_to(version)
    return [legacy, marked, staged]


def test_leftovers_of_a_killed_save_are_cleaned_and_nothing_else(tmp_path, small):
    root = tmp_path / "bd"
    live = small.save(root).name
    mine = _foreign(root)
    left = _leftovers(root, live)
    assert sorted(inspect_bundle(root).leftovers) == sorted(left)
    assert sorted(clean_leftovers(root)) == sorted(left)
    assert not any(p.exists() or p.is_symlink() for p in left)
    assert all(p.exists() for p in mine.values())
    _leftovers(root, live)
    small.save(root)  # a save cleans them too
    assert inspect_bundle(root).leftovers == []


def test_serve_builds_over_the_leftovers_of_a_killed_first_build(tmp_path, small, monkeypatch):
    """Today a `.tmp-*` makes `serve` believe a bundle exists: it fails and restart-loops."""
    from sdr_service import serve

    root = tmp_path / "bd"
    root.mkdir()
    (root / ".lock").touch()
    legacy = root / ".tmp-v-20261130T010203123456Z-0a1b2c"
    (legacy / "table").mkdir(parents=True)
    assert serve._needs_build(root)
    with pytest.raises(BundleError, match="no bundle"):
        serve.ensure_bundle(root, build=False)
    calls = []
    monkeypatch.setattr(serve, "build_default_bundle", lambda out: calls.append(small.save(out)))
    serve.ensure_bundle(root)
    assert len(calls) == 1 and not legacy.exists()
    assert resolve_version(root) == calls[0]
    assert not serve._needs_build(root)


def test_serve_never_builds_over_what_it_did_not_write(tmp_path):
    from sdr_service import serve

    root = tmp_path / "bd"
    (root / ".tmp-mine").mkdir(parents=True)
    assert not serve._needs_build(root)
    with pytest.raises(BundleError, match="not a bundle"):
        serve.ensure_bundle(root)
    assert (root / ".tmp-mine").is_dir()
    shutil.rmtree(root)


def test_a_save_without_switch_leaves_the_live_version_live(tmp_path, small):
    root = tmp_path / "bd"
    live = small.save(root).name
    staged = small.save(root, switch=False).name
    assert os.readlink(root / "current") == live
    assert sorted(inspect_bundle(root).versions) == sorted([live, staged])
    assert rollback(root, to=staged) == (live, staged)
    assert resolve_version(root).name == staged
    with pytest.raises(ValueError, match="keep_versions must be >= 1"):
        small.save(root, keep_versions=0)


def test_a_current_that_is_not_ours_is_never_replaced(tmp_path, small):
    root = tmp_path / "mine"
    (root / "data").mkdir(parents=True)
    (root / "current").symlink_to("data")
    with pytest.raises(BundleError, match="not a link to a version written by sdrindex"):
        small.save(root)
    assert os.readlink(root / "current") == "data" and not inspect_bundle(root).versions
