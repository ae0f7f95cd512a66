"""An islands run, without Gradio: how it is prepared (validated, encoded, built), how its frames are made while
it trains (`live_frames`, the producer the driver runs), how a trained APM decodes an image in one pass, and how
a run's state reads as a status line."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from apm import runs
from apm.asynchronous import Decoder
from apm.content import LIVE_LOCATIONS, ContentReference, resize_grid
from apm.env import server_niceness
from apm.errors import APMError, InputError
from apm.images import downsample_rgb
from apm.islands import LIVE_WARM_ITERS, Projection, island_metrics, project, squared_distances
from apm.live import LiveRun
from apm.recipes import FILE_TEACHER, Experiment
from apm.teachers import teacher_spec
from apm.train import OverfitRun, Snapshot, Target

from ..session import Frame, Prepared, RunRecord, View
from ..settings import LIMITS, teacher_choices
from .teacher import encode_image

log = logging.getLogger("apm.app")

REPLAY_POLL_S = 0.05  # a replay hears Skip and Stop within this
# a run starts training at the web server's own priority (not ahead of it) while the server streams to at least
# this many visitors: a class replaying the examples keeps its cadence while the uploads train (they have minutes)
BUSY_STREAMS = 4
QUICK_FIT = {"early_exaggeration_iters": 25, "full_iters": 25}  # the first live frame: a short t-SNE (the next frames go on converging it)


def trained_experiment(exp: Experiment, loaded: Any) -> Experiment:
    """The settings of test-time training from a checkpoint: its teacher and layer (when it names them)."""
    meta = loaded.meta
    if meta.get("teacher"):
        exp = replace(exp, teacher=teacher_key(meta["teacher"]), layer=int(meta.get("layer", 0)),
                      random_weights=bool(meta.get("random_weights", exp.random_weights)))
    elif exp.teacher == FILE_TEACHER:
        raise InputError("this checkpoint does not name its teacher: pick the teacher it was trained on")
    h, w = loaded.apm.config.grid
    if exp.grid is not None and (exp.grid, exp.grid) != (h, w):
        raise InputError(f"this checkpoint decodes a {h} x {w} grid: set the grid to {h} (or leave it to the teacher)")
    return replace(exp, target="dense", trains=True)


def teacher_key(teacher_id: str) -> str:
    """The picker's key for a teacher id ('dinov2:vit_small_patch14_dinov2.lvd142m' -> 'dinov2')."""
    wanted = teacher_spec(teacher_id).id
    for _, key in teacher_choices():
        if key != FILE_TEACHER and teacher_spec(key).id == wanted:
            return key
    return teacher_id


