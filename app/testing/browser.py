"""Drive the running app from outside: start `python app.py` on a free port, open headless Chromium.

Shared by the browser tests (assertions) and `scripts.measure_app` (timings). Chromium is Debian's
/usr/bin/chromium driven by Python Playwright; nothing is downloaded (never `playwright install`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("APM_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
STATUS_STEP = re.compile(r"step (\d+) / (\d+)")

# the islands plot's first trace: plotly keeps the figure's data on the .js-plotly-plot element
JS_ISLAND_POINTS = """() => {
    const el = document.querySelector('#islands-plot .js-plotly-plot');
    if (!el || !el.data || !el.data.length || !el.data[0].x) return 0;
    return el.data[0].x.length;
}"""
JS_STATUS = "() => (document.querySelector('#status') || {}).innerText || ''"
# every change of the status text, with its time: installed before Run is pressed
JS_WATCH_STATUS = """() => {
    window.__statusLog = [];
    const el = document.querySelector('#status');
    const record = () => {
        const text = el.innerText;
        const log = window.__statusLog;
        if (!log.length || log[log.length - 1].text !== text) log.push({t: performance.now(), text});
    };
    new MutationObserver(record).observe(el, {subtree: true, childList: true, characterData: true});
    return performance.now();
}"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               APM_RANDOM_WEIGHTS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               APM_MAX_RUN_SECONDS="600",  # a browser drawing a 3D scene takes a run's cores: tests cap by steps
               APM_PREFILL_EXAMPLES="0")  # no training at start: a test's runs are the only ones
    return env


@contextmanager
def app_server(log_path: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """`python app.py` on 127.0.0.1 and a free port; yields its URL once it answers, kills it on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=app_env(port), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the app exited with code {proc.returncode}:\n{log_path.read_text()[-4000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not answer on {url} within {timeout_s:.0f} s:\n"
                                       f"{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
            yield url
        finally:
            stop_process(proc)


@contextmanager
def app_server_for(request, log_path: Path) -> Iterator[str]:
    """`app_server` for a module's tests; when any of them failed, the server log's tail goes to the terminal
    (pytest does not show it, and in CI it is the first thing to read)."""
    failed_before = request.session.testsfailed
    try:
        with app_server(log_path) as url:
            yield url
    finally:
        if request.session.testsfailed > failed_before and log_path.exists():
            tail = log_path.read_text(errors="replace").splitlines()[-60:]
            sys.__stdout__.write(f"\n--- last lines of {log_path} (a test using this server failed) ---\n"
                                 + "\n".join(tail) + "\n---\n")
            sys.__stdout__.flush()


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate the server (and only its own process group, which it leads), then kill if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium (Debian's binary) through Playwright. Fails loudly when the binary is missing."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def status_step(text: str) -> tuple[int, int] | None:
    match = STATUS_STEP.search(text)
    return (int(match[1]), int(match[2])) if match else None


def js_step_above(n: int) -> str:
    """A JS predicate: the status shows 'step k / T' with k > n."""
    return ("() => { const m = ((document.querySelector('#status') || {}).innerText || '').match(/step (\\d+) \\/ (\\d+)/);"
            f" return !!m && parseInt(m[1]) > {int(n)}; }}")


def upload_image(page, path: Path | str) -> None:
    """Put a file into the `#input-image` component, as a drop or a file dialog would."""
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#input-image img", timeout=30_000)


def set_timeline(page, index: int) -> None:
    """Move the `#timeline` slider to `index`, the way dragging it does (an input event, then a change)."""
    page.locator("#timeline input[type=range]").fill(str(index))


def update_rate(log: list[dict], start_ms: float) -> tuple[int, float]:
    """(number of status texts showing a step, updates per second) from the MutationObserver log."""
    steps = [e for e in log if e["t"] >= start_ms and status_step(e["text"])]
    if len(steps) < 2:
        return len(steps), 0.0
    span = (steps[-1]["t"] - steps[0]["t"]) / 1000.0
    return len(steps), (len(steps) - 1) / span if span > 0 else 0.0


# WebGL bookkeeping: plotly's scattergl draws on WebGL canvases; Chromium keeps at most 16 contexts per page
# and drops the oldest beyond that, which blanks a plot. Installed with `page.add_init_script` before loading.
JS_COUNT_WEBGL = """(() => {
    window.__gl = {created: 0, lost: 0};
    const original = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function (type, ...rest) {
        const ctx = original.call(this, type, ...rest);
        if (ctx && /webgl/.test(String(type)) && !this.__glCounted) {
            this.__glCounted = true;
            this.__glContext = ctx;
            window.__gl.created += 1;
            this.addEventListener('webglcontextlost', () => { window.__gl.lost += 1; });
        }
        return ctx;
    };
})();"""
JS_WEBGL_STATE = """() => ({
    created: (window.__gl || {}).created || 0,
    lost: (window.__gl || {}).lost || 0,
    islands_lost: [...document.querySelectorAll('#islands-plot canvas')]
        .filter(c => c.__glContext).map(c => c.__glContext.isContextLost()).filter(Boolean).length,
    islands_live: [...document.querySelectorAll('#islands-plot canvas')]
        .filter(c => c.__glContext && !c.__glContext.isContextLost()).length,
})"""


def open_app(browser, url: str, width: int = 1400, height: int = 1000):
    """A fresh page (its own Gradio session) on the app, WebGL counting on, console errors collected."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.add_init_script(JS_COUNT_WEBGL)
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(f"pageerror: {e}"))
    page.goto(url)
    page.wait_for_selector("#run", timeout=60_000)
    return page


# helpers for the tabs' browser tests

def text_of(page, elem_id: str) -> str:
    """The visible text of an element (the status boxes carry Gradio's progress text first: the last line)."""
    text = page.evaluate(f"() => (document.querySelector('#{elem_id}') || {{}}).innerText || ''").strip()
    return text.splitlines()[-1].strip() if text else ""


def wait_text(page, elem_id: str, pattern: str, timeout_ms: int = 120_000) -> str:
    """Wait until the element's text matches a JS regular expression; returns the text. On a timeout the error
    says what the text was instead (a bare Playwright timeout says nothing of it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "([id, re]) => new RegExp(re).test(((document.querySelector('#' + id) || {}).innerText || '').trim())",
            arg=[elem_id, pattern], timeout=timeout_ms, polling=50)
    except PlaywrightTimeout as e:
        raise AssertionError(f"#{elem_id} did not match {pattern!r} within {timeout_ms} ms; it reads "
                             f"{text_of(page, elem_id)!r}") from e
    return text_of(page, elem_id)


def set_number(page, elem_id: str, value, attempts: int = 3) -> None:
    """Type into a slider's or number box's input, as a user does (Enter commits it). A slider's range input
    follows once the component has taken the value: only then is it what a Run sends. An update from the server
    arriving at the same moment can re-render the box; the user would type again, and so does this."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.locator(f"#{elem_id} input[type=number]")
    for attempt in range(attempts):
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        try:
            page.wait_for_function(
                """([id, v]) => { const r = document.querySelector(`#${id} input[type=range]`);
                                  return !r || Number(r.value) === Number(v); }""",
                arg=[elem_id, value], timeout=5_000,
            )
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


def open_accordion(page, label: str) -> None:
    page.get_by_text(label, exact=True).first.click()


def click_example(page, index: int, gallery: str = "examples") -> None:
    page.locator(f"#{gallery} .thumbnail-item").nth(index).click()


def shot(page, folder: Path, name: str, full_page: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path
