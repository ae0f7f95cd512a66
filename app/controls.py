"""The Islands tab's controls, by name: one entry per setting of a run (an `Experiment` field, or one of the
run's inputs: the image, a feature file, zero-shot labels, comparable colours).

Each entry says how its component is made (showing an experiment's value), how the page's raw value is read
into the setting (checked: an `InputError` names the control), and how a setting is shown back on the page.
`Controls` holds the built components; it reads the page into an `Experiment` and writes one back (recipes,
shared links). The order of `RUN_INPUTS` is the one place the private endpoints' positional order is written:
handlers, tests and scripts address controls by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import gradio as gr

from apm.env import random_weights_default
from apm.errors import InputError
from apm.islands import PERPLEXITY_NOTE, PERPLEXITY_RANGE
from apm.model import GRID_CHOICES, check_grid
from apm.recipes import RECIPES, Experiment
from apm.teachers import teacher_spec
from apm.teachers.clip import clean_labels

from .settings import (
    HEAD_CHOICES,
    INIT_CHOICES,
    LIMITS,
    PRESET_CHOICES,
    PROJECTION_CHOICES,
    SCHEDULE_CHOICES,
    TARGET_CHOICES,
    choice,
    number,
    read_steps,
    recipe_choices,
    teacher_choices,
    whole,
)
from .widgets import layer_label, layer_update

DEFAULT_LABELS = "face, house, car, snowman, flower, temple, dog, cat, tree, person"
MAX_LABELS = 64
LOSS_CHOICES = [("MSE", "mse"), ("cosine", "cosine")]
PRECISION_CHOICES = [("auto (bf16 only where native)", "auto"), ("bf16", "bf16"), ("fp32", "fp32")]
METRIC_CHOICES = [("cosine", "cosine"), ("Euclidean", "euclidean")]
TSNE_INIT_CHOICES = [("PCA", "pca"), ("random", "random")]
LINK_KEYS = ("example", "recipe", "teacher", "layer", "grid", "seed", "steps", "projection", "perplexity")  # a link's
LINK_INPUTS = ("recipe", "image", "teacher", "layer", "grid", "seed", "steps", "projection", "perplexity")  # read for one


GRID_AUTO = "auto"
GRID_PICKS = [("the teacher's own", GRID_AUTO), *((f"{g} x {g}" + (" (the paper's)" if g == 32 else ""), str(g))
                                                  for g in GRID_CHOICES)]
GRID_NOTE = "the teacher's input follows: 14 px a location for DINOv2 (224, 336, 448 px), 16 for CLIP B/16"


def read_grid(value: Any) -> int | None:
    """The grid picker's value -> locations a side (None: the teacher's own input size); the library's rule."""
    return check_grid(value)


def _grid_value(exp: Experiment) -> str:
    return GRID_AUTO if exp.grid is None else str(exp.grid)


def parse_labels(text: Any) -> list[str]:
    """The zero-shot labels box -> at most MAX_LABELS clean labels."""
    if not text or not str(text).strip():
        return []
    return clean_labels(str(text))[:MAX_LABELS]


@dataclass(frozen=True)
class Control:
    """One setting of a run as the page holds it."""

    name: str  # the Experiment field, or a run input: image, features, labels, comparable
    elem_id: str  # the element id: stable, tests and the browser find the control by it
    make: Callable[[Experiment], gr.Component]  # the component, showing this experiment's value
    read: Callable[[Any], Any]  # the page's raw value -> the setting (InputError when it cannot be used)
    show: Callable[[Experiment], Any] | None = None  # an experiment's setting -> the page's value (None: not shown)


def _pick(choices: list[tuple[str, str]] | Callable[[], list[tuple[str, str]]], what: str,
          default: str | None = None) -> Callable[[Any], str]:
    """A picker's reader; `choices` may be a registry's function, read when a value is read."""
    def read(value: Any) -> str:
        return choice(default if value in (None, "") and default else value,
                      choices() if callable(choices) else choices, what)

    return read


