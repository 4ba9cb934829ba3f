"""``/v1/items``: stored items (label, SDR, image, neighbours), and adding new ones."""

from __future__ import annotations

import hmac
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from numpy.typing import NDArray
from starlette.responses import Response

from sdr_service import schemas
from sdr_service.deps import Config, Meters, Service, Threads, json_response, k_param
from sdr_service.errors import ApiError
from sdr_service.inputs import (
    check_label,
    check_pixels,
    decode_upload,
    is_item_id,
    is_json,
    media_type,
    parse_json,
    parse_multipart,
)
from sdr_service.render import describe_matches, png_bytes, sdr_out
from sdr_service.settings import Settings
from sdr_service.state import BundleService, Loaded
from sdrindex.errors import ParameterError

# --------------------------------------------------------------------------- reads


def _position(loaded: Loaded, item_id: int) -> int:
    missing = ApiError(
        404, f"no item with id {str(item_id)[:40]} (the bundle holds {loaded.n_items} items)"
    )
    if not is_item_id(item_id):  # numpy would overflow on it
        raise missing
    try:
        return int(loaded.bundle.table.positions([item_id])[0])
    except ParameterError:
        raise missing from None


def item_answer(svc: BundleService, item_id: int) -> dict[str, Any]:
    """The answer of ``GET /v1/items/{item_id}``."""
    loaded = svc.current()
    table = loaded.bundle.table
    pos = _position(loaded, item_id)
    packed = np.asarray(table.sdrs[pos])
    return {
        "id": int(item_id),
        "label": None if table.labels is None else int(table.labels[pos]),
        "sdr": sdr_out(packed, loaded.n_columns),
        "pixels": np.asarray(table.images[pos]).tolist(),
        "image_url": f"/v1/items/{int(item_id)}/image.png",
    }


def item_png(svc: BundleService, item_id: int, scale: int) -> bytes:
    """The stored image of ``item_id`` as PNG bytes, upscaled ``scale`` times."""
    loaded = svc.current()
    pos = _position(loaded, item_id)
    return png_bytes(np.asarray(loaded.bundle.table.images[pos]), scale)


def neighbors_answer(svc: BundleService, item_id: int, k: int) -> dict[str, Any]:
    """The answer of ``GET /v1/items/{item_id}/neighbors`` (the item itself left out)."""
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


# --------------------------------------------------------------------------- writes


