"""Request bodies -> queries: uploaded images, 28x28 pixel arrays, or SDRs.

Everything here is plain synchronous code run in worker threads, and every way a body can
be wrong ends in an :class:`~sdr_service.errors.ApiError` with a readable reason: 400 for a
malformed body, 413 for an image with too many pixels, 415 for data that is not an image
(or a content type the endpoint does not take), 422 for well-formed but invalid values.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdr_service.errors import ApiError
from sdrindex.errors import DataError

#: Image formats an upload may be in (Pillow's names). PNG and JPEG are the documented
#: ones; the others are common enough in browsers' drag and drop to be worth taking.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
#: Uploads above this many pixels are decoded one at a time per worker (memory).
_BIG_IMAGE = 2_000_000
_big_image_lock = threading.Lock()

_MEDIA_HINT = (
    "send multipart/form-data with an `image` file field, a raw image/png or image/jpeg "
    'body, or application/json with {"pixels": [[...28 rows of 28 ints 0-255...]]} or '
    '{"sdr": {"active": [ints], "size": n_columns}}'
)


@dataclass
class Query:
    """One parsed query: an image (normalised, (H, W) uint8) or a packed SDR."""

    kind: str  # "image" (uploaded file), "pixels" (JSON array), "sdr"
    image: NDArray[np.uint8] | None = None
    packed: NDArray[np.uint8] | None = None


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


# --------------------------------------------------------------------------- content types


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``'multipart/form-data; boundary=x'`` -> ``('multipart/form-data', {'boundary': 'x'})``."""
    if not content_type:
        return "", {}
    main, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, eq, value = item.strip().partition("=")
        if eq:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def is_json(mtype: str) -> bool:
    return mtype == "application/json" or (mtype.startswith("application/") and "+json" in mtype)


def parse_json(body: bytes) -> Any:
    """A JSON body -> Python values; every way it can fail is a 400 naming the problem.

    Beyond malformed JSON, the parser has limits a small body can reach: an integer of
    more than ``sys.get_int_max_str_digits()`` (4,300) digits raises a plain
    ``ValueError``, nesting deeper than the interpreter's recursion limit a
    ``RecursionError``. Array lengths are bounded by the body limit; each endpoint
    checks its own counts (422).
    """
    if not body.strip():
        raise ApiError(400, "empty body; " + _MEDIA_HINT)
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"body is not UTF-8 JSON ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise ApiError(400, "body is not acceptable JSON: nested too deeply") from None
    except ValueError:  # int-string conversion limit: no bundle value has that many digits
        raise ApiError(
            400,
            f"body is not acceptable JSON: a number has more than {sys.get_int_max_str_digits()} "
            "digits",
        ) from None


