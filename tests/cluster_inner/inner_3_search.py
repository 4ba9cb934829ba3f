"""Search on the cluster: shard actors, scatter-gather, failures (library level)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from cluster_common import N_SHARDS, alive


@pytest.fixture(scope="module")
def shardset(address, sharded):
    from sdrindex.cluster.ray_search import RayShardSet

    # each node offers one shard slot: one shard per node, whatever Ray's scheduler prefers
    slot = {"sdrindex_shard_slot": 1}
    rs = RayShardSet.connect(address, sharded, replicas=1, timeout_s=20.0, resources=slot)
    yield rs
    rs.close()


def test_sharded_search_equals_one_exact_index(shardset, truth) -> None:
    q = truth.queries
    n = len(truth.sdrs)
    assert shardset.n_shards == N_SHARDS and shardset.n_items == n
    for k in (1, 10, 50):
        want = truth.index.query(q, k)
        got = shardset.query(q, k, {})
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"ids, k={k}")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"overlaps, k={k}")
    # ties decide many places: equal overlaps in a row, broken by the smaller id
    ids, ov = shardset.query(q, 50, {})
    tied = (ov[:, 1:] == ov[:, :-1]) & (ov[:, 1:] >= 0)
    assert tied.sum() > 100 and np.all(ids[:, 1:][tied] > ids[:, :-1][tied])
    # one query at a time, and k past every item (padded with -1 as one index pads)
    for i in range(0, len(q), 40):
        got = shardset.query(q[i : i + 1], 10, {})
        want = truth.index.query(q[i : i + 1], 10)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    got = shardset.query(q[:3], n + 7, {})
    want = truth.index.query(q[:3], n + 7)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert (got[0][:, n:] == -1).all()


def test_actors_spread_over_both_nodes_and_rows_come_from_owners(shardset, truth) -> None:
    status = shardset.status()
    assert [s["shard"] for s in status] == list(range(N_SHARDS))
    assert all(s["up"] for s in status)
    assert len({s["node_id"] for s in status}) == 2, status  # one shard per node
    ids = np.array([5, 0, 1199, 2, 3, 3, 600], dtype=np.int64)
    images, labels, sdrs = shardset.rows(ids)
    assert np.array_equal(images, truth.images[ids])
    assert np.array_equal(sdrs, truth.sdrs[ids])
    assert np.array_equal(labels, truth.labels[ids])
    assert np.array_equal(shardset.column(1), truth.labels)  # each shard's own column only
    assert np.array_equal(shardset.column(2), truth.sdrs)


def test_shard_actor_killed_during_a_query_stream_no_query_fails(shardset, truth) -> None:
    q = truth.queries
    want_ids, want_ov = truth.index.query(q, 10)
    pids = shardset.actor_pids()
    victim = pids[1][0]
    failures: list[str] = []
    wrong: list[int] = []
    answered = [0]

    def stream() -> None:
        for i in range(300):
            j = i % len(q)
            try:
                ids, ov = shardset.query(q[j : j + 1], 10, {})
            except Exception as exc:  # noqa: BLE001 - counted: the test wants none
                failures.append(f"query {i}: {exc!r}")
                continue
            if not (np.array_equal(ids[0], want_ids[j]) and np.array_equal(ov[0], want_ov[j])):
                wrong.append(i)
            answered[0] += 1

    t = threading.Thread(target=stream)
    t.start()
    while answered[0] < 30 and t.is_alive():
        time.sleep(0.005)
    os.kill(victim, signal.SIGKILL)
    killed_at = answered[0]
    t.join(120)
    assert not t.is_alive(), "the query stream did not finish within 120 s"
    assert failures == [], failures[:5]
    assert wrong == []
    assert answered[0] == 300 and killed_at < 300
    assert not alive(victim)
    new = shardset.actor_pids()
    assert new[1][0] != victim and new[0] == pids[0]  # shard 1's actor restarted, alone


def test_replicas_answer_and_add_while_one_is_killed(address, sharded, truth, tmp_path) -> None:
    """A shard with two replicas loses one (no restart): queries and adds go on.

    The add goes to the owning shards' live replicas (a dead one first in turn is passed
    over once the shard's count shows it saved nothing); the items are on disk when it
    returns, and every live replica serves them.
    """
    from sdrindex.cluster.ray_search import RayShardSet
    from sdrindex.cluster.shardset import LocalShardSet
    from sdrindex.datasets import load_mnist

    copy = tmp_path / "copy"
    shutil.copytree(sharded, copy, symlinks=True)
    rs = RayShardSet.connect(address, copy, replicas=2, max_restarts=0, timeout_s=20.0)
    try:
        q = truth.queries
        want = truth.index.query(q, 10)
        pids = rs.actor_pids()
        os.kill(pids[0][0], signal.SIGKILL)  # no restart: only its replica is left
        for i in range(40):
            got = rs.query(q[i : i + 1], 10, {})
            assert np.array_equal(got[0][0], want[0][i]) and np.array_equal(got[1][0], want[1][i])
        st = rs.status()
        assert st[0]["up"] and st[0]["replicas_up"] == 1 and st[1]["replicas_up"] == 2

        n = rs.n_items
        train, labels = load_mnist("train")
        images = train[5000:5004]
        ids = rs.add(images, labels[5000:5004].astype(np.int64))
        assert ids.tolist() == [n, n + 1, n + 2, n + 3] and rs.n_items == n + 4
        on_disk = LocalShardSet.open(copy)  # durable: a fresh reader sees them
        try:
            assert on_disk.n_items == n + 4
            got_images, _, got_sdrs = on_disk.rows(ids)
            assert np.array_equal(got_images, images)
        finally:
            on_disk.close()
        for _ in range(4):  # each live replica in turn serves the new items
            found, _ = rs.query(got_sdrs, 1, {})
            assert found[:, 0].tolist() == ids.tolist()
        assert np.array_equal(rs.rows(ids)[0], images)
    finally:
        rs.close()
