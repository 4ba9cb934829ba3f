"""`sdrindex` never destroys what it did not write, and every failure is one line with a
documented exit code (build/rollback/versions, the update lock, argument types, OS errors)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import SMALL_SP
from sdrindex import cli
from sdrindex.bundle import inspect_bundle, resolve_version, update_lock
from sdrindex.cli import main
from sdrindex.datasets import load_mnist


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """`build` arguments for a small, fast bundle: 80 digits, a small SP, the exact index."""
    d = tmp_path_factory.mktemp("inputs")
    images, labels = load_mnist("train")
    np.save(d / "images.npy", images[:80])
    np.save(d / "labels.npy", labels[:80].astype(np.int64))
    (d / "sp.json").write_text(json.dumps(SMALL_SP))
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(images[100]).save(d / "digit.png")
    return [
        "--data", str(d / "images.npy"), "--labels", str(d / "labels.npy"),
        "--config", str(d / "sp.json"), "--backend", "exact",
    ]  # fmt: skip


def _digit(inputs: list[str]) -> str:
    return str(Path(inputs[1]).parent / "digit.png")


def _build(out: Path, inputs: list[str], *extra: str) -> int:
    return main(["build", "--out", str(out), *inputs, *extra])


# ============================================================================ build --out


def test_build_refuses_a_folder_that_is_not_a_bundle(tmp_path, inputs, capsys):
    """Today every v-* and .tmp-* folder under --out is deleted (`v-keep/` vanished)."""
    out = tmp_path / "mine"
    (out / "v-keep").mkdir(parents=True)
    (out / "v-keep" / "data.txt").write_text("precious")
    (out / ".tmp-x").mkdir()
    assert _build(out, inputs) == cli.EXIT_BUNDLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sdrindex: error: {out}: not empty")
    assert "give a new or empty folder with --out" in err
    assert (out / "v-keep" / "data.txt").read_text() == "precious" and (out / ".tmp-x").is_dir()
    assert sorted(p.name for p in out.iterdir()) == [".tmp-x", "v-keep"]
    (out / "current").symlink_to("v-keep")  # not a link of ours: --force does not replace it
    assert _build(out, inputs, "--force") == cli.EXIT_BUNDLE
    assert os.readlink(out / "current") == "v-keep"


def test_rebuild_needs_force_keeps_the_old_version_and_rolls_back(tmp_path, inputs, capsys):
    """Today a rebuild replaces the bundle without asking and deletes its previous version."""
    out = tmp_path / "bd"
    assert _build(out, inputs) == 0
    first = resolve_version(out).name
    (out / "v-keep").mkdir()  # someone's folder inside the bundle directory
    capsys.readouterr()
    assert _build(out, inputs) == cli.EXIT_BUNDLE
    err = capsys.readouterr().err
    assert f"{out}: already holds a bundle (live: {first})" in err and "--force" in err
    assert resolve_version(out).name == first and len(inspect_bundle(out).versions) == 1

    assert _build(out, inputs, "--force") == 0
    second = resolve_version(out).name
    assert second != first
    assert sorted(inspect_bundle(out).versions) == sorted([first, second])
    assert (out / "v-keep").is_dir()

    capsys.readouterr()
    assert main(["versions", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"* {second}") and lines[1].startswith(f"  {first}")
    assert main(["rollback", str(out)]) == 0
    assert f"{first} is live now (was {second})" in capsys.readouterr().out
    assert resolve_version(out).name == first
    assert main(["rollback", str(out), "--to", second]) == 0
    assert resolve_version(out).name == second
    capsys.readouterr()
    assert main(["info", str(out), "--no-verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["live"]) for v in info["bundle_versions"]] == [
        (second, True),
        (first, False),
    ]
    assert main(["rollback", str(out), "--to", "v-keep"]) == cli.EXIT_BUNDLE
    assert "no version 'v-keep' written by sdrindex" in capsys.readouterr().err


def test_build_takes_the_update_lock(tmp_path, inputs, capsys):
    """Today `build` saves without the lock that `add` and the service's writes hold."""
    out = tmp_path / "bd"
    out.mkdir()
    with update_lock(out):  # as a concurrent `add` or POST /v1/items would
        code = _build(out, inputs, "--lock-timeout", "0.2")
    assert code == cli.EXIT_LOCKED
    err = capsys.readouterr().err
    assert f"{out / '.update.lock'}: held by another writer" in err
    assert "waiting for the update lock" in err
    assert not inspect_bundle(out).versions  # nothing written
    assert _build(out, inputs) == 0  # once free, the same build goes through


# ============================================================================ arguments