def prepare_run(exp: Experiment, image: Image.Image, image_name: str, features: np.ndarray | None,
                labels: list[str], run_id: int, view: View, loaded: Any = None) -> Prepared:
    """Validate and build a run: encode with the teacher (or take the user's feature array), build the APM (fresh,
    or from a trained APM's weights when `loaded`, an `app.trained.Loaded`, is given).

    Raises `InputError` (or another `APMError`) with a message for the page.
    """
    if exp.steps > LIMITS.max_steps:
        raise InputError(f"steps must be at most {LIMITS.max_steps} on this shared hardware")
    if loaded is not None:
        exp = trained_experiment(exp, loaded)
    teacher = None
    if exp.teacher == FILE_TEACHER:
        if features is None:
            raise InputError("upload a feature array (.npy or .pt of shape (h, w, d) or (d,)) for 'your own features'")
        array = np.asarray(features, dtype=np.float32)
        if exp.grid is not None and array.ndim == 3 and array.shape[:2] != (exp.grid, exp.grid):
            raise InputError(f"your feature array is a {array.shape[0]} x {array.shape[1]} grid: set the grid to match "
                             "it, or leave it to the teacher")
        target = Target.from_array(array)
        exp = replace(exp, target="dense" if array.ndim == 3 else "global")  # the target follows the array
        teacher_grid, teacher_global = (array, None) if array.ndim == 3 else (None, array)
        teacher_label = f"your features {tuple(array.shape)}"
    else:
        teacher, (out,) = encode_image(exp.teacher, exp.layer, exp.random_weights, image,
                                       options=exp.teacher_options())
        teacher_grid, teacher_global, teacher_label = out.grid, out.global_vector, out.info.label
        target = Target(grid=out.grid if exp.target in ("dense", "both") else None,
                        global_vector=out.global_vector if exp.target in ("global", "both") else None)

    if teacher is None or not teacher.spec.supports_zero_shot:
        labels = []  # the labels box is hidden for teachers without a text tower; its text is not for them
    overfit = None
    if exp.trains:
        config = exp.train_config(time_budget_s=LIMITS.max_run_seconds)
        if loaded is not None:
            overfit = OverfitRun(image, target, config, init=loaded.apm, target_scale=loaded.meta.get("feature_scale"))
        else:
            overfit = OverfitRun(image, target, config, exp.model_config())
        grid = overfit.model_config.grid
    elif teacher_grid is not None:
        grid = teacher_grid.shape[:2]
    else:
        raise InputError("the teacher's own islands need a feature grid, not a global vector")

    if loaded is not None:
        teacher_label = f"{teacher_label} · from {loaded.name}"
    record = RunRecord(
        run_id=run_id, experiment=exp, image_name=image_name, grid_shape=tuple(grid),
        input_small=downsample_rgb(image, *grid), teacher_label=teacher_label,
        teacher_grid=teacher_grid if teacher_grid is not None and teacher_grid.shape[:2] == tuple(grid) else None,
        labels=list(labels), total_steps=exp.steps if exp.trains else 0,
    )
    if record.teacher_grid is not None:
        record.teacher_projection = project(record.teacher_grid, view.config)
    zero_shot = None
    if teacher is not None and teacher.spec.supports_zero_shot and labels:
        record.teacher_labels = teacher.zero_shot(teacher_global, labels, top_k=min(5, len(labels)))
        zero_shot = teacher
    if overfit is not None:
        state = overfit.model.folded_state()
        record.folded = {"param_count": state.param_count, "param_bytes": state.param_bytes, "parts": state.parts}
        record.positional = overfit.model.positional_code()
        record.content_ref = content_reference(record, teacher_grid)
        record.configs = runs.config_record(overfit.config, overfit.model_config)
    return Prepared(run_id, record, overfit, zero_shot, view)


def content_reference(record: RunRecord, teacher_grid: np.ndarray | None) -> ContentReference:
    """What a run's frames are measured against: the teacher's grid read at the APM's locations (any target, a
    global one too: the islands are compared with the teacher's grid at that layer) and the APM's location code."""
    compare = None if teacher_grid is None else resize_grid(teacher_grid, record.grid_shape)
    return ContentReference(record.grid_shape, compare, record.positional)


def make_frame(snap: Snapshot, record: RunRecord, view: View, zero_shot: Any = None, final: bool = False) -> Frame:
    """Project and measure one snapshot (the panels' data), warm-started from the run's previous frame."""
    config = view.config
    previous = record.frames[-1].projection if record.frames else None
    if not final:
        config = replace(config, warm_iters=min(config.warm_iters, LIVE_WARM_ITERS))
        if previous is None:
            config = replace(config, **{k: min(v, getattr(config, k)) for k, v in QUICK_FIT.items()})
    align = record.teacher_projection if view.comparable else None
    distances = squared_distances(snap.features)  # one (n, n) product: the islands' clusters, and the t-SNE's
    shared = distances if config.metric == "cosine" else None  # neighbours when it compares by cosine too
    projection = project(snap.features, config, previous, full_fit=final, align_to=align, distances=shared)
    metrics = island_metrics(snap.features, record.teacher_grid, distances=distances)
    labels = None
    if zero_shot is not None and snap.global_vector is not None and snap.global_vector.shape[-1] == zero_shot.info.global_dim:
        labels = zero_shot.zero_shot(snap.global_vector, record.labels, top_k=min(5, len(record.labels)))
    content = None
    if record.content_ref is not None:  # live frames of a large grid: an even subgrid (the final frame: all of it)
        content = record.content_ref.measure(snap.features, None if final else LIVE_LOCATIONS)
    return Frame(
        step=snap.step, elapsed_s=snap.elapsed_s, feat_loss=snap.feat_loss, rgb_loss=snap.rgb_loss,
        features=snap.features.astype(np.float16), rgb=snap.rgb, trigger_column=snap.trigger_column,
        conv_filter=snap.conv_filter, projection=projection, metrics=metrics, global_vector=snap.global_vector,
        apm_labels=labels, content=content, final=final,
    )


