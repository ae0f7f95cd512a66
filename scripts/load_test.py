"""Load test: start the app on 127.0.0.1 and drive it with simultaneous `gradio_client` sessions.

    python scripts/load_test.py                    # 8 simultaneous sessions, 60 steps each
    python scripts/load_test.py --sessions 8 --steps 60 --repeat 50   # then 50 runs one after another
    python scripts/load_test.py --broken           # the broken-input corpus through the API

It prints completed / queued / rejected-with-message / failed counts, the p50 and p95 time to the first
frame, and the server's memory and thread count before and after. Traffic goes only to 127.0.0.1; every loop
is bounded in count and time, and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEACHER = "DINOv2 ViT-S/14"
TIME_LIMIT_S = 600  # the whole script never runs longer than this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """Resident memory (MB) and thread count of a process, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mb"] = int(line.split()[1]) // 1024
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    return out


def start_server(port: int, env_extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "APM_RANDOM_WEIGHTS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **env_extra}
    log = open(Path(tempfile.gettempdir()) / f"apm-load-server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {proc.returncode}; see {log.name}")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not start within 120 s")


@dataclass
class Outcome:
    kind: str  # completed | rejected | failed
    first_frame_s: float | None = None
    total_s: float | None = None
    queued: bool = False
    message: str = ""
    statuses: list[str] = field(default_factory=list)


def one_session(url: str, image: str, steps: int, timeout_s: float) -> Outcome:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    t0 = time.monotonic()
    job = client.submit(handle_file(image), TEACHER, 11, True, None, "Dense grid", "cpu", steps, 1e-3, 0,
                        "t-SNE 2D", 10, "", api_name="/run")
    outcome = Outcome("failed")
    seen = 0
    try:
        while time.monotonic() - t0 < timeout_s:
            status = job.status()
            if getattr(status, "code", None) is not None and str(status.code).endswith("IN_QUEUE") and (status.rank or 0) > 0:
                outcome.queued = True
            outputs = job.outputs()
            if len(outputs) > seen:
                if outcome.first_frame_s is None:
                    outcome.first_frame_s = time.monotonic() - t0
                outcome.statuses += [str(o[0]) for o in outputs[seen:]]
                seen = len(outputs)
            if job.done():
                break
            time.sleep(0.05)
        else:
            job.cancel()
            outcome.message = "timed out"
            return outcome
        job.result()  # raises on a server-side error or a full queue
        last = outcome.statuses[-1] if outcome.statuses else ""
        outcome.kind = "completed" if "done" in last else "failed"
        outcome.message = last
    except Exception as exc:  # noqa: BLE001 - classify whatever the client raises
        text = str(exc)
        outcome.kind = "rejected" if "queue" in text.lower() and "full" in text.lower() else "failed"
        outcome.message = text
    outcome.total_s = time.monotonic() - t0
    client.close() if hasattr(client, "close") else None
    return outcome


def run_broken(url: str) -> int:
    """Every file of the broken-input corpus through the API: each must get a clear message, none a crash."""
    from gradio_client import Client, handle_file

    from tests.corpus.make_corpus import BROKEN_IMAGES, make_corpus

    folder = Path(tempfile.mkdtemp(prefix="apm-corpus-"))
    corpus = make_corpus(folder)
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    bad = 0
    for name, path in corpus.items():
        is_feature = path.suffix in (".npy", ".pt")
        image = handle_file(str(corpus["plain_jpeg"] if is_feature else path))
        features = handle_file(str(path)) if is_feature else None
        teacher = "Your own features (.npy / .pt)" if is_feature else TEACHER
        try:
            result = client.predict(image, teacher, 11, True, features, "Dense grid", "cpu", 5, 1e-3, 0, "PCA (3 components)",
                                    5, "", api_name="/run")
            status = str(result[0])
        except Exception as exc:  # noqa: BLE001
            status = f"EXCEPTION {exc}"
            bad += 1
        expect_error = name in BROKEN_IMAGES or (is_feature and "good" not in name)
        ok = ("apm-error" in status) == expect_error and not status.startswith("EXCEPTION")
        bad += not ok
        text = status.replace("<div class='apm-status apm-error'>", "").replace("<div class='apm-status'>", "").replace("</div>", "")
        print(f"{'ok ' if ok else 'BAD'} {name:32s} {text[:110]}")
    alive = client.predict(handle_file(str(ROOT / "assets/examples/face.png")), TEACHER, 11, True, None, "Dense grid",
                           "cpu", 5, 1e-3, 0, "PCA (3 components)", 5, "", api_name="/run")
    print(f"server still serving after the corpus: {'done' in str(alive[0])}")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="simultaneous sessions (at most 32)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per session")
    parser.add_argument("--repeat", type=int, default=0, help="then this many runs one after another (at most 100)")
    parser.add_argument("--broken", action="store_true", help="send the broken-input corpus instead")
    parser.add_argument("--url", default=None, help="an already running app (default: start one here)")
    args = parser.parse_args()
    sessions, repeat = min(args.sessions, 32), min(args.repeat, 100)
    started = time.monotonic()

    proc = None
    if args.url is None:
        port = free_port()
        proc = start_server(port, {})
        url = f"http://127.0.0.1:{port}/"
    else:
        url = args.url
    try:
        image = str(ROOT / "assets" / "examples" / "face.png")
        if args.broken:
            return 1 if run_broken(url) else 0
        if proc:  # one warm-up run: loads the teacher, as a long-lived Space has
            one_session(url, image, 5, 120)
            time.sleep(1)
        before = proc_status(proc.pid) if proc else {}
        results: list[Outcome] = []
        threads = [threading.Thread(target=lambda: results.append(one_session(url, image, args.steps, 300)))
                   for _ in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, TIME_LIMIT_S - (time.monotonic() - started)))
        time.sleep(3)  # let the server release what the runs held
        after = proc_status(proc.pid) if proc else {}
        firsts = sorted(r.first_frame_s for r in results if r.first_frame_s is not None)
        count = lambda kind: sum(r.kind == kind for r in results)  # noqa: E731
        print(f"sessions {sessions}")
        print(f"completed {count('completed')}")
        print(f"queued {sum(r.queued for r in results)}")
        print(f"rejected_with_message {count('rejected')}")
        print(f"failed {count('failed')}")
        if firsts:
            p95 = firsts[min(len(firsts) - 1, int(round(0.95 * (len(firsts) - 1))))]
            print(f"first_frame_p50_s {statistics.median(firsts):.2f}")
            print(f"first_frame_p95_s {p95:.2f}")
        for r in results:
            if r.kind == "failed":
                print(f"  failure: {r.message[:200]}")
        if proc:
            print(f"server_rss_mb_before {before['rss_mb']}")
            print(f"server_rss_mb_after {after['rss_mb']}")
            print(f"server_threads_before {before['threads']}")
            print(f"server_threads_after {after['threads']}")
        if repeat:
            rss0 = proc_status(proc.pid) if proc else {}
            ok = 0
            for _ in range(repeat):
                if time.monotonic() - started > TIME_LIMIT_S:
                    break
                ok += one_session(url, image, 20, 120).kind == "completed"
            time.sleep(2)
            rss1 = proc_status(proc.pid) if proc else {}
            print(f"repeated_runs {repeat}")
            print(f"repeated_completed {ok}")
            if proc:
                print(f"repeated_rss_mb_before {rss0['rss_mb']}")
                print(f"repeated_rss_mb_after {rss1['rss_mb']}")
                print(f"repeated_threads_before {rss0['threads']}")
                print(f"repeated_threads_after {rss1['threads']}")
        return 0 if count("failed") == 0 else 1
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
