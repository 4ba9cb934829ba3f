"""Bundles: save/load round trip, verification, crash safety; build/add/query commands."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import SMALL_SP
from sdrindex.bundle import Bundle, resolve_version, update_lock
from sdrindex.cli import main
from sdrindex.datasets import binarize, load_mnist
from sdrindex.errors import BundleError
from sdrindex.index import SDRIndex
from sdrindex.sp import SpatialPooler
from sdrindex.table import TrainingTable


@pytest.fixture(scope="module")
def mnist_small():
    images, labels = load_mnist("train")
    return images[:400], labels[:400].astype(np.int64)


def make_bundle(images, labels, backend="exact") -> Bundle:
    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    X = binarize(images).reshape(len(images), -1)
    sp.fit(X)
    sdrs = sp.transform(X, packed=True)
    table = TrainingTable(images, sdrs, sp.n_columns, labels=labels)
    index = SDRIndex(backend).fit(sdrs, sp.n_columns)
    return Bundle(sp=sp, table=table, index=index, dataset={"source": "test"})


def snapshot(b: Bundle) -> dict:
    return {
        "n": len(b.table),
        "images": np.asarray(b.table.images).copy(),
        "sdrs": np.asarray(b.table.sdrs).copy(),
        "labels": None if b.table.labels is None else np.asarray(b.table.labels).copy(),
        "perm": b.sp.permanences_.copy(),
        "query": b.index.query(np.asarray(b.table.sdrs[:5]), 3),
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["n"] == b["n"]
    for k in ("images", "sdrs", "perm"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["query"][0], b["query"][0])
    np.testing.assert_array_equal(a["query"][1], b["query"][1])


def test_round_trip_and_manifest(tmp_path, mnist_small):
    images, labels = mnist_small
    b = make_bundle(images, labels)
    before = snapshot(b)
    b.save(tmp_path / "bd")
    loaded = Bundle.load(tmp_path / "bd")
    assert_same(before, snapshot(loaded))
    m = json.loads((resolve_version(tmp_path / "bd") / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["n_items"] == 400
    assert {"sdrindex", "numpy", "numba"} <= set(m["versions"])
    assert m["sp_params"]["columnDimensions"] == [16, 16]
    for rel, info in m["files"].items():
        assert (resolve_version(tmp_path / "bd") / rel).stat().st_size == info["size"]
    # nothing in a bundle needs pickle
    for f in resolve_version(tmp_path / "bd").rglob("*.np[yz]"):
        np.load(f, allow_pickle=False)
    # a stored item's own SDR finds it first with its full overlap
    ids, ov = loaded.index.query(np.asarray(loaded.table.sdrs[:20]), 1)
    counts = np.unpackbits(np.asarray(loaded.table.sdrs[:20]), axis=1).sum(axis=1)
    np.testing.assert_array_equal(ov[:, 0], counts)


@pytest.mark.parametrize("damage", ["missing", "flipped", "truncated", "version", "manifest"])
def test_damaged_bundle_is_refused_naming_the_file(tmp_path, mnist_small, damage):
    images, labels = mnist_small
    make_bundle(images[:100], labels[:100]).save(tmp_path / "bd")
    v = resolve_version(tmp_path / "bd")
    target = v / "table" / "sdrs.npy"
    if damage == "missing":
        target.unlink()
    elif damage == "flipped":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:-10])
    elif damage == "version":
        m = json.loads((v / "manifest.json").read_text())
        m["format_version"] = 99
        (v / "manifest.json").write_text(json.dumps(m))
        target = v / "manifest.json"
    else:
        (v / "manifest.json").write_text("{not json")
        target = v / "manifest.json"
    with pytest.raises(BundleError) as info:
        Bundle.load(tmp_path / "bd")
    assert str(target) in str(info.value) or target.name in str(info.value)


def test_damaged_part_unverified_is_a_bundle_error_naming_file_and_bundle(tmp_path, mnist_small):
    images, labels = mnist_small
    make_bundle(images[:100], labels[:100]).save(tmp_path / "bd")
    v = resolve_version(tmp_path / "bd")
    target = v / "table" / "sdrs.npy"
    # a valid .npy of the wrong shape and the right size: only the loader's check sees it
    assert np.load(target).shape == (100, 32)
    np.save(target, np.zeros((200, 16), np.uint8))
    with pytest.raises(BundleError) as info:
        Bundle.load(tmp_path / "bd", verify=False)
    message = str(info.value)
    assert message.startswith(f"{target}: holds |u1 [200, 16]")
    assert f"bundle {v}" in message and "rebuild the bundle" in message


def test_save_on_a_full_disk_is_a_bundle_error_and_keeps_the_old_version(
    tmp_path, mnist_small, monkeypatch
):
    images, labels = mnist_small
    b = make_bundle(images[:100], labels[:100])
    b.save(tmp_path / "bd")
    before = os.readlink(tmp_path / "bd" / "current")
    real_save = np.save

    def full(file, *args, **kwargs):
        if str(file).endswith("sdrs.npy"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_save(file, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(BundleError) as info:
        b.save(tmp_path / "bd")
    monkeypatch.undo()
    assert "sdrs.npy: no space left" in str(info.value) and "free some space" in str(info.value)
    assert os.readlink(tmp_path / "bd" / "current") == before
    assert not list((tmp_path / "bd").glob(".tmp-*"))
    assert len(Bundle.load(tmp_path / "bd").table) == 100


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        Bundle.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle.load(tmp_path / "empty")


def test_add_is_searchable_and_persisted(tmp_path, mnist_small):
    images, labels = mnist_small
    b = make_bundle(images[:300], labels[:300])
    b.save(tmp_path / "bd")
    ids = b.add(images[300:310], labels[300:310])
    np.testing.assert_array_equal(ids, np.arange(300, 310))
    got, ov = b.index.query(b.encode(images[300:310]), 1)
    full = np.unpackbits(b.encode(images[300:310]), axis=1).sum(axis=1)
    np.testing.assert_array_equal(ov[:, 0], full)  # found with their own full overlap
    b.save(tmp_path / "bd")
    again = Bundle.load(tmp_path / "bd")
    assert len(again.table) == 310 and len(again.index) == 310
    np.testing.assert_array_equal(np.asarray(again.table.labels[-10:]), labels[300:310])
    # the live version and the one before it (for `sdrindex rollback`) are kept
    assert len([p for p in (tmp_path / "bd").glob("v-*")]) == 2


class Boom(BaseException):
    """A crash: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("fail_at", range(1, 12))
