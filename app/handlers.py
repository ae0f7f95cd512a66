"""Event handlers: generators that turn the library's snapshot stream into panel values.

Nothing here trains or projects by itself: `apm.train.OverfitRun` trains, `apm.islands` projects and
measures, `apm.teachers` encodes. The handlers validate input, pace the frames, keep each session's
history for the timeline, and turn every user mistake into a readable message in the page.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from apm.errors import APMError, InputError, WeightsUnavailableError
from apm.images import downsample_rgb, load_image
from apm.io import save_gif, save_npz, write_atomic
from apm.islands import ProjectionConfig, island_metrics, project
from apm.islands import pca_colours as teacher_islands
from apm.teachers import create_teacher, load_feature_array, random_weights_default
from apm.train import OverfitRun, Target, train_config_for

from . import plots
from .state import Frame, RunRecord, Session, SessionStore

log = logging.getLogger("apm.app")

MAX_STEPS = int(os.environ.get("APM_MAX_STEPS", 2000))  # per-run cap on shared hardware
MAX_RUN_SECONDS = float(os.environ.get("APM_MAX_RUN_SECONDS", 120))  # per-run wall-clock cap
MAX_CONCURRENT_RUNS = int(os.environ.get("APM_MAX_CONCURRENT_RUNS", 1))  # 2 vCPUs: one run uses both cores
# torch threads of a training thread (per thread: teachers keep theirs); unset keeps torch's default, which
# measured as good as one thread on 2 vCPUs with the page rendering beside it
TRAIN_THREADS = int(os.environ["APM_TRAIN_THREADS"]) if os.environ.get("APM_TRAIN_THREADS") else None
FRAME_INTERVAL_S = 0.1  # the page hears from a run at least this often (frames, or the step counter between them)
DEFAULT_LABELS = "face, house, car, snowman, flower, temple, dog, cat, tree, person"

TEACHERS = {
    "DINOv2 ViT-S/14": "dinov2",
    "CLIP ViT-B/16": "clip",
    "MViTv2-S (a static image as a boring video)": "mvit",
    "Your own features (.npy / .pt)": "file",
}
TARGETS = {"Dense grid": "dense", "Global token only": "global", "Dense grid + global token": "both"}
PROJECTIONS = {
    "t-SNE 2D": ProjectionConfig(method="tsne", dim=2),
    "t-SNE 3D": ProjectionConfig(method="tsne", dim=3),
    "PCA (3 components)": ProjectionConfig(method="pca", dim=3),
}

STORE = SessionStore()


def _zero_gpu():
    """`spaces.GPU` on a Hugging Face ZeroGPU Space, a no-op decorator everywhere else.

    ZeroGPU runs a decorated call in a short-lived GPU worker, so it suits the stateless teacher step; the
    APM's training stays in this process, where Stop and the timeline can reach it (and uses CUDA by itself
    on a Space with a dedicated GPU: devices default to "auto").
    """
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces  # only present on Spaces

            return spaces.GPU
        except ImportError:
            log.warning("SPACES_ZERO_GPU is set but the `spaces` package is missing: running without ZeroGPU")
    return lambda fn: fn


@_zero_gpu()
def encode_with_teacher(key: str, layer: int | None, random_weights: bool, image: Image.Image):
    """Create (or reuse) a teacher and encode an image: (teacher, TeacherOutput)."""
    teacher = create_teacher(key, layer=layer, random_weights=random_weights)
    return teacher, teacher.encode(image)


def session_for(request: gr.Request | None) -> Session:
    return STORE.get(getattr(request, "session_hash", None) or "local")


# helpers


@dataclass
class Prepared:
    """A validated request: the image, the target, and what to compare the APM with."""

    image: Image.Image
    target: Target
    teacher_label: str
    teacher_grid: np.ndarray | None
    teacher_islands: np.ndarray | None
    teacher: Any | None
    teacher_global: np.ndarray | None


def _teacher_key(choice: str) -> str:
    if choice not in TEACHERS:
        raise InputError(f"unknown teacher {choice!r}; choose one of: {', '.join(TEACHERS)}")
    return TEACHERS[choice]


def layer_choices(teacher_choice: str) -> tuple[int, int]:
    """(number of layers, default layer) of a teacher, without loading its weights."""
    key = TEACHERS.get(teacher_choice, "dinov2")
    if key == "file":
        return 1, 0
    teacher = create_teacher(key, random_weights=True)
    return teacher.num_layers, teacher.num_layers - 1


def prepare(image_path: str | None, teacher_choice: str, layer: float | None, random_weights: bool,
            features_file: str | None, target_kind: str) -> Prepared:
    if not image_path:
        raise InputError("upload an image (or pick an example) first")
    image = load_image(image_path)
    key = _teacher_key(teacher_choice)
    kind = TARGETS.get(target_kind, "dense")
    if key == "file":
        if not features_file:
            raise InputError("upload a feature array (.npy or .pt of shape (h, w, d) or (d,)) for 'your own features'")
        array = load_feature_array(features_file)
        dense = array.ndim == 3
        grid = array if dense else None
        return Prepared(image, Target.from_array(array), f"your features {tuple(array.shape)}", grid,
                        teacher_islands(grid) if dense else None, None, None)
    teacher, out = encode_with_teacher(key, None if layer is None else int(layer), bool(random_weights), image)
    target = Target(grid=out.grid if kind in ("dense", "both") else None,
                    global_vector=out.global_vector if kind in ("global", "both") else None)
    return Prepared(image, target, out.info.label, out.grid, teacher_islands(out.grid), teacher, out.global_vector)


def _labels(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()][:64]


def _zero_shot(teacher: Any, vector: np.ndarray | None, labels: list[str]) -> list[tuple[str, float]] | None:
    if teacher is None or vector is None or not labels or not hasattr(teacher, "zero_shot"):
        return None
    if vector.shape[-1] != teacher.info.global_dim:
        return None
    return teacher.zero_shot(vector, labels, top_k=min(5, len(labels)))


def _label_dict(pairs: list[tuple[str, float]] | None) -> dict[str, float] | None:
    return None if pairs is None else {label: float(p) for label, p in pairs}


def status_line(frame: Frame | None, record: RunRecord | None, note: str = "") -> str:
    if frame is None:
        text = note or "Ready: pick an image and a teacher, then press Run."
        return f"<div class='apm-status'>{text}</div>"
    parts = [
        f"step {frame.step} / {frame.total_steps}",
        f"{frame.steps_per_s:.0f} steps/s",
        f"feature loss {frame.feat_loss:.1e}",
        f"{frame.elapsed_s:.1f} s",
        f"{frame.metrics.n_islands} islands",
    ]
    if record is not None and record.status != "running":
        parts.insert(0, {"done": "done", "stopped": "stopped", "failed": "failed"}.get(record.status, record.status))
    text = " · ".join(parts) + (f" · {note}" if note else "")
    return f"<div class='apm-status'>{text}</div>"


def error_line(message: str) -> str:
    """A readable error in the status box. The text is escaped: it can quote a file name or an exception."""
    return f"<div class='apm-status apm-error'>⚠ {html.escape(str(message), quote=False)}</div>"


def folded_markdown(record: RunRecord) -> str:
    f = record.folded
    rows = "\n".join(f"| {name} | {count:,} |" for name, count in f["parts"].items())
    return (
        f"**Folded state**: {f['param_count']:,} parameters, {f['param_bytes'] / 2**20:.1f} MB. "
        "This is all the APM *is* before it looks at a location.\n\n"
        f"| part | parameters |\n|---|---|\n{rows}\n\n"
        f"**Unfolded state**: {record.grid_shape[0]} x {record.grid_shape[1]} queries, one per location. Each "
        "query is the same trigger column (what the conv filter squeezed out of the whole image) "
        "followed by that location's positional code. The shared MLP answers every query "
        "independently, so locations can be decoded in any order."
    )


# frames and panels


def make_frame(snap, trigger_column: np.ndarray, record: RunRecord, prepared: Prepared,
               projection_config: ProjectionConfig, previous: Frame | None, labels: list[str], final: bool) -> Frame:
    features = snap.features  # (h, w, d): one image
    projection = project(features, projection_config, previous.projection if previous else None, full_fit=final)
    teacher = prepared.teacher_grid if (prepared.teacher_grid is not None and prepared.teacher_grid.shape == features.shape) else None
    metrics = island_metrics(features, teacher)
    return Frame(
        step=snap.step,
        total_steps=record.total_steps,
        elapsed_s=snap.elapsed_s,
        steps_per_s=snap.step / max(snap.elapsed_s, 1e-6),
        feat_loss=snap.feat_loss,
        rgb_loss=snap.rgb_loss,
        features=features.astype(np.float16),
        rgb=snap.rgb,
        projection=projection,
        metrics=metrics,
        trigger_column=trigger_column,
        apm_labels=_zero_shot(prepared.teacher, snap.global_vector, labels),
    )


STATIC = {2, 4, 9, 11}  # output positions that do not change during a run: input, teacher islands, folded, CLIP
SLOW = {8, 10}  # heavy outputs refreshed about once a second during a run: unfolded queries, conv filter
HEAVY = {6, 7, 8, 9, 10, 11, 12}  # left out of the first frame so the islands appear as soon as possible
N_OUTPUTS = 14


def panels(record: RunRecord | None, index: int | None, note: str = "", skip: set[int] = frozenset()) -> tuple:
    """Every panel's value for one frame of a run (or the empty page); positions in `skip` are left as they are."""
    if record is None or not record.frames:
        return (status_line(None, None, note), plots.islands_scatter(None), None, None, None, None,
                plots.loss_figure([], [], [], [], [], []), plots.heatmap_figure(None, "Teacher fidelity"),
                None, "", None, None, None, gr.update(value=0, maximum=1))
    index = len(record.frames) - 1 if index is None else int(np.clip(index, 0, len(record.frames) - 1))
    frame = record.frames[index]
    fr = record.frames
    n_steps = len(record.curve_step)  # the trainer thread appends while we read: take one consistent length
    fid = frame.metrics.fidelity_map
    fidelity_title = "cos(APM, teacher) per location" + (
        f", mean {frame.metrics.fidelity:.2f}" if frame.metrics.fidelity is not None else "")
    makers = [
        lambda: status_line(frame, record, note),
        lambda: plots.islands_scatter(frame.projection, f"Islands at step {frame.step}: each point is one location"),
        lambda: plots.to_uint8(record.input_small),
        lambda: plots.to_uint8(frame.projection.image),
        lambda: None if record.teacher_islands is None else plots.to_uint8(record.teacher_islands),
        lambda: plots.to_uint8(frame.rgb),
        lambda: plots.loss_figure(record.curve_step[:n_steps], record.curve_feat[:n_steps], record.curve_rgb[:n_steps],
                                  [f.step for f in fr], [f.metrics.n_islands for f in fr],
                                  [f.metrics.n_connected for f in fr], current_step=frame.step),
        lambda: plots.heatmap_figure(fid, fidelity_title if fid is not None else "needs a dense teacher target", 0.0, 1.0),
        lambda: plots.unfolded_figure(frame.trigger_column, record.positional, record.grid_shape),
        lambda: folded_markdown(record),
        lambda: plots.enlarge(record.conv_filter, 96),
        lambda: _label_dict(record.teacher_labels),
        lambda: _label_dict(frame.apm_labels),
        lambda: gr.update(value=index, maximum=max(1, len(record.frames) - 1)),
    ]
    return tuple(gr.skip() if k in skip else make() for k, make in enumerate(makers))


