"""What the routers depend on (``Depends``): the served bundle, settings, metrics, threads.

``create_app`` puts one of each on ``app.state``; the routes receive them through the
``Service``, ``Threads``, ``Config`` and ``Meters`` annotations. The dependencies are
``async`` so that FastAPI resolves them on the event loop (a sync dependency would cost
a thread hop per request). The routes take the bundle's snapshot
(:meth:`BundleService.current`) inside their worker thread: taking it may load a new
version from disk.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import anyio
import orjson
from fastapi import Depends, Query, Request
from starlette.responses import Response

from sdr_service.errors import ApiError, from_library
from sdr_service.metrics import Metrics
from sdr_service.settings import Settings
from sdr_service.state import BundleService, public_text
from sdrindex.errors import SDRIndexError


def dumps(obj: Any) -> bytes:
    """Compact JSON (orjson: ~10x the standard library's speed on a reconstruct answer)."""
    return orjson.dumps(obj)


def json_response(body: bytes | Any, status: int = 200) -> Response:
    """A JSON response from encoded bytes or JSON-ready objects."""
    if not isinstance(body, bytes):
        body = dumps(body)
    return Response(body, status, media_type="application/json")


class Runner:
    """Runs the routes' CPU work in worker threads, at most ``settings.threads`` at once.

    Errors raised there are answered without filesystem paths (:func:`public_text`).
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._limiter: anyio.CapacityLimiter | None = None

    def open(self) -> None:
        """Create the thread limiter (in the app's lifespan, inside the event loop)."""
        self._limiter = anyio.CapacityLimiter(self.settings.threads)

    def _call(self, endpoint: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        import numba

        numba.set_num_threads(min(self.settings.numba_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            out = fn(*args)
        except ApiError as exc:
            exc.detail = public_text(exc.detail, self.settings.bundle)
            raise
        except SDRIndexError as exc:
            # The library's messages name files by their absolute paths: the answer may not.
            api = from_library(exc)
            detail = public_text(api.detail, self.settings.bundle)
            raise ApiError(api.status, detail, api.headers) from exc
        if endpoint is None:
            return out
        if isinstance(out, tuple):  # (body, stage timings)
            out, timing = out
            self.metrics.observe_stages(endpoint, timing)
        return dumps(out)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread."""
        return await anyio.to_thread.run_sync(
            partial(self._call, None, fn, *args), limiter=self._limiter
        )

    async def run_json(self, endpoint: str, fn: Callable[..., Any], *args: Any) -> bytes:
        """``fn(*args)`` in a worker thread, its result encoded as JSON there too.

        ``fn`` may return ``(body, timings)``: the stage timings (ms) go to the metrics
        under ``endpoint``.
        """
        return await anyio.to_thread.run_sync(
            partial(self._call, endpoint, fn, *args), limiter=self._limiter
        )


async def get_service(request: Request) -> BundleService:
    return request.app.state.service


async def get_runner(request: Request) -> Runner:
    return request.app.state.runner


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


Service = Annotated[BundleService, Depends(get_service)]
Threads = Annotated[Runner, Depends(get_runner)]
Config = Annotated[Settings, Depends(get_settings)]
Meters = Annotated[Metrics, Depends(get_metrics)]


def k_param(default: int, max_k: int) -> Any:
    """The ``k`` query parameter (1..``max_k``, from the settings)."""
    return Query(default, ge=1, le=max_k, description=f"results per query (1..{max_k})")
