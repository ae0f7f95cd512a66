"""The Interpolation tab: train one APM on two images, then walk its trigger column from one to the other.

GLOM's "the percept is a field": the MLP is a field over (trigger column, location), and a straight line between
two images' columns decodes into a continuous morph of features, colours and islands. Training runs through
`apm.live.LiveRun` like the Islands tab; the walk is decoded once training ends, with one projection fitted to
every frame so a colour means the same thing all along it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from apm.errors import InputError
from apm.interpolate import PathProjection, project_path, train_pair, walk_frames
from apm.io import save_gif, save_npz
from apm.islands import ProjectionConfig
from apm.live import LiveRun
from apm.recipes import FILE_TEACHER, experiment

from .. import plots
from ..session import Session
from ..widgets import (
    LIMITS,
    TEACHER_CHOICES,
    WALK_PAIRS,
    Tab,
    choice,
    example_path,
    guarded,
    layer_update,
    page_teacher,
    read_image,
    selected_index,
    session_for,
    status_html,
    whole,
)

log = logging.getLogger("apm.app")

WALK_TEACHERS = [(label, key) for label, key in TEACHER_CHOICES if key != FILE_TEACHER]
WALK_PROJECTIONS = {
    "pca": ProjectionConfig(method="pca", dim=2),
    "tsne2d": ProjectionConfig(method="tsne", dim=2, full_iters=150),
}
PROJECTION_CHOICES = [("PCA (fast)", "pca"), ("t-SNE 2D (slower)", "tsne2d")]
MAX_FRAMES = 33
DEFAULT_STEPS = 300
DEFAULT_FRAMES = 16
PLAY_INTERVAL_S = 0.15  # Play shows about six frames a second (the exported GIF uses the same pace)
MAX_PLAY_S = 600.0  # a looping Play ends by itself after this long
GIF_FRAME_MS = 150


@dataclass
class Walk:
    """A trained pair and its decoded walk (for the slider, Play and export)."""

    alphas: np.ndarray  # (F,)
    rgb: np.ndarray  # (F, h, w, 3)
    features: np.ndarray  # (F, h, w, d)
    path: PathProjection
    own_rgb: np.ndarray  # (2, h, w, 3): each image's own reconstruction
    endpoint_error: float  # max |decode(alpha=0 or 1) - own reconstruction|
    teacher_label: str = ""


def pair_gallery() -> list[tuple[Any, str]]:
    """Thumbnails of the example pairs, A beside B, with captions."""
    from PIL import Image

    items = []
    for a, b in WALK_PAIRS:
        tiles = [Image.open(example_path(stem)).convert("RGB").resize((96, 96)) for stem in (a, b)]
        sheet = Image.new("RGB", (196, 96), "white")
        sheet.paste(tiles[0], (0, 0))
        sheet.paste(tiles[1], (100, 0))
        items.append((sheet, f"{a.replace('_', ' ')} → {b.replace('_', ' ')}"))
    return items


def trained_walk(session: Session, image_a: Any, image_b: Any, checkpoint: str, frames: Any,
                 projection: str) -> Iterator[dict]:
    """A trained APM's walk between two new images, with no training: the same progress dicts as training."""
    from apm.interpolate import walk_trained

    from .. import trained

    if not image_a or not image_b:
        raise InputError("give two images: one for each end of the walk (A and B)")
    frames = whole(frames, "frames", DEFAULT_FRAMES, 2, MAX_FRAMES)
    projection = WALK_PROJECTIONS[choice(projection or "pca", PROJECTION_CHOICES, "projection")]
    loaded = trained.load(checkpoint, session)
    images = [read_image(image_a), read_image(image_b)]
    empty = {"step": np.zeros(0, np.int64), "feat_loss": np.zeros(0), "rgb_loss": np.zeros(0), "elapsed_s": np.zeros(0)}
    yield {"stage": "decoding", "note": "", "curve": empty}
    alphas = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    features, rgb, own_rgb = walk_trained(loaded.apm, images, alphas)
    path = project_path(features, projection)
    endpoint_error = float(max(np.abs(rgb[0] - own_rgb[0]).max(), np.abs(rgb[-1] - own_rgb[1]).max()))
    yield {"stage": "walk", "note": "no training: ", "curve": empty, "steps_done": 0,
           "walk": Walk(alphas, rgb, features, path, own_rgb, endpoint_error, trained.describe(loaded))}


