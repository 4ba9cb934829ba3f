"""Helpers of the tests that run inside the namespace cluster (``inner_*.py``, conftest)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from helpers import SMALL_SP

N_ITEMS = 1200
N_SHARDS = 2


class Recorder:
    """A ``run_jobs`` that passes the jobs on to another and keeps them and their results."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.jobs: list = []
        self.results: list = []

    def __call__(self, fn, jobs, progress=None):
        self.jobs = list(jobs)
        self.results = self.inner(fn, jobs, progress)
        return self.results


def build_on_cluster(out: Path, address: str, run_jobs=None) -> tuple[Path, Recorder]:
    """The 2-shard test bundle built with ``ray_runner`` (or ``run_jobs``); its jobs."""
    from sdrindex.cluster.build import build_sharded

    from sdrindex.cluster.ray_build import ray_runner
    from sdrindex.sp import SpatialPooler

    rec = Recorder(run_jobs or ray_runner(address))
    build_sharded(
        None,
        out,
        N_SHARDS,
        sp=SpatialPooler.from_nupic_params(SMALL_SP),
        limit=N_ITEMS,
        learn_limit=300,
        threshold=128,
        backend="exact",
        run_jobs=rec,
        progress=lambda result: None,
    )
    return out, rec


def replay(job, result, root: Path):
    """The job run again in this process into ``root`` (an undisturbed build of that shard).

    The build's staging ``sp.npz`` is gone once the build ends; the shard holds a byte
    copy of it.
    """
    from sdrindex.cluster.build import build_shard

    sp_file = str(Path(result.version) / "sp.npz")
    return build_shard(dataclasses.replace(job, root=str(root), sp_file=sp_file))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def processes(prefix: str) -> list[int]:
    """Pids whose command line starts with ``prefix`` (Ray titles a busy worker ``ray::NAME``).

    The cluster's PID namespace has its own /proc: only its processes are seen.
    """
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(prefix):
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
