"""Export: the run's animated GIF, its snapshots (.npz), the panels (PNG) and its settings (run.json)."""

from __future__ import annotations

import gradio as gr

from .. import engine
from ..session import RunRecord
from ..widgets import guarded, session_for, status_html
from .base import Panel


class ExportPanel(Panel):
    name = "export"

    def build(self, tab) -> None:
        with gr.Row():
            self.button = gr.Button("Export GIF, snapshots (.npz), panels (PNG) and settings", elem_id="export")
            self.files = gr.File(label="Exports", file_count="multiple", interactive=False, elem_id="export-files",
                                 visible=False)

    @property
    def frame_outputs(self) -> list[gr.Component]:
        return []  # a run's frames leave it as it is

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.files]

    def wire(self, tab) -> None:
        self.button.click(self.export, None, [self.files, tab.status], concurrency_limit=2, concurrency_id="export",
                          **tab.private("export"))

    def reset(self, record: RunRecord) -> dict:
        return {self.files: gr.update(value=None, visible=False)}

    @guarded("an export", "the export failed: ")
    def export(self, request: gr.Request = None) -> dict:
        """The shown run's files, as this page draws it."""
        session = session_for(request)
        state = session.islands
        record = state.run
        if record is None or not record.frames:
            return {self.files: gr.update(value=None, visible=False),
                    self.host.status: status_html("nothing to export yet: press Run first", "error")}
        frames = [state.frame_in_view(k) for k in range(len(record.frames))]
        paths = engine.export_run(session.folder, record, session.run_id, state.teacher_projection(), frames)
        return {self.files: gr.update(value=[str(p) for p in paths], visible=True),
                self.host.status: status_html(f"exported {len(record.frames)} frames and the run's settings", "done")}
