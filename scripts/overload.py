#!/usr/bin/env python
"""Overload run of the sdrindex service: far more concurrent ~2 MiB uploads than it takes.

Starts ``sdrindex serve`` (``python -m sdr_service.serve``) on 127.0.0.1 with ``--workers``
workers over a bundle (``--bundle``, else a small one built for the purpose under
``--work``), then fires ``--requests`` multipart PNG uploads of about ``--upload-mib`` MiB
each, ``--concurrency`` at a time, at ``POST /v1/reconstruct``. Throughout, it asks
``/readyz`` on a fresh connection every 100 ms and samples every worker's RSS
(``/proc/<pid>/status``) every 20 ms. It prints the status-code histogram (only 200, 4xx
and 503 are acceptable; a reset connection or a timeout counts against it), whether the
service answered ready throughout, and each worker's peak RSS against the bound the
settings imply. Loopback only; bounded in count (``--requests``) and time (``--time-limit``).

Example (the figures in service/README.md)::

    .venv/bin/python scripts/overload.py --workers 2 --requests 600 --concurrency 300

Exit status 0 when the run met all three conditions, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the upload


def upload_body(size: int, seed: int = 0) -> tuple[str, bytes]:
    """A multipart body (content type, bytes) of at most ``size`` bytes: one PNG digit.

    A bright stroke on a background of faint noise (below the binarisation threshold), so
    that the PNG does not compress and the picture still holds one digit.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    boundary = "overload-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    want = size - len(head) - len(tail)
    side = int((want / 0.7) ** 0.5)
    for _ in range(8):
        img = rng.integers(0, 48, (side, side), dtype=np.uint8)
        img[side // 5 : 4 * side // 5, 9 * side // 20 : 11 * side // 20] = 255
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG", compress_level=1)
        png = buf.getvalue()
        if len(png) <= want and len(png) > 0.97 * want:
            break
        side = int(side * (0.995 * want / len(png)) ** 0.5)
    return f"multipart/form-data; boundary={boundary}", head + png + tail


# --------------------------------------------------------------------------- raw HTTP/1.1


async def _http(
    host: str, port: int, method: str, path: str, body: bytes = b"", ctype: str = ""
) -> tuple[int, bytes]:
    """One request on a fresh connection -> (status, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        if method == "POST":
            head.append(f"Content-Length: {len(body)}")
        if ctype:
            head.append(f"Content-Type: {ctype}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed without an answer")
        status = int(status_line.split()[1])
        length = None
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        data = await (reader.readexactly(length) if length is not None else reader.read())
        return status, data
    finally:
        writer.close()


@dataclass
class Report:
    """What an overload run saw."""

    statuses: Counter = field(default_factory=Counter)  # status code, or an error's name
    ready_polls: int = 0
    not_ready: int = 0
    slowest_ready_s: float = 0.0
    rss_peak_mib: dict[int, float] = field(default_factory=dict)
    rss_idle_mib: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def unexpected(self) -> dict:
        """Outcomes other than 200, a 4xx or 503."""
        ok = lambda s: s == 200 or s == 503 or (isinstance(s, int) and 400 <= s < 500)  # noqa: E731
        return {s: n for s, n in self.statuses.items() if not ok(s)}


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _sample_rss(pids: set[int], report: Report, stop: threading.Event) -> None:
    while not stop.is_set():
        for pid in pids:
            rss = _rss_mib(pid)
            if rss is not None:
                report.rss_peak_mib[pid] = max(report.rss_peak_mib.get(pid, 0.0), rss)
        stop.wait(0.02)


async def _poll_ready(host: str, port: int, report: Report, stop: asyncio.Event) -> None:
    """Poll /readyz every 0.1 s from the start of the run to after its last answer."""
    while True:
        last = stop.is_set()  # one more poll once the run is over
        t0 = time.perf_counter()
        try:
            status, _ = await asyncio.wait_for(_http(host, port, "GET", "/readyz"), 2.0)
        except (TimeoutError, OSError, ValueError):
            status = 0
        report.slowest_ready_s = max(report.slowest_ready_s, time.perf_counter() - t0)
        report.ready_polls += 1
        report.not_ready += status != 200
        if last:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


async def _drive(
    url: str, body: tuple[str, bytes], requests: int, concurrency: int, time_limit: float
) -> Report:
    host, port = url.removeprefix("http://").split(":")
    report = Report()
    stop = asyncio.Event()
    poller = asyncio.create_task(_poll_ready(host, int(port), report, stop))
    ctype, data = body
    todo = iter(range(requests))
    deadline = time.monotonic() + time_limit

    async def client() -> None:
        for _ in todo:
            left = deadline - time.monotonic()
            if left <= 0:
                report.statuses["not sent (time limit)"] += 1
                continue
            try:
                status, _ = await asyncio.wait_for(
                    _http(host, int(port), "POST", "/v1/reconstruct", data, ctype), left
                )
                report.statuses[status] += 1
            except TimeoutError:
                report.statuses["timeout"] += 1
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
                report.statuses[type(exc).__name__] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    report.seconds = time.perf_counter() - t0
    stop.set()
    await poller
    return report


def run(
    url: str,
    body: tuple[str, bytes],
    requests: int,
    concurrency: int,
    time_limit: float,
    pids: set[int],
) -> Report:
    """Fire ``requests`` uploads of ``body`` at ``url``, ``concurrency`` at a time.

    Polls ``/readyz`` and samples the RSS of ``pids`` meanwhile; bounded by ``time_limit``.
    """
    idle = {pid: _rss_mib(pid) or 0.0 for pid in pids}
    stop = threading.Event()
    holder = Report()
    sampler = threading.Thread(target=_sample_rss, args=(pids, holder, stop), daemon=True)
    sampler.start()
    try:
        report = asyncio.run(_drive(url, body, requests, concurrency, time_limit))
    finally:
        stop.set()
        sampler.join()
    report.rss_idle_mib = idle
    report.rss_peak_mib = holder.rss_peak_mib
    return report


def rejected_count(url: str) -> int:
    """``sdrindex_requests_rejected_total{reason="overload"}`` from ``/metrics``."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # noqa: S310 (loopback)
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith('sdrindex_requests_rejected_total{reason="overload"}'):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# --------------------------------------------------------------------------- the server


def _worker_pids(url: str, workers: int, timeout: float) -> set[int]:
    """Poll ``/readyz`` (many connections at once: one worker tends to win every accept)
    until ``workers`` distinct pids answered 200."""
    host, port = url.removeprefix("http://").split(":")

    async def ask() -> int | None:
        try:
            status, data = await asyncio.wait_for(_http(host, int(port), "GET", "/readyz"), 5)
        except (TimeoutError, OSError, ValueError):
            return None
        return json.loads(data)["pid"] if status == 200 else None

    async def poll() -> set[int]:
        pids: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(pids) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers not ready in {timeout} s (saw {pids})")
            got = await asyncio.gather(*(ask() for _ in range(8 * workers)))
            pids |= {p for p in got if p is not None}
            await asyncio.sleep(0.1)
        return pids

    return asyncio.run(poll())


def start_server(
    bundle: Path, workers: int, env: dict[str, str], log: Path, server: str = "serve"
) -> tuple[subprocess.Popen, str]:
    """The service on a free loopback port, in its own process group.

    ``server="serve"``: ``python -m sdr_service.serve`` (as in production).
    ``server="uvicorn"``: uvicorn's own command line over the same app factory, with a
    120 s worker health check: uvicorn's supervisor kills a worker that has not answered
    its ping within 5 s, and on a machine loaded enough for a worker to take longer than
    that to import, ``serve``'s workers are killed and restarted over and over.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if server == "serve":
        cmd = [sys.executable, "-m", "sdr_service.serve", "--bundle", str(bundle), *where]
        cmd += ["--no-build", "--log-level", "info"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "sdr_service.app:create_app"]
        cmd += [*where, "--timeout-worker-healthcheck", "120", "--log-level", "info"]
        cmd += ["--no-access-log"]  # as serve
        env = {"SDRINDEX_BUNDLE": str(Path(bundle).resolve()), **env}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=out, stderr=out, start_new_session=True
        )
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    """End the process group :func:`start_server` started, and only that."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _small_bundle(work: Path) -> Path:
    """A bundle of 2,000 MNIST digits (exact index) for the run, reused when present."""
    from sdrindex.images import load_source
    from sdrindex.pipeline import build_bundle
    from sdrindex.sp import preprocess_for, sp_from_config, threshold_for

    out = work / "bundle"
    if not (out / "current").exists():
        data = load_source(None, None, 2000)
        bundle = build_bundle(
            data.images,
            data.labels,
            sp=sp_from_config(None),
            threshold=threshold_for(None),
            preprocess=preprocess_for(None),
            backend="exact",
            dataset={"source": "mnist", "description": "MNIST train, first 2000"},
        )
        bundle.save(out)
    return out


# --------------------------------------------------------------------------- memory


#: What uvicorn may hold of a request's body that the app has not taken (a rejected
#: request's included, until its connection ends): it stops reading the connection above
#: 64 KiB (HIGH_WATER_LIMIT), and asyncio hands it up to 256 KiB per read.
UVICORN_BUFFER = 64 * 1024 + 256 * 1024


def _vm(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _measure_decode(size: int) -> None:
    """Print the peak RSS growth (MiB) of parsing and decoding one upload, in this process."""
    from sdr_service.inputs import decode_upload, parse_multipart
    from sdr_service.settings import Settings

    limit = Settings().max_image_pixels
    for body in (upload_body(30_000)[1], upload_body(size)[1]):  # the first warms up
        before = max(_vm("VmRSS"), _vm("VmHWM"))
        part = parse_multipart(body, "overload-boundary")[0]
        try:
            decode_upload(part.data, limit)
        except Exception:  # noqa: BLE001 (an upload refused is a measurement too)
            pass
        del part
    print(max(0.0, _vm("VmHWM") - before))


def decode_working_set(size: int) -> float:
    """The peak memory (MiB) one upload of ``size`` bytes takes while it is decoded."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure-decode", str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def warm_up(url: str, workers: int) -> None:
    """A few small uploads over fresh connections, so that each worker's idle RSS includes
    what its first requests build (reconstructors, Pillow's plugins)."""
    host, port = url.removeprefix("http://").split(":")
    ctype, data = upload_body(30_000)

    async def go() -> None:
        for _ in range(3):
            await asyncio.gather(
                *(
                    _http(host, int(port), "POST", "/v1/reconstruct", data, ctype)
                    for _ in range(4 * workers)
                )
            )

    asyncio.run(go())


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the overload test and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, help="bundle to serve (default: a small one)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sdrindex-overload")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--concurrency", type=int, default=300)
    p.add_argument("--upload-mib", type=float, default=2.0)
    p.add_argument("--time-limit", type=float, default=180.0)
    p.add_argument(
        "--server",
        choices=("serve", "uvicorn"),
        default="serve",
        help="sdrindex serve (default), or uvicorn's command line with a 120 s worker "
        "health check (see start_server)",
    )
    p.add_argument("--measure-decode", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure_decode:
        _measure_decode(args.measure_decode)
        return 0

    from sdr_service.settings import Settings

    args.work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or _small_bundle(args.work)
    settings = Settings()
    body = upload_body(int(args.upload_mib * MiB) - 1024)
    log = args.work / "server.log"
    env = {}
    if args.server == "uvicorn" and args.workers > 1:  # serve does this itself
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sdrindex-metrics-")
    proc, url = start_server(bundle, args.workers, env, log, args.server)
    try:
        pids = _worker_pids(url, args.workers, timeout=300)
        warm_up(url, args.workers)
        report = run(url, body, args.requests, args.concurrency, args.time_limit, pids)
        rejected = rejected_count(url)
    finally:
        stop_server(proc)
        if "PROMETHEUS_MULTIPROC_DIR" in env:
            shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    bodies = settings.in_flight_limit * settings.max_body_bytes / MiB
    decode = decode_working_set(len(body[1]))
    buffers = args.concurrency * UVICORN_BUFFER / MiB
    bound = bodies + settings.threads * decode + buffers
    print(f"server: {args.server} {url}, {args.workers} workers, bundle {bundle}, log {log}")
    print(
        f"load: {args.requests} uploads of {len(body[1]) / MiB:.2f} MiB, {args.concurrency} "
        f"at once, {report.seconds:.1f} s"
    )
    print("status codes:", dict(sorted(report.statuses.items(), key=str)))
    print(f"overload rejections counted in /metrics: {rejected}")
    print(
        f"/readyz: {report.ready_polls} polls, {report.not_ready} not ready or unanswered, "
        f"slowest {1000 * report.slowest_ready_s:.0f} ms"
    )
    print(
        f"bound per worker above idle: {settings.in_flight_limit} in flight x "
        f"{settings.max_body_bytes / MiB:.0f} MiB of bodies = {bodies:.0f} MiB, + "
        f"{settings.threads} threads x {decode:.0f} MiB decoding one upload, + "
        f"{args.concurrency} connections x 320 KiB read buffer = {buffers:.0f} MiB: "
        f"{bound:.0f} MiB"
    )
    over = False
    for pid in sorted(pids):
        idle, peak = report.rss_idle_mib.get(pid, 0.0), report.rss_peak_mib.get(pid, 0.0)
        grew = peak - idle
        over |= grew > bound
        print(
            f"worker {pid}: RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB (+{grew:.0f} MiB, "
            f"{'within' if grew <= bound else 'OVER'} the {bound:.0f} MiB bound)"
        )
    ok = not report.unexpected() and report.not_ready == 0 and not over
    print("result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
