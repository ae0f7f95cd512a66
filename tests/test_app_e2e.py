"""End to end: `python app.py` in a subprocess, driven by a real headless Chromium.

Debian's /usr/bin/chromium through Python Playwright (never `playwright install`); a missing browser is a
failure, not a skip. The app runs offline with an untrained teacher. Screenshots go to tests/artifacts/e2e/
(or $APM_E2E_ARTIFACTS) and their paths are printed (`pytest -s` shows them). Timings are printed, never
asserted: `scripts/measure_app.py` reports them for a full default run.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.app_driver import (
    CHROMIUM,
    JS_ISLAND_POINTS,
    JS_STATUS,
    JS_WATCH_STATUS,
    JS_WEBGL_STATE,
    ROOT,
    app_server,
    chromium,
    js_step_above,
    open_app,
    set_timeline,
    status_step,
    update_rate,
    upload_image,
)

ARTIFACTS = Path(os.environ.get("APM_E2E_ARTIFACTS", ROOT / "tests" / "artifacts" / "e2e"))
IMAGE = ROOT / "assets" / "examples" / "face.png"
FINISHED = r"/^(stopped|done)\b/.test(((document.querySelector('#status') || {}).innerText || '').trim())"


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def server(artifacts):
    """The app on 127.0.0.1 and a free port; killed (its own process group) at teardown."""
    with app_server(artifacts / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():  # CI installs chromium: its absence is a broken setup, not a reason to skip
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with chromium() as b:
        yield b


def shot(page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def status(page) -> str:
    return page.evaluate(JS_STATUS).strip()


def test_run_stop_and_scrub(browser, server, artifacts):
    page = open_app(browser, server)
    assert "Ready" in status(page)
    page.wait_for_selector("#islands-plot .js-plotly-plot", timeout=30_000)  # the empty islands plot, drawn
    shot(page, artifacts, "01-loaded")

    upload_image(page, IMAGE)
    start_ms = page.evaluate(JS_WATCH_STATUS)
    pressed = time.perf_counter()
    page.click("#run")

    # the first islands frame: Scattergl draws on WebGL (no DOM points), so read the plot's data
    page.wait_for_function(f"() => ({JS_ISLAND_POINTS})() > 0", timeout=120_000, polling="raf")
    first_frame_s = time.perf_counter() - pressed
    page.wait_for_function(js_step_above(20), timeout=180_000, polling=50)
    running = status(page)
    step, total = status_step(running)
    assert 20 < step < total == 300, running
    assert re.search(r"step \d+ / 300 · \d+ steps/s · feature loss \d\.\de[+-]\d+ · \d+\.\d s", running), running
    folded = page.locator("#folded").inner_text()
    h, w = map(int, re.search(r"(\d+) x (\d+) queries", folded).groups())
    assert page.evaluate(JS_ISLAND_POINTS) == h * w
    for elem in ("#input-small", "#islands-image", "#teacher-islands", "#rgb-image"):
        assert page.locator(f"{elem} img").count() >= 1, f"{elem} shows no image"
    for elem in ("#loss-plot", "#fidelity-plot", "#unfolded-plot"):
        assert page.locator(f"{elem} .js-plotly-plot").count() == 1, f"{elem} shows no figure"
    shot(page, artifacts, "02-running")

    page.click("#stop")
    page.wait_for_function(f"() => {FINISHED}", timeout=30_000, polling=50)
    stopped = status(page)
    assert stopped.startswith(("stopped", "done")), stopped
    stopped_step, _ = status_step(stopped)
    assert stopped_step >= step
    log = page.evaluate("() => window.__statusLog")
    n_updates, rate = update_rate(log, start_ms)
    assert n_updates >= 2
    assert page.evaluate(JS_ISLAND_POINTS) == h * w
    shot(page, artifacts, "03-stopped")

    # scrub back to the first recorded frame: every panel follows, the step in the status changes
    timeline = page.locator("#timeline input[type=range]")
    assert int(timeline.get_attribute("max")) >= 1
    set_timeline(page, 0)
    page.wait_for_function(
        f"() => {{ const m = ((document.querySelector('#status') || {{}}).innerText || '').match(/step (\\d+) \\//);"
        f" return !!m && parseInt(m[1]) < {stopped_step}; }}", timeout=30_000, polling=50)
    scrubbed = status(page)
    assert status_step(scrubbed)[0] < stopped_step and "⚠" not in scrubbed, scrubbed
    assert re.search(r"Islands at step \d+", page.locator("#islands-plot").inner_text())
    assert page.evaluate(JS_ISLAND_POINTS) == h * w
    shot(page, artifacts, "04-scrubbed")

    gl = page.evaluate(JS_WEBGL_STATE)
    print(f"time to first islands frame: {first_frame_s:.2f} s")
    print(f"status updates during the run: {n_updates} ({rate:.2f} per second)")
    print(f"stopped at: {stopped}")
    print(f"scrubbed to: {scrubbed}")
    print(f"WebGL contexts: {gl['created']} created, {gl['lost']} lost (islands plot: {gl['islands_lost']} lost)")
    if page.console_errors:
        print(f"browser console errors: {page.console_errors}")
    assert not [e for e in page.console_errors if e.startswith("pageerror")], page.console_errors
    page.close()


def test_a_broken_upload_shows_an_error_then_a_run_works(browser, server, artifacts, corpus):
    page = open_app(browser, server)
    page.locator("#input-image input[type=file]").set_input_files(str(corpus["truncated_png"]))
    page.wait_for_timeout(500)
    page.click("#run")
    page.wait_for_function("() => !!document.querySelector('#status .apm-error')", timeout=60_000, polling=50)
    error = status(page)
    assert "damaged" in error and "truncated.png" in error, error
    shot(page, artifacts, "05-broken-upload")

    page.locator("#input-image button[aria-label='Remove Image']").first.click()
    upload_image(page, corpus["plain_jpeg"])
    page.click("#run")
    page.wait_for_function(js_step_above(10), timeout=180_000, polling=50)
    assert "⚠" not in status(page)
    page.click("#stop")
    page.wait_for_function(f"() => {FINISHED}", timeout=30_000, polling=50)
    page.close()


JS_CAMERA_EYE = """() => {
    const gd = document.querySelector('#islands-plot .js-plotly-plot');
    const scene = gd && gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene._scene;
    return scene ? scene.getCamera().eye : null;
}"""


def test_3d_camera_stays_where_the_user_put_it(browser, server, artifacts):
    """Live updates of the t-SNE 3D scatter keep the camera the user dragged to (plotly's uirevision)."""
    page = open_app(browser, server)
    try:
        upload_image(page, ROOT / "assets" / "examples" / "house.png")
        page.get_by_text("t-SNE 3D", exact=True).click()
        page.click("#run")
        page.wait_for_function(f"() => ({JS_ISLAND_POINTS})() > 0", timeout=60_000)
        page.wait_for_function(js_step_above(30), timeout=60_000)
        page.locator("#islands-plot").scroll_into_view_if_needed()
        box = page.locator("#islands-plot").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        default = page.evaluate(JS_CAMERA_EYE)
        for _ in range(3):  # a drag across the scene turns the camera (retried if a live update interrupted it)
            page.mouse.move(cx, cy)
            page.mouse.down()
            for k in range(20):
                page.mouse.move(cx + 8 * k, cy + 3 * k, steps=2)
            page.mouse.up()
            turned = page.evaluate(JS_CAMERA_EYE)
            if turned != default:
                break
        assert turned != default
        step, total = status_step(status(page))
        page.wait_for_function(js_step_above(min(step + 40, total - 1)), timeout=120_000)  # live updates later
        assert page.evaluate(JS_CAMERA_EYE) == pytest.approx(turned)
        shot(page, artifacts, "06-camera-kept")
        page.click("#stop")
        page.wait_for_function(FINISHED, timeout=30_000)
    finally:
        page.close()
