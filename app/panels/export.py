"""Export: the run's animated GIF, its snapshots (.npz), the panels (PNG) and its settings (run.json)."""

from __future__ import annotations

import gradio as gr

from ..session import RunRecord
from . import Panel


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
        self.button.click(tab.export, None, [self.files, tab.status], concurrency_limit=2, concurrency_id="export",
                          **tab.private("export"))

    def reset(self, record: RunRecord) -> dict:
        return {self.files: gr.update(value=None, visible=False)}
