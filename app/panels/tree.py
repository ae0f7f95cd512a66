"""The part-whole tree (an icicle): the islands at coarse-to-fine levels of detail, each inside the island that
holds it, coloured like the islands image. Drawn for still frames (a live run would pay for it every frame)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from apm.islands import part_whole_tree

from .. import plots
from ..session import RunRecord
from .base import Panel, RenderContext


class TreePanel(Panel):
    name = "tree"

    def build(self, tab) -> None:
        self.plot = gr.Plot(plots.tree_figure(None), label="Part-whole tree (hover or click a segment: its locations "
                            "light up on the grid images)", elem_id="part-whole-tree")

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.plot]

    def reset(self, record: RunRecord) -> dict:
        if not record.experiment.trains and record.teacher_grid is not None:  # the teacher's own islands
            tree = part_whole_tree(record.teacher_grid, colours=record.teacher_projection.image)
            return {self.plot: plots.tree_figure(tree, "Part-whole tree of the teacher")}
        return {self.plot: plots.tree_figure(None)}

    def render(self, ctx: RenderContext) -> dict:
        if ctx.live:
            return {}
        frame = ctx.frame
        tree = part_whole_tree(frame.features.astype(np.float32), colours=frame.projection.image)
        return {self.plot: plots.tree_figure(tree, f"Part-whole tree of the APM at step {frame.step}")}
