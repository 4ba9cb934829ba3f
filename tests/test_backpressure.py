"""Backpressure: a worker holds at most ``SDRINDEX_MAX_IN_FLIGHT`` requests; the rest get 503.

In process (raw ASGI calls, so that requests can be held half-read), then against a real
server: a small version of ``scripts/overload.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

from helpers import ServerProcess, build_small_bundle  # noqa: E402
from sdr_service import Settings, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *(headers or [])],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }


class Call:
    """One ASGI request whose body arrives only when the test says so."""

    def __init__(self, app, method: str, path: str, body: bytes = b"", hold: bool = False):
        self.app, self.body = app, body
        self.scope = _scope(method, path, [(b"content-type", b"application/json")])
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.disconnect = False
        self.reads = 0
        self.events: list[str] = []  # "read" and "start" in the order they happened
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.answer = b""
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _receive(self) -> dict:
        self.reads += 1
        self.events.append("read")
        await self.release.wait()
        if self.disconnect:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def _send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.events.append("start")
            self.status = message["status"]
            self.headers = dict(message["headers"])
        elif message["type"] == "http.response.body":
            self.answer += message.get("body", b"")

    async def _run(self) -> None:
        await self.app(self.scope, self._receive, self._send)

    async def done(self, timeout: float = 10.0) -> Call:
        await asyncio.wait_for(self.task, timeout)
        return self


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _sample(app, name: str, labels: dict | None = None) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_beyond_the_limit_503_before_the_body_is_read(tmp_path):
    # No bundle and no lifespan: the limit acts before routing, whatever the app's state.
    app = create_app(Settings(bundle=tmp_path / "none", max_in_flight=2, threads=1))

    async def scenario() -> None:
        held = [Call(app, "POST", "/v1/search", b"{}", hold=True) for _ in range(2)]
        await _until(lambda: all(c.reads for c in held))  # both admitted, reading their body
        assert _sample(app, "sdrindex_requests_in_flight") == 2
        extra = await Call(app, "POST", "/v1/reconstruct", b"{}").done(5)
        assert extra.status == 503
        # the 503 went out before the body was read; the body was then read and dropped,
        # so the connection can close without resetting under a client still sending
        assert extra.events[0] == "start" and extra.events.count("read") == 1, extra.events
        assert extra.headers[b"retry-after"] == b"1"
        assert b"connection" not in extra.headers  # the server drains the body, no reset
        assert "overloaded" in json.loads(extra.answer)["detail"]
        # health, readiness and metrics stay answerable (their own answers, not the 503)
        live = await Call(app, "GET", "/livez").done()
        assert live.status == 200
        ready = await Call(app, "GET", "/readyz").done()
        assert b"overloaded" not in ready.answer  # /readyz's own answer (not loaded here)
        assert isinstance(json.loads(ready.answer)["status"], str)
        metrics = await Call(app, "GET", "/metrics").done()
        assert metrics.status == 200
        assert b'sdrindex_requests_rejected_total{reason="overload"} 1.0' in metrics.answer
        # the held requests end (their clients leave); the slots are free again
        for c in held:
            c.disconnect = True
            c.release.set()
        await asyncio.gather(*(c.done() for c in held))
        assert _sample(app, "sdrindex_requests_in_flight") == 0
        again = await Call(app, "POST", "/v1/search", b"{}").done()
        assert again.status != 503 or b"overloaded" not in again.answer

    asyncio.run(scenario())
    assert _sample(app, "sdrindex_requests_rejected_total", {"reason": "overload"}) == 1


def test_default_limit_follows_the_threads():
    assert Settings(threads=2).in_flight_limit == 32
    assert Settings(threads=3).in_flight_limit == 48
    assert Settings(threads=2, max_in_flight=5).in_flight_limit == 5


def test_disconnect_mid_upload_is_not_an_error(tmp_path, caplog):
    app = create_app(Settings(bundle=tmp_path / "none"))

    async def scenario() -> Call:
        c = Call(app, "POST", "/v1/search", b"{", hold=True)
        c.scope["headers"].append((b"content-length", b"100000"))
        await _until(lambda: c.reads)
        c.disconnect = True
        c.release.set()
        return await c.done()

    with caplog.at_level(logging.INFO, logger="service"):
        call = asyncio.run(scenario())
    assert call.status == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any("disconnected" in r.getMessage() for r in caplog.records)
    assert _sample(app, "sdrindex_client_disconnects_total", {"endpoint": "/v1/search"}) == 1
    counted = {
        s.labels["status"]
        for m in app.state.metrics.registry.collect()
        if m.name == "sdrindex_http_requests"
        for s in m.samples
    }
    assert counted == {"499"}


# --------------------------------------------------------------------------- real server


def _overload_module():
    spec = importlib.util.spec_from_file_location("overload", ROOT / "scripts" / "overload.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up while defined
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    return build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)


def test_small_overload_run(small_bundle, tmp_path):
    """40 concurrent ~2 MiB uploads, 1 worker, 2 in flight: 200/4xx/503 only, ready throughout."""
    overload = _overload_module()
    env = {"SDRINDEX_MAX_IN_FLIGHT": "2", "SDRINDEX_THREADS": "1"}
    with ServerProcess(small_bundle, workers=1, env=env, log=tmp_path / "server.log") as srv:
        report = overload.run(
            srv.url,
            body=overload.upload_body(2 * 1024 * 1024 - 4096),
            requests=40,
            concurrency=40,
            time_limit=60.0,
            pids=srv.worker_pids,
        )
        rejected = overload.rejected_count(srv.url)
    assert report.unexpected() == {}, report.statuses
    assert report.statuses.get(503, 0) >= 1, report.statuses  # the limit did act
    assert report.statuses.get(200, 0) >= 1, report.statuses  # and admitted work got done
    assert rejected == report.statuses[503]  # every 503 here was an overload rejection
    # polled every 0.1 s from the first upload to the last answer (a quiet machine gets
    # through the 40 in a fraction of a second): every poll answered ready
    assert report.ready_polls >= 2 and report.not_ready == 0, report
