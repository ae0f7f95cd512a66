"""The app's event handlers, called directly (no server, no browser).

`app.handlers.run` is a generator of the 14 panel outputs; `stop`, `scrub`, `export` and `unload` act on the
session named by the request's `session_hash`. Runs are a few dozen steps of an untrained teacher
(APM_RANDOM_WEIGHTS=1, set in conftest) so the whole file stays light on a shared 2-core machine.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import handlers as H
from app.state import MAX_FRAMES
from tests.corpus.make_corpus import PICKLE_MARKER

DINO = "DINOv2 ViT-S/14"
OWN = "Your own features (.npy / .pt)"
N_OUTPUTS = 14
# "step 120 / 300 · 64 steps/s · feature loss 3.1e-04 · 4.2 s · ..."
STATUS_RE = re.compile(
    r"step (?P<step>\d+) / (?P<total>\d+) · (?P<rate>\d+) steps/s · feature loss (?P<loss>\d\.\de[+-]\d+) · "
    r"(?P<secs>\d+\.\d) s"
)
assert DINO in H.TEACHERS and OWN in H.TEACHERS


class Req:
    """Stands in for gr.Request: the handlers only read `session_hash`."""

    def __init__(self, session_hash: str):
        self.session_hash = session_hash


def run_args(image, teacher=DINO, features=None, steps=20, update_every=5, projection="PCA (3 components)",
             target="Dense grid", layer=None, labels=""):
    """The 13 inputs of `H.run`, in the order the page sends them."""
    return (None if image is None else str(image), teacher, layer, True, None if features is None else str(features),
            target, "cpu", steps, 1e-3, 0, projection, update_every, labels)


def run_all(request, *args, **kwargs) -> list[tuple]:
    return list(H.run(*run_args(*args, **kwargs), request=request))


def first_output(request, *args, **kwargs) -> tuple:
    gen = H.run(*run_args(*args, **kwargs), request=request)
    try:
        return next(gen)
    finally:
        gen.close()


def status_of(outputs: tuple) -> str:
    status = outputs[0]
    assert isinstance(status, str) and "apm-status" in status, status
    return status


def parse_status(outputs: tuple) -> dict:
    status = status_of(outputs)
    assert "apm-error" not in status, status
    match = STATUS_RE.search(status)
    assert match, f"status does not read like 'step N / T · R steps/s · feature loss L · S s': {status}"
    return {"step": int(match["step"]), "total": int(match["total"]), "rate": int(match["rate"]),
            "loss": float(match["loss"]), "secs": float(match["secs"]), "text": status}


def fig_json(fig) -> dict:
    """{'data': [trace dicts], 'layout': {...}} of a panel figure, whether a plotly Figure or Gradio PlotData."""
    if hasattr(fig, "to_plotly_json"):
        return fig.to_plotly_json()
    if hasattr(fig, "plot"):  # gradio.components.plot.PlotData: JSON text
        assert getattr(fig, "type", "plotly") == "plotly"
        return json.loads(fig.plot) if isinstance(fig.plot, str) else fig.plot
    assert isinstance(fig, dict) and "data" in fig, f"not a figure: {type(fig).__name__}"
    return fig


def traces(fig) -> list[dict]:
    return list(fig_json(fig)["data"])


def title(fig) -> str:
    t = fig_json(fig)["layout"].get("title", "")
    return t.get("text", "") if isinstance(t, dict) else str(t)


def n_points(fig) -> int:
    data = traces(fig)
    assert data, "the islands figure has no trace"
    return len(data[0]["x"])


def assert_error(outputs: list[tuple], *words: str) -> str:
    """One output whose status is an error line naming the problem; every other panel left as it was."""
    assert len(outputs) == 1, f"an error should end the run at once, got {len(outputs)} outputs"
    out = outputs[0]
    assert len(out) == N_OUTPUTS
    status = status_of(out)
    assert "apm-error" in status, status
    text = re.sub(r"<[^>]+>", "", status).strip()
    assert "Traceback" not in text and len(text) < 400, text
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} not in the error line {text!r}"
    for value in out[1:]:  # gr.skip(): an update that changes nothing
        assert isinstance(value, dict) and value.get("__type__") == "update" and set(value) == {"__type__"}, value
    return text


def example_image() -> str:
    return H.example_paths()[0]


# one finished run, shared by the read-only tests below


@pytest.fixture(scope="module")
def finished():
    """A 20-step t-SNE 2D run, every output kept: (request, outputs, session)."""
    request = Req("handlers-finished")
    outputs = run_all(request, example_image(), projection="t-SNE 2D", steps=20, update_every=5)
    yield request, outputs, H.STORE.peek(request.session_hash)
    H.unload(request)


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and set(value) == {"__type__"}


def test_run_streams_every_panel(finished):
    _, outputs, session = finished
    record = session.run
    h, w = record.grid_shape
    frames = [out for out in outputs if not is_skip(out[1])]  # updates that carry a new islands frame
    ticks = [out for out in outputs if is_skip(out[1])]  # status-only updates between frames
    assert len(frames) >= 2
    assert len(frames) <= 20 // 5 + 1  # at most one frame per recorded step (record_every = 5)
    steps = []
    for k, out in enumerate(frames):
        assert isinstance(out, tuple) and len(out) == N_OUTPUTS
        (_status, islands, input_small, islands_image, teacher_islands, rgb, loss, fidelity, unfolded, folded, conv,
         clip_labels, apm_labels, timeline) = out
        parsed = parse_status(out)
        assert parsed["total"] == 20 and parsed["rate"] >= 0 and parsed["loss"] > 0 and parsed["secs"] >= 0
        steps.append(parsed["step"])
        assert n_points(islands) == h * w
        assert traces(islands)[0]["type"] == "scattergl"  # t-SNE 2D draws with WebGL
        assert f"step {parsed['step']}" in title(islands)
        last = k == len(frames) - 1  # the last frame carries every panel; others leave unchanged ones as they are
        if k == 0:  # the first frame is light, so the islands show up at once; heavy panels follow
            assert all(is_skip(v) for v in (loss, fidelity, unfolded, folded, conv, clip_labels, apm_labels))
        if k > 1 and not last:  # static panels are not re-sent mid-run
            assert all(is_skip(v) for v in (input_small, teacher_islands, folded, clip_labels))
        for image in (islands_image, rgb, input_small, teacher_islands):  # grid resolution, enlarged by the browser
            if not is_skip(image):
                assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (h, w, 3)
        assert not is_skip(islands_image) and not is_skip(rgb)
        if k == 1 or last:
            assert isinstance(conv, np.ndarray) and conv.dtype == np.uint8 and conv.ndim == 3
            assert isinstance(folded, str) and "Folded state" in folded and f"{h} x {w} queries" in folded
            assert len(traces(unfolded)) == 2
        if k > 0:
            assert len(traces(loss)) == 4
            assert traces(fidelity)[0]["type"] == "heatmap" and np.asarray(traces(fidelity)[0]["z"]).shape == (h, w)
            assert (clip_labels is None or is_skip(clip_labels)) and apm_labels is None  # DINOv2 has no text tower
        assert timeline["__type__"] == "update" and timeline["maximum"] >= 1
    for out in ticks:  # the step counter keeps moving between frames
        assert parse_status(out)["total"] == 20 and all(is_skip(v) for v in out[1:])
    assert steps == sorted(steps) and steps[0] >= 1 and steps[-1] == 20
    last = outputs[-1]
    assert status_of(last).split("'>", 1)[1].startswith("done · step 20 / 20")
    assert len(traces(last[6])[0]["x"]) == 20  # the loss curve has every step
    assert last[-1]["value"] == len(record.frames) - 1
    assert record.status == "done" and len(record.frames) == len(frames) <= MAX_FRAMES
    assert [f.step for f in record.frames] == steps
    assert "DINOv2" in status_of(last) and "untrained" in status_of(last)


def test_status_line_reads_like_the_spec(finished):
    outputs = finished[1]
    text = re.sub(r"<[^>]+>", "", status_of(outputs[1]))
    assert re.match(r"step \d+ / 20 · \d+ steps/s · feature loss \d\.\de[+-]\d\d · \d+\.\d s · \d+ islands", text), text


def test_scrub_shows_the_chosen_frame(finished):
    request, _, session = finished
    frames = session.run.frames
    first = H.scrub(0, request)
    assert len(first) == N_OUTPUTS and parse_status(first)["step"] == frames[0].step
    assert first[-1]["value"] == 0 and n_points(first[1]) == int(np.prod(session.run.grid_shape))
    assert f"step {frames[0].step}" in title(first[1])
    assert session.run.teacher_label in status_of(first)  # the teacher stays named while scrubbing
    np.testing.assert_array_equal(first[5], H.plots.to_uint8(frames[0].rgb))
    middle = H.scrub(1, request)
    assert parse_status(middle)["step"] == frames[1].step != frames[0].step
    beyond = H.scrub(10_000, request)  # clamped to the last frame
    assert parse_status(beyond)["step"] == frames[-1].step and beyond[-1]["value"] == len(frames) - 1
    assert session.run.status == "done"  # scrubbing changes nothing recorded


def test_scrub_before_any_run():
    out = H.scrub(3, Req("handlers-scrub-empty"))
    assert len(out) == N_OUTPUTS and "nothing recorded yet" in status_of(out)
    H.unload(Req("handlers-scrub-empty"))


def test_export_writes_files_that_open(finished):
    request, _, session = finished
    update, status = H.export(request)
    assert "apm-error" not in status and "exported" in status and update["visible"] is True
    paths = [Path(f) for f in update["value"]]
    assert [p.name for p in paths] == ["islands.gif", "snapshots.npz", "panels.png"]
    assert all(p.is_file() and p.stat().st_size > 0 and session.folder in p.parents for p in paths)
    n = len(session.run.frames)
    with Image.open(paths[0]) as gif:
        assert gif.format == "GIF" and n <= gif.n_frames <= 2 * n  # forward, then back (a ping-pong loop)
        gif.seek(gif.n_frames - 1)
        gif.load()
    with np.load(paths[1], allow_pickle=False) as npz:
        h, w = session.run.grid_shape
        assert npz["step"].tolist() == [f.step for f in session.run.frames]
        assert npz["features"].shape[:3] == (n, h, w) and npz["rgb"].shape == (n, h, w, 3)
        assert len(npz["curve_feat_loss"]) == 20 and np.isfinite(npz["curve_feat_loss"]).all()
    with Image.open(paths[2]) as png:
        png.load()
        assert png.format == "PNG" and png.width > png.height > 200


def test_export_before_any_run():
    update, status = H.export(Req("handlers-export-empty"))
    assert update["value"] is None and update["visible"] is False
    assert "apm-error" in status and "press Run first" in status
    H.unload(Req("handlers-export-empty"))


# stopping, and sessions that do not see each other


def _consume_in_thread(gen):
    outputs: list[tuple] = []
    first = threading.Event()
    errors: list[BaseException] = []

    def loop():
        try:
            for out in gen:
                outputs.append(out)
                first.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            first.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread, outputs, first, errors


def test_stop_ends_a_running_generator_and_keeps_frames():
    request = Req("handlers-stop")
    gen = H.run(*run_args(example_image(), steps=H.MAX_STEPS, update_every=5), request=request)
    thread, outputs, first, errors = _consume_in_thread(gen)
    assert first.wait(60), "no first frame within 60 s"
    assert not errors and outputs and "apm-error" not in status_of(outputs[0])
    pressed = time.perf_counter()
    H.stop(request)
    thread.join(10)
    latency = time.perf_counter() - pressed
    assert not thread.is_alive(), "the run kept going after Stop"
    print(f"stop latency {latency:.2f} s")
    assert latency < 5.0  # about a second on an idle machine; generous for shared CI cores
    assert not errors, errors
    record = H.STORE.peek("handlers-stop").run
    assert record.status == "stopped" and record.frames
    last = parse_status(outputs[-1])
    assert last["text"].split("'>", 1)[1].startswith("stopped · ") and "stopped by you" in last["text"]
    assert last["step"] < H.MAX_STEPS and record.curve_step[-1] < H.MAX_STEPS
    assert len(record.curve_step) == record.curve_step[-1]  # nothing ran after the stop
    # the recorded frames stay viewable and exportable
    assert parse_status(H.scrub(0, request))["step"] == record.frames[0].step
    update, status = H.export(request)
    assert update["value"] and "apm-error" not in status
    # and the next run in this session works
    again = run_all(request, example_image(), steps=10, update_every=5)
    assert parse_status(again[-1])["step"] == 10 and H.STORE.peek("handlers-stop").run.status == "done"
    H.unload(request)


def test_a_new_run_stops_the_previous_one_in_the_same_session():
    request = Req("handlers-rerun")
    old = H.run(*run_args(example_image(), steps=H.MAX_STEPS), request=request)
    assert "apm-error" not in status_of(next(old))
    new = H.run(*run_args(example_image(), steps=10, update_every=5), request=request)
    assert parse_status(next(new))["total"] == 10  # starting the new run bumps the session's run id
    rest = list(old)
    assert rest and "stopped" in status_of(rest[-1])
    assert parse_status(list(new)[-1])["step"] == 10
    H.unload(request)


def test_two_sessions_do_not_see_each_other(corpus):
    a, b = Req("handlers-session-a"), Req("handlers-session-b")
    gen_a = H.run(*run_args(example_image(), steps=H.MAX_STEPS, update_every=5), request=a)
    gen_b = H.run(*run_args(corpus["plain_jpeg"], steps=10, update_every=5), request=b)
    assert "apm-error" not in status_of(next(gen_a))
    assert "apm-error" not in status_of(next(gen_b))
    H.stop(a)  # stops A only
    rest_a = list(gen_a)
    assert "stopped" in status_of(rest_a[-1])
    rest_b = list(gen_b)
    assert status_of(rest_b[-1]).split("'>", 1)[1].startswith("done · step 10 / 10")
    sa, sb = H.STORE.peek(a.session_hash), H.STORE.peek(b.session_hash)
    assert sa is not sb and sa.run is not sb.run and sa.folder != sb.folder
    assert sa.run.status == "stopped" and sb.run.status == "done"
    assert not np.array_equal(sa.run.input_small, sb.run.input_small)  # different images
    assert "stopped" in status_of(H.scrub(0, a)) and "done" in status_of(H.scrub(0, b))
    files_b = H.export(b)[0]["value"]
    assert all(sb.folder in Path(f).parents for f in files_b)
    H.unload(a)  # closing tab A drops A's session and files, not B's
    assert H.STORE.peek(a.session_hash) is None and not sa.folder.exists()
    assert H.STORE.peek(b.session_hash) is sb and all(Path(f).is_file() for f in files_b)
    H.unload(b)
    assert not sb.folder.exists()


# bad inputs: one clear line in the status, and the next run still works

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


def _next_run_works(request, corpus) -> None:
    """After an error the same session still trains: the first frame of a small run comes through."""
    out = first_output(request, corpus["plain_jpeg"], OWN, corpus["feat_good_npy"], steps=10)
    assert parse_status(out)["step"] >= 1 and "your features (16, 16, 8)" in status_of(out)


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_gives_a_clear_error(name, corpus):
    request = Req("handlers-bad-inputs")
    text = assert_error(run_all(request, corpus[name]), *BAD_IMAGES[name])
    assert corpus[name].name in text  # the message names the file


@pytest.mark.parametrize("name", list(BAD_FEATURES))
def test_bad_feature_array_gives_a_clear_error(name, corpus, corpus_dir):
    request = Req("handlers-bad-inputs")
    assert_error(run_all(request, corpus["plain_jpeg"], OWN, corpus[name]), *BAD_FEATURES[name])
    assert not (corpus_dir / PICKLE_MARKER).exists(), "a hostile pickle was loaded"


def test_missing_inputs_give_a_clear_error(corpus):
    request = Req("handlers-bad-inputs")
    assert_error(run_all(request, None), "upload an image")
    assert_error(run_all(request, corpus["plain_jpeg"], OWN, None), "feature array")
    assert_error(run_all(request, corpus["plain_jpeg"], "AlexNet"), "unknown teacher")
    assert_error(run_all(request, corpus["plain_jpeg"], steps=H.MAX_STEPS + 10), "steps must be between")


def test_the_next_run_works_after_every_error(corpus):
    """Every bad input in one session, then a good run: nothing is left broken behind an error."""
    request = Req("handlers-after-errors")
    for name in BAD_IMAGES:
        assert "apm-error" in status_of(first_output(request, corpus[name]))
    for name in BAD_FEATURES:
        assert "apm-error" in status_of(first_output(request, corpus["plain_jpeg"], OWN, corpus[name]))
    _next_run_works(request, corpus)
    outputs = run_all(request, corpus["plain_jpeg"], steps=10, update_every=5)
    assert parse_status(outputs[-1])["step"] == 10 and H.STORE.peek(request.session_hash).run.status == "done"
    H.unload(request)


@pytest.mark.parametrize("name", ["cmyk_jpeg", "gray16_png", "palette_alpha_png", "animated_gif", "rgba_png",
                                  "la_trns_png", "exif_rotated_jpeg"])
def test_unusual_images_work(name, corpus):
    request = Req(f"handlers-unusual-{name}")
    out = first_output(request, corpus[name], steps=10)
    assert parse_status(out)["step"] >= 1
    record = H.STORE.peek(request.session_hash).run
    assert n_points(out[1]) == int(np.prod(record.grid_shape))
    assert out[2].dtype == np.uint8 and out[2].shape[2] == 3  # decoded to 8-bit RGB
    H.unload(request)


def test_own_features_run(corpus):
    request = Req("handlers-own-features")
    outputs = run_all(request, corpus["plain_jpeg"], OWN, corpus["feat_good_pt"], steps=10, update_every=5)
    last = parse_status(outputs[-1])
    assert last["step"] == 10 and "your features (16, 16, 8)" in last["text"]
    record = H.STORE.peek(request.session_hash).run
    assert record.teacher_islands is not None and outputs[-1][4] is not None
    H.unload(request)


def test_teacher_change_updates_the_controls():
    layer, features, labels, target, *rest = H.on_teacher_change(OWN, "Dense grid")
    assert features["visible"] is True and labels["visible"] is False and layer["interactive"] is False
    assert all(u.get("visible") is False for u in rest)  # the CLIP label panels hide for a non-CLIP teacher
    layer, features, labels, target, *rest = H.on_teacher_change(DINO, "Global token only")
    assert features["visible"] is False and layer["interactive"] is True and target["value"] == "Global token only"
    assert layer["maximum"] == 11 and layer["value"] == 11


def test_stop_while_queued_ends_the_run_as_it_starts():
    request = Req("handlers-stop-queued")
    session = H.session_for(request)
    session.queue_run()  # the page pressed Run: the run waits in the queue...
    H.stop(request)  # ...and Stop is pressed before it starts
    outputs = list(H.run(example_image(), "DINOv2 ViT-S/14", 11, True, None, "Dense grid", "cpu", 20, 1e-3, 0,
                         "PCA (3 components)", 5, "", request))
    assert len(outputs) == 1 and "stopped before it started" in status_of(outputs[0])
    assert session.run is None  # nothing trained
    session.queue_run()  # pressing Run again trains as usual
    outputs = list(H.run(example_image(), "DINOv2 ViT-S/14", 11, True, None, "Dense grid", "cpu", 10, 1e-3, 0,
                         "PCA (3 components)", 5, "", request))
    assert parse_status(outputs[-1])["step"] == 10 and session.run.status == "done"
    H.unload(request)
