"""Exports of a run: the animated GIF, the panels sheet, and the run's arrays and summary through the one run
writer (`apm.runs`), so the page's exports and the CLI's runs have the same files."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from apm import runs
from apm.io import save_gif, write_atomic
from apm.islands import Projection

from .. import pictures
from ..session import RunRecord


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
    for (x, y), c in zip(xy, pictures.to_uint8(projection.colours)):
        draw.ellipse((x - 3, size - y - 3, x + 3, size - y + 3), fill=tuple(int(v) for v in c))
    return canvas


def run_summary(record: RunRecord) -> dict:
    """Everything needed to run it again: the settings, the teacher, the configs used (summary.json)."""
    live = record.live
    summary = {
        "experiment": record.experiment.to_dict(),
        "image": record.image_name,
        "teacher": record.teacher_label,
        "grid": list(record.grid_shape),
        "steps_done": live.steps_done if live is not None else 0,
        "stop_reason": live.stop_reason if live is not None else None,
    }
    if record.configs is not None:
        summary["config"] = record.configs
    return summary


SHARED_EXPORTS = 16  # finished runs whose files are kept for every viewer of them (a class replaying an example)
_shared: OrderedDict[str, Path] = OrderedDict()
_shared_lock = threading.Lock()
_writing: dict[str, threading.Lock] = {}


def export_run(folder: Path, record: RunRecord, run_id: int | None = None, teacher: Projection | None = None,
               frames: list | None = None) -> list[Path]:
    """islands.gif, run.npz, panels.png and summary.json in `folder`/run-<id> (the run writer's files).
    `teacher`: the teacher's islands as the page draws them; `frames`: the frames as the page draws them.

    A finished run drawn as it was recorded (no `teacher` or `frames` of a page's own view) has the same files for
    every viewer: they are written once (`shared_files`) and linked into each viewer's folder (a class replaying
    one example encodes its GIF once, not thirty times)."""
    out = folder / f"run-{record.run_id if run_id is None else run_id}"
    shared = shared_files(record) if teacher is None and frames is None else None
    if shared is None:
        return _write(out, record, frames, teacher)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in (runs.GIF_FILE, runs.ARRAYS_FILE, runs.PANELS_FILE, runs.SUMMARY_FILE):
        target = out / name
        target.unlink(missing_ok=True)
        try:
            os.link(shared / name, target)  # the same bytes, no copy (a session's folder is deleted alone)
        except OSError:  # another file system
            shutil.copyfile(shared / name, target)
        paths.append(target)
    return paths


def shared_files(record: RunRecord) -> Path | None:
    """The folder of a finished, kept run's files as recorded, written by the first to ask and kept for the others
    (the last `SHARED_EXPORTS` runs); None for a run that is not finished or has no key (its files are its own)."""
    if record.key is None or record.live is None or not record.live.finished:
        return None
    key = f"{record.key}:{record.created}"  # Train anew records the same key again: its own files
    with _shared_lock:
        lock = _writing.setdefault(key, threading.Lock())
    with lock:  # the first writes, the others wait for it
        with _shared_lock:
            shared = _shared.get(key)
            if shared is not None:
                _shared.move_to_end(key)
        if shared is None or not (shared / runs.PANELS_FILE).is_file():
            shared = Path(tempfile.mkdtemp(prefix=f"apm-export-{record.key[:12]}-"))
            _write(shared, record, None, None)
            with _shared_lock:
                _shared[key] = shared
                while len(_shared) > SHARED_EXPORTS:
                    old_key, old = _shared.popitem(last=False)
                    _writing.pop(old_key, None)
                    shutil.rmtree(old, ignore_errors=True)
        return shared


def _write(out: Path, record: RunRecord, frames: list | None, teacher: Projection | None) -> list[Path]:
    frames = list(record.frames) if frames is None else frames
    teacher = record.teacher_projection if teacher is None else teacher
    gif = [
        _caption(Image.fromarray(np.concatenate([pictures.enlarge(f.projection.image, 192), pictures.enlarge(f.rgb, 192)], axis=1)),
                 f"step {f.step}: islands | RGB")
        for f in frames
    ]
    save_gif(out / runs.GIF_FILE, gif, duration_ms=150)
    arrays = runs.run_arrays(frames, record.history(), projections=[f.projection for f in frames],
                             n_islands=[f.metrics.n_islands for f in frames])
    npz, summary = runs.write_run(out, arrays, run_summary(record))
    last = frames[-1]
    tiles = [
        _caption(Image.fromarray(pictures.enlarge(record.input_small, 256)), "input (grid resolution)"),
        _caption(_scatter_image(last.projection), f"islands scatter, step {last.step}"),
        _caption(Image.fromarray(pictures.enlarge(last.projection.image, 256)), "APM islands"),
    ]
    if teacher is not None:
        tiles.append(_caption(Image.fromarray(pictures.enlarge(teacher.image, 256)), "teacher islands"))
    tiles.append(_caption(Image.fromarray(pictures.enlarge(last.rgb, 256)), "RGB reconstruction"))
    if last.metrics.fidelity_map is not None:
        tiles.append(_caption(Image.fromarray(pictures.enlarge(pictures.colormap(last.metrics.fidelity_map, 0, 1), 256)),
                              "teacher fidelity"))
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 8
    write_atomic(out / runs.PANELS_FILE, lambda tmp: sheet.save(tmp, format="PNG"))
    return [out / runs.GIF_FILE, npz, out / runs.PANELS_FILE, summary]
