"""The Islands tab's handlers, called directly (no server, no browser), outputs read by element id.

Runs are a few dozen steps of an untrained teacher (APM_RANDOM_WEIGHTS=1, set in conftest), so the file stays
light on a shared 2-core machine.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apm.bench.corpus import PICKLE_MARKER
from app import engine, plots
from app.session import View
from app.testing.harness import (
    Req,
    by_id,
    example,
    figure,
    is_error,
    is_skip,
    islands,
    islands_settings,
    n_points,
    parse_status,
    plain,
    run_islands,
    start_islands,
)
from app.widgets import STORE

STREAMED = {"status", "islands-plot", "islands-image", "rgb-image", "loss-plot", "fidelity-plot", "apm-labels",
            "conv-filter", "unfolded-plot", "timeline", "part-whole-tree", "content-readout"}
SERVED = 256  # grid images are served enlarged (16 pixels a location on a 16 x 16 grid): clicks map to locations


@pytest.fixture(scope="module")
def finished():
    """A 30-step t-SNE 2D run, everything it sent kept: (request, prepare's outputs, stream's outputs, session)."""
    request = Req("islands-finished")
    prepared, stream = run_islands(request, example("face"), steps=30)
    yield request, prepared, stream, STORE.peek(request.session_hash)
    STORE.drop(request.session_hash)


def test_prepare_sends_what_stays_put(finished):
    _, prepared, _, session = finished
    record = session.islands.run
    h, w = record.grid_shape
    assert (h, w) == (16, 16)
    assert plain(prepared["status"]).startswith("training starts (expected")
    for elem in ("input-small", "teacher-islands"):
        assert prepared[elem].dtype == np.uint8 and prepared[elem].shape == (SERVED, SERVED, 3)
    assert "Folded state" in prepared["folded"] and f"{h} x {w} queries" in prepared["folded"]
    assert prepared["timeline"]["maximum"] == 30 and prepared["timeline"]["interactive"] is False
    assert prepared["clip-labels"]["visible"] is False  # DINOv2 has no text tower: no labels panel
    assert "islands-plot" in prepared and n_points(prepared["islands-plot"]) == 0  # cleared for the new run


def test_the_stream_sends_only_what_changes(finished):
    _, _, stream, session = finished
    record = session.islands.run
    h, w = record.grid_shape
    assert len(stream) >= 2
    steps = []
    for k, out in enumerate(stream):
        assert set(out) <= STREAMED, set(out) - STREAMED  # never the panels that stay put
        assert "CKA to teacher" in out["content-readout"] and "What the islands rest on" in out["content-readout"]
        status = parse_status(out["status"])
        assert status["total"] == 30 and status["loss"] > 0
        last = k == len(stream) - 1
        if not last:
            assert status["lead"] == "training" and out["timeline"] == steps_of(out)
            steps.append(out["timeline"])
        else:
            assert status["lead"] == "done" and status["step"] == 30
            assert out["timeline"]["value"] == 30 and out["timeline"]["interactive"] is True
        assert n_points(out["islands-plot"]) == h * w
        assert figure(out["islands-plot"])["data"][0]["type"] == "scatter"  # SVG: few points, no WebGL context
        assert f"step {record.frames[min(k, len(record.frames) - 1)].step}" in figure(out["islands-plot"])["layout"]["title"]["text"] or last
        for elem in ("islands-image", "rgb-image"):
            assert out[elem].dtype == np.uint8 and out[elem].shape == (SERVED, SERVED, 3)
        loss = figure(out["loss-plot"])
        assert len(loss["data"][0]["x"]) == max(int(s) for s in loss["data"][0]["x"])  # every step so far
        assert np.asarray(figure(out["fidelity-plot"])["data"][0]["z"]).shape == (h, w)
    assert steps == sorted(steps) and steps[0] >= 1
    assert not is_skip(stream[0]["conv-filter"]) and not is_skip(stream[-1]["conv-filter"])  # first and last frames
    assert stream[-1]["unfolded-plot"] is not None and len(figure(stream[-1]["unfolded-plot"])["data"]) == 2
    assert record.status == "done" and [f.step for f in record.frames][-1] == 30


def steps_of(out: dict) -> int:
    return int(figure(out["islands-plot"])["layout"]["title"]["text"].split("step ")[1].split("<")[0])


def test_scrubbing_is_in_steps(finished):
    request, _, _, session = finished
    frames = session.islands.run.frames
    tab = islands()
    first = by_id(tab.panel("timeline").scrub(frames[0].step, request=request))
    status = parse_status(first["status"])
    assert status["lead"] == "showing" and status["step"] == frames[0].step
    assert session.islands.run.teacher_label in plain(first["status"])  # the teacher stays named while scrubbing
    np.testing.assert_array_equal(first["rgb-image"], plots.grid_image(frames[0].rgb))
    nearest = by_id(tab.panel("timeline").scrub(frames[1].step + 1, request=request))
    assert parse_status(nearest["status"])["step"] == frames[1].step  # the nearest recorded frame
    beyond = by_id(tab.panel("timeline").scrub(10_000, request=request))
    assert parse_status(beyond["status"])["step"] == frames[-1].step
    assert session.islands.run.status == "done"  # scrubbing changes nothing recorded


def test_changing_the_projection_redraws_the_shown_frame(finished):
    request, _, _, session = finished
    tab = islands()
    tab.panel("timeline").scrub(session.islands.run.frames[0].step, request=request)
    out = by_id(tab.panel("islands").reproject("tsne3d", 10, "cosine", "pca", True, request=request))
    assert figure(out["islands-plot"])["data"][0]["type"] == "scatter3d"
    assert f"step {session.islands.run.frames[0].step}" in plain(out["status"])
    assert out["teacher-islands"].shape[2] == 3
    assert session.islands.shown_frame().projection.dim == 3 and session.islands.view.experiment.perplexity == 10
    assert session.islands.run.frames[0].projection.dim == 2  # the recorded frame stays as it was drawn
    out = by_id(tab.panel("islands").reproject("pca", 30, "cosine", "pca", False, request=request))
    assert figure(out["islands-plot"])["data"][0]["type"] == "scatter3d" and session.islands.view.comparable is False
    bad = by_id(tab.panel("islands").reproject("tsne2d", 500, "cosine", "pca", True, request=request))
    assert is_error(bad["status"]) and "perplexity" in plain(bad["status"])


def test_comparable_colours_are_identical_for_identical_grids(finished):
    """A frame whose features equal the teacher's grid, drawn by the engine with comparable colours (rotated onto
    the teacher's embedding), gets the teacher's colours; without them, only its own."""
    from apm.train import Snapshot

    _, _, _, session = finished
    record = replace(session.islands.run, frames=[])  # no earlier frame to warm-start from
    last = session.islands.run.frames[-1]
    snap = Snapshot(step=1, total_steps=1, feat_loss=0.0, rgb_loss=0.0, global_loss=None, loss=0.0, lr=0.0,
                    elapsed_s=0.0, features=record.teacher_grid, rgb=last.rgb, trigger_column=last.trigger_column,
                    conv_filter=last.conv_filter, done=True)
    view = View(record.experiment, comparable=True)  # the run's own view (an earlier test changed the page's)
    frame = engine.make_frame(snap, record, view, final=True)
    np.testing.assert_allclose(frame.projection.colours, record.teacher_projection.colours, atol=1e-4)
    assert frame.content is not None and frame.content.cka_teacher > 0.999


def test_export_writes_files_that_open_and_the_settings(finished):
    import json

    request, _, _, session = finished
    out = by_id(islands().panel("export").export(request=request))
    assert out["export-files"]["visible"] is True and not is_error(out["status"])
    paths = [Path(f) for f in out["export-files"]["value"]]
    assert [p.name for p in paths] == ["islands.gif", "run.npz", "panels.png", "summary.json"]  # the run writer's files
    assert all(p.is_file() and p.stat().st_size > 0 and session.folder in p.parents for p in paths)
    n = len(session.islands.run.frames)
    with Image.open(paths[0]) as gif:
        assert gif.format == "GIF" and n <= gif.n_frames <= 2 * n  # forward, then back (a ping-pong loop)
    with np.load(paths[1], allow_pickle=False) as npz:
        assert npz["step"].tolist() == [f.step for f in session.islands.run.frames]
        assert npz["features"].shape[:3] == (n, 16, 16) and len(npz["curve_feat_loss"]) == 30
    summary = json.loads(paths[3].read_text())
    assert summary["experiment"]["teacher"] == "dinov2" and summary["experiment"]["layer"] == 11
    assert summary["config"]["train"]["lr"] == 1e-3 and "DINOv2 ViT-S/14 · layer 11" in summary["teacher"]
    assert summary["environment"]["packages"]["torch"] and summary["steps_done"] == 30


def test_export_before_any_run():
    request = Req("islands-export-empty")
    out = by_id(islands().panel("export").export(request=request))
    assert out["export-files"]["visible"] is False and "press Run first" in plain(out["status"])
    STORE.drop(request.session_hash)


# stopping, restarting, and sessions that do not see each other


def test_stop_ends_the_run_and_keeps_its_frames():
    request = Req("islands-stop")
    thread, outputs, first = start_islands(request, example(), steps=2000)
    assert first.wait(60) and outputs
    time.sleep(0.5)
    pressed = time.monotonic()
    islands().stop(request=request)
    thread.join(10)
    latency = time.monotonic() - pressed
    print(f"\nstop: the stream ended {latency:.2f} s after Stop")
    assert not thread.is_alive() and latency < 5.0
    record = STORE.peek(request.session_hash).islands.run
    assert record.status == "stopped" and record.frames and not record.live.alive
    last = parse_status(outputs[-1]["status"])
    assert last["lead"] == "stopped by you (everything recorded is kept)" and last["step"] < 2000
    assert len(record.history()["step"]) == record.history()["step"][-1]  # nothing ran after the stop
    assert by_id(islands().panel("export").export(request=request))["export-files"]["value"]
    _, again = run_islands(request, example(), steps=10)  # and the next run in this session works
    assert parse_status(again[-1]["status"])["lead"] == "done"
    STORE.drop(request.session_hash)


def test_run_during_a_run_starts_the_new_one():
    request = Req("islands-rerun")
    old, old_outputs, first = start_islands(request, example(), steps=2000)
    assert first.wait(60)
    _, stream = run_islands(request, example("house"), steps=10)  # Run again: begin stops the old run
    old.join(10)
    # the old run goes quiet when the new one begins: its "stopped" line would overwrite the new run's status
    assert not old.is_alive() and "stopped" not in plain(old_outputs[-1]["status"])
    assert parse_status(stream[-1]["status"])["lead"] == "done" and parse_status(stream[-1]["status"])["total"] == 10
    assert STORE.peek(request.session_hash).islands.run.image_name == "house.png"
    STORE.drop(request.session_hash)


def test_stop_before_the_stream_starts():
    request = Req("islands-stop-early")
    tab = islands()
    tab.begin(request=request)
    tab.prepare(*islands_settings(example(), steps=20), request=request)
    tab.stop(request=request)  # Stop while the run waits for its turn
    assert [by_id(out) for out in tab.stream(request=request)] == [{"status": {"__type__": "update"}}]
    assert STORE.peek(request.session_hash).islands.run is None
    STORE.drop(request.session_hash)


def test_two_sessions_do_not_see_each_other(corpus, monkeypatch):
    """With one training slot, B waits in line behind A and says so; Stop in A ends A only, and B then runs."""
    from app.engine import driver

    monkeypatch.setattr(driver, "RUNS", driver.Runs(slots=1, max_waiting=8))
    a, b = Req("islands-session-a"), Req("islands-session-b")
    thread_a, out_a, first_a = start_islands(a, example(), steps=2000)
    try:
        assert first_a.wait(60)
        thread_b, out_b, first_b = start_islands(b, corpus["plain_jpeg"], steps=10)
        assert first_b.wait(30) and "1st in line" in plain(out_b[0]["status"])
    finally:
        islands().stop(request=a)  # stops A only
    thread_a.join(10)
    thread_b.join(60)
    assert "stopped" in plain(out_a[-1]["status"]) and parse_status(out_b[-1]["status"])["lead"] == "done"
    sa, sb = STORE.peek(a.session_hash), STORE.peek(b.session_hash)
    assert sa is not sb and sa.islands.run is not sb.islands.run and sa.folder != sb.folder
    assert not np.array_equal(sa.islands.run.input_small, sb.islands.run.input_small)
    STORE.drop(a.session_hash)
    assert STORE.peek(a.session_hash) is None and not sa.folder.exists() and STORE.peek(b.session_hash) is sb
    STORE.drop(b.session_hash)


# bad inputs: one clear line (and a toast), and the next run still works

BAD_IMAGES = {
    "truncated_png": ("damaged",),
    "truncated_jpeg": ("damaged",),
    "empty": ("empty",),
    "text_as_png": ("not an image",),
    "png_signature_garbage": (),
    "bomb_png": ("too many pixels",),
    "bomb_moderate_png": ("8000 x 8000", "megapixels"),
    "tiny_1x1": ("1 x 1", "at least"),
    "strip_20000x20": ("20000 x 20", "elongated"),
}
BAD_FEATURES = {
    "feat_2d_npy": ("(16, 16)", "(h, w, d)"),
    "feat_4d_npy": ("(1, 16, 16, 8)", "(h, w, d)"),
    "feat_nan_npy": ("NaN",),
    "feat_object_npy": ("object",),
    "feat_pickle_as_npy": ("not a NumPy .npy file",),
    "feat_pickle_pt": ("not loaded for safety",),
}


def prepare_error(request: Req, image, **changes) -> str:
    tab = islands()
    tab.begin(request=request)
    out = by_id(tab.prepare(*islands_settings(image, **changes), request=request))
    assert set(out) == {"status"} and is_error(out["status"]), out
    text = plain(out["status"])
    assert "Traceback" not in text and len(text) < 400 and "/tmp/" not in text and "/work/" not in text, text
    assert [by_id(out) for out in tab.stream(request=request)] == [{"status": {"__type__": "update"}}]  # nothing trains
    return text


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_gives_a_clear_error(name, corpus):
    text = prepare_error(Req("islands-bad"), corpus[name])
    assert corpus[name].name in text  # the message names the file, not its server path
    for word in BAD_IMAGES[name]:
        assert word.lower() in text.lower(), text


@pytest.mark.parametrize("name", list(BAD_FEATURES))
def test_bad_feature_array_gives_a_clear_error(name, corpus, corpus_dir):
    text = prepare_error(Req("islands-bad"), corpus["plain_jpeg"], teacher="file", features=corpus[name])
    for word in BAD_FEATURES[name]:
        assert word.lower() in text.lower(), text
    assert not (corpus_dir / PICKLE_MARKER).exists(), "a hostile pickle was loaded"


def test_missing_and_wrong_inputs(corpus):
    request = Req("islands-bad")
    assert "upload an image" in prepare_error(request, None)
    assert "feature array" in prepare_error(request, corpus["plain_jpeg"], teacher="file")
    assert "unknown teacher" in prepare_error(request, corpus["plain_jpeg"], teacher="alexnet")
    assert "steps" in prepare_error(request, corpus["plain_jpeg"], steps=10**6)
    assert "not a path on the server" in prepare_error(request, {"path": "/etc/hostname", "orig_name": "x.png"})


def test_every_error_then_a_run(corpus):
    """Every bad input in one session, then a good run: nothing is left broken behind an error."""
    request = Req("islands-after-errors")
    for name in BAD_IMAGES:
        prepare_error(request, corpus[name])
    for name in BAD_FEATURES:
        prepare_error(request, corpus["plain_jpeg"], teacher="file", features=corpus[name])
    _, stream = run_islands(request, corpus["plain_jpeg"], steps=10)
    assert parse_status(stream[-1]["status"])["lead"] == "done"
    STORE.drop(request.session_hash)


@pytest.mark.parametrize("name", ["cmyk_jpeg", "gray16_png", "palette_alpha_png", "animated_gif", "exif_rotated_jpeg"])
def test_unusual_images_work(name, corpus):
    request = Req(f"islands-unusual-{name}")
    prepared, stream = run_islands(request, corpus[name], steps=10)
    assert prepared["input-small"].dtype == np.uint8 and prepared["input-small"].shape[2] == 3
    assert parse_status(stream[-1]["status"])["lead"] == "done"
    STORE.drop(request.session_hash)


def test_own_features_and_the_target_follows_the_array(corpus, tmp_path):
    request = Req("islands-own")
    _, stream = run_islands(request, corpus["plain_jpeg"], teacher="file", features=corpus["feat_good_pt"], steps=10)
    status = parse_status(stream[-1]["status"])
    assert status["lead"] == "done" and "your features (16, 16, 8)" in status["text"]
    vector = tmp_path / "cls.npy"
    np.save(vector, np.random.default_rng(0).normal(size=32).astype(np.float32))
    _, stream = run_islands(request, corpus["plain_jpeg"], teacher="file", features=vector, target="dense", steps=10)
    record = STORE.peek(request.session_hash).islands.run
    assert record.experiment.target == "global"  # a (d,) array trains as a global target, whatever Target said
    assert parse_status(stream[-1]["status"])["text"].count("global loss") == 1
    STORE.drop(request.session_hash)


def test_a_capped_run_says_it_was_cut_off(monkeypatch):

    from app.engine import islands as engine_islands

    monkeypatch.setattr(engine_islands, "LIMITS", replace(engine_islands.LIMITS, max_run_seconds=1.5))
    request = Req("islands-capped")
    _, stream = run_islands(request, example(), steps=2000)
    last = parse_status(stream[-1]["status"])
    assert last["lead"] == "cut off at the 2 s limit for shared hardware" and last["step"] < 2000
    assert "apm-error" in stream[-1]["status"]  # shown as a warning, not as "done"
    STORE.drop(request.session_hash)


def test_the_expected_time_is_said_before_a_slow_run():
    tab = islands()
    fast = by_id(tab.on_settings(*islands_settings(example())))["expected"]
    slow = by_id(tab.on_settings(*islands_settings(example(), preset="paper", teacher="dinov2:large-reg4",
                                                   steps=300)))["expected"]
    assert fast.startswith("Expected time on this machine: about") and "cut off" not in fast
    assert "min" in slow and "cut off after" in slow


def test_teacher_change_updates_the_controls():
    tab = islands()
    own = by_id(tab.on_teacher("file", 11))
    assert own["features-file"]["visible"] is True and own["random-weights"]["visible"] is False
    assert own["layer"]["interactive"] is False and own["labels"]["visible"] is False
    dino = by_id(tab.on_teacher("dinov2", 11))
    assert dino["features-file"]["visible"] is False and dino["random-weights"]["visible"] is True
    assert dino["layer"]["maximum"] == 11 and dino["layer"]["value"] == 11 and dino["clip-labels"]["visible"] is False
    clip = by_id(tab.on_teacher("clip", 11))
    assert clip["labels"]["visible"] is True and clip["clip-labels"]["visible"] is True
    mvit = by_id(tab.on_teacher("mvit", 11))
    assert mvit["layer"]["maximum"] == 15 and mvit["layer"]["value"] == 15


def test_untrained_clip_labels_say_they_mean_nothing():
    request = Req("islands-clip")
    prepared, stream = run_islands(request, example(), teacher="clip", target="both", labels="face, house, car",
                                   steps=10)
    assert prepared["clip-labels"]["visible"] is True
    assert "untrained teacher: these labels mean nothing" in prepared["clip-labels"]["value"]
    assert "untrained teacher" in stream[-1]["apm-labels"] and "%" in stream[-1]["apm-labels"]
    STORE.drop(request.session_hash)


# levels, pointing, the part-whole tree, shareable links


class Select:
    """Stands in for gr.SelectData: the handlers read `index`."""

    def __init__(self, index):
        self.index = index


def test_levels_strip_one_image_per_layer_and_a_click_selects_it():
    tab = islands()
    request = Req("islands-levels")
    from app.testing.harness import file_payload

    out = by_id(tab.panel("levels").on_levels(file_payload(example("face")), "dinov2", True, "auto", request=request))
    items = out["levels-strip"]
    assert len(items) == 12 and [caption for _, caption in items] == [f"layer {k}" for k in range(12)]
    assert all(image.shape[2] == 3 and image.dtype == np.uint8 for image, _ in items)
    assert len(STORE.peek(request.session_hash).islands.levels.grids) == 12
    assert by_id(tab.panel("levels").on_level(Select(4)))["layer"] == 4
    mvit = by_id(tab.panel("levels").on_levels(file_payload(example("face")), "mvit", True, "auto", request=request))["levels-strip"]
    assert len(mvit) == 16
    assert by_id(tab.panel("levels").on_levels(None, "dinov2", True, "auto", request=request))["levels-strip"] is None
    STORE.drop(request.session_hash)


def test_a_click_marks_the_location_and_draws_both_agreement_maps(finished):
    request, _, _, session = finished
    tab = islands()
    shown = np.zeros((256, 256, 3), np.uint8)  # the grid image as served, 16 pixels per location
    out = by_id(tab.panel("pointing").on_point(shown, Select([16 * 5 + 3, 16 * 2 + 3]), request=request))  # x, y: location (2, 5)
    assert session.islands.point == (2, 5)
    for key in ("agreement-apm", "agreement-teacher", "input-small", "islands-image", "teacher-islands", "rgb-image"):
        assert out[key].shape == (256, 256, 3), key
    frame = session.islands.shown_frame()
    from apm.islands import agreement_map

    sims = agreement_map(frame.features.astype(np.float32), (2, 5))
    assert sims[2, 5] == 1.0
    np.testing.assert_array_equal(out["agreement-apm"][16 * 2 + 8, 16 * 5 + 8],
                                  plots.to_uint8(plots.colormap(sims))[2, 5])
    names = figure(out["column-agreement"])["data"][0]["x"]
    assert names[-1] == "APM"
    small = by_id(tab.panel("pointing").on_point(np.zeros((16, 16, 3), np.uint8), Select([15, 0]), request=request))
    assert session.islands.point == (0, 15) and small["agreement-apm"].shape == (256, 256, 3)


def test_still_frames_carry_the_part_whole_tree(finished):
    request, _, stream, session = finished
    assert all("part-whole-tree" not in update for update in stream[:-1])  # live frames do not pay for it
    tree = figure(stream[-1]["part-whole-tree"])["data"][0]
    assert tree["type"] == "icicle" and tree["values"][0] == 16 * 16
    scrubbed = by_id(islands().panel("timeline").scrub(session.islands.run.frames[0].step, request=request))
    assert figure(scrubbed["part-whole-tree"])["data"][0]["type"] == "icicle"


def test_a_shared_link_reproduces_the_settings():
    tab = islands()
    from app.testing.harness import file_payload

    link = by_id(tab.share_link("cls-ttt", file_payload(example("house")), "clip", 7, "24", 3, 120.0, "paper", 3))
    query = link["share-link"]["value"]
    assert query.startswith("?") and "example=house" in query and "recipe=cls-ttt" in query and "steps=120" in query
    assert "grid=24" in query

    class LinkRequest(Req):
        def __init__(self, params):
            super().__init__("islands-link")
            self.query_params = params

    from urllib.parse import parse_qsl

    out = by_id(tab.from_link(LinkRequest(dict(parse_qsl(query[1:])))))
    assert out["recipe"] == "cls-ttt" and out["teacher"] == "clip" and out["layer"]["value"] == 7
    assert out["seed"] == 3 and out["steps"] == 120 and out["projection"] == "paper" and out["perplexity"] == 3
    assert out["grid"] == "24"
    assert Path(out["input-image"]).stem == "house" and out["target"] == "global"  # the recipe's, too
    bad = by_id(tab.from_link(LinkRequest({"teacher": "resnet"})))
    assert is_error(bad["status"]) and "teacher" in plain(bad["status"])
    assert is_skip(by_id(tab.from_link(LinkRequest({})))["status"])
    uploaded = by_id(tab.share_link("custom", None, "dinov2", 11, "auto", 0, 300, "tsne2d", 30))["share-link"]["value"]
    assert "example" not in uploaded and "grid" not in uploaded
    bad = by_id(tab.from_link(LinkRequest({"grid": "20"})))
    assert is_error(bad["status"]) and "grid must be one of 16, 24, 32" in plain(bad["status"])


def test_hovering_the_scatter_or_a_tree_segment_lights_up_locations(finished):
    """Plotly's hover / click events arrive through the hidden box as 'loc:<index>:<n>' or 'seg:<id>:<n>'."""
    request, _, _, session = finished
    tab = islands()
    out = by_id(tab.panel("pointing").on_pick("loc:37:1", request=request))  # location 37 of a 16 x 16 grid: (2, 5)
    assert session.islands.point == (2, 5) and out["agreement-apm"].shape == (256, 256, 3)
    from apm.islands import part_whole_tree

    frame = session.islands.shown_frame()
    node = part_whole_tree(frame.features.astype(np.float32)).at(2)[0]
    lit = by_id(tab.panel("pointing").on_pick(f"seg:{node.id}:2", request=request))
    assert f"segment {node.id}: {node.size} locations" in plain(lit["status"])
    image = lit["input-small"]  # 16 pixels a location: inside the segment the input is unchanged, outside dimmed
    inside = np.argwhere(node.mask)[0]
    outside = np.argwhere(~node.mask)[0]
    plain_input = plots.grid_image(session.islands.run.input_small)
    np.testing.assert_array_equal(image[16 * inside[0] + 8, 16 * inside[1] + 8],
                                  plain_input[16 * inside[0] + 8, 16 * inside[1] + 8])
    assert not np.array_equal(image[16 * outside[0] + 8, 16 * outside[1] + 8],
                              plain_input[16 * outside[0] + 8, 16 * outside[1] + 8])
    for junk in ("", "loc:abc:3", "loc:99999:4", "seg:L9.9:5", "zap:1:1"):
        assert is_skip(by_id(tab.panel("pointing").on_pick(junk, request=request))["status"])