class Trainer(threading.Thread):
    """Runs the training loop beside the page: rendering a frame never pauses training.

    It publishes the latest recorded snapshot (with the trigger column and conv filter read between steps,
    in this thread, so the page never touches the model mid-update) and stops on Stop, a new run in the
    session, a closed tab, the end of the run, or when nobody has looked for `ABANDON_S` seconds.
    """

    ABANDON_S = 5.0

    def __init__(self, run: OverfitRun, session: Session, run_id: int, record: RunRecord):
        super().__init__(daemon=True, name=f"apm-train-{session.session_id[:8]}-{run_id}")
        self.apm_run, self.session, self.run_id, self.record = run, session, run_id, record
        self.cond = threading.Condition()
        self.latest: tuple | None = None  # (snapshot, trigger column, conv weights)
        self.version = 0
        self.finished = False
        self.stopped = False
        self.error: BaseException | None = None
        self.last_seen = time.monotonic()

    def run(self) -> None:  # noqa: D102 - threading.Thread API
        if TRAIN_THREADS:
            torch.set_num_threads(TRAIN_THREADS)
        stream = iter(self.apm_run)
        try:
            for snap in stream:
                self.record.curve_step.append(snap.step)
                self.record.curve_feat.append(snap.feat_loss)
                self.record.curve_rgb.append(snap.rgb_loss)
                self.record.last_active = time.monotonic()
                if snap.recorded:
                    column = self.apm_run.trigger_columns()[0].cpu().numpy()
                    conv = self.apm_run.model.column.conv.weight.detach().float().cpu().numpy()
                    with self.cond:
                        self.latest, self.version = (snap, column, conv), self.version + 1
                        self.cond.notify_all()
                if not snap.done and (self.session.should_stop(self.run_id)
                                      or time.monotonic() - self.last_seen > self.ABANDON_S):
                    self.stopped = True
                    break
        except BaseException as exc:  # noqa: BLE001 - reported to the page by the generator
            self.error = exc
        finally:
            stream.close()
            with self.cond:
                self.finished = True
                self.cond.notify_all()

    def wait(self, seen: int, timeout: float) -> tuple[tuple | None, int]:
        """The latest published snapshot if newer than version `seen` (waits up to `timeout`)."""
        self.last_seen = time.monotonic()
        with self.cond:
            if self.version == seen and not self.finished:
                self.cond.wait(timeout)
            return (self.latest if self.version != seen else None), self.version


