"""A full disk during an add, and the chaos run (a killed worker, a corrupt version, a full
disk, under load) against a real server with two workers.

The full disk is real: the bundle lives on a small tmpfs mounted for the test (root is needed
to mount one, as on this project's machines and CI; without it the tests say so and skip).
Everything listens on 127.0.0.1 only; the chaos run is bounded in time and in requests.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

from fastapi.testclient import TestClient  # noqa: E402

from helpers import build_small_bundle, copy_bundle, without_decoder  # noqa: E402
from sdr_service import Settings, create_app  # noqa: E402
from sdr_service.state import disk_full  # noqa: E402
from sdrindex.bundle import Bundle  # noqa: E402
from sdrindex.errors import BundleError  # noqa: E402

KEY = "chaos-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _load_script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "chaos.py"
    spec = importlib.util.spec_from_file_location("sdrindex_chaos_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


chaos = _load_script()


@pytest.fixture(scope="module")
def nodecoder_bundle(tmp_path_factory):
    """1,500 MNIST digits without decoder arrays: ~8.5 MB a version, small tmpfs volumes."""
    base = tmp_path_factory.getbasetemp()
    src = build_small_bundle(base / "service-small", n=1500)
    out = base / "chaos-nodecoder"
    return out if (out / "current").exists() else without_decoder(src, out)


@pytest.fixture
def small_disk(tmp_path, nodecoder_bundle):
    """A tmpfs with room for a few versions of the bundle (unmounted after the test)."""
    size = 4 * chaos.version_bytes(nodecoder_bundle) + (8 << 20)
    try:
        with chaos.tmpfs(tmp_path / "vol", size) as vol:
            yield vol
    except chaos.MountUnavailable as exc:
        pytest.skip(f"a full disk needs a small tmpfs, which cannot be mounted here: {exc}")


def make_client(root: Path) -> TestClient:
    return TestClient(create_app(Settings(bundle=root, api_key=KEY)), raise_server_exceptions=False)


def wait_ready(client: TestClient) -> None:
    chaos.poll(lambda: client.get("/readyz").status_code == 200, 120, "ready")


def new_item(bundle_root: Path, shift: int = 2) -> dict:
    img = np.roll(np.asarray(Bundle.load(bundle_root).table.images[7]), shift, axis=1)
    return {"items": [{"pixels": img.tolist(), "label": 5}]}


def assert_no_paths(text: str, *paths: Path) -> None:
    for p in paths:
        assert str(p) not in text and str(p.resolve()) not in text, text


# --------------------------------------------------------------------------- a full disk


def test_disk_full_is_recognised_through_the_library_errors():
    enospc = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise enospc
        except OSError as exc:
            raise BundleError("v-x/table/sdrs.npy: cannot write") from exc
    except BundleError as wrapped:
        assert disk_full(wrapped)
    # numpy's ndarray.tofile reports a short write without an errno
    assert disk_full(OSError("7840000 requested and 1048448 written"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(PermissionError(errno.EACCES, "Permission denied"))
    assert not disk_full(BundleError("something else"))


def test_add_on_a_full_disk_answers_507_and_keeps_the_previous_version(
    small_disk, nodecoder_bundle, tmp_path
):
    root = copy_bundle(nodecoder_bundle, small_disk / "b")
    body = new_item(root)
    with make_client(root) as c:
        wait_ready(c)
        current, listing = os.readlink(root / "current"), chaos.bundle_listing(root)
        n_items = len(Bundle.load(root).table)
        chaos.fill(small_disk, leave=chaos.version_bytes(root) // 2)  # fills mid-version
        r = c.post("/v1/items", json=body, headers=AUTH)
        assert r.status_code == 507, r.text
        detail = r.json()["detail"]
        assert "no space left" in detail and "not added" in detail and "free some space" in detail
        assert_no_paths(detail, tmp_path, small_disk)
        # the previous version is live, intact, and nothing of the failed one is left
        assert os.readlink(root / "current") == current
        assert chaos.bundle_listing(root) == listing  # no .tmp-*, no new v-*
        assert len(Bundle.load(root, verify=True).table) == n_items
        r = c.post("/v1/search?k=1", json={"pixels": body["items"][0]["pixels"]})
        assert r.status_code == 200 and c.get("/readyz").status_code == 200
        # room again: the same add goes through
        (small_disk / chaos.FILLER).unlink()
        r = c.post("/v1/items", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["ids"] == [n_items]
    assert len(Bundle.load(root, verify=True).table) == n_items + 1


def test_a_save_failing_at_the_swap_leaves_no_version_behind(
    nodecoder_bundle, tmp_path, monkeypatch
):
    """The version folder is complete but ``current`` cannot be switched (no space for the
    new link): the folder is this save's, never served, and removed."""
    import sdrindex.bundle

    root = copy_bundle(nodecoder_bundle, tmp_path / "b")
    with make_client(root) as c:
        wait_ready(c)
        current, listing = os.readlink(root / "current"), chaos.bundle_listing(root)

        def no_room(link, target):
            raise OSError(errno.ENOSPC, "No space left on device", str(link))

        monkeypatch.setattr(sdrindex.bundle, "swap_symlink", no_room)
        r = c.post("/v1/items", json=new_item(root), headers=AUTH)
        assert r.status_code == 507, r.text
        assert os.readlink(root / "current") == current
        assert chaos.bundle_listing(root) == listing


