"""Load test: start the app on 127.0.0.1 and drive it with simultaneous `gradio_client` sessions.

    python -m scripts.load_test                                  # 8 simultaneous sessions, 60 steps each
    python -m scripts.load_test --sessions 8 --max-queue 3       # a small queue: some get "queue is full"
    python -m scripts.load_test --sessions 2 --steps 20 --repeat 50   # then 50 runs one after another
    python -m scripts.load_test --broken                         # the broken-input corpus through the API
    python -m scripts.load_test --classroom                      # a class: 30 visitors, then a second class

`--classroom` does what a teacher's "open it and click the flower" does: 30 visitors open the app (each runs the
page's load event, as a browser does, which starts its server session), then submit within one second (the time
to the first islands counts from each one's submission), 24 on
the three example photos (8 each on flower_photo, china_photo and face) and 6 with photos of their own, every
setting the app's default, against a warm server with the real DINOv2-S where it is cached (else untrained,
said so): the server has trained the examples' default runs when it started (its prefill: the script waits for
it, prints how long it took, and visits each example once), so the class replays the examples while the uploads
train. The clients run at the server's priority (`APM_SERVER_NICENESS`), so that on one machine neither is
favoured. It prints per kind of visitor: refused, failed, the p50 and max time to the first islands and to done,
the sources (trained / joined / replayed), and the server's memory growth; then a second class, the same 30
visits again, which must all be replays. Targets on 2 cores: nobody refused or unanswered, every example
visitor's first islands within 5 s and done within 30 s, every upload done within 4 minutes, memory +< 1.5 GB,
and the second class all replays with first islands within 2 s.

Each session is its own `gradio_client.Client` (its own Gradio session): it uploads an image, runs a short
training of an untrained teacher (offline) and closes, which ends its heartbeat so the server unloads the
session and deletes its folder, as a closed browser tab does.

It prints completed / queued / rejected-with-message / failed counts, the p50 and p95 time to the first frame
(from submitting, so it includes waiting in the queue, and from the moment the server started the run), and
the server's memory, threads, CPU use and files before and after; then the targets, each PASS or FAIL (exit
status 1 if any fails). Traffic goes only to 127.0.0.1; every loop is bounded in count and time; the server
runs with a private TMPDIR (its session folders and Gradio's upload cache) and is stopped at the end.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MIN_STEPS = 10  # a few steps: the runs here measure the server, not training
TIME_LIMIT_S = 1200  # the whole script never runs longer than this
RSS_BUDGET_MB = 300  # memory after the load may exceed memory before by at most this
IDLE_SLACK_PCT = 15.0  # idle CPU after the load may exceed idle CPU before by this much (% of one core)
SETTLE_S = 25.0  # after the load, wait up to this long for threads and session folders to go
# (a closed gradio_client ends its heartbeat stream at the server's next heartbeat, 15 s by default; only
# then does the server run `unload`)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the server process, seen from outside


def proc_status(pid: int) -> dict[str, float]:
    """Resident memory (MB), thread count and CPU seconds used so far of a process, from /proc."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mb"] = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return out


def cpu_percent(pid: int, seconds: float = 2.0) -> float:
    """CPU use of the process over the next `seconds`, in percent of one core (idle is close to 0)."""
    c0, t0 = proc_status(pid)["cpu_s"], time.monotonic()
    time.sleep(seconds)
    return 100.0 * (proc_status(pid)["cpu_s"] - c0) / (time.monotonic() - t0)


def server_files(tmp: Path) -> dict[str, int]:
    """What the server keeps on disk: session folders (app/session.py), files in them, uploads in Gradio's cache."""
    sessions = [p for p in tmp.glob("apm-app*/**/session-*") if p.is_dir()]  # apm-app/pid-N/session-*
    uploads = [p for p in (tmp / "gradio").rglob("*") if p.is_file()] if (tmp / "gradio").is_dir() else []
    return {"session_folders": len(sessions), "session_files": sum(1 for s in sessions for p in s.rglob("*") if p.is_file()),
            "uploads": len(uploads)}


def training_processes(pid: int) -> int:
    """Child processes of the server: the forked training processes of runs still going."""
    return len(subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split())


@functools.cache
def _ssl_context():
    import ssl

    return ssl.create_default_context()


