"""The HTTP service: ``create_app(settings)`` -> a FastAPI app over one bundle.

Run it with ``sdrindex serve`` (see :mod:`service.serve`) or any ASGI server:
``uvicorn --factory service.app:create_app``. Every route's CPU work (parsing, image
decoding, encoding, search, reconstruction, JSON) runs in a worker thread, never on the
event loop; the bundle loads in the background at start-up and ``/readyz`` turns 200 once
it is loaded and warmed.
"""

from __future__ import annotations

import hmac
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import handlers, schemas
from service.errors import ApiError, BodyTooLarge, error_body, install_handlers
from service.metrics import CONTENT_TYPE, Metrics
from service.settings import Settings
from service.state import BundleService

log = logging.getLogger("service")

STATIC = Path(__file__).resolve().parent / "static"
_ERRORS = {
    s: {"model": schemas.ErrorResponse, "description": d}
    for s, d in {
        400: "malformed body",
        413: "body or image too large",
        415: "not an image / unsupported content type",
        422: "invalid value (k, methods, pixels, SDR size or indices, ...)",
        503: "not ready (bundle loading)",
    }.items()
}


def dumps(obj: Any) -> bytes:
    """Compact JSON (orjson: ~10x the standard library's speed on a reconstruct answer)."""
    return orjson.dumps(obj)


def _json(body: bytes | Any, status: int = 200) -> Response:
    if not isinstance(body, bytes):
        body = dumps(body)
    return Response(body, status, media_type="application/json")


