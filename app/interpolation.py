"""The interpolation tab: train one APM on two images, then walk its trigger column from one to the other.

GLOM's "the percept is a field": the MLP is a field over (trigger column, location), and a straight line
between two images' columns decodes into a continuous morph of features, colours and islands.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

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
    queue_run,
    session_for,
    stop,
)

log = logging.getLogger("apm.app")

WALK_TEACHERS = [name for name, key in TEACHERS.items() if key != "file"]
WALK_PROJECTIONS = {
    "PCA (fast)": ProjectionConfig(method="pca", dim=2),
    "t-SNE 2D (slower)": ProjectionConfig(method="tsne", dim=2, full_iters=150),
}
MAX_FRAMES = 33
DEFAULT_STEPS = 300
DEFAULT_FRAMES = 16
PLAY_INTERVAL_S = 0.15  # Play shows about six frames a second (the exported GIF uses the same pace)
GIF_FRAME_MS = 150
PLOT_HEIGHT = 380  # the scatter and the loss figure side by side, the same height
N_OUTPUTS = 8  # status, loss, reconstruction of A, reconstruction of B, decoded RGB, islands, scatter, slider
N_FRAME_OUTPUTS = 5  # status, decoded RGB, islands, scatter, slider


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
    teacher_label: str = ""


def _status(text: str) -> str:
    return f"<div class='apm-status'>{text}</div>"


def _errors(message: str, n: int) -> tuple:
    """An error line in the status and every other output left as it is."""
    return (error_line(message), *([gr.skip()] * (n - 1)))


def _count(value, name: str, default: int, low: int, high: int) -> int:
    """A whole number from a slider or an API call, checked against its range."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise InputError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    return int(number)


# panels


def _placeholder(title: str, text: str, height: int = PLOT_HEIGHT) -> plots.PlotData:
    """An empty figure with a hint in the middle, for panels that have nothing to show yet."""
    layout = {"title": {"text": title}, "height": height, "showlegend": False, "plot_bgcolor": "#fafafa",
              "margin": {"l": 40, "r": 10, "t": 60, "b": 36},
              "xaxis": {"visible": False}, "yaxis": {"visible": False},
              "annotations": [{"text": text, "showarrow": False, "font": {"size": 14, "color": "#888"}}]}
    return plots.figure([], layout)


SCATTER_TITLE = "Islands along the walk<br><sup>one projection for all frames: colours agree</sup>"


def empty_scatter(text: str = "train on two images to see<br>the islands along the walk") -> plots.PlotData:
    return _placeholder(SCATTER_TITLE, text)


def _scatter(path: PathProjection, index: int, grid: tuple[int, int]) -> plots.PlotData:
    """Every location of every frame in grey, the current frame's locations in their island colours."""
    F, n, k = path.embedding.shape
    emb = path.embedding.astype(np.float32)
    everything = emb.reshape(F * n, k)
    current = emb[index]
    _, w = grid
    ii, jj = np.divmod(np.arange(n), w)
    data = [
        {"type": "scattergl", "x": everything[:, 0], "y": everything[:, 1], "mode": "markers", "hoverinfo": "skip",
         "marker": {"size": 4, "color": "rgba(160,160,160,0.25)"}},
        {"type": "scattergl", "x": current[:, 0], "y": current[:, 1], "mode": "markers",
         "marker": {"size": 7 if n <= 400 else 5, "color": plots._rgb_strings(path.colours[index]), "line": {"width": 0}},
         "customdata": np.stack([ii, jj], axis=1),
         "hovertemplate": "location (i, j) = (%{customdata[0]}, %{customdata[1]})<extra></extra>"},
    ]
    axis = {"showticklabels": False, "zeroline": False, "showgrid": False}
    layout = {"title": {"text": SCATTER_TITLE}, "height": PLOT_HEIGHT, "showlegend": False,
              "margin": {"l": 40, "r": 10, "t": 60, "b": 36},
              "xaxis": axis, "yaxis": {**axis, "scaleanchor": "x"}, "uirevision": "walk", "plot_bgcolor": "#fafafa"}
    return plots.figure(data, layout)


LOSS_TITLE = "Training on both images (log scale)"


