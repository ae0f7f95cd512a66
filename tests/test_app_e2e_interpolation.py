"""End to end in headless Chromium: the Interpolation tab (pairs, training, the alpha slider, Play, Pause, Loop,
export). Shares the server and browser setup of `test_app_e2e.py`."""

from __future__ import annotations

import re

from app.testing.browser import click_example, open_app, set_number, shot, text_of, wait_text
from tests.test_app_e2e import ARTIFACTS, browser, no_page_errors, server  # noqa: F401 - pytest fixtures

STEPS, FRAMES = 20, 9
ALPHA = re.compile(r"alpha (\d\.\d\d) · frame (\d+) / (\d+)")
JS_IMAGE_SRC = "(id) => { const img = document.querySelector('#' + id + ' img'); return img ? img.src : null; }"


def frame_of(text: str) -> int:
    match = ALPHA.search(text)
    assert match, f"the status does not read 'alpha a · frame k / F': {text}"
    return int(match[2])


def watch_frames(page) -> None:
    """Record every frame number the status shows, from now on (`window.__frames`)."""
    page.evaluate("""() => {
        window.__frames = [];
        const el = document.querySelector('#walk-status');
        new MutationObserver(() => {
            const m = (el.innerText || '').match(/frame (\\d+) \\/ (\\d+)/);
            const log = window.__frames;
            if (m && (!log.length || log[log.length - 1] !== +m[1])) log.push(+m[1]);
        }).observe(el, {subtree: true, childList: true, characterData: true});
    }""")


def test_interpolation_tab(browser, server):  # noqa: F811 - pytest fixtures
    page = open_app(browser, server)
    page.get_by_role("tab", name="Interpolation").click()
    page.wait_for_selector("#walk-train", state="visible")
    assert text_of(page, "walk-status").startswith("Give two images")
    # an example pair fills both images
    click_example(page, 0, "walk-examples")
    page.wait_for_selector("#walk-image-a img", timeout=30_000)
    page.wait_for_selector("#walk-image-b img", timeout=30_000)
    shot(page, ARTIFACTS, "interp-01-pair")
    set_number(page, "walk-steps", STEPS)
    page.wait_for_function(f"() => document.querySelector('#walk-steps input[type=range]').value === '{STEPS}'")
    set_number(page, "walk-frames", FRAMES)
    page.click("#walk-train")
    live = wait_text(page, "walk-status", rf"step [1-9]\d* \/ {STEPS}")
    assert "training on both images" in live
    trained = wait_text(page, "walk-status", "^trained", 180_000)
    assert f"{STEPS} steps" in trained, trained
    for elem in ("walk-rgb-a", "walk-rgb", "walk-islands", "walk-rgb-b"):
        assert page.evaluate(JS_IMAGE_SRC, elem), f"#{elem} shows no image"
    shot(page, ARTIFACTS, "interp-02-trained")

    # the slider: frame 5 of 9 is alpha 0.50
    page.locator("#walk-alpha input[type=range]").fill("4")
    middle = wait_text(page, "walk-status", r"alpha 0\.50 · frame 5 \/ 9")
    assert frame_of(middle) == 5

    # Play with Loop on: it goes round more than once, until Pause
    watch_frames(page)
    page.click("#walk-play")
    page.wait_for_function("() => { const f = window.__frames; return f.filter(k => k === 9).length >= 2; }",
                           timeout=60_000, polling=100)  # B reached twice: more than one cycle
    page.click("#walk-pause")
    page.wait_for_timeout(800)
    paused = text_of(page, "walk-status")
    page.wait_for_timeout(1_200)
    assert text_of(page, "walk-status") == paused, "Play went on after Pause"
    played = page.evaluate("() => window.__frames")
    top = played.index(9)
    assert played[: top + 1] == sorted(played[: top + 1]) and len(set(played)) >= 6, played

    # Loop off: one walk there and back, resting on A
    page.locator("#walk-loop input").uncheck()
    watch_frames(page)
    page.click("#walk-play")
    page.wait_for_function("() => { const f = window.__frames; return f.includes(9) && f[f.length - 1] === 1; }",
                           timeout=60_000, polling=100)
    page.wait_for_timeout(1_000)
    assert frame_of(text_of(page, "walk-status")) == 1
    shot(page, ARTIFACTS, "interp-03-played")

    page.click("#walk-export")
    wait_text(page, "walk-status", "exported 9 frames", 60_000)
    names = re.sub(r"\s", "", page.locator("#walk-files").inner_text())
    assert "interpolation.gif" in names and "interpolation.npz" in names, names
    no_page_errors(page)
    page.close()


def test_interpolation_tab_narrow(browser, server):  # noqa: F811 - pytest fixtures
    """The empty tab on a narrow window: the panels wrap instead of squeezing."""
    page = open_app(browser, server, width=900, height=900)
    page.get_by_role("tab", name="Interpolation").click()
    page.wait_for_selector("#walk-scatter .js-plotly-plot", timeout=30_000)
    boxes = [page.locator(f"#{elem}").bounding_box() for elem in ("walk-scatter", "walk-loss")]
    assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"] - 1, boxes  # the two plots stack
    shot(page, ARTIFACTS, "interp-04-empty-900px")
    page.close()
