"""One router per resource; ``create_app`` includes them in this order.

Each module holds the routes (``router(settings)``: the limits in the settings shape the
parameters' validation and the OpenAPI document) and the plain functions behind them,
which run in worker threads and return JSON-ready objects.
"""

from __future__ import annotations

from sdr_service.routes import about, demo, items, reconstruct, search

#: The routers' modules, in the order their routes appear in the API document.
MODULES = (reconstruct, search, items, about, demo)

__all__ = ["MODULES"]
