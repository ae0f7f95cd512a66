"""The timeline: the training step of the frame shown; dragging it scrubs back through the run."""

from __future__ import annotations

import gradio as gr

from ..session import RunRecord
from . import Panel, RenderContext


class TimelinePanel(Panel):
    name = "timeline"

    def build(self, tab) -> None:
        self.slider = gr.Slider(0, 300, value=0, step=1, elem_id="timeline",
                                label="Timeline: training step of the frame shown (drag to scrub back)")

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.slider]

    def wire(self, tab) -> None:
        self.slider.input(tab.scrub, [self.slider], tab.frame_outputs, concurrency_limit=4, concurrency_id="view",
                          show_progress="hidden", trigger_mode="always_last", **tab.private("scrub"))

    def reset(self, record: RunRecord) -> dict:
        return {self.slider: gr.update(value=0, maximum=max(1, record.total_steps), interactive=False)}

    def render(self, ctx: RenderContext) -> dict:
        if ctx.one_pass:
            return {self.slider: gr.update(value=0, maximum=1, interactive=False)}
        if ctx.live:
            return {self.slider: ctx.frame.step}
        if ctx.shown:  # the slider itself asked for this frame
            return {}
        return {self.slider: gr.update(value=ctx.frame.step, interactive=True)}  # the run's last frame