def _field(name: str) -> Callable[[Experiment], Any]:
    return lambda exp: getattr(exp, name)


def _view(name: str) -> Callable[[Experiment], Any]:
    return lambda exp: getattr(exp.projection_config(), name)


def _layer_slider(exp: Experiment) -> gr.Slider:
    spec = teacher_spec(exp.teacher)
    return gr.Slider(0, spec.num_layers - 1, value=spec.default_layer if exp.layer is None else exp.layer, step=1,
                     label=layer_label(spec.num_layers), elem_id="layer")


CONTROLS: tuple[Control, ...] = (  # the private endpoints' input order
    Control("recipe", "recipe", lambda e: gr.Dropdown(recipe_choices(), value=e.recipe, label="Experiment", elem_id="recipe"),
            _pick(recipe_choices, "experiment", "custom"), _field("recipe")),
    Control("image", "input-image",
            lambda e: gr.Image(label="Image", type="filepath", sources=["upload", "clipboard", "webcam"],
                               elem_id="input-image", height=220),
            lambda value: value),
    Control("teacher", "teacher", lambda e: gr.Dropdown(teacher_choices(), value=e.teacher, label="Teacher", elem_id="teacher"),
            _pick(teacher_choices, "teacher"), _field("teacher")),
    Control("layer", "layer", _layer_slider,
            lambda value: None if value is None else whole(value, "layer", 0, 0, 1000),
            lambda e: layer_update(e.teacher, e.layer)),
    Control("random_weights", "random-weights",
            lambda e: gr.Checkbox(value=bool(e.random_weights or random_weights_default()), elem_id="random-weights",
                                  label="Untrained teacher (random weights, works offline)"),
            bool),
    Control("features", "features-file",
            lambda e: gr.File(label="Your feature array: .npy / .pt, shape (h, w, d) or (d,)", visible=False,
                              file_types=[".npy", ".pt", ".pth", ".npz"], elem_id="features-file"),
            lambda value: value),
    Control("target", "target", lambda e: gr.Radio(TARGET_CHOICES, value=e.target, label="Target", elem_id="target"),
            _pick(TARGET_CHOICES, "target"), _field("target")),
    Control("grid", "grid", lambda e: gr.Radio(GRID_PICKS, value=_grid_value(e), label="Grid (locations a side)",
                                               elem_id="grid", info=GRID_NOTE),
            lambda value: read_grid(value), _grid_value),
    Control("labels", "labels",
            lambda e: gr.Textbox(DEFAULT_LABELS, label="Zero-shot labels (comma-separated)", visible=False, elem_id="labels"),
            parse_labels),
    Control("preset", "preset", lambda e: gr.Radio(PRESET_CHOICES, value=e.preset, label="Model preset", elem_id="preset"),
            _pick(PRESET_CHOICES, "preset"), _field("preset")),
    Control("steps", "steps",
            lambda e: gr.Slider(10, LIMITS.max_steps, value=e.steps, step=10, label="Steps", elem_id="steps"),
            lambda value: read_steps(value), _field("steps")),
    Control("lr", "lr", lambda e: gr.Number(e.effective_lr, label="Learning rate (Adam)", elem_id="lr"),
            lambda value: number(value, "learning rate", None, 1e-8, 1.0), lambda e: e.effective_lr),
    Control("lr_schedule", "lr-schedule",
            lambda e: gr.Radio(SCHEDULE_CHOICES, value=e.lr_schedule, label="Learning-rate schedule", elem_id="lr-schedule"),
            _pick(SCHEDULE_CHOICES, "schedule"), _field("lr_schedule")),
    Control("seed", "seed", lambda e: gr.Number(e.seed, precision=0, label="Seed", elem_id="seed"),
            lambda value: whole(value, "seed", 0, 0, 2**31 - 1), _field("seed")),
    Control("record_every", "record-every",
            lambda e: gr.Slider(1, 50, value=e.record_every, step=1, label="Keep a snapshot at least every N steps",
                                elem_id="record-every"),
            lambda value: whole(value, "snapshot interval", 10, 1, 1000)),
    Control("rgb_weight", "rgb-weight",
            lambda e: gr.Number(e.rgb_weight, label="RGB loss weight (0: features only)", elem_id="rgb-weight"),
            lambda value: number(value, "RGB loss weight", 1.0, 0.0, 100.0), _field("rgb_weight")),
    Control("feature_loss", "feature-loss",
            lambda e: gr.Radio(LOSS_CHOICES, value=e.feature_loss, label="Feature loss", elem_id="feature-loss"),
            _pick(LOSS_CHOICES, "feature loss")),
    Control("normalize_target", "normalize",
            lambda e: gr.Checkbox(value=e.normalize_target, label="Normalise the target (divide by its RMS)",
                                  elem_id="normalize"),
            bool),
    Control("init", "init", lambda e: gr.Radio(INIT_CHOICES, value=e.init, label="Initialisation", elem_id="init"),
            _pick(INIT_CHOICES, "initialisation"), _field("init")),
    Control("global_head", "global-head",
            lambda e: gr.Radio(HEAD_CHOICES, value=e.global_head, label="Global (CLS) head", elem_id="global-head"),
            _pick(HEAD_CHOICES, "global head"), _field("global_head")),
    Control("precision", "precision",
            lambda e: gr.Radio(PRECISION_CHOICES, value=e.precision, label="Precision", elem_id="precision"),
            _pick(PRECISION_CHOICES, "precision"), _field("precision")),
    Control("projection", "projection",
            lambda e: gr.Radio(PROJECTION_CHOICES, value=e.projection, label="Islands view", elem_id="projection"),
            _pick(PROJECTION_CHOICES, "islands view"), _field("projection")),
    Control("perplexity", "perplexity",
            lambda e: gr.Slider(*PERPLEXITY_RANGE, value=e.projection_config().perplexity, step=1, label="Perplexity",
                                elem_id="perplexity", info=PERPLEXITY_NOTE),
            lambda value: number(value, "perplexity", None, *PERPLEXITY_RANGE), _view("perplexity")),
    Control("metric", "metric",
            lambda e: gr.Radio(METRIC_CHOICES, value=e.projection_config().metric, label="Distance", elem_id="metric"),
            _pick(METRIC_CHOICES, "distance", "cosine"), _view("metric")),
    Control("tsne_init", "tsne-init",
            lambda e: gr.Radio(TSNE_INIT_CHOICES, value=e.projection_config().init, label="Start", elem_id="tsne-init"),
            _pick(TSNE_INIT_CHOICES, "t-SNE start", "pca"), _view("init")),
    Control("checkpoint", "checkpoint", None, lambda value: str(value or "")),  # made by the trained-APM section
    Control("comparable", "comparable",
            lambda e: gr.Checkbox(value=True, elem_id="comparable",
                                  label="Comparable colours: rotate the APM's islands onto the teacher's"),
            bool),
)
BY_NAME = {c.name: c for c in CONTROLS}
RUN_INPUTS: tuple[str, ...] = tuple(c.name for c in CONTROLS)
EXPERIMENT_FIELDS = {f.name for f in fields(Experiment)}
RECIPE_SHOWN = tuple(c.name for c in CONTROLS if c.show is not None and c.name != "recipe")  # what a recipe sets
VIEW_INPUTS = ("projection", "perplexity", "metric", "tsne_init", "comparable")