def next_frame_at(due_at: float, started: float, cost: float) -> float:
    """When the frame after one due at `due_at`, started at `started` and costing `cost` CPU seconds, is due.

    A steady cadence of `frame_interval_s` from when frames were due (a frame whose snapshot came a little late
    does not push every later frame back), never more CPU than `render_spacing` allows counted from each frame's
    start, and never two frames back to back after a stall. (Keeping the render share's spacing from when frames
    were due instead was measured: at 32 x 32 the frame thread then never rests, and training fell to 0.66-0.70 of
    the library's rate for no more updates.)
    """
    interval = LIMITS.frame_interval_s
    return max(due_at + interval, started + render_spacing(cost), started + interval / 2)


def render_spacing(cost: float) -> float:
    """The least time between the starts of two frames that cost `cost` CPU seconds each: rendering takes at most
    `render_share` of a core, or as much as `min_updates_per_s` needs, never more than `max_render_share`."""
    floor = max(1.0 / LIMITS.min_updates_per_s, cost / LIMITS.max_render_share)
    return min(cost / LIMITS.render_share, floor)


def training_niceness(locations: int, streamed: int) -> int:
    """How much nicer than as forked a run's training process runs: as nice as the server while the server streams
    to a class (`BUSY_STREAMS`), a little nicer where frames are dear (`dear_frame_locations`), else not at all."""
    if streamed >= BUSY_STREAMS:
        return server_niceness()
    return min(LIMITS.dear_frame_niceness, server_niceness()) if locations >= LIMITS.dear_frame_locations else 0


def snapshot_lead(steps_per_s: float, latency: float) -> float:
    """How long before a frame is due to ask for its snapshot: about two training steps, or as long as snapshots
    have been taking to come (`latency`, a running mean) with a margin. A busy server runs below training's
    priority and reads them late; a frame that waits for its snapshot starts late."""
    return max(2.0 / steps_per_s if steps_per_s > 0 else 0.1, 1.25 * latency)


def live_frames(prepared: Prepared, view: Callable[[], View] | None = None,
                stop: Callable[[], bool] = lambda: False, threads: int | None = None) -> Iterator[Frame]:
    """Train the prepared run and yield a new `Frame` about every `frame_interval_s`, the last one fully fitted.
    `view()` is read for every frame (None: the view it was prepared with); `stop()` is asked between frames, and
    True ends the training after its step (the frames recorded so far, and a final one, are kept).

    Training runs in its own process where it can (`LiveRun(backend="auto")`). Frames are paced by time: a
    snapshot is asked for about two steps before a frame is due (further when snapshots have been coming late),
    and frames are spaced so that projecting and measuring them takes at most `render_share` of one core (on 2
    cores, what the server spends, training loses), or up to `max_render_share` where that keeps
    `min_updates_per_s`; see `next_frame_at`, `render_spacing`, `snapshot_lead` and `training_niceness`.
    """
    record = prepared.record
    if view is None:
        view = lambda: prepared.view  # noqa: E731
    threads = LIMITS.train_threads or threads
    streamed = streams()
    h, w = prepared.overfit.model_config.grid
    niceness = training_niceness(h * w, streamed)
    live = LiveRun(prepared.overfit, keep=2, threads=threads, idle_timeout_s=15.0, backend="auto",
                   niceness=niceness).start()
    if streamed >= BUSY_STREAMS:
        log.info("run %d trains at the server's priority: %d visitors are being streamed", record.run_id, streamed)
    record.live = live
    seen, pending, asked, asked_at = 0, None, False, 0.0
    latency = 0.0  # how long a snapshot asked for has been taking to come (a running mean)
    next_at = time.monotonic()
    frames, total_cpu, first_at, last_at, late = 0, 0.0, None, None, 0.0
    try:
        while not live.finished:
            if stop():
                live.stop()
            due = next_at - time.monotonic()  # seconds until the next frame
            lead = snapshot_lead(live.steps_per_s, latency)
            if pending is None and not asked and due <= lead:
                live.request_snapshot()  # recorded at the next step: here before the frame is due
                asked, asked_at = True, time.monotonic()
            if due > 0 or pending is None:
                if due > 0:  # sleep until the frame is due (or until it is time to ask), unless a snapshot comes
                    timeout = due - lead if pending is None and not asked else due
                else:  # due, and waiting for the snapshot asked for
                    timeout = 0.5
                snap, seen = live.wait(seen, timeout=max(0.005, timeout))
                if snap is not None and asked and pending is None:
                    took = time.monotonic() - asked_at
                    latency = took if latency == 0.0 else 0.7 * latency + 0.3 * took
                pending = snap or pending
                continue
            started, cpu = time.monotonic(), time.thread_time()
            late += started - next_at if frames else 0.0  # past its time, waiting for the snapshot
            frame = make_frame(pending, record, view(), prepared.zero_shot)
            # CPU time of this call (measured within it: Gradio resumes a generator on any of its worker threads)
            cost = time.thread_time() - cpu
            record.add_frame(frame)
            pending, asked = None, False
            frames, total_cpu = frames + 1, total_cpu + cost
            first_at, last_at = first_at or started, started
            yield frame
            next_at = next_frame_at(next_at, started, cost)
        live.join()
        if live.error is not None:
            raise live.error
        last = live.latest
        if last is not None:  # the final picture: a full fit of the last recorded state
            if record.frames and record.frames[-1].step == last.step:
                record.frames.pop()
            frame = make_frame(last, record, view(), prepared.zero_shot, final=True)
            record.add_frame(frame)
            yield frame
    finally:
        live.stop()
        if frames:
            every = (last_at - first_at) / (frames - 1) if frames > 1 else 0.0
            log.info("run %d: %d live frames, one every %.0f ms (%.0f ms late on average), projection and metrics "
                     "%.1f ms CPU each, %.1f steps/s, %s backend", record.run_id, frames, 1000 * every,
                     1000 * late / max(frames - 1, 1), 1000 * total_cpu / frames, live.steps_per_s, live.backend)


