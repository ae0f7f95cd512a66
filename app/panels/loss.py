"""The loss curves (log scale) above the whole-to-part curve (island count against step)."""

from __future__ import annotations

import gradio as gr

from .. import plots
from ..session import RunRecord
from .base import Panel, RenderContext

TITLE = "Loss and whole to part"


class LossPanel(Panel):
    name = "loss"

    def build(self, tab) -> None:
        self.plot = gr.Plot(plots.placeholder(TITLE, "press Run"), label="Loss curves", elem_id="loss-plot")

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.plot]

    def reset(self, record: RunRecord) -> dict:
        return {self.plot: plots.placeholder(TITLE, "training starts…", height=420)}

    def render(self, ctx: RenderContext) -> dict:
        if ctx.one_pass:
            return {self.plot: plots.placeholder(TITLE, "one forward pass of a trained APM: press Run to train it")}
        record, frame = ctx.record, ctx.frame
        hist = record.history()
        frames = record.frames if ctx.live else [f for f in record.frames if f.step <= frame.step]
        return {self.plot: plots.loss_figure(
            hist["step"], hist["feat_loss"], hist["rgb_loss"], [f.step for f in frames],
            [f.metrics.n_islands for f in frames], [f.metrics.n_connected for f in frames], current_step=frame.step,
            global_only=record.experiment.target == "global",
            cka=[f.content.cka_teacher if f.content is not None else None for f in frames])}
