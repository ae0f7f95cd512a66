"""Call the app's handlers directly, with no server and no browser, and read their outputs by element id (the
tests and `scripts.measure_levels`).

Handlers return {component: value} dicts; `by_id` turns one into {elem_id: value}. `islands_settings` gives the
Islands tab's inputs as the page sends them (raw: the events run with preprocess=False), and `run_islands` plays
Run's three steps (begin, prepare, stream) for one session.
"""

from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"


class Req:
    """Stands in for gr.Request: the handlers only read `session_hash`."""

    def __init__(self, session_hash: str):
        self.session_hash = session_hash


@functools.lru_cache(maxsize=1)
def app():
    from app.ui import build_app

    return build_app()


def demo():
    return app().demo


def islands():
    return app().islands


def walk():
    return app().walk


def by_id(out: dict) -> dict[str, Any]:
    return {component.elem_id: value for component, value in out.items()}


def uploaded(path: str | Path) -> Path:
    """Where an upload of this file would land: Gradio's upload folder (examples stay where they are)."""
    import hashlib
    import shutil

    from gradio.utils import get_upload_folder

    path = Path(path)
    if path.resolve().is_relative_to(EXAMPLES.resolve()):
        return path
    folder = Path(get_upload_folder()) / hashlib.sha256(str(path).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if not target.exists():
        shutil.copyfile(path, target)
    return target


def file_payload(path: str | Path | None) -> dict | None:
    """A file as the page sends it after an upload: Gradio's FileData dict."""
    if path is None:
        return None
    path = Path(path)
    return {"path": str(uploaded(path)), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


DEFAULTS = {  # by control name (app/controls.py); the order the page sends them is the registry's
    "recipe": "custom", "image": None, "teacher": "dinov2", "layer": 11, "random_weights": True, "features": None,
    "target": "dense", "grid": "auto", "labels": "", "preset": "cpu", "steps": 20, "lr": 1e-3, "lr_schedule": "constant", "seed": 0,
    "record_every": 10, "rgb_weight": 1.0, "feature_loss": "mse", "normalize_target": True, "init": "torch",
    "global_head": "attention", "precision": "auto", "projection": "tsne2d", "perplexity": 30, "metric": "cosine",
    "tsne_init": "pca", "checkpoint": "", "comparable": True,
}


def islands_settings(image: str | Path | None, **changes: Any) -> list:
    """The values `prepare` takes, in the registry's order; image and features are paths (sent as FileData)."""
    from app.controls import RUN_INPUTS

    unknown = set(changes) - set(DEFAULTS)
    assert not unknown, f"not controls: {unknown}"
    values = {**DEFAULTS, **changes}
    values["image"] = file_payload(image) if image is not None and not isinstance(image, dict) else image
    feats = values["features"]
    values["features"] = file_payload(feats) if feats is not None and not isinstance(feats, dict) else feats
    return [values[name] for name in RUN_INPUTS]


def run_islands(request: Req, image, **changes) -> tuple[dict, list[dict]]:
    """Run as the page does: begin, prepare, then every streamed update. Returns (prepare's, stream's) by id."""
    tab = islands()
    tab.begin(request=request)
    prepared = by_id(tab.prepare(*islands_settings(image, **changes), request=request))
    stream = [by_id(out) for out in tab.stream(request=request)]
    return prepared, stream


def plain(value: Any) -> str:
    """The text of a status line (HTML) or any value."""
    return html.unescape(re.sub(r"<[^>]+>", "", str(value))).strip()


def is_error(status: Any) -> bool:
    return "apm-error" in str(status)


def is_skip(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and set(value) == {"__type__"}


def figure(value: Any) -> dict:
    """The plotly JSON of a gr.Plot value (PlotData)."""
    plot = getattr(value, "plot", value)
    return json.loads(plot) if isinstance(plot, str) else plot


def n_points(value: Any) -> int:
    data = figure(value)["data"]
    return len(data[0]["x"]) if data else 0


STATUS = re.compile(r"(?P<lead>[^·]+) · step (?P<step>\d+) / (?P<total>\d+) · (?:(?P<rate>\d+) steps/s · )?"
                    r"(?P<kind>feature|global) loss (?P<loss>\d\.\de[+-]\d+) · (?P<secs>\d+\.\d) s · (?P<islands>\d+) islands")


def parse_status(value: Any) -> dict:
    text = plain(value)
    match = STATUS.search(text)
    assert match, f"status does not read like 'lead · step N / T · ... islands': {text!r}"
    return {"lead": match["lead"].strip().lstrip("⚠").strip(), "step": int(match["step"]), "total": int(match["total"]),
            "loss": float(match["loss"]), "islands": int(match["islands"]), "text": text}


def example(stem: str = "face") -> Path:
    return next(p for p in EXAMPLES.iterdir() if p.stem == stem)


def consume(gen) -> tuple:
    """Drain a generator of handler outputs in a thread: (thread, outputs by id, first-output event)."""
    import threading

    outputs, first = [], threading.Event()

    def loop():
        for out in gen:
            outputs.append(by_id(out))
            first.set()
        first.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread, outputs, first


def start_islands(request: Req, image, **changes) -> tuple:
    """Run's begin and prepare, then its stream drained in a thread (`consume`): for runs watched as they go."""
    tab = islands()
    tab.begin(request=request)
    prepared = by_id(tab.prepare(*islands_settings(image, **changes), request=request))
    assert not is_error(prepared["status"]), prepared["status"]
    return consume(tab.stream(request=request))
