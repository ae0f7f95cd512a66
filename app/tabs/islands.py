"""The Islands tab: watch a fresh APM overfit one image, with its islands, losses and folded / unfolded state.

Run is three steps. `begin` (unqueued) stops this tab's current run at once. `prepare` (queued) validates the
inputs, encodes the image with the teacher, builds the APM and sends the panels that stay put during a run.
`stream` (queued, a few at a time on shared hardware) trains it through `apm.live.LiveRun` and sends only the
panels that change: frames are paced by time, so rendering never takes more than a small share of one core
and the training beside it keeps its speed. The `/run` API endpoint drives the same two functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image, ImageDraw

from apm.errors import APMError, InputError
from apm.images import downsample_rgb
from apm.io import environment_record, save_gif, save_json, save_npz, write_atomic
from apm.islands import (
    PERPLEXITY_NOTE,
    PERPLEXITY_RANGE,
    Projection,
    agreement_map,
    column_agreement,
    island_metrics,
    part_whole_tree,
    pca_colours,
    project,
)
from apm.live import LiveRun
from apm.recipes import FILE_TEACHER, RECIPES, Experiment, estimate_seconds, experiment, format_duration
from apm.teachers import create_teacher, load_feature_array, teacher_spec
from apm.teachers.clip import clean_labels
from apm.train import OverfitRun, Snapshot, Target

from .. import plots, trained
from ..session import Frame, RunRecord, Session
from ..widgets import (
    HEAD_CHOICES,
    INIT_CHOICES,
    LIMITS,
    PRESET_CHOICES,
    PROJECTION_CHOICES,
    RECIPE_CHOICES,
    SCHEDULE_CHOICES,
    TARGET_CHOICES,
    TEACHER_CHOICES,
    check_upload,
    choice,
    example_gallery,
    example_paths,
    file_name,
    label_of,
    layer_label,
    layer_update,
    number,
    page_teacher,
    plain,
    read_image,
    session_for,
    status_html,
    toast,
    upload_source,
    user_message,
    whole,
    zero_gpu,
)

log = logging.getLogger("apm.app")

DEFAULT_LABELS = "face, house, car, snowman, flower, temple, dog, cat, tree, person"
MAX_LABELS = 64
SLOW_PANELS_EVERY_S = 2.0  # the conv filter and the unfolded queries change slowly: refreshed every 2 s
QUICK_FIT = {"early_exaggeration_iters": 25, "full_iters": 25}  # the first live frame: a short t-SNE (the next frames go on converging it)
LIVE_WARM_ITERS = 5  # t-SNE steps per live frame: the embedding keeps converging over the frames
LEVEL_PX = 112  # side of one image of the levels strip
LINK_KEYS = ("example", "recipe", "teacher", "layer", "seed", "steps", "projection", "perplexity")
# plotly's hover and click events reach the server through a hidden box: hovering a point of the islands scatter
# names its location ('loc:<index>'), clicking a segment of the part-whole tree names it ('seg:<id>'); a counter
# makes each event a new value
PLOT_EVENTS_JS = """() => {
    const send = (text) => {
        const box = document.querySelector('#plot-pick textarea, #plot-pick input');
        if (!box) return;
        window.__apmPick = (window.__apmPick || 0) + 1;
        box.value = text + ':' + window.__apmPick;
        box.dispatchEvent(new Event('input', {bubbles: true}));
    };
    const hook = () => {
        const scatter = document.querySelector('#islands-plot .js-plotly-plot');
        if (scatter && scatter.on && !scatter.__apmHooked) {
            scatter.__apmHooked = true;
            scatter.on('plotly_hover', (e) => { const p = e.points && e.points[0]; if (p) send('loc:' + p.pointNumber); });
            scatter.on('plotly_click', (e) => { const p = e.points && e.points[0]; if (p) send('loc:' + p.pointNumber); });
        }
        const tree = document.querySelector('#part-whole-tree .js-plotly-plot');
        if (tree && tree.on && !tree.__apmHooked) {
            tree.__apmHooked = true;
            const seg = (e) => { const p = e.points && e.points[0]; if (p && p.id) send('seg:' + p.id); };
            tree.on('plotly_hover', seg);
            tree.on('plotly_click', seg);
        }
    };
    new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
    hook();
}"""
# the browser copies the link (the clipboard may be refused: the box shows it either way)
COPY_LINK_JS = """(query) => {
    const url = window.location.origin + window.location.pathname + query;
    if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
    return url;
}"""


# what a run is made of

@dataclass
class View:
    """How the islands are drawn; the page's projection controls change it, also during a run."""

    experiment: Experiment = field(default_factory=Experiment)  # its projection fields are read
    comparable: bool = True  # the APM's islands rotated onto the teacher's, so an island has one colour in both

    @property
    def config(self):
        return self.experiment.projection_config()


@dataclass
class Prepared:
    """A validated run, built and ready to train (or, for teacher islands, already done)."""

    run_id: int
    record: RunRecord
    overfit: OverfitRun | None  # None: nothing to train (the teacher's own islands)
    zero_shot: Any = None  # the teacher, when it can score the APM's global vector against labels


def _labels(text: str | None) -> list[str]:
    if not text or not str(text).strip():
        return []
    return clean_labels(str(text))[:MAX_LABELS]


@zero_gpu()
def encode(exp: Experiment, image: Image.Image):
    """The teacher for these settings and its output for the image: (teacher, TeacherOutput)."""
    teacher = create_teacher(exp.teacher, layer=exp.layer, random_weights=exp.random_weights)
    return teacher, teacher.encode(image)


def trained_experiment(exp: Experiment, loaded: trained.Loaded) -> Experiment:
    """The settings of test-time training from a checkpoint: its teacher and layer (when it names them)."""
    meta = loaded.meta
    if meta.get("teacher"):
        exp = replace(exp, teacher=teacher_key(meta["teacher"]), layer=int(meta.get("layer", 0)),
                      random_weights=bool(meta.get("random_weights", exp.random_weights)))
    elif exp.teacher == FILE_TEACHER:
        raise InputError("this checkpoint does not name its teacher: pick the teacher it was trained on")
    return replace(exp, target="dense", trains=True)


def teacher_key(teacher_id: str) -> str:
    """The picker's key for a teacher id ('dinov2:vit_small_patch14_dinov2.lvd142m' -> 'dinov2')."""
    wanted = teacher_spec(teacher_id).id
    for _, key in TEACHER_CHOICES:
        if key != FILE_TEACHER and teacher_spec(key).id == wanted:
            return key
    return teacher_id


def prepare_run(exp: Experiment, image: Image.Image, image_name: str, features: Any, labels: list[str],
                run_id: int, view: View, loaded: trained.Loaded | None = None) -> Prepared:
    """Validate and build a run: encode with the teacher (or read the user's features), build the APM (fresh, or
    from a trained APM's weights when `loaded` is given).

    Raises `InputError` (or another `APMError`) with a message for the page.
    """
    if exp.steps > LIMITS.max_steps:
        raise InputError(f"steps must be at most {LIMITS.max_steps} on this shared hardware")
    if loaded is not None:
        exp = trained_experiment(exp, loaded)
    teacher = None
    if exp.teacher == FILE_TEACHER:
        source = upload_source(features, "feature file")
        if source is None:
            raise InputError("upload a feature array (.npy or .pt of shape (h, w, d) or (d,)) for 'your own features'")
        array = load_feature_array(source, name=file_name(features))
        target = Target.from_array(array)
        exp = replace(exp, target="dense" if array.ndim == 3 else "global")  # the target follows the array
        teacher_grid, teacher_global = (array, None) if array.ndim == 3 else (None, array)
        teacher_label = f"your features {tuple(array.shape)}"
    else:
        teacher, out = encode(exp, image)
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
    return Prepared(run_id, record, overfit, zero_shot)


def make_frame(snap: Snapshot, record: RunRecord, view: View, zero_shot: Any = None, final: bool = False) -> Frame:
    """Project and measure one snapshot (the panels' data), warm-started from the run's previous frame."""
    config = view.config
    previous = record.frames[-1].projection if record.frames else None
    if not final:
        config = replace(config, warm_iters=min(config.warm_iters, LIVE_WARM_ITERS))
        if previous is None:
            config = replace(config, **{k: min(v, getattr(config, k)) for k, v in QUICK_FIT.items()})
    align = record.teacher_projection if view.comparable else None
    projection = project(snap.features, config, previous, full_fit=final, align_to=align)
    metrics = island_metrics(snap.features, record.teacher_grid)
    labels = None
    if zero_shot is not None and snap.global_vector is not None and snap.global_vector.shape[-1] == zero_shot.info.global_dim:
        labels = zero_shot.zero_shot(snap.global_vector, record.labels, top_k=min(5, len(record.labels)))
    return Frame(
        step=snap.step, elapsed_s=snap.elapsed_s, feat_loss=snap.feat_loss, rgb_loss=snap.rgb_loss,
        features=snap.features.astype(np.float16), rgb=snap.rgb, trigger_column=snap.trigger_column,
        conv_filter=snap.conv_filter, projection=projection, metrics=metrics, global_vector=snap.global_vector,
        apm_labels=labels,
    )


