"""Fixtures of the tests that run INSIDE the namespace cluster (see ``tests/cluster_harness.py``).

These files are named ``inner_*.py`` so that a normal pytest run does not collect them:
``tests/test_cluster_ray.py`` starts the cluster and runs them there.

The shared data: a 2-shard bundle of the first 1,200 MNIST digits (a small SP: 256
columns, 12 active, so overlaps tie often and the id order among ties is exercised),
built on the cluster by :func:`ray_runner`, and the truth: one exact index over the same
SDRs in global id order.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from cluster_common import N_ITEMS, build_on_cluster  # noqa: E402

from cluster_harness import ENV_ADDRESS  # noqa: E402


@pytest.fixture(scope="session")
def address() -> str:
    addr = os.environ.get(ENV_ADDRESS)
    if not addr:
        pytest.fail(f"{ENV_ADDRESS} is not set: run these through tests/test_cluster_ray.py")
    return addr


@pytest.fixture(scope="session")
def ray_client(address: str):
    from sdrindex.cluster.ray_connect import connect

    return connect(address)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, address: str, ray_client):
    """(bundle path, the recorder of its jobs): built once on the cluster."""
    return build_on_cluster(tmp_path_factory.mktemp("built") / "sharded", address)


@pytest.fixture(scope="session")
def sharded(built) -> Path:
    return built[0]


@dataclasses.dataclass
class Truth:
    sdrs: np.ndarray  # every item's packed SDR, in global id order
    images: np.ndarray
    labels: np.ndarray | None
    n_bits: int
    queries: np.ndarray  # packed query SDRs
    index: object  # one exact SDRIndex over all items


@pytest.fixture(scope="session")
def truth(sharded: Path) -> Truth:
    from sdrindex.cluster.layout import ShardedLayout
    from sdrindex.cluster.shardset import LocalShardSet

    from sdrindex.datasets import binarize, load_mnist
    from sdrindex.index import SDRIndex

    local = LocalShardSet.open(sharded)
    ids = np.arange(local.n_items, dtype=np.int64)
    images, labels, sdrs = local.rows(ids)
    local.close()
    sp = ShardedLayout.load(sharded).sp
    n_bits = int(sp.n_columns)
    train, _ = load_mnist("train")
    held_out = train[N_ITEMS : N_ITEMS + 150]
    fresh = sp.transform(binarize(held_out, 128).reshape(len(held_out), -1), packed=True)
    # stored items' own SDRs as queries too: exact duplicates, the most ties
    queries = np.concatenate([fresh, sdrs[::37]])
    index = SDRIndex("exact").fit(sdrs, n_bits)
    return Truth(sdrs, images, labels, n_bits, queries, index)