def _label_value(text: str, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:  # not digits, or more digits than Python converts
        raise ApiError(422, f"{where} must be an integer, got {text[:40]!r}") from None
    return check_label(value, where)


def _multipart_items(
    svc: BundleService, body: bytes, boundary: str | None
) -> tuple[list[NDArray[np.uint8]], list[int] | None]:
    """`image` file fields and `label` fields (one per image, or one for all)."""
    limit = svc.settings.max_add
    parts = parse_multipart(body, boundary, max_parts=2 * limit + 16)
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
        return images, None
    if len(raw) == 1:
        return images, raw * len(images)
    if len(raw) == len(images):
        return images, raw
    raise ApiError(422, f"{len(images)} images but {len(raw)} labels: give one per image, or one")


def _json_items(
    svc: BundleService, loaded: Loaded, body: bytes
) -> tuple[list[NDArray[np.uint8]], list[int] | None]:
    """``{"items": [{"pixels": [[...]], "label": 3}, ...]}`` (labels for all or none)."""
    limit = svc.settings.max_add
    obj = parse_json(body)
    items = obj.get("items") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        raise ApiError(422, 'body must be {"items": [{"pixels": [[...]], "label": 3}, ...]}')
    if not 1 <= len(items) <= limit:
        raise ApiError(422, f"items must hold 1 to {limit} entries, got {len(items)}")
    images: list[NDArray[np.uint8]] = []
    raw_labels: list[int | None] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(422, f'items[{i}] must be {{"pixels": [[...]], "label": int}}')
        images.append(check_pixels(item.get("pixels"), loaded.image_shape, f"items[{i}].pixels"))
        lab = item.get("label")
        raw_labels.append(None if lab is None else check_label(lab, f"items[{i}].label"))
    given = [lab is not None for lab in raw_labels]
    if any(given) and not all(given):
        raise ApiError(422, "give a label for every item, or for none")
    return images, ([int(lab) for lab in raw_labels] if all(given) else None)  # type: ignore[arg-type]


def add_items_answer(svc: BundleService, content_type: str | None, body: bytes) -> dict[str, Any]:
    """Parse the new items, add them as a new bundle version; the answer of POST /v1/items."""
    loaded = svc.current()
    mtype, params = media_type(content_type)
    if mtype == "multipart/form-data":
        images, labels = _multipart_items(svc, body, params.get("boundary"))
    elif is_json(mtype):
        images, labels = _json_items(svc, loaded, body)
    else:
        raise ApiError(
            415,
            "send multipart/form-data (`image` files, `label` fields) or application/json "
            f'{{"items": [...]}}, not {mtype or "(no content type)"}',
        )
    arr = np.stack(images)
    lab_arr = None if labels is None else np.asarray(labels, np.int64)  # each checked
    ids, new = svc.add_items(arr, lab_arr)
    return {"ids": ids.tolist(), "n_items": new.n_items, "version": new.version}


def authorise(settings: Settings, header: str | None) -> None:
    """Check ``Authorization: Bearer <key>`` against ``SDRINDEX_API_KEY`` (403 / 401)."""
    if settings.api_key is None:
        raise ApiError(403, "writes are disabled: start the service with SDRINDEX_API_KEY set")
    scheme, _, token = (header or "").partition(" ")
    key = settings.api_key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
        raise ApiError(
            401,
            "missing or wrong key: send `Authorization: Bearer <key>`",
            {"WWW-Authenticate": 'Bearer realm="sdrindex"'},
        )


# --------------------------------------------------------------------------- routes


def router(settings: Settings) -> APIRouter:
    """The ``/v1/items`` routes (neighbours' ``k`` up to ``settings.max_k``)."""
    api = APIRouter(tags=["items"])

    @api.get("/v1/items/{item_id}", response_model=schemas.ItemResponse)
    async def get_item(item_id: int, svc: Service, threads: Threads) -> Response:
        """A stored item: label, SDR and pixels."""
        return json_response(
            await threads.run_json("/v1/items/{item_id}", item_answer, svc, item_id)
        )

    @api.get(
        "/v1/items/{item_id}/image.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the stored image"}},
    )
    async def item_image(
        item_id: int,
        svc: Service,
        threads: Threads,
        scale: int = Query(1, ge=1, le=16, description="upscale by this integer factor"),
    ) -> Response:
        """The stored image as a greyscale PNG."""
        data = await threads.run(item_png, svc, item_id, scale)
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=60"})

    @api.get("/v1/items/{item_id}/neighbors", response_model=schemas.NeighborsResponse)
    async def item_neighbors(
        item_id: int, svc: Service, threads: Threads, k: int = k_param(10, settings.max_k)
    ) -> Response:
        """The k stored items overlapping this one most (itself left out)."""
        endpoint = "/v1/items/{item_id}/neighbors"
        return json_response(await threads.run_json(endpoint, neighbors_answer, svc, item_id, k))

    @api.post(
        "/v1/items",
        status_code=201,
        response_model=schemas.AddItemsResponse,
        openapi_extra=schemas.add_items_body(),
        responses={
            401: {"model": schemas.ErrorResponse, "description": "missing or wrong key"},
            403: {"model": schemas.ErrorResponse, "description": "writes disabled"},
            507: {"model": schemas.ErrorResponse, "description": "no space left to store them"},
        },
    )
    async def add_items(
        request: Request, svc: Service, threads: Threads, config: Config, metrics: Meters
    ) -> Response:
        """Add images (and labels) to the bundle; needs `Authorization: Bearer <key>`.

        The new items are saved as a new bundle version (atomically) and are found by the
        next query to any worker.
        """
        authorise(config, request.headers.get("authorization"))
        body = await request.body()
        ctype = request.headers.get("content-type")
        out = await threads.run(add_items_answer, svc, ctype, body)
        metrics.items.set(out["n_items"])
        return json_response(out, 201)

    return api