@dataclass(frozen=True)
class RunSettings:
    """The page read into a run: the experiment, and the inputs it runs on (raw file payloads, checked later)."""

    experiment: Experiment
    image: Any  # the image's payload as the page sent it
    features: Any  # the feature file's payload, for 'your own features'
    labels: list[str]
    comparable: bool


class Controls:
    """The built controls of one tab, by name (`registry`: the Islands tab's `CONTROLS`, or `WALK_CONTROLS`)."""

    def __init__(self, registry: tuple[Control, ...] = CONTROLS) -> None:
        self.components: dict[str, gr.Component] = {}
        self.registry = {c.name: c for c in registry}
        self.order = tuple(c.name for c in registry)

    def make(self, name: str, exp: Experiment) -> gr.Component:
        """Build a control (inside the current layout block) showing `exp`'s value, and keep it by name."""
        self.components[name] = self.registry[name].make(exp)
        return self.components[name]

    def add(self, name: str, component: gr.Component) -> gr.Component:
        """Keep a control built elsewhere (the checkpoint picker of the trained-APM section)."""
        self.components[name] = component
        return component

    def __getitem__(self, name: str) -> gr.Component:
        return self.components[name]

    def inputs(self, names: Iterable[str] | None = None) -> list[gr.Component]:
        return [self.components[name] for name in (self.order if names is None else names)]

    @staticmethod
    def handler(fn: Callable[..., Any], names: Sequence[str] = RUN_INPUTS) -> Callable[..., Any]:
        """`fn(values_by_name, request=...)` as an event handler taking the controls `names` positionally.

        The handler's signature is generated from `names` (and ends with `request: gr.Request`, which Gradio
        fills in only for a positional parameter), so no signature anywhere spells out the controls' order."""
        import functools
        import inspect

        count = len(names)

        def values(args: tuple, kwargs: dict) -> tuple[dict, Any]:
            return dict(zip(names, args[:count])), args[count] if len(args) > count else kwargs.get("request")

        if inspect.isgeneratorfunction(fn):  # a streaming handler stays a generator (Gradio iterates it)
            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                named, request = values(args, kwargs)
                yield from fn(named, request=request)
        else:
            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                named, request = values(args, kwargs)
                return fn(named, request=request)

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        call.__signature__ = inspect.Signature(
            [*(inspect.Parameter(name, kind) for name in names),
             inspect.Parameter("request", kind, default=None, annotation=gr.Request)])
        call.__annotations__ = {"request": gr.Request}
        del call.__wrapped__  # Gradio reads the generated signature, not fn's
        return call

    @staticmethod
    def named(values: Sequence[Any], names: Sequence[str] = RUN_INPUTS) -> dict[str, Any]:
        """Positional values, as an event sends `inputs(names)` -> {name: value}."""
        if len(values) != len(names):
            raise TypeError(f"expected {len(names)} values ({', '.join(names)}), got {len(values)}")
        return dict(zip(names, values))

    @staticmethod
    def read(values: dict[str, Any]) -> RunSettings:
        """The page's raw values by name (events run with preprocess=False) -> the run's settings, checked."""
        read = {name: BY_NAME[name].read(values.get(name)) for name in RUN_INPUTS if name in values}
        recipe = read.get("recipe", "custom")
        settings = {k: v for k, v in read.items() if k in EXPERIMENT_FIELDS}
        exp = Experiment(**{**settings, "recipe": recipe, "trains": RECIPES[recipe].trains})
        return RunSettings(exp, values.get("image"), values.get("features"), read.get("labels", []),
                           bool(read.get("comparable", True)))

    def show(self, exp: Experiment, names: Iterable[str] = RECIPE_SHOWN) -> dict[gr.Component, Any]:
        """{component: value} that puts these settings of `exp` on the page."""
        return {self.components[name]: BY_NAME[name].show(exp) for name in names}


