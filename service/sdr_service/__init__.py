"""The sdrindex HTTP service: FastAPI over a bundle (``create_app``), ``sdrindex serve``.

``create_app`` and ``Settings`` are imported on first use, so that
``sdr_service.serve`` (the ``sdrindex serve`` command, found by the CLI through the
``sdrindex.commands`` entry point) can be imported without loading FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "Settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from sdr_service.app import create_app

        return create_app
    if name == "Settings":
        from sdr_service.settings import Settings

        return Settings
    raise AttributeError(f"module 'sdr_service' has no attribute {name!r}")
