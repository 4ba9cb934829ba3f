"""The HTTP service: ``create_app(settings)`` -> a FastAPI app over one bundle.

Run it with ``sdrindex serve`` (see :mod:`sdr_service.serve`) or any ASGI server:
``uvicorn --factory sdr_service.app:create_app``. Every route's CPU work (parsing,
image decoding, encoding, search, reconstruction, JSON) runs in a worker thread, never on
the event loop; the bundle loads in the background at start-up and ``/readyz`` turns 200
once it is loaded and warmed.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sdr_service import routes, schemas
from sdr_service.deps import Runner
from sdr_service.errors import install_handlers
from sdr_service.metrics import Metrics
from sdr_service.middleware import Guard
from sdr_service.settings import Settings
from sdr_service.state import BundleService

log = logging.getLogger("service")

_ERRORS = {
    s: {"model": schemas.ErrorResponse, "description": d}
    for s, d in {
        400: "malformed body",
        413: "body or image too large",
        415: "not an image / unsupported content type",
        422: "invalid value (k, methods, pixels, SDR size or indices, ...)",
        503: "not ready (bundle loading), or overloaded (with Retry-After)",
    }.items()
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service over ``settings.bundle`` (default: read from ``SDRINDEX_*`` variables).

    The app's state holds what the routes depend on (:mod:`sdr_service.deps`): the
    :class:`BundleService` (loaded in a background thread at start-up), the settings, the
    metrics and the worker-thread :class:`Runner`.
    """
    import warnings

    from PIL import Image

    # Uploads above settings.max_image_pixels are refused before decoding (413); Pillow's
    # own warning below its hard limit would only fill the log.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    settings = settings or Settings()
    svc = _service(settings)
    metrics = Metrics()
    runner = Runner(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.open()
        sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
        threading.Thread(target=svc.start, name="bundle-loader", daemon=True).start()
        try:
            yield
        finally:
            svc.close()  # stops the retry of a failed load or reload

    app = FastAPI(
        title="sdrindex",
        version=_version(),
        summary="Spatial Pooler SDRs of MNIST: overlap search and the ways back to the image",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.service = svc
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runner = runner
    install_handlers(app)
    app.add_middleware(
        Guard,
        max_body=settings.max_body_bytes,
        metrics=metrics,
        max_in_flight=settings.in_flight_limit,
        retry_after_s=settings.retry_after_s,
    )
    for module in routes.MODULES:
        app.include_router(module.router(settings))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _service(settings: Settings) -> BundleService:
    """The bundle behind the app: served here, or sharded over a Ray cluster's actors."""
    if settings.ray_address:
        from sdr_service.cluster import ClusterService

        return ClusterService(settings)
    return BundleService(settings)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the request bodies' schemas (parsed by hand, not by models)."""
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
        _constrain_bodies(comps, app.state.settings)
        app.openapi_schema = spec
    return app.openapi_schema


def _constrain_bodies(comps: dict[str, Any], settings: Settings) -> None:
    """The request bodies' limits in the document: the sizes and ranges the parser enforces.

    With them a client (or a generator such as schemathesis) can tell a valid request from
    an invalid one without trial and error; the parser still checks every one of them.
    """
    from sdr_service.inputs import LABEL_LIMIT

    h, w = 28, 28  # the MNIST shape every bundle served here has; /v1/info tells
    pixels = {
        "type": "array",
        "minItems": h,
        "maxItems": h,
        "items": {
            "type": "array",
            "minItems": w,
            "maxItems": w,
            "items": {"type": "integer", "minimum": 0, "maximum": 255},
        },
    }
    label = {"type": "integer", "minimum": -LABEL_LIMIT + 1, "maximum": LABEL_LIMIT - 1}

    def update(model: str, field: str, **extra: Any) -> None:
        prop = comps.get(model, {}).get("properties", {}).get(field)
        if prop is not None:
            prop.update(extra)

    for model in ("PixelsQuery", "ItemIn"):
        update(model, "pixels", **pixels)
    update("SDRIn", "active", items={"type": "integer", "minimum": 0})
    update("SDRIn", "size", minimum=1)
    update("ItemIn", "label", anyOf=[label, {"type": "null"}])
    update("AddItemsUpload", "label", anyOf=[{"type": "array", "items": label}, {"type": "null"}])
    update("BatchRequest", "queries", minItems=1, maxItems=settings.max_batch)
    update("AddItemsRequest", "items", minItems=1, maxItems=settings.max_add)
    update("AddItemsUpload", "image", minItems=1, maxItems=settings.max_add)


def _version() -> str:
    try:
        import sdrindex

        return sdrindex.__version__
    except Exception:  # noqa: BLE001
        return "0"