@pytest.mark.parametrize(
    "argv, message",
    [
        (["build", "--out", "x", "--limit", "-5"], "argument --limit: must be >= 1, got -5"),
        (["build", "--out", "x", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
        (["build", "--out", "x", "--epochs", "0"], "argument --epochs: must be >= 1"),
        (["build", "--out", "x", "--threshold", "300"], "must be 'mean' or in 1..255"),
        (["figure", "--out", "f.png", "--limit", "-1"], "argument --limit: must be >= 1"),
        (["figure", "--out", "f.png", "--n", "0"], "argument --n: must be in 1..10000"),
        (["query", "b", "i.png", "-k", "0"], "argument -k: must be in 1..10000, got 0"),
        (["add", "b", "i.png", "--label", str(2**63)], "argument --label: must be in 0.."),
        (["add", "b", "i.png", "--label", "-1"], "argument --label: must be in 0.."),
        (["evaluate", "b", "--limit", "-5"], "argument --limit: must be >= 1"),
        (["evaluate", "b", "--mp-limit", "-1"], "argument --mp-limit: must be >= 0"),
        (["add", "b", "i.png", "--lock-timeout", "-1"], "must be a number of seconds >= 0"),
        (["fetch-mnist", "--dir", "d", "--timeout", "0"], "argument --timeout: must be > 0"),
        (["query", "b", "i.png", "--figure", "/nonexistent-dir/m.png"], "/nonexistent-dir does"),
    ],
)
def test_bad_numbers_and_paths_are_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    """Today `--limit -5` silently drops five images, a missing --figure folder ends in a
    traceback after the whole query has run."""
    monkeypatch.chdir(tmp_path)  # the relative paths above, should a command run after all
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


# ============================================================================ errors


def test_a_full_disk_during_add_is_exit_5_and_one_line(tmp_path, inputs, capsys, monkeypatch):
    out = tmp_path / "bd"
    assert _build(out, inputs) == 0
    before = resolve_version(out)
    real_save = np.save

    def full(file, *args, **kwargs):
        if str(file).endswith("sdrs.npy"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_save(file, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    capsys.readouterr()
    assert main(["add", str(out), _digit(inputs), "--label", "3"]) == cli.EXIT_SYSTEM
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sdrs.npy: no space left" in err and "free some space" in err
    assert resolve_version(out) == before


def test_permission_denied_is_exit_5_naming_the_file(tmp_path, capsys, monkeypatch):
    """Today an OSError from writing the figure ends in a traceback."""
    from sdrindex.evaluate import plots
    from sdrindex.sp import SpatialPooler

    sp = SpatialPooler.from_nupic_params(SMALL_SP)
    sp.fit(np.zeros((2, 784), np.uint8))
    sp.save(tmp_path / "sp.npz")
    target = tmp_path / "f.png"

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(target))

    monkeypatch.setattr(plots, "comparison_figure", denied)
    argv = ["figure", "--out", str(target), "--load-sp", str(tmp_path / "sp.npz"), "--n", "2"]
    assert main(argv) == cli.EXIT_SYSTEM
    err = capsys.readouterr().err.splitlines()[-1] + "\n"  # after the progress line
    assert err == (
        f"sdrindex: error: {target}: permission denied; check its permissions and its "
        f"folder's (ls -ld {tmp_path})\n"
    )


def test_exit_codes_by_kind(tmp_path, capsys, monkeypatch):
    assert main(["info", str(tmp_path / "nothing")]) == cli.EXIT_BUNDLE
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    assert main(["build", "--out", str(tmp_path / "b"), "--data", str(junk)]) == cli.EXIT_DATA
    assert not (tmp_path / "b").exists()
    capsys.readouterr()

    def bug(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_info", bug)
    monkeypatch.setattr(cli, "_add_info", _info_with(bug))
    assert main(["info", "x"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("sdrindex: internal error: RuntimeError: boom") and err.count("\n") == 1
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "info", "x"])


def _info_with(func):
    def add(sub):
        sub.add_parser("info").add_argument("dir")
        sub.choices["info"].set_defaults(func=func)

    return add


def test_help_documents_the_exit_codes_and_errors_have_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run(
        [sys.executable, "-m", "sdrindex.cli", "--help"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0
    for code in cli.EXIT_CODES:
        assert f"\n  {code:<4} " in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "sdrindex.cli", "rollback", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == cli.EXIT_BUNDLE
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_python_m_serve_uses_the_cli_exit_codes(tmp_path):
    """``python -m sdr_service.serve`` ends like ``sdrindex serve``: one line, the same codes."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sdr_service.serve", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    bad_port = run("--port", "70000")
    assert bad_port.returncode == 2, bad_port.stderr
    assert "--port must be in 0..65535" in bad_port.stderr
    missing = run("--no-build", "--bundle", str(tmp_path / "nothing"))
    assert missing.returncode == 4, missing.stderr  # a bundle problem, not a usage error
    assert missing.stderr.count("\n") == 1 and "sdrindex build --out" in missing.stderr
