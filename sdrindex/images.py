"""Arbitrary images -> MNIST-like 28x28 digits, and image sources for ``sdrindex build``.

MNIST's own recipe (LeCun et al.): grey levels, the digit cropped to its bounding box,
scaled to fit a 20x20 box keeping its aspect ratio, then centred by its centre of mass
in a 28x28 field. ``normalize_digit`` applies it to any photo or drawing, inverting it
first when the background is light (dark ink on white paper).

Decoding is held to a budget, because an upload of a few KB can claim millions of pixels:
:func:`open_image` reads the header and the file's structure and refuses, before decoding,
an image whose decoding would cost too much (pixels, decoded bytes, frames, JPEG scans,
chunk counts: :class:`ImageTooLarge`); :func:`load_gray` decodes large JPEGs at reduced
scale and only the first frame of an animation; :func:`normalize_digit` finds the ink on
8-bit grey levels and converts only the cropped (and, past :data:`WORK_PIXELS`, reduced)
ink to floats.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import DataError, ParameterError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
#: A pixel counts as ink when it is at least this fraction of the brightest ink pixel.
INK_FRACTION = 0.1
#: The largest image (width x height) ``decode_image`` takes unless told otherwise. The
#: service passes its own, lower ``SDRINDEX_MAX_IMAGE_PIXELS``.
DEFAULT_MAX_PIXELS = 40_000_000
#: Ink cropped from an image is box-reduced to at most this many pixels before any float
#: work: the digit ends up 20x20, and every image up to 1024x1024 comes out exactly as before.
WORK_PIXELS = 1 << 20
#: Frames an animated image may declare; only the first one is ever decoded.
MAX_FRAMES = 1000
#: Scans a JPEG may have. Each scan of a progressive JPEG is a pass over every block of the
#: full-size image, whatever ``draft`` scales the output to; libjpeg writes 10 at most.
MAX_JPEG_SCANS = 64
#: ... and scans x pixels may be at most this many times the pixel limit (the whole limit at
#: 10 scans): a 2 MiB progressive JPEG costs ~4x a baseline one of the same size.
JPEG_SCAN_PIXELS = 10
#: PNG chunks, GIF blocks or JPEG markers a file may hold, at least; Pillow walks them in
#: Python, so a file of tiny chunks costs ~1 s per 2 MiB. Encoders write 8-64 KB chunks and
#: 255-byte GIF blocks, so larger files get ``len(data) // 128``.
MAX_BLOCKS = 16_384

#: Bits per pixel Pillow keeps for a mode (its decoded size; PNG's own depth is read from IHDR).
_MODE_BITS = {"1": 1, "L": 8, "P": 8, "LA": 16, "La": 16, "PA": 16, "RGB": 24, "YCbCr": 24}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: EXIF orientation -> the transpose that puts the image the right way up.
_ORIENTATION = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # PIL.Image.Transpose values
_EXIF_ORIENTATION = 0x0112


class ImageTooLarge(DataError):
    """An image whose decoding would cost more than its limits allow (the service: 413)."""


class NotAnImage(DataError):
    """Bytes that are not an image in an accepted format (the service: 415)."""


class UnreadableImage(DataError):
    """An image whose header reads but whose pixels do not (the service: 400)."""


# --------------------------------------------------------------------------- file structure


def _png_structure(data: bytes, name: str, cap: int) -> tuple[int | None, int]:
    """A PNG's bits per pixel (from IHDR) and declared frame count, its chunks counted."""
    bits, frames, pos, n, end = None, 1, 8, 0, len(data)
    while pos + 8 <= end:
        n += 1
        if n > cap:
            raise ImageTooLarge(
                f"{name} holds more than {cap} PNG chunks; re-save it with a common encoder"
            )
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IHDR" and length >= 13 and pos + 18 <= end:
            bits = data[pos + 16] * _PNG_CHANNELS.get(data[pos + 17], 4)
        elif kind == b"acTL" and length >= 8 and pos + 12 <= end:
            frames = int.from_bytes(data[pos + 8 : pos + 12], "big")
        elif kind == b"IEND":
            break
        pos += 12 + length
    return bits, frames


