"""The timeline: the training step of the frame shown; dragging it scrubs back through the run."""

from __future__ import annotations

import gradio as gr

from ..session import RunRecord
from ..widgets import session_for, status_html
from .base import Panel, RenderContext


class TimelinePanel(Panel):
    name = "timeline"

    def build(self, tab) -> None:
        self.slider = gr.Slider(0, 300, value=0, step=1, elem_id="timeline",
                                label="Timeline: training step of the frame shown (drag to scrub back)")

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.slider]

    def wire(self, tab) -> None:
        self.slider.input(self.scrub, [self.slider], tab.frame_outputs, concurrency_limit=4, concurrency_id="view",
                          show_progress="hidden", trigger_mode="always_last", **tab.private("scrub"))

    def scrub(self, step: float, request: gr.Request = None) -> dict:
        """Show a recorded frame: every panel follows the timeline."""
        state = session_for(request).islands
        record = state.run
        if record is None or not record.frames:
            return {self.host.status: status_html("nothing recorded yet: press Run")}
        index, _ = record.frame_at_step(step)
        state.shown = index
        frame = state.frame_in_view(index)
        return self.host.render(record, frame, live=False, slow=True, lead="showing", kind="info", shown=True,
                                teacher=state.teacher_view)

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
