"""End to end: the Interpolation tab of `python app.py`, driven by a real headless Chromium.

Upload two example images, train a few steps, move the alpha slider, press Play and Export. Debian's
/usr/bin/chromium through Python Playwright (never `playwright install`); the app runs offline with an untrained
teacher. Screenshots go to tests/artifacts/e2e/ (or $APM_E2E_ARTIFACTS) as interp-*.png; `pytest -s` prints them.
"""

from __future__ import annotations

import re
import time

from tests.app_driver import ROOT, open_app
from tests.test_app_e2e import artifacts, browser, server, shot  # noqa: F401 - module-scoped fixtures, reused

EXAMPLES = ROOT / "assets" / "examples"
STEPS = 20  # the steps slider's number box takes any multiple of 10 from 10
JS_WALK_STATUS = "() => ((document.querySelector('#walk-status') || {}).innerText || '').trim()"
JS_IMAGE_SRC = "(id) => { const img = document.querySelector(`#${id} img`); return img ? img.src : null; }"
ALPHA_RE = re.compile(r"alpha (\d\.\d\d) · frame (\d+) / (\d+)")


def walk_status(page) -> str:
    return page.evaluate(JS_WALK_STATUS)


def wait_status(page, pattern: str, timeout_ms: int = 120_000) -> str:
    """Wait until the tab's status matches a JS regular expression; return its text."""
    page.wait_for_function(f"() => /{pattern}/.test(({JS_WALK_STATUS})())", timeout=timeout_ms, polling=50)
    return walk_status(page)


def frame_of(text: str) -> tuple[float, int, int]:
    match = ALPHA_RE.search(text)
    assert match, f"the status does not read 'alpha a · frame k / F': {text}"
    return float(match[1]), int(match[2]), int(match[3])


def played_frames(page) -> list[int]:
    """The frames Play has shown so far, in order, from the status log (`window.__walk`)."""
    # the status box also carries Gradio's progress text ("processing | 0.1s") on its first lines: read the last
    frames = [frame_of(e["text"].splitlines()[-1])[1] for e in page.evaluate("() => window.__walk")]
    played = [k for i, k in enumerate(frames) if i == 0 or k != frames[i - 1]]
    return played[1:] if played and played[0] == 9 else played  # the frame shown before Play was pressed


