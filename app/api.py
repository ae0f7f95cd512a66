"""The public API: `/run`, `/stop` and `/walk`, with stable keys (not display labels) and optional parameters
with defaults; each returns one dict with named fields and a plain-text status. `/run` streams updates and its
last one carries the files. The page's own events are callable too, but undocumented (named `islands_*`,
`walk_*`)."""

from __future__ import annotations

import logging

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image

from apm.errors import APMError, InputError
from apm.io import write_atomic
from apm.recipes import FILE_TEACHER, experiment

from . import engine, pictures, trained
from .controls import parse_labels
from .engine import View
from .session import RunRecord, Session
from .tabs.islands import read_features
from .tabs.walk import DEFAULT_FRAMES, DEFAULT_STEPS, export_walk_files, train_and_walk
from .widgets import TEACHER_CHOICES, choice, file_name, page_teacher, plain, read_image, session_for, user_message

log = logging.getLogger("apm.app")


def _grid(value) -> int | None:
    """The API's grid: None, or a whole number of locations a side (checked against the choices by Experiment)."""
    if value in (None, "", 0):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"grid must be 16, 24 or 32 locations a side, not {value!r}") from None
    if number != int(number):
        raise InputError(f"grid must be 16, 24 or 32 locations a side, not {value!r}")
    return int(number)


def api_run(
    image: FileData,
    recipe: str = "custom",
    teacher: str | None = None,
    layer: int | None = None,
    target: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    preset: str | None = None,
    projection: str | None = None,
    perplexity: float | None = None,
    random_weights: bool | None = None,
    labels: str = "",
    features: FileData | None = None,
    checkpoint: str | None = None,
    grid: int | None = None,
    request: gr.Request = None,
) -> dict:
    """Overfit a fresh APM on an image and stream its progress; the last result carries the islands as files.

    Parameters use stable keys: recipe in custom | cls-ttt | dense-distill | teacher-islands; teacher in dinov2,
    dinov2:imgfocus, dinov2:large-reg4, clip, clip:l14, mvit, file (with `features`); target in dense | global | both; preset in
    cpu | paper; projection in tsne2d | tsne3d | pca | paper | paper1d; checkpoint: a shipped checkpoint's name
    or hf:ORG/REPO, to train further from a trained APM; grid in 16 | 24 | 32 locations a side (the teacher's
    input size follows: 14 px a location for DINOv2; omitted: the teacher's own). Omitted settings take the recipe's.
    Each update is a dict: status (plain text), step, total_steps, feat_loss, rgb_loss, n_islands, done; the
    last adds grid ([h, w]), content, islands (PNG), rgb (PNG), snapshots (.npz) and settings (the run's JSON).
    """
    session = session_for(request)
    state = session.islands
    run_id = session.new_run()
    try:
        if teacher is None:
            teacher = page_teacher(experiment(recipe).teacher)
        exp = experiment(recipe, teacher=teacher, layer=layer, target=target, steps=steps, lr=lr, seed=seed,
                         preset=preset, projection=projection, perplexity=perplexity, random_weights=random_weights,
                         checkpoint=checkpoint or "", grid=_grid(grid))
        if exp.teacher not in {key for _, key in TEACHER_CHOICES}:
            choice(exp.teacher, TEACHER_CHOICES, "teacher")
        image_payload = image.model_dump() if hasattr(image, "model_dump") else image
        features_payload = features.model_dump() if hasattr(features, "model_dump") else features
        picture = read_image(image_payload)
        array = read_features(features_payload) if exp.teacher == FILE_TEACHER else None
        state.view = View(exp, True)
        prepared = engine.prepare_run(exp, picture, file_name(image_payload), array, parse_labels(labels), run_id,
                                      state.view, trained.load(exp.checkpoint, session))
    except Exception as exc:  # noqa: BLE001 - a clear line, never a traceback
        if not isinstance(exc, APMError):
            log.exception("API run failed")
        yield {"status": f"error: {user_message(exc)}", "done": True, "error": True}
        return
    record = prepared.record
    state.show(record)
    if prepared.overfit is None:
        record.frames = []
        yield {"status": plain(engine.status_text(record, None, "done: the teacher's own islands")), "done": True,
               "islands": _file(session, record, "teacher-islands.png", record.teacher_projection.image)}
        return
    last = None
    try:
        for frame in engine.live_frames(prepared, lambda: state.view):
            last = frame
            live = record.live
            yield {"status": plain(engine.status_text(record, frame)), "step": live.steps_done, "total_steps": record.total_steps,
                   "feat_loss": live.history.feat_loss[-1], "rgb_loss": live.history.rgb_loss[-1],
                   "n_islands": frame.metrics.n_islands, "done": False}
    except Exception as exc:  # noqa: BLE001
        log.exception("API run failed")
        yield {"status": f"error: the run failed: {user_message(exc)}", "done": True, "error": True}
        return
    if last is None:
        yield {"status": "stopped before the first frame", "done": True}
        return
    kind, lead = engine.ending(record)
    files = engine.export_run(session.folder, record)
    yield {"status": plain(engine.status_text(record, last, lead)), "step": record.live.steps_done,
           "total_steps": record.total_steps, "feat_loss": record.live.history.feat_loss[-1],
           "rgb_loss": record.live.history.rgb_loss[-1], "n_islands": last.metrics.n_islands, "done": True,
           "stop_reason": record.live.stop_reason, "grid": list(record.grid_shape),
           "content": last.content.to_dict() if last.content is not None else None,
           "islands": _file(session, record, "islands.png", last.projection.image),
           "rgb": _file(session, record, "rgb.png", last.rgb),
           "snapshots": FileData(path=str(files[1])).model_dump(),
           "settings": FileData(path=str(files[3])).model_dump()}


