"""Trained APMs in the app: which checkpoints a page may open, loading them once, one-pass islands.

A page names a checkpoint by a shipped folder's name (under `checkpoints/`), `hf:ORG/REPO` (the Hugging Face
Hub, through its cache), or the folder its own upload was put in (inside its session folder). No other server
path is ever opened. Loaded models are kept in a small process-wide cache (read-only: a run copies weights).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apm.checkpoint import CONFIG_FILE, WEIGHTS_FILE, checkpoints_dir, list_checkpoints, resolve_checkpoint
from apm.errors import InputError
from apm.model import APM

from .session import Session
from .widgets import upload_source

MAX_LOADED = 4  # trained APMs kept in memory
NONE = ""  # the picker's value for "a fresh APM"
UPLOAD_PREFIX = "upload:"  # the picker's value for this session's uploaded checkpoint


def checkpoint_choices(extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs for the picker: none, then every shipped checkpoint."""
    choices = [("none: a fresh APM", NONE)]
    for folder in list_checkpoints():
        choices.append((f"{folder.name} (shipped)", folder.name))
    return choices + (extra or [])


@dataclass(frozen=True)
class Loaded:
    apm: APM
    name: str  # what the page shows
    meta: dict
    digest: str = ""  # SHA-256 of its weights file: part of the key of every run that starts from it


_cache: OrderedDict[tuple, Loaded] = OrderedDict()
_lock = threading.Lock()


def _folder_for(value: str, session: Session) -> tuple[Path, str]:
    value = str(value or "").strip()
    if value.startswith(UPLOAD_PREFIX):
        folder = session.folder / "checkpoint-upload"
        if not (folder / CONFIG_FILE).is_file():
            raise InputError("upload model.safetensors and config.json first")
        return folder, "your uploaded checkpoint"
    if value.startswith("hf:"):
        return resolve_checkpoint(value), value
    if "/" in value or "\\" in value or value.startswith("."):
        raise InputError(f"choose a shipped checkpoint, hf:ORG/REPO or an upload, not a path: {value!r}")
    folder = checkpoints_dir() / value
    if not folder.is_dir():
        raise InputError(f"no shipped checkpoint named {value!r}")
    return folder, value


def load(value: str, session: Session) -> Loaded | None:
    """The trained APM the picker names (None for a fresh APM); `InputError` with a clear line otherwise."""
    if not value:
        return None
    folder, name = _folder_for(value, session)
    stamp = tuple((folder / f).stat().st_mtime_ns if (folder / f).exists() else 0 for f in (CONFIG_FILE, WEIGHTS_FILE))
    key = (str(folder.resolve()), stamp)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    apm = APM.from_pretrained(folder)  # a clear InputError for a missing, damaged or mismatched checkpoint
    meta = dict(apm.meta)
    from apm.teachers.weights import sha256_file

    loaded = Loaded(apm, name, meta, sha256_file(folder / WEIGHTS_FILE))
    with _lock:
        _cache[key] = loaded
        while len(_cache) > MAX_LOADED:
            _cache.popitem(last=False)
    return loaded


def save_upload(files: Any, session: Session) -> str:
    """Put an uploaded model.safetensors + config.json pair into this session's folder; the picker's value."""
    payloads = list(files or [])
    found: dict[str, Any] = {}
    for payload in payloads:
        source = upload_source(payload, "checkpoint file")
        name = Path(str(payload.get("orig_name") if isinstance(payload, dict) else source)).name.lower()
        if name.endswith(".safetensors"):
            found[WEIGHTS_FILE] = source
        elif name.endswith(".json"):
            found[CONFIG_FILE] = source
        else:
            raise InputError(f"{name}: upload a .safetensors weights file and its config.json (nothing else is read)")
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if f not in found]
    if missing:
        raise InputError(f"upload both model.safetensors and config.json (missing: {', '.join(missing)})")
    folder = session.folder / "checkpoint-upload"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for target, source in found.items():
        if isinstance(source, (bytes, bytearray)):
            (folder / target).write_bytes(source)
        else:
            shutil.copyfile(source, folder / target)
    APM.from_pretrained(folder)  # checked now: a bad pair is reported at upload, not at Run
    with _lock:  # a new upload replaces the old one in the cache too
        for key in [k for k in _cache if k[0] == str(folder.resolve())]:
            del _cache[key]
    return UPLOAD_PREFIX + "session"


def one_pass(loaded: Loaded, image) -> tuple[np.ndarray, np.ndarray, float]:
    """(features (h, w, d) in the teacher's units, colours (h, w, 3), seconds): no training."""
    from apm.fit import predict

    start = time.perf_counter()
    features, rgb = predict(loaded.apm, image)
    return features, rgb, time.perf_counter() - start


def describe(loaded: Loaded) -> str:
    meta = loaded.meta
    parts = [f"trained APM {loaded.name}"]
    if meta.get("teacher_label"):
        parts.append(f"distilled from {meta['teacher_label']}")
    if meta.get("images"):
        parts.append(f"{meta['images']} images, {meta.get('epoch', '?')} epochs")
    if meta.get("source"):
        parts.append(str(meta["source"]))
    return " · ".join(parts)
