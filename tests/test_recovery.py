"""Recovery of a worker whose bundle load fails, and answers that show no filesystem paths.

A failed reload is remembered and retried with backoff while the last good snapshot serves;
a failed start-up load is retried until ``/readyz`` turns 200 by itself. The backoff runs
on a clock the tests move by hand, so nothing here sleeps to wait for a retry.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from helpers import ServerProcess, build_small_bundle, copy_bundle  # noqa: E402
from sdr_service import Settings, create_app  # noqa: E402
from sdr_service.state import Backoff, BundleService, public_text  # noqa: E402
from sdrindex.bundle import MANIFEST, Bundle, resolve_version  # noqa: E402

SDR_QUERY = {"sdr": {"active": [1, 2, 3], "size": 6241}}


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    return build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def poll(condition, timeout: float = 60.0, what: str = "the condition"):
    """Wait for ``condition()`` to return something truthy (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def count_loads(monkeypatch, gate: threading.Event | None = None) -> list[float]:
    """Count ``Bundle.load`` calls (their times); with ``gate``, each waits for it first."""
    calls: list[float] = []
    real = Bundle.load.__func__

    def load(cls, *args, **kwargs):
        calls.append(time.monotonic())
        if gate is not None:
            assert gate.wait(30), "the test never opened the gate"
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(Bundle, "load", classmethod(load))
    return calls


def broken_new_version(root: Path):
    """Add an item as a new version of ``root``, then break its manifest.

    Returns the version's name and a function that repairs it.
    """
    b = Bundle.load(root)
    labels = None if b.table.labels is None else np.asarray(b.table.labels[:1])
    b.add(np.roll(np.asarray(b.table.images[:1]), 2, axis=2), labels)
    b.save(root)
    vdir = resolve_version(root)
    manifest = vdir / MANIFEST
    good = manifest.read_bytes()
    manifest.write_bytes(b"{ this is not json")
    return vdir.name, lambda: manifest.write_bytes(good)


def make_client(bundle, **settings) -> TestClient:
    return TestClient(
        create_app(Settings(bundle=bundle, **settings)), raise_server_exceptions=False
    )


def wait_ready(client: TestClient, timeout: float = 90.0) -> None:
    poll(lambda: client.get("/readyz").status_code == 200, timeout, "ready")


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_up_to_the_cap():
    clock = FakeClock()
    b = Backoff(1.0, 60.0, clock)
    assert b.due() and b.remaining() == 0
    delays = [b.failed() for _ in range(9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert not b.due() and b.remaining() == 60
    clock.advance(59.5)
    assert not b.due()
    clock.advance(0.5)
    assert b.due()
    for _ in range(2000):  # no overflow however long it keeps failing
        b.failed()
    assert b.remaining() == 60
    b.reset()
    assert b.due() and b.failed() == 1


# --------------------------------------------------------------------------- reload


def test_failed_reload_is_remembered_not_retried_by_every_request(
    small_bundle, tmp_path, monkeypatch
):
    """A new version that does not load costs one attempt, not one (of five) per request."""
    root = copy_bundle(small_bundle, tmp_path / "b")
    with make_client(root, retry_backoff_s=60) as c:
        wait_ready(c)
        old = c.get("/v1/info").json()["version"]
        bad, _ = broken_new_version(root)
        loads = count_loads(monkeypatch)
        t0 = time.monotonic()
        for _ in range(20):
            r = c.post("/v1/search?k=1", json=SDR_QUERY)
            assert r.status_code == 200, r.text
        elapsed = time.monotonic() - t0
        assert len(loads) == 1, f"{len(loads)} loads for 20 requests"
        assert elapsed < 10, elapsed
        info = c.get("/v1/info").json()
        assert info["version"] == old and info["bundle"]["n_items"] == 1500
        assert info["reload"]["failed_version"] == bad and info["reload"]["failures"] == 1
        assert bad in info["reload_error"] and "still serving" in info["reload_error"]
        # Ready (the previous version serves), the reload error reported.
        r = c.get("/readyz")
        assert r.status_code == 200 and bad in r.json()["detail"], r.text
        assert len(loads) == 1


def test_reload_retried_with_backoff_in_the_background(small_bundle, tmp_path, monkeypatch):
    """Retries at 1, 2, 4, 4 ... s (the clock moved by hand); one attempt per period, run in
    the background: a request meanwhile answers from the snapshot at once. Once the version
    is repaired the next retry switches to it."""
    root = copy_bundle(small_bundle, tmp_path / "b")
    clock = FakeClock()
    settings = Settings(bundle=root, retry_backoff_s=1.0, retry_backoff_max_s=4.0)
    svc = BundleService(settings, clock=clock)
    svc.start()
    assert svc.ready()
    old = svc.current()
    bad, repair = broken_new_version(root)
    gate = threading.Event()
    gate.set()
    loads = count_loads(monkeypatch, gate)
    assert svc.current() is old and len(loads) == 1  # the first attempt: by the request
    assert svc.reload_state()["failures"] == 1

    def retry_after(delay: float, failures_after: int) -> None:
        n = len(loads)
        clock.advance(delay - 0.25)  # binary fractions: the sums are exact
        for _ in range(10):
            assert svc.current() is old
        assert len(loads) == n, "retried before the backoff was over"
        gate.clear()
        clock.advance(0.25)
        assert svc.current() is old  # starts the retry, does not wait for it
        poll(lambda: len(loads) == n + 1, 10, "the background retry")
        # The retry is stuck in its load: requests still answer, from the snapshot.
        done = []
        asker = threading.Thread(target=lambda: done.append(svc.current()))
        asker.start()
        asker.join(5)
        assert done == [old], "a request waited for the background retry"
        assert "retrying now" in svc.reload_error
        gate.set()
        poll(lambda: not svc.reload_state()["retrying"], 10, "the retry's end")
        assert svc.reload_state()["failures"] == failures_after
        assert len(loads) == n + 1

    retry_after(1.0, 2)
    retry_after(2.0, 3)
    retry_after(4.0, 4)
    retry_after(4.0, 5)  # at the cap: it keeps trying, never gives up
    assert bad in svc.reload_error and "failed 5 time(s)" in svc.reload_error
    repair()
    clock.advance(4.0)
    svc.current()
    new = poll(lambda: svc.current() if svc.current().version == bad else None, 30, "the switch")
    assert new.n_items == 1501 and svc.reload_error is None and svc.reload_state() is None


# --------------------------------------------------------------------------- start-up


def _break_table(root: Path):
    """Flip bytes in a file of the live version (its checksum fails); returns the repair."""
    vdir = resolve_version(root)
    victim = max((p for p in vdir.rglob("*.npy") if p.is_file()), key=lambda p: p.stat().st_size)
    good = victim.read_bytes()
    victim.write_bytes(good[:-64] + bytes(64 * [0xA5]))
    return lambda: victim.write_bytes(good)


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_failed_startup_load_recovers_by_itself(small_bundle, tmp_path, how):
    """The first load fails (no bundle yet / a damaged file): /readyz says why with 503 and
    Retry-After, the load is retried, and /readyz turns 200 once the bundle is loadable."""
    root = tmp_path / "data" / "bundle"
    if how == "corrupt":
        repair = _break_table(copy_bundle(small_bundle, root))
    else:
        root.parent.mkdir()

        def repair():  # built elsewhere, then swapped in whole
            staging = copy_bundle(small_bundle, tmp_path / "data" / "staging")
            staging.rename(root)

    with make_client(root, retry_backoff_s=0.05, retry_backoff_max_s=0.2) as c:
        try:

            def failures() -> int:
                detail = c.get("/readyz").json()["detail"] or ""
                return int(m.group(1)) if (m := re.search(r"failed (\d+) time", detail)) else 0

            poll(lambda: failures() >= 3, 30, "three failed attempts")
            r = c.get("/readyz")
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["status"] == "failed" and "could not load the bundle" in body["detail"]
            assert int(r.headers["retry-after"]) >= 1
            r = c.post("/v1/search", json=SDR_QUERY)
            assert r.status_code == 503 and "not ready" in r.json()["detail"]
            assert r.headers.get("retry-after")
            repair()
            wait_ready(c)
            assert c.get("/readyz").json() == {
                "status": "ready",
                "detail": None,
                "pid": os.getpid(),
            }
            r = c.post("/v1/search?k=1", json=SDR_QUERY)
            assert r.status_code == 200 and len(r.json()["ids"]) == 1
        finally:
            c.app.state.service.close()


def test_workers_of_a_server_recover_from_a_broken_bundle(small_bundle, tmp_path):
    """`sdrindex serve` with 2 workers over a damaged bundle: each worker's socket answers
    503 with the reason (not a dead worker); after the repair every worker turns ready."""
    root = copy_bundle(small_bundle, tmp_path / "bundle")
    repair = _break_table(root)
    env = {"SDRINDEX_RETRY_BACKOFF_S": "0.2", "SDRINDEX_RETRY_BACKOFF_MAX_S": "0.5"}
    server = ServerProcess(root, workers=2, env=env, log=tmp_path / "server.log", timeout=240)
    started: list[BaseException | None] = []

    def start() -> None:
        try:
            server.start()
            started.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            started.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    try:

        def failed_answer():
            try:
                r = httpx.get(server.url + "/readyz", timeout=5, headers={"Connection": "close"})
            except httpx.HTTPError:
                return None
            return r if r.status_code == 503 and r.json()["status"] == "failed" else None

        r = poll(failed_answer, 180, "a 503 'failed' from /readyz")
        assert "could not load the bundle bundle" in r.json()["detail"], r.text
        assert str(tmp_path) not in r.text and int(r.headers["retry-after"]) >= 1
        repair()
        starter.join(300)
        assert started == [None], started
        assert len(server.worker_pids) == 2
        r = httpx.post(server.url + "/v1/search?k=1", json=SDR_QUERY, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        starter.join(300)
        server.stop()


# --------------------------------------------------------------------------- paths


def test_public_text_drops_absolute_paths(tmp_path):
    root = tmp_path / "bundles" / "mnist"
    msg = (
        f"{root}/v-1/manifest.json: bad; {root.resolve()}/.update.lock busy; "
        f"see {tmp_path}/elsewhere/file.npy, POST /v1/items, http://127.0.0.1:8000/readyz, "
        "multipart/form-data, image/png, 0-255 / 28"
    )
    out = public_text(msg, root)
    assert str(tmp_path) not in out and str(tmp_path.resolve()) not in out
    assert "mnist/v-1/manifest.json: bad" in out and "mnist/.update.lock busy" in out
    assert "see file.npy," in out
    for kept in ("POST /v1/items", "http://127.0.0.1:8000/readyz", "multipart/form-data"):
        assert kept in out
    assert "image/png, 0-255 / 28" in out


def _assert_no_paths(texts: dict[str, str], *paths: Path) -> None:
    needles = {str(p) for p in paths} | {str(p.resolve()) for p in paths}
    for where, text in texts.items():
        for needle in needles:
            assert needle not in text, f"{where} shows {needle}: {text[:500]}"


def test_no_absolute_paths_in_any_answer(small_bundle, tmp_path, tmp_path_factory):
    """/livez, /readyz, /v1/info, /metrics and error answers, ready or not, reloading or not."""
    root = copy_bundle(small_bundle, tmp_path / "b")
    seen: dict[str, str] = {}
    with make_client(root, retry_backoff_s=60) as c:
        wait_ready(c)

        def ask(tag: str) -> None:
            seen[f"{tag} search"] = c.post("/v1/search", json=SDR_QUERY).text  # may reload
            seen[f"{tag} bad query"] = c.post("/v1/search", json={"sdr": [1]}).text
            for path in ("/livez", "/readyz", "/v1/info", "/metrics", "/nope"):
                seen[f"{tag} GET {path}"] = c.get(path).text

        ask("ready")
        assert json.loads(seen["ready GET /v1/info"])["bundle"]["path"].startswith("b/v-")
        broken_new_version(root)
        ask("reload failed")
        assert "could not load" in json.loads(seen["reload failed GET /v1/info"])["reload_error"]
        assert "manifest.json" in json.loads(seen["reload failed GET /readyz"])["detail"]
    missing = tmp_path / "gone" / "bundle"
    broken = tmp_path / "broken"
    _break_table(copy_bundle(small_bundle, broken))
    for name, where in (("missing", missing), ("corrupt", broken)):
        with make_client(where, retry_backoff_s=60) as c:
            try:
                poll(lambda c=c: c.get("/readyz").json()["status"] == "failed", 60, "failed")
                ask(name)
                assert json.loads(seen[f"{name} GET /readyz"])["detail"]
            finally:
                c.app.state.service.close()
    _assert_no_paths(seen, tmp_path, Path(small_bundle), tmp_path_factory.getbasetemp())