def train_and_walk(session: Session, run_id: int, image_a: Any, image_b: Any, teacher: str, layer: Any,
                   random_weights: bool, steps: Any, frames: Any, projection: str) -> Iterator[dict]:
    """Train on both images with live progress, then decode the walk. Yields progress dicts:

    {"stage": "training", "step", "total", "curve", "rgb": (2, h, w, 3) or None} while training, then
    {"stage": "walk", "walk": Walk, "note": str} at the end. Raises `APMError` for bad input.
    """
    if not image_a or not image_b:
        raise InputError("give two images: one for each end of the walk (A and B)")
    steps = whole(steps, "steps", DEFAULT_STEPS, 1, LIMITS.max_steps)
    frames = whole(frames, "frames", DEFAULT_FRAMES, 2, MAX_FRAMES)
    teacher = choice(teacher or page_teacher("dinov2"), WALK_TEACHERS, "teacher")
    projection = WALK_PROJECTIONS[choice(projection or "pca", PROJECTION_CHOICES, "projection")]
    exp = experiment("custom", teacher=teacher, layer=None if layer is None else whole(layer, "layer", 0, 0, 1000),
                     steps=steps, random_weights=bool(random_weights))
    images = [read_image(image_a), read_image(image_b)]
    from .. import engine

    encoded = [engine.encode_image(exp.teacher, exp.layer, exp.random_weights, im)[1][0] for im in images]
    run = train_pair(images, [out.grid for out in encoded], exp.train_config(time_budget_s=LIMITS.max_run_seconds),
                     exp.model_config())
    label = encoded[0].info.label
    live = LiveRun(run, keep=2, threads=LIMITS.train_threads, idle_timeout_s=15.0, backend="auto").start()
    seen = 0
    try:
        while not live.finished:
            if not session.is_current(run_id):
                live.stop()
            snap, seen = live.wait(seen, timeout=LIMITS.frame_interval_s)
            hist = live.history.arrays()
            if len(hist["step"]):
                yield {"stage": "training", "step": int(hist["step"][-1]), "total": steps, "curve": hist,
                       "rgb": None if snap is None else snap.rgb, "label": label}
        live.join()
        if live.error is not None:
            raise live.error
    finally:
        live.stop()
    note = ""
    if live.stop_reason == "time_budget":
        note = f"cut off at the {LIMITS.max_run_seconds:.0f} s limit for shared hardware · "
    elif live.stop_reason in ("stopped", "abandoned"):
        note = f"stopped by you at step {live.steps_done}; the walk uses the APM as it was · "
    yield {"stage": "decoding", "note": note, "curve": live.history.arrays()}
    alphas = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    features, rgb = run.interpolate(alphas)  # (F, h, w, d), (F, h, w, 3)
    _, own_rgb = run.decode_columns(run.trigger_columns())  # (2, h, w, 3)
    path = project_path(features, projection)
    endpoint_error = float(max(np.abs(rgb[0] - own_rgb[0]).max(), np.abs(rgb[-1] - own_rgb[1]).max()))
    yield {"stage": "walk", "note": note, "curve": live.history.arrays(), "steps_done": live.steps_done,
           "walk": Walk(alphas, rgb, features, path, own_rgb, endpoint_error, label)}


def export_walk_files(session: Session, walk: Walk) -> list:
    """interpolation.gif (RGB | islands, A to B and back) and interpolation.npz (alpha, rgb, features, islands)."""
    out = session.folder / "walk"
    save_npz(out / "interpolation.npz", alpha=walk.alphas, rgb=walk.rgb, features=walk.features,
             islands=walk.path.images)
    save_gif(out / "interpolation.gif", walk_frames(walk.rgb, walk.path.images, scale=12), duration_ms=GIF_FRAME_MS)
    return [out / "interpolation.gif", out / "interpolation.npz"]


