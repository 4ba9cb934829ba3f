"""schemathesis against the app's own OpenAPI document: no request gets a 5xx.

Every operation the document lists is called with generated requests, valid ones and
invalid ones (schemathesis' positive and negative modes), in process over ASGI on a small
bundle; writes (``POST /v1/items``) both without the API key and with it. The run is
bounded (examples per operation) to stay within about a minute on two cores.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e .[dev]")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.python.asgi import get_client  # noqa: E402

from helpers import build_small_bundle, copy_bundle  # noqa: E402
from sdr_service import Settings, create_app  # noqa: E402

KEY = "schemathesis-key"
BOUNDED = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def _settings(bundle: Path) -> Settings:
    return Settings(bundle=bundle, api_key=KEY, max_add=8)


# The document depends on the settings, not on the bundle: it is read from an app that is
# never started, so that pytest knows the operations when it collects the tests. The
# fixture checks that the app under test publishes the same document.
_DOC = create_app(_settings(Path("not-loaded"))).openapi()
schema = schemathesis.openapi.from_dict(_DOC)


class _StartedOnce:
    """The app, its lifespan started once for the module.

    schemathesis' pytest plugin ends an ASGI app's lifespan after every test and starts it
    again on the next request; the service would reload its bundle each time and answer
    503 (not ready) meanwhile. This wrapper answers those lifespan messages itself and
    starts the app's own lifespan once, on schemathesis' event loop.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.task: asyncio.Task | None = None
        self.started = asyncio.Event()

    async def _inner_lifespan(self) -> None:
        sent_startup = False
        forever = asyncio.Event()

        async def receive():
            nonlocal sent_startup
            if not sent_startup:
                sent_startup = True
                return {"type": "lifespan.startup"}
            await forever.wait()

        async def send(message):
            if message["type"].startswith("lifespan.startup"):
                self.started.set()

        await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.task is None:
                    self.started = asyncio.Event()
                    self.task = asyncio.get_running_loop().create_task(self._inner_lifespan())
                await self.started.wait()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture(scope="module")
def api_app(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    src = build_small_bundle(base / "service-small", n=1500)
    root = copy_bundle(src, tmp_path_factory.mktemp("schemathesis") / "bundle")
    app = create_app(_settings(root))
    assert app.openapi() == _DOC, "the app's document differs from the one tested"
    wrapped = _StartedOnce(app)
    with get_client(wrapped) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app was not ready in 120 s"
            time.sleep(0.05)
    return wrapped


@schema.parametrize()
@BOUNDED
def test_no_5xx_without_key(case, api_app):
    case.call_and_validate(app=api_app, checks=[not_a_server_error])


@schema.include(method="POST", path="/v1/items").parametrize()
@BOUNDED
def test_no_5xx_writing_with_key(case, api_app):
    case.call_and_validate(
        app=api_app, headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error]
    )
