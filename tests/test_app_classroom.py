"""A class at once: the same run is trained once (joined while it trains, replayed once it is kept), the teacher's
work is shared, the line says where each visitor stands and refuses nobody in silence (tests/test_layout.py
checks the driver's line on its own; here the page's handlers and the API go through it)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app import engine
from app.engine import driver
from app.testing.harness import (
    ROOT,
    Req,
    by_id,
    example,
    file_payload,
    is_error,
    islands,
    islands_settings,
    plain,
    run_islands,
    start_islands,
)
from app.widgets import STORE


@pytest.fixture(autouse=True)
def run_cache(tmp_path, monkeypatch):
    """A run cache of this test's own, and a line of this test's own (no run of another test is in it)."""
    monkeypatch.setenv("APM_RUN_CACHE", str(tmp_path / "runs"))
    engine.RUN_CACHE.clear_memory()
    monkeypatch.setattr(driver, "RUNS", driver.Runs(slots=3, max_waiting=8))
    yield tmp_path / "runs"
    engine.RUN_CACHE.clear_memory()


def state(request: Req):
    return STORE.peek(request.session_hash).islands


def drop(*requests: Req) -> None:
    for request in requests:
        STORE.drop(request.session_hash)


def test_two_visitors_with_the_same_run_train_it_once_and_see_the_same_grid():
    a, b = Req("class-same-a"), Req("class-same-b")
    before = driver.RUNS.started
    thread_a, out_a, first_a = start_islands(a, example(), steps=400)
    assert first_a.wait(60)
    thread_b, out_b, first_b = start_islands(b, example(), steps=400)
    assert first_b.wait(60)
    thread_a.join(120)
    thread_b.join(120)
    assert driver.RUNS.started - before == 1  # one training process for both
    assert state(a).source == "trained" and state(b).source == "joined"
    assert any("joined" in plain(o["status"]) for o in out_b) and "joined" in plain(out_b[-1]["status"])
    assert state(a).run is state(b).run  # one record: the frames are shared, not copied
    np.testing.assert_array_equal(state(a).run.frames[-1].features, state(b).run.frames[-1].features)
    assert plain(out_a[-1]["status"]).startswith("done") and plain(out_b[-1]["status"]).startswith("done")
    drop(a, b)


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"steps": 12}, {"lr": 2e-3}, {"layer": 10}, {"projection": "pca"}, {"perplexity": 10},
    {"rgb_weight": 0.5}, {"grid": "24"}, {"image": "house"},
])
def test_a_change_of_any_one_setting_trains_anew(change):
    """The same run again is a replay; the same run with one setting changed is a run of its own."""
    base = {"steps": 10}
    first = Req("class-key-first")
    run_islands(first, example(), **base)
    assert state(first).source == "trained"
    again = Req("class-key-again")
    _, stream = run_islands(again, example(), **base)
    assert state(again).source == "replayed" and "replayed" in plain(stream[-1]["status"])
    other = Req("class-key-other")
    image = example(change.get("image", "face"))
    _, stream = run_islands(other, image, **{**base, **{k: v for k, v in change.items() if k != "image"}})
    assert state(other).source == "trained", change
    assert state(other).run.key != state(first).run.key
    drop(first, again, other)


def test_stop_by_one_viewer_leaves_the_run_going_and_the_last_stop_ends_it():
    a, b = Req("class-stop-a"), Req("class-stop-b")
    thread_a, out_a, first_a = start_islands(a, example(), steps=2000)
    assert first_a.wait(60)
    thread_b, out_b, first_b = start_islands(b, example(), steps=2000)
    assert first_b.wait(60) and state(b).source == "joined"
    record = state(a).run
    islands().stop(request=a)
    thread_a.join(10)
    assert not thread_a.is_alive() and "this page left the run" in plain(out_a[-1]["status"])
    time.sleep(1.0)
    assert record.live.alive and thread_b.is_alive()  # b still watches: it trains on
    islands().stop(request=b)
    thread_b.join(15)
    assert not thread_b.is_alive() and not record.live.alive and record.status == "stopped"
    assert plain(out_b[-1]["status"]).startswith("stopped by you") and record.frames[-1].step < 2000
    drop(a, b)


def test_a_replay_ends_on_the_recorded_final_frame_and_train_anew_trains(run_cache):
    owner = Req("class-replay-owner")
    run_islands(owner, example(), steps=20)
    recorded = state(owner).run
    assert recorded.status == "done" and len(list(run_cache.glob("??/*"))) == 1
    engine.RUN_CACHE.clear_memory()  # read back from the disk, as another process would
    viewer = Req("class-replay-viewer")
    _, stream = run_islands(viewer, example(), steps=20)
    replayed = state(viewer).run
    assert state(viewer).source == "replayed" and replayed is not recorded
    final = plain(stream[-1]["status"])
    assert final.startswith("replayed: this exact run was trained on") and "Train anew" in final
    assert stream[0]["train-anew"]["visible"] is True and stream[-1]["skip"]["visible"] is False
    np.testing.assert_array_equal(replayed.frames[-1].features, recorded.frames[-1].features)
    np.testing.assert_array_equal(replayed.frames[-1].projection.image, recorded.frames[-1].projection.image)
    assert [f.step for f in replayed.frames] == [f.step for f in recorded.frames]
    np.testing.assert_array_equal(replayed.history()["feat_loss"], recorded.history()["feat_loss"])
    # the panels work on it as on a run of one's own: the timeline, the export, the asynchronous panel
    tab = islands()
    scrubbed = by_id(tab.panel("timeline").scrub(replayed.frames[0].step, request=viewer))
    assert plain(scrubbed["status"]).startswith("showing")
    exported = by_id(tab.panel("export").export(request=viewer))
    assert not is_error(exported["status"]) and len(exported["export-files"]["value"]) == 4
    decoded = [by_id(o) for o in tab.panel("asynchronous").on_decode("row", 64, "rgb", request=viewer)]
    assert "the same grid as one full pass" in plain(decoded[-1]["async-readout"])
    # Train anew: trains, and its recording replaces the entry
    created = replayed.created
    tab.begin_anew(request=viewer)
    by_id(tab.prepare(*islands_settings(example(), steps=20), request=viewer))
    stream = [by_id(o) for o in tab.stream(request=viewer)]
    assert state(viewer).source == "trained" and plain(stream[-1]["status"]).startswith("done")
    engine.RUN_CACHE.clear_memory()
    assert engine.RUN_CACHE.get(recorded.key).created > created
    drop(owner, viewer)


def test_skip_to_the_end_shows_the_last_frame_at_once():
    owner, viewer = Req("class-skip-owner"), Req("class-skip-viewer")
    run_islands(owner, example(), steps=60)
    tab = islands()
    tab.begin(request=viewer)
    tab.prepare(*islands_settings(example(), steps=60), request=viewer)
    gen = tab.stream(request=viewer)
    next(gen)
    tab.skip(request=viewer)
    started = time.monotonic()
    rest = [by_id(o) for o in gen]
    assert time.monotonic() - started < 2.0 and len(rest) <= 2  # the final frame, then how it ended
    assert f"step {state(owner).run.frames[-1].step} /" in plain(rest[-1]["status"])
    drop(owner, viewer)


def test_the_cache_cap_evicts_the_least_recently_used(run_cache, monkeypatch):
    requests = [Req(f"class-cap-{k}") for k in range(3)]
    run_islands(requests[0], example(), steps=10)
    size = engine.RUN_CACHE.size_bytes()
    monkeypatch.setattr(engine.RUN_CACHE, "_cap", int(2.5 * size))
    run_islands(requests[1], example(), steps=11)
    keys = [state(r).run.key for r in requests[:2]]
    time.sleep(0.05)
    assert engine.RUN_CACHE.get(keys[0]) is not None  # the first is used again: the second is now the oldest
    run_islands(requests[2], example(), steps=12)
    kept = {p.name for p in run_cache.glob("??/*")}
    assert keys[0] in kept and keys[1] not in kept and state(requests[2]).run.key in kept
    assert engine.RUN_CACHE.size_bytes() <= 2.5 * size
    drop(*requests)


@pytest.mark.parametrize("damage", ["truncate", "garbage-json", "no-model"])
def test_a_damaged_entry_is_deleted_with_one_log_line_and_the_run_trains_anew(run_cache, caplog, damage):
    owner = Req("class-damaged-owner")
    run_islands(owner, example(), steps=10)
    folder = next(run_cache.glob("??/*"))
    if damage == "truncate":
        data = (folder / "frames.npz").read_bytes()
        (folder / "frames.npz").write_bytes(data[: len(data) // 2])
    elif damage == "garbage-json":
        (folder / "record.json").write_text("{not json")
    else:
        (folder / "model" / "model.safetensors").unlink()
    engine.RUN_CACHE.clear_memory()
    viewer = Req("class-damaged-viewer")
    with caplog.at_level(logging.WARNING, logger="apm.app"):
        _, stream = run_islands(viewer, example(), steps=10)
    assert state(viewer).source == "trained" and plain(stream[-1]["status"]).startswith("done")
    assert not any(is_error(o.get("status", "")) for o in stream)
    lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(lines) == 1 and "trains anew" in lines[0]
    assert (folder / "record.json").is_file()  # the new run was kept in its place
    drop(owner, viewer)


def test_a_full_line_gives_one_line_at_once(monkeypatch):
    monkeypatch.setattr(driver, "RUNS", driver.Runs(slots=1, max_waiting=1))
    a, b, c = Req("class-full-a"), Req("class-full-b"), Req("class-full-c")
    thread_a, _, first_a = start_islands(a, example(), steps=2000)
    assert first_a.wait(60)
    thread_b, out_b, first_b = start_islands(b, example("house"), steps=20)
    assert first_b.wait(30) and "1st in line, about" in plain(out_b[0]["status"])
    started = time.monotonic()
    prepared, stream = run_islands(c, example("car"), steps=20)  # the run is refused when it is submitted
    assert time.monotonic() - started < 10.0  # prepare and the refusal: no wait for a slot
    text = plain(prepared["status"])
    assert is_error(prepared["status"]) and text.lstrip("⚠ ").startswith("the app is full: 1 run is waiting; try again in about")
    assert [set(o) for o in stream] == [{"status"}]  # and nothing streams after it
    islands().stop(request=b)  # b leaves the line: its run is never trained
    thread_b.join(10)
    assert not thread_b.is_alive() and state(b).run.live is None
    islands().stop(request=a)
    thread_a.join(15)
    drop(a, b, c)


def test_the_teacher_is_encoded_once_for_every_visitor():
    engine.TEACHER_OUTPUTS.clear()
    misses = engine.TEACHER_OUTPUTS.misses
    for k in range(3):
        request = Req(f"class-teacher-{k}")
        islands().begin(request=request)
        out = by_id(islands().prepare(*islands_settings(example("flower_photo"), steps=10), request=request))
        assert not is_error(out["status"])
        islands().panel("levels").on_levels(file_payload(example("flower_photo")), "dinov2", True, "auto",
                                            request=request)
        drop(request)
    assert engine.TEACHER_OUTPUTS.misses - misses == 2  # the run's layer once, every layer (the strip) once


def test_the_api_says_where_a_run_came_from():
    from app.api import api_run

    def last(request: Req) -> dict:
        return list(api_run(file_payload(example()), steps=15, request=request))[-1]

    first = last(Req("class-api-1"))
    second = last(Req("class-api-2"))
    assert first["source"] == "trained" and second["source"] == "replayed" and second["done"]
    assert second["n_islands"] == first["n_islands"] and second["grid"] == first["grid"]
    assert Path(second["snapshots"]["path"]).name == "run.npz"
    drop(Req("class-api-1"), Req("class-api-2"))


def test_a_replay_links_the_files_its_training_wrote():
    """The run cache keeps when a run was trained, so a replay (read back from the disk) is the same finished run
    to the export: a second class gets the files the trainer's result wrote, linked, not encoded again."""
    from app.api import api_run

    trained = list(api_run(file_payload(example()), steps=15, request=Req("class-files-1")))[-1]
    engine.RUN_CACHE.clear_memory()
    replayed = list(api_run(file_payload(example()), steps=15, request=Req("class-files-2")))[-1]
    assert (trained["source"], replayed["source"]) == ("trained", "replayed")
    for name in ("snapshots", "settings"):
        a, b = Path(trained[name]["path"]), Path(replayed[name]["path"])
        assert a != b and a.stat().st_ino == b.stat().st_ino, name
    drop(Req("class-files-1"), Req("class-files-2"))


