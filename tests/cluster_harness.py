"""A real two-node Ray cluster on loopback only, for the cluster tests.

Ray left to itself listens on (and talks to) the machine's external address, even with
``--node-ip-address=127.0.0.1`` (``../shared/notes/ray.md``). So the cluster runs inside
private namespaces made by ``unshare``:

- a network namespace whose only interface is ``lo``: nothing can reach or be reached
  from outside, and ``ss -tlnp`` there lists every listener the cluster opened;
- a PID namespace with its own ``/proc``: ``ray stop`` and the tests' process searches see
  only this cluster's processes (``ray stop`` outside would kill every Ray process on the
  machine, other users' too), and when the namespace's first process ends the kernel
  ends everything left in it, so no Ray process outlives the session, whatever failed.

:func:`run_cluster_session` starts a head (``ray start --head``) and a worker node
(``ray start --address``), one CPU each, then runs pytest on the given inner test files
inside the namespace and returns what each inner test did (a JUnit XML report), so the
outer tests can assert on every inner test by name.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

#: The GCS port inside the namespace (private to it: no clash with anything outside).
GCS_PORT = 6390
ADDRESS = f"127.0.0.1:{GCS_PORT}"

#: Environment the inner tests read.
ENV_ADDRESS = "SDRINDEX_TEST_RAY_ADDRESS"
ENV_WORKER_START = "SDRINDEX_TEST_RAY_WORKER_START"  # the shell command that adds the worker
ENV_LOGS = "SDRINDEX_TEST_CLUSTER_LOGS"  # where inner tests keep logs (servers) for the report


@dataclass
class Session:
    """What one cluster session did."""

    returncode: int
    output: str
    seconds: float
    cluster_start_s: float | None
    results: dict[str, tuple[str, str]] = field(default_factory=dict)  # test -> (outcome, text)


def available() -> str | None:
    """Why a namespace cluster cannot run here (None when it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    if os.geteuid() != 0:
        return "needs root for unshare -n (private network namespace)"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "needs ray: pip install 'sdrindex[cluster]'"
    return None


def _script(tmp: Path, pytest_args: list[str]) -> str:
    bindir = Path(sys.executable).parent
    ray = shlex.quote(str(bindir / "ray"))
    temp = shlex.quote(str(tmp / "ray"))
    common = "--node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats"
    # Each node offers one "shard slot": a shard actor asks for one, so with the worker
    # node gone its shard has nowhere to restart until the node is back (the 503 test).
    slot = shlex.quote('{"sdrindex_shard_slot": 1}')
    head = (
        f"{ray} start --head --port={GCS_PORT} {common} --include-dashboard=false "
        f"--temp-dir={temp} --resources={slot}"
    )
    worker = f"{ray} start --address={ADDRESS} {common} --resources={slot}"
    junit = shlex.quote(str(tmp / "inner.xml"))
    args = " ".join(shlex.quote(a) for a in pytest_args)
    return f"""
set -u
ip link set lo up
# A lost node is declared dead after ~1.5 s (Ray's default: ~15 s), so the node test's
# shard comes back soon after its node does.
export RAY_health_check_period_ms=500 RAY_health_check_failure_threshold=3
export RAY_health_check_timeout_ms=500 RAY_health_check_initial_delay_ms=1000
t0=$(date +%s%N)
{head} > {tmp}/head.log 2>&1 || {{ echo "ray start --head failed:"; cat {tmp}/head.log; exit 90; }}
{worker} > {tmp}/worker.log 2>&1 ||
  {{ echo "ray start (worker) failed:"; cat {tmp}/worker.log; exit 91; }}
t1=$(date +%s%N)
echo "CLUSTER_START_MS $(( (t1 - t0) / 1000000 ))"
export {ENV_ADDRESS}={ADDRESS}
export {ENV_WORKER_START}={shlex.quote(worker)}
export {ENV_LOGS}={shlex.quote(str(tmp))}
{shlex.quote(sys.executable)} -m pytest -p no:cacheprovider -q -x --junitxml={junit} {args}
rc=$?
{ray} stop --force > /dev/null 2>&1
exit $rc
"""


def run_cluster_session(
    inner: list[str | Path], tmp: Path, timeout: float = 170.0, extra: list[str] | None = None
) -> Session:
    """Start the two-node cluster in private namespaces and run pytest on ``inner`` there.

    Parameters
    ----------
    inner : list of str or Path
        Test files to run inside the namespace.
    tmp : Path
        A directory of the caller's (Ray's temp dir, logs, the JUnit report).
    timeout : float
        Seconds for the whole session; on expiry the namespace's processes are killed.
    extra : list of str, optional
        More pytest arguments.

    Returns
    -------
    Session
        The return code, the combined output, and each inner test's outcome by name.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    script = _script(tmp, [str(p) for p in inner] + list(extra or []))
    # -p -f --mount-proc: a PID namespace with its own /proc (see the module docstring)
    cmd = ["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", script]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        # unshare's child is the namespace's init: killing the session ends all of it
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        rc, out = -9, out + f"\n[harness] the cluster session exceeded {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    start_s = None
    for line in out.splitlines():
        if line.startswith("CLUSTER_START_MS "):
            start_s = int(line.split()[1]) / 1000.0
    return Session(rc, out, seconds, start_s, _junit(tmp / "inner.xml"))


def _junit(path: Path) -> dict[str, tuple[str, str]]:
    """Each test's outcome ("passed", "failed", "error", "skipped") and message."""
    if not path.exists():
        return {}
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        outcome, text = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                text = (el.get("message") or "") + "\n" + (el.text or "")
                break
        out[name] = (outcome, text)
    return out


def non_loopback_listeners(ss_output: str) -> list[str]:
    """Lines of ``ss -tlnp`` whose local address is not on 127.0.0.0/8 (or ::1).

    Parameters
    ----------
    ss_output : str
        The output of ``ss -tlnp``.

    Returns
    -------
    list of str
        The offending lines (empty when every listener is on loopback).
    """
    bad = []
    for line in ss_output.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        local = parts[3]
        host = local.rsplit(":", 1)[0].strip("[]")
        if host.startswith("::ffff:"):
            host = host[len("::ffff:") :]
        if not (host.startswith("127.") or host == "::1"):
            bad.append(line)
    return bad
