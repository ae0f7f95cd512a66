"""The run cache: every finished run on disk, addressed by its key, replayed to the next visitor who asks for the
same computation.

A run's key (`run_key`) is a hash of everything that changes what it computes: the image's pixels, every setting
of the experiment, the teacher's weights (`apm.teachers.weights_identity`), the checkpoint's bytes, the zero-shot
labels, the islands view and the `apm` version. An entry is a folder `<root>/<key[:2]>/<key>/`:

    frames.npz     every recorded frame's arrays (`frame.<k>.<field>`), the record's arrays, every step's numbers
    record.json    the rest of the record and of each frame (numbers, strings, which array is where); no pickle
    model/         the trained APM (`APM.save_pretrained`), and pixels.npy: the image at its input size
    used           touched on every read: least recently used entries go first past the cap

Entries are written to a temporary folder and renamed into place, so a reader never sees half of one, and several
app processes (replicas) can share one folder (a Space's persistent storage, an NFS mount). A damaged entry is
deleted with one log line, and the run trains anew. Loaded entries are kept in memory (a few, least recently
used out), so every viewer of a replay shares one record: its frames are never copied per viewer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import apm
from apm.content import ContentMetrics
from apm.env import run_cache_bytes, run_cache_dir
from apm.errors import APMError
from apm.islands import IslandMetrics, Projection
from apm.live import History
from apm.recipes import Experiment
from apm.teachers import weights_identity

from ..session import Frame, RecordedRun, RunRecord, View
from ..settings import LIMITS
from .teacher import image_digest

log = logging.getLogger("apm.app")

LOADED_ENTRIES = 16  # replays kept in memory, shared by their viewers (a class: its examples and its uploads)
_CLASSES = {cls.__name__: cls for cls in (Frame, Projection, IslandMetrics, ContentMetrics)}
_HISTORY = ("step", "feat_loss", "rgb_loss", "global_loss", "lr", "elapsed_s")


def run_key(exp: Experiment, view: View, image: Image.Image, labels: list[str] = (), features: np.ndarray | None = None,
            loaded: Any = None) -> str:
    """The identity of a run, known before anything is computed: equal keys compute the same frames (the same
    image bytes and settings), so a run with a known key is joined or replayed without being prepared again.
    `loaded`: the trained APM it starts from (`app.trained.Loaded`), whose teacher and bytes count."""
    from apm.recipes import FILE_TEACHER
    from apm.teachers import teacher_spec

    from .islands import trained_experiment

    if loaded is not None:
        exp = trained_experiment(exp, loaded)
    if exp.teacher == FILE_TEACHER and features is not None:  # the target follows the array (`prepare_run`)
        exp = replace(exp, target="dense" if np.ndim(features) == 3 else "global")
    exp = exp.resolved()  # the page's values and the API's omitted ones alike
    zero_shot = exp.uses_teacher and teacher_spec(exp.teacher).supports_zero_shot
    parts = {
        "apm": apm.__version__,
        "image": image_digest(image),
        "features": None if features is None else hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest(),
        "experiment": exp.to_dict(),
        "teacher_weights": weights_identity(exp.teacher, exp.random_weights) if exp.uses_teacher else None,
        "checkpoint": getattr(loaded, "digest", "") if loaded is not None else "",
        "labels": list(labels) if zero_shot else [],  # labels only change what a text-reading teacher computes
        "view": {"projection": asdict(view.experiment.resolved().projection_config()), "comparable": view.comparable},
        "limits": {"max_run_seconds": LIMITS.max_run_seconds},  # a cut-off run depends on where it was cut
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# frames and records as plain arrays and JSON (no pickle)

def _flatten(value: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays[prefix] = value
        return {"__array__": prefix}
    if is_dataclass(value):
        return {"__class__": type(value).__name__,
                **{f.name: _flatten(getattr(value, f.name), f"{prefix}.{f.name}", arrays) for f in fields(value)}}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{prefix}.{k}", arrays) for k, v in enumerate(value)]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _restore(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            array = np.asarray(arrays[value["__array__"]])
            array.flags.writeable = False
            return array
        if "__class__" in value:
            cls = _CLASSES[value["__class__"]]
            kwargs = {k: _restore(v, arrays) for k, v in value.items() if k != "__class__"}
            for name in ("grid_shape",):  # tuples that JSON wrote as lists
                if isinstance(kwargs.get(name), list):
                    kwargs[name] = tuple(kwargs[name])
            if cls is Frame and kwargs.get("apm_labels") is not None:
                kwargs["apm_labels"] = [tuple(x) for x in kwargs["apm_labels"]]
            return cls(**kwargs)
        return {k: _restore(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, arrays) for v in value]
    return value


class RunCache:
    """Finished runs by key, in a folder, with a size cap."""

    def __init__(self, root: Path | None = None, cap_bytes: int | None = None):
        self._root = Path(root) if root is not None else None
        self._cap = cap_bytes
        self._loaded: OrderedDict[str, RunRecord] = OrderedDict()
        self._sizes: dict[Path, int] = {}  # bytes of each entry seen (an entry never changes once in place)
        self._lock = threading.Lock()

    @property
    def root(self) -> Path | None:
        """The cache's folder (None: switched off, APM_RUN_CACHE=off)."""
        return self._root if self._root is not None else run_cache_dir()

    @property
    def cap_bytes(self) -> int:
        return self._cap if self._cap is not None else run_cache_bytes()

    def folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    # writing

    def put(self, record: RunRecord, model: Any, pixels: np.ndarray, grid_scale: float) -> Path | None:
        """Store a finished run (its frames, its record, its trained APM); None when it cannot be stored (logged)."""
        key = record.key
        if key is None or not record.frames or self.root is None:
            return None
        target = self.folder(key)
        arrays: dict[str, np.ndarray] = {}
        frames = [_flatten(f, f"frame.{k}", arrays) for k, f in enumerate(record.frames)]
        hist = record.history()
        for name in _HISTORY:
            if name in hist:
                arrays[f"history.{name}"] = np.asarray(hist[name])
        live = record.live
        meta = {
            "format": 1, "key": key, "apm": apm.__version__, "created": record.created or time.time(),
            "experiment": record.experiment.to_dict(), "image_name": record.image_name,
            "grid_shape": list(record.grid_shape), "teacher_label": record.teacher_label,
            "labels": record.labels, "teacher_labels": record.teacher_labels, "total_steps": record.total_steps,
            "folded": record.folded, "configs": record.configs, "note": record.note, "status": record.status,
            "stop_reason": live.stop_reason if live is not None else None,
            "steps_per_s": float(live.steps_per_s) if live is not None else 0.0,
            "frames": frames,
            "record": {name: _flatten(getattr(record, name), f"record.{name}", arrays)
                       for name in ("input_small", "teacher_grid", "teacher_projection", "positional")},
        }
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=target.parent))
            with open(staging / "frames.npz", "wb") as f:
                np.savez(f, **arrays)
            (staging / "record.json").write_text(json.dumps(meta, default=_json_default))
            model.save_pretrained(staging / "model", meta={"feature_scale": float(grid_scale)})
            np.save(staging / "model" / "pixels.npy", np.asarray(pixels, np.float32))
            (staging / "used").touch()
            if target.exists():  # Train anew: the new run replaces the entry
                shutil.rmtree(target, ignore_errors=True)
            size = _folder_bytes(staging)
            os.replace(staging, target)
        except OSError as exc:  # a full disk, a read-only volume: the run is shown, only not kept
            log.warning("run cache: could not store run %s (%s)", key[:12], exc)
            shutil.rmtree(staging, ignore_errors=True) if "staging" in locals() else None
            return None
        with self._lock:
            self._loaded.pop(key, None)
            self._sizes[target] = size
        self.evict()
        return target

    # reading

    def get(self, key: str) -> RunRecord | None:
        """The recorded run for `key` (shared by every viewer), or None; a damaged entry is deleted (one log line)."""
        if self.root is None:
            return None
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                self._loaded.move_to_end(key)
        folder = self.folder(key)
        if found is not None:
            if folder.is_dir():
                _touch(folder / "used")
                return found
            with self._lock:  # another replica evicted it: what is in memory is still a good recording
                self._loaded.pop(key, None)
        if not (folder / "record.json").is_file():
            return None
        try:
            record = self._read(folder, key)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, APMError) as exc:
            # a truncated or corrupt entry (or one another replica is deleting): delete it, train anew
            log.warning("run cache: entry %s is damaged (%s: %s); deleted, the run trains anew", key[:12],
                        type(exc).__name__, str(exc)[:120])
            shutil.rmtree(folder, ignore_errors=True)
            return None
        _touch(folder / "used")
        with self._lock:
            self._loaded[key] = record
            while len(self._loaded) > LOADED_ENTRIES:
                self._loaded.popitem(last=False)
        return record

    def _read(self, folder: Path, key: str) -> RunRecord:
        from apm.recipes import Experiment

        meta = json.loads((folder / "record.json").read_text())
        if meta.get("key") != key or meta.get("format") != 1:
            raise ValueError("the entry's key or format does not match")
        with np.load(folder / "frames.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        frames = [_restore(f, arrays) for f in meta["frames"]]
        if not frames or not all(isinstance(f, Frame) for f in frames):
            raise ValueError("no frames")
        parts = {name: _restore(value, arrays) for name, value in meta["record"].items()}
        history = History(**{name: arrays[f"history.{name}"].tolist() for name in _HISTORY if f"history.{name}" in arrays})
        if not (folder / "model" / "model.safetensors").is_file() or not (folder / "model" / "pixels.npy").is_file():
            raise ValueError("the trained APM is missing")
        record = RunRecord(
            run_id=0, experiment=Experiment.from_dict(meta["experiment"]), image_name=meta["image_name"],
            grid_shape=tuple(meta["grid_shape"]), input_small=parts["input_small"], teacher_label=meta["teacher_label"],
            teacher_grid=parts["teacher_grid"], teacher_projection=parts["teacher_projection"],
            teacher_labels=[tuple(x) for x in meta["teacher_labels"]] if meta.get("teacher_labels") else None,
            labels=list(meta["labels"]), total_steps=int(meta["total_steps"]), folded=meta["folded"],
            positional=parts["positional"], configs=meta["configs"], key=key, created=float(meta["created"]),
            frames=frames, status=meta["status"], note=meta["note"],
            live=RecordedRun(history, meta["stop_reason"], float(meta["steps_per_s"]),
                             load_decoder=lambda: _decoder(folder)),
        )
        return record

    # the cap

    def size_bytes(self) -> int:
        root = self.root
        return _folder_bytes(root) if root is not None and root.is_dir() else 0

    def clear_memory(self) -> None:
        """Forget the loaded replays (the folder stays): the next `get` reads the disk."""
        with self._lock:
            self._loaded.clear()

    def evict(self) -> list[str]:
        """Least recently used entries out until the folder fits the cap; returns the keys removed."""
        if self.root is None or not self.root.is_dir():
            return []
        entries = []
        for folder in self.root.glob("??/*"):
            if folder.is_dir() and not folder.name.startswith("."):
                size = self._sizes.get(folder)
                if size is None:  # written by another replica, or before this process started: read once
                    size = self._sizes[folder] = _folder_bytes(folder)
                used = folder / "used"
                try:
                    entries.append((used.stat().st_mtime, size, folder))
                except OSError:  # another replica is deleting it
                    entries.append((0.0, size, folder))
        total, removed = sum(e[1] for e in entries), []
        for _, size, folder in sorted(entries, key=lambda e: e[0]):
            if total <= self.cap_bytes:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder.name)
            with self._lock:
                self._loaded.pop(folder.name, None)
                self._sizes.pop(folder, None)
        if removed:
            log.info("run cache: %d least recently used entries removed to stay under %d MB", len(removed),
                     self.cap_bytes // 2**20)
        return removed


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):  # a file another replica is deleting
            total += path.stat().st_size if path.is_file() else 0
    return total


