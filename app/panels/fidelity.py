"""Teacher fidelity (the APM's cosine similarity to the teacher per location) and, with a teacher that reads
text (CLIP), the teacher's and the APM's top-5 zero-shot labels."""

from __future__ import annotations

import gradio as gr

from apm.recipes import FILE_TEACHER
from apm.teachers import teacher_spec

from .. import plots
from ..session import RunRecord
from .base import Panel, RenderContext

TITLE = "Teacher fidelity"


def untrained_note(record: RunRecord) -> str:
    exp = record.experiment
    return " (untrained teacher: these labels mean nothing)" if exp.random_weights and exp.uses_teacher else ""


class FidelityPanel(Panel):
    name = "fidelity"

    def build(self, tab) -> None:
        with gr.Row(equal_height=False):
            self.plot = gr.Plot(plots.placeholder(TITLE, "press Run"), label="Teacher fidelity (error map)",
                                elem_id="fidelity-plot", min_width=280)
            with gr.Column(min_width=280):
                self.teacher_labels = gr.HTML(plots.labels_html(None, "Teacher's top-5 labels"), elem_id="clip-labels",
                                              visible=False)
                self.apm_labels = gr.HTML(plots.labels_html(None, "APM's top-5 labels (its global vector)"),
                                          elem_id="apm-labels", visible=False)

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.plot, self.teacher_labels, self.apm_labels]

    @property
    def teacher_outputs(self) -> list[gr.Component]:
        return [self.teacher_labels, self.apm_labels]

    def on_teacher(self, teacher_id: str) -> dict:
        """The labels boxes are for teachers that read text (CLIP)."""
        shown = teacher_id != FILE_TEACHER and teacher_spec(teacher_id).supports_zero_shot
        return {self.teacher_labels: gr.update(visible=shown), self.apm_labels: gr.update(visible=shown)}

    def reset(self, record: RunRecord) -> dict:
        note = untrained_note(record)
        return {
            self.plot: plots.placeholder(TITLE, "training starts…"),
            self.teacher_labels: gr.update(visible=bool(record.labels), value=plots.labels_html(
                record.teacher_labels, f"Teacher's top-5 labels{note}")),
            self.apm_labels: gr.update(visible=bool(record.labels), value=plots.labels_html(
                None, f"APM's top-5 labels{note}", "appear with the first frame")),
        }

    def render(self, ctx: RenderContext) -> dict:
        frame = ctx.frame
        fid = frame.metrics.fidelity_map
        sub = (f"cos(APM, teacher) per location, mean {frame.metrics.fidelity:.2f}" if fid is not None
               else "needs a dense teacher target")
        out = {self.plot: plots.heatmap_figure(fid, TITLE, 0.0, 1.0, sub=sub)}
        if not ctx.one_pass:  # sent even when hidden (a short string)
            out[self.apm_labels] = plots.labels_html(frame.apm_labels, "APM's top-5 labels" + untrained_note(ctx.record),
                                                     "need a global target (Target: global or both)")
        return out
