"""The interpolation tab: train one APM on two images, then walk its trigger column from one to the other.

GLOM's "the percept is a field": the MLP is a field over (trigger column, location), and a straight line
between two images' columns decodes into a continuous morph of features, colours and islands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import gradio as gr
import numpy as np

from apm.errors import APMError, InputError, WeightsUnavailableError
from apm.images import load_image
from apm.interpolate import PathProjection, project_path, train_pair, walk_frames
from apm.io import save_gif, save_npz
from apm.islands import ProjectionConfig
from apm.teachers import create_teacher
from apm.train import train_config_for

from . import plots
from .handlers import (
    FRAME_INTERVAL_S,
    MAX_CONCURRENT_RUNS,
    MAX_RUN_SECONDS,
    MAX_STEPS,
    TEACHERS,
    default_random_weights,
    error_line,
    session_for,
    stop,
)

WALK_TEACHERS = [name for name, key in TEACHERS.items() if key != "file"]
WALK_PROJECTIONS = {
    "PCA (fast)": ProjectionConfig(method="pca", dim=2),
    "t-SNE 2D (slower)": ProjectionConfig(method="tsne", dim=2, full_iters=150),
}
MAX_FRAMES = 33


@dataclass
class Walk:
    """A trained pair and its decoded walk (for the slider, Play and export)."""

    alphas: np.ndarray  # (F,)
    rgb: np.ndarray  # (F, h, w, 3)
    features: np.ndarray  # (F, h, w, d)
    path: PathProjection
    own_rgb: np.ndarray  # (2, h, w, 3): each image's own reconstruction
    endpoint_error: float  # max |decode(alpha=0 or 1) - own reconstruction|
    curve: dict = field(default_factory=dict)


def _status(text: str) -> str:
    return f"<div class='apm-status'>{text}</div>"


def _scatter(path: PathProjection, index: int) -> plots.PlotData:
    """Every location of every frame in grey, the current frame's locations in their island colours."""
    F, n, k = path.embedding.shape
    everything = path.embedding.reshape(F * n, k)
    current = path.embedding[index]
    data = [
        {"type": "scattergl", "x": everything[:, 0], "y": everything[:, 1], "mode": "markers", "hoverinfo": "skip",
         "marker": {"size": 4, "color": "rgba(160,160,160,0.25)"}},
        {"type": "scattergl", "x": current[:, 0], "y": current[:, 1], "mode": "markers",
         "marker": {"size": 7, "color": plots._rgb_strings(path.colours[index])},
         "hovertemplate": "location %{pointNumber}<extra></extra>"},
    ]
    axis = {"showticklabels": False, "zeroline": False, "showgrid": False}
    layout = {"title": {"text": "Islands along the path (one fit for all frames)"}, "height": 380, "showlegend": False,
              "xaxis": axis, "yaxis": {**axis, "scaleanchor": "x"}, "uirevision": "walk", "plot_bgcolor": "#fafafa"}
    return plots.figure(data, layout)


def _curve(curve: dict) -> plots.PlotData:
    return plots.loss_figure(curve.get("step", []), curve.get("feat", []), curve.get("rgb", []), [], [], [])


def _frame_outputs(walk: Walk, index: int) -> tuple:
    index = int(np.clip(index, 0, len(walk.alphas) - 1))
    alpha = float(walk.alphas[index])
    text = (f"alpha {alpha:.2f} · frame {index + 1} / {len(walk.alphas)} · "
            f"endpoints match each image's own reconstruction to {walk.endpoint_error:.1e}")
    return (_status(text), plots.enlarge(walk.rgb[index]), plots.enlarge(walk.path.images[index]),
            _scatter(walk.path, index), gr.update(value=index, maximum=len(walk.alphas) - 1))


