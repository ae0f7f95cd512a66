"""A panel of the Islands tab: the base class, the context a frame is drawn with, and `PanelHost`, all a panel
knows of the tab it sits in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import gradio as gr

from apm.islands import Projection

from ..session import Frame, RunRecord


class PanelHost(Protocol):
    """What a panel may ask of the tab it sits in."""

    status: gr.HTML  # the tab's status line
    controls: Any  # the tab's controls by name (`app.controls.Controls`)

    def private(self, name: str) -> dict: ...  # the keyword arguments that name a private endpoint

    def panel(self, name: str) -> Panel: ...  # another panel of the tab, by name

    @property
    def frame_outputs(self) -> list[gr.Component]: ...  # what drawing a frame sets

    def render(self, record: RunRecord, frame: Frame, *, live: bool, slow: bool, lead: str = "training",
               kind: str = "running", shown: bool = False, one_pass: bool = False,
               teacher: Projection | None = None) -> dict: ...  # every panel's drawing of a frame, and the status

    def failed(self, exc: BaseException, what: str, lead: str = "") -> dict: ...  # one error line for the page


@dataclass(frozen=True)
class RenderContext:
    """What a panel needs to draw one frame."""

    record: RunRecord  # the run: settings, teacher, positional code, every recorded frame
    frame: Frame  # the frame drawn
    live: bool  # the run is still training (cheap panels only; the part-whole tree waits)
    slow: bool  # also the slowly changing panels (the conv filter, the unfolded queries)
    shown: bool = False  # a frame picked on the timeline (or a one-pass decoding), not the newest
    one_pass: bool = False  # a trained APM's decoding with no training: there is no loss curve
    teacher: Projection | None = None  # the teacher's islands as this page draws them (None: the run's own)

    @property
    def teacher_projection(self) -> Projection | None:
        return self.teacher if self.teacher is not None else self.record.teacher_projection


class Panel:
    """One panel: its components, how a new run clears them, how a frame draws them."""

    name: str = ""  # the key the tab finds it by (`tab.panel('islands')`)
    host: PanelHost

    def build(self, tab: PanelHost) -> None:
        """Lay out the components (inside the tab's right column) and keep them as attributes."""
        raise NotImplementedError

    @property
    def outputs(self) -> list[gr.Component]:
        """Every component the panel sets."""
        raise NotImplementedError

    @property
    def frame_outputs(self) -> list[gr.Component]:
        """The components `render` sets (default: all of them); the live stream lists only these."""
        return self.outputs

    def wire(self, tab: PanelHost) -> None:
        """The panel's own events (after every panel is built)."""

    @property
    def teacher_outputs(self) -> list[gr.Component]:
        """What follows the teacher picker (shown only for some teachers)."""
        return []

    def on_teacher(self, teacher_id: str) -> dict[gr.Component, Any]:
        """The teacher picker changed: show or hide what depends on it."""
        return {}

    def failed(self, exc: BaseException, what: str, lead: str = "") -> dict[gr.Component, Any]:
        """A handler of this panel failed (`guarded`): one line of ours, in the tab's status by default."""
        return self.host.failed(exc, what, lead)

    def reset(self, record: RunRecord) -> dict[gr.Component, Any]:
        """A run was prepared: the panel before its first frame."""
        return {}

    def render(self, ctx: RenderContext) -> dict[gr.Component, Any]:
        """One frame of the run."""
        return {}