class WalkTab(Tab):
    """Components as attributes; handlers return {component: value} dicts."""

    key = "walk"

    def build(self) -> WalkTab:
        gr.Markdown("Train one APM on **two** images, then slide its trigger column from one to the other. "
                    "The decoded colours and islands morph continuously: the MLP is a field, not a lookup table.")
        with gr.Row(elem_id="walk-action-bar", equal_height=False):
            self.train_btn = gr.Button("Train on both", variant="primary", elem_id="walk-train", scale=0, min_width=140, size="lg")
            self.stop_btn = gr.Button("Stop", variant="stop", elem_id="walk-stop", scale=0, min_width=90, size="lg")
            self.status = gr.HTML(status_html("Give two images (or pick a pair) and press 'Train on both'."),
                                  elem_id="walk-status", scale=6, min_width=260)
        spec_layer = layer_update(page_teacher(WALK_TEACHERS[0][1]))
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                with gr.Row():
                    self.image_a = gr.Image(label="Image A (alpha = 0)", type="filepath", elem_id="walk-image-a",
                                            sources=["upload", "clipboard"], height=180, min_width=130)
                    self.image_b = gr.Image(label="Image B (alpha = 1)", type="filepath", elem_id="walk-image-b",
                                            sources=["upload", "clipboard"], height=180, min_width=130)
                self.pairs = gr.Gallery(pair_gallery(), label="Example pairs (click one)", columns=2, height="auto",
                                        allow_preview=False, elem_id="walk-examples", buttons=[], object_fit="contain")
                self.teacher = gr.Dropdown(WALK_TEACHERS, value=page_teacher(WALK_TEACHERS[0][1]), label="Teacher",
                                           elem_id="walk-teacher")
                self.layer = gr.Slider(0, spec_layer["maximum"], value=spec_layer["value"], step=1,
                                       label=spec_layer["label"], elem_id="walk-layer")
                self.random_weights = gr.Checkbox(value=_random_default(), elem_id="walk-random-weights",
                                                  label="Untrained teacher (random weights, works offline)")
                self.steps = gr.Slider(10, LIMITS.max_steps, value=DEFAULT_STEPS, step=10, label="Steps",
                                       elem_id="walk-steps")
                self.frames = gr.Slider(2, MAX_FRAMES, value=DEFAULT_FRAMES, step=1, label="Frames along the walk",
                                        elem_id="walk-frames")
                self.projection = gr.Radio(PROJECTION_CHOICES, value="pca", label="Projection",
                                           elem_id="walk-projection")
                from .. import trained

                self.checkpoint = gr.Dropdown(trained.checkpoint_choices(), value=trained.NONE,
                                              label="Trained APM: walk its learned column space (no training)",
                                              elem_id="walk-checkpoint", allow_custom_value=True)
            with gr.Column(scale=3, min_width=300):
                with gr.Row():
                    panel = {"interactive": False, "height": 170, "min_width": 120, "format": "png",
                             "buttons": ["fullscreen"]}
                    self.rgb_a = gr.Image(label="Reconstruction of A", elem_id="walk-rgb-a", **panel)
                    self.walk_rgb = gr.Image(label="Decoded RGB at alpha", elem_id="walk-rgb", **panel)
                    self.walk_islands = gr.Image(label="Islands at alpha", elem_id="walk-islands", **panel)
                    self.rgb_b = gr.Image(label="Reconstruction of B", elem_id="walk-rgb-b", **panel)
                with gr.Row(equal_height=True):
                    self.alpha = gr.Slider(0, DEFAULT_FRAMES - 1, value=0, step=1, elem_id="walk-alpha", scale=4,
                                           min_width=240, label="Frame along the walk: A (first) to B (last)")
                    self.play_btn = gr.Button("Play", elem_id="walk-play", scale=1, min_width=80)
                    self.pause_btn = gr.Button("Pause", elem_id="walk-pause", scale=1, min_width=80)
                    self.loop = gr.Checkbox(value=True, label="Loop", elem_id="walk-loop", scale=1, min_width=80)
                with gr.Row():
                    self.scatter = gr.Plot(plots.placeholder(plots.WALK_SCATTER_TITLE, "train on two images to see<br>"
                                                             "the islands along the walk", height=380),
                                           label="Islands scatter", elem_id="walk-scatter", min_width=300)
                    self.loss = gr.Plot(plots.walk_loss(np.zeros(0), np.zeros(0), np.zeros(0)), label="Training",
                                        elem_id="walk-loss", min_width=300)
                with gr.Row():
                    self.export_btn = gr.Button("Export the walk (GIF and .npz)", elem_id="walk-export")
                    self.files = gr.File(label="Exports", file_count="multiple", interactive=False,
                                         elem_id="walk-files", visible=False)
        self._wire()
        return self

    @property
    def train_outputs(self) -> list:
        return [self.status, self.loss, self.rgb_a, self.rgb_b, self.walk_rgb, self.walk_islands, self.scatter,
                self.alpha]

    @property
    def frame_outputs(self) -> list:
        return [self.status, self.walk_rgb, self.walk_islands, self.scatter, self.alpha]

    def _wire(self) -> None:
        private = self.private
        train = self.train_btn.click(self.begin, None, [self.status], queue=False, trigger_mode="multiple", **private("begin"))
        train.then(self.train, [self.image_a, self.image_b, self.teacher, self.layer, self.random_weights, self.steps,
                                self.frames, self.projection, self.checkpoint], self.train_outputs, preprocess=False,
                   concurrency_limit=LIMITS.max_concurrent_runs, concurrency_id="train", show_progress="hidden",
                   trigger_mode="multiple", **private("train"))
        self.stop_btn.click(self.stop, None, None, queue=False, **private("stop"))
        self.alpha.input(self.show_alpha, [self.alpha], self.frame_outputs, show_progress="hidden",
                         trigger_mode="always_last", concurrency_limit=4, concurrency_id="view", **private("alpha"))
        self.play_btn.click(self.play, [self.alpha, self.loop], self.frame_outputs, show_progress="hidden",
                            concurrency_limit=8, concurrency_id="play", trigger_mode="multiple", **private("play"))
        self.pause_btn.click(self.pause, None, None, queue=False, **private("pause"))
        self.teacher.input(lambda t: {self.layer: layer_update(choice(t, WALK_TEACHERS, "teacher"))}, [self.teacher],
                           [self.layer], queue=False, **private("teacher"))
        self.pairs.select(self.on_pair, None, [self.image_a, self.image_b], queue=False, **private("pair"))
        self.export_btn.click(self.export, None, [self.files, self.status], concurrency_limit=2,
                              concurrency_id="export", **private("export"))

    # handlers

    def on_pair(self, evt: gr.SelectData) -> dict:
        a, b = WALK_PAIRS[selected_index(evt)]
        return {self.image_a: str(example_path(a)), self.image_b: str(example_path(b))}

    def pause(self, request: gr.Request = None) -> None:
        session = session_for(request)
        with session.lock:
            session.play_id += 1

    @guarded("an interpolation run")
    def train(self, image_a, image_b, teacher, layer, random_weights, steps, frames, projection, checkpoint="",
              request: gr.Request = None) -> Iterator[dict]:
        session = session_for(request)
        run_id = session.run_id
        session.walk = None  # the previous walk is gone: the slider and Play wait for this one
        yield {self.status: status_html("reading both images and the teacher…", "running"),
               self.loss: plots.walk_loss(np.zeros(0), np.zeros(0), np.zeros(0)), self.rgb_a: None, self.rgb_b: None,
               self.walk_rgb: None, self.walk_islands: None, self.alpha: gr.update(value=0),
               self.scatter: plots.placeholder(plots.WALK_SCATTER_TITLE, "the walk is decoded<br>when training ends",
                                               height=380)}
        updates = (trained_walk(session, image_a, image_b, checkpoint, frames, projection) if checkpoint else
                   train_and_walk(session, run_id, image_a, image_b, teacher, layer, random_weights, steps,
                                  frames, projection))
        for update in updates:
            curve = update["curve"]
            loss = plots.walk_loss(curve["step"], curve["feat_loss"], curve["rgb_loss"])
            if update["stage"] == "training":
                text = (f"training on both images · step {update['step']} / {update['total']} · feature loss "
                        f"{curve['feat_loss'][-1]:.1e} · RGB loss {curve['rgb_loss'][-1]:.1e} · "
                        f"{curve['elapsed_s'][-1]:.1f} s · {update['label']}")
                out = {self.status: status_html(text, "running"), self.loss: loss}
                if update["rgb"] is not None:
                    out[self.rgb_a] = plots.to_uint8(update["rgb"][0])
                    out[self.rgb_b] = plots.to_uint8(update["rgb"][1])
                yield out
            elif update["stage"] == "decoding":
                yield {self.status: status_html(f"{update['note']}decoding the walk and fitting one projection "
                                                "to every frame…", "running"), self.loss: loss}
            else:
                walk = update["walk"]
                session.walk = walk
                lead = "trained" if not checkpoint else "through the trained APM's column space"
                text = (f"{update['note']}{lead} · {update['steps_done']} steps · {walk.teacher_label} · move "
                        "the slider or press Play")
                yield {**self.frame_panels(walk, 0), self.status: status_html(text, "done"), self.loss: loss,
                       self.rgb_a: plots.to_uint8(walk.own_rgb[0]), self.rgb_b: plots.to_uint8(walk.own_rgb[1]),
                       self.alpha: gr.update(value=0, maximum=len(walk.alphas) - 1)}

    def frame_panels(self, walk: Walk, index: int, scatter: bool = True) -> dict:
        """Decoded RGB, islands image, slider (and the scatter) at frame `index` (images at grid size: CSS
        enlarges them). Play leaves the scatter out: redrawing thousands of points six times a second would
        keep a small machine's browser busy."""
        index = int(np.clip(index, 0, len(walk.alphas) - 1))
        text = (f"alpha {float(walk.alphas[index]):.2f} · frame {index + 1} / {len(walk.alphas)} · endpoints match "
                f"each image's own reconstruction to {walk.endpoint_error:.1e}")
        out = {self.status: status_html(text), self.walk_rgb: plots.to_uint8(walk.rgb[index]),
               self.walk_islands: plots.to_uint8(walk.path.images[index]), self.alpha: index}
        out[self.scatter] = (plots.walk_scatter(walk.path.embedding, walk.path.colours, index, walk.rgb.shape[1:3])
                             if scatter else gr.skip())
        return out

    def show_alpha(self, index: float, request: gr.Request = None) -> dict:
        walk = session_for(request).walk
        if walk is None:
            return {self.status: status_html("train on two images first", "error")}
        try:
            index = round(float(index))
        except (TypeError, ValueError):
            index = 0
        return self.frame_panels(walk, index)

    def play(self, start: float, loop: bool, request: gr.Request = None) -> Iterator[dict]:
        """Walk from A to B and back, about six frames a second; Pause, a new Play or a new training ends it."""
        session = session_for(request)
        walk = session.walk
        if walk is None:
            yield {self.status: status_html("train on two images first", "error")}
            return
        with session.lock:
            session.play_id += 1
            play_id = session.play_id
        n = len(walk.alphas)
        cycle = [*range(n), *range(n - 2, 0, -1)] if n > 1 else [0]
        try:
            position = cycle.index(int(round(float(start or 0))))
        except ValueError:
            position = 0
        started = time.monotonic()
        while True:
            if session.play_id != play_id or session.walk is not walk:  # paused, replayed or retrained
                if session.walk is walk:
                    yield self.frame_panels(walk, cycle[position - 1])  # the scatter catches up where it stopped
                return
            yield self.frame_panels(walk, cycle[position], scatter=False)
            position += 1
            if position == len(cycle):
                if not loop or time.monotonic() - started > MAX_PLAY_S:
                    yield self.frame_panels(walk, 0)
                    return
                position = 0
            time.sleep(PLAY_INTERVAL_S)

    @guarded("an interpolation export", "the export failed: ")
    def export(self, request: gr.Request = None) -> dict:
        session = session_for(request)
        walk = session.walk
        if walk is None:
            return {self.files: gr.update(value=None, visible=False),
                    self.status: status_html("nothing to export yet: train on two images first", "error")}
        files = export_walk_files(session, walk)
        return {self.files: gr.update(value=[str(p) for p in files], visible=True),
                self.status: status_html(f"exported {len(walk.alphas)} frames: a GIF (RGB | islands) and an .npz", "done")}


def _random_default() -> bool:
    from apm.env import random_weights_default

    return random_weights_default()