def run(image_path, teacher_choice, layer, random_weights, features_file, target_kind, preset, steps, lr, seed,
        projection_choice, update_every, labels_text, request: gr.Request = None) -> Iterator[tuple]:
    """Train a fresh APM and stream its panels; a Stop click or a closed tab ends it within a frame."""
    session = session_for(request)
    run_id = session.start_run()
    if session.should_stop(run_id):  # Stop was pressed while this run waited in the queue
        yield (status_line(None, None, "stopped before it started: press Run again"), *([gr.skip()] * 13))
        return
    try:
        prepared = prepare(image_path, teacher_choice, layer, random_weights, features_file, target_kind)
        steps = int(steps or 300)
        if not 1 <= steps <= MAX_STEPS:
            raise InputError(f"steps must be between 1 and {MAX_STEPS} on this shared hardware")
        config = train_config_for(
            preset, steps=steps, lr=float(lr) if lr else None, seed=int(seed or 0),
            record_every=max(1, int(update_every or 10)), time_budget_s=MAX_RUN_SECONDS,
        )
        apm_run = OverfitRun(prepared.image, prepared.target, config, preset)
    except WeightsUnavailableError as exc:
        yield (error_line(f"{exc} Tick 'untrained teacher' to run offline with random weights."), *([gr.skip()] * 13))
        return
    except (APMError, ValueError) as exc:
        yield (error_line(str(exc)), *([gr.skip()] * 13))
        return

    labels = _labels(labels_text)
    h, w = apm_run.model_config.grid
    model = apm_run.model
    with torch.no_grad():
        positional = model.pos.float().cpu().numpy()
    conv = model.column.conv.weight.detach().float().cpu().numpy()
    record = RunRecord(
        run_id=run_id, total_steps=config.steps, grid_shape=(h, w),
        input_small=downsample_rgb(prepared.image, h, w),
        teacher_label=prepared.teacher_label, teacher_islands=prepared.teacher_islands,
        teacher_grid=prepared.teacher_grid, folded=model.folded_state().__dict__,
        conv_filter=plots.filter_image(conv), positional=positional,
        teacher_labels=_zero_shot(prepared.teacher, prepared.teacher_global, labels),
    )
    session.run = record
    projection_config = PROJECTIONS.get(projection_choice, PROJECTIONS["t-SNE 2D"])
    trainer = Trainer(apm_run, session, run_id, record)
    trainer.start()
    note = prepared.teacher_label
    seen, last_slow = 0, 0.0
    try:
        while True:
            latest, seen = trainer.wait(seen, FRAME_INTERVAL_S)
            final = trainer.finished and latest is None
            if final:
                break
            if latest is None:  # nothing new recorded yet: keep the step counter moving
                if record.frames and len(record.curve_step):
                    yield (status_line(_live(record), record, note), *([gr.skip()] * (N_OUTPUTS - 1)))
                continue
            snap, column, conv = latest
            previous = record.frames[-1] if record.frames else None
            record.conv_filter = plots.filter_image(conv)
            frame = make_frame(snap, column, record, prepared, projection_config, previous, labels, final=snap.done)
            record.add_frame(frame)
            if snap.done:
                record.status, record.stop_reason = "done", snap.stop_reason
                if snap.stop_reason == "time_budget":
                    note = f"stopped at the {MAX_RUN_SECONDS:.0f} s cap for shared hardware"
            skip: set[int] = set()
            if previous is None and not snap.done:
                skip |= HEAVY  # the first frame comes light and fast; the heavy panels follow with the second
            elif len(record.frames) == 2 and not snap.done:
                skip |= STATIC - HEAVY  # the second frame brings the heavy panels the first one left out
            elif not snap.done:
                skip |= STATIC
                if time.monotonic() - last_slow < 1.0:
                    skip |= SLOW
            if not skip & SLOW:
                last_slow = time.monotonic()
            yield panels(record, None, note, skip)
        trainer.join()
        if trainer.error is not None:
            raise trainer.error
        if record.status == "running":
            record.status = "stopped"
            note = "stopped by you; everything recorded so far is kept"
            out = panels(record, None, note)
            yield (status_line(_live(record), record, note), *out[1:]) if record.frames else out
    except Exception as exc:  # noqa: BLE001 - one user's failure must never take the app down
        log.exception("run failed")
        record.status = "failed"
        yield (error_line(f"the run failed: {exc}"), *([gr.skip()] * (N_OUTPUTS - 1)))
    finally:
        if trainer.is_alive() and session.active_run_id == run_id:
            session.request_stop()  # the page went away (closed generator): free the CPU now
        # no waiting here: Gradio closes an abandoned generator on its event loop; the trainer ends after its step
        if record.status == "running":  # closed mid-run (client gone, job cancelled): the record says so
            record.status = "stopped"


