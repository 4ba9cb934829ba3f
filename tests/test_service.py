"""The HTTP API through FastAPI's TestClient, on small bundles built once per session."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import build_small_bundle, copy_bundle, without_decoder  # noqa: E402
from sdr_service import Settings, create_app  # noqa: E402
from sdrindex.bundle import Bundle  # noqa: E402
from sdrindex.images import decode_image, normalize_digit  # noqa: E402
from sdrindex.sdr import to_indices  # noqa: E402

KEY = "test-key-123"


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    return build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)


@pytest.fixture(scope="session")
def nodecoder_bundle(small_bundle, tmp_path_factory):
    return without_decoder(small_bundle, tmp_path_factory.getbasetemp() / "service-nodecoder")


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/readyz")
        if r.status_code == 200:
            return
        assert r.status_code == 503
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout} s: {r.json()}")


def make_client(bundle, **settings):
    app = create_app(Settings(bundle=bundle, **settings))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(small_bundle):
    with make_client(small_bundle) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def bundle(small_bundle):
    return Bundle.load(small_bundle)


def png_bytes(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def upload(data: bytes, name: str = "digit.png", ctype: str = "image/png"):
    return {"image": (name, data, ctype)}


def assert_error(r, status: int, words: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status and isinstance(body["detail"], str) and body["detail"]
    assert words.lower() in body["detail"].lower(), body["detail"]
    return body


def big_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- health, info


def test_livez_readyz_info(client, bundle):
    assert client.get("/livez").json()["status"] == "alive"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    info = client.get("/v1/info").json()
    assert info["bundle"]["n_items"] == len(bundle.table)
    assert info["bundle"]["backend"] == "exact"
    assert info["bundle"]["sp_params"]["columnDimensions"] == [79, 79, 1]  # the default's
    assert info["bundle"]["sp_params"]["inputDimensions"] == [28, 28, 3]  # three planes
    assert info["column_dimensions"] == [79, 79, 1]
    assert info["label_method"] in ("knn", "logistic")
    assert set(info["methods"]) >= {"nearest", "knn", "backprojection", "decoder"}
    assert all(m["available"] for m in info["methods"].values()), info["methods"]
    assert info["limits"]["max_k"] == 100 and info["limits"]["max_batch"] == 256
    assert info["writes_enabled"] is False


def test_not_ready_is_503_json(tmp_path):
    with make_client(tmp_path / "missing") as c:
        deadline = time.monotonic() + 10
        while c.get("/readyz").json()["status"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        r = c.get("/readyz")
        assert r.status_code == 503 and "missing" in r.json()["detail"]
        assert c.get("/livez").status_code == 200
        r = c.post("/v1/search", json={"sdr": {"active": [1], "size": 6241}})
        assert_error(r, 503, "not ready")
        assert r.headers.get("retry-after")


def test_openapi_docs_and_demo_page(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/v1/reconstruct",
        "/v1/search",
        "/v1/search/batch",
        "/v1/items",
        "/v1/items/{item_id}",
        "/v1/items/{item_id}/image.png",
        "/v1/items/{item_id}/neighbors",
        "/v1/info",
        "/livez",
        "/readyz",
        "/metrics",
    ):
        assert p in paths, p
    body = paths["/v1/reconstruct"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert "PixelsQuery" in spec["components"]["schemas"]
    assert "ReconstructResponse" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert "<canvas" in html and "/v1/reconstruct" in html
    # Self-contained: nothing loaded from elsewhere.
    for bad in ('src="http', "src='http", 'href="http', "@import", "cdn"):
        assert bad not in html.lower()


def test_errors_are_json(client):
    assert_error(client.get("/nope"), 404, "no such endpoint")
    assert_error(client.get("/v1/search"), 405, "not allowed")
    assert_error(
        client.post("/v1/search", content=b"{", headers={"content-type": "application/json"}),
        400,
        "not valid json",
    )


# --------------------------------------------------------------------------- reconstruct


def test_reconstruct_png_upload_all_methods(client, bundle):
    img = np.asarray(bundle.table.images[7])
    r = client.post(
        "/v1/reconstruct?k=5&methods=nearest,knn,backprojection,decoder",
        files=upload(png_bytes(img)),
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["k"] == 5 and len(out["matches"]) == 5
    ov = [m["overlap"] for m in out["matches"]]
    assert ov == sorted(ov, reverse=True)
    for m in out["matches"]:
        assert set(m) == {"id", "label", "overlap", "jaccard"}
        assert 0.0 <= m["jaccard"] <= 1.0
    assert out["predicted_label"] in range(10)
    assert out["label_method"] in ("knn", "logistic")
    assert out["sdr"]["size"] == 6241 and out["sdr"]["active"] == sorted(out["sdr"]["active"])
    assert set(out["reconstructions"]) == {"nearest", "knn", "backprojection", "decoder"}
    for rec in out["reconstructions"].values():
        pix = np.array(rec["pixels"])
        assert pix.shape == (28, 28) and pix.min() >= 0 and pix.max() <= 255
        png = Image.open(io.BytesIO(base64.b64decode(rec["png_base64"])))
        assert png.size == (28, 28)
        assert np.array_equal(np.asarray(png), pix.astype(np.uint8))
    assert np.array(out["input"]["pixels"]).shape == (28, 28)
    for stage in ("decode", "encode", "search", "total"):
        assert out["timing_ms"][stage] >= 0
    assert out["bundle_version"].startswith("v-")


def test_upload_is_normalised_as_build_does(client, bundle):
    # A large, light-background, colour photo-like image with a dark digit.
    digit = np.asarray(bundle.table.images[11])
    big = np.kron(255 - digit, np.ones((9, 7), np.uint8))
    rgb = np.stack([big, big, np.clip(big.astype(int) + 10, 0, 255).astype(np.uint8)], axis=-1)
    data = png_bytes(rgb)
    want = normalize_digit(decode_image(data))
    r = client.post("/v1/reconstruct", files=upload(data))
    assert r.status_code == 200, r.text
    got = np.array(r.json()["input"]["pixels"], np.uint8)
    assert np.array_equal(got, want)
    sdr = bundle.encode(want[None])
    assert r.json()["sdr"]["active"] == to_indices(sdr, 6241)[0].tolist()


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("RGB", "JPEG"),
        ("L", "JPEG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
    ],
)
def test_any_colour_mode_and_format(client, bundle, mode, fmt):
    img = np.kron(np.asarray(bundle.table.images[3]), np.ones((3, 3), np.uint8))
    data = png_bytes(img, mode=mode, fmt=fmt)
    ctype = "image/jpeg" if fmt == "JPEG" else "image/png"
    r = client.post("/v1/reconstruct?k=3", files=upload(data, "d." + fmt.lower(), ctype))
    assert r.status_code == 200, r.text
    assert len(r.json()["matches"]) == 3


def test_raw_image_body(client, bundle):
    data = png_bytes(np.asarray(bundle.table.images[5]))
    r = client.post("/v1/search?k=2", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["ids"][0] == 5


def test_stored_item_finds_itself(client, bundle):
    for i in (0, 42, 1499):
        pixels = np.asarray(bundle.table.images[i]).tolist()
        r = client.post("/v1/reconstruct?k=3&methods=nearest", json={"pixels": pixels})
        assert r.status_code == 200, r.text
        out = r.json()
        top = out["matches"][0]
        n_active = len(out["sdr"]["active"])
        assert top["overlap"] == n_active and top["jaccard"] == 1.0
        assert top["label"] == int(bundle.table.labels[i])
        assert out["reconstructions"]["nearest"]["pixels"] == pixels or top["id"] != i


def test_sdr_query_matches_pixel_query(client, bundle):
    pixels = np.asarray(bundle.table.images[100]).tolist()
    by_pixels = client.post("/v1/reconstruct?k=4", json={"pixels": pixels}).json()
    by_sdr = client.post("/v1/reconstruct?k=4", json={"sdr": by_pixels["sdr"]}).json()
    assert by_sdr["matches"] == by_pixels["matches"]
    assert by_sdr["input"] is None
    assert by_sdr["predicted_label"] == by_pixels["predicted_label"]
    ids, ov = bundle.index.query(bundle.encode(np.asarray(pixels, np.uint8)[None]), 4)
    assert [m["id"] for m in by_sdr["matches"]] == ids[0].tolist()
    assert [m["overlap"] for m in by_sdr["matches"]] == ov[0].tolist()


def test_bad_parameters_are_422(client, bundle):
    pixels = np.asarray(bundle.table.images[0]).tolist()
    for q in (
        "k=0",
        "k=101",
        "k=abc",
        "k=1.5",
        "methods=",
        "methods=magic",
        "methods=nearest,magic",
    ):
        r = client.post(f"/v1/reconstruct?{q}", json={"pixels": pixels})
        assert_error(r, 422)
    assert client.post("/v1/reconstruct?k=100", json={"pixels": pixels}).status_code == 200
    body = assert_error(client.post("/v1/reconstruct?methods=magic", json={"pixels": pixels}), 422)
    assert "nearest" in body["detail"]


def test_unavailable_method_is_422_with_reason(nodecoder_bundle):
    with make_client(nodecoder_bundle) as c:
        wait_ready(c)
        info = c.get("/v1/info").json()
        assert info["methods"]["decoder"]["available"] is False
        assert "decoder" in info["methods"]["decoder"]["reason"]
        body = {"sdr": {"active": [1, 2, 3], "size": 6241}}
        r = c.post("/v1/reconstruct?methods=nearest,decoder", json=body)
        assert_error(r, 422, "not available")
        # back-projection is calibrated on the fly for a bundle without stored calibration
        r = c.post("/v1/reconstruct?methods=backprojection", json=body)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body,words",
    [
        ({"sdr": {"active": [1, 2], "size": 100}}, "6241"),
        ({"sdr": {"active": [1, 6241], "size": 6241}}, "[0, 6241)"),
        ({"sdr": {"active": [-1], "size": 6241}}, "[0, 6241)"),
        ({"sdr": {"active": [1.5], "size": 6241}}, "integers"),
        ({"sdr": {"active": [True], "size": 6241}}, "integers"),
        ({"sdr": {"active": [2**70], "size": 6241}}, "range"),
        ({"sdr": {"active": "1,2", "size": 6241}}, "list"),
        ({"sdr": {"active": [1]}}, "size"),
        ({"sdr": [1, 2]}, "object"),
        ({"pixels": [[0] * 28] * 27}, "28 rows"),
        ({"pixels": [[0] * 27] * 28}, "row 0"),
        ({"pixels": [[256] * 28] * 28}, "0-255"),
        ({"pixels": [[-1] * 28] * 28}, "0-255"),
        ({"pixels": [["a"] * 28] * 28}, "row 0"),
        ({"pixels": [[0] * 28] * 28, "sdr": {"active": [], "size": 6241}}, "exactly one"),
        ({}, "exactly one"),
        ([1, 2], "object"),
        ("text", "object"),
    ],
)
def test_bad_queries_are_422(client, body, words):
    for path in ("/v1/reconstruct", "/v1/search"):
        assert_error(client.post(path, json=body), 422, words)


def test_blank_image_is_422(client):
    blank = png_bytes(np.zeros((40, 40), np.uint8))
    assert_error(client.post("/v1/reconstruct", files=upload(blank)), 422, "no ink")


def test_not_an_image(client, bundle):
    assert_error(client.post("/v1/reconstruct", files=upload(b"hello world")), 415, "not an image")
    assert_error(client.post("/v1/reconstruct", files=upload(b"")), 400, "empty")
    png = png_bytes(np.asarray(bundle.table.images[0]))
    assert_error(client.post("/v1/reconstruct", files=upload(png[: len(png) // 2])), 400)
    r = client.post("/v1/reconstruct", files={"file": ("a.png", png, "image/png")})
    assert_error(r, 422, "`image`")
    r = client.post("/v1/reconstruct", content=b"abc", headers={"content-type": "text/plain"})
    assert_error(r, 415, "unsupported content type")
    r = client.post("/v1/reconstruct", content=b"abc")
    assert_error(r, 415)
    r = client.post(
        "/v1/reconstruct", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
    )
    assert_error(r, 400, "boundary")


def test_decompression_bomb_refused(client):
    r = client.post("/v1/reconstruct", files=upload(big_png_header(60000, 60000)))
    assert_error(r, 413, "pixels")
    r = client.post(
        "/v1/search", content=big_png_header(5000, 5000), headers={"content-type": "image/png"}
    )
    assert_error(r, 413)


def test_body_over_2_mib_is_413(client):
    big = b"\0" * (2 * 1024 * 1024 + 1)
    assert_error(client.post("/v1/reconstruct", files=upload(big)), 413, "larger than")
    assert_error(client.post("/v1/search", content=big, headers={"content-type": "image/png"}), 413)

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"\0" * 65536

    r = client.post("/v1/search", content=chunks(), headers={"content-type": "image/png"})
    assert_error(r, 413, "larger than")
    ok = png_bytes(np.full((900, 900), 7, np.uint8))  # < 2 MiB
    assert client.post("/v1/search", files=upload(ok)).status_code in (200, 422)


# --------------------------------------------------------------------------- search


def test_search_and_batch(client, bundle):
    sdrs = [to_indices(bundle.table.sdrs[i : i + 1], 6241)[0].tolist() for i in (3, 9)]
    r = client.post("/v1/search?k=5", json={"sdr": {"active": sdrs[0], "size": 6241}})
    assert r.status_code == 200
    assert set(r.json()) == {"ids", "overlaps"}
    assert r.json()["ids"][0] == 3 and len(r.json()["ids"]) == 5
    queries = [
        {"sdr": {"active": sdrs[0], "size": 6241}},
        {"pixels": np.asarray(bundle.table.images[9]).tolist()},
        {"sdr": {"active": sdrs[1], "size": 6241}},
    ]
    r = client.post("/v1/search/batch?k=2", json={"queries": queries})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["ids"][0] for x in res] == [3, 9, 9]
    assert res[1] == res[2]
    one = {"sdr": {"active": sdrs[0], "size": 6241}}
    assert client.post("/v1/search/batch", json={"queries": [one] * 256}).status_code == 200
    assert_error(client.post("/v1/search/batch", json={"queries": [one] * 257}), 422, "256")
    assert_error(client.post("/v1/search/batch", json={"queries": []}), 422)
    assert_error(client.post("/v1/search/batch", json={"q": []}), 422, "queries")
    bad = [one, {"sdr": {"active": [99999], "size": 6241}}]
    assert_error(client.post("/v1/search/batch", json={"queries": bad}), 422, "queries[1]")
    assert_error(
        client.post("/v1/search/batch", content=b"x", headers={"content-type": "image/png"}), 415
    )


# --------------------------------------------------------------------------- items


def test_items(client, bundle):
    r = client.get("/v1/items/12")
    assert r.status_code == 200
    item = r.json()
    assert item["id"] == 12 and item["label"] == int(bundle.table.labels[12])
    assert item["sdr"]["active"] == to_indices(bundle.table.sdrs[12:13], 6241)[0].tolist()
    assert np.array_equal(np.array(item["pixels"]), bundle.table.images[12])
    r = client.get("/v1/items/12/image.png")
    assert r.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), bundle.table.images[12])
    r = client.get("/v1/items/12/image.png?scale=4")
    assert Image.open(io.BytesIO(r.content)).size == (112, 112)
    r = client.get("/v1/items/12/neighbors?k=4")
    nb = r.json()["neighbors"]
    assert len(nb) == 4 and all(n["id"] != 12 for n in nb)
    ids, ov = bundle.index.query(bundle.table.sdrs[12:13], 5)
    want = [(int(i), int(o)) for i, o in zip(ids[0], ov[0], strict=True) if i != 12][:4]
    assert [(n["id"], n["overlap"]) for n in nb] == want
    for path in (
        "/v1/items/1500",
        "/v1/items/-1",
        "/v1/items/99999999999/image.png",
        "/v1/items/100000/neighbors",
    ):
        assert_error(client.get(path), 404, "no item")
    assert_error(client.get("/v1/items/abc"), 422)
    assert_error(client.get("/v1/items/1/neighbors?k=0"), 422)
    assert_error(client.get("/v1/items/1/image.png?scale=99"), 422)


def test_writes_disabled_without_key(client, bundle):
    body = {"items": [{"pixels": np.asarray(bundle.table.images[0]).tolist(), "label": 1}]}
    r = client.post("/v1/items", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert_error(r, 403, "disabled")


def test_add_items(small_bundle, tmp_path, bundle):
    root = copy_bundle(small_bundle, tmp_path / "b")
    version_before = (root / "current").readlink()
    with make_client(root, api_key=KEY) as c:
        wait_ready(c)
        assert c.get("/v1/info").json()["writes_enabled"] is True
        digit = np.asarray(bundle.table.images[21])
        new_img = np.roll(digit, 2, axis=1)  # a new item, unlike the stored ones
        body = {"items": [{"pixels": new_img.tolist(), "label": 4}]}
        assert_error(c.post("/v1/items", json=body), 401, "bearer")
        r = c.post("/v1/items", json=body, headers={"Authorization": "Bearer wrong"})
        assert_error(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (root / "current").readlink() == version_before  # nothing written
        auth = {"Authorization": f"Bearer {KEY}"}
        r = c.post("/v1/items", json=body, headers=auth)
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["ids"] == [1500] and out["n_items"] == 1501
        # searchable at once
        r = c.post("/v1/search?k=1", json={"pixels": new_img.tolist()})
        assert r.json()["ids"] == [1500]
        assert c.get("/v1/items/1500").json()["label"] == 4
        # multipart: two images, one label each
        files = [
            (
                "image",
                ("a.png", png_bytes(255 - np.kron(digit, np.ones((4, 4), np.uint8))), "image/png"),
            ),
            ("image", ("b.png", png_bytes(np.roll(digit, -2, axis=0)), "image/png")),
        ]
        r = c.post("/v1/items", files=files, data={"label": ["7", "8"]}, headers=auth)
        assert r.status_code == 201, r.text
        assert r.json()["ids"] == [1501, 1502]
        assert c.get("/v1/items/1502").json()["label"] == 8
        # labelled bundle: labels required, and well formed
        r = c.post("/v1/items", json={"items": [{"pixels": new_img.tolist()}]}, headers=auth)
        assert_error(r, 422, "label")
        r = c.post("/v1/items", files=files, data={"label": "x"}, headers=auth)
        assert_error(r, 422, "label")
        r = c.post("/v1/items", files=files, data={"label": ["1", "2", "3"]}, headers=auth)
        assert_error(r, 422, "labels")
        r = c.post("/v1/items", json={"items": []}, headers=auth)
        assert_error(r, 422)
        assert c.get("/v1/info").json()["bundle"]["n_items"] == 1503
    # persisted atomically as a new version
    assert (root / "current").readlink() != version_before
    b = Bundle.load(root)
    assert len(b.table) == 1503 and b.table.labels[-3:].tolist() == [4, 7, 8]
    assert np.array_equal(b.table.images[1500], new_img)
    assert b.decoder is not None and "ridge_coef" in b.decoder


def test_random_sample(client):
    a = client.get("/v1/samples/random?seed=3").json()
    b = client.get("/v1/samples/random?seed=3").json()
    assert a == b and a["source"] == "mnist-test" and np.array(a["pixels"]).shape == (28, 28)
    assert a["label"] in range(10)


def test_metrics(client, bundle):
    client.post("/v1/search", json={"pixels": np.asarray(bundle.table.images[0]).tolist()})
    client.get("/v1/items/999999")
    text = client.get("/metrics").text
    assert 'sdrindex_http_requests_total{endpoint="/v1/search",method="POST",status="200"}' in text
    assert 'endpoint="/v1/items/{item_id}",method="GET",status="404"' in text
    assert 'sdrindex_http_request_duration_seconds_bucket{endpoint="/v1/search"' in text
    for stage in ("parse", "encode", "search"):
        assert (
            f'sdrindex_stage_duration_seconds_count{{endpoint="/v1/search",stage="{stage}"}}'
            in text
        )


def test_parallel_requests_stay_correct(client, bundle):
    from concurrent.futures import ThreadPoolExecutor

    ids = list(range(0, 1500, 37))
    want = {}
    for i in ids:
        q, o = bundle.index.query(bundle.encode(np.asarray(bundle.table.images[i])[None]), 3)
        want[i] = (q[0].tolist(), o[0].tolist())

    def ask(i):
        r = client.post(
            "/v1/search?k=3", json={"pixels": np.asarray(bundle.table.images[i]).tolist()}
        )
        return i, r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        for i, status, out in pool.map(ask, ids * 3):
            assert status == 200
            assert (out["ids"], out["overlaps"]) == want[i]


def test_serve_builds_the_default_bundle_when_missing(small_bundle, tmp_path, monkeypatch):
    import argparse
    import shutil

    from sdr_service import serve
    from sdrindex.errors import BundleError

    calls = []

    def fake_build(out):
        calls.append(out)
        shutil.copytree(small_bundle, out, symlinks=True)

    monkeypatch.setattr(serve, "build_default_bundle", fake_build)
    target = tmp_path / "bundles" / "mnist"
    with pytest.raises(BundleError, match="no bundle"):
        serve.ensure_bundle(target, build=False)
    serve.ensure_bundle(target)
    assert calls == [target]
    serve.ensure_bundle(target)  # there now: not built again
    assert len(calls) == 1
    p = argparse.ArgumentParser()
    serve.add_parser(p.add_subparsers())
    args = p.parse_args(["serve", "--bundle", "b", "--host", "h", "--port", "1", "--workers", "3"])
    assert (args.bundle.name, args.host, args.port, args.workers) == ("b", "h", 1, 3)
    assert args.func is serve.cmd_serve


def test_serve_builds_through_the_pipeline(small_bundle, tmp_path, monkeypatch):
    """The first start's build is `sdrindex build --decoder`'s: one build_bundle call."""
    from sdr_service import serve
    from sdrindex import images, pipeline
    from sdrindex.sp import learn_limit_for, preprocess_for, sp_from_config, threshold_for

    real_load = images.load_source
    monkeypatch.setattr(images, "load_source", lambda d, lab, n: real_load(d, lab, n or 50))
    seen = {}

    def fake_build_bundle(imgs, labels=None, **kwargs):
        seen.update(kwargs, n=len(imgs), labels=labels)
        return Bundle.load(small_bundle)

    monkeypatch.setattr(pipeline, "build_bundle", fake_build_bundle)
    target = tmp_path / "bundles" / "mnist"
    serve.ensure_bundle(target)
    assert (target / "current").exists() and Bundle.load(target).table.ids.size == 1500
    assert seen["n"] == 50 and seen["labels"] is not None
    assert seen["backend"] == "nndescent" and seen["decoders"] == "default"
    assert seen["threshold"] == threshold_for(None)
    assert seen["preprocess"] == preprocess_for(None) and seen["preprocess"]["planes"]
    assert seen["learn_limit"] == learn_limit_for(None) == 15000
    assert seen["sp"].n_columns == sp_from_config(None).n_columns
    assert seen["progress"] is pipeline.stderr_progress
    assert seen["dataset"]["source"] == "mnist"


def test_serve_is_the_entry_point_the_cli_finds(monkeypatch):
    """pyproject declares `serve` in `sdrindex.commands`; the CLI adds it from there."""
    import importlib.metadata as md
    import tomllib
    from pathlib import Path

    from sdr_service import serve
    from sdrindex import cli

    meta = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    value = meta["project"]["entry-points"][cli.PLUGIN_GROUP]["serve"]
    assert value == "sdr_service.serve:add_parser"
    ep = md.EntryPoint("serve", value, cli.PLUGIN_GROUP)
    assert ep.load() is serve.add_parser
    monkeypatch.setattr(md, "entry_points", lambda group: [ep] if group == cli.PLUGIN_GROUP else [])
    args = cli.build_parser().parse_args(["serve", "--bundle", "b", "--no-build"])
    assert args.func is serve.cmd_serve and args.no_build
