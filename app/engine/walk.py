"""The Interpolation tab's run, without Gradio: train one APM on two images (through the run driver, in the same
line as every other run), then decode the walk of its trigger column from one image to the other with one
projection fitted to every frame; or walk a trained APM's column space with no training. Exports the walk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from apm.interpolate import project_path, train_pair, walk_frames, walk_trained
from apm.io import save_gif, save_npz
from apm.islands import ProjectionConfig
from apm.live import LiveRun
from apm.recipes import Experiment, estimate_seconds

from ..session import Walk
from ..settings import LIMITS
from .driver import drive
from .teacher import encode_image

PROJECTIONS = {
    "pca": ProjectionConfig(method="pca", dim=2),
    "tsne2d": ProjectionConfig(method="tsne", dim=2, full_iters=150),
}
GIF_FRAME_MS = 150  # the exported GIF's pace: Play shows about six frames a second too
EMPTY_CURVE = {"step": np.zeros(0, np.int64), "feat_loss": np.zeros(0), "rgb_loss": np.zeros(0), "elapsed_s": np.zeros(0)}


def trained_walk(loaded: Any, images: list[Image.Image], frames: int, projection: str) -> Iterator[dict]:
    """A trained APM's walk between two new images, with no training: the same progress dicts as training."""
    yield {"stage": "decoding", "note": "", "curve": EMPTY_CURVE}
    alphas = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    features, rgb, own_rgb = walk_trained(loaded.apm, images, alphas)
    path = project_path(features, PROJECTIONS[projection])
    endpoint_error = float(max(np.abs(rgb[0] - own_rgb[0]).max(), np.abs(rgb[-1] - own_rgb[1]).max()))
    yield {"stage": "walk", "note": "no training: ", "curve": EMPTY_CURVE, "steps_done": 0,
           "walk": Walk(alphas, rgb, features, path, own_rgb, endpoint_error, loaded.name)}


def train_and_walk(exp: Experiment, images: list[Image.Image], frames: int, projection: str,
                   watch: Callable[[Any, int], None] | None = None) -> Iterator[dict]:
    """Train on both images with live progress (a run of the driver: it waits its turn in the one line), then
    decode the walk. Yields progress dicts:

    {"stage": "waiting", "waiting": Waiting} while in line; {"stage": "training", "step", "total", "curve", "rgb":
    (2, h, w, 3) or None, "label"} while training; {"stage": "decoding", ...}, then {"stage": "walk", "walk": Walk,
    "note": str} at the end. Closing the generator (Stop, a new run) leaves the run, which then ends.
    """
    encoded = [encode_image(exp.teacher, exp.layer, exp.random_weights, im)[1][0] for im in images]
    pair = train_pair(images, [out.grid for out in encoded], exp.train_config(time_budget_s=LIMITS.max_run_seconds),
                      exp.model_config())
    label = encoded[0].info.label

    def produce(run) -> Iterator[dict]:
        live = LiveRun(pair, keep=2, threads=LIMITS.train_threads, idle_timeout_s=15.0, backend="auto").start()
        seen = 0
        try:
            while not live.finished:
                if run.should_stop():
                    live.stop()
                snap, seen = live.wait(seen, timeout=LIMITS.frame_interval_s)
                hist = live.history.arrays()
                if len(hist["step"]):
                    yield {"stage": "training", "step": int(hist["step"][-1]), "total": exp.steps, "curve": hist,
                           "rgb": None if snap is None else snap.rgb, "label": label}
            live.join()
            if live.error is not None:
                raise live.error
        finally:
            live.stop()
        note = ""
        if live.stop_reason == "time_budget":
            note = f"cut off at the {LIMITS.max_run_seconds:.0f} s limit for shared hardware · "
        elif live.stop_reason in ("stopped", "abandoned"):
            note = f"stopped by you at step {live.steps_done}; the walk uses the APM as it was · "
        yield {"stage": "decoding", "note": note, "curve": live.history.arrays()}
        alphas = np.linspace(0.0, 1.0, frames, dtype=np.float32)
        features, rgb = pair.interpolate(alphas)  # (F, h, w, d), (F, h, w, 3)
        _, own_rgb = pair.decode_columns(pair.trigger_columns())  # (2, h, w, 3)
        path = project_path(features, PROJECTIONS[projection])
        endpoint_error = float(max(np.abs(rgb[0] - own_rgb[0]).max(), np.abs(rgb[-1] - own_rgb[1]).max()))
        yield {"stage": "walk", "note": note, "curve": live.history.arrays(), "steps_done": live.steps_done,
               "walk": Walk(alphas, rgb, features, path, own_rgb, endpoint_error, label)}

    run, viewer, _ = drive(None, produce, 2 * estimate_seconds(exp))
    if watch is not None:
        watch(run, viewer)  # the session's Stop ends the training; the walk is still decoded
    try:
        for item in run.follow(viewer):
            yield item if isinstance(item, dict) else {"stage": "waiting", "waiting": item, "curve": EMPTY_CURVE}
    finally:
        run.leave(viewer)


def export_walk(folder: Path, walk: Walk) -> list[Path]:
    """interpolation.gif (RGB | islands, A to B and back) and interpolation.npz (alpha, rgb, features, islands)."""
    out = Path(folder) / "walk"
    save_npz(out / "interpolation.npz", alpha=walk.alphas, rgb=walk.rgb, features=walk.features,
             islands=walk.path.images)
    save_gif(out / "interpolation.gif", walk_frames(walk.rgb, walk.path.images, scale=12), duration_ms=GIF_FRAME_MS)
    return [out / "interpolation.gif", out / "interpolation.npz"]