def with_view(exp: Experiment, values: dict[str, Any]) -> Experiment:
    """`exp` with the islands-view controls' values (projection, perplexity, metric, t-SNE start) read in."""
    changes = {name: BY_NAME[name].read(values[name]) for name in VIEW_INPUTS if name in values and name != "comparable"}
    return replace(exp, **changes)


# the Interpolation tab's controls: two images, the teacher, training and the walk

WALK_DEFAULT_STEPS = 300
WALK_DEFAULT_FRAMES = 16
WALK_MAX_FRAMES = 33
WALK_PROJECTION_CHOICES = [("PCA (fast)", "pca"), ("t-SNE 2D (slower)", "tsne2d")]


def walk_teachers() -> list[tuple[str, str]]:
    """The walk's teachers (a walk needs a teacher: no 'your own features')."""
    return teacher_choices(own_features=False)


def _walk_layer(exp: Experiment) -> gr.Slider:
    spec = teacher_spec(exp.teacher)
    return gr.Slider(0, max(1, spec.num_layers - 1), value=spec.default_layer, step=1, label=layer_label(spec.num_layers),
                     elem_id="walk-layer")


def _walk_image(side: str) -> Callable[[Experiment], gr.Component]:
    alpha = "0" if side == "a" else "1"
    return lambda e: gr.Image(label=f"Image {side.upper()} (alpha = {alpha})", type="filepath",
                              elem_id=f"walk-image-{side}", sources=["upload", "clipboard"], height=180, min_width=130)


