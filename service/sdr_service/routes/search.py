"""``POST /v1/search`` and ``/v1/search/batch``: ids and overlaps of the nearest items."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sdr_service import schemas
from sdr_service.deps import Service, Threads, json_response, k_param
from sdr_service.errors import ApiError
from sdr_service.inputs import is_json, media_type, parse_json, query_from_json
from sdr_service.querying import Searched, search_body, search_queries
from sdr_service.render import Timer
from sdr_service.settings import Settings
from sdr_service.state import BundleService


def _results(found: Searched) -> list[dict[str, Any]]:
    out = []
    for r in range(found.ids.shape[0]):
        ok = found.ids[r] >= 0
        out.append({"ids": found.ids[r, ok].tolist(), "overlaps": found.overlaps[r, ok].tolist()})
    return out


def search_answer(
    svc: BundleService, content_type: str | None, body: bytes, k: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """The answer of ``/v1/search`` and its stage timings (ms)."""
    t = Timer()
    loaded = svc.current()
    found = search_body(svc, loaded, content_type, body, k, t)
    return _results(found)[0], t.total()


def batch_answer(
    svc: BundleService, content_type: str | None, body: bytes, k: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """The answer of ``/v1/search/batch`` (JSON queries only) and its stage timings (ms)."""
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
    found = search_queries(svc, loaded, parsed, k, t)
    return {"results": _results(found)}, t.total()


def router(settings: Settings) -> APIRouter:
    """The ``/v1/search`` and ``/v1/search/batch`` routes (``k`` up to ``settings.max_k``)."""
    api = APIRouter(tags=["queries"])

    @api.post(
        "/v1/search",
        response_model=schemas.SearchResponse,
        openapi_extra=schemas.query_body(),
    )
    async def search(
        request: Request, svc: Service, threads: Threads, k: int = k_param(1, settings.max_k)
    ) -> Response:
        """Ids and overlaps of the k stored SDRs overlapping the query most."""
        body = await request.body()
        ctype = request.headers.get("content-type")
        return json_response(
            await threads.run_json("/v1/search", search_answer, svc, ctype, body, k)
        )

    @api.post(
        "/v1/search/batch",
        response_model=schemas.BatchResponse,
        openapi_extra=schemas.json_body(schemas.BatchRequest),
    )
    async def search_batch(
        request: Request, svc: Service, threads: Threads, k: int = k_param(1, settings.max_k)
    ) -> Response:
        """As /v1/search for up to 256 JSON queries (pixels or SDRs) at once."""
        body = await request.body()
        ctype = request.headers.get("content-type")
        return json_response(
            await threads.run_json("/v1/search/batch", batch_answer, svc, ctype, body, k)
        )

    return api