def _gif_frames(data: bytes, name: str, cap: int) -> int:
    """The number of frames of a GIF (up to MAX_FRAMES + 1), its blocks counted."""
    end = len(data)
    if end < 13:
        return 1
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames = steps = 0
    while pos < end:
        kind = data[pos]
        if kind == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif kind == 0x2C:  # image descriptor, local palette, LZW code size, sub-blocks
            frames += 1
            if frames > MAX_FRAMES or pos + 10 > end:
                break
            flags = data[pos + 9]
            pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        else:  # the trailer, or damage Pillow reports itself
            break
        while pos < end:
            steps += 1
            if steps > cap:
                raise ImageTooLarge(
                    f"{name} holds more than {cap} GIF blocks; re-save it with a common encoder"
                )
            size = data[pos]
            pos += size + 1
            if not size:
                break
    return max(frames, 1)


def _jpeg_scans(data: bytes, name: str, cap: int) -> int:
    """The number of scans of a JPEG, the markers before its first scan counted."""
    pos, steps, end = 2, 0, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        steps += 1
        if steps > cap:
            raise ImageTooLarge(
                f"{name} holds more than {cap} JPEG markers; re-save it with a common encoder"
            )
        marker = data[pos + 1]
        if marker == 0xDA:
            break
        if marker == 0xFF:  # fill byte
            pos += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    # Entropy-coded data stuffs every 0xFF with 0x00, so each FFDA starts a scan.
    return data.count(b"\xff\xda")


