"""About the service: /v1/info, /v1/samples/random, /livez, /readyz, /metrics."""

from __future__ import annotations

import os
import random
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Query
from starlette.responses import Response

from sdr_service import schemas
from sdr_service.cluster import ClusterService, retry_after, shards_down
from sdr_service.deps import Meters, Service, Threads, json_response
from sdr_service.metrics import CONTENT_TYPE
from sdr_service.settings import Settings
from sdr_service.state import BundleService


def info_answer(svc: BundleService) -> dict[str, Any]:
    """The answer of ``/v1/info``: the bundle, its methods, the limits."""
    loaded = svc.current()
    s = svc.settings
    summary = loaded.bundle.summary()
    # The bundle by its folder and version, never its absolute path (anyone may ask).
    summary["path"] = svc.public(str(summary["path"] or svc.root))
    return {
        "bundle": summary,
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
        "reload": svc.reload_state(),
    }


def sample_answer(svc: BundleService, seed: int | None) -> dict[str, Any]:
    """A random MNIST test digit, else (no MNIST test set) a random stored item."""
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


async def _cluster_ready(svc: ClusterService) -> Response:
    """``/readyz`` of a bundle sharded over Ray actors: 200 only while every shard answers."""
    # asks every actor (a few seconds at most): anyio's threads, not the request threads
    shards = await anyio.to_thread.run_sync(svc.shards) or []
    down = shards_down(shards)
    status = "ready" if down is None else "degraded"
    body = {"status": status, "detail": down, "pid": os.getpid(), "shards": shards}
    response = json_response(body, 200 if down is None else 503)
    if down is not None:
        response.headers["Retry-After"] = retry_after(svc.settings)
    return response


def router(settings: Settings) -> APIRouter:
    """The info, sample, health and metrics routes."""
    api = APIRouter()

    @api.get("/v1/info", response_model=schemas.InfoResponse, tags=["about"])
    async def info(svc: Service, threads: Threads, metrics: Meters) -> Response:
        """The bundle: manifest summary, SP parameters, item count, backend, methods."""
        out = await threads.run(info_answer, svc)
        metrics.items.set(out["bundle"]["n_items"])
        return json_response(out)

    @api.get("/v1/samples/random", response_model=schemas.SampleResponse, tags=["about"])
    async def random_sample(
        svc: Service,
        threads: Threads,
        seed: int | None = Query(None, description="for a repeatable pick"),
    ) -> Response:
        """A random MNIST test digit (for the demo page), else a random stored item."""
        return json_response(await threads.run_json("/v1/samples/random", sample_answer, svc, seed))

    @api.get("/livez", response_model=schemas.StatusResponse, tags=["health"])
    async def livez() -> Response:
        """The process answers."""
        return json_response({"status": "alive"})

    @api.get("/readyz", response_model=schemas.StatusResponse, tags=["health"])
    async def readyz(svc: Service) -> Response:
        """200 once the bundle is loaded and the index warmed; 503 before (or while a failed
        load is retried, with the reason and ``Retry-After``). Ready with a newer version that
        does not load: 200 (the previous one serves), the reload error in ``detail``."""
        if svc.ready() and isinstance(svc, ClusterService):
            return await _cluster_ready(svc)
        if svc.ready():
            body = {"status": "ready", "detail": svc.reload_error, "pid": os.getpid()}
            return json_response(body)
        body = {"status": svc.status, "detail": svc.reason, "pid": os.getpid()}
        response = json_response(body, 503)
        response.headers["Retry-After"] = svc.retry_after()
        return response

    @api.get("/metrics", response_class=Response, tags=["health"])
    async def prometheus(metrics: Meters) -> Response:
        """Prometheus metrics of every worker."""
        # anyio's own threads, not the request threads: answers at once under overload
        data = await anyio.to_thread.run_sync(metrics.exposition)
        return Response(data, media_type=CONTENT_TYPE)

    return api
