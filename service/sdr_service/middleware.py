"""The outermost middleware: backpressure, the body size limit, and request metrics per route."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdr_service.errors import BodyTooLarge, error_body
from sdr_service.metrics import Metrics

#: Paths answered whatever the load: an orchestrator must tell "busy" from "dead", and
#: a scraper must see the overload it is asked about. None reads a body.
EXEMPT = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})
#: The endpoint label of requests refused before routing (the route is not known yet).
REJECTED = "(rejected)"
#: Seconds a rejected request's body is read and dropped after its 503 at most (a client that
#: sends slower than that gets its connection closed, as before).
DRAIN_S = 5.0


class Guard:
    """Outermost middleware: at most ``max_in_flight`` requests at once, bodies of at most
    ``max_body`` bytes, and request metrics per route.

    A request beyond ``max_in_flight`` (those to :data:`EXEMPT` paths aside) is answered
    503 with ``Retry-After`` at once, before any of its body is read, and counted in
    ``sdrindex_requests_rejected_total{reason="overload"}``. The count covers a request
    from its arrival to the end of its answer (reading its body, waiting for a worker
    thread, running): the bodies a worker holds are at most ``max_in_flight`` x
    ``max_body`` bytes. The count needs no lock: it is read and changed only on the event
    loop, with no ``await`` between the check and the increment.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        metrics: Metrics,
        max_in_flight: int = 32,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") in EXEMPT:
            await self._guarded(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await self._overloaded(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def _overloaded(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        self.metrics.rejected.labels("overload").inc()
        detail = (
            f"overloaded: {self.max_in_flight} requests in progress on this worker; "
            f"retry after {self.retry_after.decode()} s"
        )
        # The 503 goes out before any of the body is read; the response ends only after the
        # body was read and dropped (nothing is buffered). A server closing a socket with
        # unread data resets the connection, and a client still sending its body then loses
        # the 503 (BrokenPipeError): uvicorn closes right after the response when the client
        # sent `Connection: close`, whatever was left unread.
        headers = [(b"retry-after", self.retry_after)]
        await self._reject(send, 503, detail, headers, close=False, more_body=True)
        await self._drain(receive)
        await send({"type": "http.response.body", "body": b""})
        self.metrics.observe_request(
            REJECTED, scope.get("method", ""), 503, time.perf_counter() - start
        )

    async def _drain(self, receive: Receive) -> None:
        """Read and drop a request's body: up to max_body bytes, for DRAIN_S at most."""
        read = 0
        try:
            async with asyncio.timeout(DRAIN_S):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client left
                    read += len(message.get("body", b""))
                    if not message.get("more_body", False) or read > self.max_body:
                        return
        except TimeoutError:
            return

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
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
    async def _reject(
        send: Send,
        status: int,
        detail: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        close: bool = True,
        more_body: bool = False,
    ) -> None:
        body = error_body(status, detail)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *([(b"connection", b"close")] if close else []),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": more_body})
