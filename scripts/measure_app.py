"""Time the app as a user sees it: prints `name value` lines, asserts nothing; first the CPU's kind and model.

    python -m scripts.measure_app [--steps 300] [--grid 16|24|32] [--image assets/examples/face.png] [--no-browser]

1. The benchmark's training rate of the `cpu` preset (`apm.bench.step_seconds`, a grid x grid x 384 target, the
   shape of DINOv2-S's grid at that grid setting; 16 x 16 by default), measured in this script right before and right after the app's run (a shared VM's
   speed drifts by tens of percent over minutes: the ratio is to their mean).
2. The app on a free port (untrained teachers, offline), driven through `gradio_client` with no browser, the way
   the page drives it: `/begin`, `/prepare`, then the `/stream` of frames. The client stands for a visitor's
   machine: it runs in its own process at low priority and does not download the images it is sent, so the
   figures are the server's, not the cost of a client sharing its 2 cores. The first run after the server starts
   is the cold one (the teacher is built then); the second is timed with the teacher loaded. Reported: seconds
   from Run to the first frame, frames per second received, the run's training rate (steps / training time, from
   the last status) and its ratio to the benchmark's.
3. The same run (its grid and steps set by a shared link) in headless Chromium (Debian's /usr/bin/chromium through
   Playwright; never `playwright install`):
   first islands frame, status updates per second, run time. The browser shares the 2 cores with the server, so
   these figures sit below the client's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.testing.browser import (
    JS_ISLAND_POINTS,
    JS_STATUS,
    JS_WATCH_STATUS,
    app_server,
    chromium,
    open_app,
    status_step,
    update_rate,
    upload_image,
)

ROOT = Path(__file__).resolve().parent.parent


RATE = re.compile(r"step (\d+) / (\d+) · (\d+) steps/s .*? · (\d+\.\d) s")


def emit(name: str, value: float, note: str = "") -> None:
    print(f"{name} {value:.4g}" + (f"  # {note}" if note else ""), flush=True)


def bench_rate(name: str, grid: int = 16) -> float:
    from apm.bench.sections import step_seconds

    seconds, run = step_seconds("cpu", (grid, grid), 384, "auto", 60 if grid <= 16 else 30)
    emit(name, 1.0 / seconds, "precision " + ("bf16" if run.amp_dtype else "fp32"))
    return 1.0 / seconds


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds used so far by a process and each of its children (Linux /proc)."""
    import subprocess

    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    out = {}
    for p in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, IndexError):
            pass
    return out


def _server_pid(port: int) -> int:
    """The pid of `python app.py` listening on this port (the newest one)."""
    pids = subprocess.run(["pgrep", "-f", "python app.py"], capture_output=True, text=True).stdout.split()
    for pid in reversed(pids):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"GRADIO_SERVER_PORT={port}".encode() in env:
            return int(pid)
    raise RuntimeError(f"no server on port {port}")


def settings(image, steps: int, grid: str = "auto") -> list:
    """The page's inputs to `/prepare`, by control name, in the registry's order (app/controls.py)."""
    from app.controls import RUN_INPUTS

    values = {"recipe": "custom", "image": image, "teacher": "dinov2", "layer": 11, "random_weights": True,
              "features": None, "target": "dense", "grid": grid, "labels": "", "preset": "cpu", "steps": steps, "lr": 1e-3,
              "lr_schedule": "constant", "seed": 0, "record_every": 10, "rgb_weight": 1.0, "feature_loss": "mse",
              "normalize_target": True, "init": "torch", "global_head": "attention", "precision": "auto",
              "projection": "tsne2d", "perplexity": 30, "metric": "cosine", "tsne_init": "pca", "checkpoint": "",
              "comparable": True}
    return [values[name] for name in RUN_INPUTS]


