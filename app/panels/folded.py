"""The folded state (the parameters: counts by part, the conv filter) and the unfolded state (the trigger column
and the h x w queries it makes with the positional code)."""

from __future__ import annotations

import gradio as gr

from .. import plots
from ..session import RunRecord
from .base import Panel, RenderContext


def folded_markdown(record: RunRecord) -> str:
    f = record.folded
    if not f:
        return "No APM in this experiment: these are the teacher's own islands."
    rows = "\n".join(f"| {name} | {count:,} |" for name, count in f["parts"].items())
    h, w = record.grid_shape
    return (
        f"**Folded state**: {f['param_count']:,} parameters, {f['param_bytes'] / 2**20:.1f} MB. "
        "This is all the APM *is* before it looks at a location.\n\n"
        f"| part | parameters |\n|---|---|\n{rows}\n\n"
        f"**Unfolded state**: {h} x {w} queries, one per location. Each query is the same trigger column (what "
        "the conv filter squeezed out of the whole image) followed by that location's positional code. The "
        "shared MLP answers every query independently, so locations can be decoded in any order."
    )


class FoldedPanel(Panel):
    name = "folded"

    def build(self, tab) -> None:
        with gr.Accordion("Folded and unfolded state", open=True, elem_id="folded-unfolded"):
            with gr.Row():
                with gr.Column(scale=2, min_width=260):
                    self.folded = gr.Markdown(elem_id="folded")
                self.conv_filter = gr.Image(label="The conv filter (3 x p x p, as colours)", interactive=False,
                                            height=140, elem_id="conv-filter", scale=1, min_width=140, format="png")
            self.unfolded = gr.Plot(plots.placeholder("Unfolded state", "press Run"), label="Unfolded state",
                                    elem_id="unfolded-plot")

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.folded, self.conv_filter, self.unfolded]

    def reset(self, record: RunRecord) -> dict:
        return {self.folded: folded_markdown(record), self.conv_filter: None,
                self.unfolded: plots.placeholder("Unfolded state", "training starts…")}

    def render(self, ctx: RenderContext) -> dict:
        if not ctx.slow:
            return {}
        frame, record = ctx.frame, ctx.record
        return {self.conv_filter: plots.filter_image(frame.conv_filter),
                self.unfolded: plots.unfolded_figure(frame.trigger_column, record.positional, record.grid_shape)}
