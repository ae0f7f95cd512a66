"""End to end: `python app.py` in a subprocess, driven by a real headless Chromium (the Islands tab).

Debian's /usr/bin/chromium through Python Playwright (never `playwright install`); a missing browser is a
failure, not a skip. The app runs offline with an untrained teacher. Screenshots go to tests/artifacts/e2e/
(or $APM_E2E_ARTIFACTS) and their paths are printed (`pytest -s` shows them). Timings are printed, not asserted:
`scripts/measure_app.py` reports them.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from app.testing.browser import (
    CHROMIUM,
    JS_ISLAND_POINTS,
    JS_WATCH_STATUS,
    JS_WEBGL_STATE,
    ROOT,
    app_server_for,
    chromium,
    click_example,
    js_step_above,
    open_accordion,
    open_app,
    set_number,
    shot,
    status_step,
    text_of,
    upload_image,
    wait_text,
)

ARTIFACTS = Path(os.environ.get("APM_E2E_ARTIFACTS", ROOT / "tests" / "artifacts" / "e2e"))
EXAMPLE_FACE = 2  # the examples gallery is sorted by file name: car, china_photo, face, ...
FINISHED = r"^⚠? ?(stopped|done|cut off)"
JS_ISLANDS_TYPE = """() => { const el = document.querySelector('#islands-plot .js-plotly-plot');
    return el && el.data && el.data.length ? el.data[0].type : null; }"""


@pytest.fixture(scope="module")
def server(request):
    with app_server_for(request, ARTIFACTS / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():  # CI installs chromium: its absence is a broken setup, not a reason to skip
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with chromium() as b:
        yield b


def status(page) -> str:
    return text_of(page, "status")


def no_page_errors(page) -> None:
    if page.console_errors:
        print(f"browser console errors: {page.console_errors}")
    assert not [e for e in page.console_errors if e.startswith("pageerror")], page.console_errors


def test_run_stop_and_scrub(browser, server):
    page = open_app(browser, server)
    assert "Ready" in status(page)
    page.wait_for_selector("#islands-plot .js-plotly-plot", timeout=30_000)  # the empty islands plot, drawn
    shot(page, ARTIFACTS, "01-loaded")
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "face.png: 448 x 448 px, ready")
    pressed = time.perf_counter()
    page.click("#run")
    page.wait_for_function(f"() => ({JS_ISLAND_POINTS})() > 0", timeout=120_000, polling="raf")
    first_frame_s = time.perf_counter() - pressed
    page.wait_for_function(js_step_above(20), timeout=180_000, polling=50)
    running = status(page)
    step, total = status_step(running)
    assert 20 < step < total == 300 and running.startswith("training ·"), running
    assert re.search(r"step \d+ / 300 · \d+ steps/s · feature loss \d\.\de[+-]\d+ · \d+\.\d s · \d+ islands", running)
    h, w = map(int, re.search(r"(\d+) x (\d+) queries", page.locator("#folded").inner_text()).groups())
    assert page.evaluate(JS_ISLAND_POINTS) == h * w
    for elem in ("#input-small", "#islands-image", "#teacher-islands", "#rgb-image"):
        assert page.locator(f"{elem} img").count() >= 1, f"{elem} shows no image"
    for elem in ("#loss-plot", "#fidelity-plot", "#unfolded-plot"):
        assert page.locator(f"{elem} .js-plotly-plot").count() == 1, f"{elem} shows no figure"
    shot(page, ARTIFACTS, "02-running")

    page.click("#stop")
    stopped = wait_text(page, "status", FINISHED, 30_000)
    assert stopped.startswith("stopped by you"), stopped
    stopped_step, _ = status_step(stopped)
    assert stopped_step >= step and page.evaluate(JS_ISLAND_POINTS) == h * w
    shot(page, ARTIFACTS, "03-stopped")

    # scrub back in steps: every panel follows the timeline
    set_number(page, "timeline", 1)
    scrubbed = wait_text(page, "status", r"^showing · step 1 /", 30_000)
    assert "⚠" not in scrubbed and re.search(r"Islands · step 1\b", page.locator("#islands-plot").inner_text())
    shot(page, ARTIFACTS, "04-scrubbed")
    gl = page.evaluate(JS_WEBGL_STATE)
    print(f"first islands frame {first_frame_s:.2f} s after Run; WebGL contexts {gl['created']} created, {gl['lost']} lost")
    assert gl["lost"] == 0  # few points are drawn as SVG: a run uses up no WebGL contexts
    no_page_errors(page)
    page.close()


def test_a_status_that_never_comes_says_what_it_read(browser, server):
    """A wait for a status that never shows fails with the text the status read instead, not a bare timeout."""
    page = open_app(browser, server)
    with pytest.raises(AssertionError, match=r"#status did not match .*; it reads '.*Ready"):
        wait_text(page, "status", r"^no such status$", 500)
    page.close()


def test_run_during_a_run_starts_a_new_one(browser, server):
    page = open_app(browser, server)
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "ready")
    page.click("#run")
    page.wait_for_function(js_step_above(40), timeout=180_000, polling=50)
    before, _ = status_step(status(page))
    page.click("#run")  # Run again: the running run ends, a new one starts with the page's settings
    page.wait_for_function(  # a status only the new run can send: training again, below the old run's step
        "(before) => { const t = (document.querySelector('#status').innerText || '').trim().split('\\n').pop();"
        " const m = t.match(/^training · step (\\d+) \\//); return !!m && parseInt(m[1]) < before; }",
        arg=before, timeout=120_000, polling=50)
    page.wait_for_timeout(2_000)
    later = status(page)
    assert later.startswith("training ·") and "stopped" not in later, later  # the new run goes on
    page.click("#stop")
    wait_text(page, "status", FINISHED, 30_000)
    no_page_errors(page)
    page.close()


def test_two_pages_on_the_same_example_share_one_run(browser, server):
    """A class clicks the same example: the second page joins the run the first started, both stream islands, and
    the second says it joined."""
    first, second = open_app(browser, server), open_app(browser, server)
    for page in (first, second):
        click_example(page, EXAMPLE_FACE)
        wait_text(page, "status", "ready")
    first.click("#run")
    first.wait_for_function(js_step_above(20), timeout=180_000, polling=50)
    second.click("#run")
    joined = wait_text(second, "status", r"joined", 120_000)
    assert joined.startswith("training, joined"), joined
    for page in (first, second):
        page.wait_for_function(f"() => ({JS_ISLAND_POINTS})() > 0", timeout=60_000)
    shot(second, ARTIFACTS, "05-joined")
    for page in (first, second):
        finished = wait_text(page, "status", FINISHED, 180_000)
        assert finished.startswith("done"), finished
    assert "(joined)" in status(second) and "joined" not in status(first)
    assert status_step(status(first)) == status_step(status(second)) == (300, 300)
    for page in (first, second):
        no_page_errors(page)
        page.close()


def test_a_broken_file_over_an_example_gets_our_message(browser, server, corpus):
    """A broken upload is reported when it is chosen, Run repeats our message, and no path or traceback shows."""
    page = open_app(browser, server)
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "ready")
    for name, words in (("empty", "empty"), ("text_as_png", "not an image")):
        page.locator("#input-image input[type=file]").set_input_files(str(corpus[name]))
        error = wait_text(page, "status", "^⚠.*" + re.escape(corpus[name].name), 30_000)  # this file's message
        assert words in error and corpus[name].name in error, error
        page.evaluate(JS_WATCH_STATUS)  # Run replaces the upload's message: wait for the one after "starting"
        page.click("#run")
        page.wait_for_function("""() => { const log = window.__statusLog || [];
            const k = log.findIndex(e => e.text.includes('starting'));
            return k >= 0 && log.slice(k + 1).some(e => /^\\s*(⚠|training)/.test(e.text.split('\\n').pop())); }""",
                               timeout=60_000)
        again = text_of(page, "status")
        assert again.startswith("⚠") and words in again, again
        body = page.locator("body").inner_text()
        assert "Traceback" not in body and "preprocess" not in body and "/tmp/" not in body, body[-500:]
        assert "Error" not in page.locator(".toast-body").all_inner_texts().__str__() or words in str(
            page.locator(".toast-body").all_inner_texts())
    shot(page, ARTIFACTS, "05-broken-upload")
    upload_image(page, ROOT / "assets" / "examples" / "house.png")  # a good file clears the stale error
    ok = wait_text(page, "status", "house.png: .* ready", 30_000)
    assert "⚠" not in ok
    no_page_errors(page)
    page.close()


def test_status_and_errors_are_where_the_user_is(browser, server):
    """At 1440 x 1000, scrolled down to the settings, Run and the status stay in view; errors also toast."""
    page = open_app(browser, server, width=1440, height=1000)
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "ready")
    open_accordion(page, "Training")
    page.locator("#expected").scroll_into_view_if_needed()
    page.click("#run")
    page.wait_for_function(js_step_above(5), timeout=120_000, polling=50)
    box = page.locator("#status").bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= 1000, box  # in the viewport
    page.click("#stop")
    wait_text(page, "status", FINISHED, 30_000)
    page.locator("#teacher input").click()  # your own features, without a file: an error, shown where the user is
    page.get_by_role("option", name="Your own features (.npy / .pt)").click()
    page.click("#run")
    error = wait_text(page, "status", "^⚠", 60_000)
    assert "feature array" in error
    page.wait_for_selector(".toast-body", timeout=10_000)
    assert "feature array" in " ".join(page.locator(".toast-body").all_inner_texts())
    box = page.locator("#status").bounding_box()
    assert 0 <= box["y"] and box["y"] + box["height"] <= 1000
    shot(page, ARTIFACTS, "06-error-in-view", full_page=False)
    no_page_errors(page)
    page.close()


def test_changing_the_view_after_a_run_redraws_it(browser, server):
    page = open_app(browser, server)
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "ready")
    open_accordion(page, "Training")
    set_number(page, "steps", 20)
    page.click("#run")
    wait_text(page, "status", FINISHED, 120_000)
    assert page.evaluate(JS_ISLANDS_TYPE) == "scatter"
    page.get_by_text("t-SNE 3D", exact=True).click()  # no Run: the shown frame is projected again
    page.wait_for_function(f"() => ({JS_ISLANDS_TYPE})() === 'scatter3d'", timeout=30_000)
    assert status(page).startswith("showing, in t-SNE 3D · step 20")
    shot(page, ARTIFACTS, "07-reprojected")
    no_page_errors(page)
    page.close()


def test_recipe_and_preset_set_what_the_page_shows(browser, server):
    page = open_app(browser, server)
    open_accordion(page, "Training")
    page.get_by_text("paper: the NeurIPS configuration (slow on CPU)", exact=True).click()
    page.wait_for_function("() => document.querySelector('#lr input').value === '0.0001'", timeout=10_000)
    page.get_by_text("cpu: fast on 2 cores", exact=True).click()
    page.wait_for_function("() => document.querySelector('#lr input').value === '0.001'", timeout=10_000)
    page.locator("#recipe input").click()
    page.get_by_role("option", name="Islands from one CLS token (paper Fig. 3)").click()
    page.wait_for_function("() => document.querySelector('#teacher input').value.startsWith('CLIP')", timeout=10_000)
    assert page.locator("#lr input").input_value() == "0.0001"
    assert "rgb weight = 0.0" in page.locator("#recipe-note").inner_text()
    assert page.locator("#target input[value=global]").is_checked()
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "ready")
    set_number(page, "steps", 20)  # the user changes one thing: the run uses exactly what the page shows
    page.click("#run")
    done = wait_text(page, "status", FINISHED, 180_000)
    assert "global loss" in done and "CLIP ViT-B/16" in done and "step 20 / 20" in done, done
    shot(page, ARTIFACTS, "08-cls-ttt")
    no_page_errors(page)
    page.close()


JS_CAMERA_EYE = """() => {
    const gd = document.querySelector('#islands-plot .js-plotly-plot');
    const scene = gd && gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene._scene;
    return scene ? scene.getCamera().eye : null;
}"""


JS_ISLANDS_STEP = """() => { const el = document.querySelector('#islands-plot .js-plotly-plot');
    const m = el && el.layout && el.layout.title && (el.layout.title.text || '').match(/step (\\d+)/);
    return m ? parseInt(m[1]) : -1; }"""
# the plot elements that leave the page, kept so that a test can see what was released
JS_WATCH_GONE_PLOTS = """() => {
    window.__gonePlots = [];
    new MutationObserver((records) => {
        for (const r of records) for (const node of r.removedNodes) {
            if (!node.querySelectorAll) continue;
            if (node.matches('.js-plotly-plot')) window.__gonePlots.push(node);
            window.__gonePlots.push(...node.querySelectorAll('.js-plotly-plot'));
        }
    }).observe(document.body, {childList: true, subtree: true});
}"""
JS_PLOT_STATE = """() => Array.from(document.querySelectorAll('#islands-plot .js-plotly-plot')).map((el) => ({
    connected: el.isConnected, title: el.layout && el.layout.title && el.layout.title.text, hooked: !!el.__apmHooked,
    drawn: !!el._fullLayout}))"""
JS_LOSS_XRANGE = """() => { const el = document.querySelector('#loss-plot .js-plotly-plot');
    const ax = el && el._fullLayout && el._fullLayout.xaxis;
    return ax && !ax.autorange ? ax.range.map(Number) : null; }"""
# what plotly's own gestures and modebar buttons end with: a relayout of the view, which plotly announces
JS_SET_VIEW = """([id, update]) =>
    window.Plotly.relayout(document.querySelector(`#${id} .js-plotly-plot`), update).then(() => true)"""


def _frames_later(page, frames: int) -> None:
    """Wait until the islands scatter has shown `frames` more live frames, and check the run is still training
    (a view kept only because the frames stopped would prove nothing)."""
    for _ in range(frames):
        seen = page.evaluate(JS_ISLANDS_STEP)
        try:
            page.wait_for_function(f"() => ({JS_ISLANDS_STEP})() > {seen}", timeout=60_000)
        except Exception as e:  # say what the page showed: a run that ended, or frames that stopped while it trained
            raise AssertionError(f"no frame after step {seen} in 60 s; status: {status(page)!r}; "
                                 f"plots: {page.evaluate(JS_PLOT_STATE)}") from e
    assert status(page).startswith("training"), status(page)


def test_live_frames_keep_the_users_3d_camera_and_zoom(browser, server):
    """Gradio draws each new figure into a new element, so plotly's uirevision alone keeps nothing: the page's
    script (KEEP_VIEW_JS) carries the camera the user turned the t-SNE 3D scatter to, and the zoom of the loss
    curves, across live frames that arrive while the run is still training. The view is set the way plotly's
    mouse gestures and modebar buttons end, by a relayout (a mouse drag in a headless browser that shares two
    cores with the training is cut short by the frames themselves, at random)."""
    page = open_app(browser, server)
    click_example(page, 5)  # nested shapes
    wait_text(page, "status", "ready")
    open_accordion(page, "Training")
    set_number(page, "steps", 2000)  # the most allowed: training throughout; stopped at the end
    page.get_by_text("t-SNE 3D", exact=True).click()
    page.evaluate(JS_WATCH_GONE_PLOTS)
    page.click("#run")
    try:
        page.wait_for_function(f"() => ({JS_ISLAND_POINTS})() > 0", timeout=60_000)
        page.wait_for_function(js_step_above(30), timeout=60_000)
        default = page.evaluate(JS_CAMERA_EYE)
        eye = {"x": 0.4, "y": -1.6, "z": 1.1}
        assert eye != pytest.approx(default)
        assert page.evaluate(JS_SET_VIEW, ["islands-plot", {"scene.camera": {"eye": eye}}])
        _frames_later(page, 1)  # a frame that replaced the element during the relayout shows it from the next
        assert page.evaluate(JS_CAMERA_EYE) == pytest.approx(eye, rel=1e-6)
        _frames_later(page, 3)
        assert page.evaluate(JS_CAMERA_EYE) == pytest.approx(eye, rel=1e-6)

        assert page.evaluate(JS_LOSS_XRANGE) is None
        assert page.evaluate(JS_SET_VIEW, ["loss-plot", {"xaxis.range": [5, 25]}])
        _frames_later(page, 1)
        assert page.evaluate(JS_LOSS_XRANGE) == pytest.approx([5, 25])
        _frames_later(page, 3)
        assert page.evaluate(JS_LOSS_XRANGE) == pytest.approx([5, 25])

        # every element a live frame replaced is purged by the next drawing: a 3D scene left alive keeps its render
        # loop going, and over a long run they piled up until the page drew a frame every 30 s and more
        gone = page.evaluate("() => window.__gonePlots.length")
        assert gone >= 8, gone  # eight frames and more of the islands plot alone
        _frames_later(page, 1)
        alive = page.evaluate(f"() => window.__gonePlots.slice(0, {gone}).filter((gd) => !!gd._fullLayout).length")
        assert alive == 0, f"{alive} of {gone} replaced plot elements still hold their plot"
        page.evaluate("() => document.querySelector('#islands-plot').scrollIntoView({block: 'center'})")
        shot(page, ARTIFACTS, "08b-3d-camera-kept", full_page=False)
    finally:
        page.locator("#stop").dispatch_event("click")  # never leave a run going (a busy page is never "stable")
    wait_text(page, "status", FINISHED, 30_000)
    page.close()


def test_phone_width(browser, server):
    """390 x 844: nothing wider than the screen; the screenshot is there to look at (titles legible)."""
    page = open_app(browser, server, width=390, height=844)
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "ready")
    open_accordion(page, "Training")
    set_number(page, "steps", 20)
    page.click("#run")
    wait_text(page, "status", FINISHED, 120_000)
    overflow = page.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= 392, overflow
    for elem in ("islands-plot", "loss-plot", "fidelity-plot"):
        box = page.locator(f"#{elem}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 392, (elem, box)
    for elem in ("input-small", "islands-image", "teacher-islands", "rgb-image"):  # lazy images: scroll to each
        page.locator(f"#{elem}").scroll_into_view_if_needed()
        page.wait_for_function(f"() => (document.querySelector('#{elem} img') || {{}}).naturalWidth > 0", timeout=10_000)
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, ARTIFACTS, "09-phone-390")
    no_page_errors(page)
    page.close()


JS_LEVELS = "() => document.querySelectorAll('#levels-strip .thumbnail-item').length"
JS_TREE_TYPE = """() => { const el = document.querySelector('#part-whole-tree .js-plotly-plot');
    return el && el.data && el.data.length ? el.data[0].type : null; }"""


def test_levels_then_point_at_a_location(browser, server):
    """The levels strip (one image per layer; a click selects the layer), then after a run a click on the
    islands image marks the location and draws both agreement maps and the part-whole tree."""
    page = open_app(browser, server)
    click_example(page, EXAMPLE_FACE)
    page.wait_for_function(f"() => ({JS_LEVELS})() === 12", timeout=60_000)
    page.locator("#levels-strip .thumbnail-item").nth(4).click()
    page.wait_for_function("() => document.querySelector('#layer input[type=number]').value === '4'", timeout=30_000)
    shot(page, ARTIFACTS, "10-levels")
    open_accordion(page, "Training")
    set_number(page, "steps", 20)
    page.click("#run")
    wait_text(page, "status", FINISHED, 120_000)
    assert "layer 4" in status(page)
    page.wait_for_function(f"() => ({JS_TREE_TYPE})() === 'icicle'", timeout=30_000)
    image = page.locator("#islands-image img")
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.6)
    page.wait_for_selector("#agreement-apm img", timeout=15_000)
    page.wait_for_selector("#agreement-teacher img", timeout=15_000)
    page.wait_for_function("() => { const el = document.querySelector('#column-agreement .js-plotly-plot');"
                           " return el && el.data && el.data.length && el.data[0].x.length === 13; }", timeout=15_000)
    page.locator("#agreement-apm").scroll_into_view_if_needed()
    shot(page, ARTIFACTS, "11-agreement", full_page=False)
    page.locator("#part-whole-tree").scroll_into_view_if_needed()
    segment = page.locator("#part-whole-tree g.slice").nth(3)  # a segment of the first finer level
    segment.hover()
    wait_text(page, "status", "^segment L", 15_000)  # its locations lit on the grid images
    shot(page, ARTIFACTS, "12-tree", full_page=False)
    # it redraws at every live frame, so it is never "stable" for Playwright's own scrolling on a slow CPU
    page.evaluate("() => document.querySelector('#islands-plot').scrollIntoView({block: 'center'})")
    point = page.locator("#islands-plot .scatterlayer .point").nth(40).bounding_box()
    page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)  # plotly's hover layer
    page.wait_for_function("() => (document.querySelector('#column-agreement .js-plotly-plot') || {}).data"
                           " && document.querySelector('#column-agreement .gtitle').textContent.includes('(2, 8)')",
                           timeout=15_000)  # point 40 of a 16 x 16 grid is location (2, 8)
    no_page_errors(page)
    page.close()


def test_a_shared_link_opens_the_page_with_its_settings(browser, server):
    page = open_app(browser, server.rstrip("/") + "/?example=house&recipe=cls-ttt&steps=40&layer=5&projection=paper")
    page.wait_for_function("() => ((document.querySelector('#teacher input') || {}).value || '').startsWith('CLIP')",
                           timeout=30_000)
    open_accordion(page, "Training")
    page.wait_for_function("() => (document.querySelector('#steps input[type=number]') || {}).value === '40'",
                           timeout=30_000)
    assert page.locator("#layer input[type=number]").input_value() == "5"
    page.wait_for_selector("#input-image img", timeout=30_000)
    wait_text(page, "status", "house.png.*ready", 30_000)  # the shared example, checked and ready to run
    page.click("#copy-link")
    page.wait_for_function("() => { const t = document.querySelector('#share-link textarea, #share-link input');"
                           " return t && t.value.includes('example=house') && t.value.startsWith('http'); }",
                           timeout=15_000)
    link = page.locator("#share-link textarea, #share-link input").first.input_value()
    assert "recipe=cls-ttt" in link and "steps=40" in link and "layer=5" in link and "projection=paper" in link
    shot(page, ARTIFACTS, "13-shared-link")
    no_page_errors(page)
    page.close()


def test_the_control_runs_the_same_settings_on_a_blank_image(browser, server):
    """A run, then its control one click away: the control's islands beside the run's, and the CKA between the
    two grids said in words."""
    page = open_app(browser, server)
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "face.png: 448 x 448 px, ready")
    open_accordion(page, "Training")
    set_number(page, "steps", 20)
    page.click("#run")
    wait_text(page, "status", r"^done", 120_000)
    readout = page.evaluate("() => document.querySelector('#content-readout').innerText")
    assert "CKA to teacher" in readout and "What the islands rest on at step 20" in readout, readout
    open_accordion(page, "Control: the same settings on another image")
    page.click("#control-run")
    summary = wait_text(page, "control-summary", r"^Control on a blank image, 20 steps", 120_000)
    assert re.search(r"the two grids (differ|are alike) \(CKA \d\.\d\d between them\)", summary), summary
    page.wait_for_selector("#control-islands img", timeout=15_000)
    page.wait_for_selector("#control-this img", timeout=15_000)
    shot(page, ARTIFACTS, "13-control", full_page=False)
    no_page_errors(page)
    page.close()


def test_asynchronous_perception_decodes_only_the_rectangle(browser, server):
    """After a run: a rectangle from two clicks on the panel's grid decodes only its locations (read back from the
    served picture), then the cost against the teacher is measured and plotted."""
    import io
    import urllib.request

    import numpy as np
    from PIL import Image

    from app.panels.asynchronous import EMPTY
    from app.pictures import to_uint8

    page = open_app(browser, server)
    click_example(page, EXAMPLE_FACE)
    wait_text(page, "status", "face.png: 448 x 448 px, ready")
    open_accordion(page, "Training")
    set_number(page, "steps", 20)
    page.click("#run")
    wait_text(page, "status", r"^done", 120_000)
    open_accordion(page, "Asynchronous perception: decode any locations, in any order")
    page.locator("#async-order").get_by_text("a rectangle: two clicks").click()
    wait_text(page, "async-readout", "click two opposite corners", 30_000)
    image = page.locator("#async-grid img")
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    for i, j in ((2, 3), (7, 1)):  # cell centres of a 16 x 16 grid
        page.mouse.click(box["x"] + box["width"] * (j + 0.5) / 16, box["y"] + box["height"] * (i + 0.5) / 16)
        if (i, j) == (2, 3):
            wait_text(page, "async-readout", r"corner \(2, 3\)", 30_000)
    text = wait_text(page, "async-readout", r"^The rectangle \(2, 3\) to \(7, 1\)", 30_000)
    assert "18 of 256 locations decoded" in text and "the same grid as one full pass" in text, text
    src = page.evaluate("() => document.querySelector('#async-grid img').src")
    with urllib.request.urlopen(src, timeout=30) as response:
        picture = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    k = picture.shape[0] // 16
    centres = picture[k // 2 :: k, k // 2 :: k][:16, :16]
    decoded = ~np.all(centres == to_uint8(EMPTY[None, None])[0, 0], axis=-1)
    expected = np.zeros((16, 16), bool)
    expected[2:8, 1:4] = True
    assert np.array_equal(decoded, expected), np.argwhere(decoded).tolist()
    shot(page, ARTIFACTS, "14-asynchronous-rectangle", full_page=False)
    page.click("#async-measure")
    wait_text(page, "async-readout", "memory follows the chunk", 120_000)
    page.wait_for_function("() => { const el = document.querySelector('#async-cost .js-plotly-plot');"
                           " return el && el.data && el.data.length === 8; }", timeout=30_000)
    assert "params (M)" in page.evaluate("() => document.querySelector('#async-table').innerText")
    page.locator("#async-cost").scroll_into_view_if_needed()
    shot(page, ARTIFACTS, "15-asynchronous-cost", full_page=False)
    no_page_errors(page)
    page.close()