def test_the_grid_setting_reaches_the_teacher_and_the_apm():
    """grid = 24: the teacher reads 336 px (14 px a location), the APM decodes 24 x 24, the expected time grows;
    a grid the teacher cannot make (MViTv2) is one clear line."""
    from app.controls import Controls
    from app.tabs.islands import expected_markdown

    request = Req("islands-grid")
    prepared, stream = run_islands(request, example("face"), steps=20, grid="24")
    record = STORE.peek(request.session_hash).islands.run
    assert record.grid_shape == (24, 24) and record.teacher_grid.shape[:2] == (24, 24)
    assert record.live.run.model.config.grid == (24, 24) and record.experiment.grid == 24
    assert stream[-1]["islands-image"].shape == (240, 240, 3) and not is_error(stream[-1]["status"])
    # live frames measure the content on an even subgrid (144 of 576 locations); the final frame on all of them
    assert record.frames[-1].final and record.frames[-1].content.locations is None
    assert all(f.content.locations == 144 for f in record.frames[:-1]) and len(record.frames) >= 2
    assert "live:" not in plain(stream[-1]["content-readout"]) and "live:" in plain(stream[0]["content-readout"])
    times = {}
    for grid in ("auto", "16", "32"):
        exp = Controls.read(dict(zip(("teacher", "grid"), ("dinov2", grid)))).experiment
        value, unit = re.search(r"about ([\d.]+) (s|min|h)", expected_markdown(exp)).groups()
        times[grid] = float(value) * {"s": 1, "min": 60, "h": 3600}[unit]
    assert times["auto"] == times["16"] < times["32"]
    mvit = run_islands(request, example("face"), steps=20, teacher="mvit", layer=0, grid="32")[0]
    assert is_error(mvit["status"]) and "MViTv2-S takes 224 px" in plain(mvit["status"])
    bad = run_islands(request, example("face"), steps=20, grid="20")[0]
    assert is_error(bad["status"]) and "grid must be one of 16, 24, 32" in plain(bad["status"])
    STORE.drop(request.session_hash)