def set_number(page, elem_id: str, value: int) -> None:
    """Type into a slider's number box, as a user does (Enter commits it)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_interpolation_tab(browser, server, artifacts):  # noqa: F811 - pytest fixtures
    page = open_app(browser, server)
    page.get_by_role("tab", name="Interpolation").click()
    page.wait_for_selector("#walk-train", state="visible")
    assert walk_status(page).startswith("Give two images")
    page.wait_for_selector("#walk-scatter .js-plotly-plot", timeout=30_000)  # the empty scatter, with its hint
    assert "train on two images" in page.locator("#walk-scatter").inner_text()  # the hint of the empty scatter
    shot(page, artifacts, "interp-01-empty")

    # training without image B is an error line in the page, not a crash
    page.locator("#walk-image-a input[type=file]").set_input_files(str(EXAMPLES / "face.png"))
    page.wait_for_selector("#walk-image-a img", timeout=30_000)
    page.click("#walk-train")
    page.wait_for_function("() => !!document.querySelector('#walk-status .apm-error')", timeout=60_000, polling=50)
    assert "two images" in walk_status(page)

    page.locator("#walk-image-b input[type=file]").set_input_files(str(EXAMPLES / "car.png"))
    page.wait_for_selector("#walk-image-b img", timeout=30_000)
    set_number(page, "walk-steps", STEPS)
    page.wait_for_function(f"() => document.querySelector('#walk-steps input[type=range]').value === '{STEPS}'",
                           timeout=10_000)
    set_number(page, "walk-frames", 9)
    page.click("#walk-train")
    live = wait_status(page, rf"step [1-9]\d* \/ {STEPS}")
    assert "training on both images" in live and "⚠" not in live, live
    page.wait_for_selector("#walk-rgb-a img", timeout=60_000)  # a live reconstruction of A
    shot(page, artifacts, "interp-02-training")

    trained = wait_status(page, "^trained", timeout_ms=180_000)
    assert f"{STEPS} steps" in trained, trained
    for elem in ("walk-rgb-a", "walk-rgb", "walk-islands", "walk-rgb-b"):
        assert page.evaluate(JS_IMAGE_SRC, elem), f"#{elem} shows no image"
    n_points = page.evaluate("""() => {
        const el = document.querySelector('#walk-scatter .js-plotly-plot');
        return el && el.data && el.data.length === 2 ? [el.data[0].x.length, el.data[1].x.length] : null; }""")
    assert n_points is not None and n_points[0] == 9 * n_points[1] > 0, n_points
    alpha_range = page.locator("#walk-alpha input[type=range]")
    assert alpha_range.get_attribute("max") == "8"
    shot(page, artifacts, "interp-03-trained")

    # the alpha slider: frame 5 of 9 is alpha 0.50, and the decoded image changes
    start = page.evaluate(JS_IMAGE_SRC, "walk-rgb")
    alpha_range.fill("4")  # an input event, then a change, as dragging does
    middle = wait_status(page, r"alpha 0\.50 · frame 5 \/ 9")
    assert frame_of(middle) == (0.5, 5, 9) and "⚠" not in middle
    page.wait_for_function(f"() => ({JS_IMAGE_SRC})('walk-rgb') !== {start!r}", timeout=30_000)
    shot(page, artifacts, "interp-04-alpha-half")
    set_number(page, "walk-alpha", 8)
    end = wait_status(page, r"alpha 1\.00 · frame 9 \/ 9")
    assert frame_of(end) == (1.0, 9, 9)

    # Play: the frames go from A to B and back; record every status and decoded image it shows
    page.evaluate("""() => {
        window.__walk = [];
        const el = document.querySelector('#walk-status');
        const record = () => {
            const img = document.querySelector('#walk-rgb img');
            const entry = {text: el.innerText.trim(), src: img ? img.src : null};
            const log = window.__walk;
            if (!log.length || log[log.length - 1].text !== entry.text) log.push(entry);
        };
        new MutationObserver(record).observe(el, {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#walk-play")
    deadline = time.monotonic() + 60
    while True:  # until Play has been to B (frame 9) and back to A (frame 1)
        played = played_frames(page)
        if 9 in played and played[-1] == 1 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    assert played[0] <= 2 and 9 in played and played[-1] == 1, played
    top = played.index(9)
    assert played[:top + 1] == sorted(played[:top + 1]) and played[top:] == sorted(played[top:], reverse=True), played
    assert len(set(played)) >= 5, played  # most frames are shown, not only the ends
    page.wait_for_timeout(500)
    shot(page, artifacts, "interp-05-played")

    page.click("#walk-export")
    wait_status(page, "exported 9 frames", timeout_ms=60_000)
    names = re.sub(r"\s", "", page.locator("#walk-files").inner_text())
    assert "interpolation.gif" in names and "interpolation.npz" in names, names
    shot(page, artifacts, "interp-06-exported")

    if page.console_errors:
        print(f"browser console errors: {page.console_errors}")
    assert not [e for e in page.console_errors if e.startswith("pageerror")], page.console_errors
    page.close()


def test_interpolation_tab_narrow(browser, server, artifacts):  # noqa: F811 - pytest fixtures
    """The empty tab on a narrow window: the panels wrap instead of squeezing (a screenshot to judge the layout)."""
    width = 900
    page = open_app(browser, server, width=width, height=900)
    page.get_by_role("tab", name="Interpolation").click()
    page.wait_for_selector("#walk-scatter .js-plotly-plot", timeout=30_000)
    boxes = [page.locator(f"#{elem}").bounding_box() for elem in ("walk-scatter", "walk-loss")]
    assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"] - 1, boxes  # the two plots stack, each wide enough
    shot(page, artifacts, f"interp-07-empty-{width}px")
    page.close()