def _live(record: RunRecord) -> Frame:
    """The last frame with the live step and losses, for status-only updates between frames."""
    last = record.frames[-1]
    n = len(record.curve_step)
    step = record.curve_step[n - 1]
    elapsed = last.elapsed_s * step / max(last.step, 1)
    return replace(last, step=step, feat_loss=record.curve_feat[n - 1], rgb_loss=record.curve_rgb[n - 1],
                               elapsed_s=elapsed)


def queue_run(request: gr.Request = None) -> None:
    """The Run button's first, unqueued step: stop this tab's current run and ready a stop flag for the next."""
    session_for(request).queue_run()


def stop(request: gr.Request = None) -> None:
    session = STORE.peek(getattr(request, "session_hash", None) or "local")
    if session is not None:
        session.request_stop()


def scrub(index: float, request: gr.Request = None) -> tuple:
    """Show a recorded frame: every panel follows the timeline."""
    session = session_for(request)
    record = session.run
    if record is None or not record.frames:
        return panels(None, None, "nothing recorded yet: press Run")
    return panels(record, int(index), record.teacher_label)  # the same note as the live frames


def on_teacher_change(teacher_choice: str, target_kind: str):
    """Layer slider range, the feature-file box and the CLIP labels box follow the chosen teacher."""
    num_layers, default = layer_choices(teacher_choice)
    key = TEACHERS.get(teacher_choice)
    target = "Dense grid + global token" if key == "clip" else target_kind
    return (
        gr.update(minimum=0, maximum=max(1, num_layers - 1), value=default, interactive=key != "file",
                  label=f"Layer (GLOM level, 0-{num_layers - 1})" if key != "file" else "Layer (not used)"),
        gr.update(visible=key == "file"),
        gr.update(visible=key == "clip"),
        gr.update(value=target),
        gr.update(visible=key == "clip"),
        gr.update(visible=key == "clip"),
    )


