"""The Interpolation tab's handlers, called directly (no server, no browser), outputs read by element id.

Runs are a few steps of an untrained teacher (APM_RANDOM_WEIGHTS=1, set in conftest) on two example images.
"""

from __future__ import annotations

import re
import threading
import time
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from app.controls import WALK_MAX_FRAMES
from app.plots import figure_dict, to_uint8
from app.tabs import walk as W
from app.testing.harness import Req, by_id, example, file_payload, is_error, plain, walk
from app.widgets import STORE, WALK_PAIRS

STEPS, FRAMES = 12, 5
ALPHA = re.compile(r"alpha (\d\.\d\d) · frame (\d+) / (\d+)")


def args(a="face", b="car", steps=STEPS, frames=FRAMES, teacher="dinov2", layer=None, projection="pca"):
    """The inputs of `train`, as the page sends them."""
    pay = lambda x: None if x is None else file_payload(example(x) if isinstance(x, str) else x)  # noqa: E731
    return (pay(a), pay(b), teacher, layer, True, steps, frames, projection)


def train(request, **kwargs) -> list[dict]:
    tab = walk()
    tab.begin(request=request)
    return [by_id(out) for out in tab.train(*args(**kwargs), request=request)]


def is_image(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3


def alpha_of(status) -> tuple[float, int, int]:
    match = ALPHA.search(plain(status))
    assert match, f"the status does not read 'alpha a · frame k / F': {plain(status)}"
    return float(match[1]), int(match[2]), int(match[3])


def error_only(out: dict, *words: str) -> str:
    assert set(out) == {"walk-status"} and is_error(out["walk-status"]), out
    line = plain(out["walk-status"])
    assert "Traceback" not in line and len(line) < 400 and "/tmp/" not in line, line
    for word in words:
        assert word.lower() in line.lower(), line
    return line


@pytest.fixture(scope="module")
def trained():
    """One finished walk, every output kept: (request, outputs, walk)."""
    request = Req("walk-trained")
    outputs = train(request)
    yield request, outputs, STORE.peek(request.session_hash).walk
    STORE.drop(request.session_hash)


def test_training_streams_progress_then_the_walk(trained):
    _, outputs, result = trained
    assert result is not None
    first, *live, decoding, final = outputs
    assert first["walk-rgb"] is None and first["walk-islands"] is None  # the previous walk's panels are cleared
    # a run submitted right after another test's waits in line first (a burst is gathered for a second): its place
    # comes before any step, and is all such an update carries
    waiting = [out for out in live if plain(out["walk-status"]).startswith("waiting for a free slot")]
    assert all(set(out) == {"walk-status"} for out in waiting) and live[:len(waiting)] == waiting
    live = live[len(waiting):]
    steps = [int(m[1]) for out in live if (m := re.search(r"step (\d+) / 12", plain(out["walk-status"])))]
    assert steps and steps == sorted(steps) and len(steps) == len(live)
    for out in live:
        assert [t["name"] for t in figure_dict(out["walk-loss"])["data"]] == ["feature loss", "RGB loss"]
        if "walk-rgb-a" in out:
            assert is_image(out["walk-rgb-a"]) and out["walk-rgb-a"].shape == out["walk-rgb-b"].shape
        assert "walk-rgb" not in out  # the walk panels wait for the end of training
    assert "decoding the walk" in plain(decoding["walk-status"])
    line = plain(final["walk-status"])
    assert line.startswith("trained") and "12 steps" in line, line
    assert figure_dict(final["walk-loss"])["data"][0]["x"] == list(range(1, STEPS + 1))
    assert all(is_image(final[k]) for k in ("walk-rgb-a", "walk-rgb-b", "walk-rgb", "walk-islands"))
    h, w = result.rgb.shape[1:3]
    grey, current = figure_dict(final["walk-scatter"])["data"]
    assert len(grey["x"]) == FRAMES * h * w and len(current["x"]) == h * w
    assert final["walk-alpha"]["value"] == 0 and final["walk-alpha"]["maximum"] == FRAMES - 1


def test_the_walk_shapes_and_endpoints(trained):
    request, outputs, result = trained
    F, h, w, d = result.features.shape
    assert F == FRAMES and (h, w) == (16, 16) and d == 384
    np.testing.assert_allclose(result.alphas, np.linspace(0, 1, FRAMES))
    assert result.rgb.shape == (F, h, w, 3) and result.own_rgb.shape == (2, h, w, 3)
    assert result.path.images.shape == (F, h, w, 3) and result.path.embedding.shape[:2] == (F, h * w)
    assert result.endpoint_error < 1e-5
    np.testing.assert_array_equal(outputs[-1]["walk-rgb"], outputs[-1]["walk-rgb-a"])  # alpha 0 is A's own
    last = by_id(walk().show_alpha(FRAMES - 1, request=request))
    np.testing.assert_array_equal(last["walk-rgb"], outputs[-1]["walk-rgb-b"])  # alpha 1 is B's own
    assert np.abs(result.own_rgb[0] - result.own_rgb[1]).mean() > 0.01  # the walk goes somewhere


def test_intermediate_frames_lie_between_the_endpoints(trained):
    _, _, result = trained
    rgb = result.rgb.astype(np.float64)
    to_a = [np.abs(frame - rgb[0]).mean() for frame in rgb]
    to_b = [np.abs(frame - rgb[-1]).mean() for frame in rgb]
    assert all(x < y for x, y in pairwise(to_a)) and all(x > y for x, y in pairwise(to_b))
    span = np.abs(rgb[-1] - rgb[0]).mean()
    assert max(to_a) <= span + 1e-6 and max(to_b) <= span + 1e-6


def test_the_slider_shows_frame_k(trained):
    request, _, result = trained
    tab = walk()
    for k in (0, 2, FRAMES - 1):
        out = by_id(tab.show_alpha(k, request=request))
        alpha, frame, total = alpha_of(out["walk-status"])
        assert (frame, total) == (k + 1, FRAMES) and alpha == pytest.approx(result.alphas[k], abs=0.005)
        np.testing.assert_array_equal(out["walk-rgb"], to_uint8(result.rgb[k]))
        np.testing.assert_array_equal(out["walk-islands"], to_uint8(result.path.images[k]))
        assert out["walk-alpha"] == k
    assert alpha_of(by_id(tab.show_alpha(99, request=request))["walk-status"])[1] == FRAMES  # clamped
    assert alpha_of(by_id(tab.show_alpha(-3, request=request))["walk-status"])[1] == 1


def test_play_once_goes_there_and_back(trained, monkeypatch):
    request, _, _ = trained
    monkeypatch.setattr(W, "PLAY_INTERVAL_S", 0.0)
    frames = [alpha_of(by_id(out)["walk-status"])[1] - 1 for out in walk().play(0, False, request=request)]
    assert frames == [*range(FRAMES), *range(FRAMES - 2, 0, -1), 0]  # forward, back, and rest at A


def test_play_loops_until_paused_and_resumes_where_it_was(trained, monkeypatch):
    request, _, _ = trained
    monkeypatch.setattr(W, "PLAY_INTERVAL_S", 0.01)
    tab = walk()
    seen: list[int] = []
    player = tab.play(2, True, request=request)

    def consume():
        for out in player:
            seen.append(alpha_of(by_id(out)["walk-status"])[1] - 1)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.6)
    assert thread.is_alive()  # looping: it has not stopped by itself
    tab.pause(request=request)
    thread.join(5)
    assert not thread.is_alive() and seen[0] == 2 and len(seen) > 2 * FRAMES  # more than one cycle
    cycle = [*range(FRAMES), *range(FRAMES - 2, 0, -1)]
    start = cycle.index(2)
    assert seen[: len(cycle)] == cycle[start:] + cycle[:start]