def train_walk(image_a, image_b, teacher_choice, layer, random_weights, steps, frames, projection_choice,
               request: gr.Request = None) -> Iterator[tuple]:
    """Train on both images with live losses and reconstructions, then decode the walk."""
    session = session_for(request)
    run_id = session.start_run()
    skip = [gr.skip()] * 8
    try:
        if not image_a or not image_b:
            raise InputError("give two images: one for each end of the walk")
        images = [load_image(image_a), load_image(image_b)]
        key = TEACHERS.get(teacher_choice)
        if key is None or key == "file":
            raise InputError(f"choose one of the teachers: {', '.join(WALK_TEACHERS)}")
        steps, frames = int(steps or 300), int(frames or 16)
        if not 1 <= steps <= MAX_STEPS:
            raise InputError(f"steps must be between 1 and {MAX_STEPS} on this shared hardware")
        if not 2 <= frames <= MAX_FRAMES:
            raise InputError(f"frames must be between 2 and {MAX_FRAMES}")
        teacher = create_teacher(key, layer=None if layer is None else int(layer), random_weights=bool(random_weights))
        grids = [teacher.encode(im).grid for im in images]
        config = train_config_for("cpu", steps=steps, record_every=10, time_budget_s=MAX_RUN_SECONDS)
        run = train_pair(images, grids, config, "cpu")
    except WeightsUnavailableError as exc:
        yield (error_line(f"{exc} Tick 'untrained teacher' to run offline with random weights."), *skip)
        return
    except (APMError, ValueError) as exc:
        yield (error_line(str(exc)), *skip)
        return

    curve: dict = {"step": [], "feat": [], "rgb": []}
    last_emit = 0.0
    stream = iter(run)
    stopped = False
    try:
        for snap in stream:
            curve["step"].append(snap.step)
            curve["feat"].append(snap.feat_loss)
            curve["rgb"].append(snap.rgb_loss)
            if session.should_stop(run_id) and not snap.done:
                stopped = True
                break
            if snap.recorded and (time.perf_counter() - last_emit >= FRAME_INTERVAL_S or snap.done):
                status = _status(f"training on both images · step {snap.step} / {snap.total_steps} · "
                                 f"feature loss {snap.feat_loss:.1e} · {snap.elapsed_s:.1f} s")
                yield (status, _curve(curve), plots.enlarge(snap.rgb[0]), plots.enlarge(snap.rgb[1]), *([gr.skip()] * 4))
                last_emit = time.perf_counter()
    finally:
        stream.close()

    alphas = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    features, rgb = run.interpolate(alphas)  # (F, h, w, d), (F, h, w, 3)
    _, own_rgb = run.decode_columns(run.trigger_columns())  # (2, h, w, 3)
    path = project_path(features, WALK_PROJECTIONS.get(projection_choice, WALK_PROJECTIONS["PCA (fast)"]))
    endpoint_error = float(max(np.abs(rgb[0] - own_rgb[0]).max(), np.abs(rgb[-1] - own_rgb[1]).max()))
    walk = Walk(alphas, rgb, features, path, own_rgb, endpoint_error, curve)
    session.walk = walk
    status, rgb_img, islands_img, scatter, slider = _frame_outputs(walk, 0)
    note = "stopped early; the walk uses the APM as it was · " if stopped else ""
    yield (_status(note + "trained · move the alpha slider or press Play"), _curve(curve),
           plots.enlarge(own_rgb[0]), plots.enlarge(own_rgb[1]), rgb_img, islands_img, scatter, slider)


def show_alpha(index: float, request: gr.Request = None) -> tuple:
    walk = getattr(session_for(request), "walk", None)
    if walk is None:
        return (error_line("train on two images first"), gr.skip(), gr.skip(), gr.skip(), gr.skip())
    return _frame_outputs(walk, int(index))


