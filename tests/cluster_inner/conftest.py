"""Fixtures of the tests that run INSIDE the namespace cluster (see ``tests/cluster_harness.py``).

These files are named ``inner_*.py`` so that a normal pytest run does not collect them:
``tests/test_cluster_ray.py`` starts the cluster and runs them there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

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
