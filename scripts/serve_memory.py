#!/usr/bin/env python
"""Memory of ``sdrindex serve`` over a bundle: the figures the Docker limits are sized from.

Starts the server (loopback only) with ``--workers`` workers over a private copy of the
bundle, and samples every process of it (the supervisor, the workers, their helpers) every
0.2 s: RSS, PSS (a shared page counted once over the processes sharing it: the bundle's
mapped files are shared by the workers) and the private memory. Phases: idle once ready;
under ``--requests`` mixed queries (search, reconstruct); during ``--adds`` adds (each
writes a new version, which every worker then maps beside the old one for a moment).
Prints the peak of the summed PSS (what a memory cgroup charges, page cache of the bundle
aside) per phase, and the bundle's size (page cache, charged to the cgroup too but
reclaimable). Bounded in count; stops by itself::

    .venv/bin/python scripts/serve_memory.py --bundle bundles/mnist --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# chaos.py (beside this script) puts this tree's code first on sys.path and says how a
# server started from here imports it too.
from chaos import tree_env  # noqa: E402

KEY = "memory-key"


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rollup(pid: int) -> dict[str, int]:
    """RSS, PSS and private bytes of one process (``smaps_rollup``)."""
    out = {"rss": 0, "pss": 0, "private": 0}
    try:
        text = (Path("/proc") / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        kb = rest.split()[0] if rest.split() else "0"
        if key == "Rss":
            out["rss"] = int(kb) * 1024
        elif key == "Pss":
            out["pss"] = int(kb) * 1024
        elif key in ("Private_Clean", "Private_Dirty"):
            out["private"] += int(kb) * 1024
    return out


class Sampler:
    """Samples the server's process tree every 0.2 s; the peaks per phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.phase = "idle"
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            procs = {p: rollup(p) for p in tree(self.pid)}
            total = {k: sum(r[k] for r in procs.values()) for k in ("rss", "pss", "private")}
            biggest = max((r["pss"] for r in procs.values()), default=0)
            peak = self.peaks.setdefault(self.phase, {"pss": 0, "rss": 0, "max_process_pss": 0})
            peak["pss"] = max(peak["pss"], total["pss"])
            peak["rss"] = max(peak["rss"], total["rss"])
            peak["max_process_pss"] = max(peak["max_process_pss"], biggest)
            peak["processes"] = len(procs)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def drive(url: str, images: np.ndarray, requests: int, adds: int) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=120.0) as c:
        for i in range(requests):
            body = {"pixels": images[i % len(images)].tolist()}
            path = "/v1/search?k=10" if i % 2 else "/v1/reconstruct?k=10&methods=nearest"
            c.post(path, json=body).raise_for_status()
        for i in range(adds):
            img = np.roll(images[i], 1 + i, axis=1)
            body = {"items": [{"pixels": img.tolist(), "label": 1}]}
            r = c.post("/v1/items", json=body, headers={"Authorization": f"Bearer {KEY}"})
            r.raise_for_status()


def _in_mib(peak: dict[str, float]) -> dict[str, float]:
    return {k: v if k == "processes" else round(v / 2**20, 1) for k, v in peak.items()}


def main(argv: list[str] | None = None) -> int:
    from helpers import ServerProcess, copy_bundle
    from sdrindex.bundle import Bundle

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--adds", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdrindex-mem-") as work:
        root = copy_bundle(args.bundle, Path(work) / "b")  # adds write here, not in --bundle
        vdir = root / (root / "current").readlink()
        size = sum(f.stat().st_size for f in vdir.rglob("*") if f.is_file())
        images = np.asarray(Bundle.load(root, verify=False).table.images[:200])
        env = {**tree_env(), "SDRINDEX_API_KEY": KEY}
        with ServerProcess(root, workers=args.workers, env=env, timeout=900) as server:
            with Sampler(server.proc.pid) as s:
                time.sleep(2.0)  # idle figures: a few samples of the settled server
                s.phase = "queries"
                drive(server.url, images, args.requests, 0)
                s.phase = "adds"
                drive(server.url, images, 0, args.adds)
                time.sleep(1.0)
            report = {
                "workers": args.workers,
                "bundle_version_mb": round(size / 2**20, 1),
                "start_to_ready_s": round(server.ready_seconds, 2),
                **{phase: _in_mib(pk) for phase, pk in s.peaks.items()},
            }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
