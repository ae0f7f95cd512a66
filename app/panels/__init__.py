"""The Islands tab's panels, one module each. A panel builds its components (in the tab's right column, in the
order of the tab's panel list), resets them when a run is prepared, and renders one frame of a run; a panel with
events of its own wires them in `wire` and owns their handlers (the timeline's scrub, the export, a new view).
The tab's output lists are derived from its panels, so adding a panel touches the panel's module and the one list
in `default_panels()` (and `Frame`, only if it needs new data).

A panel knows the tab only through `PanelHost`: its status line, its controls, its endpoint names, drawing a
frame on every panel, and the error line. Panels import the engine and the state, never a tab.
"""

from __future__ import annotations

from .base import Panel, PanelHost, RenderContext

__all__ = ["Panel", "PanelHost", "RenderContext", "default_panels"]


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
