"""The levels strip: the teacher's islands at every layer (every GLOM level) from one forward pass, in PCA
colours; a click on a level selects that layer to train on. The levels are kept for pointing (a location's
column across levels)."""

from __future__ import annotations

import logging

import gradio as gr

from apm.errors import APMError
from apm.islands import pca_colours
from apm.recipes import FILE_TEACHER
from apm.teachers import grid_options

from .. import engine, plots
from ..controls import read_grid
from ..session import Levels
from ..widgets import choice, guarded, read_image, selected_index, session_for, teacher_choices
from .base import Panel

log = logging.getLogger("apm.app")
LEVEL_PX = 112  # side of one image of the strip


class LevelsPanel(Panel):
    name = "levels"

    def build(self, tab) -> None:
        self.gallery = gr.Gallery(label="Levels: the teacher's islands at every layer, one forward pass, PCA colours "
                                  "(click one to train on that layer)", elem_id="levels-strip", columns=8, height=250,
                                  allow_preview=False, object_fit="contain", buttons=[])

    @property
    def outputs(self) -> list[gr.Component]:
        return []  # not drawn from a run's frames: from the image and the teacher alone

    def wire(self, tab) -> None:
        self.layer = tab.controls["layer"]
        sources = tab.controls.inputs(("image", "teacher", "random_weights", "grid"))
        for control in sources:
            control.change(self.on_levels, sources, [self.gallery], preprocess=False, concurrency_limit=2,
                           concurrency_id="levels", show_progress="minimal", trigger_mode="always_last",
                           **tab.private("levels"))
        self.gallery.select(self.on_level, None, [tab.controls["layer"]], queue=False, **tab.private("level"))

    def failed(self, exc: BaseException, what: str, lead: str = "") -> dict:
        """A failed strip just stays empty (the image's own check reports a bad file)."""
        if not isinstance(exc, APMError):
            log.error("%s failed", what, exc_info=exc)
        return {self.gallery: None}

    @guarded("the levels strip")
    def on_levels(self, image, teacher, random_weights, grid, request: gr.Request = None) -> dict:
        """Every layer's islands of the image (the teacher's outputs are shared by every session)."""
        state = session_for(request).islands
        state.levels = None
        teacher_id = choice(teacher, teacher_choices(), "teacher")
        if image is None or teacher_id == FILE_TEACHER:
            return {self.gallery: None}
        options = grid_options(teacher_id, read_grid(grid))  # a grid the teacher cannot make: no strip
        _, outputs = engine.encode_image(teacher_id, None, bool(random_weights), read_image(image), layers=None,
                                         options=options)
        grids = [o.grid for o in outputs]
        state.levels = Levels(teacher_id, grids)
        return {self.gallery: [(plots.enlarge(pca_colours(g), LEVEL_PX), f"layer {k}") for k, g in enumerate(grids)]}

    def on_level(self, evt: gr.SelectData) -> dict:
        """A click on a level selects it as the layer to train on."""
        return {self.layer: selected_index(evt)}