def test_export_writes_a_gif_and_an_npz(trained):
    request, _, result = trained
    out = by_id(walk().export(request=request))
    assert not is_error(out["walk-status"]) and "exported 5 frames" in plain(out["walk-status"])
    gif, npz = out["walk-files"]["value"]
    with np.load(npz) as data:
        assert data["alpha"].shape == (FRAMES,) and data["features"].shape == result.features.shape
        np.testing.assert_allclose(data["rgb"], result.rgb)
    with Image.open(gif) as image:
        h, w = result.rgb.shape[1:3]
        assert image.n_frames == 2 * FRAMES - 2 and image.size == ((2 * w + 1) * 12, h * 12)


def test_example_pairs_fill_both_images():
    class Select:
        index = 1

    out = by_id(walk().on_pair(Select()))
    a, b = WALK_PAIRS[1]
    assert out["walk-image-a"].endswith(f"{a}.png") and out["walk-image-b"].endswith(f"{b}.png")


def test_before_training_every_view_says_so():
    request = Req("walk-untrained")
    tab = walk()
    error_only(by_id(tab.show_alpha(3, request=request)), "train on two images first")
    error_only(by_id(next(tab.play(0, True, request=request))), "train on two images first")
    out = by_id(tab.export(request=request))
    assert is_error(out["walk-status"]) and out["walk-files"]["value"] is None
    STORE.drop(request.session_hash)


def test_stop_ends_training_early_and_still_gives_a_walk():
    request = Req("walk-stop")
    tab = walk()
    tab.begin(request=request)
    gen = tab.train(*args(steps=2000, frames=3), request=request)
    next(gen)
    next(gen)  # training has started
    tab.stop(request=request)
    outputs = [by_id(out) for out in gen]
    line = plain(outputs[-1]["walk-status"])
    assert "stopped by you" in line and "trained" in line, line
    assert int(re.search(r"(\d+) steps", line)[1]) < 2000
    result = STORE.peek(request.session_hash).walk
    assert result is not None and result.rgb.shape[0] == 3 and result.endpoint_error < 1e-5
    STORE.drop(request.session_hash)


def test_bad_inputs_give_an_error_line_and_the_next_call_works(corpus):
    request = Req("walk-bad")
    error_only(train(request, b=None)[-1], "two images")
    error_only(train(request, b=corpus["truncated_png"])[-1], "truncated.png")
    error_only(train(request, frames=WALK_MAX_FRAMES + 1)[-1], "frames")
    error_only(train(request, steps=0)[-1], "steps")
    error_only(train(request, steps="many")[-1], "steps")
    error_only(train(request, teacher="file")[-1], "teacher")
    assert STORE.peek(request.session_hash).walk is None
    assert plain(train(request, steps=2, frames=2)[-1]["walk-status"]).startswith("trained")
    STORE.drop(request.session_hash)


def test_a_new_training_replaces_the_walk_and_ends_play(monkeypatch):
    request = Req("walk-replace")
    train(request, steps=2, frames=3)
    old = STORE.peek(request.session_hash).walk
    monkeypatch.setattr(W, "PLAY_INTERVAL_S", 0.0)
    player = walk().play(0, True, request=request)
    next(player)
    outputs = train(request, steps=2, frames=4)
    assert list(player) == []  # Play of the old walk stops
    new = STORE.peek(request.session_hash).walk
    assert new is not old and new.rgb.shape[0] == 4 and outputs[0]["walk-rgb"] is None
    STORE.drop(request.session_hash)
