#!/usr/bin/env python
"""Chaos run of the sdrindex service (loopback only; bounded in time and in count).

Starts ``sdrindex serve --workers 2`` on 127.0.0.1 over a small bundle kept on a small
tmpfs, with an API key, and drives it with a mixed load from a few client threads
(``POST /v1/search``, ``POST /v1/reconstruct``, ``POST /v1/items`` with the key). Meanwhile,
one after the other:

1. **kill**: SIGKILL one worker (found among the server's child processes and checked
   against the pids ``/readyz`` reports); uvicorn's supervisor starts a new one, and the
   run waits until two workers, the new one among them, answer ``/readyz`` 200;
2. **corrupt**: a copy of the live version with a truncated array is written as a new
   version and ``current`` pointed at it (under the update lock, as a writer would); both
   workers must keep answering from the old version, saying why in ``/readyz``; then
   ``current`` is pointed back at the good version (an operator's rollback);
3. **disk full**: the tmpfs is filled until half of a version is free, and an add sent:
   it must answer 507, leave ``current`` and every file of the bundle as they were and no
   ``.tmp-*`` or new ``v-*`` behind; then the space is freed and an add succeeds.

Every answer must be a 200/201 or a clear error (a 4xx, 503 or 507 with a JSON ``detail``):
a 500, an answer without a reason, a timeout, or a broken connection is a failure, except
a broken connection (no answer at all) for a request that was in flight when the worker
was killed, i.e. sent before the killed worker was seen gone: the worker that held it is
gone, and nothing but a client-side retry can answer it. Whether an add cut that way was
saved is unknown: it is not counted as acknowledged. At the end every acknowledged item
(a 201 with ids) must be found with its pixels and label (``GET /v1/items/{id}``), and
the acknowledged ids must all differ.

Mounting the tmpfs needs root (CAP_SYS_ADMIN); the mount is removed at the end. Example::

    .venv/bin/python scripts/chaos.py --bundle-items 1500 --threads 3 --max-requests 20000

prints the answers by kind and status, the restart time of the killed worker, and the
checks; the exit status is 0 when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: This tree's code, for the script and for the server it starts (not an installed copy).
TREE = [str(ROOT), str(ROOT / "service"), str(ROOT / "tests")]
for _p in reversed(TREE):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def tree_env() -> dict[str, str]:
    """``PYTHONPATH`` making a server started from here import this tree's code."""
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(TREE[:2] + ([old] if old else []))}


KEY = "chaos-key"
FILLER = ".chaos-filler"


class MountUnavailable(RuntimeError):
    """A tmpfs cannot be mounted here (not root, or no CAP_SYS_ADMIN)."""


# --------------------------------------------------------------------------- a small disk


