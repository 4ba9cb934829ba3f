"""The cluster itself: two live nodes, every listener on loopback."""

from __future__ import annotations

import subprocess

from cluster_harness import non_loopback_listeners


def test_two_nodes_alive(ray_client) -> None:
    nodes = [n for n in ray_client.nodes() if n["Alive"]]
    assert len(nodes) == 2, nodes
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    assert all(n["Resources"].get("sdrindex_shard_slot") == 1.0 for n in nodes)


def test_listeners_on_loopback_only(ray_client) -> None:
    # a task on each node first: every kind of process (workers too) is up and listening
    @ray_client.remote(num_cpus=1, scheduling_strategy="SPREAD")
    def where() -> str:
        return ray_client.get_runtime_context().get_node_id()

    assert len(set(ray_client.get([where.remote() for _ in range(4)]))) >= 1
    out = subprocess.run(["ss", "-tlnp"], capture_output=True, text=True, check=True).stdout
    listeners = out.splitlines()[1:]
    assert len(listeners) >= 4, out  # the GCS and two raylets at least: ss saw the cluster
    assert non_loopback_listeners(out) == [], out