def live_frames(prepared: Prepared, session: Session) -> Iterator[Frame]:
    """Train the prepared run and yield a new `Frame` about every `frame_interval_s`, the last one fully fitted.

    Training runs in its own process where it can (`LiveRun(backend="auto")`). Frames are paced by time: a
    snapshot is asked for about two steps before a frame is due, and frames are spaced so that projecting and
    measuring them takes at most `render_share` of one core (on 2 cores, what the server spends, training loses).
    """
    record = prepared.record
    live = LiveRun(prepared.overfit, keep=2, threads=LIMITS.train_threads, idle_timeout_s=15.0, backend="auto").start()
    record.live = live
    seen, pending, asked = 0, None, False
    next_at = time.monotonic()
    frames, total_cpu = 0, 0.0
    try:
        while not live.finished:
            due = next_at - time.monotonic()  # seconds until the next frame
            lead = 2.0 / live.steps_per_s if live.steps_per_s > 0 else 0.1  # about two training steps
            if pending is None and not asked and due <= lead:
                live.request_snapshot()  # recorded at the next step: here before the frame is due
                asked = True
            if due > 0 or pending is None:
                if due > 0:  # sleep until the frame is due (or until it is time to ask), unless a snapshot comes
                    timeout = due - lead if pending is None and not asked else due
                else:  # due, and waiting for the snapshot asked for
                    timeout = 0.5
                snap, seen = live.wait(seen, timeout=max(0.005, timeout))
                pending = snap or pending
                continue
            started, cpu = time.monotonic(), time.thread_time()
            frame = make_frame(pending, record, session.view, prepared.zero_shot)
            # CPU time of this call (measured within it: Gradio resumes a generator on any of its worker threads)
            cost = time.thread_time() - cpu
            record.add_frame(frame)
            pending, asked = None, False
            frames, total_cpu = frames + 1, total_cpu + cost
            yield frame
            # a steady cadence (a late snapshot does not push every later frame back), never more CPU than the
            # render share, and never two frames back to back after a stall
            interval = LIMITS.frame_interval_s
            next_at = max(next_at + interval, started + cost / LIMITS.render_share, started + interval / 2)
        live.join()
        if live.error is not None:
            raise live.error
        last = live.latest
        if last is not None:  # the final picture: a full fit of the last recorded state
            if record.frames and record.frames[-1].step == last.step:
                record.frames.pop()
            frame = make_frame(last, record, session.view, prepared.zero_shot, final=True)
            record.add_frame(frame)
            yield frame
    finally:
        live.stop()
        if frames:
            log.info("run %d: %d live frames, projection and metrics %.1f ms CPU each, %.1f steps/s, %s backend",
                     record.run_id, frames, 1000 * total_cpu / frames, live.steps_per_s, live.backend)


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


def folded_markdown(record: RunRecord) -> str:
    f = record.folded
    if not f:
        return "No APM in this experiment: these are the teacher's own islands."
    rows = "\n".join(f"| {name} | {count:,} |" for name, count in f["parts"].items())
    h, w = record.grid_shape
    return (
        f"**Folded state**: {f['param_count']:,} parameters, {f['param_bytes'] / 2**20:.1f} MB. "
        "This is all the APM *is* before it looks at a location.\n\n"
        f"| part | parameters |\n|---|---|\n{rows}\n\n"
        f"**Unfolded state**: {h} x {w} queries, one per location. Each query is the same trigger column (what "
        "the conv filter squeezed out of the whole image) followed by that location's positional code. The "
        "shared MLP answers every query independently, so locations can be decoded in any order."
    )


def recipe_markdown(name: str) -> str:
    recipe = RECIPES[name]
    if not recipe.settings:
        return f"**{recipe.title}.** {recipe.description}"
    shown = ", ".join(f"{k.replace('_', ' ')} = {v}" for k, v in recipe.settings.items())
    return f"**{recipe.title}.** {recipe.description}\n\n*This recipe set:* {shown}. Change anything afterwards."


def expected_markdown(exp: Experiment) -> str:
    """The expected CPU time of a run, said before it starts."""
    try:
        seconds = estimate_seconds(exp)
    except APMError as exc:
        return user_message(exc)
    text = f"Expected time on this machine: about {format_duration(seconds)}"
    if exp.trains and seconds > LIMITS.max_run_seconds:
        text += f" · runs are cut off after {LIMITS.max_run_seconds:.0f} s on this shared hardware"
    return text


# the tab