WALK_CONTROLS: tuple[Control, ...] = (  # the walk's private endpoint's input order
    Control("image_a", "walk-image-a", _walk_image("a"), lambda value: value),
    Control("image_b", "walk-image-b", _walk_image("b"), lambda value: value),
    Control("teacher", "walk-teacher",
            lambda e: gr.Dropdown(walk_teachers(), value=e.teacher, label="Teacher", elem_id="walk-teacher"),
            lambda value: choice(value, walk_teachers(), "teacher")),
    Control("layer", "walk-layer", _walk_layer, lambda value: None if value is None else whole(value, "layer", 0, 0, 1000)),
    Control("random_weights", "walk-random-weights",
            lambda e: gr.Checkbox(value=random_weights_default(), elem_id="walk-random-weights",
                                  label="Untrained teacher (random weights, works offline)"), bool),
    Control("steps", "walk-steps", lambda e: gr.Slider(10, LIMITS.max_steps, value=WALK_DEFAULT_STEPS, step=10,
                                                       label="Steps", elem_id="walk-steps"),
            lambda value: read_steps(value, WALK_DEFAULT_STEPS)),
    Control("frames", "walk-frames", lambda e: gr.Slider(2, WALK_MAX_FRAMES, value=WALK_DEFAULT_FRAMES, step=1,
                                                         label="Frames along the walk", elem_id="walk-frames"),
            lambda value: whole(value, "frames", WALK_DEFAULT_FRAMES, 2, WALK_MAX_FRAMES)),
    Control("projection", "walk-projection",
            lambda e: gr.Radio(WALK_PROJECTION_CHOICES, value="pca", label="Projection", elem_id="walk-projection"),
            lambda value: choice(value or "pca", WALK_PROJECTION_CHOICES, "projection")),
    Control("checkpoint", "walk-checkpoint", None, lambda value: str(value or "")),  # made with the checkpoints list
)
WALK_INPUTS: tuple[str, ...] = tuple(c.name for c in WALK_CONTROLS)


@dataclass(frozen=True)
class WalkSettings:
    """The Interpolation tab (or /walk) read into a walk: the experiment and the walk's own settings."""

    experiment: Experiment
    image_a: Any
    image_b: Any
    frames: int
    projection: str
    checkpoint: str


def read_walk(values: dict[str, Any]) -> WalkSettings:
    """The walk's raw values by name -> its settings, checked (`InputError` names the control)."""
    if not values.get("image_a") or not values.get("image_b"):
        raise InputError("give two images: one for each end of the walk (A and B)")
    by_name = {c.name: c for c in WALK_CONTROLS}
    read = {name: by_name[name].read(values.get(name)) for name in WALK_INPUTS if name not in ("image_a", "image_b")}
    exp = Experiment(recipe="custom", teacher=read["teacher"], layer=read["layer"], steps=read["steps"],
                     random_weights=bool(read["random_weights"]))
    return WalkSettings(exp, values["image_a"], values["image_b"], read["frames"], read["projection"], read["checkpoint"])