def test_two_app_processes_share_one_cache_folder(run_cache):
    """Replicas behind one address: what one process trained, another process replays from the shared folder."""
    code = (
        "from app.testing.harness import Req, example, run_islands\n"
        "from app.widgets import STORE\n"
        "request = Req('replica')\n"
        "run_islands(request, example(), steps=10)\n"
        "print('SOURCE', STORE.peek('replica').islands.source)\n"
    )
    env = {**os.environ, "APM_RUN_CACHE": str(run_cache), "PYTHONPATH": str(ROOT)}
    sources = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        sources.append(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("SOURCE")))
    assert sources == ["trained", "replayed"]
    meta = json.loads(next(run_cache.glob("??/*/record.json")).read_text())
    assert meta["experiment"]["steps"] == 10


def test_a_run_key_changes_with_the_apm_version_and_what_it_computes(monkeypatch):
    import apm
    from apm.images import load_image
    from apm.recipes import experiment
    from app.engine.cache import run_key
    from app.session import View

    exp = experiment("custom", steps=10)
    picture = load_image(str(example()))
    key = run_key(exp, View(exp, True), picture)
    assert run_key(exp, View(exp, True), load_image(str(example()))) == key  # the same pixels, the same key
    assert run_key(exp, View(exp, False), picture) != key  # comparable colours change the frames
    assert run_key(exp, View(exp, True), picture, ["a cat"]) == key  # labels only count for a teacher that reads text
    clip = experiment("custom", teacher="clip", steps=10)
    assert run_key(clip, View(clip, True), picture, ["a cat"]) != run_key(clip, View(clip, True), picture, ["a dog"])
    monkeypatch.setattr(apm, "__version__", "0.0.0-other")
    assert run_key(exp, View(exp, True), picture) != key


