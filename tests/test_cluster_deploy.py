"""The deployment pieces of the Ray cluster (issue 11), checked without docker or Ray.

``docker compose config`` is not available on the machines the tests run on, so the
compose file's `cluster` profile is parsed here and its wiring checked: a Ray head, a Ray
worker joining it, a build on them, and the service pointed at the head over the bundle
volume they all share; the default profile stays as it was.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _flag(cmd: list[str], name: str) -> str | None:
    """The value of ``--name=V`` or ``--name V`` in a command list."""
    for i, part in enumerate(cmd):
        if part.startswith(f"--{name}="):
            return part.split("=", 1)[1]
        if part == f"--{name}" and i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def test_cluster_profile_wires_head_worker_build_and_service() -> None:
    services = _compose()["services"]
    cluster = {n: s for n, s in services.items() if "cluster" in s.get("profiles", [])}
    assert set(cluster) == {"ray-head", "ray-worker", "sdrindex-cluster-build", "sdrindex-cluster"}
    head, worker = cluster["ray-head"], cluster["ray-worker"]
    assert "--head" in head["command"]
    port = _flag(head["command"], "port")
    assert port and port.isdigit()
    head_addr = f"ray-head:{port}"
    assert _flag(worker["command"], "address") == head_addr
    assert "ray-head" in worker["depends_on"]
    for node in (head, worker):  # both nodes offer shard slots
        assert "sdrindex_shard_slot" in (_flag(node["command"], "resources") or "")
        assert "--block" in node["command"]  # the container lives as long as the node
    build = cluster["sdrindex-cluster-build"]
    build_cmd = " ".join(build["entrypoint"])
    m = re.search(r"sdrindex build --out (\S+) --shards (\d+) --ray (\S+)", build_cmd)
    assert m and m[3] == head_addr and int(m[2]) >= 2
    bundle = m[1]
    svc = cluster["sdrindex-cluster"]
    assert _flag(svc["command"], "ray") == head_addr
    assert _flag(svc["command"], "bundle") == bundle
    assert svc["environment"]["SDRINDEX_BUNDLE"] == bundle
    assert "sdrindex_shard_slot" in svc["environment"]["SDRINDEX_RAY_ACTOR_RESOURCES"]
    assert svc["depends_on"]["sdrindex-cluster-build"]["condition"] == (
        "service_completed_successfully"
    )
    # every node and the service see the bundle at the same path (the shards are files)
    mounts = {
        n: {v.split(":")[1]: v.split(":")[0] for v in s["volumes"]} for n, s in cluster.items()
    }
    root = "/" + bundle.strip("/").split("/")[0]
    assert len({m[root] for m in mounts.values()}) == 1, mounts
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])  # published on loopback
    assert head["build"]["args"]["EXTRAS"].split(",") == ["service", "cluster"]
    assert {s.get("image") for s in cluster.values()} == {head["image"]}


def test_default_profile_unchanged_by_the_cluster_one() -> None:
    services = _compose()["services"]
    default = [n for n, s in services.items() if not s.get("profiles")]
    assert default == ["sdrindex"]
    assert "--ray" not in services["sdrindex"]["command"]


def test_cluster_extra_and_dockerfile_extras() -> None:
    opt = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.replace(" ", "").startswith("ray>=2.40") for r in opt["cluster"])
    assert "sdrindex[cluster]" in opt["dev"]
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG EXTRAS=service$", text, re.M)
    assert 'pip install -c constraints.txt ".[${EXTRAS}]"' in text


def test_cluster_package_imports_without_ray() -> None:
    """``import sdrindex.cluster`` must not import ray: only the ray_* modules may."""
    import subprocess
    import sys

    code = (
        "import sys, sdrindex.cluster, sdrindex.cli\n"
        "assert 'ray' not in sys.modules, 'sdrindex.cluster imported ray'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    for path in (REPO / "sdrindex" / "cluster").glob("*.py"):
        if not path.name.startswith("ray_"):
            assert not re.search(r"^\s*(import ray|from ray)", path.read_text(), re.M), path


def _serve(args: list[str], tmp_path: Path) -> tuple[int, str]:
    """``python -m sdr_service.serve ARGS`` in a subprocess: (exit code, stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SDRINDEX_BUNDLE": str(tmp_path / "none")}
    p = subprocess.run(
        [sys.executable, "-m", "sdr_service.serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    return p.returncode, p.stderr


def test_serve_ray_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    """``serve --ray`` checks its options and the bundle before starting anything."""
    from helpers import build_small_bundle

    plain = build_small_bundle(tmp_path / "plain", n=300, decoder=False)
    rc, err = _serve(["--bundle", str(plain), "--ray", "127.0.0.1:1"], tmp_path)
    assert rc != 0 and "not one" in err and "--shards N" in err, err
    rc, err = _serve(["--bundle", str(plain), "--replicas", "2"], tmp_path)
    assert rc != 0 and "--replicas needs --ray" in err, err
    rc, err = _serve(["--bundle", str(plain), "--ray", "x:1", "--workers", "2"], tmp_path)
    assert rc != 0 and "one worker process" in err, err
    rc, err = _serve(["--bundle", str(plain), "--ray", "x:1", "--replicas", "0"], tmp_path)
    assert rc != 0 and "--replicas must be >= 1" in err, err
    assert (plain / "current").is_symlink()  # nothing written or removed


def test_missing_shard_is_a_503_naming_it_with_retry_after() -> None:
    from sdr_service.errors import from_library
    from sdrindex.errors import ShardUnavailableError

    api = from_library(ShardUnavailableError([2], "its node is gone"))
    assert api.status == 503 and "shard-00002" in api.detail
    assert api.headers.get("Retry-After") == "1"
