"""``sdrindex serve --ray ADDRESS``: the HTTP service over the shard actors (a real server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from cluster_common import N_SHARDS, processes

from cluster_harness import ENV_LOGS, ENV_WORKER_START
from helpers import ServerProcess

KEY = "test-key-cluster"


@pytest.fixture(scope="module")
def served(address, sharded, tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    copy = base / "bundle"
    shutil.copytree(sharded, copy, symlinks=True)
    env = {
        "SDRINDEX_API_KEY": KEY,
        # one shard per node: a lost node's shard has nowhere else to go (each node offers
        # one slot), so it stays missing until the node is back
        "SDRINDEX_RAY_ACTOR_RESOURCES": json.dumps({"sdrindex_shard_slot": 1}),
        "SDRINDEX_RAY_TIMEOUT_S": "3",
    }
    log = Path(os.environ.get(ENV_LOGS) or base) / "server.log"
    server = ServerProcess(copy, env=env, log=log, args=["--ray", address])
    with server:
        yield server, copy


def _sdr(packed: np.ndarray, n_bits: int) -> dict:
    active = np.flatnonzero(np.unpackbits(packed, count=n_bits))
    return {"active": active.tolist(), "size": n_bits}


def _search(url: str, body: dict, k: int = 10) -> httpx.Response:
    return httpx.post(f"{url}/v1/search/batch?k={k}", json=body, timeout=30)


def test_served_search_equals_one_exact_index(served, truth) -> None:
    server, _ = served
    q = truth.queries[:40]
    body = {"queries": [{"sdr": _sdr(p, truth.n_bits)} for p in q]}
    r = _search(server.url, body)
    assert r.status_code == 200, r.text
    want_ids, want_ov = truth.index.query(q, 10)
    for row, res in enumerate(r.json()["results"]):
        assert res["ids"] == want_ids[row].tolist() and res["overlaps"] == want_ov[row].tolist()
    # pixels: encoded by the front end's SP, searched on the shards
    from cluster_common import N_ITEMS

    from sdrindex.datasets import load_mnist

    image = load_mnist("train")[0][N_ITEMS]
    r = httpx.post(f"{server.url}/v1/search?k=10", json={"pixels": image.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["ids"] == want_ids[0].tolist()


def test_readyz_lists_shards_and_items_come_from_their_owner(served, truth) -> None:
    server, _ = served
    r = httpx.get(f"{server.url}/readyz", timeout=30)
    assert r.status_code == 200, r.text
    shards = r.json()["shards"]
    assert [s["shard"] for s in shards] == list(range(N_SHARDS)) and all(s["up"] for s in shards)
    assert len({s["node_id"] for s in shards}) == N_SHARDS  # one per node
    for item in (0, 1, 777, len(truth.sdrs) - 1):
        r = httpx.get(f"{server.url}/v1/items/{item}", timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        assert np.array_equal(np.array(got["pixels"], np.uint8), truth.images[item])
        assert got["label"] == int(truth.labels[item])
        png = httpx.get(f"{server.url}/v1/items/{item}/image.png", timeout=30)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert httpx.get(f"{server.url}/v1/items/{len(truth.sdrs) + 50}", timeout=30).status_code == 404


def test_post_items_answered_after_the_owning_shard_saved(served, truth) -> None:
    from sdrindex.cluster.shardset import LocalShardSet
    from sdrindex.datasets import load_mnist

    server, copy = served
    train, labels = load_mnist("train")
    new = train[7000:7003]
    body = {
        "items": [
            {"pixels": im.tolist(), "label": int(lb)}
            for im, lb in zip(new, labels[7000:7003], strict=True)
        ]
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    n = len(truth.sdrs)
    r = httpx.post(f"{server.url}/v1/items", json=body, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert ids == [n, n + 1, n + 2]
    # acknowledged: a fresh reader of the folder finds them (the shards' saves are done)
    disk = LocalShardSet.open(copy)
    try:
        assert disk.n_items == n + 3
        assert np.array_equal(disk.rows(np.array(ids))[0], new)
    finally:
        disk.close()
    got = httpx.get(f"{server.url}/v1/items/{n + 1}", timeout=30).json()
    assert np.array_equal(np.array(got["pixels"], np.uint8), new[1])


def test_every_listener_on_loopback_with_the_service_up(served) -> None:
    """With the server, its driver, the shard actors and the workers all up."""
    from cluster_harness import non_loopback_listeners

    out = subprocess.run(["ss", "-tlnp"], capture_output=True, text=True, check=True).stdout
    port = served[0].port
    assert f"127.0.0.1:{port}" in out, out  # ss saw the service itself
    assert non_loopback_listeners(out) == [], out


def _descendants(pid: int) -> list[int]:
    """``pid``'s child processes, their children... (from /proc's parent pids)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _kill_node(ray_client) -> str:
    """SIGKILL the worker node's raylet and everything it started; the node's id."""
    node = next(
        n
        for n in ray_client.nodes()
        if n["Alive"] and "node:__internal_head__" not in n["Resources"]
    )
    flag = f"--raylet_socket_name={node['RayletSocketName']}"
    raylets = []
    for pid in processes(""):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args[0].endswith("/raylet") and flag in args:
            raylets.append(pid)
    assert len(raylets) == 1, raylets
    victims = [raylets[0], *_descendants(raylets[0])]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return node["NodeID"]


def _poll(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last[0]:
            return last[1]
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s; last: {last}")


def test_node_gone_503_naming_its_shard_until_it_is_back(served, truth, ray_client) -> None:
    server, _ = served
    q = truth.queries[:20]
    body = {"queries": [{"sdr": _sdr(p, truth.n_bits)} for p in q]}
    before = _search(server.url, body)
    assert before.status_code == 200
    shards = httpx.get(f"{server.url}/readyz", timeout=30).json()["shards"]
    node_id = _kill_node(ray_client)
    lost = [s["shard"] for s in shards if s["node_id"] == node_id]
    kept = [s["shard"] for s in shards if s["node_id"] != node_id]
    assert len(lost) == 1 and len(kept) == 1

    def refused():
        r = _search(server.url, body)
        return r.status_code == 503, r

    r = _poll(refused, 30, "no 503 after the node was killed")
    detail = r.json()["detail"]
    assert f"shard-{lost[0]:05d}" in detail and f"shard-{kept[0]:05d}" not in detail, detail
    assert r.headers.get("Retry-After")
    ready = httpx.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 503
    up = {s["shard"]: s["up"] for s in ready.json()["shards"]}
    assert up == {lost[0]: False, kept[0]: True}
    assert f"shard-{lost[0]:05d}" in ready.json()["detail"]
    # still missing a few seconds later: never a partial answer meanwhile
    time.sleep(2)
    assert _search(server.url, body).status_code == 503
    subprocess.run(
        ["bash", "-c", os.environ[ENV_WORKER_START]], check=True, timeout=60, capture_output=True
    )

    def answered():
        r = _search(server.url, body)
        return r.status_code == 200, r

    t0 = time.monotonic()
    r = _poll(answered, 120, "the shard did not answer again after its node came back")
    print(f"answered again {time.monotonic() - t0:.1f} s after the node was back")
    assert r.json() == before.json()  # the same answer as before the node was lost
    ready = httpx.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 200 and all(s["up"] for s in ready.json()["shards"])
