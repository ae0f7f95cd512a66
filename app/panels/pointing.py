"""Pointing at a location: a click on any grid image (or hovering a point of the islands scatter) marks the
location on every grid image and draws its agreement maps (the cosine similarity of its vector to every
location, for the APM and the teacher) and its column across the teacher's levels. Hovering a segment of the
part-whole tree lights its locations on every grid image."""

from __future__ import annotations

import gradio as gr
import numpy as np

from apm.islands import agreement_map, column_agreement, part_whole_tree

from .. import plots
from ..session import RunRecord, Session
from ..widgets import session_for, status_html
from .base import Panel

POINT_IMAGE = {"interactive": False, "height": 170, "min_width": 130, "format": "png", "buttons": []}


class PointingPanel(Panel):
    name = "pointing"

    def build(self, tab) -> None:
        with gr.Row(equal_height=False, elem_id="pointing"):
            self.agreement_apm = gr.Image(label="Agreement with the clicked location: APM", elem_id="agreement-apm",
                                          **POINT_IMAGE)
            self.agreement_teacher = gr.Image(label="… and the teacher", elem_id="agreement-teacher", **POINT_IMAGE)
            self.column = gr.Plot(plots.column_figure([], None), label="Its column across levels",
                                  elem_id="column-agreement", min_width=260)
        # plotly's hover and click events reach the server through this hidden box (see PLOT_EVENTS_JS)
        self.pick = gr.Textbox(elem_id="plot-pick", container=False, elem_classes=["apm-offscreen"], show_label=False,
                               lines=1)

    @property
    def frame_outputs(self) -> list[gr.Component]:
        return []  # a run's frames leave it as it is

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.agreement_apm, self.agreement_teacher, self.column]

    def wire(self, tab) -> None:
        self.grids = tab.panel("islands")
        self.point_outputs = [*self.outputs, *self.grids.grid_images, tab.status]
        for image in self.grids.grid_images:
            image.select(self.on_point, [image], self.point_outputs, concurrency_limit=4, concurrency_id="view",
                         show_progress="hidden", trigger_mode="always_last", **tab.private("point"))
        self.pick.change(self.on_pick, [self.pick], self.point_outputs, concurrency_limit=4, concurrency_id="view",
                         show_progress="hidden", trigger_mode="always_last", **tab.private("pick"))

    def reset(self, record: RunRecord) -> dict:
        return {self.agreement_apm: None, self.agreement_teacher: None, self.column: plots.column_figure([], None)}

    def on_point(self, image, evt: gr.SelectData, request: gr.Request = None) -> dict:
        """A click on a grid image: its pixel mapped back to a location of the grid."""
        session = session_for(request)
        record = session.islands.run
        if record is None or image is None:
            return {self.host.status: status_html("press Run first: then click a location on a grid image")}
        h, w = record.grid_shape
        picture = np.asarray(image)
        x, y = evt.index[0], evt.index[1]
        i = min(h - 1, max(0, int(y * h / picture.shape[0])))
        j = min(w - 1, max(0, int(x * w / picture.shape[1])))
        return self.point(session, record, i, j)

    def on_pick(self, value: str, request: gr.Request = None) -> dict:
        """A plotly event from the page: 'loc:<index>:<n>' (a scatter point) or 'seg:<id>:<n>' (a tree segment)."""
        session = session_for(request)
        record = session.islands.run
        kind, _, rest = str(value or "").partition(":")
        target = rest.rsplit(":", 1)[0]
        skip = {self.host.status: gr.skip()}
        if record is None or not record.frames or kind not in ("loc", "seg"):
            return skip
        h, w = record.grid_shape
        if kind == "loc":
            try:
                index = int(target)
            except ValueError:
                return skip
            return self.point(session, record, index // w, index % w) if 0 <= index < h * w else skip
        frame = session.islands.shown_frame()
        node = next((n for n in part_whole_tree(frame.features.astype(np.float32)).nodes if n.id == target), None)
        if node is None:
            return skip
        out = {self.host.status: status_html(f"segment {node.id}: {node.size} locations at level {node.level} of the "
                                            f"part-whole tree, lit on the grid images")}
        for component, picture in self.grids.pictures(record, frame, session.islands).items():
            out[component] = plots.highlight(picture, node.mask) if picture is not None else gr.skip()
        return out

    def point(self, session: Session, record: RunRecord, i: int, j: int) -> dict:
        state = session.islands
        h, w = record.grid_shape
        frame = state.shown_frame()
        out = {self.host.status: gr.skip()}
        apm_map = agreement_map(frame.features.astype(np.float32), (i, j)) if frame is not None else None
        teacher_map = agreement_map(record.teacher_grid, (i, j)) if record.teacher_grid is not None else None
        out[self.agreement_apm] = plots.mark(plots.colormap(apm_map), (i, j)) if apm_map is not None else None
        out[self.agreement_teacher] = plots.mark(plots.colormap(teacher_map), (i, j)) if teacher_map is not None else None
        names, values = [], None
        levels = state.levels
        if levels is not None and levels.teacher == record.experiment.teacher:
            spots = [(min(g.shape[0] - 1, int((i + 0.5) * g.shape[0] / h)), min(g.shape[1] - 1, int((j + 0.5) * g.shape[1] / w)))
                     for g in levels.grids]
            values = [float(column_agreement([g], spot)[0]) for g, spot in zip(levels.grids, spots)]
            names = [f"L{k}" for k in range(len(levels.grids))]
        if frame is not None:
            names = [*names, "APM"]
            values = [*(values or []), float(column_agreement([frame.features.astype(np.float32)], (i, j))[0])]
        out[self.column] = plots.column_figure(names, values, f"The column at ({i}, {j}) across levels")
        for component, picture in self.grids.pictures(record, frame, session.islands).items():
            out[component] = plots.mark(picture, (i, j)) if picture is not None else gr.skip()
        state.point = (i, j)
        return out