def unload(request: gr.Request = None) -> None:
    """The tab closed: stop its run and drop its files."""
    STORE.drop(getattr(request, "session_hash", None) or "local")


# exports


def _caption(image: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (image.width, image.height + 18), "white")
    canvas.paste(image, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(30, 30, 30))
    return canvas


def _scatter_image(frame: Frame, size: int = 256) -> Image.Image:
    canvas = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    emb = frame.projection.embedding[:, :2] if frame.projection.dim >= 2 else np.c_[frame.projection.embedding[:, 0], np.zeros(len(frame.projection.embedding))]
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    xy = (emb - lo) / np.where(hi > lo, hi - lo, 1.0) * (size - 16) + 8
    for (x, y), c in zip(xy, plots.to_uint8(frame.projection.colours)):
        draw.ellipse((x - 3, size - y - 3, x + 3, size - y + 3), fill=tuple(int(v) for v in c))
    return canvas


def export(request: gr.Request = None) -> tuple[dict, str]:
    """An animated GIF of the islands, the snapshots as .npz and the panels as PNG, in this session's folder."""
    session = session_for(request)
    record = session.run
    if record is None or not record.frames:
        return gr.update(value=None, visible=False), error_line("nothing to export yet: press Run first")
    try:
        return _export(session, record)
    except Exception as exc:  # noqa: BLE001 - a full disk or a bad frame: a message, files written before stay
        log.exception("export failed")
        return gr.skip(), error_line(f"the export failed: {exc}")


