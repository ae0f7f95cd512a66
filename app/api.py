"""The public API: `/run`, `/stop` and `/walk`, with stable keys (not display labels) and optional parameters
with defaults; each returns one dict with named fields and a plain-text status. `/run` streams updates and its
last one carries the files. The page's own events are callable too, but undocumented (named `islands_*`,
`walk_*`). Runs go through the same run driver as the page's (one line, one training slot); every endpoint
through the one error wrapper (`guarded`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image

from apm.errors import APMError
from apm.io import write_atomic
from apm.model import check_grid
from apm.recipes import FILE_TEACHER, experiment

from . import engine, pictures, trained
from .controls import WALK_DEFAULT_FRAMES, WALK_DEFAULT_STEPS, parse_labels, read_walk
from .session import RunRecord, Session, View
from .widgets import (
    choice,
    file_name,
    guarded,
    page_experiment,
    page_teacher,
    plain,
    read_features,
    read_image,
    session_for,
    teacher_choices,
    user_message,
)

log = logging.getLogger("apm.app")


def _error(exc: BaseException, what: str, lead: str) -> dict:
    """The API's error result: one line of ours (the traceback only in the server's log)."""
    if not isinstance(exc, APMError):
        log.error("API %s failed", what, exc_info=exc)
    lead = "" if getattr(exc, "stands_alone", False) else lead
    return {"status": f"error: {lead}{user_message(exc)}", "done": True, "error": True}


def _payload(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


@guarded("run", report=_error)
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
    last adds grid ([h, w]), content, islands (PNG), rgb (PNG), snapshots (run.npz), settings (summary.json) and
    source (trained | joined).
    """
    session = session_for(request)
    state = session.islands
    run_id = session.new_run()
    if teacher is None:
        teacher = page_experiment(recipe).teacher
    exp = experiment(recipe, teacher=teacher, layer=layer, target=target, steps=steps, lr=lr, seed=seed,
                     preset=preset, projection=projection, perplexity=perplexity, random_weights=random_weights,
                     checkpoint=checkpoint or "", grid=check_grid(grid))
    choice(exp.teacher, teacher_choices(), "teacher")
    image_payload, features_payload = _payload(image), _payload(features)
    picture = read_image(image_payload)
    array = read_features(features_payload) if exp.teacher == FILE_TEACHER else None
    state.view = View(exp, True)
    loaded = trained.load(exp.checkpoint, session)
    # the same run trained before, or training now: replayed or joined, with nothing prepared again
    started = engine.start_run(exp, state.view, picture, file_name(image_payload), array, parse_labels(labels), run_id,
                               loaded)
    record = started.record
    state.show(record)
    if started.source == "teacher":  # the teacher's own islands: nothing to train
        yield {"status": plain(engine.status_text(record, None, "done: the teacher's own islands")), "done": True,
               "islands": _file(session, run_id, "teacher-islands.png", record.teacher_projection.image)}
        return
    if started.source == "replayed":
        yield from _replay(session, record, run_id)
        return
    run, viewer, source = started.run, started.viewer, started.source
    session.watch(run, viewer)
    yield from _follow(session, run, viewer, run_id, source)


def _progress(record: RunRecord, frame, status: str) -> dict:
    """One update of a replay, as a live run's: the frame's own step and losses."""
    return {"status": status, "step": frame.step, "total_steps": record.total_steps, "feat_loss": float(frame.feat_loss),
            "rgb_loss": float(frame.rgb_loss), "n_islands": frame.metrics.n_islands, "done": False}


def _result(session: Session, record: RunRecord, run_id: int, source: str, status: str) -> dict:
    """The last update of /run: the figures, and the files as the run writer writes them."""
    last = record.frames[-1]
    files = engine.export_run(session.folder, record, run_id)
    live = record.live
    return {"status": status, "step": live.steps_done, "total_steps": record.total_steps,
            "feat_loss": float(live.history.feat_loss[-1]), "rgb_loss": float(live.history.rgb_loss[-1]),
            "n_islands": last.metrics.n_islands, "done": True, "stop_reason": live.stop_reason,
            "grid": list(record.grid_shape), "source": source,
            "content": last.content.to_dict() if last.content is not None else None,
            "islands": _file(session, run_id, "islands.png", last.projection.image),
            "rgb": _file(session, run_id, "rgb.png", last.rgb),
            "snapshots": FileData(path=str(files[1])).model_dump(),
            "settings": FileData(path=str(files[3])).model_dump()}


