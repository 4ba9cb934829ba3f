"""Prometheus metrics: requests and latency per endpoint, latency per processing stage.

With several worker processes (``sdrindex serve --workers N``), ``serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, every worker
writes its samples there, and ``GET /metrics`` (answered by any worker) adds them all up.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_STAGE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    5.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sdrindex_http_requests",
            "HTTP requests answered, by endpoint (route template), method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sdrindex_http_request_duration_seconds",
            "Time from the request's arrival to the end of the response, by endpoint",
            ["endpoint", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "sdrindex_stage_duration_seconds",
            "Time spent in each processing stage (parse, decode, encode, search, label, "
            "reconstruct_<method>, render), by endpoint",
            ["endpoint", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "sdrindex_requests_rejected",
            "Requests refused before their body was read, by reason (overload: more than "
            "SDRINDEX_MAX_IN_FLIGHT in progress on the worker; answered 503)",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "sdrindex_requests_in_flight",
            "Requests in progress (reading, waiting for a thread or running), health aside",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.disconnects = Counter(
            "sdrindex_client_disconnects",
            "Requests whose client went away before the answer (also counted as status 499 "
            "in sdrindex_http_requests_total, never as a 5xx)",
            ["endpoint"],
            registry=r,
        )
        self.items = Gauge(
            "sdrindex_bundle_items",
            "Items in the served bundle version",
            registry=r,
            multiprocess_mode="max",
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint, method).observe(seconds)

    def observe_stages(self, endpoint: str, timing_ms: dict[str, float]) -> None:
        for stage, ms in timing_ms.items():
            if stage != "total":
                self.stages.labels(endpoint, stage).observe(ms / 1000.0)

    def exposition(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