def test_save_interrupted_at_any_write_leaves_old_or_new(
    tmp_path, mnist_small, monkeypatch, fail_at
):
    images, labels = mnist_small
    b = make_bundle(images[:200], labels[:200])
    b.save(tmp_path / "bd")
    old = snapshot(Bundle.load(tmp_path / "bd"))
    b.add(images[200:220], labels[200:220])
    new = snapshot(b)

    calls = {"n": 0}

    def counting(fn):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise Boom()
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(np, "save", counting(np.save))
    monkeypatch.setattr(np, "savez", counting(np.savez))
    monkeypatch.setattr(os, "rename", counting(os.rename))
    monkeypatch.setattr(os, "replace", counting(os.replace))
    monkeypatch.setattr(os, "symlink", counting(os.symlink))
    try:
        b.save(tmp_path / "bd")
        crashed = False
    except Boom:
        crashed = True
    monkeypatch.undo()
    after = snapshot(Bundle.load(tmp_path / "bd"))
    if after["n"] == old["n"]:
        assert_same(old, after)
        assert crashed
    else:
        assert_same(new, after)


def test_add_killed_while_writing_leaves_the_old_bundle(tmp_path, mnist_small):
    images, labels = mnist_small
    make_bundle(images[:200], labels[:200]).save(tmp_path / "bd")
    old = snapshot(Bundle.load(tmp_path / "bd"))
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(images[200 + i]).save(folder / f"{i}.png")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdrindex.cli",
            "add",
            str(tmp_path / "bd"),
            str(folder),
            "--label",
            "3",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        if any((tmp_path / "bd").glob(".tmp-*")):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.001)
    proc.wait(timeout=60)
    after = snapshot(Bundle.load(tmp_path / "bd"))
    print(f"killed while writing: {killed}")
    if killed:
        assert_same(old, after)
    else:  # it finished before we caught it writing: then it is complete
        assert after["n"] == 230


