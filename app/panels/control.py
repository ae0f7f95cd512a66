"""A control for the islands: the same settings on another image (a blank one, or another example), its islands
beside this run's, and the CKA between the two grids. Islands that come from the image differ between images;
islands that come from the positional code (magnified by the view) look the same for any image."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator

import gradio as gr
import numpy as np
from PIL import Image

from apm.content import FOLLOWS_TEACHER, content_sentence, linear_cka
from apm.errors import APMError
from apm.recipes import FILE_TEACHER, estimate_seconds

from .. import engine, plots, trained
from ..session import RunRecord
from ..widgets import EXAMPLE_CAPTIONS, example_path, example_paths, guarded, session_for, user_message
from .base import Panel

log = logging.getLogger("apm.app")
BLANK = "blank"
GRID_IMAGE = {"interactive": False, "height": 170, "min_width": 130, "format": "png", "buttons": []}


def control_choices() -> list[tuple[str, str]]:
    return [("a blank (grey) image", BLANK),
            *[(EXAMPLE_CAPTIONS.get(p.stem, p.stem), p.stem) for p in example_paths()]]


def control_image(key: str) -> tuple[Image.Image, str]:
    if key == BLANK:
        return Image.new("RGB", (448, 448), (128, 128, 128)), "a blank image"
    path = example_path(key)
    return Image.open(path).convert("RGB"), path.name


def _box(text: str, kind: str = "") -> str:
    return f"<div class='apm-content {kind}'><div class='apm-content-sentence'>{html.escape(text)}</div></div>"


def verdict(cka: float) -> str:
    """What the CKA between this run's grid and the control's says (the figure named in the sentence)."""
    if cka >= FOLLOWS_TEACHER:
        return (f"the two grids are alike (CKA {cka:.2f} between them): these islands do not depend on the image, "
                "they come from the settings (the positional code) rather than from what the image shows")
    return f"the two grids differ (CKA {cka:.2f} between them): these islands depend on the image"


class ControlPanel(Panel):
    name = "control"

    def build(self, tab) -> None:
        with gr.Accordion("Control: the same settings on another image", open=False, elem_id="control"):
            with gr.Row(equal_height=False):
                self.choice = gr.Dropdown(control_choices(), value=BLANK, label="Control image", elem_id="control-image",
                                          scale=2, min_width=200)
                self.button = gr.Button("Run the control", elem_id="control-run", scale=1, min_width=140)
            with gr.Row(equal_height=False):
                self.this = gr.Image(label="This run's islands", elem_id="control-this", **GRID_IMAGE)
                self.other = gr.Image(label="The control's islands", elem_id="control-islands", **GRID_IMAGE)
                self.summary = gr.HTML(_box("Run an experiment, then the control: it trains the same settings "
                                            "(as many steps, so it costs what the run cost) on the image picked here."),
                                       elem_id="control-summary", min_width=260)

    @property
    def outputs(self) -> list[gr.Component]:
        return []  # drawn by its own button, from the run on the page

    def wire(self, tab) -> None:
        self.button.click(self.run_control, [self.choice], [self.this, self.other, self.summary],
                          concurrency_limit=None, show_progress="hidden", **tab.private("control"))

    def reset(self, record: RunRecord) -> dict:
        return {}

    def failed(self, exc: BaseException, what: str, lead: str = "") -> dict:
        if not isinstance(exc, APMError):
            log.error("%s failed", what, exc_info=exc)
        return {self.summary: _box(f"{lead}{user_message(exc)}", "apm-error")}

    @guarded("the control run", "the control could not run: ")
    def run_control(self, key: str, request: gr.Request = None) -> Iterator[dict]:
        """Train the shown run's settings on the control image (a run of the driver, in the one line); then both
        islands and the CKA between them."""
        session = session_for(request)
        state = session.islands
        record, frame = state.run, state.shown_frame()
        if record is None or frame is None or not record.experiment.trains:
            raise APMError("run an experiment that trains an APM first: the control repeats its settings")
        if record.live is not None and record.live.alive:
            raise APMError("wait for the run to finish (or stop it): the control runs after it")
        exp = record.experiment
        if exp.teacher == FILE_TEACHER:
            raise APMError("a control needs a teacher: your own features belong to one image")
        picture, name = control_image(str(key or BLANK))
        loaded = trained.load(exp.checkpoint, session)
        prepared = engine.prepare_run(exp, picture, name, None, [], session.run_id, state.view, loaded)
        yield {self.this: plots.grid_image(frame.projection.image), self.other: None,
               self.summary: _box(f"training the control on {name}: the same {exp.steps} steps…", "apm-running")}
        run, viewer, _ = engine.drive(None, engine.producer(prepared), estimate_seconds(exp), context=prepared)
        session.watch(run, viewer)
        last = None
        try:
            for item in run.follow(viewer):
                if isinstance(item, engine.Waiting):
                    yield {self.summary: _box(f"the control waits for its turn: {item.text()}", "apm-running")}
                    continue
                last = item
                live = prepared.record.live
                yield {self.other: plots.grid_image(last.projection.image),
                       self.summary: _box(f"training the control on {name}: step {live.steps_done} / {exp.steps}",
                                          "apm-running")}
        finally:
            run.leave(viewer)
        if last is None:
            yield {self.summary: _box("the control stopped before its first frame", "apm-error")}
            return
        cka = linear_cka(frame.features.astype(np.float32), last.features.astype(np.float32))
        own = content_sentence(last.content) if last.content is not None else "no teacher grid to compare with"
        text = (f"Control on {name}, {prepared.record.live.steps_done} steps: {verdict(cka)}. The control's own "
                f"islands: {own}.")
        yield {self.other: plots.grid_image(last.projection.image), self.summary: _box(text, "apm-done")}
