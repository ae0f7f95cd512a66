"""The islands: the scatter of the APM's unfolded grid (one point per location) and the grid images beside it
(the input at grid resolution, the APM's islands, the teacher's islands, the RGB head's reconstruction). A change
of the islands view draws the teacher and the shown frame again, for this page only."""

from __future__ import annotations

from typing import Any

import gradio as gr

from apm.islands import project
from apm.recipes import Experiment

from .. import engine, plots
from ..controls import VIEW_INPUTS, with_view
from ..session import Frame, IslandsState, RunRecord, View
from ..settings import PROJECTION_CHOICES, label_of
from ..widgets import guarded, session_for, status_html
from .base import Panel, RenderContext

GRID_IMAGE = {"interactive": False, "height": 170, "min_width": 130, "format": "png", "buttons": ["fullscreen"]}


class IslandsPanel(Panel):
    name = "islands"

    def build(self, tab) -> None:
        with gr.Row(equal_height=False):
            self.scatter = gr.Plot(plots.islands_scatter(None), label="Islands scatter", elem_id="islands-plot",
                                   scale=3, min_width=300)
            with gr.Column(scale=2, min_width=280):
                with gr.Row():
                    self.input_small = gr.Image(label="Input (grid)", elem_id="input-small", **GRID_IMAGE)
                    self.islands_image = gr.Image(label="APM islands", elem_id="islands-image", **GRID_IMAGE)
                with gr.Row():
                    self.teacher_islands = gr.Image(label="Teacher", elem_id="teacher-islands", **GRID_IMAGE)
                    self.rgb_image = gr.Image(label="RGB head", elem_id="rgb-image", **GRID_IMAGE)

    @property
    def grid_images(self) -> list[gr.Image]:
        """The grid images a click can point into, and that pointing marks."""
        return [self.input_small, self.islands_image, self.teacher_islands, self.rgb_image]

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.scatter, *self.grid_images]

    def wire(self, tab) -> None:
        c = tab.controls
        outputs = [self.scatter, self.islands_image, self.teacher_islands, tab.status]
        for name in VIEW_INPUTS:
            c[name].input(self.reproject, c.inputs(VIEW_INPUTS), outputs, concurrency_limit=4, concurrency_id="view",
                          show_progress="hidden", trigger_mode="always_last", **tab.private("reproject"))

    @guarded("a new islands view")
    def reproject(self, projection, perplexity, metric, tsne_init, comparable, request: gr.Request = None) -> dict:
        """A new islands view for this page: the teacher and the shown frame are drawn again (a live run's next
        frames follow it). Recorded frames stay as they were drawn; this page shows them drawn again."""
        state = session_for(request).islands
        base = state.view.experiment if state.view is not None else Experiment()
        exp = with_view(base, {"projection": projection, "perplexity": perplexity, "metric": metric,
                               "tsne_init": tsne_init})
        view = View(exp, bool(comparable))
        view.config  # noqa: B018 - validates the combination now
        state.view = view
        state.reprojected.clear()
        record = state.run
        if record is None:
            return {self.host.status: gr.skip()}
        state.teacher_view = project(record.teacher_grid, view.config) if record.teacher_grid is not None else None
        teacher = state.teacher_projection()
        out = {self.teacher_islands: plots.grid_image(teacher.image) if teacher is not None else gr.skip(),
               self.scatter: gr.skip(), self.islands_image: gr.skip(), self.host.status: gr.skip()}
        if not record.frames:  # the teacher's own islands
            out[self.scatter] = plots.islands_scatter(teacher)
            return out
        state.stale = True
        if record.live is not None and record.live.alive:  # the next live frame is drawn in the new view
            return out
        index = state.shown if 0 <= state.shown < len(record.frames) else len(record.frames) - 1
        state.shown = index
        frame = state.frame_in_view(index)
        out[self.scatter] = plots.islands_scatter(frame.projection, frame.step)
        out[self.islands_image] = plots.grid_image(frame.projection.image)
        out[self.host.status] = status_html(engine.status_text(
            record, frame, f"showing, in {label_of(exp.projection, PROJECTION_CHOICES)}", shown=True))
        return out

    def pictures(self, record: RunRecord, frame: Frame | None, state: IslandsState | None = None) -> dict[gr.Image, Any]:
        """Each grid image's picture (h, w, 3) for a frame (None where there is nothing to show)."""
        projection = state.teacher_projection() if state is not None else record.teacher_projection
        teacher = projection.image if projection is not None else None
        return {self.input_small: record.input_small, self.teacher_islands: teacher,
                self.islands_image: frame.projection.image if frame is not None else None,
                self.rgb_image: frame.rgb if frame is not None else None}

    def reset(self, record: RunRecord) -> dict:
        teacher = record.teacher_projection
        own = not record.experiment.trains  # the teacher's own islands: its scatter is the picture
        return {
            self.input_small: plots.grid_image(record.input_small),
            self.teacher_islands: plots.grid_image(teacher.image) if teacher is not None else None,
            self.scatter: plots.islands_scatter(teacher if own else None),
            self.islands_image: None,
            self.rgb_image: None,
        }

    def render(self, ctx: RenderContext) -> dict:
        frame = ctx.frame
        out = {self.scatter: plots.islands_scatter(frame.projection, frame.step),
               self.islands_image: plots.grid_image(frame.projection.image),
               self.rgb_image: plots.grid_image(frame.rgb)}
        if ctx.teacher is not None:  # this page draws in its own view
            out[self.teacher_islands] = plots.grid_image(ctx.teacher.image)
        return out
