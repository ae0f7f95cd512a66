"""The one run writer: a finished (or stopped) run as files, for the CLI (`apm overfit`) and the app's export alike.

A run folder holds
    run.npz        one row per recorded snapshot: step, feat_loss, rgb_loss, features (n, h, w, d), rgb (n, h, w, 3),
                   trigger_column (n, column_dim), global_vector when there is a global head, and the islands of
                   each row where they were drawn (islands (n, h, w, 3), embedding (n, h*w, 3), embedding_dim,
                   n_islands); plus every step's numbers as curve_step, curve_feat_loss, curve_rgb_loss, curve_lr
                   (and curve_global_loss)
    summary.json   everything needed to run it again: the settings, the configs used (`config_record`: one
                   serialisation, `dataclasses.asdict`), the stop reason, speed, final losses, the content figures
                   and the environment (package versions, the CPU's bf16)
Every file is written atomically. The app's export adds islands.gif and panels.png beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .io import environment_record, save_json, save_npz, save_png

ARRAYS_FILE = "run.npz"
SUMMARY_FILE = "summary.json"
GIF_FILE = "islands.gif"
PANELS_FILE = "panels.png"
ISLANDS_PNG = "islands.png"
ISLANDS_NPZ = "islands.npz"


def config_record(train_config: Any, model_config: Any) -> dict[str, Any]:
    """The configs a run used, as summary.json stores them."""
    return {"train": asdict(train_config), "model": asdict(model_config)}


def run_arrays(recorded: Sequence[Any], curve: dict[str, np.ndarray], projections: Sequence[Any] | None = None,
               n_islands: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """run.npz's arrays. `recorded`: snapshots or frames (step, feat_loss, rgb_loss, features, rgb, trigger_column,
    global_vector); `curve`: every step's numbers (`History.arrays()`); `projections`: each row's islands, where
    they were drawn (frames re-projected in another view may differ in dimensions: padded to 3)."""
    arrays = {
        "step": np.array([s.step for s in recorded], dtype=np.int64),  # (n,)
        "feat_loss": np.array([s.feat_loss for s in recorded], dtype=np.float32),  # (n,)
        "rgb_loss": np.array([s.rgb_loss for s in recorded], dtype=np.float32),  # (n,)
        "features": np.stack([np.asarray(s.features, np.float32) for s in recorded]),  # (n, h, w, d)
        "rgb": np.stack([s.rgb for s in recorded]),  # (n, h, w, 3)
        "trigger_column": np.stack([s.trigger_column for s in recorded]),  # (n, column_dim)
        "curve_step": np.asarray(curve["step"], np.int64),  # every step
        "curve_feat_loss": np.asarray(curve["feat_loss"], np.float32),
        "curve_rgb_loss": np.asarray(curve["rgb_loss"], np.float32),
    }
    if "lr" in curve:
        arrays["curve_lr"] = np.asarray(curve["lr"], np.float32)
    if recorded[-1].global_vector is not None and all(s.global_vector is not None for s in recorded):
        arrays["global_vector"] = np.stack([s.global_vector for s in recorded])
        if "global_loss" in curve:
            arrays["curve_global_loss"] = np.asarray(curve["global_loss"], np.float32)
    if projections is not None:
        arrays["islands"] = np.stack([p.image for p in projections])  # (n, h, w, 3)
        arrays["embedding"] = np.stack([np.pad(p.embedding, ((0, 0), (0, 3 - p.dim))) for p in projections])
        arrays["embedding_dim"] = np.array([p.dim for p in projections])
    if n_islands is not None:
        arrays["n_islands"] = np.asarray(n_islands)
    return arrays


def write_run(out: Path, arrays: dict[str, np.ndarray], summary: dict[str, Any]) -> tuple[Path, Path]:
    """run.npz and summary.json in `out` (the environment is added to the summary). Returns both paths."""
    out = Path(out)
    save_npz(out / ARRAYS_FILE, **arrays)
    save_json(out / SUMMARY_FILE, {**summary, "environment": environment_record()})
    return out / ARRAYS_FILE, out / SUMMARY_FILE


ISLANDS_MIN_SIDE = 448  # islands.png is enlarged (nearest neighbour) to at least this many pixels a side


def write_islands(out: Path, features: np.ndarray, config, grid_shape=None, extra: dict | None = None):
    """islands.png (the grid of island colours, enlarged with nearest neighbour) and islands.npz (`embedding`
    (h*w, k), `colours` (h, w, 3), `grid_shape`, and `extra`); returns the projection."""
    from PIL import Image

    from .islands import project

    projection = project(features, config, full_fit=True)
    h, w = projection.grid_shape
    colours = np.asarray(projection.image, dtype=np.float32)  # (h, w, 3) in [0, 1]
    scale = max(1, -(-ISLANDS_MIN_SIDE // max(h, w)))
    picture = Image.fromarray((colours * 255 + 0.5).astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
    save_png(out / ISLANDS_PNG, picture)
    save_npz(
        out / ISLANDS_NPZ,
        embedding=np.asarray(projection.embedding, dtype=np.float32),  # (h*w, k)
        colours=colours,  # (h, w, 3)
        grid_shape=np.array([h, w], dtype=np.int64),
        **(extra or {}),
    )
    return projection




def write_rgb(out: Path, rgb: np.ndarray) -> None:
    """rgb.png: a decoded grid's colours (h, w, 3) in [0, 1], enlarged like islands.png."""
    from PIL import Image

    h, w = rgb.shape[:2]
    colours = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    scale = max(1, -(-ISLANDS_MIN_SIDE // max(h, w)))
    save_png(out / "rgb.png", Image.fromarray(colours).resize((w * scale, h * scale), Image.NEAREST))
