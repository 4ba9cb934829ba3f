"""End to end: a real uvicorn (`python -m sdr_service.serve`, 2 workers) and httpx."""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import ServerProcess, build_small_bundle, copy_bundle, readyz_pids  # noqa: E402
from sdrindex.bundle import Bundle  # noqa: E402

KEY = "e2e-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)
    root = copy_bundle(base, tmp_path_factory.mktemp("e2e") / "bundle")
    log = tmp_path_factory.getbasetemp() / "e2e-server.log"
    with ServerProcess(root, workers=2, env={"SDRINDEX_API_KEY": KEY}, log=log) as srv:
        srv.root = root
        yield srv


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port (Linux /proc/net/tcp, state 0A)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            out.add(fields[9])
    return out


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_each_worker_listens_on_its_own_socket(server):
    """sdrindex serve gives each worker its own SO_REUSEPORT listening socket, so the kernel
    spreads new connections over the workers. (With uvicorn's one shared socket the first
    worker to wake accepts a whole burst: in the load test 30 of 32 keep-alive clients
    landed on one of two workers, which halved throughput and doubled latency.)"""
    port = int(server.url.rsplit(":", 1)[1])
    listening = _listening_inodes(port)
    owned = {pid: _socket_inodes(pid) & listening for pid in server.worker_pids}
    assert len(listening) == len(server.worker_pids) == 2
    assert all(len(inodes) == 1 for inodes in owned.values()), owned
    assert len(set().union(*owned.values())) == 2  # not the same socket


def test_end_to_end_reconstruct(server):
    b = Bundle.load(server.root)
    img = np.kron(np.asarray(b.table.images[30]), np.ones((5, 5), np.uint8))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post(
            "/v1/reconstruct?k=3&methods=nearest,knn,backprojection,decoder",
            files={"image": ("d.png", png(img), "image/png")},
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert len(out["matches"]) == 3 and out["predicted_label"] in range(10)
        assert set(out["reconstructions"]) == {"nearest", "knn", "backprojection", "decoder"}
        assert c.get("/v1/info").json()["bundle"]["n_items"] >= 1500
        assert c.get("/").status_code == 200
    assert len(server.worker_pids) == 2


def test_concurrent_clients_get_correct_answers(server):
    b = Bundle.load(server.root)
    picks = list(range(0, 1500, 23))
    from sdrindex.images import decode_image, normalize_digit

    uploads = {i: png(np.asarray(b.table.images[i])) for i in picks}
    expected, expected_upload = {}, {}
    for i in picks:
        ids, ov = b.index.query(b.encode(np.asarray(b.table.images[i])[None]), 5)
        expected[i] = (ids[0].tolist(), ov[0].tolist())
        # uploads are normalised first, as `sdrindex build` does with image files
        norm = normalize_digit(decode_image(uploads[i]))
        ids, ov = b.index.query(b.encode(norm[None]), 5)
        expected_upload[i] = (ids[0].tolist(), ov[0].tolist())
    errors: list[str] = []
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=server.url, timeout=30)
        return local.c

    def ask(job):
        n, i = job
        c = client()
        if n % 3 == 0:
            r = c.post("/v1/search?k=5", files={"image": ("d.png", uploads[i], "image/png")})
            got = r.json() if r.status_code == 200 else None
            pair = None if got is None else (got["ids"], got["overlaps"])
        elif n % 3 == 1:
            r = c.post("/v1/reconstruct?k=5", json={"pixels": b.table.images[i].tolist()})
            got = r.json() if r.status_code == 200 else None
            pair = (
                None
                if got is None
                else ([m["id"] for m in got["matches"]], [m["overlap"] for m in got["matches"]])
            )
        else:
            body = {"queries": [{"pixels": b.table.images[i].tolist()}]}
            r = c.post("/v1/search/batch?k=5", json=body)
            got = r.json() if r.status_code == 200 else None
            pair = (
                None if got is None else (got["results"][0]["ids"], got["results"][0]["overlaps"])
            )
        want = expected_upload[i] if n % 3 == 0 else expected[i]
        if pair != want:
            errors.append(f"query {n} (item {i}): {r.status_code} {pair} != {want}")

    jobs = [(n, picks[n % len(picks)]) for n in range(600)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(ask, jobs))
    assert not errors, errors[:5]


def test_added_items_visible_in_every_worker(server):
    b = Bundle.load(server.root)
    auth = {"Authorization": f"Bearer {KEY}"}
    rng = np.random.default_rng(0)
    # Two writers at once (likely in different workers): no update may be lost.
    imgs = [np.roll(np.asarray(b.table.images[40 + j]), 3 + j, axis=1) for j in range(4)]

    def add(j):
        with httpx.Client(base_url=server.url, timeout=60, headers={"Connection": "close"}) as c:
            r = c.post(
                "/v1/items",
                json={"items": [{"pixels": imgs[j].tolist(), "label": j}]},
                headers=auth,
            )
            assert r.status_code == 201, r.text
            return r.json()["ids"][0]

    with ThreadPoolExecutor(4) as pool:
        new_ids = list(pool.map(add, range(4)))
    assert len(set(new_ids)) == 4
    n_before = len(b.table)
    assert sorted(new_ids) == list(range(n_before, n_before + 4))
    # Every worker answers with the new items at once (fresh connections reach both).
    seen_workers = readyz_pids(server.url)
    assert seen_workers == server.worker_pids
    for _ in range(20):
        j = int(rng.integers(4))
        with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as c:
            r = c.post("/v1/search?k=1", json={"pixels": imgs[j].tolist()})
            assert r.status_code == 200 and r.json()["ids"] == [new_ids[j]], r.text
            assert c.get(f"/v1/items/{new_ids[j]}").json()["label"] == j
    final = Bundle.load(server.root)
    assert len(final.table) == n_before + 4


def test_metrics_add_up_over_workers(server):
    with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as c:
        for _ in range(10):
            c.get("/v1/items/1")
        text = c.get("/metrics").text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('sdrindex_http_requests_total{endpoint="/v1/items/{item_id}"')
        and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 10
    assert "sdrindex_stage_duration_seconds_bucket" in text


def test_workers_survive_bad_input(server):
    junk = [
        ("application/json", b"[" * 100000),
        ("application/json", b'{"pixels": ' + b"[" * 50000 + b"]" * 50000 + b"}"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data\r\n\r\nx"),
        ("image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
        ("image/jpeg", b"\xff\xd8\xff" + bytes(range(256)) * 10),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for ctype, body in junk:
            for path in ("/v1/reconstruct", "/v1/search"):
                r = c.post(path, content=body, headers={"content-type": ctype})
                assert 400 <= r.status_code < 500, (path, ctype, r.status_code, r.text)
    assert readyz_pids(server.url) == server.worker_pids


def test_serve_on_a_busy_port_says_so(server):
    """Another program holds the port: `serve --workers 2` exits 2 naming the port and the fix."""
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "sdr_service.serve", "--bundle", str(server.root),
             "--no-build", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