def _curve(curve: dict) -> plots.PlotData:
    """Feature and RGB losses against step: the joint loss over both images."""
    steps = curve.get("step", [])
    if not steps:
        return _placeholder(LOSS_TITLE, "the losses appear here<br>while the APM trains")
    data = [
        {"type": "scatter", "x": steps, "y": curve.get("feat", []), "name": "feature loss", "line": {"color": "#1f77b4"}},
        {"type": "scatter", "x": steps, "y": curve.get("rgb", []), "name": "RGB loss", "line": {"color": "#d62728"}},
    ]
    layout = {"title": {"text": LOSS_TITLE}, "height": PLOT_HEIGHT, "uirevision": "walk-loss",
              "margin": {"l": 55, "r": 10, "t": 40, "b": 90},
              "legend": {"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.3, "yanchor": "top"},
              "xaxis": {"title": {"text": "step"}}, "yaxis": {"type": "log", "exponentformat": "e"}}
    return plots.figure(data, layout)


def _frame_outputs(walk: Walk, index: int) -> tuple:
    """Status, decoded RGB, islands image, scatter and slider at frame `index`. Images go at grid size: the
    page enlarges them, crisp (the CSS in app/ui.py), which keeps Play's frames small."""
    index = int(np.clip(index, 0, len(walk.alphas) - 1))
    alpha = float(walk.alphas[index])
    text = (f"alpha {alpha:.2f} · frame {index + 1} / {len(walk.alphas)} · "
            f"endpoints match each image's own reconstruction to {walk.endpoint_error:.1e}")
    return (_status(text), plots.to_uint8(walk.rgb[index]), plots.to_uint8(walk.path.images[index]),
            _scatter(walk.path, index, walk.rgb.shape[1:3]), gr.update(value=index, maximum=len(walk.alphas) - 1))


# handlers


def train_walk(image_a, image_b, teacher_choice, layer, random_weights, steps, frames, projection_choice,
               request: gr.Request = None) -> Iterator[tuple]:
    """Train on both images with live losses and reconstructions, then decode the walk."""
    session = session_for(request)
    run_id = session.start_run()
    if session.should_stop(run_id):  # Stop was pressed while this training waited in the queue
        yield (_status("stopped before it started: press 'Train on both' again"), *([gr.skip()] * (N_OUTPUTS - 1)))
        return
    try:
        if not image_a or not image_b:
            raise InputError("give two images: one for each end of the walk (A and B)")
        steps = _count(steps, "steps", DEFAULT_STEPS, 1, MAX_STEPS)
        frames = _count(frames, "frames", DEFAULT_FRAMES, 2, MAX_FRAMES)
        key = TEACHERS.get(teacher_choice)
        if key is None or key == "file":
            raise InputError(f"choose one of the teachers: {', '.join(WALK_TEACHERS)}")
        projection = WALK_PROJECTIONS.get(projection_choice, WALK_PROJECTIONS["PCA (fast)"])
        images = [load_image(image_a), load_image(image_b)]
        teacher = create_teacher(key, layer=None if layer is None else int(layer), random_weights=bool(random_weights))
        encoded = [teacher.encode(im) for im in images]
        config = train_config_for("cpu", steps=steps, record_every=10, time_budget_s=MAX_RUN_SECONDS)
        run = train_pair(images, [out.grid for out in encoded], config, "cpu")
    except WeightsUnavailableError as exc:
        yield _errors(f"{exc} Tick 'untrained teacher' to run offline with random weights.", N_OUTPUTS)
        return
    except (APMError, ValueError) as exc:
        yield _errors(str(exc), N_OUTPUTS)
        return

    label = encoded[0].info.label
    session.walk = None  # the previous walk is gone: the slider and Play wait for this one
    curve: dict = {"step": [], "feat": [], "rgb": []}
    yield (_status(f"training on both images · {label} · step 0 / {steps}"), _curve(curve), None, None, None, None,
           empty_scatter("the walk is decoded<br>when training ends"), gr.update(value=0, maximum=frames - 1))

    last_emit = time.perf_counter()
    stopped = False
    note = ""
    stream = iter(run)
    try:
        for snap in stream:
            curve["step"].append(snap.step)
            curve["feat"].append(snap.feat_loss)
            curve["rgb"].append(snap.rgb_loss)
            if session.should_stop(run_id) and not snap.done:
                stopped = True
                break
            if snap.stop_reason == "time_budget":
                note = f"stopped at the {MAX_RUN_SECONDS:.0f} s cap for shared hardware · "
            now = time.perf_counter()
            if now - last_emit < FRAME_INTERVAL_S and not snap.done:
                continue
            status = _status(f"training on both images · step {snap.step} / {snap.total_steps} · "
                             f"feature loss {snap.feat_loss:.1e} · RGB loss {snap.rgb_loss:.1e} · {snap.elapsed_s:.1f} s")
            if snap.recorded:
                yield (status, _curve(curve), plots.to_uint8(snap.rgb[0]), plots.to_uint8(snap.rgb[1]),
                       *([gr.skip()] * 4))
            else:  # between recorded steps only the counter moves
                yield (status, *([gr.skip()] * (N_OUTPUTS - 1)))
            last_emit = time.perf_counter()
        if stopped:
            note = f"stopped by you at step {curve['step'][-1]}; the walk uses the APM as it was · "
        yield (_status(f"{note}decoding {frames} frames and fitting one projection to all of them…"),
               _curve(curve), *([gr.skip()] * (N_OUTPUTS - 2)))

        alphas = np.linspace(0.0, 1.0, frames, dtype=np.float32)
        features, rgb = run.interpolate(alphas)  # (F, h, w, d), (F, h, w, 3)
        _, own_rgb = run.decode_columns(run.trigger_columns())  # (2, h, w, 3)
        path = project_path(features, projection)
    except Exception as exc:  # one user's failure must never take the app down
        log.exception("interpolation run failed")
        yield _errors(f"the run failed: {exc}", N_OUTPUTS)
        return
    finally:
        stream.close()

    endpoint_error = float(max(np.abs(rgb[0] - own_rgb[0]).max(), np.abs(rgb[-1] - own_rgb[1]).max()))
    walk = Walk(alphas, rgb, features, path, own_rgb, endpoint_error, curve, label)
    session.walk = walk
    status, rgb_img, islands_img, scatter, slider = _frame_outputs(walk, 0)
    yield (_status(f"{note}trained · {label} · {len(curve['step'])} steps · move the alpha slider or press Play"),
           _curve(curve), plots.to_uint8(own_rgb[0]), plots.to_uint8(own_rgb[1]), rgb_img, islands_img, scatter, slider)


def show_alpha(index: float, request: gr.Request = None) -> tuple:
    """One frame of the walk: its decoded RGB, its islands and where its locations sit in the scatter."""
    walk = getattr(session_for(request), "walk", None)
    if walk is None:
        return _errors("train on two images first", N_FRAME_OUTPUTS)
    try:
        index = round(float(index))
    except (TypeError, ValueError):
        index = 0
    return _frame_outputs(walk, index)


def play(request: gr.Request = None) -> Iterator[tuple]:
    """Walk from image A to image B and back, about six frames a second; a new training ends it."""
    session = session_for(request)
    walk = getattr(session, "walk", None)
    if walk is None:
        yield _errors("train on two images first", N_FRAME_OUTPUTS)
        return
    n = len(walk.alphas)
    for index in [*range(n), *range(n - 2, -1, -1)]:
        if session.walk is not walk:
            return
        yield _frame_outputs(walk, index)
        time.sleep(PLAY_INTERVAL_S)


def export_walk(request: gr.Request = None) -> tuple:
    """interpolation.gif (RGB | islands, A to B) and interpolation.npz (alpha, rgb, features, islands)."""
    session = session_for(request)
    walk = getattr(session, "walk", None)
    if walk is None:
        return gr.update(value=None, visible=False), error_line("nothing to export yet: train on two images first")
    out = session.folder / "walk"
    try:
        save_npz(out / "interpolation.npz", alpha=walk.alphas, rgb=walk.rgb, features=walk.features,
                 islands=walk.path.images)
        save_gif(out / "interpolation.gif", walk_frames(walk.rgb, walk.path.images, scale=12), duration_ms=GIF_FRAME_MS)
    except (APMError, OSError) as exc:
        log.exception("interpolation export failed")
        return gr.skip(), error_line(f"the export failed: {exc}")
    files = [str(out / "interpolation.gif"), str(out / "interpolation.npz")]
    return gr.update(value=files, visible=True), _status(f"exported {len(walk.alphas)} frames: a GIF (RGB | islands) and an .npz")


# layout


def _layer_label(num_layers: int) -> str:
    return f"Layer (GLOM level, 0-{num_layers - 1})"


def build_tab(raw_upload, layer_choices) -> None:
    """The tab's layout and events (inside an open gr.Tab)."""
    gr.Markdown("Train one APM on **two** images, then slide its trigger column from one to the other. "
                "The decoded colours and islands morph continuously: the MLP is a field, not a lookup table.")
    num_layers, default_layer = layer_choices(WALK_TEACHERS[0])
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            with gr.Row():
                image_a = raw_upload(gr.Image(label="Image A (alpha = 0)", type="filepath", elem_id="walk-image-a",
                                              sources=["upload", "clipboard"], height=200))
                image_b = raw_upload(gr.Image(label="Image B (alpha = 1)", type="filepath", elem_id="walk-image-b",
                                              sources=["upload", "clipboard"], height=200))
            teacher = gr.Dropdown(WALK_TEACHERS, value=WALK_TEACHERS[0], label="Teacher", elem_id="walk-teacher")
            layer = gr.Slider(0, max(1, num_layers - 1), value=default_layer, step=1, label=_layer_label(num_layers),
                              elem_id="walk-layer")
            random_weights = gr.Checkbox(value=default_random_weights(), label="Untrained teacher (random weights, works offline)",
                                         elem_id="walk-random-weights")
            steps = gr.Slider(10, MAX_STEPS, value=DEFAULT_STEPS, step=10, label="Steps", elem_id="walk-steps")
            frames = gr.Slider(2, MAX_FRAMES, value=DEFAULT_FRAMES, step=1, label="Frames along the walk", elem_id="walk-frames")
            projection = gr.Radio(list(WALK_PROJECTIONS), value="PCA (fast)", label="Projection", elem_id="walk-projection")
            with gr.Row():
                train_btn = gr.Button("Train on both", variant="primary", elem_id="walk-train")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="walk-stop")
        with gr.Column(scale=3):
            status = gr.HTML(_status("Give two images and press 'Train on both'."), elem_id="walk-status")
            with gr.Row():
                panel = {"interactive": False, "height": 180, "min_width": 140, "format": "png", "buttons": ["fullscreen"]}
                rgb_a = gr.Image(label="Reconstruction of A", elem_id="walk-rgb-a", **panel)
                walk_rgb = gr.Image(label="Decoded RGB at alpha", elem_id="walk-rgb", **panel)
                walk_islands = gr.Image(label="Islands at alpha", elem_id="walk-islands", **panel)
                rgb_b = gr.Image(label="Reconstruction of B", elem_id="walk-rgb-b", **panel)
            with gr.Row(equal_height=True):
                alpha = gr.Slider(0, DEFAULT_FRAMES - 1, value=0, step=1, elem_id="walk-alpha", scale=4, min_width=280,
                                  label="Alpha: frame along the walk from A (first frame, alpha 0) to B (last, alpha 1)")
                play_btn = gr.Button("Play", elem_id="walk-play", scale=1, min_width=120)
            with gr.Row():
                scatter = gr.Plot(empty_scatter(), label="Islands scatter", elem_id="walk-scatter", min_width=360)
                loss = gr.Plot(_curve({}), label="Training", elem_id="walk-loss", min_width=360)
            with gr.Row():
                export_btn = gr.Button("Export the walk (GIF and .npz)", elem_id="walk-export")
                files = gr.File(label="Exports", file_count="multiple", interactive=False, elem_id="walk-files",
                                visible=False)

    outputs = [status, loss, rgb_a, rgb_b, walk_rgb, walk_islands, scatter, alpha]
    train_btn.click(queue_run, None, None, queue=False, api_name=False).then(
        train_walk, [image_a, image_b, teacher, layer, random_weights, steps, frames, projection], outputs,
        concurrency_limit=MAX_CONCURRENT_RUNS, concurrency_id="train", show_progress="hidden", api_name="train_walk")
    stop_btn.click(stop, None, None, queue=False, api_name=False)
    frame_outputs = [status, walk_rgb, walk_islands, scatter, alpha]
    alpha.input(show_alpha, alpha, frame_outputs, show_progress="hidden", trigger_mode="always_last",
                concurrency_limit=4, concurrency_id="view", api_name="walk_alpha")
    play_btn.click(play, None, frame_outputs, show_progress="hidden", concurrency_limit=4, concurrency_id="view",
                   api_name="walk_play")

    def on_teacher_change(choice: str):
        n, default = layer_choices(choice)
        return gr.update(maximum=max(1, n - 1), value=default, label=_layer_label(n))

    teacher.change(on_teacher_change, teacher, layer, queue=False, api_name=False)
    export_btn.click(export_walk, None, [files, status], concurrency_limit=2, concurrency_id="export",
                     api_name="export_walk")
