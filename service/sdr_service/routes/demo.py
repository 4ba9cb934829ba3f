"""``GET /``: the demo page (one static HTML file, no external resources)."""

from __future__ import annotations

from pathlib import Path

import anyio
from fastapi import APIRouter
from starlette.responses import HTMLResponse, Response

from sdr_service.errors import ApiError
from sdr_service.settings import Settings

STATIC = Path(__file__).resolve().parent.parent / "static"


def router(settings: Settings) -> APIRouter:
    """The demo page route."""
    api = APIRouter()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> Response:
        page = STATIC / "index.html"
        try:
            html = await anyio.Path(page).read_bytes()
        except OSError:
            raise ApiError(404, "demo page missing (static/index.html)") from None
        return HTMLResponse(html)

    return api