class Guard:
    """Outermost middleware: the body size limit, and request metrics per route."""

    def __init__(self, app: ASGIApp, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            declared = None
            for key, value in scope["headers"]:
                if key == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        await self._reject(send_wrapper, 400, "bad Content-Length header")
                        return
            if declared is not None and declared > self.max_body:
                await self._reject(send_wrapper, 413, str(BodyTooLarge(self.max_body)))
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise BodyTooLarge(self.max_body)
                return message

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                endpoint, scope.get("method", ""), status[0], time.perf_counter() - start
            )

    @staticmethod
    async def _reject(send: Send, status: int, detail: str) -> None:
        body = error_body(status, detail)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service over ``settings.bundle`` (default: read from ``SDRINDEX_*`` variables)."""
    import warnings

    from PIL import Image

    # Uploads above settings.max_image_pixels are refused before decoding (413); Pillow's
    # own warning below its hard limit would only fill the log.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    settings = settings or Settings()
    svc = BundleService(settings)
    metrics = Metrics()
    limiter: list[anyio.CapacityLimiter] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limiter.append(anyio.CapacityLimiter(settings.threads))
        sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
        threading.Thread(target=svc.start, name="bundle-loader", daemon=True).start()
        yield

    app = FastAPI(
        title="sdrindex",
        version=_version(),
        summary="Spatial Pooler SDRs of MNIST: overlap search and the ways back to the image",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.service = svc
    app.state.metrics = metrics
    install_handlers(app)
    app.add_middleware(Guard, max_body=settings.max_body_bytes, metrics=metrics)

    def in_thread(endpoint: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        import numba

        numba.set_num_threads(min(settings.numba_threads, numba.config.NUMBA_NUM_THREADS))
        out = fn(*args)
        if endpoint is None:
            return out
        if isinstance(out, tuple):  # (body, stage timings)
            out, timing = out
            metrics.observe_stages(endpoint, timing)
        return dumps(out)

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread."""
        return await anyio.to_thread.run_sync(
            partial(in_thread, None, fn, *args), limiter=limiter[0]
        )

    async def run_json(endpoint: str, fn: Callable[..., Any], *args: Any) -> bytes:
        """``fn(*args)`` in a worker thread, its result encoded as JSON there too."""
        return await anyio.to_thread.run_sync(
            partial(in_thread, endpoint, fn, *args), limiter=limiter[0]
        )

    max_k = settings.max_k

    def k_param(default: int) -> Any:
        return Query(default, ge=1, le=max_k, description=f"results per query (1..{max_k})")

    # ------------------------------------------------------------------ queries

    @app.post(
        "/v1/reconstruct",
        response_model=schemas.ReconstructResponse,
        openapi_extra=schemas.query_body(),
        tags=["queries"],
    )
    async def reconstruct(
        request: Request,
        k: int = k_param(1),
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
        return _json(
            await run_json("/v1/reconstruct", handlers.reconstruct, svc, ctype, body, k, methods)
        )

    @app.post(
        "/v1/search",
        response_model=schemas.SearchResponse,
        openapi_extra=schemas.query_body(),
        tags=["queries"],
    )
    async def search(request: Request, k: int = k_param(1)) -> Response:
        """Ids and overlaps of the k stored SDRs overlapping the query most."""
        body = await request.body()
        ctype = request.headers.get("content-type")
        return _json(await run_json("/v1/search", handlers.search, svc, ctype, body, k))

    @app.post(
        "/v1/search/batch",
        response_model=schemas.BatchResponse,
        openapi_extra=schemas.json_body(schemas.BatchRequest),
        tags=["queries"],
    )
    async def search_batch(request: Request, k: int = k_param(1)) -> Response:
        """As /v1/search for up to 256 JSON queries (pixels or SDRs) at once."""
        body = await request.body()
        ctype = request.headers.get("content-type")
        return _json(await run_json("/v1/search/batch", handlers.search_batch, svc, ctype, body, k))

    # ------------------------------------------------------------------ items

    @app.get("/v1/items/{item_id}", response_model=schemas.ItemResponse, tags=["items"])
    async def get_item(item_id: int) -> Response:
        """A stored item: label, SDR and pixels."""
        return _json(await run_json("/v1/items/{item_id}", handlers.get_item, svc, item_id))

    @app.get(
        "/v1/items/{item_id}/image.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the stored image"}},
        tags=["items"],
    )
    async def item_image(
        item_id: int,
        scale: int = Query(1, ge=1, le=16, description="upscale by this integer factor"),
    ) -> Response:
        """The stored image as a greyscale PNG."""
        data = await run(handlers.item_png, svc, item_id, scale)
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=60"})

    @app.get(
        "/v1/items/{item_id}/neighbors", response_model=schemas.NeighborsResponse, tags=["items"]
    )
    async def item_neighbors(item_id: int, k: int = k_param(10)) -> Response:
        """The k stored items overlapping this one most (itself left out)."""
        return _json(
            await run_json("/v1/items/{item_id}/neighbors", handlers.neighbors, svc, item_id, k)
        )

    @app.post(
        "/v1/items",
        status_code=201,
        response_model=schemas.AddItemsResponse,
        openapi_extra=schemas.add_items_body(),
        responses={
            401: {"model": schemas.ErrorResponse, "description": "missing or wrong key"},
            403: {"model": schemas.ErrorResponse, "description": "writes disabled"},
        },
        tags=["items"],
    )
    async def add_items(request: Request) -> Response:
        """Add images (and labels) to the bundle; needs `Authorization: Bearer <key>`.

        The new items are saved as a new bundle version (atomically) and are found by the
        next query to any worker.
        """
        _authorise(settings, request.headers.get("authorization"))
        body = await request.body()
        out = await run(handlers.add_items, svc, request.headers.get("content-type"), body)
        metrics.items.set(out["n_items"])
        return _json(out, 201)

    # ------------------------------------------------------------------ about

    @app.get("/v1/info", response_model=schemas.InfoResponse, tags=["about"])
    async def info() -> Response:
        """The bundle: manifest summary, SP parameters, item count, backend, methods."""
        out = await run(handlers.info, svc)
        metrics.items.set(out["bundle"]["n_items"])
        return _json(out)

    @app.get("/v1/samples/random", response_model=schemas.SampleResponse, tags=["about"])
    async def random_sample(
        seed: int | None = Query(None, description="for a repeatable pick"),
    ) -> Response:
        """A random MNIST test digit (for the demo page), else a random stored item."""
        return _json(await run_json("/v1/samples/random", handlers.random_sample, svc, seed))

    @app.get("/livez", response_model=schemas.StatusResponse, tags=["health"])
    async def livez() -> Response:
        """The process answers."""
        return _json({"status": "alive"})

    @app.get("/readyz", response_model=schemas.StatusResponse, tags=["health"])
    async def readyz() -> Response:
        """200 once the bundle is loaded and the index warmed; 503 before (or on failure)."""
        if svc.ready():
            return _json({"status": "ready", "detail": None, "pid": os.getpid()})
        return _json({"status": svc.status, "detail": svc.reason, "pid": os.getpid()}, 503)

    @app.get("/metrics", response_class=Response, tags=["health"])
    async def prometheus() -> Response:
        """Prometheus metrics of every worker."""
        data = await run(metrics.exposition)
        return Response(data, media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> Response:
        page = STATIC / "index.html"
        try:
            html = await anyio.Path(page).read_bytes()
        except OSError:
            raise ApiError(404, f"demo page missing ({page})") from None
        return HTMLResponse(html)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=__doc__,
                routes=app.routes,
            )
            comps = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in schemas.body_component_schemas().items():
                comps.setdefault(name, schema)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _authorise(settings: Settings, header: str | None) -> None:
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


def _version() -> str:
    try:
        import sdrindex

        return sdrindex.__version__
    except Exception:  # noqa: BLE001
        return "0"