def parse_multipart(body: bytes, boundary: str | None, max_parts: int = 1024) -> list[Part]:
    """Split a multipart/form-data body into its parts."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    if not boundary:
        raise ApiError(400, "multipart/form-data without a boundary parameter")
    if len(boundary) > 200:
        raise ApiError(400, "multipart boundary longer than 200 characters")
    parts: list[Part] = []
    cur: dict[str, Any] = {}

    def on_part_begin() -> None:
        cur.clear()
        cur.update(headers={}, data=[], field=b"", value=b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        cur["data"].append(data[start:end])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        cur["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        cur["value"] += data[start:end]

    def on_header_end() -> None:
        cur["headers"][cur["field"].decode("latin-1").lower()] = cur["value"]
        cur["field"], cur["value"] = b"", b""

    def on_part_end() -> None:
        if len(parts) >= max_parts:
            raise ApiError(413, f"more than {max_parts} multipart parts")
        disp, opts = parse_options_header(cur["headers"].get("content-disposition", b""))
        if disp != b"form-data" or b"name" not in opts:
            raise ApiError(400, "a multipart part has no `Content-Disposition: form-data; name=`")
        ctype = cur["headers"].get("content-type", b"").decode("latin-1")
        filename = opts.get(b"filename")
        parts.append(
            Part(
                name=opts[b"name"].decode("utf-8", "replace"),
                filename=None if filename is None else filename.decode("utf-8", "replace"),
                content_type=ctype,
                data=b"".join(cur["data"]),
            )
        )

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except (MultipartParseError, ValueError, KeyError, UnicodeError) as exc:
        raise ApiError(400, f"malformed multipart/form-data body ({exc})") from None
    if not parts:
        raise ApiError(400, "multipart/form-data body with no parts (check the boundary)")
    return parts


# --------------------------------------------------------------------------- images


def decode_upload(data: bytes, max_pixels: int, name: str = "image") -> NDArray[np.uint8]:
    """Image file bytes -> (28, 28) uint8 MNIST-like digit, as ``sdrindex build`` does it.

    The header is read first (:func:`sdrindex.images.open_image`): a non-image is 415; an
    image whose decoding would cost more than ``max_pixels`` allows (pixels, decoded bytes,
    frames, JPEG scans) is 413 before any pixel is decoded; then it is decoded reduced
    (:func:`~sdrindex.images.load_gray`): an undecodable body is 400, an image without ink 422.
    """
    from sdrindex.images import (
        ImageTooLarge,
        NotAnImage,
        load_gray,
        normalize_digit,
        open_image,
    )

    if not data:
        raise ApiError(400, f"`{name}` is empty")
    label = f"`{name}`"
    try:
        img = open_image(data, label, max_pixels, formats=IMAGE_FORMATS)
    except NotAnImage as exc:
        raise ApiError(415, str(exc)) from None
    except ImageTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except DataError as exc:
        raise ApiError(400, str(exc)) from None
    with img:
        width, height = img.size
        lock = _big_image_lock if width * height > _BIG_IMAGE else None
        if lock:
            lock.acquire()
        try:
            gray = load_gray(img, label)
        except ImageTooLarge as exc:
            raise ApiError(413, str(exc)) from None
        except DataError as exc:
            raise ApiError(400, str(exc)) from None
        finally:
            if lock:
                lock.release()
    try:
        return normalize_digit(gray, label)
    except DataError as exc:  # no ink: a valid image we cannot use
        raise ApiError(422, str(exc)) from None


# --------------------------------------------------------------------------- JSON values


#: Labels a client may store: well inside int64, so that sums and differences of stored
#: labels never overflow either.
LABEL_LIMIT = 2**62
#: Item ids are int64 (``TrainingTable.ids``); larger ones name no item.
ID_LIMIT = 2**63


def _is_int(v: Any) -> bool:
    return type(v) is int


def check_label(value: Any, where: str = "label") -> int:
    """An item's label: a JSON integer (not a bool) with ``|label| < 2**62``, else 422.

    Checked before numpy sees it: ``np.asarray`` of a larger Python int overflows.
    """
    if not _is_int(value):
        raise ApiError(422, f"{where} must be an integer, got {str(value)[:40]!r}")
    if not -LABEL_LIMIT < value < LABEL_LIMIT:
        raise ApiError(
            422, f"{where} must lie strictly between -2**62 and 2**62, got {str(value)[:40]}"
        )
    return value


def is_item_id(value: int) -> bool:
    """True when ``value`` can name a stored item (ids are non-negative int64)."""
    return 0 <= value < ID_LIMIT


def _all_ints(values: list) -> bool:
    return not values or set(map(type, values)) == {int}


def check_pixels(value: Any, shape: tuple[int, int], where: str = "pixels") -> NDArray[np.uint8]:
    """A JSON array of ``shape[0]`` rows of ``shape[1]`` ints 0-255 -> uint8 array."""
    h, w = shape
    want = f"{where} must be {h} rows of {w} integers 0-255"
    if not isinstance(value, list):
        raise ApiError(422, f"{want}, got {type(value).__name__}")
    if len(value) != h:
        raise ApiError(422, f"{want}, got {len(value)} rows")
    for r, row in enumerate(value):
        if not isinstance(row, list) or len(row) != w:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise ApiError(422, f"{want}; row {r} has {got}")
        if not _all_ints(row):
            bad = next(v for v in row if not _is_int(v))
            raise ApiError(422, f"{want}; row {r} holds {bad!r}")
    try:
        arr = np.array(value, dtype=np.int64)
    except OverflowError:
        raise ApiError(422, f"{want}; a value is out of range") from None
    if arr.min() < 0 or arr.max() > 255:
        raise ApiError(422, f"{want}; values run from {arr.min()} to {arr.max()}")
    return arr.astype(np.uint8)


def check_sdr(value: Any, n_columns: int, where: str = "sdr") -> NDArray[np.uint8]:
    """``{"active": [ints], "size": n}`` -> packed SDR of shape (1, ceil(n/8))."""
    if not isinstance(value, dict):
        raise ApiError(422, f'{where} must be an object {{"active": [ints], "size": {n_columns}}}')
    size, active = value.get("size"), value.get("active")
    if not _is_int(size):
        raise ApiError(
            422,
            f"{where}.size must be an integer (this bundle's SDRs have "
            f"{n_columns} columns), got {size!r}",
        )
    if size != n_columns:
        raise ApiError(
            422, f"{where}.size is {size}, but this bundle's SDRs have {n_columns} columns"
        )
    if not isinstance(active, list):
        raise ApiError(422, f"{where}.active must be a list of column indices")
    if len(active) > n_columns:
        raise ApiError(
            422, f"{where}.active lists {len(active)} indices, more than the {n_columns} columns"
        )
    if not _all_ints(active):
        bad = next(v for v in active if not _is_int(v))
        raise ApiError(422, f"{where}.active must hold integers only, got {bad!r}")
    try:
        idx = np.array(active, dtype=np.int64)
    except OverflowError:
        raise ApiError(422, f"{where}.active holds an index out of range") from None
    if idx.size and (idx.min() < 0 or idx.max() >= n_columns):
        raise ApiError(
            422,
            f"{where}.active indices must lie in [0, {n_columns}); got values from "
            f"{idx.min()} to {idx.max()}",
        )
    dense = np.zeros(n_columns, np.bool_)
    dense[idx] = True
    return np.packbits(dense)[None]


def query_from_json(
    obj: Any, n_columns: int, image_shape: tuple[int, int], where: str = "body"
) -> Query:
    """``{"pixels": ...}`` or ``{"sdr": ...}`` -> :class:`Query`."""
    if not isinstance(obj, dict):
        raise ApiError(
            422, f'{where} must be a JSON object with "pixels" or "sdr", got {type(obj).__name__}'
        )
    has_p, has_s = "pixels" in obj, "sdr" in obj
    if has_p == has_s:
        raise ApiError(
            422,
            f'{where} must hold exactly one of "pixels" and "sdr" (got '
            f"{'both' if has_p else 'neither'})",
        )
    if has_p:
        prefix = "pixels" if where == "body" else f"{where}.pixels"
        return Query("pixels", image=check_pixels(obj["pixels"], image_shape, prefix))
    prefix = "sdr" if where == "body" else f"{where}.sdr"
    return Query("sdr", packed=check_sdr(obj["sdr"], n_columns, prefix))


def parse_query(
    content_type: str | None,
    body: bytes,
    n_columns: int,
    image_shape: tuple[int, int],
    max_image_pixels: int,
) -> Query:
    """The query of ``/v1/reconstruct`` and ``/v1/search`` from any accepted body."""
    mtype, params = media_type(content_type)
    if mtype == "multipart/form-data":
        parts = parse_multipart(body, params.get("boundary"), max_parts=64)
        images = [p for p in parts if p.name == "image"]
        if not images:
            names = ", ".join(sorted({p.name for p in parts})) or "none"
            raise ApiError(422, f"multipart body has no `image` field (fields: {names})")
        if len(images) > 1:
            raise ApiError(422, "send one `image` per query (use /v1/search/batch for many)")
        return Query("image", image=decode_upload(images[0].data, max_image_pixels))
    if mtype.startswith("image/"):
        return Query("image", image=decode_upload(body, max_image_pixels, "body"))
    if is_json(mtype):
        return query_from_json(parse_json(body), n_columns, image_shape)
    raise ApiError(415, f"unsupported content type {mtype or '(none)'!r}; {_MEDIA_HINT}")