def play(request: gr.Request = None) -> Iterator[tuple]:
    """Walk from image A to image B and back, about six frames a second."""
    session = session_for(request)
    walk = getattr(session, "walk", None)
    if walk is None:
        yield (error_line("train on two images first"), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        return
    n = len(walk.alphas)
    for index in [*range(n), *range(n - 2, -1, -1)]:
        yield _frame_outputs(walk, index)
        time.sleep(FRAME_INTERVAL_S)


def export_walk(request: gr.Request = None) -> tuple:
    session = session_for(request)
    walk = getattr(session, "walk", None)
    if walk is None:
        return None, error_line("nothing to export yet: train on two images first")
    out = session.folder / "walk"
    save_npz(out / "interpolation.npz", alpha=walk.alphas, rgb=walk.rgb, features=walk.features, islands=walk.path.images)
    save_gif(out / "interpolation.gif", walk_frames(walk.rgb, walk.path.images, scale=12), duration_ms=150)
    return [str(out / "interpolation.gif"), str(out / "interpolation.npz")], _status(f"exported {len(walk.alphas)} frames")


def build_tab(raw_upload, layer_choices) -> None:
    """The tab's layout and events (inside an open gr.Tab)."""
    gr.Markdown("Train one APM on **two** images, then slide its trigger column from one to the other. "
                "The decoded colours and islands morph continuously: the MLP is a field, not a lookup table.")
    num_layers, default_layer = layer_choices(WALK_TEACHERS[0])
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            with gr.Row():
                image_a = raw_upload(gr.Image(label="Image A (alpha = 0)", type="filepath", elem_id="walk-image-a", height=200))
                image_b = raw_upload(gr.Image(label="Image B (alpha = 1)", type="filepath", elem_id="walk-image-b", height=200))
            teacher = gr.Dropdown(WALK_TEACHERS, value=WALK_TEACHERS[0], label="Teacher", elem_id="walk-teacher")
            layer = gr.Slider(0, max(1, num_layers - 1), value=default_layer, step=1, label="Layer", elem_id="walk-layer")
            random_weights = gr.Checkbox(value=default_random_weights(), label="Untrained teacher (random weights)",
                                         elem_id="walk-random-weights")
            steps = gr.Slider(10, MAX_STEPS, value=300, step=10, label="Steps", elem_id="walk-steps")
            frames = gr.Slider(2, MAX_FRAMES, value=16, step=1, label="Frames along the walk", elem_id="walk-frames")
            projection = gr.Radio(list(WALK_PROJECTIONS), value="PCA (fast)", label="Projection", elem_id="walk-projection")
            with gr.Row():
                train_btn = gr.Button("Train on both", variant="primary", elem_id="walk-train")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="walk-stop")
        with gr.Column(scale=3):
            status = gr.HTML(_status("Give two images and press 'Train on both'."), elem_id="walk-status")
            with gr.Row():
                rgb_a = gr.Image(label="Reconstruction of A", interactive=False, height=180, elem_id="walk-rgb-a")
                walk_rgb = gr.Image(label="Decoded RGB at alpha", interactive=False, height=180, elem_id="walk-rgb")
                walk_islands = gr.Image(label="Islands at alpha", interactive=False, height=180, elem_id="walk-islands")
                rgb_b = gr.Image(label="Reconstruction of B", interactive=False, height=180, elem_id="walk-rgb-b")
            with gr.Row():
                alpha = gr.Slider(0, 15, value=0, step=1, label="Alpha: frame along the walk from A to B", elem_id="walk-alpha", scale=4)
                play_btn = gr.Button("Play", elem_id="walk-play", scale=1)
            with gr.Row():
                scatter = gr.Plot(label="Islands scatter", elem_id="walk-scatter")
                loss = gr.Plot(label="Training", elem_id="walk-loss")
            with gr.Row():
                export_btn = gr.Button("Export the walk (GIF and .npz)", elem_id="walk-export")
                files = gr.File(label="Exports", file_count="multiple", interactive=False, elem_id="walk-files")

    outputs = [status, loss, rgb_a, rgb_b, walk_rgb, walk_islands, scatter, alpha]
    train_btn.click(stop, None, None, queue=False, api_name=False).then(
        train_walk, [image_a, image_b, teacher, layer, random_weights, steps, frames, projection], outputs,
        concurrency_limit=MAX_CONCURRENT_RUNS, concurrency_id="train", show_progress="hidden", api_name="train_walk")
    stop_btn.click(stop, None, None, queue=False, api_name=False)
    frame_outputs = [status, walk_rgb, walk_islands, scatter, alpha]
    alpha.input(show_alpha, alpha, frame_outputs, show_progress="hidden", trigger_mode="always_last",
                concurrency_limit=4, concurrency_id="view", api_name="walk_alpha")
    play_btn.click(play, None, frame_outputs, show_progress="hidden", concurrency_limit=4, concurrency_id="view",
                   api_name="walk_play")
    teacher.change(lambda t: gr.update(maximum=max(1, layer_choices(t)[0] - 1), value=layer_choices(t)[1]),
                   teacher, layer, queue=False, api_name=False)
    export_btn.click(export_walk, None, [files, status], concurrency_limit=2, concurrency_id="export",
                     api_name="export_walk")
