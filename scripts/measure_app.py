"""Time the app as a user sees it, in headless Chromium: prints figures, asserts nothing.

    python scripts/measure_app.py [--steps 300] [--image assets/examples/face.png] [--out DIR]

Starts `python app.py` on a free port (untrained teacher, offline), uploads an image, presses Run with the
default settings and reports: seconds from pressing Run to the first islands frame, status updates per
second during the run, seconds until the run is done, the final status, and WebGL contexts created / lost.
Then (unless --no-client) the same run through `gradio_client`, without a browser, so the server's own
cost can be told apart from a browser competing for the same CPU cores.
Uses Debian's /usr/bin/chromium through Python Playwright (never `playwright install`).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.app_driver import (
    JS_ISLAND_POINTS,
    JS_STATUS,
    JS_WATCH_STATUS,
    JS_WEBGL_STATE,
    app_server,
    chromium,
    open_app,
    status_step,
    update_rate,
    upload_image,
)


def measure_client(url: str, image: str, steps: int) -> None:
    """The same run through the Python client: no browser, every streamed update timed as it arrives."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    pressed = time.perf_counter()
    job = client.submit(image_path=handle_file(image), features_file=None, steps=steps, api_name="/run")
    arrivals = []
    for out in job:
        arrivals.append(time.perf_counter() - pressed)
    outputs = job.outputs()
    status = re.sub(r"<[^>]+>", "", str(outputs[-1][0])).strip() if outputs else "(no output)"
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    print(f"client, no browser:   first update {arrivals[0]:.2f} s, {len(arrivals)} updates "
          f"({(len(arrivals) - 1) / span if span else 0.0:.2f} per second), finished in {arrivals[-1]:.1f} s")
    print(f"                      {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(ROOT / "assets" / "examples" / "face.png"))
    parser.add_argument("--steps", type=int, default=300, help="Steps slider value (300 is the default)")
    parser.add_argument("--out", default=str(ROOT / "tests" / "artifacts" / "measure"), help="screenshots and server log")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the run to finish")
    parser.add_argument("--no-client", action="store_true", help="skip the run through gradio_client")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with app_server(out / "server.log") as url, chromium() as browser:
        page = open_app(browser, url)
        upload_image(page, args.image)
        if args.steps != 300:
            steps_box = page.locator("#steps input[type=number]")
            if not steps_box.is_visible():
                page.get_by_text("Training", exact=True).first.click()  # the closed accordion
            steps_box.fill(str(args.steps))
            steps_box.press("Enter")
        start_ms = page.evaluate(JS_WATCH_STATUS)
        pressed = time.perf_counter()
        page.click("#run")
        page.wait_for_function(f"() => ({JS_ISLAND_POINTS})() > 0", timeout=120_000, polling="raf")
        first_frame = time.perf_counter() - pressed
        page.wait_for_function(
            "() => /^(done|stopped|failed)|⚠/.test(((document.querySelector('#status') || {}).innerText || '').trim())",
            timeout=args.timeout * 1000, polling=50)
        finished = time.perf_counter() - pressed
        status = page.evaluate(JS_STATUS).strip()
        log = page.evaluate("() => window.__statusLog")
        n_updates, rate = update_rate(log, start_ms)
        gl = page.evaluate(JS_WEBGL_STATE)
        shot = out / "finished.png"
        page.screenshot(path=str(shot), full_page=True)
        page.close()
        report(args, first_frame, n_updates, rate, finished, status, gl, page, shot, out)
        if not args.no_client:
            measure_client(url, args.image, args.steps)


def report(args, first_frame, n_updates, rate, finished, status, gl, page, shot, out) -> None:
    step = status_step(status)
    print(f"image                 {args.image}")
    print(f"time to first frame   {first_frame:.2f} s (Run pressed -> islands plot has points)")
    print(f"status updates        {n_updates} showing a step, {rate:.2f} per second")
    print(f"run finished in       {finished:.1f} s ({step[0] if step else '?'} / {step[1] if step else '?'} steps)")
    print(f"final status          {status}")
    print(f"WebGL contexts        {gl['created']} created, {gl['lost']} lost; islands plot: "
          f"{gl['islands_live']} live, {gl['islands_lost']} lost")
    if page_errors := getattr(page, "console_errors", []):
        print(f"console errors        {len(page_errors)}: {page_errors[:3]}")
    print(f"screenshot            {shot}")
    print(f"server log            {out / 'server.log'}")


if __name__ == "__main__":
    main()
