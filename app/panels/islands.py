"""The islands: the scatter of the APM's unfolded grid (one point per location) and the grid images beside it
(the input at grid resolution, the APM's islands, the teacher's islands, the RGB head's reconstruction)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import plots
from ..session import Frame, RunRecord
from . import Panel, RenderContext

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

    def pictures(self, record: RunRecord, frame: Frame | None) -> dict[gr.Image, Any]:
        """Each grid image's picture (h, w, 3) for a frame (None where there is nothing to show)."""
        teacher = record.teacher_projection.image if record.teacher_projection is not None else None
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
        return {self.scatter: plots.islands_scatter(frame.projection, frame.step),
                self.islands_image: plots.grid_image(frame.projection.image),
                self.rgb_image: plots.grid_image(frame.rgb)}