def _touch(path: Path) -> None:
    try:
        path.touch()
    except OSError:  # a read-only share: replays still work, only the LRU order does not move
        pass


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


def _decoder(folder: Path):
    """The recorded run's trained APM and the image's trigger column (for the asynchronous panel)."""
    import torch

    from apm.asynchronous import Decoder
    from apm.model import APM

    model = APM.from_pretrained(folder / "model")
    pixels = torch.from_numpy(np.load(folder / "model" / "pixels.npy", allow_pickle=False))
    return Decoder.from_pixels(model, pixels)


RUN_CACHE = RunCache()



_PREPARING: dict[str, threading.Lock] = {}
_PREPARING_LOCK = threading.Lock()


@contextlib.contextmanager
def preparing(key: str | None):
    """One preparation of a key at a time: a class that clicks the same example at once prepares (encodes, builds,
    submits) its run once; the others wait here, then find it and join it."""
    if key is None:
        yield
        return
    with _PREPARING_LOCK:
        lock = _PREPARING.setdefault(key, threading.Lock())
    with lock:
        yield
    with _PREPARING_LOCK:
        if not lock.locked() and _PREPARING.get(key) is lock:
            del _PREPARING[key]


def find_run(key: str | None, fresh: bool = False) -> tuple[str, Any] | None:
    """A run of `key` that needs no preparing: ("replayed", its recorded `RunRecord`) from the run cache, or
    ("joined", (run, viewer id)) of a run in line or in progress; None when it must be prepared and trained
    (`fresh`: Train anew, the cache is not read)."""
    from . import driver

    if key is None:
        return None
    recorded = None if fresh else RUN_CACHE.get(key)
    if recorded is not None:
        return "replayed", recorded
    joined = driver.RUNS.join(key)
    return ("joined", joined) if joined is not None else None