@contextlib.contextmanager
def tmpfs(folder: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` on ``folder`` (created) for the block; unmounted after.

    Raises
    ------
    MountUnavailable
        When the mount is refused (it needs root or CAP_SYS_ADMIN).
    """
    folder.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={int(size_bytes)},mode=0755"]
    try:
        r = subprocess.run([*cmd, "sdrindex-test", str(folder)], capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise MountUnavailable(f"no `mount` command ({exc})") from None
    if r.returncode != 0:
        raise MountUnavailable(f"cannot mount a tmpfs on {folder}: {r.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            # still busy (a process has a file open): detach now, freed when it closes
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill(folder: Path, leave: int) -> Path:
    """Write ``folder/.chaos-filler`` until only ``leave`` bytes are free there."""
    filler = folder / FILLER
    todo = max(0, free_bytes(folder) - leave)
    chunk = b"\0" * (1 << 20)
    with open(filler, "ab") as fh:
        while todo > 0:
            todo -= fh.write(chunk[: min(len(chunk), todo)])
    return filler


def version_bytes(root: Path) -> int:
    """Size of the live version of the bundle ``root`` (its files)."""
    vdir = root / os.readlink(root / "current")
    return sum(p.stat().st_size for p in vdir.rglob("*") if p.is_file())


def point_current(root: Path, version: str) -> None:
    """Point ``root/current`` at ``version`` atomically (a new link renamed over it)."""
    staged = root / f".current-chaos-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    os.symlink(version, staged)
    os.replace(staged, root / "current")


def bundle_listing(root: Path) -> set[str]:
    """What is in the bundle folder (lock files aside): versions, links, leftovers."""
    return {p.name for p in root.iterdir() if not p.name.endswith(".lock")}


# --------------------------------------------------------------------------- the load


@dataclass
class Answer:
    kind: str
    start: float
    end: float
    status: int | None  # None: no HTTP answer (connection error, timeout)
    detail: str | None = None
    error: str | None = None
    version: str | None = None
    payload: Any = None  # the JSON answer


@dataclass
class Acked:
    ids: list[int]
    images: list[np.ndarray]
    labels: list[int]


@dataclass
class Load:
    """Client threads sending a mix of searches, reconstructions and adds until stopped."""

    url: str
    images: np.ndarray
    threads: int = 3
    max_requests: int = 20_000
    add_every: int = 8
    #: Seconds each thread waits between two requests: the run tests recovery, not the
    #: throughput ceiling, and a restarted worker must get some CPU on a small machine.
    pace: float = 0.02
    answers: list[Answer] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.adds_on = threading.Event()
        self.adds_on.set()
        self.adds_in_flight = 0
        self._lock = threading.Lock()
        self._pool: list[threading.Thread] = []

    def start(self) -> Load:
        per = max(1, self.max_requests // self.threads)
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i, per), name=f"load-{i}", daemon=True)
            t.start()
            self._pool.append(t)
        return self

    def finish(self, timeout: float = 60.0) -> None:
        self.stop.set()
        for t in self._pool:
            t.join(timeout)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_adds_idle(self, timeout: float = 30.0) -> None:
        """Stop sending adds and wait until none is in flight."""
        self.adds_on.clear()
        poll(lambda: self.adds_in_flight == 0, timeout, "the adds in flight to end")

    def _run(self, i: int, budget: int) -> None:
        import httpx

        rng = np.random.default_rng(1000 + i)
        # A connection per request: one kept alive to the killed worker would be reset on
        # its next use whatever the server does, so only requests in flight at the kill
        # may see a broken connection.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=30.0, limits=limits) as client:
            for n in range(budget):
                if self.stop.wait(self.pace):
                    return
                img = self.images[int(rng.integers(len(self.images)))]
                if n % self.add_every == self.add_every - 1 and self.adds_on.is_set():
                    self._add(client, rng, img)
                elif n % 2:
                    self._ask(client, "search", "/v1/search?k=1", {"pixels": img.tolist()})
                else:
                    path = "/v1/reconstruct?k=1&methods=nearest"
                    self._ask(client, "reconstruct", path, {"pixels": img.tolist()})

    def _ask(self, client, kind: str, path: str, body: dict, headers=None) -> Answer:
        t0 = time.monotonic()
        try:
            r = client.post(path, json=body, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and judged
            ans = Answer(kind, t0, time.monotonic(), None, error=f"{type(exc).__name__}: {exc}")
        else:
            ans = Answer(kind, t0, time.monotonic(), r.status_code)
            try:
                data = r.json()
            except ValueError:
                data = {}
            if isinstance(data, dict):
                ans.detail = data.get("detail") if r.status_code >= 400 else None
                ans.version = data.get("bundle_version") or data.get("version")
            ans.payload = data
        with self._lock:
            self.answers.append(ans)
        return ans

    def _add(self, client, rng, img: np.ndarray) -> None:
        new = np.roll(img, int(rng.integers(-3, 4)), axis=int(rng.integers(2))).copy()
        y, x = (int(v) for v in rng.integers(0, 25, 2))
        new[y : y + 3, x : x + 3] = 255  # a mark of its own: no two adds send the same image
        label = int(rng.integers(10))
        body = {"items": [{"pixels": new.tolist(), "label": label}]}
        with self._lock:
            self.adds_in_flight += 1
        try:
            ans = self._ask(client, "add", "/v1/items", body, {"Authorization": f"Bearer {KEY}"})
        finally:
            with self._lock:
                self.adds_in_flight -= 1
        if ans.status == 201:
            with self._lock:
                self.acked.append(Acked(list(ans.payload["ids"]), [new], [label]))


_T0 = time.monotonic()


def say(text: str) -> None:
    """Progress on stderr (seconds since the start)."""
    print(f"[chaos {time.monotonic() - _T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def states(seen: dict[int, dict]) -> dict[int, str]:
    """``/readyz`` answers by pid, shortened for a message."""
    return {pid: f"{a.get('status')}: {(a.get('detail') or '')[:120]}" for pid, a in seen.items()}


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Wait for ``condition()`` to be truthy (polled, with a deadline); its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# --------------------------------------------------------------------------- the server side


def worker_children(server_pid: int) -> set[int]:
    """The uvicorn workers of the server: its child processes started by multiprocessing."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"spawn_main" in cmdline:
            out.add(int(entry.name))
    return out


def gone(pid: int) -> bool:
    """The process ``pid`` has ended (it is a zombie or no longer exists)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def readyz_all(url: str, tries: int = 12) -> dict[int, dict]:
    """``/readyz`` answers by worker pid, over ``tries`` fresh connections made at once."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def ask(_: int) -> dict | None:
        try:
            r = httpx.get(url + "/readyz", timeout=5, headers={"Connection": "close"})
            return {**r.json(), "http": r.status_code}
        except (httpx.HTTPError, ValueError):
            return None

    with ThreadPoolExecutor(min(tries, 12)) as pool:
        return {a["pid"]: a for a in pool.map(ask, range(tries)) if a and "pid" in a}


def touch_workers(url: str, image: np.ndarray, tries: int = 12) -> None:
    """Searches over fresh connections, so that every worker sees the bundle's ``current``."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def ask(_: int) -> None:
        with contextlib.suppress(httpx.HTTPError):
            body = {"pixels": image.tolist()}
            httpx.post(url + "/v1/search", json=body, timeout=10, headers={"Connection": "close"})

    with ThreadPoolExecutor(min(tries, 12)) as pool:
        list(pool.map(ask, range(tries)))


class WorkerWatch:
    """Every worker process of the server, when first and last seen (polled every 0.1 s).

    Tells the worker this run killed apart from workers that died otherwise (uvicorn's
    supervisor kills a worker that does not answer its health ping within 5 s, a starting
    one included); their connections are reset too.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.seen: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for pid in worker_children(self.server_pid):
                self.seen.setdefault(pid, [now, now])[1] = now

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def deaths(self, killed: int | None) -> list[dict[str, float]]:
        """Workers gone before the end, other than ``killed``: pid, lifetime, when."""
        end = max((last for _, last in self.seen.values()), default=0.0)
        return [
            {"pid": pid, "lived_s": round(last - first, 1), "gone_at": round(last - _T0, 1)}
            for pid, (first, last) in self.seen.items()
            if pid != killed and last < end - 0.5
        ]


# --------------------------------------------------------------------------- the phases


@dataclass
class Chaos:
    """One run: the server, its bundle on the tmpfs ``vol``, the load, what was seen."""

    server: Any  # helpers.ServerProcess
    root: Path
    vol: Path
    load: Load
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    kill_at: float | None = None
    dead_at: float | None = None
    back_at: float | None = None  # both workers ready again after the kill

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def add_one(self, image: np.ndarray, label: int = 3) -> Answer:
        """An add sent by the run itself (acknowledged items are kept like the load's)."""
        import httpx

        with httpx.Client(base_url=self.server.url, timeout=60.0) as client:
            ans = self.load._ask(
                client,
                "add",
                "/v1/items",
                {"items": [{"pixels": image.tolist(), "label": label}]},
                {"Authorization": f"Bearer {KEY}"},
            )
        if ans.status == 201:
            with self.load._lock:
                self.load.acked.append(Acked(list(ans.payload["ids"]), [image], [label]))
        return ans

    def wait_answers(self, more: int, timeout: float = 60.0) -> None:
        """Let the load send ``more`` requests (so that each phase runs under load)."""
        target = self.load.count() + more
        poll(lambda: self.load.count() >= target, timeout, f"{more} more answers")

    def kill_worker(self, timeout: float = 120.0) -> None:
        """SIGKILL one worker; wait until a new one (and the other) answer /readyz 200."""
        before = readyz_all(self.server.url)
        children = worker_children(self.server.proc.pid)
        victims = sorted(children & set(before))
        self.check(bool(victims), f"no worker found to kill (children {children}, {before})")
        if not victims:
            return
        victim = victims[0]
        say(f"SIGKILL worker {victim}")
        self.kill_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        poll(lambda: gone(victim), 10, f"worker {victim} to die")
        self.dead_at = time.monotonic()
        last: dict[int, dict] = {}

        def both_ready() -> dict[int, dict] | None:
            last.clear()
            last.update(readyz_all(self.server.url))
            ready = {pid for pid, a in last.items() if a["http"] == 200}
            new = ready - set(before)
            return dict(last) if len(ready) >= 2 and new and victim not in ready else None

        try:
            after = poll(both_ready, timeout, "a new worker to answer /readyz 200")
        except AssertionError as exc:
            kids = worker_children(self.server.proc.pid)
            raise AssertionError(f"{exc}; last /readyz {states(last)}; workers {kids}") from None
        self.back_at = time.monotonic()
        say(f"new worker(s) {sorted(set(after) - set(before))} ready")
        self.facts["killed_pid"] = victim
        self.facts["new_pids"] = sorted(set(after) - set(before))
        self.facts["restart_to_ready_s"] = round(time.monotonic() - self.kill_at, 2)
        served = [
            a
            for a in self.load.answers
            if a.start >= self.dead_at and a.status in (200, 201) and a.end <= time.monotonic()
        ]
        self.facts["answered_after_kill_before_ready"] = len(served)

    def corrupt_version(self, timeout: float = 60.0) -> None:
        """A new version that does not load; both workers must keep serving the old one."""
        from sdrindex.bundle import update_lock

        bad = "v-29991231T000000000000Z-c4a05f"
        with update_lock(self.root):  # no add moves `current` meanwhile
            good = os.readlink(self.root / "current")
            shutil.copytree(self.root / good, self.root / bad)
            target = self.root / bad / "table" / "sdrs.npy"
            os.truncate(target, target.stat().st_size // 2)  # a crash mid-copy, a bad disk
            point_current(self.root, bad)
        say(f"current -> {bad} (a truncated copy of {good})")
        try:
            self._while_corrupt(bad, timeout)
        finally:
            with update_lock(self.root):
                point_current(self.root, good)  # the operator's rollback
                shutil.rmtree(self.root / bad)
            say(f"current -> {good} again")
        last: dict[int, dict] = {}

        def cleared() -> bool:
            touch_workers(self.server.url, self.load.images[0])
            last.clear()
            last.update(readyz_all(self.server.url))
            fine = [a for a in last.values() if a["http"] == 200 and not a.get("detail")]
            return len(fine) >= 2 and len(fine) == len(last)

        try:
            poll(cleared, timeout, "both workers to drop the error after the rollback")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last /readyz {states(last)}") from None

    def _while_corrupt(self, bad: str, timeout: float) -> None:
        since = time.monotonic()
        last: dict[int, dict] = {}

        def both_report() -> dict[int, dict] | None:
            touch_workers(self.server.url, self.load.images[0])
            last.clear()
            last.update(readyz_all(self.server.url))
            failing = {
                pid
                for pid, a in last.items()
                if a["http"] == 200 and bad in (a.get("detail") or "")
            }
            return dict(last) if len(failing) >= 2 else None

        try:
            seen = poll(both_report, timeout, "both workers to report the corrupt version")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last /readyz {states(last)}") from None
        self.facts["corrupt_reported_in_s"] = round(time.monotonic() - since, 2)
        self.facts["corrupt_readyz_detail"] = next(iter(seen.values())).get("detail")
        self.wait_answers(60)
        during = [a for a in self.load.answers if a.start >= since]
        self.check(
            not any(a.version == bad for a in during),
            "an answer came from the corrupt version",
        )
        self.check(
            any(a.kind == "reconstruct" and a.status == 200 for a in during),
            "no reconstruction answered while current named the corrupt version",
        )
        self.facts["corrupt_answers"] = dict(Counter(f"{a.kind} {a.status}" for a in during))

    def disk_full(self, timeout: float = 60.0) -> None:
        """Fill the tmpfs during an add: 507, nothing changed on disk; then room again."""
        self.load.wait_adds_idle(timeout)
        say("adds paused; filling the disk")
        try:
            self._full_disk_add()
            self.load.adds_on.set()
            self.wait_answers(40)  # the load's adds meet the full disk too
        finally:
            (self.vol / FILLER).unlink(missing_ok=True)
            self.load.adds_on.set()
        image = np.roll(self.load.images[2], -2, axis=1).copy()
        image[-3:, -3:] = 255
        again = self.add_one(image)
        self.facts["after_free_add_status"] = again.status
        self.check(again.status == 201, f"an add after freeing space answered {again.status}")

    def _full_disk_add(self) -> None:
        from sdrindex.bundle import Bundle

        touch_workers(self.server.url, self.load.images[0])
        current = os.readlink(self.root / "current")
        listing = bundle_listing(self.root)
        n_items = len(Bundle.load(self.root, verify=True).table)
        vsize = version_bytes(self.root)
        image = np.roll(self.load.images[1], 2, axis=1).copy()
        image[:3, :3] = 255
        answer = None
        for _ in range(3):  # a worker dropping an old mapping may free space: fill again
            fill(self.vol, leave=vsize // 2)
            answer = self.add_one(image)
            if answer.status != 201:
                break
            current, listing = os.readlink(self.root / "current"), bundle_listing(self.root)
            n_items += 1
        say(f"add on a full disk: {answer.status} {answer.detail}")
        self.facts["full_add_status"] = answer.status
        self.facts["full_add_detail"] = answer.detail
        self.check(answer.status == 507, f"an add on a full disk answered {answer.status}")
        self.check("space" in (answer.detail or ""), f"the 507 does not say why: {answer.detail!r}")
        self.check(os.readlink(self.root / "current") == current, "current moved on 507")
        self.check(bundle_listing(self.root) == listing, "the failed add left files behind")
        self.check(
            len(Bundle.load(self.root, verify=True).table) == n_items,
            "the previous version is not intact after the failed add",
        )


def judge(run: Chaos) -> None:
    """Every answer a 200/201 or a clear 4xx/503/507; broken connections only at the kill."""
    kinds = Counter()
    for a in run.load.answers:
        key = f"{a.kind} {a.status if a.status is not None else 'no answer'}"
        kinds[key] += 1
        if a.status is None:
            # In flight or queued on the killed worker, or caught while its replacement
            # joined the port's SO_REUSEPORT group (Linux resets connections queued on a
            # listener that goes away unless net.ipv4.tcp_migrate_req=1): from the kill
            # until both workers answer again.
            until = run.back_at if run.back_at is not None else run.dead_at
            cut = until is not None and a.start <= until and a.end >= run.kill_at
            run.check(cut, f"{a.kind} got no answer outside the kill ({a.error})")
        elif a.status >= 500 and a.status not in (503, 507):
            run.problems.append(f"{a.kind} answered {a.status}: {a.detail}")
        elif a.status >= 400 and not a.detail:
            run.problems.append(f"{a.kind} answered {a.status} without a reason")
    run.facts["answers"] = dict(sorted(kinds.items()))
    run.facts["requests"] = len(run.load.answers)
    run.facts["cut_by_kill"] = sum(1 for a in run.load.answers if a.status is None)


def verify_acked(run: Chaos) -> None:
    """Every acknowledged item is found, with its pixels and label; no id given twice."""
    import httpx

    ids = [i for ack in run.load.acked for i in ack.ids]
    run.facts["acked_items"] = len(ids)
    run.check(len(ids) == len(set(ids)), "an id was acknowledged twice (a lost update)")
    with httpx.Client(base_url=run.server.url, timeout=30.0) as client:
        for ack in run.load.acked:
            for item_id, img, label in zip(ack.ids, ack.images, ack.labels, strict=True):
                r = client.get(f"/v1/items/{item_id}")
                if r.status_code != 200:
                    run.problems.append(f"acknowledged item {item_id}: {r.status_code} {r.text}")
                    continue
                got = r.json()
                same = np.array_equal(np.asarray(got["pixels"], np.uint8), img)
                run.check(same and got["label"] == label, f"item {item_id} is not the one added")
    ready = {pid for pid, a in readyz_all(run.server.url).items() if a["http"] == 200}
    run.check(len(ready) >= 2, f"not every worker is ready at the end ({ready})")


def _phases(run: Chaos) -> None:
    """The load, and meanwhile the kill, the corrupt version and the full disk."""
    run.load.start()
    try:
        run.wait_answers(30)
        for phase in (run.kill_worker, run.corrupt_version, run.disk_full):
            try:
                phase()
            except Exception as exc:  # noqa: BLE001 - reported; the run goes on
                run.problems.append(f"{phase.__name__}: {type(exc).__name__}: {exc}")
        run.wait_answers(30)
    finally:
        run.load.finish()
        say(f"load stopped after {run.load.count()} requests")


def run_chaos(
    bundle: Path,
    work: Path,
    threads: int = 3,
    max_requests: int = 20_000,
    start_timeout: float = 600.0,
) -> dict[str, Any]:
    """The whole run over a copy of ``bundle`` on a tmpfs under ``work``; the facts seen.

    Returns ``{"problems": [...], **facts}``; no problems: every check passed.

    Raises
    ------
    MountUnavailable
        When no tmpfs can be mounted here.
    """
    from helpers import ServerProcess, copy_bundle
    from sdrindex.bundle import Bundle

    src_size = version_bytes(bundle)
    vol_size = 6 * src_size + (16 << 20)  # versions kept mapped by workers, the corrupt copy
    t0 = time.monotonic()
    with tmpfs(work / "vol", vol_size) as vol:
        root = copy_bundle(bundle, vol / "bundle")
        images = np.asarray(Bundle.load(root).table.images[:200])
        env = {
            **tree_env(),
            "SDRINDEX_API_KEY": KEY,
            "SDRINDEX_RETRY_BACKOFF_S": "0.5",
            "SDRINDEX_RETRY_BACKOFF_MAX_S": "2",
        }
        with ServerProcess(
            root, workers=2, env=env, log=work / "server.log", timeout=start_timeout
        ) as server:
            run = Chaos(server, root, vol, Load(server.url, images, threads, max_requests))
            run.facts["start_to_ready_s"] = round(server.ready_seconds, 2)
            run.facts["version_bytes"] = src_size
            t1 = time.monotonic()
            say(f"server ready in {server.ready_seconds:.1f} s; load started")
            with WorkerWatch(server.proc.pid) as watch:
                _phases(run)
            run.facts["load_s"] = round(time.monotonic() - t1, 2)
            run.facts["workers_seen"] = len(watch.seen)
            others = watch.deaths(run.facts.get("killed_pid"))
            run.facts["other_worker_deaths"] = others
            run.check(not others, f"workers died that the run did not kill: {others}")
            judge(run)
            verify_acked(run)
    run.facts["total_s"] = round(time.monotonic() - t0, 2)
    return {"problems": run.problems, **run.facts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, help="bundle to copy onto the tmpfs (default: built)")
    p.add_argument("--bundle-items", type=int, default=1500, help="items of the built bundle")
    p.add_argument("--threads", type=int, default=3, help="client threads (default 3)")
    p.add_argument("--max-requests", type=int, default=20_000, help="at most this many")
    p.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sdrindex-chaos-"))
    bundle = args.bundle
    if bundle is None:
        from helpers import build_small_bundle

        bundle = build_small_bundle(work / "src", n=args.bundle_items, decoder=False)
    try:
        report = run_chaos(bundle, work, args.threads, args.max_requests)
    except MountUnavailable as exc:
        print(f"chaos: {exc}; run it as root", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