KEPT = ("steps", "target_loss", "time_budget")  # how a run must end to be kept in the run cache (not stopped)


def producer(prepared: Prepared, cache: Any = None) -> Callable[[Any], Iterator[Frame]]:
    """The driver's producer of an islands run: its frames, drawn in the view it was prepared with, until the run
    ends or nobody watches it (`run.should_stop()`); a run that ran to its end is kept in `cache` by its key."""

    def produce(run) -> Iterator[Frame]:
        record = prepared.record
        record.created = time.time()
        record.status = "failed"  # unless the frames below all came (the driver hands any error to the viewers)
        yield from live_frames(prepared, stop=run.should_stop, threads=run.threads)
        record.status = "stopped" if record.live.stop_reason in ("stopped", "abandoned") else "done"
        record.note = ending(record)[1]
        if cache is not None and record.key is not None and record.live.stop_reason in KEPT:
            overfit = prepared.overfit
            cache.put(record, overfit.model, overfit.images[:1].cpu().numpy(), overfit.grid_scale)

    return produce


def replay(record: RunRecord, skip: Callable[[], bool] = lambda: False, stop: Callable[[], bool] = lambda: False
           ) -> Iterator[Frame]:
    """A recorded run's frames at the live cadence (`LIMITS.frame_interval_s` apart, on a steady clock: a late
    frame does not push the later ones back), the last one at once when `skip()` says so; ends early when `stop()`
    does (both asked about every `REPLAY_POLL_S`)."""
    frames = record.frames
    start = time.monotonic()
    with _REPLAYS:
        for k, frame in enumerate(frames):
            if stop():
                return
            if skip() and k < len(frames) - 1:
                continue
            yield frame
            due = start + (k + 1) * LIMITS.frame_interval_s
            while k < len(frames) - 1 and not skip() and not stop():
                left = due - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, REPLAY_POLL_S))


