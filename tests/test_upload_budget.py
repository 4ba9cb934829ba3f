"""The service's upload path: every over-budget image is a clear 4xx naming the limit."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from helpers import build_small_bundle  # noqa: E402
from sdr_service import Settings, create_app  # noqa: E402
from sdr_service.errors import ApiError  # noqa: E402
from sdr_service.inputs import decode_upload  # noqa: E402


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def status_of(data: bytes, max_pixels: int = Settings().max_image_pixels) -> tuple[int, str]:
    try:
        decode_upload(data, max_pixels)
    except ApiError as exc:
        return exc.status, exc.detail
    return 200, ""


def test_default_pixel_limit_is_lower():
    assert Settings().max_image_pixels <= 8_388_608


def test_over_budget_uploads_are_413_with_the_limit():
    rgb = Image.new("RGB", (4000, 4000), "white")
    rgb.putpixel((5, 5), (0, 0, 0))
    status, detail = status_of(encode(rgb))
    assert status == 413 and "8,388,608" in detail and "scale it down" in detail
    status, detail = status_of(encode(Image.new("RGBA", (1800, 1800))))  # 13 MB decoded
    assert status == 413 and "bytes decoded" in detail
    frames = [Image.new("L", (8, 8), i % 200) for i in range(1100)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    status, detail = status_of(gif)
    assert status == 413 and "frames" in detail


def test_sixteen_bit_upload_keeps_its_ink():
    arr = np.full((100, 100), 65535, np.uint16)
    arr[20:80, 45:55] = 20000  # dark grey ink, above 255
    status, detail = status_of(encode(Image.fromarray(arr)))
    assert status == 200, detail  # before: clipped to a uniform 255, "no ink" (422)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    bundle = build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)
    app = create_app(Settings(bundle=bundle, max_image_pixels=250_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 120
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, c.get("/readyz").text
            time.sleep(0.05)  # polling a condition, with a deadline
        yield c


def test_pixel_limit_is_a_clear_413_through_the_app(client):
    big = Image.new("L", (600, 600), 255)
    ImageDraw.Draw(big).line([(100, 100), (500, 500)], fill=0, width=40)
    r = client.post("/v1/reconstruct", files={"image": ("d.png", encode(big), "image/png")})
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "600x600" in detail and "250,000" in detail and "scale it down" in detail
