"""Image decoding within a cost budget: reduced before float work, bounded formats, real files."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

import sdrindex.images as images
from sdrindex.errors import DataError
from sdrindex.images import decode_image, normalize_digit

# (a DataError before these existed: the tests then fail on what they assert, not on import)
ImageTooLarge = getattr(images, "ImageTooLarge", DataError)
MAX_FRAMES = getattr(images, "MAX_FRAMES", 1000)
MAX_BLOCKS = getattr(images, "MAX_BLOCKS", 16_384)
MAX_JPEG_SCANS = getattr(images, "MAX_JPEG_SCANS", 64)
WORK_PIXELS = getattr(images, "WORK_PIXELS", 1 << 20)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def seven(size: int, ink: int = 0, paper: int = 255) -> Image.Image:
    """A "7" drawn on a square canvas: its bar at the top, its stem going down-left."""
    img = Image.new("L", (size, size), paper)
    s = size / 28
    ImageDraw.Draw(img).line(
        [(6 * s, 5 * s), (22 * s, 5 * s), (11 * s, 23 * s)], fill=ink, width=max(1, size // 10)
    )
    return img


@pytest.fixture
def float_shapes(monkeypatch):
    """Records the shape of every image handed to the per-pixel float conversion."""
    shapes: list[tuple[int, int]] = []
    real = getattr(images, "_ink_levels", None)

    def spy(crop, values):
        out = real(crop, values)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(images, "_ink_levels", spy, raising=False)
    return shapes


def test_one_dot_4000px_is_not_converted_at_full_size(float_shapes):
    dot = Image.new("L", (4000, 4000), 255)  # (in RGB: refused, 48 MB once decoded)
    dot.putpixel((1234, 2345), 0)
    for img in (dot, dot.convert("1")):
        data = encode(img)
        float_shapes.clear()
        tracemalloc.start()  # numpy's arrays are traced; Pillow's own buffers are not
        try:
            out = normalize_digit(decode_image(data, max_pixels=16_000_000))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert out.max() > 0
        # no array of the image's size, not even in uint8 (before: 128 MB of float64)
        assert peak < 4000 * 4000 // 4
        assert float_shapes == [(1, 1)]  # the only float work: the dot itself


def test_large_ink_is_reduced_before_float_work(float_shapes):
    big = seven(3000)
    out = normalize_digit(decode_image(encode(big), max_pixels=16_000_000))
    assert float_shapes and max(h * w for h, w in float_shapes) <= WORK_PIXELS
    # ... and still the digit the small drawing gives
    small = normalize_digit(decode_image(encode(seven(280))))
    assert np.abs(out.astype(int) - small.astype(int)).mean() < 8


def test_large_jpeg_is_decoded_at_reduced_scale():
    data = encode(seven(4000).convert("RGB"), "JPEG", quality=90)
    gray = decode_image(data, max_pixels=16_000_000)
    assert gray.mode == "L" and gray.width * gray.height <= 4000 * 4000 // 4


def test_ordinary_images_are_normalised_as_before(float_shapes):
    # The 8-bit path crops before converting; its arithmetic is the float path's.
    rng = np.random.default_rng(3)
    for size in (28, 84, 280):
        arr = np.asarray(seven(size, ink=255, paper=0), np.uint8).copy()
        arr = np.clip(arr.astype(int) + rng.integers(0, 20, arr.shape), 0, 255).astype(np.uint8)
        got = normalize_digit(arr)
        want = normalize_digit(arr.astype(np.float64))  # the float path, per pixel
        assert np.array_equal(got, want)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.full((200, 200), 65535, np.uint16)  # white paper, 16 bits
    ink = np.asarray(seven(200)) == 0
    arr[ink] = 12000  # dark grey ink, far above 255
    data = encode(Image.fromarray(arr))
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")  # a real 16-bit PNG
    gray = np.asarray(decode_image(data))
    assert gray[~ink].min() == 255 and gray[ink].max() == round(12000 * 255 / 65535)
    out = normalize_digit(decode_image(data))
    assert out.max() == 255 and (out > 0).sum() > 20


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(orientation):
    upright = seven(280)
    # A camera stores the pixels rotated and says so in the EXIF Orientation tag; 6 means
    # "rotate 90 degrees clockwise to view", so the stored pixels are rotated the other way.
    stored = upright.transpose(
        Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
    got = normalize_digit(decode_image(data)).astype(int)
    want = normalize_digit(upright).astype(int)
    assert np.abs(got - want).mean() < 4
    # the bar of the 7 is at the top: most ink in the upper rows
    assert got[:12].sum() > got[16:].sum()


def test_many_frame_gif_is_refused_cheaply():
    # consecutive frames differ, or Pillow merges them
    frames = [seven(28, ink=i % 200).convert("P") for i in range(MAX_FRAMES + 5)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)
    with pytest.raises(ImageTooLarge, match="frames"):
        decode_image(data)
    few = encode(frames[0], "GIF", save_all=True, append_images=frames[1:3], duration=10)
    assert normalize_digit(decode_image(few)).max() > 0  # the first frame only


def test_apng_declaring_too_many_frames_is_refused():
    frames = [seven(28)] * 3
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    pos = data.index(b"acTL")
    body = data[pos + 4 : pos + 12]
    forged = struct.pack(">II", 10**6, 0)
    crc = struct.pack(">I", zlib.crc32(b"acTL" + forged) & 0xFFFFFFFF)
    data = data[: pos + 4] + forged + crc + data[pos + 4 + len(body) + 4 :]
    with pytest.raises(ImageTooLarge, match="1,000,000 frames"):
        decode_image(data)


def test_png_of_tiny_chunks_and_jpeg_of_many_scans_are_refused():
    png = encode(seven(28))
    chunk = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    with pytest.raises(ImageTooLarge, match="PNG chunks"):
        decode_image(png[:33] + chunk * (MAX_BLOCKS + 1) + png[33:])
    jpeg = encode(seven(64).convert("RGB"), "JPEG", progressive=True)
    last = jpeg.rindex(b"\xff\xda")
    with pytest.raises(ImageTooLarge, match="scans"):
        decode_image(jpeg[:last] + jpeg[last:-2] * (MAX_JPEG_SCANS + 1) + b"\xff\xd9")


def test_decoded_bytes_count_for_full_size_formats():
    rgba = Image.new("RGBA", (1100, 1000), (255, 255, 255, 255))  # 4.4 MB decoded
    with pytest.raises(ImageTooLarge, match="bytes decoded"):
        decode_image(encode(rgba), max_pixels=4_000_000)
    grey = seven(1100)  # 1.1 MB decoded: fine
    assert normalize_digit(decode_image(encode(grey), max_pixels=4_000_000)).max() > 0


def test_pixel_limit_and_bomb_are_clear_errors():
    with pytest.raises(ImageTooLarge, match="more than the 1,000,000 allowed"):
        decode_image(encode(seven(1001)), max_pixels=1_000_000)
    blank = Image.new("1", (20000, 20000))  # 400 MP, above Pillow's own bomb limit
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        decode_image(encode(blank))
    with pytest.raises(DataError, match="not an image"):
        decode_image(b"hello, world")


def test_build_keeps_reading_large_colour_files(tmp_path):
    # `sdrindex build` reads local files: the decoded-bytes budget of uploads is 4x larger
    img = Image.new("RGB", (4000, 4000), "white")  # 48 MB decoded, over the default 40 MB
    ImageDraw.Draw(img).line([(1000, 800), (3000, 3200)], fill=(0, 0, 0), width=200)
    path = tmp_path / "big.png"
    path.write_bytes(encode(img))
    with pytest.raises(ImageTooLarge, match="bytes decoded"):
        decode_image(path.read_bytes())
    assert images.load_image_file(path).max() == 255


def test_palette_transparency_is_composited_per_entry_exactly():
    rng = np.random.default_rng(5)
    img = Image.fromarray(rng.integers(0, 16, (60, 60), np.uint8), "L").convert("P")
    img.putpalette(rng.integers(0, 256, 48).tolist())
    data = encode(img, transparency=bytes(rng.integers(0, 256, 16).astype(np.uint8)))
    pal = Image.open(io.BytesIO(data))
    assert pal.mode == "P" and isinstance(pal.info["transparency"], bytes)
    # the palette path (once per entry) gives what compositing every pixel gives
    assert np.array_equal(normalize_digit(pal), normalize_digit(pal.convert("RGBA")))


def test_wide_grey_modes_are_scaled():
    ink = np.asarray(seven(100)) == 0
    deep = np.where(ink, 10_000_000, 90_000_000).astype(np.int32)  # 32-bit, beyond 16 bits
    unit = np.where(ink, 0.1, 0.9).astype(np.float32)  # float in 0..1
    for arr in (deep, unit):
        out = normalize_digit(Image.fromarray(arr))
        assert out.max() == 255 and (out > 0).sum() > 20
    uniform = Image.fromarray(np.full((30, 30), 70_000, np.int32))
    with pytest.raises(DataError, match="no ink"):
        normalize_digit(uniform)
