"""CPU cost of the service's upload path (decode + MNIST normalisation) per kind of image.

Builds ordinary uploads and the ones an attacker would send (a 4000x4000 one-dot PNG, the
same in 1 bit, a large progressive JPEG, many-frame and transparent GIFs, a 16-bit PNG, a
PNG of tiny chunks, a JPEG of many scans ...) and prints, for each, the answer
(200-like "ok" or the 4xx status) and the median CPU time (``time.process_time``) of
``sdr_service.inputs.decode_upload`` over ``--repeats`` runs, with its ratio to the normal
28x28 and 280x280 drawings and to a whole normal request (``--request-ms``, ~9 ms: the
figure in issue 10).

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
    """name -> file bytes; the first two are the normal requests the others are compared to."""
    rng = np.random.default_rng(0)
    dot = Image.new("RGB", (4000, 4000), "white")
    dot.putpixel((2000, 2000), (0, 0, 0))
    big_digit = _digit(4000, ink=0, paper=255)
    noise = Image.fromarray(rng.integers(0, 256, (2900, 2900), np.uint8)).convert("RGB")
    sixteen = np.full((2000, 2000), 65535, np.uint16)
    sixteen[np.asarray(_digit(2000)) > 0] = 0
    transparent = Image.new("P", (4000, 4000), 0)
    transparent.putpixel((10, 10), 1)
    return {
        "normal 28x28 PNG": _encode(_digit(28), "PNG"),
        "normal 280x280 PNG (RGBA canvas)": _encode(_digit(280).convert("RGBA"), "PNG"),
        "280x280 JPEG": _encode(_digit(280).convert("RGB"), "JPEG", quality=90),
        "4000x4000 one-dot PNG, RGB": _encode(dot, "PNG", optimize=True),
        "4000x4000 one-dot PNG, 1-bit": _encode(dot.convert("1"), "PNG", optimize=True),
        "4000x4000 digit PNG, grey": _encode(big_digit, "PNG", optimize=True),
        "2000x2000 digit PNG, RGBA": _encode(_digit(2000).convert("RGBA"), "PNG"),
        "4000x4000 GIF with transparency": _encode(transparent, "GIF", transparency=0),
        "4000x4000 progressive JPEG": _encode(big_digit, "JPEG", quality=95, progressive=True),
        "2900x2900 noise JPEG (~2 MiB)": _encode(noise, "JPEG", quality=15),
        "2900x2900 noise progressive JPEG": _encode(noise, "JPEG", quality=10, progressive=True),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per image (median)")
    parser.add_argument(
        "--request-ms", type=float, default=9.0, help="CPU of a whole normal request (issue 10)"
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
