#!/usr/bin/env python
"""Load test of the sdrindex service on this machine (loopback only; bounded in count and time).

Starts ``sdrindex serve`` (``python -m sdr_service.serve``) with N workers on 127.0.0.1, times
start to ready, then drives each scenario with ``--concurrency`` keep-alive HTTP/1.1
connections (a lean asyncio client, so that the client takes little of the CPU it shares
with the server) and prints requests/s, latency percentiles and errors:

``search``       POST /v1/search with a JSON SDR (SDRs of MNIST test digits)
``reconstruct``  POST /v1/reconstruct with a multipart PNG upload (MNIST test digits,
                 28x28; ``--png-size 280`` scales them up like a drawing on the demo page)

Example (the figures in service/README.md)::

    .venv/bin/python scripts/load_test.py --bundle bundles/mnist --workers 2 \
        --requests 20000 --concurrency 32

``--url http://127.0.0.1:PORT`` tests a service that is already running instead. Every
request counts: a non-2xx status, a broken connection or a timeout is an error. The exit
status is 0 when every scenario met its targets (``--check``) or always (default).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TARGETS = {  # scenario -> (min requests/s, max p99 ms)
    "search": (1000.0, 50.0),
    "reconstruct": (500.0, 50.0),
}


# --------------------------------------------------------------------------- raw HTTP/1.1


def _request(
    method: str, path: str, host: str, body: bytes = b"", ctype: str | None = None, close=False
) -> bytes:
    conn = "close" if close else "keep-alive"
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Connection: {conn}"]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    if ctype:
        head.append(f"Content-Type: {ctype}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


def http(url: str, method: str = "GET", body: bytes = b"", ctype: str | None = None, timeout=30):
    """One request on a new connection -> (status, body)."""
    u = urllib.parse.urlsplit(url)
    with socket.create_connection((u.hostname, u.port or 80), timeout=timeout) as s:
        path = u.path + (f"?{u.query}" if u.query else "")
        s.sendall(_request(method, path, u.netloc, body, ctype, close=True))
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    name: str
    n: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "scenario": self.name,
            "requests": self.n,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.n / self.seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p90_ms": round(float(np.percentile(lat, 90)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 2),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


async def drive(
    host: str,
    port: int,
    requests: list[bytes],
    total: int,
    concurrency: int,
    time_limit: float,
    rate: float | None,
    name: str,
) -> Result:
    res = Result(name, 0, 0.0)
    next_i = 0
    t_start = time.perf_counter()
    deadline = t_start + time_limit

    async def one_conn() -> None:
        nonlocal next_i
        reader = writer = None
        while True:
            if next_i >= total or time.perf_counter() > deadline:
                break
            i = next_i
            next_i += 1
            sched = t_start + i / rate if rate else None
            if sched is not None:
                delay = sched - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            t0 = sched if sched is not None else time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(requests[i % len(requests)])
                status, body, close = await asyncio.wait_for(_read_response(reader), 30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                res.errors += 1
                res.n += 1
                if len(res.first_errors) < 5:
                    res.first_errors.append(f"{type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            res.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
            res.n += 1
            res.statuses[status] = res.statuses.get(status, 0) + 1
            if not 200 <= status < 300:
                res.errors += 1
                if len(res.first_errors) < 5:
                    res.first_errors.append(f"{status}: {body[:200]!r}")
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(one_conn() for _ in range(concurrency)))
    res.seconds = time.perf_counter() - t_start
    return res


# --------------------------------------------------------------------------- queries


def _png(img: np.ndarray, size: int) -> bytes:
    from PIL import Image

    im = Image.fromarray(img)
    if size != img.shape[0]:
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def build_requests(base: str, scenario: str, args, images: np.ndarray) -> list[bytes]:
    u = urllib.parse.urlsplit(base)
    out = []
    if scenario == "search":
        # SDRs of test digits, from the service itself (not timed).
        for img in images[: args.n_queries]:
            body = json.dumps({"pixels": img.tolist()}).encode()
            status, resp = http(base + "/v1/reconstruct", "POST", body, "application/json")
            if status != 200:
                raise SystemExit(f"setup: /v1/reconstruct answered {status}: {resp[:300]!r}")
            sdr = json.loads(resp)["sdr"]
            q = json.dumps({"sdr": sdr}).encode()
            out.append(_request("POST", f"/v1/search?k={args.k}", u.netloc, q, "application/json"))
    else:
        boundary = "----sdrindexload"
        for img in images[: args.n_queries]:
            png = _png(img, args.png_size)
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                    f'filename="digit.png"\r\nContent-Type: image/png\r\n\r\n'
                ).encode()
                + png
                + f"\r\n--{boundary}--\r\n".encode()
            )
            out.append(
                _request(
                    "POST",
                    f"/v1/reconstruct?k={args.k}&methods={args.methods}",
                    u.netloc,
                    body,
                    f"multipart/form-data; boundary={boundary}",
                )
            )
    return out


# --------------------------------------------------------------------------- the server


def start_server(args) -> tuple[subprocess.Popen, str, float]:
    port = args.port or _free_port()
    env = dict(os.environ)
    env.pop("SDRINDEX_API_KEY", None)
    cmd = [
        sys.executable,
        "-m",
        "sdr_service.serve",
        "--bundle",
        str(args.bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--no-build",
        "--log-level",
        "warning",
    ]
    log = open(args.server_log, "wb") if args.server_log else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=log,
        stderr=log,
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    # Ready = every worker (told apart by the pid /readyz reports) answered 200. The polls go
    # several at a time: an idle worker tends to win every accept of sequential connections.
    from concurrent.futures import ThreadPoolExecutor

    def ask(_: int) -> int | None:
        try:
            status, resp = http(base + "/readyz", timeout=2)
        except OSError:
            return None
        return json.loads(resp).get("pid") if status == 200 else None

    ready_pids: set[int] = set()
    limit = time.perf_counter() + args.start_timeout
    with ThreadPoolExecutor(8) as pool:
        while len(ready_pids) < args.workers:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode} (see --server-log)")
            if time.perf_counter() > limit:
                stop_server(proc)
                raise SystemExit(f"the server was not ready after {args.start_timeout} s")
            ready_pids |= {p for p in pool.map(ask, range(4 * args.workers)) if p is not None}
            if len(ready_pids) < args.workers:
                time.sleep(0.02)
    return proc, base, time.perf_counter() - t0


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_loopback(url: str) -> tuple[str, int]:
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"--url must point at this machine (127.0.0.1, ::1), got {host!r}")
    return host, u.port or 80


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="test a running service (loopback only) instead of starting one")
    p.add_argument("--bundle", type=Path, default=Path("bundles/mnist"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=0, help="port for the started server (0: free)")
    p.add_argument("--requests", type=int, default=20000, help="per scenario (default 20000)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: send at this many requests/s (latency counted from the "
        "scheduled time); default closed loop, as fast as answered",
    )
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per scenario")
    p.add_argument("--scenarios", default="search,reconstruct")
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--methods", default="nearest", help="reconstruct scenario's methods")
    p.add_argument("--png-size", type=int, default=28, help="side of the uploaded PNGs")
    p.add_argument("--n-queries", type=int, default=200, help="distinct test digits cycled")
    p.add_argument("--warmup", type=int, default=500, help="untimed requests per scenario")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--server-log", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.time_limit <= 0:
        p.error("--requests, --concurrency and --time-limit must be positive")
    args.requests = min(args.requests, 1_000_000)

    from sdrindex.datasets import load_mnist

    images, _ = load_mnist("test")
    proc = None
    report: dict = {"workers": args.workers, "concurrency": args.concurrency, "rate": args.rate}
    try:
        if args.url:
            base = args.url.rstrip("/")
            host, port = _check_loopback(base)
        else:
            proc, base, ready_s = start_server(args)
            host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
            report["start_to_ready_s"] = round(ready_s, 2)
            print(f"server: {args.workers} workers, ready in {ready_s:.2f} s", flush=True)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        results = []
        ok = True
        for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            if name not in TARGETS:
                p.error(f"unknown scenario {name!r}; known: {', '.join(TARGETS)}")
            reqs = build_requests(base, name, args, images)
            if args.warmup:
                runner(drive(host, port, reqs, args.warmup, args.concurrency, 30, None, name))
            res = runner(
                drive(
                    host,
                    port,
                    reqs,
                    args.requests,
                    args.concurrency,
                    args.time_limit,
                    args.rate,
                    name,
                )
            )
            s = res.summary()
            min_rps, max_p99 = TARGETS[name]
            s["target"] = {"min_requests_per_s": min_rps, "max_p99_ms": max_p99}
            s["met"] = (
                s["requests_per_s"] >= min_rps
                and s["p99_ms"] <= max_p99
                and s["errors"] == 0
                and s["requests"] == args.requests
            )
            ok &= s["met"]
            results.append(s)
            print(
                f"{name:12s} {s['requests']} requests in {s['seconds']} s: "
                f"{s['requests_per_s']} req/s, p50 {s['p50_ms']} ms, p90 {s['p90_ms']} ms, "
                f"p99 {s['p99_ms']} ms, max {s['max_ms']} ms, errors {s['errors']} "
                f"(target >= {min_rps:g} req/s, p99 <= {max_p99:g} ms: "
                f"{'met' if s['met'] else 'MISSED'})",
                flush=True,
            )
            for e in res.first_errors:
                print(f"    error: {e}")
        report["results"] = results
    finally:
        if proc is not None:
            stop_server(proc)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