def test_add_while_the_current_version_is_corrupt_answers_503_without_paths(
    nodecoder_bundle, tmp_path
):
    root = copy_bundle(nodecoder_bundle, tmp_path / "b")
    body = new_item(root)
    with make_client(root) as c:
        wait_ready(c)
        good = os.readlink(root / "current")
        bad = "v-29991231T000000000000Z-c4a05f"
        shutil.copytree(root / good, root / bad)
        sdrs = root / bad / "table" / "sdrs.npy"
        os.truncate(sdrs, sdrs.stat().st_size // 2)
        chaos.point_current(root, bad)
        r = c.post("/v1/items", json=body, headers=AUTH)
        assert r.status_code == 503, r.text
        detail = r.json()["detail"]
        assert "not added" in detail and "does not load" in detail and "Retry-After" in r.headers
        assert_no_paths(detail, tmp_path)
        # queries keep being answered from the version that loaded
        r = c.post("/v1/reconstruct?k=1&methods=nearest", json=body["items"][0])
        assert r.status_code == 200 and r.json()["bundle_version"] == good


def test_rolling_current_back_clears_the_reload_error(nodecoder_bundle, tmp_path):
    """A corrupt version is reported while `current` names it; once `current` names the
    served version again (a rollback) /readyz and /v1/info stop reporting it."""
    root = copy_bundle(nodecoder_bundle, tmp_path / "b")
    query = {"sdr": {"active": [1, 2, 3], "size": 6241}}
    with make_client(root) as c:
        wait_ready(c)
        good = os.readlink(root / "current")
        bad = "v-29991231T000000000000Z-c4a05f"
        shutil.copytree(root / good, root / bad)
        sdrs = root / bad / "table" / "sdrs.npy"
        os.truncate(sdrs, sdrs.stat().st_size // 2)
        chaos.point_current(root, bad)
        assert c.post("/v1/search", json=query).status_code == 200
        assert bad in c.get("/readyz").json()["detail"]
        chaos.point_current(root, good)
        assert c.post("/v1/search", json=query).status_code == 200
        assert c.get("/readyz").json()["detail"] is None
        info = c.get("/v1/info").json()
        assert info["reload"] is None and info["reload_error"] is None and info["version"] == good


# --------------------------------------------------------------------------- the chaos run


def test_chaos_run(nodecoder_bundle, tmp_path):
    """A worker killed, a corrupt version, a full disk, under load: see scripts/chaos.py."""
    try:
        report = chaos.run_chaos(nodecoder_bundle, tmp_path, threads=3, max_requests=6000)
    except chaos.MountUnavailable as exc:
        pytest.skip(f"the chaos run needs a small tmpfs, which cannot be mounted here: {exc}")
    shown = json.dumps(report, indent=1, default=str)
    assert report["problems"] == [], shown
    assert report["full_add_status"] == 507 and report["after_free_add_status"] == 201, shown
    assert report["acked_items"] >= 2 and report["new_pids"], shown
    assert report["requests"] <= 6000, shown