class _Gauge:
    """How many of something are in progress (entered and not yet left)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> _Gauge:
        with self._lock:
            self.count += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self.count -= 1


_REPLAYS = _Gauge()


def streams() -> int:
    """Visitors the server is streaming frames to now: replays, and the viewers of running runs."""
    from . import driver

    return _REPLAYS.count + driver.RUNS.viewing()


def redraw(frame: Frame, view: View, previous: Projection | None, teacher: Projection | None) -> Frame:
    """A frame of a run drawn in a viewer's own view (a viewer that changed the view during a shared run): a short
    warm-started projection from that viewer's previous one, aligned to the teacher's islands in that view."""
    config = view.config
    if not frame.final:
        config = replace(config, warm_iters=min(config.warm_iters, LIVE_WARM_ITERS))
    projection = project(frame.features.astype(np.float32), config, previous, full_fit=frame.final,
                         align_to=teacher if view.comparable else None)
    return replace(frame, projection=projection)


def ending(record: RunRecord) -> tuple[str, str]:
    """(status kind, the words that lead the status) when a run has ended."""
    live = record.live
    reason = live.stop_reason if live is not None else None
    if reason == "time_budget":
        return "error", f"cut off at the {LIMITS.max_run_seconds:.0f} s limit for shared hardware"
    if reason in ("stopped", "abandoned"):
        return "done", "stopped by you (everything recorded is kept)"
    if reason == "target_loss":
        return "done", "done: reached the target loss"
    if reason == "failed":
        return "error", "failed"
    return "done", "done"


def status_text(record: RunRecord, frame: Frame | None, lead: str = "training", shown: bool = False) -> str:
    """'training · step 120 / 300 · 31 steps/s · feature loss 3.1e-04 · 4.2 s · 5 islands · <teacher>'.

    `shown`: the numbers of the frame itself (a scrubbed frame), not the run's latest step.
    """
    parts = [lead] if lead else []
    live = record.live
    if frame is not None and live is not None:
        hist, n = live.history, live.steps_done
        kind = "global loss" if record.experiment.target == "global" else "feature loss"
        if shown or not n:
            parts += [f"step {frame.step} / {record.total_steps}", f"{kind} {frame.feat_loss:.1e}",
                      f"{frame.elapsed_s:.1f} s"]
        else:
            parts += [f"step {hist.step[n - 1]} / {record.total_steps}", f"{live.steps_per_s:.0f} steps/s",
                      f"{kind} {hist.feat_loss[n - 1]:.1e}", f"{hist.elapsed_s[n - 1]:.1f} s"]
        parts.append(f"{frame.metrics.n_islands} islands")
    parts.append(record.teacher_label)
    return " · ".join(parts)


def one_pass_run(run_id: int, exp: Experiment, picture: Image.Image, image_name: str, loaded: Any,
                 view: View) -> tuple[RunRecord, float]:
    """A trained APM's decoding of an image with no training: a record with one frame at step 0 (the APM as it
    is), built like any run's, so every panel, pointing and exports work on it. Returns (record, seconds)."""
    import torch

    from apm.fit import predict
    from apm.images import image_to_tensor

    started = time.perf_counter()
    apm = loaded.apm
    features, rgb = predict(apm, picture)  # (h, w, d) in the teacher's units, (h, w, 3)
    h, w = apm.config.grid
    teacher_grid, teacher_label, compare = None, "teacher not named by the checkpoint", None
    if loaded.meta.get("teacher"):
        _, (out,) = encode_image(exp.teacher, exp.layer, exp.random_weights, picture, options=exp.teacher_options())
        teacher_grid, teacher_label = out.grid, out.info.label
        compare = teacher_grid
        if teacher_grid.shape != features.shape:
            teacher_grid = None  # another grid than the APM's: no fidelity, no teacher islands
    record = RunRecord(run_id=run_id, experiment=exp, image_name=image_name, grid_shape=(h, w),
                       input_small=downsample_rgb(picture, h, w), teacher_label=teacher_label,
                       teacher_grid=teacher_grid, total_steps=0)
    if teacher_grid is not None:
        record.teacher_projection = project(teacher_grid, view.config)
    with torch.no_grad():
        column = apm.trigger_column(image_to_tensor(picture, apm.config.image_size)[None])[0].numpy()
    record.decoder = Decoder.from_image(apm, picture)
    state = apm.folded_state()
    record.folded = {"param_count": state.param_count, "param_bytes": state.param_bytes, "parts": state.parts}
    record.positional = apm.positional_code()
    record.content_ref = content_reference(record, compare)
    snap = Snapshot(step=0, total_steps=0, feat_loss=float("nan"), rgb_loss=float("nan"), global_loss=None,
                    loss=float("nan"), lr=0.0, elapsed_s=0.0, features=features, rgb=rgb, trigger_column=column,
                    conv_filter=apm.conv_filter(), done=True)
    record.add_frame(make_frame(snap, record, view, final=True))
    return record, time.perf_counter() - started


def decoder_for(record: RunRecord | None) -> Decoder:
    """The run's APM and its image's trigger column, to decode locations with (the APM as the run left it)."""
    if record is None or not record.frames:
        raise APMError("press Run first (or pick a trained APM): then decode its locations")
    if record.decoder is not None:
        return record.decoder
    live = record.live
    if getattr(live, "load_decoder", None) is not None:  # a replayed run: its trained APM, from the run cache
        record.decoder = live.load_decoder()
        return record.decoder
    if live is None or not record.experiment.trains:
        raise APMError("this run has no APM to decode (the teacher's own islands)")
    if live.alive:
        raise APMError("wait for the run to finish (or stop it): its APM is still changing")
    if live.stop_reason == "failed":
        raise APMError("the run failed: there is no trained APM to decode")
    run = live.run
    record.decoder = Decoder.from_pixels(run.model, run.images[:1], scale=run.grid_scale)
    return record.decoder


# exports