def _waiting_for_flock(pid: int) -> bool:
    """True when process ``pid`` is blocked waiting for a flock (Linux /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields and str(pid) in fields:
            return True
    return False


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_concurrent_cli_adds_wait_for_the_update_lock(tmp_path, mnist_small):
    """Two `sdrindex add` at once: each waits for the bundle's update lock (held here),
    then loads, adds and saves in turn, so neither loses the other's items."""
    images, labels = mnist_small
    make_bundle(images[:200], labels[:200]).save(tmp_path / "bd")
    before = (tmp_path / "bd" / "current").readlink()
    procs = []
    with update_lock(tmp_path / "bd"):
        for label in (3, 4):
            folder = tmp_path / f"new{label}"
            folder.mkdir()
            for i in range(10):
                Image.fromarray(images[200 + 10 * label + i]).save(folder / f"{i}.png")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sdrindex.cli", "add", str(tmp_path / "bd"),
                     str(folder), "--label", str(label)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 180
        while not all(_waiting_for_flock(p.pid) for p in procs):
            finished = [p for p in procs if p.poll() is not None]
            assert not finished, "an add ran without waiting for the update lock"
            assert time.monotonic() < deadline, "the adds never reached the update lock"
            time.sleep(0.05)  # polling an observable condition, not a stand-in for one
        assert (tmp_path / "bd" / "current").readlink() == before
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    after = Bundle.load(tmp_path / "bd")
    got = np.asarray(after.table.labels)
    assert len(after.table) == 220 and len(after.index) == 220
    assert (got[200:] == 3).sum() == 10 and (got[200:] == 4).sum() == 10


def test_cli_build_query_add(tmp_path, mnist_small, capsys):
    images, labels = mnist_small
    out = tmp_path / "bd"  # the default SP (htmcore-mnist) on 2,000 training images
    assert main(["build", "--out", str(out), "--limit", "2000", "--backend", "exact"]) == 0
    text = capsys.readouterr().out
    assert "items: 2000" in text and "sparsity" in text and "seconds:" in text
    test_images, test_labels = load_mnist("test")
    qdir = tmp_path / "q"
    qdir.mkdir()
    paths = []
    for i in range(10):
        p = qdir / f"{i}.png"
        Image.fromarray(255 - test_images[i]).resize((84, 84)).save(p)  # dark ink on white
        paths.append(str(p))
    assert (
        main(["query", str(out), *paths, "-k", "3", "--json", "--figure", str(tmp_path / "m.png")])
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in res] == paths
    assert all(len(r["matches"]) == 3 for r in res)
    for r in res:
        ov = [m["overlap"] for m in r["matches"]]
        assert ov == sorted(ov, reverse=True)
    same = sum(r["matches"][0]["label"] == int(test_labels[i]) for i, r in enumerate(res))
    assert same >= 7  # most test digits find a same-label match, even with 2,000 items
    assert (tmp_path / "m.png").stat().st_size > 0
    assert main(["add", str(out), paths[0], "--label", "7"]) == 0
    assert len(Bundle.load(out).table) == 2001


def test_cli_build_from_folder_skips_non_images(tmp_path, mnist_small, capsys):
    images, labels = mnist_small
    root = tmp_path / "digits"
    for i in range(40):
        d = root / str(int(labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(d / f"{i}.png")
    (root / "1" / "notes.txt").write_text("not an image")
    cfg = tmp_path / "sp.json"
    cfg.write_text(json.dumps(SMALL_SP))
    assert (
        main(
            [
                "build",
                "--out",
                str(tmp_path / "bd"),
                "--data",
                str(root),
                "--config",
                str(cfg),
                "--backend",
                "exact",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "items: 40 (1 files skipped)" in text
    b = Bundle.load(tmp_path / "bd")
    assert sorted(np.asarray(b.table.labels).tolist()) == sorted(labels[:40].tolist())


def test_cli_build_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    assert main(["build", "--out", str(tmp_path / "bd"), "--data", str(empty)]) == 3  # data
    assert "no readable images" in capsys.readouterr().err
    cfg = tmp_path / "bad.toml"
    cfg.write_text("columnDimensions = [8, 8]\nnotAParam = 1\n")
    assert main(["build", "--out", str(tmp_path / "bd"), "--config", str(cfg)]) == 2  # parameter
    assert "notAParam" in capsys.readouterr().err
    assert not (tmp_path / "bd").exists()
    assert main(["query", str(tmp_path / "nothing"), str(cfg)]) == 3  # the image, first


def test_query_rejects_a_non_image(tmp_path, mnist_small, capsys):
    images, labels = mnist_small
    make_bundle(images[:50], labels[:50]).save(tmp_path / "bd")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not a png")
    assert main(["query", str(tmp_path / "bd"), str(junk)]) == 3  # bad input data
    err = capsys.readouterr().err
    assert "junk.png is not an image in a supported format" in err, err
    shutil.rmtree(tmp_path / "bd")
