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
import inspect
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from apm.errors import APMError, InputError, WeightsUnavailableError
from apm.images import load_image
from apm.recipes import FILE_TEACHER
from apm.teachers import teacher_spec

from .session import Session, SessionStore
from .settings import (  # noqa: F401 - the shared settings, one import away for the tabs
    HEAD_CHOICES,
    INIT_CHOICES,
    LIMITS,
    PRESET_CHOICES,
    PROJECTION_CHOICES,
    SCHEDULE_CHOICES,
    TARGET_CHOICES,
    Limits,
    choice,
    label_of,
    number,
    page_experiment,
    page_teacher,
    read_steps,
    recipe_choices,
    teacher_choices,
    whole,
)

log = logging.getLogger("apm.app")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"


STORE = SessionStore()


def session_for(request: gr.Request | None) -> Session:
    return STORE.get(getattr(request, "session_hash", None) or "local")


def unload(request: gr.Request = None) -> None:
    """The tab closed: stop its runs and drop its files."""
    STORE.drop(getattr(request, "session_hash", None) or "local")


def selected_index(evt: gr.SelectData) -> int:
    """The index of a gallery item a click selected (Gradio sends an int, or [row, column] for some layouts)."""
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return int(index)


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


def read_features(payload: Any):
    """The uploaded feature array of 'your own features' (None when nothing was uploaded), checked."""
    from apm.teachers import load_feature_array

    source = upload_source(payload, "feature file")
    return None if source is None else load_feature_array(source, name=file_name(payload))


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


# what every tab shares: begin / stop, private endpoint names, one error wrapper

class Tab:
    """A page tab: its status line, its private endpoints' names, how a run here begins and stops, and how a
    failing handler is reported (`guarded`)."""

    key = ""  # private endpoints are named '<key>_<event>': 'islands_prepare', 'walk_train', ...
    starting = "starting: reading the images and the teacher…"  # the status a Run shows at once
    status: gr.HTML

    def private(self, name: str) -> dict:
        """The page's own events: callable, undocumented, named after their tab."""
        return {"api_visibility": "undocumented", "api_name": f"{self.key}_{name}"}

    def begin(self, request: gr.Request = None) -> dict:
        """A Run's first, unqueued step: the run going on in this session ends now."""
        session_for(request).new_run()
        return {self.status: status_html(self.starting, "running")}

    def stop(self, request: gr.Request = None) -> None:
        session_for(request).stop()

    def failed(self, exc: BaseException, what: str, lead: str = "") -> dict:
        """One of our messages in the status line (and a toast) for a failure; the traceback only in the log."""
        if not isinstance(exc, APMError):
            log.error("%s failed", what, exc_info=exc)
        message = user_message(exc) if getattr(exc, "stands_alone", False) else f"{lead}{user_message(exc)}"
        toast(message)
        return {self.status: status_html(message, "error")}


def guarded(what: str, lead: str = "", report: Callable[[BaseException, str, str], Any] | None = None
            ) -> Callable[[Callable], Callable]:
    """The one error wrapper of the app: wrap a handler (a function or a generator) so that any failure becomes one
    readable line and the page lives on. By default the handler is a method and `self.failed(exc, what, lead)`
    makes the line (a tab's status, a panel's own box); `report(exc, what, lead)` makes it for a plain function
    (the API's dicts). Gradio still sees the handler's own signature (it reads `request` there)."""

    def fail(args: tuple, exc: BaseException) -> Any:
        if report is not None:
            return report(exc, what, lead)
        return args[0].failed(exc, what, lead)

    def wrap(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def stream(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - one user's failure must never take the app down
                    yield fail(args, exc)

            return stream

        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - one user's failure must never take the app down
                return fail(args, exc)

        return call

    return wrap
