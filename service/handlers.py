"""The work behind each endpoint, as plain functions run in worker threads.

Each takes the :class:`~service.state.BundleService` and the raw request pieces, and
returns the response body as JSON-ready Python objects (or bytes for images). Stage
timings go to ``timing`` (milliseconds) for the response and the metrics.
"""

from __future__ import annotations

import base64
import io
import random
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import ParameterError
from sdrindex.sdr import row_popcount
from service.errors import ApiError
from service.inputs import (
    Query,
    check_pixels,
    decode_upload,
    is_json,
    media_type,
    parse_json,
    parse_multipart,
    parse_query,
    query_from_json,
)
from service.state import BundleService, Loaded, predict


class Timer:
    """Collects stage durations in milliseconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last = self.start
        self.ms: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = round(self.ms.get(stage, 0.0) + (now - self.last) * 1000.0, 3)
        self.last = now

    def total(self) -> dict[str, float]:
        self.ms["total"] = round((time.perf_counter() - self.start) * 1000.0, 3)
        return self.ms


# --------------------------------------------------------------------------- helpers


def png_bytes(image: NDArray[np.uint8], scale: int = 1) -> bytes:
    from PIL import Image

    if scale > 1:
        image = np.kron(image, np.ones((scale, scale), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="L").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _b64png(image: NDArray[np.uint8]) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def _to_uint8(images: NDArray) -> NDArray[np.uint8]:
    return np.rint(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def _sdr_out(packed_row: NDArray[np.uint8], n_columns: int) -> dict[str, Any]:
    active = np.flatnonzero(np.unpackbits(packed_row, count=n_columns))
    return {"active": active.tolist(), "size": n_columns}


def describe_matches(
    loaded: Loaded, query: NDArray[np.uint8], ids: NDArray, overlaps: NDArray
) -> list[dict[str, Any]]:
    """``[{"id", "label", "overlap", "jaccard"}]`` for one query's neighbours."""
    ok = ids >= 0
    ids, overlaps = ids[ok].astype(np.int64), overlaps[ok].astype(np.int64)
    if ids.size == 0:
        return []
    table = loaded.bundle.table
    pos = table.positions(ids)
    sizes = row_popcount(np.asarray(table.sdrs)[pos])
    union = int(row_popcount(query).sum()) + sizes - overlaps
    jac = np.where(union > 0, overlaps / np.maximum(union, 1), 0.0)
    labels = None if table.labels is None else np.asarray(table.labels)[pos].tolist()
    return [
        {
            "id": int(i),
            "label": None if labels is None else int(labels[j]),
            "overlap": int(overlaps[j]),
            "jaccard": round(float(jac[j]), 6),
        }
        for j, i in enumerate(ids.tolist())
    ]


def parse_methods(loaded: Loaded, methods: str) -> list[str]:
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise ApiError(422, "methods: give at least one of " + ", ".join(loaded.methods()))
    out: list[str] = []
    for name in names:
        if name in out:
            continue
        if name in loaded.unavailable:
            raise ApiError(
                422, f"method {name!r} is not available for this bundle: {loaded.unavailable[name]}"
            )
        if name not in loaded.reconstructors:
            raise ApiError(422, f"unknown method {name!r}; known: {', '.join(loaded.methods())}")
        out.append(name)
    return out


def _encode_query(svc: BundleService, loaded: Loaded, q: Query) -> NDArray[np.uint8]:
    if q.kind == "sdr":
        assert q.packed is not None
        return q.packed
    assert q.image is not None
    return svc.encode(loaded, q.image[None])


# --------------------------------------------------------------------------- queries


def reconstruct(
    svc: BundleService, content_type: str | None, body: bytes, k: int, methods: str
) -> tuple[dict[str, Any], dict[str, float]]:
    from sdrindex.datasets import binarize

    t = Timer()
    loaded = svc.current()
    names = parse_methods(loaded, methods)
    q = parse_query(
        content_type, body, loaded.n_columns, loaded.image_shape, svc.settings.max_image_pixels
    )
    t.lap("decode" if q.kind == "image" else "parse")
    packed = _encode_query(svc, loaded, q)
    if q.kind != "sdr":
        t.lap("encode")
    want = k
    if "knn" in names:
        want = max(want, getattr(loaded.reconstructor("knn"), "k", 1))
    if loaded.labeler is not None and loaded.label_method == "knn":
        want = max(want, getattr(loaded.labeler, "k", 1))
    ids, ov = svc.query(loaded, packed, want)
    t.lap("search")
    matches = describe_matches(loaded, packed[0], ids[0, :k], ov[0, :k])
    labels = predict(loaded, packed, ids, ov)
    if labels is not None:
        t.lap("label")
    recs: dict[str, Any] = {}
    for name in names:
        rec = loaded.reconstructor(name)
        if hasattr(rec, "from_neighbours") and name in ("nearest", "knn"):
            img = rec.from_neighbours(ids, ov)
        else:
            img = rec.reconstruct(packed)
        u8 = _to_uint8(img)[0]
        recs[name] = {"png_base64": _b64png(u8), "pixels": u8.tolist()}
        t.lap(f"reconstruct_{name}")
    inp = None
    if q.image is not None:
        seen = binarize(q.image[None], loaded.bundle.threshold).reshape(q.image.shape) * 255
        inp = {
            "pixels": q.image.tolist(),
            "png_base64": _b64png(q.image),
            "binary_png_base64": _b64png(seen.astype(np.uint8)),
        }
    out = {
        "k": k,
        "matches": matches,
        "predicted_label": None if labels is None else int(labels[0]),
        "label_method": loaded.label_method,
        "sdr": _sdr_out(packed[0], loaded.n_columns),
        "input": inp,
        "reconstructions": recs,
        "bundle_version": loaded.version,
    }
    t.lap("render")
    out["timing_ms"] = t.total()
    return out, t.ms


