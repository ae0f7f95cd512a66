"""The interpolation tab's handlers, called directly (no server, no browser).

`app.interpolation.train_walk` is a generator of the tab's 8 outputs (status, loss figure, the two
reconstructions, decoded RGB at alpha, islands at alpha, islands scatter, alpha slider); `show_alpha` and
`play` give the 5 frame outputs (status, RGB, islands, scatter, slider); `export_walk` gives (files, status).
Runs are a few steps of an untrained teacher (APM_RANDOM_WEIGHTS=1, set in conftest) on two example images,
so the whole file stays light on a shared 2-core machine.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import handlers as H
from app import interpolation as I
from app.plots import figure_dict, to_uint8

EXAMPLES = {Path(p).stem: p for p in H.example_paths()}
A, B = EXAMPLES["face"], EXAMPLES["car"]
STEPS, FRAMES = 12, 5  # recorded steps: 1, 10 and 12
ALPHA_RE = re.compile(r"alpha (\d\.\d\d) · frame (\d+) / (\d+)")


class Req:
    """Stands in for gr.Request: the handlers only read `session_hash`."""

    def __init__(self, session_hash: str):
        self.session_hash = session_hash


def walk_args(a=A, b=B, steps=STEPS, frames=FRAMES, teacher=I.WALK_TEACHERS[0], layer=None, projection="PCA (fast)"):
    """The 8 inputs of `train_walk`, in the order the page sends them."""
    return (None if a is None else str(a), None if b is None else str(b), teacher, layer, True, steps, frames, projection)


def train(request, **kwargs) -> list[tuple]:
    return list(I.train_walk(*walk_args(**kwargs), request=request))


def text(status: str) -> str:
    assert isinstance(status, str) and "apm-status" in status, status
    return re.sub(r"<[^>]+>", "", status).strip()


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and set(value) == {"__type__"}


def is_image(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3


def alpha_of(status: str) -> tuple[float, int, int]:
    match = ALPHA_RE.search(text(status))
    assert match, f"the status does not read 'alpha a · frame k / F': {text(status)}"
    return float(match[1]), int(match[2]), int(match[3])


def assert_error(outputs, n: int, *words: str) -> str:
    """A single output whose status is an error line naming the problem; every other output left as it was."""
    outputs = list(outputs) if not isinstance(outputs, tuple) else [outputs]
    assert len(outputs) == 1, f"an error should end the call at once, got {len(outputs)} outputs"
    out = outputs[0]
    assert len(out) == n, f"{len(out)} values for {n} outputs"
    assert "apm-error" in out[0], out[0]
    line = text(out[0])
    assert "Traceback" not in line and len(line) < 400, line
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in the error line {line!r}"
    assert all(is_skip(v) for v in out[1:]), out[1:]
    return line


@pytest.fixture(scope="module")
def trained():
    """One finished walk, every output kept: (request, outputs, walk)."""
    request = Req("walk-trained")
    outputs = train(request)
    yield request, outputs, H.STORE.peek(request.session_hash).walk
    H.unload(request)


def test_training_streams_progress_then_the_walk(trained):
    _, outputs, walk = trained
    assert all(len(out) == I.N_OUTPUTS for out in outputs)
    assert walk is not None
    first, *live, decoding, final = outputs
    # the first output clears the previous walk's panels
    assert "step 0 / 12" in text(first[0]) and first[4] is None and first[5] is None
    # live progress: the status counts steps; recorded steps bring the loss curves and both reconstructions
    steps = [int(m[1]) for out in live if (m := re.search(r"step (\d+) / 12", text(out[0])))]
    # (how many updates arrive depends on the machine's speed: frames are paced in time, at least the last comes)
    assert len(steps) == len(live) >= 1 and steps == sorted(steps) and steps[-1] == STEPS
    frames = [out for out in live if is_image(out[2])]
    assert len(frames) >= 1
    for out in frames:
        assert is_image(out[3]) and out[2].shape == out[3].shape
        loss = figure_dict(out[1])
        assert [t["name"] for t in loss["data"]] == ["feature loss", "RGB loss"] and loss["data"][0]["x"]
        assert all(is_skip(v) for v in out[4:])  # the walk panels wait for the end of training
    assert re.search(r"feature loss \d\.\de[+-]\d+ · RGB loss", text(frames[-1][0]))
    assert "decoding 5 frames" in text(decoding[0])
    # the final output: the walk's panels at alpha = 0
    line = text(final[0])
    assert line.startswith("trained") and "12 steps" in line, line
    loss = figure_dict(final[1])
    assert loss["data"][0]["x"] == list(range(1, STEPS + 1))
    assert all(is_image(v) for v in final[2:6])
    h, w = walk.rgb.shape[1:3]
    scatter = figure_dict(final[6])
    grey, current = scatter["data"]
    assert len(grey["x"]) == FRAMES * h * w and len(current["x"]) == h * w
    assert len(current["marker"]["color"]) == h * w
    assert final[7]["value"] == 0 and final[7]["maximum"] == FRAMES - 1


def test_the_walk_shapes(trained):
    _, _, walk = trained
    F, h, w, d = walk.features.shape
    assert F == FRAMES and (h, w) == (16, 16) and d == 384  # DINOv2 ViT-S/14: 16 x 16 patches of 384 features
    np.testing.assert_allclose(walk.alphas, np.linspace(0, 1, FRAMES))
    assert walk.alphas.shape == (F,) and walk.rgb.shape == (F, h, w, 3) and walk.own_rgb.shape == (2, h, w, 3)
    assert walk.path.images.shape == (F, h, w, 3) and walk.path.embedding.shape[:2] == (F, h * w)
    assert 0 <= walk.rgb.min() and walk.rgb.max() <= 1 and np.isfinite(walk.features).all()
    assert 0 <= walk.path.images.min() and walk.path.images.max() <= 1


def test_endpoints_reproduce_the_two_reconstructions(trained):
    request, outputs, walk = trained
    assert walk.endpoint_error < 1e-5
    np.testing.assert_allclose(walk.rgb[0], walk.own_rgb[0], atol=1e-5)
    np.testing.assert_allclose(walk.rgb[-1], walk.own_rgb[1], atol=1e-5)
    # on the page: the decoded panel at alpha 0 is the reconstruction of A, at alpha 1 that of B
    final = outputs[-1]
    np.testing.assert_array_equal(final[4], final[2])
    last = I.show_alpha(FRAMES - 1, request)
    np.testing.assert_array_equal(last[1], final[3])
    shown = re.search(r"endpoints match each image's own reconstruction to (\S+)$", text(last[0]))
    assert shown and float(shown[1]) < 1e-5, text(last[0])
    # the two reconstructions differ: the walk goes somewhere
    assert np.abs(walk.own_rgb[0] - walk.own_rgb[1]).mean() > 0.01


def test_intermediate_frames_lie_between_the_endpoints(trained):
    _, _, walk = trained
    rgb = walk.rgb.astype(np.float64)
    to_a = [np.abs(frame - rgb[0]).mean() for frame in rgb]
    to_b = [np.abs(frame - rgb[-1]).mean() for frame in rgb]
    assert all(x < y for x, y in pairwise(to_a)), to_a  # moving away from A
    assert all(x > y for x, y in pairwise(to_b)), to_b  # and towards B
    span = np.abs(rgb[-1] - rgb[0]).mean()
    assert max(to_a) <= span + 1e-6 and max(to_b) <= span + 1e-6  # never farther than the endpoints are apart
    # the mean colour of each frame lies (nearly) between the endpoints' mean colours
    means = rgb.mean(axis=(1, 2))  # (F, 3)
    lo, hi = np.minimum(means[0], means[-1]), np.maximum(means[0], means[-1])
    assert ((means >= lo - 0.02) & (means <= hi + 0.02)).all(), means


def test_the_slider_shows_frame_k(trained):
    request, _, walk = trained
    seen = []
    for k in (0, 2, FRAMES - 1):
        out = I.show_alpha(k, request)
        assert len(out) == I.N_FRAME_OUTPUTS
        alpha, frame, total = alpha_of(out[0])
        assert (frame, total) == (k + 1, FRAMES) and alpha == pytest.approx(walk.alphas[k], abs=0.005)
        np.testing.assert_array_equal(out[1], to_uint8(walk.rgb[k]))
        np.testing.assert_array_equal(out[2], to_uint8(walk.path.images[k]))
        current = figure_dict(out[3])["data"][1]
        assert current["marker"]["color"] == [f"rgb({r},{g},{b})" for r, g, b in
                                              (np.clip(walk.path.colours[k], 0, 1) * 255 + 0.5).astype(np.uint8).tolist()]
        assert out[4]["value"] == k and out[4]["maximum"] == FRAMES - 1
        seen.append(out[1])
    assert not np.array_equal(seen[0], seen[1])  # the frames differ along the walk
    # out of range and odd values are clamped, not errors
    assert alpha_of(I.show_alpha(99, request)[0])[1] == FRAMES
    assert alpha_of(I.show_alpha(-3, request)[0])[1] == 1
    assert alpha_of(I.show_alpha(2.4, request)[0])[1] == 3


def test_play_walks_forward_then_back(trained, monkeypatch):
    request, _, walk = trained
    monkeypatch.setattr(I, "PLAY_INTERVAL_S", 0.0)
    outputs = list(I.play(request))
    frames = [alpha_of(out[0])[1] - 1 for out in outputs]
    assert frames == [*range(FRAMES), *range(FRAMES - 2, -1, -1)]
    assert [out[4]["value"] for out in outputs] == frames
    for out, k in zip(outputs, frames):
        np.testing.assert_array_equal(out[1], to_uint8(walk.rgb[k]))


def test_export_writes_a_gif_and_an_npz(trained):
    request, _, walk = trained
    update, status = I.export_walk(request)
    assert "apm-error" not in status and "exported 5 frames" in text(status)
    assert update["visible"] is True
    gif, npz = update["value"]
    assert gif.endswith("interpolation.gif") and npz.endswith("interpolation.npz")
    h, w, d = walk.features.shape[1:]
    with np.load(npz) as data:
        assert data["alpha"].shape == (FRAMES,) and data["alpha"][0] == 0 and data["alpha"][-1] == 1
        assert data["rgb"].shape == (FRAMES, h, w, 3) and data["features"].shape == (FRAMES, h, w, d)
        assert data["islands"].shape == (FRAMES, h, w, 3)
        np.testing.assert_allclose(data["rgb"], walk.rgb)
    with Image.open(gif) as image:
        assert image.n_frames == 2 * FRAMES - 2  # A to B and back, as Play does
        assert image.size == ((2 * w + 1) * 12, h * 12)  # RGB | islands, 12 px a location


def test_before_training_every_view_says_so():
    request = Req("walk-untrained")
    assert_error(I.show_alpha(3, request), I.N_FRAME_OUTPUTS, "train on two images first")
    assert_error(I.play(request), I.N_FRAME_OUTPUTS, "train on two images first")
    update, status = I.export_walk(request)
    assert "apm-error" in status and "nothing to export" in text(status)
    assert update["value"] is None
    H.unload(request)


def test_stop_ends_training_early_and_still_gives_a_walk():
    request = Req("walk-stop")
    gen = I.train_walk(*walk_args(steps=500, frames=3), request=request)
    outputs = [next(gen), next(gen)]  # the cleared panels, then the first step
    H.stop(request)
    outputs += list(gen)
    final = outputs[-1]
    line = text(final[0])
    assert "stopped by you" in line and "trained" in line, line
    steps = int(re.search(r"(\d+) steps", line)[1])
    assert steps < 20, line
    walk = H.STORE.peek(request.session_hash).walk
    assert walk is not None and walk.rgb.shape[0] == 3 and walk.endpoint_error < 1e-5
    assert is_image(final[4]) and final[7]["maximum"] == 2
    H.unload(request)


def test_bad_inputs_give_an_error_line_and_the_next_call_works(corpus):
    request = Req("walk-bad-inputs")
    assert_error(train(request, b=None), I.N_OUTPUTS, "two images")
    assert_error(train(request, a=None), I.N_OUTPUTS, "two images")
    assert_error(train(request, b=corpus["truncated_png"]), I.N_OUTPUTS, "truncated.png")
    assert_error(train(request, frames=I.MAX_FRAMES + 1), I.N_OUTPUTS, "frames", str(I.MAX_FRAMES))
    assert_error(train(request, frames=1), I.N_OUTPUTS, "frames")
    assert_error(train(request, steps=0), I.N_OUTPUTS, "steps")
    assert_error(train(request, steps=H.MAX_STEPS + 1), I.N_OUTPUTS, "steps")
    assert_error(train(request, steps="many"), I.N_OUTPUTS, "steps")
    assert_error(train(request, teacher="Your own features (.npy / .pt)"), I.N_OUTPUTS, "teacher")
    assert H.STORE.peek(request.session_hash).walk is None
    outputs = train(request, steps=2, frames=2)
    assert text(outputs[-1][0]).startswith("trained")
    assert alpha_of(I.show_alpha(1, request)[0])[1:] == (2, 2)
    H.unload(request)


def test_two_sessions_do_not_see_each_other(trained):
    request, _, walk = trained
    other = Req("walk-other")
    outputs = train(other, a=EXAMPLES["house"], b=EXAMPLES["snowman"], steps=2, frames=3)
    assert text(outputs[-1][0]).startswith("trained")
    mine, theirs = H.STORE.peek(request.session_hash), H.STORE.peek(other.session_hash)
    assert mine.walk is walk and theirs.walk is not walk and theirs.walk.rgb.shape[0] == 3
    assert alpha_of(I.show_alpha(1, request)[0])[2] == FRAMES
    assert alpha_of(I.show_alpha(1, other)[0])[2] == 3
    mine_files, _ = I.export_walk(request)
    their_files, _ = I.export_walk(other)
    assert not set(mine_files["value"]) & set(their_files["value"])
    assert all(str(mine.folder) in f for f in mine_files["value"])
    assert all(str(theirs.folder) in f for f in their_files["value"])
    H.unload(other)
    assert H.STORE.peek(request.session_hash).walk is walk  # closing one tab leaves the other's walk
    assert_error(I.show_alpha(1, Req("walk-never")), I.N_FRAME_OUTPUTS, "train on two images first")
    H.unload(Req("walk-never"))


def test_a_new_training_replaces_the_walk_and_ends_play(trained, monkeypatch):
    request = Req("walk-replace")
    train(request, steps=2, frames=3)
    old = H.STORE.peek(request.session_hash).walk
    monkeypatch.setattr(I, "PLAY_INTERVAL_S", 0.0)
    player = I.play(request)
    assert alpha_of(next(player)[0])[1] == 1
    gen = I.train_walk(*walk_args(steps=2, frames=4), request=request)
    first = next(gen)
    assert first[4] is None and first[6] is not None  # the old walk's panels are cleared
    assert H.STORE.peek(request.session_hash).walk is None
    assert list(player) == []  # Play of the old walk stops
    list(gen)
    new = H.STORE.peek(request.session_hash).walk
    assert new is not old and new.rgb.shape[0] == 4
    H.unload(request)
