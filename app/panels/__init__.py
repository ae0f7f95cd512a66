"""The Islands tab's panels, one module each. A panel builds its components (in the tab's right column, in the
order of the tab's panel list), resets them when a run is prepared, and renders one frame of a run; a panel with
events of its own wires them in `wire`. The tab's output lists are derived from its panels, so adding a panel
touches the panel's module and the one list in `default_panels()` (and `Frame`, only if it needs new data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from ..session import Frame, RunRecord

if TYPE_CHECKING:  # pragma: no cover
    from ..tabs.islands import IslandsTab


@dataclass(frozen=True)
class RenderContext:
    """What a panel needs to draw one frame."""

    record: RunRecord  # the run: settings, teacher, positional code, every recorded frame
    frame: Frame  # the frame drawn
    live: bool  # the run is still training (cheap panels only; the part-whole tree waits)
    slow: bool  # also the slowly changing panels (the conv filter, the unfolded queries)
    shown: bool = False  # a frame picked on the timeline (or a one-pass decoding), not the newest
    one_pass: bool = False  # a trained APM's decoding with no training: there is no loss curve


class Panel:
    """One panel: its components, how a new run clears them, how a frame draws them."""

    name: str = ""  # the key the tab finds it by (`tab.panel('islands')`)

    def build(self, tab: IslandsTab) -> None:
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

    def wire(self, tab: IslandsTab) -> None:
        """The panel's own events (after every panel is built)."""

    def reset(self, record: RunRecord) -> dict[gr.Component, Any]:
        """A run was prepared: the panel before its first frame."""
        return {}

    def render(self, ctx: RenderContext) -> dict[gr.Component, Any]:
        """One frame of the run."""
        return {}


def default_panels() -> list[Panel]:
    """The Islands tab's panels, top to bottom."""
    from .asynchronous import AsynchronousPanel
    from .content import ContentPanel
    from .control import ControlPanel
    from .export import ExportPanel
    from .fidelity import FidelityPanel
    from .folded import FoldedPanel
    from .islands import IslandsPanel
    from .levels import LevelsPanel
    from .loss import LossPanel
    from .pointing import PointingPanel
    from .timeline import TimelinePanel
    from .tree import TreePanel

    return [IslandsPanel(), ContentPanel(), ControlPanel(), LevelsPanel(), TimelinePanel(), PointingPanel(), TreePanel(), LossPanel(),
            FidelityPanel(), FoldedPanel(), AsynchronousPanel(), ExportPanel()]
