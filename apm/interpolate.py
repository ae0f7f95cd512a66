"""Interpolation between two images: one APM trained on both, then its trigger column walked from one to the other."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import InputError
from .io import save_gif, save_npz
from .model import ModelConfig
from .train import OverfitRun, Target, TrainConfig


def train_pair(
    images: Sequence[Image.Image],
    grids: Sequence[np.ndarray],
    config: TrainConfig = TrainConfig(),
    model_config: ModelConfig | str = "cpu",
) -> OverfitRun:
    """An `OverfitRun` on two images and their dense targets (same shape), ready to iterate."""
    if len(images) != 2 or len(grids) != 2:
        raise InputError("interpolation needs exactly two images and two targets")
    shapes = [np.shape(g) for g in grids]
    if any(len(s) != 3 for s in shapes):
        raise InputError(f"interpolation targets must be dense (h, w, d) grids, got shapes {shapes}")
    if shapes[0] != shapes[1]:
        raise InputError(f"the two targets must have the same shape, got {shapes[0]} and {shapes[1]}")
    return OverfitRun(list(images), Target(grid=np.stack(grids)), config, model_config)


def walk_frames(rgb: np.ndarray, scale: int = 8) -> list[Image.Image]:
    """RGB frames (F, h, w, 3) in [0, 1] -> PIL images enlarged `scale` times (nearest neighbour)."""
    frames = []
    for frame in rgb:
        img = Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8), "RGB")
        frames.append(img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST))
    return frames


def save_interpolation(out: Path, run: OverfitRun, alphas: np.ndarray) -> dict[str, np.ndarray]:
    """Decode the walk and write interpolation.npz (alpha, rgb, features) and interpolation.gif."""
    features, rgb = run.interpolate(alphas)  # (F, h, w, d), (F, h, w, 3)
    arrays = {"alpha": np.asarray(alphas, dtype=np.float32), "rgb": rgb, "features": features}
    save_npz(out / "interpolation.npz", **arrays)
    save_gif(out / "interpolation.gif", walk_frames(rgb))
    return arrays
