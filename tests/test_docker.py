"""The Docker setup, tested without docker: the healthcheck against a real server, the
pinned dependencies, and what docker-compose.yml and the Dockerfile promise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

import yaml  # noqa: E402

from helpers import ServerProcess, build_small_bundle, copy_bundle  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HEALTHCHECK = REPO / "docker" / "healthcheck.py"


def healthcheck(url: str, bundle: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SDRINDEX_HEALTHCHECK_URL": url + "/readyz",
        "SDRINDEX_BUNDLE": str(bundle),
    }
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30
    )


def poll(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    return build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)


# --------------------------------------------------------------------------- healthcheck


def test_healthcheck_while_nothing_listens(tmp_path):
    from helpers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    building = tmp_path / "mnist"  # the first start builds here: no `current` yet
    r = healthcheck(url, building)
    assert r.returncode == 0 and "building" in r.stdout
    building.mkdir()
    (building / "current").symlink_to("v-1")
    r = healthcheck(url, building)  # a bundle is there, yet nothing answers: down
    assert r.returncode == 1 and "down" in r.stdout


def test_healthcheck_trips_on_a_failed_load_and_recovers(small_bundle, tmp_path):
    """A worker whose start-up load fails answers /readyz 503 "failed": unhealthy at the
    first check (not after a 30-minute start period); healthy again once it loads."""
    root = copy_bundle(small_bundle, tmp_path / "b")
    good = os.readlink(root / "current")
    bad = "v-29991231T000000000000Z-0bad00"
    shutil.copytree(root / good, root / bad)
    sdrs = root / bad / "table" / "sdrs.npy"
    os.truncate(sdrs, sdrs.stat().st_size // 2)
    os.symlink(bad, root / ".current-new")
    os.replace(root / ".current-new", root / "current")
    env = {"SDRINDEX_RETRY_BACKOFF_S": "0.5", "SDRINDEX_RETRY_BACKOFF_MAX_S": "1"}
    # Started here, not by ServerProcess.start: that waits for ready, which never comes.
    server = ServerProcess(root, workers=2, env=env)
    cmd = [sys.executable, "-m", "sdr_service.serve", "--bundle", str(root), "--host"]
    server.proc = subprocess.Popen(
        [*cmd, "127.0.0.1", "--port", str(server.port), "--workers", "2", "--no-build"],
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=REPO,
    )
    try:
        failed = poll(
            lambda: (
                (r := healthcheck(server.url, root)).returncode == 1 and "failed" in r.stdout and r
            ),
            120,
            "the healthcheck to report the failed load",
        )
        assert "could not load the bundle" in failed.stdout
        assert str(tmp_path) not in failed.stdout  # /readyz shows no paths
        os.symlink(good, root / ".current-fix")
        os.replace(root / ".current-fix", root / "current")
        poll(
            lambda: healthcheck(server.url, root).returncode == 0,
            120,
            "the healthcheck to turn healthy after the repair",
        )
    finally:
        server.stop()


# --------------------------------------------------------------------------- the files


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(text))
    assert m, text
    return float(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]


def test_compose_limits_secret_read_only_and_a_quick_healthcheck():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    svc = compose["services"]["sdrindex"]
    assert svc["read_only"] is True
    assert any(t.startswith("/tmp:") for t in svc["tmpfs"])
    mounts = {v.split(":")[1] for v in svc["volumes"]}
    assert {"/bundles", "/var/cache/numba"} <= mounts  # the only places written
    assert svc["environment"]["SDRINDEX_API_KEY_FILE"] == "/run/secrets/sdrindex_api_key"
    assert "SDRINDEX_API_KEY" not in svc["environment"]  # a variable shows in docker inspect
    assert svc["secrets"] == ["sdrindex_api_key"] and "sdrindex_api_key" in compose["secrets"]
    assert svc["mem_limit"] and float(svc["cpus"]) > 0
    hc = svc["healthcheck"]
    trips = _seconds(hc["start_period"]) + hc["retries"] * _seconds(hc["interval"])
    assert trips <= 60, f"a failed load is reported after {trips} s"
    assert "healthcheck.py" in " ".join(hc["test"])
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])  # published on loopback


def test_dockerfile_pins_its_base_and_dependencies_and_runs_as_a_user():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    assert re.search(r"pip install -c constraints\.txt", text)
    assert re.search(r"^USER sdrindex$", text, re.M)
    hc = re.search(r"^HEALTHCHECK .*--start-period=(\w+).*--retries=(\d+)", text, re.M)
    assert hc and _seconds(hc[1]) <= 30
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "constraints.txt" not in ignored and "docker" not in ignored
    assert "sdrindex_api_key.txt" in ignored  # the secret never enters the build context


def test_constraints_pin_every_runtime_dependency_exactly():
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = [ln for ln in (REPO / "constraints.txt").read_text().splitlines() if ln[:1] != "#"]
    pins = {}
    for line in lines:
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[\w.+!-]+", version), line
        pins[canonicalize_name(name)] = version
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["service"]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} breaks {req}"
        assert metadata.version(req.name) == pins[name], (
            f"{req.name}: tests run with {metadata.version(req.name)}, constraints.txt pins "
            f"{pins[name]}; run scripts/lock_deps.py"
        )