def _export(session: Session, record: RunRecord) -> tuple[dict, str]:
    out = session.folder / f"run-{record.run_id}"
    frames = list(record.frames)  # the trainer's generator may thin the list while we write
    gif_frames = [
        _caption(Image.fromarray(np.concatenate([plots.enlarge(f.projection.image, 192), plots.enlarge(f.rgb, 192)], axis=1)),
                 f"step {f.step}: islands | RGB")
        for f in frames
    ]
    save_gif(out / "islands.gif", gif_frames, duration_ms=150)
    save_npz(
        out / "snapshots.npz",
        step=np.array([f.step for f in frames]), feat_loss=np.array([f.feat_loss for f in frames], np.float32),
        rgb_loss=np.array([f.rgb_loss for f in frames], np.float32),
        features=np.stack([f.features.astype(np.float32) for f in frames]), rgb=np.stack([f.rgb for f in frames]),
        islands=np.stack([f.projection.image for f in frames]), embedding=np.stack([f.projection.embedding for f in frames]),
        n_islands=np.array([f.metrics.n_islands for f in frames]), curve_step=np.array(record.curve_step),
        curve_feat_loss=np.array(record.curve_feat, np.float32), curve_rgb_loss=np.array(record.curve_rgb, np.float32),
    )
    last = frames[-1]
    tiles = [
        _caption(Image.fromarray(plots.enlarge(record.input_small, 256)), "input (grid resolution)"),
        _caption(_scatter_image(last), f"islands scatter, step {last.step}"),
        _caption(Image.fromarray(plots.enlarge(last.projection.image, 256)), "APM islands"),
    ]
    if record.teacher_islands is not None:
        tiles.append(_caption(Image.fromarray(plots.enlarge(record.teacher_islands, 256)), "teacher islands"))
    tiles.append(_caption(Image.fromarray(plots.enlarge(last.rgb, 256)), "RGB reconstruction"))
    if last.metrics.fidelity_map is not None:
        tiles.append(_caption(Image.fromarray(plots.enlarge(plots.colormap(last.metrics.fidelity_map, 0, 1), 256)), "teacher fidelity"))
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 8
    write_atomic(out / "panels.png", lambda tmp: sheet.save(tmp, format="PNG"))
    files = [str(out / name) for name in ("islands.gif", "snapshots.npz", "panels.png")]
    return gr.update(value=files, visible=True), status_line(last, record, f"exported {len(frames)} frames")


def default_random_weights() -> bool:
    return random_weights_default()


def example_paths() -> list[str]:
    folder = Path(__file__).resolve().parent.parent / "assets" / "examples"
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