def test_the_page_and_the_api_ask_for_the_same_default_run(monkeypatch):
    """A class clicks on the page, a script calls /run with nothing set: both are the same run (one key), whether
    the settings were sent (the page sends every control's value) or left to their defaults (the API)."""
    from apm.images import load_image
    from apm.recipes import experiment
    from app.controls import Controls
    from app.engine.cache import run_key
    from app.session import View
    from app.settings import page_experiment

    tab = islands()
    values = {name: component.value for name, component in tab.controls.components.items()}
    values["checkpoint"] = ""  # the picker shows "none"
    page = Controls.read(values)
    api = page_experiment("custom")  # what api_run builds when a call names nothing
    picture = load_image(str(example("flower_photo")))
    key = run_key(api, View(api, True), picture)
    assert run_key(page.experiment, View(page.experiment, page.comparable), picture, page.labels) == key
    spelled = experiment("custom", teacher=api.teacher, layer=-1, lr=api.effective_lr, perplexity=30,
                         random_weights=api.resolved().random_weights)
    assert run_key(spelled, View(spelled, True), picture) == key  # defaults spelled out (layer -1 is the last)
    other = experiment("custom", teacher=api.teacher, layer=0)
    assert run_key(other, View(other, True), picture) != key


def test_the_examples_are_prefilled_at_start_and_replayed_by_the_first_class(run_cache, monkeypatch):
    """The server's prefill trains each example's default run once (a visitor who comes meanwhile joins it); the
    next visitor of that run replays it, and a second prefill (a restart) trains nothing."""
    from apm.images import load_image
    from apm.recipes import experiment
    from app.session import View

    exp = experiment("custom", steps=20)
    runs = [(exp, View(exp, True), load_image(str(example(stem))), stem) for stem in ("face", "house")]
    before = driver.RUNS.started
    prefill = engine.Prefill().start(runs)
    assert prefill.done.wait(240)
    assert prefill.sources == {"face": "trained", "house": "trained"}
    assert driver.RUNS.started - before == 2
    # their files are written too: the first class links them instead of encoding a GIF while the others watch
    from app.engine import export

    writes = []
    real = export._write
    monkeypatch.setattr(export, "_write", lambda out, *a: writes.append(out) or real(out, *a))
    visitor = Req("class-prefilled")
    _, stream = run_islands(visitor, example("house"), steps=20)
    assert state(visitor).source == "replayed" and plain(stream[-1]["status"]).startswith("replayed")
    files = export.export_run(run_cache.parent / "visitor", state(visitor).run, 1)
    assert writes == [] and {p.name for p in files} >= {"islands.gif", "run.npz"}
    again = engine.Prefill().start(runs)
    assert again.done.wait(60) and again.sources == {"face": "replayed", "house": "replayed"}
    assert driver.RUNS.started - before == 2  # nothing trained twice
    drop(visitor)


def test_a_finished_runs_files_are_written_once_for_all_its_viewers(tmp_path, monkeypatch):
    """A class replaying one run gets its export (GIF, arrays, panels sheet, summary) from one encoding, linked
    into each viewer's folder; a page's own drawing of it is written for that page alone."""
    from app.engine import export

    first = Req("class-export-1")
    run_islands(first, example(), steps=15)
    record = state(first).run
    writes = []
    real = export._write
    monkeypatch.setattr(export, "_write", lambda out, *a: writes.append(out) or real(out, *a))
    a = export.export_run(tmp_path / "a", record, 1)
    b = export.export_run(tmp_path / "b", record, 2)
    assert len(writes) == 1 and [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes() and x.stat().st_ino == y.stat().st_ino
    (tmp_path / "a" / "run-1" / "islands.gif").unlink()  # one viewer's folder going does not touch another's
    assert b[0].is_file() and b[0].stat().st_size > 0
    own = export.export_run(tmp_path / "c", record, 3, frames=list(record.frames))  # drawn by the page: its own
    assert len(writes) == 2 and own[0].stat().st_ino != b[0].stat().st_ino
    drop(first)