def search(
    svc: BundleService, content_type: str | None, body: bytes, k: int
) -> tuple[dict[str, Any], dict[str, float]]:
    t = Timer()
    loaded = svc.current()
    q = parse_query(
        content_type, body, loaded.n_columns, loaded.image_shape, svc.settings.max_image_pixels
    )
    t.lap("decode" if q.kind == "image" else "parse")
    packed = _encode_query(svc, loaded, q)
    if q.kind != "sdr":
        t.lap("encode")
    ids, ov = svc.query(loaded, packed, k)
    t.lap("search")
    ok = ids[0] >= 0
    return {"ids": ids[0, ok].tolist(), "overlaps": ov[0, ok].tolist()}, t.total()


def search_batch(
    svc: BundleService, content_type: str | None, body: bytes, k: int
) -> tuple[dict[str, Any], dict[str, float]]:
    t = Timer()
    loaded = svc.current()
    mtype, _ = media_type(content_type)
    if not is_json(mtype):
        raise ApiError(
            415, f'send application/json {{"queries": [...]}}, not {mtype or "(no content type)"}'
        )
    obj = parse_json(body)
    queries = obj.get("queries") if isinstance(obj, dict) else None
    if not isinstance(queries, list):
        raise ApiError(422, 'body must be {"queries": [{"sdr": ...} or {"pixels": ...}, ...]}')
    limit = svc.settings.max_batch
    if not 1 <= len(queries) <= limit:
        raise ApiError(422, f"queries must hold 1 to {limit} items, got {len(queries)}")
    parsed = [
        query_from_json(item, loaded.n_columns, loaded.image_shape, f"queries[{i}]")
        for i, item in enumerate(queries)
    ]
    t.lap("parse")
    packed = np.zeros((len(parsed), (loaded.n_columns + 7) // 8), np.uint8)
    img_rows = [i for i, q in enumerate(parsed) if q.kind != "sdr"]
    for i, q in enumerate(parsed):
        if q.kind == "sdr":
            packed[i] = q.packed[0]
    if img_rows:
        images = np.stack([parsed[i].image for i in img_rows])
        packed[img_rows] = svc.encode(loaded, images)
        t.lap("encode")
    ids, ov = svc.query(loaded, packed, k)
    t.lap("search")
    results = []
    for r in range(ids.shape[0]):
        ok = ids[r] >= 0
        results.append({"ids": ids[r, ok].tolist(), "overlaps": ov[r, ok].tolist()})
    return {"results": results}, t.total()


# --------------------------------------------------------------------------- items


def _position(loaded: Loaded, item_id: int) -> int:
    try:
        return int(loaded.bundle.table.positions([item_id])[0])
    except ParameterError:
        raise ApiError(
            404, f"no item with id {item_id} (the bundle holds {loaded.n_items} items)"
        ) from None


def get_item(svc: BundleService, item_id: int) -> dict[str, Any]:
    loaded = svc.current()
    table = loaded.bundle.table
    pos = _position(loaded, item_id)
    packed = np.asarray(table.sdrs[pos])
    return {
        "id": int(item_id),
        "label": None if table.labels is None else int(table.labels[pos]),
        "sdr": _sdr_out(packed, loaded.n_columns),
        "pixels": np.asarray(table.images[pos]).tolist(),
        "image_url": f"/v1/items/{int(item_id)}/image.png",
    }


def item_png(svc: BundleService, item_id: int, scale: int) -> bytes:
    loaded = svc.current()
    pos = _position(loaded, item_id)
    return png_bytes(np.asarray(loaded.bundle.table.images[pos]), scale)


def neighbors(svc: BundleService, item_id: int, k: int) -> dict[str, Any]:
    loaded = svc.current()
    pos = _position(loaded, item_id)
    packed = np.ascontiguousarray(loaded.bundle.table.sdrs[pos : pos + 1])
    ids, ov = svc.query(loaded, packed, k + 1)
    keep = ids[0] != item_id
    ids_k, ov_k = ids[0, keep][:k], ov[0, keep][:k]
    return {
        "id": int(item_id),
        "k": k,
        "neighbors": describe_matches(loaded, packed[0], ids_k, ov_k),
    }


def _label_value(text: str, where: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ApiError(422, f"{where} must be an integer, got {text[:40]!r}") from None


def add_items(svc: BundleService, content_type: str | None, body: bytes) -> dict[str, Any]:
    loaded = svc.current()
    limit = svc.settings.max_add
    mtype, params = media_type(content_type)
    images: list[NDArray[np.uint8]] = []
    labels: list[int] | None
    if mtype == "multipart/form-data":
        parts = parse_multipart(body, params.get("boundary"), max_parts=2 * limit + 16)
        files = [p for p in parts if p.name == "image"]
        label_parts = [p for p in parts if p.name == "label"]
        if not files:
            raise ApiError(422, "multipart body has no `image` field")
        if len(files) > limit:
            raise ApiError(422, f"at most {limit} images per request, got {len(files)}")
        images = [
            decode_upload(p.data, svc.settings.max_image_pixels, f"image[{i}]")
            for i, p in enumerate(files)
        ]
        raw = [_label_value(p.data.decode("utf-8", "replace"), "label") for p in label_parts]
        if not raw:
            labels = None
        elif len(raw) == 1:
            labels = raw * len(images)
        elif len(raw) == len(images):
            labels = raw
        else:
            raise ApiError(
                422, f"{len(images)} images but {len(raw)} labels: give one per image, or one"
            )
    elif is_json(mtype):
        obj = parse_json(body)
        items = obj.get("items") if isinstance(obj, dict) else None
        if not isinstance(items, list):
            raise ApiError(422, 'body must be {"items": [{"pixels": [[...]], "label": 3}, ...]}')
        if not 1 <= len(items) <= limit:
            raise ApiError(422, f"items must hold 1 to {limit} entries, got {len(items)}")
        raw_labels: list[int | None] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ApiError(422, f'items[{i}] must be {{"pixels": [[...]], "label": int}}')
            images.append(
                check_pixels(item.get("pixels"), loaded.image_shape, f"items[{i}].pixels")
            )
            lab = item.get("label")
            if lab is not None and type(lab) is not int:
                raise ApiError(422, f"items[{i}].label must be an integer, got {lab!r}")
            raw_labels.append(lab)
        given = [lab is not None for lab in raw_labels]
        if any(given) and not all(given):
            raise ApiError(422, "give a label for every item, or for none")
        labels = [int(lab) for lab in raw_labels] if all(given) else None  # type: ignore[arg-type]
    else:
        raise ApiError(
            415,
            "send multipart/form-data (`image` files, `label` fields) or application/json "
            f'{{"items": [...]}}, not {mtype or "(no content type)"}',
        )
    arr = np.stack(images)
    lab_arr = None if labels is None else np.asarray(labels, np.int64)
    if lab_arr is not None and (np.abs(lab_arr) >= 2**62).any():
        raise ApiError(422, "labels must fit in 63 bits")
    ids, new = svc.add_items(arr, lab_arr)
    return {"ids": ids.tolist(), "n_items": new.n_items, "version": new.version}


# --------------------------------------------------------------------------- misc


def random_sample(svc: BundleService, seed: int | None) -> dict[str, Any]:
    loaded = svc.current()
    source, images, labels = svc.samples()
    rng = random.Random(seed)
    if len(images):
        i = rng.randrange(len(images))
        return {
            "source": source,
            "index": i,
            "label": None if labels is None else int(labels[i]),
            "pixels": np.asarray(images[i]).tolist(),
        }
    table = loaded.bundle.table
    pos = rng.randrange(loaded.n_items)
    return {
        "source": "bundle",
        "index": int(table.ids[pos]),
        "label": None if table.labels is None else int(table.labels[pos]),
        "pixels": np.asarray(table.images[pos]).tolist(),
    }


def info(svc: BundleService) -> dict[str, Any]:
    loaded = svc.current()
    s = svc.settings
    return {
        "bundle": loaded.bundle.summary(),
        "version": loaded.version,
        "methods": loaded.methods(),
        "label_method": loaded.label_method,
        "column_dimensions": list(loaded.column_dims),
        "image_shape": list(loaded.image_shape),
        "limits": {
            "max_body_bytes": s.max_body_bytes,
            "max_k": s.max_k,
            "max_batch": s.max_batch,
            "max_add": s.max_add,
            "max_image_pixels": s.max_image_pixels,
        },
        "writes_enabled": s.writes_enabled,
        "reload_error": svc.reload_error,
    }
