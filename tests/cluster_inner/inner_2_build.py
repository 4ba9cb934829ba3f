"""The sharded build on the cluster: Ray tasks, byte-identical shards, a worker killed."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from cluster_common import (
    N_ITEMS,
    N_SHARDS,
    alive,
    build_on_cluster,
    processes,
    replay,
    tree_bytes,
)


def _same_as_undisturbed(root, rec, scratch) -> None:
    """Each shard version the cluster wrote equals its job run again here, byte for byte."""
    assert len(rec.jobs) == N_SHARDS
    for job, result in zip(rec.jobs, rec.results, strict=True):
        assert Path(result.version).parent.parent.parent == Path(root)
        built = tree_bytes(Path(result.version))
        again = replay(job, result, scratch)
        assert Path(again.version).name == Path(result.version).name
        rebuilt = tree_bytes(Path(again.version))
        assert len(built) >= 4 and built.keys() == rebuilt.keys(), (sorted(built), sorted(rebuilt))
        for rel in built:
            assert built[rel] == rebuilt[rel], f"shard {job.shard}: {rel} differs"


def test_ray_build_writes_every_shard_as_an_undisturbed_job_would(built, tmp_path) -> None:
    from sdrindex.cluster.layout import ShardedLayout

    root, rec = built
    layout = ShardedLayout.load(root, verify=True)
    assert layout.n_shards == N_SHARDS
    assert int(layout.manifest["dataset"]["n_items"]) == N_ITEMS
    _same_as_undisturbed(root, rec, tmp_path / "again")


def test_worker_killed_mid_build_is_retried_and_identical(address, ray_client, tmp_path) -> None:
    from sdrindex.cluster.layout import ShardedLayout

    from sdrindex.cluster.ray_build import ray_runner

    root = tmp_path / "killed"
    killed: list[int] = []
    done: dict = {}

    def build() -> None:
        try:
            done["rec"] = build_on_cluster(root, address, ray_runner(address, max_retries=3))[1]
        except BaseException as exc:  # noqa: BLE001 - reported below
            done["error"] = exc

    t = threading.Thread(target=build)
    t.start()
    deadline = time.monotonic() + 60
    while not killed and t.is_alive() and time.monotonic() < deadline:
        for pid in processes("ray::_run_job"):
            os.kill(pid, signal.SIGKILL)  # mid-job: the task is running in it
            killed.append(pid)
            break
        time.sleep(0.01)
    t.join(120)
    assert not t.is_alive(), "the build did not finish within 120 s of the kill"
    assert "error" not in done, f"the build failed after a worker was killed: {done['error']!r}"
    assert killed, "no worker was seen running a shard's job: nothing was killed"
    assert not alive(killed[0])
    layout = ShardedLayout.load(root, verify=True)
    assert int(layout.manifest["dataset"]["n_items"]) == N_ITEMS
    _same_as_undisturbed(root, done["rec"], tmp_path / "again")
