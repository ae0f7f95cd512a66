"""The Interpolation tab: train one APM on two images, then walk its trigger column from one to the other.

GLOM's "the percept is a field": the MLP is a field over (trigger column, location), and a straight line between
two images' columns decodes into a continuous morph of features, colours and islands. The controls come from the
walk's registry (`app.controls.WALK_CONTROLS`); training and the walk are the engine's (`app.engine.walk`), a run of
the one run driver like every other; this module lays out the tab and paces the walk's Play.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np

from apm.recipes import experiment

from .. import engine, plots, trained
from ..controls import WALK_CONTROLS, WALK_DEFAULT_FRAMES, WALK_INPUTS, Controls, read_walk, walk_teachers
from ..session import Walk
from ..widgets import (
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
)

log = logging.getLogger("apm.app")

PLAY_INTERVAL_S = 0.15  # Play shows about six frames a second (the exported GIF uses the same pace)
MAX_PLAY_S = 600.0  # a looping Play ends by itself after this long


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
        start = experiment("custom", teacher=page_teacher(walk_teachers()[0][1]))
        c = self.controls = Controls(WALK_CONTROLS)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                with gr.Row():
                    c.make("image_a", start)
                    c.make("image_b", start)
                self.pairs = gr.Gallery(pair_gallery(), label="Example pairs (click one)", columns=2, height="auto",
                                        allow_preview=False, elem_id="walk-examples", buttons=[], object_fit="contain")
                for name in ("teacher", "layer", "random_weights", "steps", "frames", "projection"):
                    c.make(name, start)
                c.add("checkpoint", gr.Dropdown(trained.checkpoint_choices(), value=trained.NONE,
                                                label="Trained APM: walk its learned column space (no training)",
                                                elem_id="walk-checkpoint", allow_custom_value=True))
            with gr.Column(scale=3, min_width=300):
                with gr.Row():
                    panel = {"interactive": False, "height": 170, "min_width": 120, "format": "png",
                             "buttons": ["fullscreen"]}
                    self.rgb_a = gr.Image(label="Reconstruction of A", elem_id="walk-rgb-a", **panel)
                    self.walk_rgb = gr.Image(label="Decoded RGB at alpha", elem_id="walk-rgb", **panel)
                    self.walk_islands = gr.Image(label="Islands at alpha", elem_id="walk-islands", **panel)
                    self.rgb_b = gr.Image(label="Reconstruction of B", elem_id="walk-rgb-b", **panel)
                with gr.Row(equal_height=True):
                    self.alpha = gr.Slider(0, WALK_DEFAULT_FRAMES - 1, value=0, step=1, elem_id="walk-alpha", scale=4,
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
        for name in WALK_INPUTS:  # tests and scripts also reach each control as an attribute
            setattr(self, name, c[name])
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
        # the run driver keeps the line and the training slots: every walk is admitted and told its place
        train.then(self.controls.handler(self.train_values, WALK_INPUTS), self.controls.inputs(), self.train_outputs,
                   preprocess=False, concurrency_limit=None, show_progress="hidden", trigger_mode="multiple",
                   **private("train"))
        self.stop_btn.click(self.stop, None, None, queue=False, **private("stop"))
        self.alpha.input(self.show_alpha, [self.alpha], self.frame_outputs, show_progress="hidden",
                         trigger_mode="always_last", concurrency_limit=4, concurrency_id="view", **private("alpha"))
        self.play_btn.click(self.play, [self.alpha, self.loop], self.frame_outputs, show_progress="hidden",
                            concurrency_limit=8, concurrency_id="play", trigger_mode="multiple", **private("play"))
        self.pause_btn.click(self.pause, None, None, queue=False, **private("pause"))
        self.teacher.input(lambda t: {self.layer: layer_update(choice(t, walk_teachers(), "teacher"))}, [self.teacher],
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

    def train(self, *values: Any, request: gr.Request = None) -> Iterator[dict]:
        """`train_values` with the controls' values in the registry's order (tests, scripts)."""
        yield from self.train_values(dict(zip(WALK_INPUTS, values)), request=request)

    @guarded("an interpolation run")
    def train_values(self, values: dict[str, Any], request: gr.Request = None) -> Iterator[dict]:
        session = session_for(request)
        session.walk = None  # the previous walk is gone: the slider and Play wait for this one
        yield {self.status: status_html("reading both images and the teacher…", "running"),
               self.loss: plots.walk_loss(np.zeros(0), np.zeros(0), np.zeros(0)), self.rgb_a: None, self.rgb_b: None,
               self.walk_rgb: None, self.walk_islands: None, self.alpha: gr.update(value=0),
               self.scatter: plots.placeholder(plots.WALK_SCATTER_TITLE, "the walk is decoded<br>when training ends",
                                               height=380)}
        settings = read_walk(values)
        images = [read_image(settings.image_a), read_image(settings.image_b)]
        checkpoint = settings.checkpoint if settings.checkpoint and settings.checkpoint != trained.NONE else ""
        if checkpoint:
            updates = engine.trained_walk(trained.load(checkpoint, session), images, settings.frames, settings.projection)
        else:
            updates = engine.train_and_walk(settings.experiment, images, settings.frames, settings.projection,
                                            watch=lambda run, viewer: session.watch(run, viewer, leave_on_stop=False))
        for update in updates:
            curve = update["curve"]
            loss = plots.walk_loss(curve["step"], curve["feat_loss"], curve["rgb_loss"])
            if update["stage"] == "waiting":
                yield {self.status: status_html(update["waiting"].status(), "running")}
            elif update["stage"] == "training":
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
        files = engine.export_walk(session.folder, walk)
        return {self.files: gr.update(value=[str(p) for p in files], visible=True),
                self.status: status_html(f"exported {len(walk.alphas)} frames: a GIF (RGB | islands) and an .npz", "done")}

