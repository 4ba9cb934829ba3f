"""The outermost middleware: the body size limit, and request metrics per route."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdr_service.errors import BodyTooLarge, error_body
from sdr_service.metrics import Metrics


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
