"""Test helpers: small bundles built through the pipeline, and a real server in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: A small, fast SP over 28x28 digits (16x16 columns, 12 active) for the tests.
SMALL_SP = {
    "inputDimensions": [28, 28],
    "columnDimensions": [16, 16],
    "potentialRadius": 5,
    "potentialPct": 0.5,
    "globalInhibition": True,
    "numActiveColumnsPerInhArea": 12,
    "boostStrength": 1.0,
    "seed": 7,
}


def build_small_bundle(
    out: str | Path, n: int = 1500, decoder: bool = True, backend: str = "exact"
) -> Path:
    """A bundle of the first ``n`` MNIST training digits (the default SP, one epoch, pixel >= 128).

    Built by :func:`sdrindex.pipeline.build_bundle`. With ``decoder``, it also stores the
    back-projection calibration and a Ridge decoder, so every reconstruction method is
    available. Reused when ``out`` already holds one.
    """
    from sdrindex.images import load_source
    from sdrindex.pipeline import build_bundle
    from sdrindex.sp import preprocess_for, sp_from_config, threshold_for

    out = Path(out)
    if (out / "current").exists():
        return out
    data = load_source(None, None, n)
    bundle = build_bundle(
        data.images,
        data.labels,
        sp=sp_from_config(None),  # the default preset, with its encoder
        threshold=threshold_for(None),
        preprocess=preprocess_for(None),
        backend=backend,
        decoders=["calibration", "ridge"] if decoder else None,
        dataset={"source": "mnist", "description": f"MNIST train, first {n}"},
    )
    # Test processes running at once may build the same bundle: the first rename wins.
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    bundle.save(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def copy_bundle(src: str | Path, dst: str | Path) -> Path:
    """A private copy of a bundle directory (for tests that write)."""
    dst = Path(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def without_decoder(src: str | Path, dst: str | Path) -> Path:
    """A copy of a bundle with no decoder arrays at all."""
    from sdrindex.bundle import Bundle

    b = Bundle.load(src)
    b.decoder = None
    b.table.images = np.asarray(b.table.images)
    b.save(dst)
    return Path(dst)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m sdr_service.serve`` on 127.0.0.1 in a subprocess; a context manager.

    ``start()`` returns once every worker answered ``/readyz`` with 200 (told apart by
    the pid it reports). ``stop()`` ends the process group it started, and only that.
    """

    def __init__(
        self,
        bundle: str | Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log: str | Path | None = None,
        timeout: float = 120.0,
        args: list[str] | None = None,
    ) -> None:
        self.bundle = Path(bundle)
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.log = Path(log) if log else None
        self.timeout = timeout
        self.args = list(args or [])  # more `serve` options (e.g. --ray ADDRESS)
        self.proc: subprocess.Popen | None = None
        self.worker_pids: set[int] = set()
        self.ready_seconds: float | None = None

    def start(self) -> ServerProcess:

        cmd = [
            sys.executable,
            "-m",
            "sdr_service.serve",
            "--bundle",
            str(self.bundle),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-build",
            "--log-level",
            "warning",
            *self.args,
        ]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + self.timeout
        while len(self.worker_pids) < self.workers:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server was not ready in {self.timeout} s: {self._tail()}")
            self.worker_pids |= readyz_pids(self.url, tries=4 * self.workers, ready_only=True)
            if len(self.worker_pids) < self.workers:
                time.sleep(0.05)
        self.ready_seconds = time.perf_counter() - t0
        return self

    def _tail(self) -> str:
        if self.log and self.log.exists():
            return self.log.read_text(errors="replace")[-3000:]
        return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def readyz_pids(url: str, tries: int = 40, ready_only: bool = False) -> set[int]:
    """The worker pids seen answering /readyz over ``tries`` fresh connections.

    The connections are made several at a time: an idle worker tends to win every accept
    on its own, so sequential connections may never reach the others.
    """
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def ask(_: int) -> int | None:
        try:
            r = httpx.get(url + "/readyz", timeout=5, headers={"Connection": "close"})
        except httpx.HTTPError:
            return None
        if ready_only and r.status_code != 200:
            return None
        return json.loads(r.content)["pid"]

    with ThreadPoolExecutor(min(tries, 16)) as pool:
        return {pid for pid in pool.map(ask, range(tries)) if pid is not None}