def test_frame_pacing_keeps_its_cadence_and_the_render_share():
    """`next_frame_at`: frames never come faster than the interval, a cheap frame that starts late does not push
    the later ones back, a dear one takes at most the render share of a core unless the floor of updates a second
    needs more (never more than the most allowed), and a stall is not made up in a burst. `snapshot_lead`:
    snapshots are asked for further ahead when they have been coming late."""
    from app.engine.islands import next_frame_at, render_spacing, snapshot_lead
    from app.settings import LIMITS

    interval, share, most = LIMITS.frame_interval_s, LIMITS.render_share, LIMITS.max_render_share
    floor = 1.0 / LIMITS.min_updates_per_s
    assert interval < floor and share < most
    cheap = 0.2 * share * interval  # CPU seconds of a frame under the share at the interval
    assert next_frame_at(10.0, 10.0, cheap) == pytest.approx(10.0 + interval)
    kept = 0.5 * (share + most) * floor  # over the share at the floor, under the most allowed: the floor holds
    assert next_frame_at(10.0, 10.0, kept) == pytest.approx(10.0 + floor)
    assert share < kept / render_spacing(kept) <= most
    dear = 3.0 * most * floor  # too dear for the floor: the most allowed share of a core, no more
    assert next_frame_at(10.0, 10.0, dear) == pytest.approx(10.0 + dear / most)
    costs = np.linspace(0.0, 2 * dear, 200)  # the spacing grows with the cost: a dearer frame never comes sooner
    assert np.all(np.diff([render_spacing(c) for c in costs]) >= 0)

    def starts(cost: float, late: float) -> np.ndarray:  # each frame starts `late` seconds after it was due
        due, out = 0.0, []
        for _ in range(50):
            out.append(due + late)
            due = next_frame_at(due, due + late, cost)
        return np.asarray(out)

    np.testing.assert_allclose(np.diff(starts(cheap, 0.4 * interval)), interval)  # the cadence holds
    gaps = np.diff(starts(dear, 0.1))
    assert np.all(gaps >= dear / most - 1e-9) and dear / gaps.mean() <= most  # never over the most allowed share
    stalled = 10 * interval  # a stall: the next frame comes half an interval after the late one, not at once
    assert next_frame_at(0.0, stalled, cheap) == pytest.approx(stalled + interval / 2)
    assert snapshot_lead(20.0, 0.0) == pytest.approx(0.1)  # two steps
    assert snapshot_lead(20.0, 0.3) == pytest.approx(0.375)  # or as long as snapshots have been taking, and a margin
    assert snapshot_lead(0.0, 0.0) == pytest.approx(0.1)


def test_training_yields_where_frames_are_dear_and_to_a_busy_server(monkeypatch):
    """A run's training process: as forked at grids with cheap frames, a little nicer where frames are dear (so the
    niced server gets the CPU its floor of updates needs), as nice as the server while it streams to a class."""
    from apm.env import server_niceness
    from app.engine.islands import BUSY_STREAMS, training_niceness
    from app.settings import LIMITS

    dear = LIMITS.dear_frame_locations
    assert training_niceness(16 * 16, 0) == 0
    assert 0 < training_niceness(32 * 32, 0) == min(LIMITS.dear_frame_niceness, server_niceness()) <= server_niceness()
    assert training_niceness(dear - 1, 1) == 0 and training_niceness(dear, 1) == training_niceness(32 * 32, 0)
    for locations in (16 * 16, 32 * 32):
        assert training_niceness(locations, BUSY_STREAMS) == server_niceness()
    monkeypatch.setenv("APM_SERVER_NICENESS", "0")  # a server that does not yield: training never yields to it
    assert training_niceness(32 * 32, 0) == 0
