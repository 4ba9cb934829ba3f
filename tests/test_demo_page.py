"""The demo page in a real headless Chromium (Debian's, driven by playwright-python).

Install them with ``bash scripts/install_browser.sh``. Without Chromium or playwright this
test fails (it does not skip) and says how to install them. It draws a stroke, submits,
checks that the images and the label appear, and keeps a screenshot in out/demo.png (not
tracked; ``SDRINDEX_DEMO_SCREENSHOT=docs/demo.png`` writes it there instead, and
``SDRINDEX_DEMO_BUNDLE=bundles/mnist`` takes it on the full bundle, as docs/demo.png was).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

from helpers import ServerProcess, build_small_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "run `bash scripts/install_browser.sh` (Debian's chromium + playwright-python)"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    for cand in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "/usr/bin/chromium"):
        if cand and (found := shutil.which(cand)):
            return found
    pytest.fail(f"Chromium not found: {INSTALL}", pytrace=False)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    bundle = os.environ.get("SDRINDEX_DEMO_BUNDLE")
    if not bundle:
        bundle = build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)
    log = tmp_path_factory.getbasetemp() / "demo-server.log"
    with ServerProcess(bundle, workers=1, log=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright (python) is not installed: {INSTALL}", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_draw_submit_and_see_results(demo_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith(demo_server.url)
            or r.url.startswith("data:")
            or r.url.startswith("blob:")
            else outside.append(r.url)
        ),
    )
    page.goto(demo_server.url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=20000)

    # A "7": a stroke across the top, then down to the bottom left.
    box = page.locator("#pad").bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + 70, y0 + 60)
    page.mouse.down()
    for t in range(1, 11):
        page.mouse.move(x0 + 70 + 14 * t, y0 + 60)
    for t in range(1, 16):
        page.mouse.move(x0 + 210 - 7 * t, y0 + 60 + 13 * t)
    page.mouse.up()  # auto-submit on lift
    page.click("#submit")

    page.wait_for_function(
        "document.querySelectorAll('#matches img').length > 0 && "
        "[...document.querySelectorAll('#matches img, #reconstructions img, #input-binary')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=20000,
    )
    label = page.inner_text("#predicted").strip()
    assert label.isdigit(), label
    assert page.locator("#matches img").count() == 5
    for name in ("nearest", "knn", "backprojection", "decoder"):
        el = page.locator(f"img#rec-{name}")
        assert el.count() == 1, f"no {name} reconstruction shown"
        assert el.evaluate("i => i.naturalWidth") == 28
    assert "columns active" in page.inner_text("#sdr-note")
    # the SDR grid has lit cells
    lit = page.evaluate(
        "() => { const c = document.getElementById('sdr-grid'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 0; i < d.length; i += 4) if (d[i] > 200) n++; return n; }"
    )
    assert lit > 0
    assert "error" not in (page.get_attribute("#status", "class") or "")
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    keep = Path(os.environ.get("SDRINDEX_DEMO_SCREENSHOT") or ROOT / "out" / "demo.png")
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep)  # a test run leaves the tracked docs/demo.png alone

    # a random test digit goes through too
    page.click("#random")
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('mnist-test')", timeout=20000
    )
    assert page.inner_text("#predicted").strip().isdigit()
    assert not errors, errors
    assert not outside, f"the page fetched from elsewhere: {outside}"
    page.close()