def client_run(url: str, image: str, steps: int, grid: str = "auto") -> dict:
    """One run through the page's own endpoints, in a low-priority child process; returns its timings."""
    import json

    # as a module from the repository's root (run by its path, the child would not find `app`)
    out = subprocess.run([sys.executable, "-m", "scripts.measure_app", "--client-run", url, image, str(steps), grid],
                         cwd=ROOT, capture_output=True, text=True, preexec_fn=lambda: os.nice(10), timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"the client run failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def _client_run(url: str, image: str, steps: int, grid: str) -> dict:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    values = settings(handle_file(image), steps, grid)  # reads the controls registry: its imports are not the app's time
    pressed = time.perf_counter()
    client.predict(api_name="/islands_begin")
    client.predict(*values, api_name="/islands_prepare")
    job = client.submit(api_name="/islands_stream")
    arrivals, statuses = [], []
    for out in job:
        arrivals.append(time.perf_counter() - pressed)
        statuses.append(re.sub(r"<[^>]+>", "", str(out[0])))
    client.close()
    last = next((s for s in reversed(statuses) if RATE.search(s)), "")
    match = RATE.search(last)
    step, seconds = (int(match[1]), float(match[4])) if match else (0, 1.0)
    live = [t for t in arrivals[1:-1]]  # the frames while training (the last carries the final picture)
    span = (live[-1] - live[0]) if len(live) > 1 else 0.0
    return {"first_frame_s": arrivals[0] if arrivals else float("nan"), "updates": len(arrivals),
            "updates_per_s": (len(live) - 1) / span if span else 0.0, "steps_per_s": step / seconds,
            "finished_s": arrivals[-1] if arrivals else float("nan"), "status": last}


def browser_run(url: str, image: str, out: Path, steps: int, grid: str = "auto") -> tuple[int, int] | None:
    """The same run through the page: opened with a shared link's settings (the grid and the steps), the image
    uploaded, Run pressed. Returns the (step, total) of its final status."""
    from urllib.parse import urlencode

    query = {"steps": steps, **({} if grid == "auto" else {"grid": grid})}
    with chromium() as browser:
        page = open_app(browser, f"{url}?{urlencode(query)}", width=1440, height=1000)
        page.wait_for_function("() => /shared link/.test((document.querySelector('#status') || {}).innerText || '')",
                               timeout=60_000)
        upload_image(page, image)
        start_ms = page.evaluate(JS_WATCH_STATUS)
        pressed = time.perf_counter()
        page.click("#run")
        page.wait_for_function(f"() => ({JS_ISLAND_POINTS})() > 0", timeout=120_000, polling="raf")
        first = time.perf_counter() - pressed
        page.wait_for_function(
            "() => /^(done|stopped|⚠|cut off)/.test(((document.querySelector('#status') || {}).innerText || '').trim())",
            timeout=600_000, polling=50)
        finished = time.perf_counter() - pressed
        status = page.evaluate(JS_STATUS).strip()
        n, rate = update_rate(page.evaluate("() => window.__statusLog"), start_ms)
        page.screenshot(path=str(out / "finished.png"), full_page=True)
        emit("browser_first_frame_s", first)
        emit("browser_updates_per_s", rate, f"{n} status updates")
        emit("browser_run_s", finished, status[:120])
        step = status_step(status)
        if page.console_errors:
            print(f"# browser console errors: {page.console_errors[:3]}")
        page.close()
        return step


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--client-run":  # the low-priority client process
        import json

        print(json.dumps(_client_run(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(ROOT / "assets" / "examples" / "face.png"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--grid", default="auto", choices=["auto", "16", "24", "32"], help="the page's grid setting")
    parser.add_argument("--out", default=str(ROOT / "tests" / "artifacts" / "measure"))
    parser.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium run")
    args = parser.parse_args()
    # every run here trains: with the run cache on, the page's run would replay the client's (the same settings)
    os.environ["APM_RUN_CACHE"] = "off"
    from apm.device import cpu_header

    print(cpu_header(), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with app_server(out / "server.log") as url:
        cold = client_run(url, args.image, 30, args.grid)
        emit("first_frame_s_cold", cold["first_frame_s"], "first Run after the server starts: the teacher is built")
        side = 16 if args.grid == "auto" else int(args.grid)
        before = bench_rate("bench_cpu_steps_per_s_before", side)
        server = int(url.rsplit(":", 1)[1].strip("/"))  # the port; the pid is found below
        pid = _server_pid(server)
        usage = {}

        def sample() -> None:  # CPU of the server and of its training process, while the run trains
            earlier = set(cpu_seconds(pid))  # the cold run's process may linger; the warm run's is a new child
            deadline = time.monotonic() + 120
            while not set(cpu_seconds(pid)) - earlier and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # past the child's start-up
            first, t0 = cpu_seconds(pid), time.monotonic()
            last, t1 = first, t0
            while t1 - t0 < 6.0:  # until the run ends (its process is gone) or 6 s
                time.sleep(0.25)
                now = cpu_seconds(pid)
                if not set(now) - earlier:
                    break
                last, t1 = now, time.monotonic()
            span = t1 - t0
            if span <= 0:
                return
            usage["server"] = (last.get(pid, 0) - first.get(pid, 0)) / span
            usage["training"] = sum(last[p] - first.get(p, 0.0) for p in last if p not in earlier and p != pid) / span

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        warm = client_run(url, args.image, args.steps, args.grid)
        sampler.join()
        after = bench_rate("bench_cpu_steps_per_s_after", side)
        bench = (before + after) / 2
        emit("first_frame_s_loaded", warm["first_frame_s"], "teacher loaded")
        emit("client_updates_per_s", warm["updates_per_s"], f"{warm['updates']} updates")
        emit("client_steps_per_s", warm["steps_per_s"], warm["status"][:100])
        emit("client_vs_bench_ratio", warm["steps_per_s"] / bench, "to the mean of the two bench figures")
        emit("client_run_s", warm["finished_s"])
        if usage:
            emit("server_cpu_cores", usage["server"], "Gradio, rendering frames, the pipe's reader")
            emit("training_cpu_cores", usage["training"], "the training process (torch's threads)")
        if not args.no_browser:
            browser_run(url, args.image, out, args.steps, args.grid)
    print(f"# screenshot and server log in {out}")


if __name__ == "__main__":
    main()
