"""What the islands rest on: the content figures of the frame shown (CKA to the teacher and to the location code
alone, agreement of its islands with the teacher's, the spread of its features) and one plain sentence saying
what they mean. Every word it says about the islands names the figure it rests on."""

from __future__ import annotations

import html

import gradio as gr

from apm.content import FOLLOWS_TEACHER, NEARLY_CONSTANT, ContentMetrics, content_sentence

from ..session import RunRecord
from .base import Panel, RenderContext

HELP = (f"CKA (linear centred kernel alignment, 0-1) compares which locations look alike. The islands are said to "
        f"follow the teacher from a CKA of {FOLLOWS_TEACHER:g}; features whose spread is under {NEARLY_CONSTANT:g} of "
        "the teacher's are said to be nearly constant.")


def _figure(name: str, value: float | None, tip: str) -> str:
    text = "n/a" if value is None else f"{value:.2f}"
    return (f"<span class='apm-figure' title='{html.escape(tip, quote=True)}'><span class='apm-figure-name'>"
            f"{html.escape(name)}</span> <b>{text}</b></span>")


def readout_html(m: ContentMetrics | None, step: int | None = None) -> str:
    """The figures and the sentence as one small block (HTML, escaped)."""
    if m is None:
        return ("<div class='apm-content'><div class='apm-content-sentence'>What the islands rest on: "
                "appears with the first frame.</div></div>")
    figures = " · ".join([
        _figure("CKA to teacher", m.cka_teacher, "linear CKA between the APM's grid and the teacher's"),
        _figure("CKA to position", m.cka_position, "linear CKA between the APM's grid and the location code alone"),
        _figure("islands ARI", m.ari_teacher, "adjusted Rand index of its islands against the teacher's"),
        _figure("spread", m.spread, "how different the locations are, over how different the teacher's are"),
    ])
    at = f" at step {step}" if step is not None else ""
    if m.locations:
        at += f" (live: measured on {m.locations} evenly spread locations; the final frame on all)"
    return (f"<div class='apm-content' title='{html.escape(HELP, quote=True)}'><div class='apm-content-figures'>"
            f"{figures}</div><div class='apm-content-sentence'>What the islands rest on{at}: "
            f"{html.escape(content_sentence(m))}.</div></div>")


class ContentPanel(Panel):
    name = "content"

    def build(self, tab) -> None:
        self.readout = gr.HTML(readout_html(None), elem_id="content-readout")

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.readout]

    def reset(self, record: RunRecord) -> dict:
        if not record.experiment.trains:
            return {self.readout: "<div class='apm-content'><div class='apm-content-sentence'>These are the teacher's "
                                  "own islands: there is no APM to compare with it.</div></div>"}
        return {self.readout: readout_html(None)}

    def render(self, ctx: RenderContext) -> dict:
        return {self.readout: readout_html(ctx.frame.content, ctx.frame.step)}