def _file(session: Session, record: RunRecord, name: str, image: np.ndarray) -> dict:
    path = session.folder / f"run-{record.run_id}" / name
    big = Image.fromarray(pictures.enlarge(image, 256))
    write_atomic(path, lambda tmp: big.save(tmp, format="PNG"))
    return FileData(path=str(path)).model_dump()


def api_stop(request: gr.Request = None) -> str:
    """Stop this client's run; what it recorded is kept."""
    session_for(request).stop()
    return "stopped"


def api_walk(
    image_a: FileData,
    image_b: FileData,
    teacher: str | None = None,
    layer: int | None = None,
    steps: int = DEFAULT_STEPS,
    frames: int = DEFAULT_FRAMES,
    projection: str = "pca",
    random_weights: bool | None = None,
    request: gr.Request = None,
) -> dict:
    """Train one APM on two images and walk its trigger column from A to B.

    Updates: {status, step, total_steps, done}; the last adds gif (RGB | islands along the walk), npz (alpha,
    rgb, features, islands) and endpoint_error. teacher in dinov2, dinov2:imgfocus, dinov2:large-reg4, clip,
    clip:l14, mvit (omitted: dinov2, or dinov2:imgfocus where the Hub cannot be had); projection in pca | tsne2d.
    """
    from apm.env import random_weights_default

    session = session_for(request)
    run_id = session.new_run()
    payloads = [x.model_dump() if hasattr(x, "model_dump") else x for x in (image_a, image_b)]
    weights = random_weights_default() if random_weights is None else bool(random_weights)
    try:
        for update in train_and_walk(session, run_id, *payloads, teacher, layer, weights, steps, frames, projection):
            if update["stage"] == "training":
                yield {"status": f"training · step {update['step']} / {update['total']}", "step": update["step"],
                       "total_steps": update["total"], "done": False}
            elif update["stage"] == "walk":
                walk = update["walk"]
                session.walk = walk
                gif, npz = export_walk_files(session, walk)
                yield {"status": plain(f"{update['note']}done · {update['steps_done']} steps · {walk.teacher_label}"),
                       "done": True, "frames": len(walk.alphas), "endpoint_error": walk.endpoint_error,
                       "gif": FileData(path=str(gif)).model_dump(), "npz": FileData(path=str(npz)).model_dump()}
    except Exception as exc:  # noqa: BLE001
        if not isinstance(exc, APMError):
            log.exception("API walk failed")
        yield {"status": f"error: {user_message(exc)}", "done": True, "error": True}
