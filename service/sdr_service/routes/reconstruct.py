"""``POST /v1/reconstruct``: neighbours, predicted label, SDR and reconstructions of a query."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from numpy.typing import NDArray
from starlette.responses import Response

from sdr_service import schemas
from sdr_service.deps import Service, Threads, json_response, k_param
from sdr_service.errors import ApiError
from sdr_service.querying import Searched, search_body
from sdr_service.render import Timer, b64png, describe_matches, sdr_out, to_uint8
from sdr_service.settings import Settings
from sdr_service.state import BundleService, Loaded, predict

PATH = "/v1/reconstruct"


def parse_methods(loaded: Loaded, methods: str) -> list[str]:
    """``"nearest,knn"`` -> the method names, each one this bundle offers (else 422)."""
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


def _neighbours_wanted(loaded: Loaded, names: list[str], k: int) -> int:
    """As many neighbours as the answer, the knn method and the knn label vote need."""
    want = k
    if "knn" in names:
        want = max(want, getattr(loaded.reconstructor("knn"), "k", 1))
    if loaded.labeler is not None and loaded.label_method == "knn":
        want = max(want, getattr(loaded.labeler, "k", 1))
    return want


def _reconstructions(
    loaded: Loaded, names: list[str], found: Searched, timer: Timer
) -> dict[str, Any]:
    recs: dict[str, Any] = {}
    for name in names:
        rec = loaded.reconstructor(name)
        if hasattr(rec, "from_neighbours") and name in ("nearest", "knn"):
            img = rec.from_neighbours(found.ids, found.overlaps)
        else:
            img = rec.reconstruct(found.packed)
        u8 = to_uint8(img)[0]
        recs[name] = {"png_base64": b64png(u8), "pixels": u8.tolist()}
        timer.lap(f"reconstruct_{name}")
    return recs


def _input_echo(loaded: Loaded, image: NDArray[np.uint8] | None) -> dict[str, Any] | None:
    """The query image as received and as the SP saw it (its encoder's input: binarised,
    or with thermometer planes the share of a pixel's planes that are on)."""
    from sdrindex.preprocess import input_image

    if image is None:
        return None
    seen = input_image(image[None], loaded.bundle.encoder)[0]
    return {
        "pixels": image.tolist(),
        "png_base64": b64png(image),
        "binary_png_base64": b64png(seen),
    }


def reconstruct_answer(
    svc: BundleService, content_type: str | None, body: bytes, k: int, methods: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """The answer of ``/v1/reconstruct`` and its stage timings (ms)."""
    t = Timer()
    loaded = svc.current()
    names = parse_methods(loaded, methods)
    found = search_body(svc, loaded, content_type, body, _neighbours_wanted(loaded, names, k), t)
    packed, ids, ov = found.packed, found.ids, found.overlaps
    matches = describe_matches(loaded, packed[0], ids[0, :k], ov[0, :k])
    labels = predict(loaded, packed, ids, ov)
    if labels is not None:
        t.lap("label")
    recs = _reconstructions(loaded, names, found, t)
    out = {
        "k": k,
        "matches": matches,
        "predicted_label": None if labels is None else int(labels[0]),
        "label_method": loaded.label_method,
        "sdr": sdr_out(packed[0], loaded.n_columns),
        "input": _input_echo(loaded, found.queries[0].image),
        "reconstructions": recs,
        "bundle_version": loaded.version,
    }
    t.lap("render")
    out["timing_ms"] = t.total()
    return out, t.ms


def router(settings: Settings) -> APIRouter:
    """The ``/v1/reconstruct`` route (``k`` up to ``settings.max_k``)."""
    api = APIRouter(tags=["queries"])

    @api.post(
        PATH,
        response_model=schemas.ReconstructResponse,
        openapi_extra=schemas.query_body(),
    )
    async def reconstruct(
        request: Request,
        svc: Service,
        threads: Threads,
        k: int = k_param(1, settings.max_k),
        methods: str = Query(
            "nearest",
            description="comma-separated: nearest, knn, backprojection, decoder "
            "(see /v1/info for the ones this bundle offers)",
            max_length=200,
        ),
    ) -> Response:
        """Nearest stored items, predicted label, SDR and reconstructions of one query.

        The query is an uploaded image (multipart field `image`, or a raw image/png or
        image/jpeg body), JSON `{"pixels": [[...]]}` (28x28 ints 0-255), or JSON
        `{"sdr": {"active": [...], "size": n_columns}}`.
        """
        body = await request.body()
        ctype = request.headers.get("content-type")
        return json_response(
            await threads.run_json(PATH, reconstruct_answer, svc, ctype, body, k, methods)
        )

    return api