@guarded("run", "the replay failed: ", report=_error)
def _replay(session: Session, record: RunRecord, run_id: int) -> Iterator[dict]:
    """A recorded run, at the live cadence, as /run streams a run of its own."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created or time.time()))
    lead = f"replayed: this exact run was trained on {when} (same image and settings)"
    for frame in engine.replay(record, stop=lambda: not session.is_current(run_id)):
        if frame.final:
            break
        yield _progress(record, frame, plain(engine.status_text(record, frame, lead, shown=True)))
    if not session.is_current(run_id) or session.closed:
        yield {"status": "stopped", "done": True}
        return
    kind, ending = engine.ending(record)
    yield _result(session, record, run_id, "replayed",
                  plain(engine.status_text(record, record.frames[-1], f"{ending} · {lead}", shown=True)))


@guarded("run", "the run failed: ", report=_error)
def _follow(session: Session, run: engine.Run, viewer: int, run_id: int, source: str) -> Iterator[dict]:
    record: RunRecord = run.context.record
    last = None
    try:
        for item in run.follow(viewer):
            if isinstance(item, engine.Waiting):
                yield {"status": item.status(), "step": 0, "total_steps": record.total_steps,
                       "done": False, "position": item.position}
                continue
            last = item
            live = record.live
            yield {"status": plain(engine.status_text(record, item)), "step": live.steps_done,
                   "total_steps": record.total_steps, "feat_loss": live.history.feat_loss[-1],
                   "rgb_loss": live.history.rgb_loss[-1], "n_islands": item.metrics.n_islands, "done": False}
    finally:
        run.leave(viewer)
    if last is None or not record.frames:
        yield {"status": "stopped before the first frame", "done": True}
        return
    if session.closed:
        return  # the client went away: no files for it (its folder is gone)
    if not run.finished and (session.is_current(run_id) or run.viewers == 0):
        run.wait_finished(30.0)  # its final frame came (or the last viewer stopped it): it ends within a step
    kind, lead = engine.ending(record)
    if source == "joined":
        lead = f"{lead} (joined)"
    yield _result(session, record, run_id, source, plain(engine.status_text(record, record.frames[-1], lead)))


def _file(session: Session, run_id: int, name: str, image: np.ndarray) -> dict:
    path = session.folder / f"run-{run_id}" / name
    big = Image.fromarray(pictures.enlarge(image, 256))
    write_atomic(path, lambda tmp: big.save(tmp, format="PNG"))
    return FileData(path=str(path)).model_dump()


def api_stop(request: gr.Request = None) -> str:
    """Stop this client's run; what it recorded is kept."""
    session_for(request).stop()
    return "stopped"


@guarded("walk", report=_error)
def api_walk(
    image_a: FileData,
    image_b: FileData,
    teacher: str | None = None,
    layer: int | None = None,
    steps: int = WALK_DEFAULT_STEPS,
    frames: int = WALK_DEFAULT_FRAMES,
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
    session.new_run()
    settings = read_walk({"image_a": _payload(image_a), "image_b": _payload(image_b),
                          "teacher": teacher or page_teacher("dinov2"), "layer": layer, "steps": steps, "frames": frames,
                          "projection": projection,
                          "random_weights": random_weights_default() if random_weights is None else bool(random_weights)})
    images = [read_image(settings.image_a), read_image(settings.image_b)]
    watch = lambda run, viewer: session.watch(run, viewer, leave_on_stop=False)  # noqa: E731 - /stop ends training
    for update in engine.train_and_walk(settings.experiment, images, settings.frames, settings.projection, watch):
        if update["stage"] == "waiting":
            yield {"status": update["waiting"].status(), "done": False}
        elif update["stage"] == "training":
            yield {"status": f"training · step {update['step']} / {update['total']}", "step": update["step"],
                   "total_steps": update["total"], "done": False}
        elif update["stage"] == "walk":
            walk = update["walk"]
            session.walk = walk
            gif, npz = engine.export_walk(session.folder, walk)
            yield {"status": plain(f"{update['note']}done · {update['steps_done']} steps · {walk.teacher_label}"),
                   "done": True, "frames": len(walk.alphas), "endpoint_error": walk.endpoint_error,
                   "gif": FileData(path=str(gif)).model_dump(), "npz": FileData(path=str(npz)).model_dump()}