def _structure(data: bytes, name: str) -> tuple[int | None, int, int]:
    """(PNG bits per pixel, frames, JPEG scans) read from the bytes, before Pillow walks them.

    Pillow reads PNG chunks, GIF blocks and JPEG markers in Python while opening, so each
    walk here stops after ``max(MAX_BLOCKS, len(data) // 128)`` of them.
    """
    cap = max(MAX_BLOCKS, len(data) // 128)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        bits, frames = _png_structure(data, name, cap)
        return bits, frames, 0
    if data[:4] == b"GIF8":
        return None, _gif_frames(data, name, cap), 0
    if data[:2] == b"\xff\xd8":
        return None, 1, _jpeg_scans(data, name, cap)
    return None, 1, 0


def _check_cost(
    img, structure: tuple[int | None, int, int], name: str, max_pixels: int, max_bytes: int
) -> None:
    """Refuse an opened (not decoded) image whose decoding would exceed the budget."""
    width, height = img.size
    pixels = width * height
    if width < 1 or height < 1:
        raise UnreadableImage(f"{name} has no pixels ({width}x{height})")
    if pixels > max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {pixels:,} pixels, more than the {max_pixels:,} "
            f"allowed; scale it down (a digit needs no more than 1000x1000)"
        )
    fmt = img.format
    bits, frames, scans = structure
    if fmt in ("JPEG", "MPO"):
        allowed = min(MAX_JPEG_SCANS, JPEG_SCAN_PIXELS * max_pixels // pixels)
        if scans > allowed:
            raise ImageTooLarge(
                f"{name} is a JPEG of {width}x{height} pixels in {scans} scans, more than the "
                f"{allowed} allowed at that size (each scan decodes every pixel); save it as "
                "a baseline (non-progressive) JPEG or scale it down"
            )
    if fmt in ("WEBP", "MPO"):
        frames = getattr(img, "n_frames", 1)  # declared in the file: libwebp / the MP index
    if frames > MAX_FRAMES:
        count = f"more than {MAX_FRAMES}" if fmt == "GIF" else f"{frames:,}"
        raise ImageTooLarge(
            f"{name} has {count} frames, more than the {MAX_FRAMES} allowed (only the first "
            "is used); send a still image"
        )
    if fmt not in ("JPEG", "MPO"):  # decoded at full size: its decoded bytes count too
        bits = max(8, bits or _MODE_BITS.get(img.mode, 32))
        if pixels * bits // 8 > max_bytes:
            allowed = max_bytes * 8 // bits
            raise ImageTooLarge(
                f"{name} is {width}x{height} pixels at {bits} bits each "
                f"({pixels * bits // 8:,} bytes decoded), more than the {max_bytes:,} bytes "
                f"allowed for a {fmt} (decoded at full size); scale it down to {allowed:,} "
                "pixels, save it as 8-bit greyscale, or send a JPEG"
            )


def _median(values: NDArray[np.float64]) -> float:
    """np.median of a 1-D array, without its overhead (~10x faster on a border's pixels)."""
    n = values.shape[0]
    mid = n // 2
    if n % 2:
        return float(np.partition(values, mid)[mid])
    part = np.partition(values, (mid - 1, mid))
    return float((part[mid - 1] + part[mid]) / 2.0)


# --------------------------------------------------------------------------- decoding


def open_image(
    data: bytes,
    name: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: tuple[str, ...] | None = None,
    max_bytes: int | None = None,
):
    """Open image bytes with Pillow and check what decoding them would cost, decoding nothing.

    Parameters
    ----------
    data : bytes
        The image file.
    name : str
        Used in error messages.
    max_pixels : int
        Largest width x height.
    formats : tuple of str, optional
        Pillow format names to accept (default: any Pillow reads).
    max_bytes : int, optional
        Most bytes an image of a format decoded at full size (all but JPEG) may hold once
        decoded, at 8 bits or more per pixel (default ``max_pixels``: an RGB image may then
        have a third of ``max_pixels``).

    Returns
    -------
    PIL.Image.Image
        Opened, not loaded; pass it to :func:`load_gray`.

    Raises
    ------
    NotAnImage
        Not an image (in one of ``formats``).
    ImageTooLarge
        Too many pixels, decoded bytes, frames, JPEG scans, or file blocks.
    UnreadableImage
        A header Pillow cannot read.
    """
    from PIL import Image, UnidentifiedImageError

    structure = _structure(data, name)
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        accepted = ", ".join(formats) if formats else "one Pillow reads"
        raise NotAnImage(f"{name} is not an image in a supported format ({accepted})") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"{name} refused as a decompression bomb ({exc}); at most {max_pixels:,} pixels "
            "are allowed: scale it down"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise UnreadableImage(f"{name} could not be decoded ({exc})") from None
    try:
        _check_cost(img, structure, name, max_pixels, max_bytes or max_pixels)
    except BaseException:
        img.close()
        raise
    return img


def _orientation(img) -> int | None:
    """The PIL.Image.Transpose that applies the image's EXIF orientation, if any."""
    exif = img.info.get("exif")
    # Pillow parses EXIF tags in Python; a JPEG's EXIF is at most 64 KB, so larger ones
    # (possible in PNG) are ignored rather than parsed.
    if isinstance(exif, bytes) and len(exif) > 65536:
        return None
    try:
        value = img.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a damaged EXIF block leaves the image as stored
        return None
    return _ORIENTATION.get(value) if isinstance(value, int) else None


def _scaled_to_8bit(img):
    """A 16-bit or 32-bit grey image as 8-bit "L", its range scaled rather than clipped.

    16-bit modes map 0..65535 onto 0..255. "I" and "F" (no declared depth) are kept when
    they lie in 0..255, read as 16-bit when in 0..65535 (or as 0..1 for "F"), else stretched.
    """
    from PIL import Image

    if img.mode.startswith("I;16"):
        lut = np.rint(np.arange(65536) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(lut[np.asarray(img)], "L")
    lo, hi = img.getextrema()
    arr = np.asarray(img, dtype=np.float32)
    if lo >= 0 and hi <= 255 and not (img.mode == "F" and hi <= 1):
        pass
    elif lo >= 0 and hi <= 1 and img.mode == "F":
        arr = arr * 255.0
    elif lo >= 0 and hi <= 65535:
        arr = arr * (255.0 / 65535.0)
    else:  # (a uniform image stays uniform: normalize_digit finds no ink)
        arr = (arr - lo) * (255.0 / ((hi - lo) or 1))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _composite_on_white(img):
    """An image with transparency, composited on white, as "L" (Pillow's own arithmetic)."""
    from PIL import Image

    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("L")


def _palette_gray(img):
    """A palette image with transparency as "L": composited once per palette entry.

    The same values as compositing every pixel, for one table look-up per pixel.
    """
    from PIL import Image

    strip = Image.frombytes("P", (256, 1), bytes(range(256)))
    mode = img.palette.mode
    strip.putpalette(img.getpalette(rawmode=mode), rawmode=mode)
    strip.info["transparency"] = img.info["transparency"]
    table = np.asarray(_composite_on_white(strip)).ravel()
    return Image.fromarray(table[np.asarray(img)], "L")


def _gray_image(img):
    """Pillow image -> 8-bit grey ("L"); transparency composited on white, 16-bit scaled.

    A large image with an alpha channel is box-reduced (``reduce`` premultiplies alpha)
    before compositing, which costs ~15 ms per megapixel.
    """
    if img.mode == "P" and "transparency" in img.info:
        return _palette_gray(img)
    if img.mode in ("RGBA", "LA", "PA"):
        pixels = img.width * img.height
        if pixels > WORK_PIXELS:
            img = img.convert("RGBA") if img.mode == "PA" else img
            img = img.reduce(int(np.ceil((pixels / WORK_PIXELS) ** 0.5)))
        return _composite_on_white(img)
    if img.mode.startswith("I") or img.mode == "F":
        return _scaled_to_8bit(img)
    return img if img.mode == "L" else img.convert("L")


def load_gray(img, name: str = "image"):
    """Decode an image from :func:`open_image` as an upright 8-bit grey ("L") image.

    A JPEG above :data:`WORK_PIXELS` is decoded at 1/2 to 1/8 scale (``draft``); other
    formats at full size, which :func:`open_image` bounded. Only the first frame of an
    animation is decoded; EXIF orientation is applied; 16-bit grey is scaled to 8 bits.

    Raises
    ------
    UnreadableImage
        The pixels cannot be decoded (truncated or damaged file).
    ImageTooLarge
        Pillow's own decompression-bomb check refused it.
    """
    from PIL import Image

    width, height = img.size
    if img.format in ("JPEG", "MPO") and width * height > WORK_PIXELS:
        side = (WORK_PIXELS / (width * height)) ** 0.5
        want = (max(1, int(width * side)), max(1, int(height * side)))
        if min(width // want[0], height // want[1]) >= 2:  # draft would scale it
            img.draft("L", want)
    try:
        img.load()
        gray = _gray_image(img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name} refused as a decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise UnreadableImage(
            f"{name}: not a readable image ({type(exc).__name__}: {exc}) ({img.format})"
        ) from None
    if gray is img:  # the caller closes img
        gray = img.copy()
    method = _orientation(img)
    return gray if method is None else gray.transpose(Image.Transpose(method))


def decode_image(
    data: bytes,
    name: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: tuple[str, ...] | None = None,
    max_bytes: int | None = None,
):
    """Image bytes -> upright 8-bit grey Pillow image, within the decoding budget.

    :func:`open_image` then :func:`load_gray`; the result is what :func:`normalize_digit`
    takes. Every failure is a :class:`~sdrindex.errors.DataError` (:class:`NotAnImage`,
    :class:`ImageTooLarge`, :class:`UnreadableImage`) naming ``name``.
    """
    with open_image(data, name, max_pixels, formats, max_bytes) as img:
        return load_gray(img, name)


# --------------------------------------------------------------------------- normalisation


def _ink_levels(crop, values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The crop's 8-bit grey levels -> ink intensities (float); the one float conversion."""
    return values[np.asarray(crop)]


def _ink_crop_gray(gray, name: str) -> tuple[NDArray[np.float64], float]:
    """The ink of an "L" image, cropped to its bounding box before any float work.

    Same arithmetic as :func:`_ink_crop_float`, done once per grey level (a 256-entry
    table) rather than once per pixel; the box comes from Pillow's ``point``/``getbbox``.
    """
    width, height = gray.size
    if width == 0 or height == 0:
        raise DataError(f"{name}: the image has no pixels")
    edges = ((0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height))
    edges += ((width - 1, 0, width, height),)
    border = np.concatenate([np.asarray(gray.crop(e), np.float64).ravel() for e in edges])
    background = _median(border)
    levels = np.arange(256, dtype=np.float64)
    lo, hi = gray.getextrema()
    darkest_is_ink = background > 127
    if darkest_is_ink:  # dark ink on light paper -> MNIST's light ink on black
        levels = 255.0 - levels
        background = 255.0 - background
    values = np.clip(levels - background, 0, 255)
    peak = float(values[lo if darkest_is_ink else hi])
    if peak <= 0:
        raise DataError(f"{name}: no ink found (the image is uniform); draw or photograph a digit")
    mask = np.where(values >= INK_FRACTION * peak, 255, 0).tolist()
    crop = gray.crop(gray.point(mask).getbbox())
    pixels = crop.width * crop.height
    if pixels > WORK_PIXELS:  # a box filter first: the crop ends up 20x20 anyway
        crop = crop.reduce(int(np.ceil((pixels / WORK_PIXELS) ** 0.5)))
    return _ink_levels(crop, values), peak


def _ink_crop_float(gray: NDArray[np.float64], name: str) -> tuple[NDArray[np.float64], float]:
    """The ink of a grey float array, cropped to its bounding box."""
    if gray.size == 0:
        raise DataError(f"{name}: the image has no pixels")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = _median(border)
    if background > 127:
        gray = 255.0 - gray  # dark ink on light paper -> MNIST's light ink on black
        background = 255.0 - background
    gray = np.clip(gray - background, 0, 255)
    peak = gray.max()
    if peak <= 0:
        raise DataError(f"{name}: no ink found (the image is uniform); draw or photograph a digit")
    ink = gray >= INK_FRACTION * peak
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], float(peak)


def _centre_digit(crop: NDArray[np.float64], peak: float, name: str) -> NDArray[np.uint8]:
    """Cropped ink -> scaled to fit 20x20, centred by its centre of mass in 28x28."""
    from PIL import Image

    crop = crop * (255.0 / peak)
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(
        Image.fromarray(crop.astype(np.float32), mode="F").resize(
            (nw, nh), Image.Resampling.LANCZOS
        ),
        dtype=np.float64,
    )
    small = np.clip(small, 0, 255)
    total = small.sum()
    if total <= 0:
        raise DataError(f"{name}: no ink left after scaling")
    cy = float(small.sum(axis=1) @ np.arange(nh)) / total
    cx = float(small.sum(axis=0) @ np.arange(nw)) / total
    top = int(round(14 - cy))
    left = int(round(14 - cx))
    top = min(max(top, 0), 28 - nh)
    left = min(max(left, 0), 28 - nw)
    out = np.zeros((28, 28), np.float64)
    out[top : top + nh, left : left + nw] = small
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def normalize_digit(image, name: str = "image") -> NDArray[np.uint8]:
    """Make one image look like an MNIST digit: (28, 28) uint8, white ink on black.

    An 8-bit image (a Pillow image, or a uint8 array) is cropped to its ink before any
    per-pixel float work; pass large images through :func:`decode_image` (or
    :func:`load_gray`) first, which bounds their size.

    Parameters
    ----------
    image : PIL.Image.Image or array of shape (H, W) (grey) or (H, W, 3|4)
    name : str
        Used in error messages.

    Raises
    ------
    DataError
        When the image is empty or has no ink (a uniform image).
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        crop, peak = _ink_crop_gray(_gray_image(image), name)
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            crop, peak = _ink_crop_gray(_gray_image(Image.fromarray(arr.astype(np.uint8))), name)
        elif arr.ndim == 2 and arr.dtype == np.uint8 and arr.size:
            crop, peak = _ink_crop_gray(Image.fromarray(arr, "L"), name)
        elif arr.ndim == 2:
            crop, peak = _ink_crop_float(arr.astype(np.float64), name)
        else:
            raise DataError(
                f"{name}: expected a grey (H, W) or colour (H, W, 3|4) image, got {arr.shape}"
            )
    return _centre_digit(crop, peak, name)


def load_image_file(path: str | Path) -> NDArray[np.uint8]:
    """Read and normalise one image file to a (28, 28) MNIST-like digit."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    # A local file, not an upload: any 8-bit colour image up to the pixel limit is decoded.
    gray = decode_image(data, str(path), max_bytes=4 * DEFAULT_MAX_PIXELS)
    return normalize_digit(gray, str(path))


@dataclass
class ImageSet:
    """Images loaded from a source, with what was skipped on the way."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64] | None
    names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    description: str = ""


def load_folder(folder: str | Path) -> ImageSet:
    """All images under ``folder`` (recursively), normalised to 28x28.

    Labels come from the first-level sub-folder names when every image sits in one
    (``digits/3/a.png`` -> label 3; non-numeric names are numbered in sorted order);
    files that are not images are skipped with a warning and reported in ``skipped``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images, names, subdirs, skipped = [], [], [], []
    for p in files:
        if p.name.startswith("."):
            continue
        try:
            images.append(load_image_file(p))
        except DataError as exc:
            log.warning("skipping %s: %s", p, exc)
            skipped.append((str(p), str(exc)))
            continue
        names.append(str(p))
        rel = p.relative_to(folder)
        subdirs.append(rel.parts[0] if len(rel.parts) > 1 else None)
    if not images:
        raise DataError(
            f"{folder}: no readable images found ({len(skipped)} files skipped); "
            f"expected {', '.join(sorted(IMAGE_SUFFIXES))} files"
        )
    labels = None
    if all(s is not None for s in subdirs):
        keys = sorted(set(subdirs))
        if all(k.isdigit() for k in keys):
            labels = np.array([int(s) for s in subdirs], np.int64)
        else:
            mapping = {k: i for i, k in enumerate(keys)}
            labels = np.array([mapping[s] for s in subdirs], np.int64)
    return ImageSet(
        images=np.stack(images),
        labels=labels,
        names=names,
        skipped=skipped,
        description=f"folder {folder} ({len(images)} images)",
    )


def load_source(
    source: str | Path | None, labels: str | Path | None = None, limit: int | None = None
) -> ImageSet:
    """The images ``sdrindex build`` indexes, from any of the supported sources.

    - ``None`` / ``"mnist"``: the bundled MNIST training set (``"mnist-test"``: test set);
    - an IDX image file (gz or raw), with an optional IDX or ``.npy`` label file;
    - a folder of images (labels from sub-folder names when present);
    - an ``.npy`` array of shape (n, H, W) uint8 (other sizes than 28x28 are normalised).
    """
    from sdrindex.datasets import load_mnist, read_idx

    def cut(arr):
        return arr if not limit else arr[:limit]

    if source is None or str(source) in ("mnist", "mnist-train", "mnist-test"):
        split = "test" if str(source) == "mnist-test" else "train"
        images, labs = load_mnist(split)
        return ImageSet(cut(images), cut(labs.astype(np.int64)), [], [], f"MNIST {split} (bundled)")
    path = Path(source)
    if path.is_dir():
        if labels is not None:
            raise ParameterError("--labels goes with an IDX or .npy source, not a folder")
        result = load_folder(path)
        if limit:
            result.images = result.images[:limit]
            result.names = result.names[:limit]
            if result.labels is not None:
                result.labels = result.labels[:limit]
        return result
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder; --data takes mnist, an IDX file, a folder of "
            "images or an .npy array"
        )
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from exc
    else:
        arr = read_idx(path)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise DataError(f"{path}: expected images of shape (n, H, W), got {arr.shape}")
    arr = cut(arr)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or arr.min() < 0 or arr.max() > 255:
            raise DataError(f"{path}: pixel values must be 0..255, got dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    if arr.shape[1:] != (28, 28):
        arr = np.stack([normalize_digit(a, f"{path}[{i}]") for i, a in enumerate(arr)])
    labs = None
    if labels is not None:
        lpath = Path(labels)
        if lpath.suffix == ".npy":
            try:
                labs = np.load(lpath, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise DataError(f"{lpath}: not a readable .npy array ({exc})") from exc
        else:
            labs = read_idx(lpath)
        labs = cut(np.asarray(labs))
        if labs.shape != (arr.shape[0],) or not np.issubdtype(labs.dtype, np.integer):
            raise DataError(
                f"{lpath}: expected {arr.shape[0]} integer labels, got {labs.shape} {labs.dtype}"
            )
        labs = labs.astype(np.int64)
    return ImageSet(arr, labs, [], [], f"{path.name} ({arr.shape[0]} images)")
