"""The notebook example runs as written (its code cells, in order, from the notebooks folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "live_run.ipynb"


def test_the_live_run_notebook_runs(monkeypatch, capsys):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    assert len(code) == 3
    monkeypatch.chdir(NOTEBOOK.parent)
    namespace: dict = {}
    for source in code:
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)  # noqa: S102 - our own notebook
    live = namespace["live"]
    assert live.status == "done" and live.steps_done == 120
    printed = capsys.readouterr().out
    assert printed.count("step ") >= 2 and "done steps" in printed
    assert namespace["previous"].image.shape == (16, 16, 3)
    assert os.path.samefile(Path.cwd(), NOTEBOOK.parent)