class IslandsTab:
    """Components as attributes; handlers return {component: value} dicts."""

    def build(self) -> IslandsTab:
        start = experiment("custom")
        start = replace(start, teacher=page_teacher(start.teacher))
        spec = teacher_spec(start.teacher)
        with gr.Row(elem_id="action-bar", equal_height=False):
            self.run_btn = gr.Button("Run", variant="primary", elem_id="run", scale=0, min_width=90, size="lg")
            self.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", scale=0, min_width=90, size="lg")
            self.status = gr.HTML(status_html("Ready: pick an image and a teacher, then press Run."),
                                  elem_id="status", scale=5, min_width=300)
            self.copy_link = gr.Button("Copy link", elem_id="copy-link", scale=0, min_width=90, size="sm")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300, elem_id="inputs"):
                self.recipe = gr.Dropdown(RECIPE_CHOICES, value="custom", label="Experiment", elem_id="recipe")
                self.recipe_note = gr.Markdown(recipe_markdown("custom"), elem_id="recipe-note")
                with gr.Accordion("Trained APM (a checkpoint)", open=False, elem_id="trained"):
                    self.checkpoint = gr.Dropdown(trained.checkpoint_choices(), value=trained.NONE,
                                                  label="Start from", elem_id="checkpoint", allow_custom_value=True,
                                                  info="islands of your image in one forward pass; Run then trains it "
                                                       "further on this image. hf:ORG/REPO fetches one from the Hub.")
                    self.checkpoint_files = gr.File(label="… or upload model.safetensors + config.json",
                                                    file_count="multiple", file_types=[".safetensors", ".json"],
                                                    elem_id="checkpoint-files")
                self.image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard", "webcam"],
                                      elem_id="input-image", height=220)
                self.examples = gr.Gallery(example_gallery(), label="Examples (click one)", columns=3, height="auto",
                                           allow_preview=False, elem_id="examples", object_fit="cover", buttons=[])
                self.teacher = gr.Dropdown(TEACHER_CHOICES, value=start.teacher, label="Teacher", elem_id="teacher")
                self.layer = gr.Slider(0, spec.num_layers - 1, value=spec.default_layer, step=1,
                                       label=layer_label(spec.num_layers), elem_id="layer")
                self.random_weights = gr.Checkbox(value=bool(start.random_weights or _random_default()),
                                                  label="Untrained teacher (random weights, works offline)",
                                                  elem_id="random-weights")
                self.features = gr.File(label="Your feature array: .npy / .pt, shape (h, w, d) or (d,)",
                                        file_types=[".npy", ".pt", ".pth", ".npz"], visible=False, elem_id="features-file")
                self.target = gr.Radio(TARGET_CHOICES, value=start.target, label="Target", elem_id="target")
                self.labels = gr.Textbox(DEFAULT_LABELS, label="Zero-shot labels (comma-separated)", visible=False,
                                         elem_id="labels")
                with gr.Accordion("Training", open=False, elem_id="training"):
                    self.preset = gr.Radio(PRESET_CHOICES, value=start.preset, label="Model preset", elem_id="preset")
                    self.steps = gr.Slider(10, LIMITS.max_steps, value=start.steps, step=10, label="Steps", elem_id="steps")
                    self.lr = gr.Number(start.effective_lr, label="Learning rate (Adam)", elem_id="lr")
                    self.lr_schedule = gr.Radio(SCHEDULE_CHOICES, value=start.lr_schedule, label="Learning-rate schedule",
                                                elem_id="lr-schedule")
                    self.seed = gr.Number(start.seed, precision=0, label="Seed", elem_id="seed")
                    self.record_every = gr.Slider(1, 50, value=start.record_every, step=1,
                                                  label="Keep a snapshot at least every N steps", elem_id="record-every")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    self.rgb_weight = gr.Number(start.rgb_weight, label="RGB loss weight (0: features only)",
                                                elem_id="rgb-weight")
                    self.feature_loss = gr.Radio([("MSE", "mse"), ("cosine", "cosine")], value=start.feature_loss,
                                                 label="Feature loss", elem_id="feature-loss")
                    self.normalize = gr.Checkbox(value=start.normalize_target, label="Normalise the target (divide by its RMS)",
                                                 elem_id="normalize")
                    self.init = gr.Radio(INIT_CHOICES, value=start.init, label="Initialisation", elem_id="init")
                    self.global_head = gr.Radio(HEAD_CHOICES, value=start.global_head, label="Global (CLS) head",
                                                elem_id="global-head")
                    self.precision = gr.Radio([("auto (bf16 only where native)", "auto"), ("bf16", "bf16"), ("fp32", "fp32")],
                                              value=start.precision, label="Precision", elem_id="precision")
                self.projection = gr.Radio(PROJECTION_CHOICES, value=start.projection, label="Islands view",
                                           elem_id="projection")
                with gr.Accordion("t-SNE settings", open=False, elem_id="tsne"):
                    self.perplexity = gr.Slider(*PERPLEXITY_RANGE, value=30, step=1, label="Perplexity", elem_id="perplexity",
                                                info=PERPLEXITY_NOTE)
                    self.metric = gr.Radio([("cosine", "cosine"), ("Euclidean", "euclidean")], value="cosine",
                                           label="Distance", elem_id="metric")
                    self.tsne_init = gr.Radio([("PCA", "pca"), ("random", "random")], value="pca", label="Start",
                                              elem_id="tsne-init")
                    self.comparable = gr.Checkbox(value=True, elem_id="comparable",
                                                  label="Comparable colours: rotate the APM's islands onto the teacher's")
                self.expected = gr.Markdown(expected_markdown(start), elem_id="expected")
                self.link = gr.Textbox(label="Link to these settings (an example image, teacher, layer, recipe, seed, "
                                       "steps and view)", elem_id="share-link", interactive=False, visible=False,
                                       buttons=["copy"])
            with gr.Column(scale=3, min_width=300):
                with gr.Row(equal_height=False):
                    self.islands_plot = gr.Plot(plots.islands_scatter(None), label="Islands scatter",
                                                elem_id="islands-plot", scale=3, min_width=300)
                    with gr.Column(scale=2, min_width=280):
                        with gr.Row():
                            grid_image = {"interactive": False, "height": 170, "min_width": 130, "format": "png",
                                          "buttons": ["fullscreen"]}
                            self.input_small = gr.Image(label="Input (grid)", elem_id="input-small", **grid_image)
                            self.islands_image = gr.Image(label="APM islands", elem_id="islands-image", **grid_image)
                        with gr.Row():
                            self.teacher_islands = gr.Image(label="Teacher", elem_id="teacher-islands", **grid_image)
                            self.rgb_image = gr.Image(label="RGB head", elem_id="rgb-image", **grid_image)
                self.levels = gr.Gallery(label="Levels: the teacher's islands at every layer, one forward pass, PCA "
                                         "colours (click one to train on that layer)", elem_id="levels-strip",
                                         columns=8, height=250, allow_preview=False, object_fit="contain",
                                         buttons=[])
                self.timeline = gr.Slider(0, 300, value=0, step=1, elem_id="timeline",
                                          label="Timeline: training step of the frame shown (drag to scrub back)")
                with gr.Row(equal_height=False, elem_id="pointing"):
                    point_image = {"interactive": False, "height": 170, "min_width": 130, "format": "png",
                                   "buttons": []}
                    self.agreement_apm = gr.Image(label="Agreement with the clicked location: APM",
                                                  elem_id="agreement-apm", **point_image)
                    self.agreement_teacher = gr.Image(label="… and the teacher", elem_id="agreement-teacher",
                                                      **point_image)
                    self.column_plot = gr.Plot(plots.column_figure([], None), label="Its column across levels",
                                               elem_id="column-agreement", min_width=260)
                self.tree_plot = gr.Plot(plots.tree_figure(None), label="Part-whole tree (hover or click a segment: its "
                                         "locations light up on the grid images)", elem_id="part-whole-tree")
                self.pick = gr.Textbox(elem_id="plot-pick", container=False, elem_classes=["apm-offscreen"],
                                       show_label=False, lines=1)
                self.loss_plot = gr.Plot(plots.placeholder("Loss and whole to part", "press Run"), label="Loss curves",
                                         elem_id="loss-plot")
                with gr.Row(equal_height=False):
                    self.fidelity_plot = gr.Plot(plots.placeholder("Teacher fidelity", "press Run"),
                                                 label="Teacher fidelity (error map)", elem_id="fidelity-plot", min_width=280)
                    with gr.Column(min_width=280):
                        self.teacher_labels = gr.HTML(plots.labels_html(None, "Teacher's top-5 labels"),
                                                      elem_id="clip-labels", visible=False)
                        self.apm_labels = gr.HTML(plots.labels_html(None, "APM's top-5 labels (its global vector)"),
                                                  elem_id="apm-labels", visible=False)
                with gr.Accordion("Folded and unfolded state", open=True, elem_id="folded-unfolded"):
                    with gr.Row():
                        with gr.Column(scale=2, min_width=260):
                            self.folded = gr.Markdown(elem_id="folded")
                        self.conv_filter = gr.Image(label="The conv filter (3 x p x p, as colours)", interactive=False,
                                                    height=140, elem_id="conv-filter", scale=1, min_width=140, format="png")
                    self.unfolded_plot = gr.Plot(plots.placeholder("Unfolded state", "press Run"), label="Unfolded state",
                                                 elem_id="unfolded-plot")
                with gr.Row():
                    self.export_btn = gr.Button("Export GIF, snapshots (.npz), panels (PNG) and settings",
                                                elem_id="export")
                    self.export_files = gr.File(label="Exports", file_count="multiple", interactive=False,
                                                elem_id="export-files", visible=False)
        self._wire()
        return self

    # component groups

    @property
    def settings_inputs(self) -> list:
        """Everything a run reads, in the order `settings()` takes them."""
        return [self.recipe, self.image, self.teacher, self.layer, self.random_weights, self.features, self.target,
                self.labels, self.preset, self.steps, self.lr, self.lr_schedule, self.seed, self.record_every,
                self.rgb_weight, self.feature_loss, self.normalize, self.init, self.global_head, self.precision,
                self.projection, self.perplexity, self.metric, self.tsne_init, self.checkpoint]

    @property
    def view_inputs(self) -> list:
        return [self.projection, self.perplexity, self.metric, self.tsne_init, self.comparable]

    @property
    def frame_outputs(self) -> list:
        """What changes from frame to frame (the live stream and the timeline)."""
        return [self.status, self.islands_plot, self.islands_image, self.rgb_image, self.loss_plot,
                self.fidelity_plot, self.apm_labels, self.conv_filter, self.unfolded_plot, self.tree_plot]

    @property
    def static_outputs(self) -> list:
        """What a run sets once, when it is prepared."""
        return [self.status, self.input_small, self.teacher_islands, self.islands_plot, self.islands_image,
                self.rgb_image, self.folded, self.teacher_labels, self.apm_labels, self.timeline, self.loss_plot,
                self.fidelity_plot, self.conv_filter, self.unfolded_plot, self.export_files, self.tree_plot,
                self.agreement_apm, self.agreement_teacher, self.column_plot]

    @property
    def trained_outputs(self) -> list:
        return [self.status, self.teacher, self.layer, self.input_small, self.islands_image, self.rgb_image,
                self.teacher_islands, self.islands_plot, self.fidelity_plot, self.tree_plot, self.timeline]

    @property
    def grid_images(self) -> list:
        """The grid images a click can point into."""
        return [self.input_small, self.islands_image, self.teacher_islands, self.rgb_image]

    @property
    def point_outputs(self) -> list:
        return [self.agreement_apm, self.agreement_teacher, self.column_plot, *self.grid_images, self.status]

    @property
    def link_inputs(self) -> list:
        return [self.recipe, self.image, self.teacher, self.layer, self.seed, self.steps, self.projection,
                self.perplexity]

    @property
    def link_outputs(self) -> list:
        return [self.recipe, self.image, self.teacher, self.layer, self.seed, self.steps, self.projection,
                self.perplexity, self.target, self.preset, self.lr, self.lr_schedule, self.rgb_weight, self.init,
                self.global_head, self.precision, self.metric, self.tsne_init, self.recipe_note, self.features,
                self.labels, self.random_weights, self.expected, self.status]

    def _wire(self) -> None:
        settings = self.settings_inputs
        recipe_outputs = [self.teacher, self.layer, self.target, self.preset, self.steps, self.lr, self.lr_schedule,
                          self.rgb_weight, self.init, self.global_head, self.precision, self.projection,
                          self.perplexity, self.metric, self.tsne_init, self.recipe_note, self.features,
                          self.labels, self.random_weights, self.expected]
        def private(name: str) -> dict:  # the page's own events: callable, undocumented, named after their tab
            return {"api_visibility": "undocumented", "api_name": f"islands_{name}"}
        self.recipe.input(self.on_recipe, [self.recipe], recipe_outputs, queue=False, **private("recipe"))
        self.teacher.input(self.on_teacher, [self.teacher, self.layer], [self.layer, self.features, self.labels,
                                                                        self.random_weights, self.teacher_labels,
                                                                        self.apm_labels], queue=False, **private("teacher"))
        self.preset.input(self.on_preset, [self.preset], [self.lr], queue=False, **private("preset"))
        for control in (self.teacher, self.layer, self.target, self.preset, self.steps, self.recipe):
            control.change(self.on_settings, settings, [self.expected], queue=False, preprocess=False,
                           trigger_mode="always_last", **private("expected"))
        self.image.change(self.on_image, [self.image], [self.status], queue=False, preprocess=False, **private("image"))
        self.examples.select(self.on_example, None, [self.image], queue=False, **private("example"))

        # Run: stop what runs here now (unqueued), then prepare, then stream; a new Run always starts a new run
        run = self.run_btn.click(self.begin, None, [self.status], queue=False, trigger_mode="multiple", **private("begin"))
        run = run.then(self.prepare, settings + [self.comparable], self.static_outputs, preprocess=False,
                       concurrency_limit=2, concurrency_id="prepare", show_progress="hidden",
                       trigger_mode="multiple", **private("prepare"))
        run.then(self.stream, None, self.frame_outputs + [self.timeline], concurrency_limit=LIMITS.max_concurrent_runs,
                 concurrency_id="train", show_progress="hidden", trigger_mode="multiple", **private("stream"))
        self.stop_btn.click(self.stop, None, None, queue=False, **private("stop"))
        self.timeline.input(self.scrub, [self.timeline], self.frame_outputs, concurrency_limit=4,
                              concurrency_id="view", show_progress="hidden", trigger_mode="always_last", **private("scrub"))
        for control in self.view_inputs:
            control.input(self.reproject, self.view_inputs + [self.timeline],
                          [self.islands_plot, self.islands_image, self.teacher_islands, self.status],
                          concurrency_limit=4, concurrency_id="view", show_progress="hidden",
                          trigger_mode="always_last", **private("reproject"))
        self.export_btn.click(self.export, None, [self.export_files, self.status], concurrency_limit=2,
                              concurrency_id="export", **private("export"))

        # a trained APM: its islands of the image at once (one forward pass), no training
        for control in (self.checkpoint, self.image):
            control.change(self.on_trained, [self.image, self.checkpoint, self.projection, self.comparable],
                           self.trained_outputs, preprocess=False, concurrency_limit=2, concurrency_id="levels",
                           show_progress="minimal", trigger_mode="always_last", **private("trained"))
        self.checkpoint_files.upload(self.on_checkpoint_upload, [self.checkpoint_files], [self.checkpoint, self.status],
                                     preprocess=False, concurrency_limit=2, concurrency_id="levels",
                                     **private("checkpoint_upload"))

        # levels strip: after an image or a teacher is chosen; a click on a level selects it
        for control in (self.image, self.teacher, self.random_weights):
            control.change(self.on_levels, [self.image, self.teacher, self.random_weights], [self.levels],
                           preprocess=False, concurrency_limit=2, concurrency_id="levels", show_progress="minimal",
                           trigger_mode="always_last", **private("levels"))
        self.levels.select(self.on_level, None, [self.layer], queue=False, **private("level"))
        # pointing: a click on any grid image marks the location and draws the agreement maps
        for image in self.grid_images:
            image.select(self.on_point, [image], self.point_outputs, concurrency_limit=4, concurrency_id="view",
                         show_progress="hidden", trigger_mode="always_last", **private("point"))
        # hovering the scatter or a tree segment (plotly events, through the hidden box)
        self.pick.change(self.on_pick, [self.pick], self.point_outputs, concurrency_limit=4, concurrency_id="view",
                        show_progress="hidden", trigger_mode="always_last", **private("pick"))
        # a shareable link: built here, copied by the browser
        self.copy_link.click(self.share_link, self.link_inputs, [self.link], queue=False, preprocess=False,
                             **private("link")).then(None, [self.link], [self.link], js=COPY_LINK_JS)

    # settings

    def on_recipe(self, name: str) -> dict:
        """Picking a recipe sets every control it names (and shows what it set)."""
        name = choice(name, RECIPE_CHOICES, "experiment")
        exp = experiment(name)
        exp = replace(exp, teacher=page_teacher(exp.teacher))
        spec_view = exp.projection_config()
        out = {
            self.teacher: exp.teacher, self.layer: layer_update(exp.teacher, exp.layer), self.target: exp.target,
            self.preset: exp.preset, self.steps: exp.steps, self.lr: exp.effective_lr, self.lr_schedule: exp.lr_schedule,
            self.rgb_weight: exp.rgb_weight, self.init: exp.init, self.global_head: exp.global_head,
            self.precision: exp.precision, self.projection: exp.projection, self.perplexity: spec_view.perplexity,
            self.metric: spec_view.metric, self.tsne_init: spec_view.init, self.recipe_note: recipe_markdown(name),
            self.expected: expected_markdown(exp),
        }
        out.update(self._teacher_visibility(exp.teacher))
        return out

    def _teacher_visibility(self, teacher_id: str) -> dict:
        own = teacher_id == FILE_TEACHER
        zero_shot = not own and teacher_spec(teacher_id).supports_zero_shot
        return {self.features: gr.update(visible=own), self.labels: gr.update(visible=zero_shot),
                self.random_weights: gr.update(visible=not own)}

    def on_teacher(self, teacher_id: str, layer: float | None) -> dict:
        """The layer slider, the feature-file box, the labels box and the untrained box follow the teacher."""
        teacher_id = choice(teacher_id, TEACHER_CHOICES, "teacher")
        out = {self.layer: layer_update(teacher_id)}
        out.update(self._teacher_visibility(teacher_id))
        zero_shot = teacher_id != FILE_TEACHER and teacher_spec(teacher_id).supports_zero_shot
        out[self.teacher_labels] = gr.update(visible=zero_shot)
        out[self.apm_labels] = gr.update(visible=zero_shot)
        return out

    def on_preset(self, preset: str) -> dict:
        """Picking a preset puts its learning rate in the box: a run uses exactly what the page shows."""
        return {self.lr: experiment(preset=choice(preset, PRESET_CHOICES, "preset")).effective_lr}

    def settings(self, recipe, image, teacher, layer, random_weights, features, target, labels, preset, steps, lr,
                 lr_schedule, seed, record_every, rgb_weight, feature_loss, normalize, init, global_head, precision,
                 projection, perplexity, metric, tsne_init, checkpoint="") -> tuple[Experiment, Any, Any, list[str]]:
        """The page's values (raw: events run with preprocess=False) -> (Experiment, image, features, labels)."""
        exp = Experiment(
            recipe=choice(recipe or "custom", RECIPE_CHOICES, "experiment"),
            teacher=choice(teacher, TEACHER_CHOICES, "teacher"),
            layer=None if layer is None else whole(layer, "layer", 0, 0, 1000),
            target=choice(target, TARGET_CHOICES, "target"),
            random_weights=bool(random_weights),
            trains=RECIPES[recipe or "custom"].settings.get("trains", True),
            preset=choice(preset, PRESET_CHOICES, "preset"),
            steps=whole(steps, "steps", 300, 1, LIMITS.max_steps),
            lr=number(lr, "learning rate", None, 1e-8, 1.0),
            lr_schedule=choice(lr_schedule, SCHEDULE_CHOICES, "schedule"),
            seed=whole(seed, "seed", 0, 0, 2**31 - 1),
            record_every=whole(record_every, "snapshot interval", 10, 1, 1000),
            rgb_weight=number(rgb_weight, "RGB loss weight", 1.0, 0.0, 100.0),
            feature_loss=choice(feature_loss, [("mse", "mse"), ("cosine", "cosine")], "feature loss"),
            normalize_target=bool(normalize),
            init=choice(init, INIT_CHOICES, "initialisation"),
            global_head=choice(global_head, HEAD_CHOICES, "global head"),
            precision=choice(precision, [("auto", "auto"), ("bf16", "bf16"), ("fp32", "fp32")], "precision"),
            projection=choice(projection, PROJECTION_CHOICES, "islands view"),
            perplexity=number(perplexity, "perplexity", None, *PERPLEXITY_RANGE),
            metric=choice(metric or "cosine", [("cosine", "cosine"), ("euclidean", "euclidean")], "distance"),
            tsne_init=choice(tsne_init or "pca", [("pca", "pca"), ("random", "random")], "t-SNE start"),
            checkpoint=str(checkpoint or ""),
        )
        return exp, image, features, _labels(labels)

    def on_settings(self, *values) -> dict:
        try:
            exp, *_ = self.settings(*values)
        except APMError:
            return {self.expected: gr.skip()}
        return {self.expected: expected_markdown(exp)}

    def on_image(self, payload) -> dict:
        """A chosen file is checked at once: a bad upload is reported now, and a stale error is cleared."""
        message = check_upload(payload)
        if not message:
            return {self.status: status_html("Ready: pick a teacher and press Run.")}
        if message.endswith("ready"):
            return {self.status: status_html(f"{message}: press Run.")}
        toast(message)
        return {self.status: status_html(message, "error")}

    def on_example(self, evt: gr.SelectData) -> dict:
        paths = example_gallery()
        index = int(evt.index) if not isinstance(evt.index, (list, tuple)) else int(evt.index[0])
        return {self.image: paths[index][0]}

    # running

    def begin(self, request: gr.Request = None) -> dict:
        """Run's first, unqueued step: the run going on in this tab ends now."""
        session_for(request).new_run()
        return {self.status: status_html("starting: reading the image and the teacher…", "running")}

    def prepare(self, recipe, image, teacher, layer, random_weights, features, target, labels, preset, steps, lr,
                lr_schedule, seed, record_every, rgb_weight, feature_loss, normalize, init, global_head, precision,
                projection, perplexity, metric, tsne_init, checkpoint, comparable, request: gr.Request = None) -> dict:
        """Validate, encode, build; send the panels that stay put during the run. (Named parameters: Gradio
        hands `request` only to a function whose signature names it.)"""
        session = session_for(request)
        run_id = session.run_id
        try:
            exp, image_payload, features, labels = self.settings(
                recipe, image, teacher, layer, random_weights, features, target, labels, preset, steps, lr,
                lr_schedule, seed, record_every, rgb_weight, feature_loss, normalize, init, global_head, precision,
                projection, perplexity, metric, tsne_init, checkpoint)
            picture = read_image(image_payload)
            session.view = View(exp, bool(comparable))
            loaded = trained.load(exp.checkpoint, session)
            prepared = prepare_run(exp, picture, file_name(image_payload), features, labels, run_id, session.view,
                                   loaded)
        except Exception as exc:  # noqa: BLE001 - every failure is one readable line, and the page lives on
            if not isinstance(exc, APMError):
                log.exception("preparing a run failed")
            message = user_message(exc)
            toast(message)
            return {self.status: status_html(message, "error")}
        if not session.is_current(run_id):  # Stop or a newer Run came first
            return {self.status: status_html("stopped before it started")}
        record = prepared.record
        untrained = exp.random_weights and exp.teacher != FILE_TEACHER
        label_note = " (untrained teacher: these labels mean nothing)" if untrained else ""
        teacher_image = (plots.grid_image(record.teacher_projection.image) if record.teacher_projection is not None
                         else None)
        out = {
            self.input_small: plots.grid_image(record.input_small),
            self.teacher_islands: teacher_image,
            self.folded: folded_markdown(record),
            self.teacher_labels: gr.update(visible=bool(record.labels), value=plots.labels_html(
                record.teacher_labels, f"Teacher's top-5 labels{label_note}")),
            self.apm_labels: gr.update(visible=bool(record.labels), value=plots.labels_html(
                None, f"APM's top-5 labels{label_note}", "appear with the first frame")),
            self.timeline: gr.update(value=0, maximum=max(1, record.total_steps), interactive=False),
            self.loss_plot: plots.placeholder("Loss and whole to part", "training starts…", height=420),
            self.fidelity_plot: plots.placeholder("Teacher fidelity", "training starts…"),
            self.conv_filter: None,
            self.unfolded_plot: plots.placeholder("Unfolded state", "training starts…"),
            self.islands_image: None,
            self.rgb_image: None,
            self.export_files: gr.update(value=None, visible=False),
            self.tree_plot: plots.tree_figure(None),
            self.agreement_apm: None,
            self.agreement_teacher: None,
            self.column_plot: plots.column_figure([], None),
        }
        if prepared.overfit is None:  # the teacher's own islands: nothing to train
            session.run = record
            out[self.islands_plot] = plots.islands_scatter(record.teacher_projection)
            tree = part_whole_tree(record.teacher_grid, colours=record.teacher_projection.image)
            out[self.tree_plot] = plots.tree_figure(tree, "Part-whole tree of the teacher")
            out[self.status] = status_html(
                f"done · the teacher's own islands: {record.grid_shape[0]} x {record.grid_shape[1]} locations, "
                f"{label_of(exp.projection, PROJECTION_CHOICES)} · {record.teacher_label}", "done")
            return out
        session.prepared = prepared
        expected = format_duration(estimate_seconds(exp))
        out[self.islands_plot] = plots.islands_scatter(None)
        out[self.status] = status_html(f"training starts (expected {expected}) · {record.teacher_label}", "running")
        return out

    def stream(self, request: gr.Request = None) -> Iterator[dict]:
        """Train the prepared run and send each frame's changing panels."""
        session = session_for(request)
        prepared, session.prepared = session.prepared, None
        if prepared is None or prepared.overfit is None or not session.is_current(prepared.run_id):
            # nothing to train (failed, stopped, superseded, or teacher islands only): one update that changes
            # nothing, because a generator that yields none has Gradio blank all of its outputs
            yield {self.status: gr.skip()}
            return
        record = prepared.record
        session.run = record
        last_slow = 0.0
        try:
            for frame in live_frames(prepared, session):
                if record.live.finished:
                    break  # the final frame: sent once, below, with how the run ended
                slow = time.monotonic() - last_slow >= SLOW_PANELS_EVERY_S
                if slow:
                    last_slow = time.monotonic()
                yield self.frame_panels(record, frame, slow=slow, live=True)
            record.status = "stopped" if record.live.stop_reason in ("stopped", "abandoned") else "done"
            kind, lead = ending(record)
            record.note = lead
            if record.frames:
                yield {**self.frame_panels(record, record.frames[-1], slow=True, live=False, lead=lead, kind=kind),
                       self.timeline: gr.update(value=record.frames[-1].step, interactive=True)}
        except Exception as exc:  # noqa: BLE001 - one user's failure must never take the app down
            log.exception("run failed")
            record.status = "failed"
            message = f"the run failed: {user_message(exc)}"
            toast(message)
            yield {self.status: status_html(message, "error"), self.timeline: gr.update(interactive=bool(record.frames))}
        finally:
            if record.live is not None:
                record.live.stop()  # the page went away (a closed generator): free the CPU now

    def frame_panels(self, record: RunRecord, frame: Frame, *, slow: bool, live: bool, lead: str = "training",
                     kind: str = "running", shown: bool = False) -> dict:
        """The changing panels for one frame (`slow`: also the conv filter and the unfolded queries)."""
        index = record.frames.index(frame) if frame in record.frames else len(record.frames) - 1
        record.shown = index
        hist = record.history()
        frames = record.frames[: index + 1] if not live else record.frames
        fid = frame.metrics.fidelity_map
        out = {
            self.status: status_html(status_text(record, frame, lead, shown), kind),
            self.islands_plot: plots.islands_scatter(frame.projection, frame.step),
            self.islands_image: plots.grid_image(frame.projection.image),
            self.rgb_image: plots.grid_image(frame.rgb),
            self.loss_plot: plots.loss_figure(hist["step"], hist["feat_loss"], hist["rgb_loss"],
                                              [f.step for f in frames], [f.metrics.n_islands for f in frames],
                                              [f.metrics.n_connected for f in frames], current_step=frame.step,
                                              global_only=record.experiment.target == "global"),
            self.fidelity_plot: plots.heatmap_figure(
                fid, "Teacher fidelity", 0.0, 1.0,
                sub=(f"cos(APM, teacher) per location, mean {frame.metrics.fidelity:.2f}" if fid is not None
                     else "needs a dense teacher target")),
            # sent even when hidden: a skip costs Gradio more than this short string
            self.apm_labels: plots.labels_html(frame.apm_labels, "APM's top-5 labels" + _untrained_note(record),
                                               "need a global target (Target: global or both)"),
        }
        if live:
            out[self.timeline] = frame.step
        else:  # the part-whole tree of a still frame (a live run would pay for it on every frame)
            tree = part_whole_tree(frame.features.astype(np.float32), colours=frame.projection.image)
            out[self.tree_plot] = plots.tree_figure(tree, f"Part-whole tree of the APM at step {frame.step}")
        if slow:
            out[self.conv_filter] = plots.filter_image(frame.conv_filter)
            out[self.unfolded_plot] = plots.unfolded_figure(frame.trigger_column, record.positional, record.grid_shape)
        else:
            out[self.conv_filter] = gr.skip()
            out[self.unfolded_plot] = gr.skip()
        return out

    def stop(self, request: gr.Request = None) -> None:
        session = session_for(request)
        session.stop()

    def scrub(self, step: float, request: gr.Request = None) -> dict:
        """Show a recorded frame: every panel follows the timeline."""
        record = session_for(request).run
        if record is None or not record.frames:
            return {self.status: status_html("nothing recorded yet: press Run")}
        _, frame = record.frame_at_step(step)
        return self.frame_panels(record, frame, slow=True, live=False, lead="showing", kind="info", shown=True)

    def reproject(self, projection, perplexity, metric, tsne_init, comparable, step,
                  request: gr.Request = None) -> dict:
        """A new islands view: the shown frame and the teacher are projected again (a live run follows it)."""
        session = session_for(request)
        try:
            base = session.view.experiment if session.view is not None else Experiment()
            exp = replace(base, projection=choice(projection, PROJECTION_CHOICES, "islands view"),
                          perplexity=number(perplexity, "perplexity", None, *PERPLEXITY_RANGE),
                          metric=metric, tsne_init=tsne_init)
            view = View(exp, bool(comparable))
            view.config  # noqa: B018 - validates the combination now
        except APMError as exc:
            return {self.status: status_html(user_message(exc), "error")}
        session.view = view
        record = session.run
        if record is None:
            return {self.status: gr.skip()}
        if record.teacher_grid is not None:
            record.teacher_projection = project(record.teacher_grid, view.config)
        out = {self.teacher_islands: (plots.grid_image(record.teacher_projection.image)
                                      if record.teacher_projection is not None else gr.skip())}
        if not record.frames:  # teacher islands only
            out[self.islands_plot] = plots.islands_scatter(record.teacher_projection)
            out[self.islands_image] = gr.skip()
            out[self.status] = gr.skip()
            return out
        if record.live is not None and record.live.alive:
            out.update({self.islands_plot: gr.skip(), self.islands_image: gr.skip(), self.status: gr.skip()})
            return out
        index, frame = record.frame_at_step(step if record.shown < 0 else record.frames[record.shown].step)
        align = record.teacher_projection if view.comparable else None
        projection_ = project(frame.features.astype(np.float32), view.config, align_to=align)
        frame = replace(frame, projection=projection_)
        record.frames[index] = frame
        out[self.islands_plot] = plots.islands_scatter(projection_, frame.step)
        out[self.islands_image] = plots.grid_image(projection_.image)
        out[self.status] = status_html(status_text(record, frame, f"showing, in {label_of(exp.projection, PROJECTION_CHOICES)}",
                                                   shown=True))
        return out


    # a trained APM

    def on_checkpoint_upload(self, files, request: gr.Request = None) -> dict:
        """An uploaded model.safetensors + config.json: checked now, then chosen."""
        session = session_for(request)
        try:
            value = trained.save_upload(files, session)
        except Exception as exc:  # noqa: BLE001 - a bad file is a message, never a crash
            if not isinstance(exc, APMError):
                log.exception("checkpoint upload failed")
            message = user_message(exc)
            toast(message)
            return {self.checkpoint: gr.skip(), self.status: status_html(message, "error")}
        choices = trained.checkpoint_choices([("your uploaded checkpoint", value)])
        return {self.checkpoint: gr.update(choices=choices, value=value),
                self.status: status_html("checkpoint uploaded and checked: pick an image to see its islands")}

    def on_trained(self, image, checkpoint, projection, comparable, request: gr.Request = None) -> dict:
        """A trained APM and an image: the islands, colours and fidelity from one forward pass, no training."""
        session = session_for(request)
        if not checkpoint:
            return {self.status: gr.skip()}
        try:
            loaded = trained.load(checkpoint, session)
            if image is None:
                return {self.status: status_html(f"{trained.describe(loaded)}: pick an image to see its islands")}
            picture = read_image(image)
            start = time.perf_counter()
            features, rgb, _ = trained.one_pass(loaded, picture)
            base = replace(session.view.experiment if session.view is not None else Experiment(),
                           projection=choice(projection, PROJECTION_CHOICES, "islands view"))
            exp = trained_experiment(replace(base, checkpoint=str(checkpoint)), loaded) if loaded.meta.get(
                "teacher") else replace(base, checkpoint=str(checkpoint))
            view = View(exp, bool(comparable))
            teacher_grid, teacher_label = None, "teacher not named by the checkpoint"
            if loaded.meta.get("teacher"):
                model = create_teacher(exp.teacher, layer=exp.layer, random_weights=exp.random_weights)
                out = model.encode(picture)
                teacher_grid, teacher_label = out.grid, out.info.label
            record = self._one_pass_record(session, exp, picture, file_name(image), features, rgb, loaded, view,
                                           teacher_grid, teacher_label)
            seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - one readable line, the page lives on
            if not isinstance(exc, APMError):
                log.exception("trained APM preview failed")
            message = user_message(exc)
            toast(message)
            return {self.status: status_html(message, "error")}
        frame = record.frames[0]
        out = self.frame_panels(record, frame, slow=False, live=False, lead="", kind="done", shown=True)
        out.pop(self.conv_filter, None)
        out.pop(self.unfolded_plot, None)
        out.pop(self.apm_labels, None)
        out.pop(self.loss_plot, None)
        out[self.status] = status_html(
            f"{trained.describe(loaded)} · islands of {record.image_name} from one forward pass in {seconds:.2f} s "
            f"(no training) · {frame.metrics.n_islands} islands · press Run to train it further on this image", "done")
        out[self.input_small] = plots.grid_image(record.input_small)
        out[self.teacher_islands] = (plots.grid_image(record.teacher_projection.image)
                                     if record.teacher_projection is not None else None)
        out[self.timeline] = gr.update(value=0, maximum=1, interactive=False)
        if loaded.meta.get("teacher"):
            out[self.teacher] = exp.teacher
            out[self.layer] = layer_update(exp.teacher, exp.layer)
        return out

    def _one_pass_record(self, session: Session, exp: Experiment, picture, image_name: str, features, rgb,
                         loaded: trained.Loaded, view: View, teacher_grid, teacher_label: str) -> RunRecord:
        """A record with one frame at step 0 (the trained APM as it is), so pointing and exports work on it."""
        import torch

        from apm.images import image_to_tensor

        apm = loaded.apm
        h, w = apm.config.grid
        if teacher_grid is not None and teacher_grid.shape != features.shape:
            teacher_grid = None  # another grid than the APM's: no fidelity, no teacher islands
        session.new_run()
        record = RunRecord(run_id=session.run_id, experiment=exp, image_name=image_name, grid_shape=(h, w),
                           input_small=downsample_rgb(picture, h, w), teacher_label=teacher_label,
                           teacher_grid=teacher_grid, total_steps=0)
        if teacher_grid is not None:
            record.teacher_projection = project(teacher_grid, view.config)
        align = record.teacher_projection if view.comparable else None
        projection = project(features, view.config, full_fit=True, align_to=align)
        with torch.no_grad():
            column = apm.trigger_column(image_to_tensor(picture, apm.config.image_size)[None])[0].numpy()
        state = apm.folded_state()
        record.folded = {"param_count": state.param_count, "param_bytes": state.param_bytes, "parts": state.parts}
        record.positional = apm.positional_code()
        frame = Frame(step=0, elapsed_s=0.0, feat_loss=float("nan"), rgb_loss=float("nan"),
                      features=features.astype(np.float16), rgb=rgb, trigger_column=column,
                      conv_filter=apm.conv_filter(), projection=projection,
                      metrics=island_metrics(features, teacher_grid))
        record.add_frame(frame)
        record.shown = 0
        session.view = view
        session.run = record
        return record

    # levels, pointing, links (GLOM's column of levels, and islands you can point at)

    def on_levels(self, image, teacher, random_weights, request: gr.Request = None) -> dict:
        """The teacher's islands at every layer from one forward pass, PCA colours each; kept for pointing."""
        session = session_for(request)
        try:
            teacher_id = choice(teacher, TEACHER_CHOICES, "teacher")
            if image is None or teacher_id == FILE_TEACHER:
                session.extras.pop("levels", None)
                return {self.levels: None}
            picture = read_image(image)
            model = create_teacher(teacher_id, random_weights=bool(random_weights))
            outputs = model.encode_layers(picture)  # every layer, one forward pass (cached per image)
        except Exception as exc:  # noqa: BLE001 - the image's own check reports it; the strip just stays empty
            if not isinstance(exc, APMError):
                log.exception("levels strip failed")
            session.extras.pop("levels", None)
            return {self.levels: None}
        grids = [o.grid for o in outputs]
        session.extras["levels"] = {"teacher": teacher_id, "grids": grids}
        return {self.levels: [(plots.enlarge(pca_colours(g), LEVEL_PX), f"layer {k}") for k, g in enumerate(grids)]}

    def on_level(self, evt: gr.SelectData) -> dict:
        """A click on a level selects it as the layer to train on."""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return {self.layer: int(index)}

    def on_point(self, image, evt: gr.SelectData, request: gr.Request = None) -> dict:
        """A click on a grid image: that location marked on every grid image, its agreement maps (APM and
        teacher, cosine similarity to every location) and its column across the teacher's levels."""
        session = session_for(request)
        record = session.run
        if record is None or image is None:
            return {self.status: status_html("press Run first: then click a location on a grid image")}
        h, w = record.grid_shape
        picture = np.asarray(image)
        x, y = evt.index[0], evt.index[1]
        i = min(h - 1, max(0, int(y * h / picture.shape[0])))
        j = min(w - 1, max(0, int(x * w / picture.shape[1])))
        return self._point(session, record, i, j)

    def on_pick(self, value: str, request: gr.Request = None) -> dict:
        """A plotly event from the page: 'loc:<index>:<n>' (a scatter point) or 'seg:<id>:<n>' (a tree segment)."""
        session = session_for(request)
        record = session.run
        kind, _, rest = str(value or "").partition(":")
        target = rest.rsplit(":", 1)[0]
        if record is None or not record.frames or kind not in ("loc", "seg"):
            return {self.status: gr.skip()}
        h, w = record.grid_shape
        if kind == "loc":
            try:
                index = int(target)
            except ValueError:
                return {self.status: gr.skip()}
            if not 0 <= index < h * w:
                return {self.status: gr.skip()}
            return self._point(session, record, index // w, index % w)
        frame = record.frames[record.shown] if 0 <= record.shown < len(record.frames) else record.frames[-1]
        tree = part_whole_tree(frame.features.astype(np.float32))
        node = next((n for n in tree.nodes if n.id == target), None)
        if node is None:
            return {self.status: gr.skip()}
        out = {self.status: status_html(f"segment {node.id}: {node.size} locations at level {node.level} of the "
                                        f"part-whole tree, lit on the grid images")}
        pictures = {self.input_small: record.input_small, self.islands_image: frame.projection.image,
                    self.teacher_islands: (record.teacher_projection.image
                                           if record.teacher_projection is not None else None),
                    self.rgb_image: frame.rgb}
        for component, grid_image in pictures.items():
            out[component] = plots.highlight(grid_image, node.mask) if grid_image is not None else gr.skip()
        return out

    def _point(self, session: Session, record: RunRecord, i: int, j: int) -> dict:
        h, w = record.grid_shape
        frame = record.frames[record.shown] if record.frames and 0 <= record.shown < len(record.frames) else (
            record.frames[-1] if record.frames else None)
        out = {self.status: gr.skip()}
        apm_map = agreement_map(frame.features.astype(np.float32), (i, j)) if frame is not None else None
        teacher_map = agreement_map(record.teacher_grid, (i, j)) if record.teacher_grid is not None else None
        out[self.agreement_apm] = plots.mark(plots.colormap(apm_map), (i, j)) if apm_map is not None else None
        out[self.agreement_teacher] = (plots.mark(plots.colormap(teacher_map), (i, j))
                                       if teacher_map is not None else None)
        levels = session.extras.get("levels")
        names, values = [], None
        if levels and levels["teacher"] == record.experiment.teacher:
            grids = levels["grids"]
            spots = [(min(g.shape[0] - 1, int((i + 0.5) * g.shape[0] / h)), min(g.shape[1] - 1, int((j + 0.5) * g.shape[1] / w)))
                     for g in grids]
            values = [float(column_agreement([g], spot)[0]) for g, spot in zip(grids, spots)]
            names = [f"L{k}" for k in range(len(grids))]
        if frame is not None:
            names = [*names, "APM"]
            values = [*(values or []), float(column_agreement([frame.features.astype(np.float32)], (i, j))[0])]
        out[self.column_plot] = plots.column_figure(names, values, f"The column at ({i}, {j}) across levels")
        pictures = {self.input_small: record.input_small,
                    self.islands_image: frame.projection.image if frame is not None else None,
                    self.teacher_islands: (record.teacher_projection.image
                                           if record.teacher_projection is not None else None),
                    self.rgb_image: frame.rgb if frame is not None else None}
        for component, grid_image in pictures.items():
            out[component] = plots.mark(grid_image, (i, j)) if grid_image is not None else gr.skip()
        session.extras["point"] = (i, j)
        return out

    def share_link(self, recipe, image, teacher, layer, seed, steps, projection, perplexity) -> dict:
        """The query string of a link that opens the page with these settings (an example image only)."""
        from urllib.parse import urlencode

        values = {"recipe": recipe, "teacher": teacher, "layer": layer, "seed": seed, "steps": steps,
                  "projection": projection, "perplexity": perplexity}
        stem = Path(file_name(image)).stem if image else ""
        if stem and any(p.stem == stem for p in example_paths()):
            values["example"] = stem
        query = {k: (int(v) if isinstance(v, float) and float(v).is_integer() else v)
                 for k, v in values.items() if v not in (None, "")}
        return {self.link: gr.update(value="?" + urlencode(query), visible=True)}

    def from_link(self, request: gr.Request = None) -> dict:
        """Open the page with a shared link's settings (query parameters), ready to run."""
        params = dict(getattr(request, "query_params", None) or {})
        params = {k: v for k, v in params.items() if k in LINK_KEYS}
        if not params:
            return {self.status: gr.skip()}
        try:
            recipe = choice(params.get("recipe", "custom"), RECIPE_CHOICES, "experiment")
            out = self.on_recipe(recipe)
            out[self.recipe] = recipe
            teacher_id = choice(params.get("teacher", page_teacher(experiment(recipe).teacher)), TEACHER_CHOICES, "teacher")
            layer = whole(params["layer"], "layer", 0, 0, 1000) if "layer" in params else None
            out[self.teacher] = teacher_id
            out[self.layer] = layer_update(teacher_id, layer)
            out.update(self._teacher_visibility(teacher_id))
            if "seed" in params:
                out[self.seed] = whole(params["seed"], "seed", 0, 0, 2**31 - 1)
            if "steps" in params:
                out[self.steps] = whole(params["steps"], "steps", 300, 10, LIMITS.max_steps)
            if "projection" in params:
                out[self.projection] = choice(params["projection"], PROJECTION_CHOICES, "islands view")
            if "perplexity" in params:
                out[self.perplexity] = number(params["perplexity"], "perplexity", None, *PERPLEXITY_RANGE)
            if "example" in params:
                found = [p for p in example_paths() if p.stem == params["example"]]
                if not found:
                    raise InputError(f"the link names an example that is not here: {params['example']!r}")
                out[self.image] = str(found[0])
        except APMError as exc:
            return {self.status: status_html(f"this link could not be opened: {user_message(exc)}", "error")}
        out[self.status] = status_html("Opened a shared link: its settings are set; press Run.")
        return out

    # exports

    def export(self, request: gr.Request = None) -> dict:
        session = session_for(request)
        record = session.run
        if record is None or not record.frames:
            return {self.export_files: gr.update(value=None, visible=False),
                    self.status: status_html("nothing to export yet: press Run first", "error")}
        try:
            files = export_run(session, record)
        except Exception as exc:  # noqa: BLE001 - a full disk or a bad frame: a message, files written before stay
            log.exception("export failed")
            return {self.export_files: gr.skip(), self.status: status_html(f"the export failed: {user_message(exc)}", "error")}
        return {self.export_files: gr.update(value=[str(p) for p in files], visible=True),
                self.status: status_html(f"exported {len(record.frames)} frames and the run's settings", "done")}


def _untrained_note(record: RunRecord) -> str:
    exp = record.experiment
    return " (untrained teacher: these labels mean nothing)" if exp.random_weights and exp.uses_teacher else ""


def _random_default() -> bool:
    from apm.env import random_weights_default

    return random_weights_default()


# exports

def _caption(image: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (image.width, image.height + 18), "white")
    canvas.paste(image, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(30, 30, 30))
    return canvas


def _scatter_image(projection: Projection, size: int = 256) -> Image.Image:
    canvas = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    emb = projection.embedding
    emb = emb[:, :2] if projection.dim >= 2 else np.c_[emb[:, 0], np.zeros(len(emb))]
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    xy = (emb - lo) / np.where(hi > lo, hi - lo, 1.0) * (size - 16) + 8
    for (x, y), c in zip(xy, plots.to_uint8(projection.colours)):
        draw.ellipse((x - 3, size - y - 3, x + 3, size - y + 3), fill=tuple(int(v) for v in c))
    return canvas


def run_summary(record: RunRecord) -> dict:
    """Everything needed to run it again: the settings, the teacher, the configs used, the versions."""
    live = record.live
    summary = {
        "experiment": record.experiment.to_dict(),
        "image": record.image_name,
        "teacher": record.teacher_label,
        "grid": list(record.grid_shape),
        "steps_done": live.steps_done if live is not None else 0,
        "stop_reason": live.stop_reason if live is not None else None,
        "environment": environment_record(),
    }
    if live is not None:
        summary["train_config"] = live.run.config.__dict__
        summary["model_config"] = live.run.model_config.__dict__
    return summary


def export_run(session: Session, record: RunRecord) -> list:
    """islands.gif, snapshots.npz, panels.png and run.json in this session's folder."""
    out = session.folder / f"run-{record.run_id}"
    frames = list(record.frames)
    gif = [
        _caption(Image.fromarray(np.concatenate([plots.enlarge(f.projection.image, 192), plots.enlarge(f.rgb, 192)], axis=1)),
                 f"step {f.step}: islands | RGB")
        for f in frames
    ]
    save_gif(out / "islands.gif", gif, duration_ms=150)
    hist = record.history()
    save_npz(
        out / "snapshots.npz",
        step=np.array([f.step for f in frames]), feat_loss=np.array([f.feat_loss for f in frames], np.float32),
        rgb_loss=np.array([f.rgb_loss for f in frames], np.float32),
        features=np.stack([f.features.astype(np.float32) for f in frames]), rgb=np.stack([f.rgb for f in frames]),
        islands=np.stack([f.projection.image for f in frames]),
        # frames re-projected in another view may differ in dimensions: padded to 3, each frame's own recorded
        embedding=np.stack([np.pad(f.projection.embedding, ((0, 0), (0, 3 - f.projection.dim))) for f in frames]),
        embedding_dim=np.array([f.projection.dim for f in frames]),
        trigger_column=np.stack([f.trigger_column for f in frames]),
        n_islands=np.array([f.metrics.n_islands for f in frames]), curve_step=hist["step"],
        curve_feat_loss=hist["feat_loss"].astype(np.float32), curve_rgb_loss=hist["rgb_loss"].astype(np.float32),
    )
    last = frames[-1]
    tiles = [
        _caption(Image.fromarray(plots.enlarge(record.input_small, 256)), "input (grid resolution)"),
        _caption(_scatter_image(last.projection), f"islands scatter, step {last.step}"),
        _caption(Image.fromarray(plots.enlarge(last.projection.image, 256)), "APM islands"),
    ]
    if record.teacher_projection is not None:
        tiles.append(_caption(Image.fromarray(plots.enlarge(record.teacher_projection.image, 256)), "teacher islands"))
    tiles.append(_caption(Image.fromarray(plots.enlarge(last.rgb, 256)), "RGB reconstruction"))
    if last.metrics.fidelity_map is not None:
        tiles.append(_caption(Image.fromarray(plots.enlarge(plots.colormap(last.metrics.fidelity_map, 0, 1), 256)),
                              "teacher fidelity"))
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 8
    write_atomic(out / "panels.png", lambda tmp: sheet.save(tmp, format="PNG"))
    save_json(out / "run.json", run_summary(record))
    return [out / name for name in ("islands.gif", "snapshots.npz", "panels.png", "run.json")]


# the API

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
    request: gr.Request = None,
) -> dict:
    """Overfit a fresh APM on an image and stream its progress; the last result carries the islands as files.

    Parameters use stable keys: recipe in custom | cls-ttt | dense-distill | teacher-islands; teacher in dinov2,
    dinov2:imgfocus, dinov2:large-reg4, clip, clip:l14, mvit, file (with `features`); target in dense | global | both; preset in
    cpu | paper; projection in tsne2d | tsne3d | pca | paper | paper1d; checkpoint: a shipped checkpoint's name
    or hf:ORG/REPO, to train further from a trained APM. Omitted settings take the recipe's.
    Each update is a dict: status (plain text), step, total_steps, feat_loss, rgb_loss, n_islands, done; the
    last adds islands (PNG), rgb (PNG), snapshots (.npz) and settings (the run's JSON).
    """
    session = session_for(request)
    run_id = session.new_run()
    try:
        if teacher is None:
            teacher = page_teacher(experiment(recipe).teacher)
        exp = experiment(recipe, teacher=teacher, layer=layer, target=target, steps=steps, lr=lr, seed=seed,
                         preset=preset, projection=projection, perplexity=perplexity, random_weights=random_weights,
                         checkpoint=checkpoint or "")
        if exp.teacher not in {key for _, key in TEACHER_CHOICES}:
            choice(exp.teacher, TEACHER_CHOICES, "teacher")
        image_payload = image.model_dump() if hasattr(image, "model_dump") else image
        features_payload = features.model_dump() if hasattr(features, "model_dump") else features
        picture = read_image(image_payload)
        session.view = View(exp, True)
        prepared = prepare_run(exp, picture, file_name(image_payload), features_payload, _labels(labels), run_id,
                               session.view, trained.load(exp.checkpoint, session))
    except Exception as exc:  # noqa: BLE001 - a clear line, never a traceback
        if not isinstance(exc, APMError):
            log.exception("API run failed")
        yield {"status": f"error: {user_message(exc)}", "done": True, "error": True}
        return
    record = prepared.record
    session.run = record
    if prepared.overfit is None:
        record.frames = []
        yield {"status": plain(status_text(record, None, "done: the teacher's own islands")), "done": True,
               "islands": _file(session, record, "teacher-islands.png", record.teacher_projection.image)}
        return
    last = None
    try:
        for frame in live_frames(prepared, session):
            last = frame
            live = record.live
            yield {"status": plain(status_text(record, frame)), "step": live.steps_done, "total_steps": record.total_steps,
                   "feat_loss": live.history.feat_loss[-1], "rgb_loss": live.history.rgb_loss[-1],
                   "n_islands": frame.metrics.n_islands, "done": False}
    except Exception as exc:  # noqa: BLE001
        log.exception("API run failed")
        yield {"status": f"error: the run failed: {user_message(exc)}", "done": True, "error": True}
        return
    if last is None:
        yield {"status": "stopped before the first frame", "done": True}
        return
    kind, lead = ending(record)
    files = export_run(session, record)
    yield {"status": plain(status_text(record, last, lead)), "step": record.live.steps_done,
           "total_steps": record.total_steps, "feat_loss": record.live.history.feat_loss[-1],
           "rgb_loss": record.live.history.rgb_loss[-1], "n_islands": last.metrics.n_islands, "done": True,
           "stop_reason": record.live.stop_reason,
           "islands": _file(session, record, "islands.png", last.projection.image),
           "rgb": _file(session, record, "rgb.png", last.rgb),
           "snapshots": FileData(path=str(files[1])).model_dump(),
           "settings": FileData(path=str(files[3])).model_dump()}


def _file(session: Session, record: RunRecord, name: str, image: np.ndarray) -> dict:
    path = session.folder / f"run-{record.run_id}" / name
    big = Image.fromarray(plots.enlarge(image, 256))
    write_atomic(path, lambda tmp: big.save(tmp, format="PNG"))
    return FileData(path=str(path)).model_dump()


def api_stop(request: gr.Request = None) -> str:
    """Stop this client's run; what it recorded is kept."""
    session_for(request).stop()
    return "stopped"