def new_client(url: str, **httpx_kwargs):
    """One visitor's `gradio_client.Client`. Its requests share one SSL context: by default httpx builds a new one,
    certificates and all, for every request (about 20 ms of CPU), and 30 visitors doing that on the server's own
    two cores made the clients, not the app, what a class measured (37% of the clients' CPU in its first
    seconds). A browser on its own machine costs the server's cores nothing."""
    from gradio_client import Client

    # gradio_client hands `ssl_verify` to httpx's `verify` on every request, which takes a context as it is
    return Client(url, verbose=False, analytics_enabled=False, download_files=False, ssl_verify=_ssl_context(),
                  httpx_kwargs=httpx_kwargs)


def snapshot(proc: subprocess.Popen, tmp: Path) -> dict[str, float]:
    return {**proc_status(proc.pid), **server_files(tmp), "training_processes": training_processes(proc.pid)}


def start_server(port: int, tmp: Path, env_extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "TMPDIR": str(tmp),
           "APM_RANDOM_WEIGHTS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **env_extra}
    env.pop("GRADIO_TEMP_DIR", None)  # Gradio's upload cache goes under the private TMPDIR
    log_path = Path(tempfile.gettempdir()) / f"apm-load-server-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                print(f"server pid {proc.pid} on http://127.0.0.1:{port}/ (log {log_path}, removed if all passes)",
                      flush=True)
                proc.log_path = log_path  # type: ignore[attr-defined]
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {proc.returncode}; see {log_path}") from None
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("the app did not start within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate the server's own process group (it leads it), then kill it if it lingers."""
    from app.testing.browser import stop_process

    stop_process(proc)


# one client session


CLASS_EXAMPLES = ("flower_photo", "china_photo", "face")  # 8 visitors each
CLASS_UPLOADS = 6  # visitors with a photo of their own
CLASS_FIRST_ISLANDS_S = 5.0  # every example visitor's first islands within this
CLASS_DONE_S = 30.0  # every example visitor done within this
CLASS_UPLOAD_DONE_S = 240.0  # every upload done within this
CLASS_RSS_MB = 1536  # 30 visitors cost less than this over the idle server
REPLAY_FIRST_ISLANDS_S = 2.0  # a second class: replays, first islands within this


@dataclass
class Visit:
    """One classroom visitor's run through /run, as `gradio_client` sees it."""

    kind: str  # example | upload
    answered: bool = False
    refused: bool = False
    failed: bool = False
    first_islands_s: float | None = None  # from submitting to the first update with islands
    done_s: float | None = None
    source: str | None = None  # trained | joined | replayed
    message: str = ""


def visit(url: str, image: str, kind: str, timeout_s: float, click_at: Callable[[], float] | None = None) -> Visit:
    """One visitor with default settings: open the app, submit, follow every update to the end, close the session.
    `click_at()`, asked once the app is open, says when to submit (a monotonic time): a class opens the link, then
    clicks when the teacher says so."""
    from gradio_client import handle_file

    out = Visit(kind)
    client = None
    try:
        # a browser waits for the page as long as it takes; httpx's default (5 s) would count a slow page as lost
        client = new_client(url, timeout=120)
        if click_at is not None:
            # a browser that opens the page runs its load event, which starts its server session: so does this
            # visitor, before the class clicks
            client.predict(api_name="/islands_from_link")
            time.sleep(max(0.0, click_at() - time.monotonic()))
        t0 = time.monotonic()
        job = client.submit(image=handle_file(image), api_name="/run")
        seen = 0
        while not job.done() and time.monotonic() - t0 < timeout_s:
            outputs = job.outputs()
            for update in outputs[seen:]:
                out.answered = True
                if out.first_islands_s is None and isinstance(update, dict) and update.get("n_islands") is not None:
                    out.first_islands_s = time.monotonic() - t0
            seen = len(outputs)
            # 30 visitors share this machine's 2 cores with the server: look often only until the first islands
            time.sleep(0.02 if out.first_islands_s is None else 0.1)
        if not job.done():
            job.cancel()
            out.message = f"no answer to the end within {timeout_s:.0f} s"
            out.failed = True
            return out
        result = job.result()
        out.answered = True
        out.done_s = time.monotonic() - t0
        status = str(result.get("status", ""))
        out.message = status
        if out.first_islands_s is None and result.get("n_islands") is not None:
            out.first_islands_s = out.done_s
        if status.startswith("error") and "the app is full" in status:
            out.refused = True
        elif not result.get("done") or result.get("error"):
            out.failed = True
        out.source = result.get("source")
    except Exception as exc:  # noqa: BLE001 - classify whatever the client raises
        out.failed, out.message = True, f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None:
            client.close()
    return out


def own_photos(folder: Path, n: int) -> list[str]:
    """`n` photos of the visitors' own (synthetic scenes: distinct images, not the examples)."""
    import numpy as np

    from apm.bench.synthetic import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        picture, _, _ = make_scene(np.random.default_rng(100 + k), size=320)
        path = folder / f"visitor_{k}.jpg"
        picture.save(path, quality=92)
        paths.append(str(path))
    return paths


def one_class(url: str, proc: subprocess.Popen, photos: list[str], timeout_s: float) -> tuple[list[Visit], float]:
    """30 visitors open the app, then submit within one second; returns their visits and the server's peak RSS (MB)."""
    import random

    plan = [("example", str(ROOT / "assets" / "examples" / f"{stem}{'.jpg' if 'photo' in stem else '.png'}"))
            for stem in CLASS_EXAMPLES for _ in range(8)] + [("upload", p) for p in photos]
    random.Random(0).shuffle(plan)
    visits: list[Visit] = []
    lock = threading.Lock()
    peak = [proc_status(proc.pid)["rss_mb"]]

    opened, clicked, first_click = threading.Semaphore(0), threading.Event(), [0.0]

    def click_at(k: int) -> float:
        opened.release()
        clicked.wait(300)
        return first_click[0] + k / len(plan)  # all 30 within one second

    def go(k: int, kind: str, image: str) -> None:
        result = visit(url, image, kind, timeout_s, click_at=lambda: click_at(k))
        with lock:
            visits.append(result)

    # everybody opens the app first (the teacher shows the link), then the class clicks within one second
    threads = [threading.Thread(target=go, args=(k, *item), daemon=True) for k, item in enumerate(plan)]
    for t in threads:
        t.start()
    for _ in threads:
        opened.acquire(timeout=300)
    first_click[0] = time.monotonic()
    clicked.set()
    while any(t.is_alive() for t in threads):
        peak.append(proc_status(proc.pid)["rss_mb"])
        time.sleep(0.5)
    return visits, max(peak)


def print_class(name: str, visits: list[Visit]) -> None:
    for kind in ("example", "upload"):
        group = [v for v in visits if v.kind == kind]
        print(f"{name}_{kind}_visitors {len(group)}")
        print(f"{name}_{kind}_refused {sum(v.refused for v in group)}")
        print(f"{name}_{kind}_failed {sum(v.failed for v in group)}")
        print_times(f"{name}_{kind}_first_islands", [v.first_islands_s for v in group if v.first_islands_s is not None])
        print_times(f"{name}_{kind}_done", [v.done_s for v in group if v.done_s is not None])
        for source in ("trained", "joined", "replayed"):
            print(f"{name}_{kind}_{source} {sum(v.source == source for v in group)}")
        for v in group:
            if v.failed or v.refused:
                print(f"  {kind}: {v.message[:200]}")


def run_classroom(url: str, proc: subprocess.Popen, tmp: Path, teacher_note: str) -> list[tuple[str, bool]]:
    """Two classes against one warm server: the first trains (each distinct run once), the second replays."""
    from apm.device import cpu_header

    print(cpu_header())
    print(f"teacher: {teacher_note}")
    # the visitors' clients share this machine with the server: at the server's own priority, neither is favoured
    # (at today's, 30 clients parsing their streams would run before the server they are measuring)
    from apm.env import server_niceness
    from apm.threads import lower_priority

    lower_priority(server_niceness())
    photos = own_photos(tmp / "visitors", CLASS_UPLOADS)
    # the server trains every example's default run at start (its prefill), as a Space started before the class
    # has: wait for its line in the server's log, then visit each example once (each a replay)
    t0 = time.monotonic()
    log_path = Path(proc.log_path)  # type: ignore[attr-defined]
    while "prefill: the examples' default runs are ready" not in log_path.read_text(errors="replace"):
        if time.monotonic() - t0 > 600 or proc.poll() is not None:
            print("the server's prefill did not end within 600 s")
            return [("prefill", False)]
        time.sleep(1.0)
    print(f"prefill_s {time.monotonic() - t0:.1f}")
    paths = [str(p) for p in sorted((ROOT / "assets" / "examples").iterdir()) if p.suffix in (".png", ".jpg")]
    with ThreadPoolExecutor(len(paths)) as pool:
        warm = list(pool.map(lambda path: visit(url, path, "warm-up", 600), paths))
    print(f"warm_up_sources {' '.join(sorted(str(v.source) for v in warm))}")
    bad = [v for v in warm if v.failed or v.refused]
    if bad:
        print(f"warm-up run failed: {bad[0].message}")
        return [("warm-up runs", False)]
    time.sleep(2.0)
    rss0 = proc_status(proc.pid)["rss_mb"]
    first, peak1 = one_class(url, proc, photos, 300)
    print_class("class1", first)
    print(f"class1_rss_mb_before {rss0:.0f}")
    print(f"class1_rss_mb_peak {peak1:.0f}")
    print(f"class1_rss_growth_mb {peak1 - rss0:.0f}")
    second, peak2 = one_class(url, proc, photos, 300)
    print_class("class2", second)
    print(f"class2_rss_growth_mb {peak2 - rss0:.0f}")
    examples = [v for v in first if v.kind == "example"]
    uploads = [v for v in first if v.kind == "upload"]
    return [
        ("class 1: nobody refused or unanswered", not any(v.refused or v.failed or not v.answered for v in first)),
        (f"class 1: every example visitor's first islands within {CLASS_FIRST_ISLANDS_S:.0f} s",
         all(v.first_islands_s is not None and v.first_islands_s <= CLASS_FIRST_ISLANDS_S for v in examples)),
        (f"class 1: every example visitor done within {CLASS_DONE_S:.0f} s",
         all(v.done_s is not None and v.done_s <= CLASS_DONE_S for v in examples)),
        (f"class 1: every upload done within {CLASS_UPLOAD_DONE_S:.0f} s",
         all(v.done_s is not None and v.done_s <= CLASS_UPLOAD_DONE_S for v in uploads)),
        ("class 1: the examples replayed (prefilled at start), each upload trained once",
         all(v.source == "replayed" for v in examples) and sum(v.source == "trained" for v in uploads) == CLASS_UPLOADS),
        (f"class 1: memory +< {CLASS_RSS_MB} MB", peak1 - rss0 < CLASS_RSS_MB),
        ("class 2: nobody refused or unanswered", not any(v.refused or v.failed or not v.answered for v in second)),
        ("class 2: every run a replay", all(v.source == "replayed" for v in second)),
        (f"class 2: first islands within {REPLAY_FIRST_ISLANDS_S:.0f} s",
         all(v.first_islands_s is not None and v.first_islands_s <= REPLAY_FIRST_ISLANDS_S for v in second)),
    ]


@dataclass
class Outcome:
    kind: str  # completed | rejected | failed
    first_frame_s: float | None = None  # from submitting to the first streamed output (includes queueing)
    started_s: float | None = None  # from submitting until the server started the run (status PROCESSING)
    total_s: float | None = None
    queued: bool = False  # waited in the queue (the server reported a queue position)
    message: str = ""
    statuses: list[str] = field(default_factory=list)

    @property
    def first_frame_after_start_s(self) -> float | None:
        if self.first_frame_s is None or self.started_s is None:
            return None
        return self.first_frame_s - self.started_s


def run_kwargs(image: str, steps: int, *, features: str | None = None) -> dict:
    """/run's keyword arguments (files wrapped for upload); everything else keeps the API's defaults."""
    from gradio_client import handle_file

    kwargs = {"image": handle_file(image), "steps": max(MIN_STEPS, int(steps))}
    if features is not None:
        kwargs.update(teacher="file", features=handle_file(features))
    return kwargs


def one_session(url: str, image: str, steps: int, timeout_s: float, **kwargs) -> Outcome:
    """Submit one run in a fresh session, follow it to the end (or `timeout_s`), close the session."""
    from gradio_client.utils import QueueError, Status

    outcome = Outcome("failed")
    t0 = time.monotonic()
    client = None
    try:
        client = new_client(url)
        t0 = time.monotonic()
        job = client.submit(**run_kwargs(image, steps, **kwargs), api_name="/run")
        seen = 0
        while True:
            status = job.status()
            if status.code == Status.IN_QUEUE:  # any rank: rank 0 is "next", still waiting for a free slot
                outcome.queued = True
            elif status.code in (Status.PROCESSING, Status.ITERATING) and outcome.started_s is None:
                outcome.started_s = time.monotonic() - t0
            outputs = job.outputs()
            if len(outputs) > seen:
                if outcome.first_frame_s is None:
                    outcome.first_frame_s = time.monotonic() - t0
                    if outcome.started_s is None:
                        outcome.started_s = outcome.first_frame_s
                outcome.statuses += [str(o["status"]) for o in outputs[seen:]]
                seen = len(outputs)
            if job.done():
                break
            if time.monotonic() - t0 > timeout_s:
                job.cancel()
                outcome.message = f"timed out after {timeout_s:.0f} s"
                return outcome
            time.sleep(0.02)
        try:
            result = job.result()
        except QueueError as exc:  # gradio_client 2.x: HTTP 503 from /queue/join, raised by result()
            outcome.kind, outcome.message = "rejected", str(exc)
            return outcome
        final = str(result["status"]) if result else (outcome.statuses[-1] if outcome.statuses else "")
        outcome.kind = "completed" if final.startswith("done") else "failed"
        outcome.message = final
    except Exception as exc:  # noqa: BLE001 - classify whatever the client raises
        text = f"{type(exc).__name__}: {exc}"
        full = "queue" in text.lower() and "full" in text.lower()
        outcome.kind, outcome.message = ("rejected" if full else "failed"), text
    finally:
        outcome.total_s = time.monotonic() - t0
        if client is not None:
            client.close()  # ends the heartbeat: the server unloads the session, as for a closed tab
    return outcome


# reporting


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def print_times(name: str, values: list[float]) -> None:
    if values:
        print(f"{name}_p50_s {statistics.median(values):.2f}")
        print(f"{name}_p95_s {percentile(values, 95):.2f}")
        print(f"{name}_max_s {max(values):.2f}")


def settle(proc: subprocess.Popen, tmp: Path, base_threads: float, deadline_s: float = SETTLE_S) -> dict[str, float]:
    """Wait (bounded) until the server is back to its thread count and has no session folders; then measure."""
    end = time.monotonic() + deadline_s
    while True:
        snap = snapshot(proc, tmp)
        if (snap["threads"] <= base_threads and snap["session_folders"] == 0 and not snap["training_processes"]) \
                or time.monotonic() > end:
            break
        time.sleep(1.0)
    snap["cpu_idle_pct"] = cpu_percent(proc.pid, 2.0)
    return snap


def print_server(prefix: str, before: dict, after: dict) -> None:
    for key, fmt in (("rss_mb", "{:.0f}"), ("threads", "{:.0f}"), ("training_processes", "{:.0f}"),
                     ("session_folders", "{:.0f}"), ("session_files", "{:.0f}"), ("uploads", "{:.0f}")):
        print(f"{prefix}{key}_before {fmt.format(before[key])}")
        print(f"{prefix}{key}_after {fmt.format(after[key])}")
    print(f"{prefix}cpu_idle_pct_before {before['cpu_idle_pct']:.1f}")
    print(f"{prefix}cpu_idle_pct_after {after['cpu_idle_pct']:.1f}")


def idle_again(before: dict, after: dict) -> bool:
    """No run left burning CPU: idle use back near what it was (a training thread takes 50-200% of a core)."""
    return after["cpu_idle_pct"] <= before["cpu_idle_pct"] + IDLE_SLACK_PCT


# the corpus


def run_broken(url: str) -> list[tuple[str, bool]]:
    """Every file of the broken-input corpus through the API: each must get a clear message, none a crash."""
    from apm.bench.corpus import BROKEN_IMAGES, PICKLE_MARKER, make_corpus

    folder = Path(tempfile.mkdtemp(prefix="apm-corpus-"))
    checks: list[tuple[str, bool]] = []
    try:
        corpus = make_corpus(folder)
        client = new_client(url)
        try:
            for name, path in corpus.items():
                is_feature = path.suffix in (".npy", ".pt")
                image = str(corpus["plain_jpeg"] if is_feature else path)
                kwargs = {"features": str(path)} if is_feature else {}
                t0 = time.monotonic()
                try:
                    status = str(client.predict(**run_kwargs(image, MIN_STEPS, **kwargs), api_name="/run")["status"])
                except Exception as exc:  # noqa: BLE001 - an exception here is a failure: the page shows nothing
                    status = f"EXCEPTION {type(exc).__name__}: {exc}"
                expect_error = name in BROKEN_IMAGES or (is_feature and "good" not in name)
                is_error = status.startswith("error:")
                ok = not status.startswith("EXCEPTION") and is_error == expect_error and (is_error or status.startswith("done"))
                checks.append((f"corpus {name}", ok))
                print(f"{'ok ' if ok else 'BAD'} {name:22s} {time.monotonic() - t0:5.1f} s  {status[:120]}", flush=True)
            alive = client.predict(**run_kwargs(str(ROOT / "assets/examples/face.png"), MIN_STEPS), api_name="/run")
        finally:
            client.close()
        checks.append(("server still serves a good run after the corpus", str(alive["status"]).startswith("done")))
        checks.append(("no file was unpickled (the canary marker is absent)", not (folder / PICKLE_MARKER).exists()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return checks


# main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="simultaneous sessions (at most 32)")
    parser.add_argument("--steps", type=int, default=60, help=f"training steps per session (at least {MIN_STEPS})")
    parser.add_argument("--repeat", type=int, default=0, help="then this many runs one after another (at most 100)")
    parser.add_argument("--repeat-steps", type=int, default=None, help="steps of each repeated run (default --steps)")
    parser.add_argument("--max-queue", type=int, default=None, help="the server's queue size (APM_MAX_QUEUE; default 8)")
    parser.add_argument("--broken", action="store_true", help="send the broken-input corpus instead")
    parser.add_argument("--classroom", action="store_true",
                        help="a class: 30 visitors on the examples and their own photos, then a second class")
    args = parser.parse_args()
    sessions, repeat = max(0, min(args.sessions, 32)), max(0, min(args.repeat, 100))
    steps = max(MIN_STEPS, args.steps)
    repeat_steps = max(MIN_STEPS, args.repeat_steps or args.steps)
    started = time.monotonic()
    left = lambda: TIME_LIMIT_S - (time.monotonic() - started)  # noqa: E731

    tmp = Path(tempfile.mkdtemp(prefix="apm-load-"))
    env = {} if args.max_queue is None else {"APM_MAX_QUEUE": str(args.max_queue)}
    env["APM_RUN_CACHE"] = str(tmp / "runs")  # a fresh run cache: the first class trains
    env["APM_PREFILL_EXAMPLES"] = "1" if args.classroom else "0"  # the server's own warm start, for a class only
    teacher_note = ""
    if args.classroom:  # the real DINOv2-S where it is cached (the app's defaults then use it), else untrained
        from apm.teachers.dinov2 import IMGFOCUS_WEIGHTS
        from apm.teachers.weights import cached_weights

        real = cached_weights(IMGFOCUS_WEIGHTS) is not None
        env["APM_RANDOM_WEIGHTS"] = "0" if real else "1"
        teacher_note = ("the real DINOv2-S (dinov2:imgfocus)" if real else
                        "UNTRAINED DINOv2-S (random weights): the real one is not cached here; `python -m apm download "
                        "dinov2:imgfocus` fetches it")
    port = free_port()
    proc = start_server(port, tmp, env)
    url = f"http://127.0.0.1:{port}/"
    checks: list[tuple[str, bool]] = []
    try:
        image = str(ROOT / "assets" / "examples" / "face.png")
        if args.broken:
            checks += run_broken(url)
            return report(checks)
        if args.classroom:
            checks += run_classroom(url, proc, tmp, teacher_note)
            return report(checks)

        warm = one_session(url, image, MIN_STEPS, 180)  # loads the teacher and warms up, as a long-lived Space has
        if warm.kind != "completed":
            print(f"warm-up run failed: {warm.message}")
            return 1
        # the warm-up session stays until its client's heartbeat stream ends: wait for its folder to go
        before = settle(proc, tmp, snapshot(proc, tmp)["threads"])
        results: list[Outcome] = []
        lock = threading.Lock()

        def worker() -> None:
            outcome = one_session(url, image, steps, min(300.0, max(10.0, left() - 60)))
            with lock:
                results.append(outcome)

        if sessions:
            threads = [threading.Thread(target=worker, daemon=True) for _ in range(sessions)]
            t_load = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(1.0, left() - 30))
            load_s = time.monotonic() - t_load
            peak = snapshot(proc, tmp)  # the clients have just closed: their sessions are still there
            after = settle(proc, tmp, before["threads"])
            count = lambda kind: sum(r.kind == kind for r in results)  # noqa: E731
            print(f"sessions {sessions} (steps {steps}, queue size {args.max_queue or os.environ.get('APM_MAX_QUEUE', '8')}, wall {load_s:.1f} s)")
            print(f"completed {count('completed')}")
            print(f"queued {sum(r.queued for r in results)}")
            print(f"rejected_with_message {count('rejected')}")
            print(f"failed {count('failed') + (sessions - len(results))}")
            print_times("first_frame", [r.first_frame_s for r in results if r.first_frame_s is not None])
            print_times("first_frame_after_start", [r.first_frame_after_start_s for r in results
                                                    if r.first_frame_after_start_s is not None])
            for message in sorted({r.message for r in results if r.kind == "rejected"}):
                print(f"  rejection message: {message}")
            for r in results:
                if r.kind == "failed":
                    print(f"  failure: {r.message[:200]}")
            print(f"server_rss_mb_peak {peak['rss_mb']:.0f}")
            print(f"server_session_folders_right_after_the_load {peak['session_folders']:.0f} (removed on unload)")
            print_server("server_", before, after)
            checks += [
                ("0 failed", count("failed") == 0 and len(results) == sessions),
                ("every session completed or got the queue-full message", count("completed") + count("rejected") == sessions),
                (f"memory after the load within {RSS_BUDGET_MB} MB of before", after["rss_mb"] - before["rss_mb"] <= RSS_BUDGET_MB),
                ("no threads left over after the load", after["threads"] <= before["threads"]),
                ("no training process left after the load", after["training_processes"] == 0),
                ("no session folders left after the load", after["session_folders"] == 0),
                ("server idle again after the load (no run left using CPU)", idle_again(before, after)),
            ]

        if repeat:
            rep0 = settle(proc, tmp, before["threads"], 5)
            kinds: dict[str, int] = {}
            rss_max, times, failures, trace = rep0["rss_mb"], [], [], [rep0["rss_mb"]]
            for i in range(repeat):
                if left() < 90:
                    print("stopping the repeated runs early: the script's time limit is near")
                    break
                outcome = one_session(url, image, repeat_steps, 120)
                kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
                times.append(outcome.total_s or 0.0)
                if outcome.kind == "failed":
                    failures.append(outcome.message)
                rss = proc_status(proc.pid)["rss_mb"]
                rss_max = max(rss_max, rss)
                if (i + 1) % 10 == 0:
                    trace.append(rss)
            rep1 = settle(proc, tmp, rep0["threads"])
            done = sum(kinds.values())
            print(f"repeated_runs {done} (steps {repeat_steps}, one after another, each in a fresh session)")
            print(f"repeated_completed {kinds.get('completed', 0)}")
            print(f"repeated_rejected {kinds.get('rejected', 0)}")
            print(f"repeated_failed {kinds.get('failed', 0)}")
            print_times("repeated_run", times)
            for message in failures[:5]:
                print(f"  failure: {message[:200]}")
            print(f"repeated_rss_mb_max {rss_max:.0f}")
            print(f"repeated_rss_mb_every_10_runs {' '.join(f'{v:.0f}' for v in trace)}")
            print_server("repeated_", rep0, rep1)
            checks += [
                ("repeated: every run completed", kinds.get("completed", 0) == repeat),
                (f"repeated: memory stays within {RSS_BUDGET_MB} MB", max(rss_max, rep1["rss_mb"]) - rep0["rss_mb"] <= RSS_BUDGET_MB),
                ("repeated: no threads left over", rep1["threads"] <= rep0["threads"]),
                ("repeated: no training process left", rep1["training_processes"] == 0),
                ("repeated: session folders cleaned up", rep1["session_folders"] == 0),
                ("repeated: server idle again afterwards", idle_again(rep0, rep1)),
            ]
        return report(checks)
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
        if checks and all(ok for _, ok in checks):
            proc.log_path.unlink(missing_ok=True)  # type: ignore[attr-defined]


def report(checks: list[tuple[str, bool]]) -> int:
    print("targets:")
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'} {name}")
    return 0 if checks and all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
