"""CPU cost of the service's upload path (decode + MNIST normalisation) per kind of image.

Builds ordinary uploads and the ones an attacker would send (a 4000x4000 one-dot PNG, the
same in 1 bit, a large progressive JPEG, many-frame and transparent GIFs, a 16-bit PNG, a
PNG of tiny chunks, a JPEG of many scans ...) and prints, for each, the answer
(200-like "ok" or the 4xx status) and the median CPU time (``time.process_time``) of
``sdr_service.inputs.decode_upload`` over ``--repeats`` runs, with its ratio to the normal
28x28 and 280x280 drawings and to a whole normal request (``--request-ms``, ~9 ms: the
figure in issue 10; or measured with ``--bundle DIR``: ``POST /v1/reconstruct`` of the
280x280 drawing through the in-process app).

    PYTHONPATH=.:service python scripts/bench_upload_cost.py --repeats 7

Runs against whatever ``sdr_service`` is imported, so the same script measures the code
before and after a change (e.g. with ``git stash``).
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import time
import zlib

import numpy as np
from PIL import Image, ImageDraw


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _digit(size: int, ink: int = 255, paper: int = 0, width: int | None = None) -> Image.Image:
    """A "7"-like stroke drawing on a size x size canvas."""
    img = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(img)
    w = width or max(1, size // 12)
    s = size / 28
    draw.line([(7 * s, 7 * s), (21 * s, 7 * s), (12 * s, 22 * s)], fill=ink, width=w)
    return img


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_many_chunks(n: int) -> bytes:
    """A valid 28x28 PNG with ``n`` empty private ancillary chunks before its pixels."""
    png = _encode(_digit(28), "PNG")
    head, rest = png[:33], png[33:]  # signature + IHDR, then IDAT...
    return head + _png_chunk(b"prVt", b"") * n + rest


def _jpeg_many_scans(n: int) -> bytes:
    """A progressive JPEG whose last scan is repeated ``n`` times (libjpeg only warns)."""
    data = _encode(_digit(512).convert("RGB"), "JPEG", quality=90, progressive=True)
    last = data.rindex(b"\xff\xda")
    return data[:last] + data[last:-2] * n + b"\xff\xd9"


def _gif_frames(n: int, size: int = 28) -> bytes:
    frames = [_digit(size, ink=255 - (i % 7)).convert("P") for i in range(n)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)


def attack_images() -> dict[str, bytes]:
    """name -> file bytes; the first two are the normal requests the others are compared to.

    Besides issue 10's 4000x4000 images, the largest images the default limit (8 Mi pixels,
    8 MiB decoded for full-size formats, 10 x that in JPEG scan-pixels) accepts: 2896x2896
    at 8 bits, 1672x1672 RGB, 1448x1448 RGBA.
    """
    rng = np.random.default_rng(0)
    dot = Image.new("RGB", (4000, 4000), "white")
    dot.putpixel((2000, 2000), (0, 0, 0))
    side = 2896
    grey = _digit(side, ink=0, paper=255)
    noise = Image.fromarray(rng.integers(0, 256, (side, side), np.uint8)).convert("RGB")
    sixteen = np.full((2000, 2000), 65535, np.uint16)
    sixteen[np.asarray(_digit(2000)) > 0] = 12000
    transparent = _digit(side, ink=1, paper=0).convert("P")
    rgb_dot = Image.new("RGB", (1672, 1672), "white")
    rgb_dot.putpixel((5, 1600), (0, 0, 0))
    rgb_dot.putpixel((1600, 5), (0, 0, 0))
    return {
        "normal 28x28 PNG": _encode(_digit(28), "PNG"),
        "normal 280x280 PNG (RGBA canvas)": _encode(_digit(280).convert("RGBA"), "PNG"),
        "280x280 JPEG": _encode(_digit(280).convert("RGB"), "JPEG", quality=90),
        "4000x4000 one-dot PNG, RGB": _encode(dot, "PNG", optimize=True),
        "4000x4000 one-dot PNG, 1-bit": _encode(dot.convert("1"), "PNG", optimize=True),
        "4000x4000 progressive JPEG": _encode(
            _digit(4000, 0, 255), "JPEG", quality=95, progressive=True
        ),
        f"{side}x{side} digit PNG, grey": _encode(grey, "PNG", optimize=True),
        f"{side}x{side} digit PNG, 1-bit": _encode(grey.convert("1"), "PNG", optimize=True),
        "1672x1672 two-dot PNG, RGB": _encode(rgb_dot, "PNG"),
        "1448x1448 digit PNG, RGBA": _encode(_digit(1448).convert("RGBA"), "PNG"),
        f"{side}x{side} GIF with transparency": _encode(transparent, "GIF", transparency=0),
        f"{side}x{side} progressive JPEG": _encode(grey, "JPEG", quality=95, progressive=True),
        f"{side}x{side} noise JPEG (~2 MiB)": _encode(noise, "JPEG", quality=15),
        f"{side}x{side} noise progressive JPEG": _encode(
            noise, "JPEG", quality=10, progressive=True
        ),
        "JPEG of 1500 scans": _jpeg_many_scans(1500),
        "GIF of 5000 frames": _gif_frames(5000),
        "PNG of 150000 tiny chunks": _png_many_chunks(150_000),
        "2000x2000 16-bit grey PNG": _encode(Image.fromarray(sixteen), "PNG"),
    }


def measure(data: bytes, max_pixels: int, repeats: int) -> tuple[str, float]:
    """(outcome, median CPU ms) of ``decode_upload`` on ``data``."""
    from sdr_service.errors import ApiError
    from sdr_service.inputs import decode_upload

    times, outcome = [], "ok"
    for _ in range(repeats):
        t0 = time.process_time()
        try:
            decode_upload(data, max_pixels)
        except ApiError as exc:
            outcome = f"{exc.status}"
        times.append(time.process_time() - t0)
    return outcome, statistics.median(times) * 1000.0


def request_ms(bundle: str, data: bytes, repeats: int) -> float:
    """Median CPU ms of a whole ``POST /v1/reconstruct`` of ``data`` (in-process app)."""
    from fastapi.testclient import TestClient

    from sdr_service import Settings, create_app

    app = create_app(Settings(bundle=bundle))
    with TestClient(app) as client:
        deadline = time.monotonic() + 300
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"{bundle}: not ready after 300 s")
            time.sleep(0.1)
        files = {"image": ("d.png", data, "image/png")}
        for _ in range(20):  # warm-up
            client.post("/v1/reconstruct", files=files)
        times = []
        for _ in range(max(repeats, 51)):
            t0 = time.process_time()
            r = client.post("/v1/reconstruct", files=files)
            times.append(time.process_time() - t0)
            assert r.status_code == 200, r.text
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per image (median)")
    parser.add_argument(
        "--request-ms", type=float, default=9.0, help="CPU of a whole normal request (issue 10)"
    )
    parser.add_argument(
        "--bundle", help="measure --request-ms instead: reconstruct requests on this bundle"
    )
    args = parser.parse_args()
    import warnings

    from sdr_service.settings import Settings

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    max_pixels = Settings().max_image_pixels
    images = attack_images()
    rows = []
    for name, data in images.items():
        outcome, ms = measure(data, max_pixels, args.repeats)
        rows.append((name, len(data), outcome, ms))
    base28, base280 = rows[0][3], rows[1][3]
    if args.bundle:
        args.request_ms = request_ms(args.bundle, images["normal 280x280 PNG (RGBA canvas)"], 51)
    print(f"a normal request (280x280 PNG, /v1/reconstruct): {args.request_ms:.1f} CPU ms")
    print(f"max_image_pixels={max_pixels:,}, median of {args.repeats} runs, CPU ms")
    head = f"{'image':36} {'bytes':>9} {'answer':>6} {'CPU ms':>8} {'/28x28':>7} {'/280x280':>8}"
    print(head + f" {'/request':>8}")
    for name, size, outcome, ms in rows:
        # a normal request = its decode path plus the rest of the request
        request = (ms - base280 + args.request_ms) / args.request_ms
        print(
            f"{name:36} {size:>9,} {outcome:>6} {ms:>8.1f} {ms / base28:>7.1f} "
            f"{ms / base280:>8.1f} {request:>8.1f}"
        )


if __name__ == "__main__":
    main()
