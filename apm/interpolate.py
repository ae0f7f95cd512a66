"""Interpolation between two images: one APM trained on both, then its trigger column walked from one to the other."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import InputError
from .io import save_gif, save_npz
from .islands import ProjectionConfig, project
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


@dataclass(frozen=True)
class PathProjection:
    """One projection fitted to every frame of a walk at once, so a colour means the same thing all along it."""

    embedding: np.ndarray  # (F, h*w, k)
    colours: np.ndarray  # (F, h*w, 3) in [0, 1]
    images: np.ndarray  # (F, h, w, 3) islands images


def project_path(
    features: np.ndarray,
    config: ProjectionConfig = ProjectionConfig(method="pca", dim=3),
    centre_frames: bool = True,
) -> PathProjection:
    """Project the decoded grids of a walk (F, h, w, d) jointly: one fit over all F * h * w locations.

    With `centre_frames`, each frame's mean feature is taken off first (after unit-normalising, for the cosine
    metric): otherwise the walk's drift from A to B is the main direction of the fit and every location of a
    frame gets nearly one colour. Either way one projection serves every frame, so a colour means the same
    thing all along the walk.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 4:
        raise InputError(f"path features must be (F, h, w, d), got shape {features.shape}")
    F, h, w, d = features.shape
    y = features
    if centre_frames:
        if config.metric == "cosine":
            y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), np.finfo(np.float32).tiny)
        y = y - y.mean(axis=(1, 2), keepdims=True)  # (F, h, w, d): within-frame structure only
        config = replace(config, metric="euclidean")
    joint = project(y.reshape(F * h, w, d), config)  # the frames stacked as one tall grid
    embedding = np.asarray(joint.embedding).reshape(F, h * w, -1)
    colours = np.asarray(joint.colours).reshape(F, h * w, 3)
    return PathProjection(embedding, colours, colours.reshape(F, h, w, 3))


def walk_frames(rgb: np.ndarray, islands: np.ndarray | None = None, scale: int = 8) -> list[Image.Image]:
    """Frames (F, h, w, 3) in [0, 1] (RGB, and islands beside it when given) -> enlarged PIL images."""
    frames = []
    for k, frame in enumerate(rgb):
        tile = frame if islands is None else np.concatenate([frame, np.ones_like(frame[:, :1]), islands[k]], axis=1)
        img = Image.fromarray((np.clip(tile, 0, 1) * 255).round().astype(np.uint8), "RGB")
        frames.append(img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST))
    return frames


def save_interpolation(out: Path, run: OverfitRun, alphas: np.ndarray) -> dict[str, np.ndarray]:
    """Decode the walk; write interpolation.npz (alpha, rgb, features, islands) and interpolation.gif (RGB | islands)."""
    features, rgb = run.interpolate(alphas)  # (F, h, w, d), (F, h, w, 3)
    islands = project_path(features).images  # (F, h, w, 3), colours shared along the path
    arrays = {"alpha": np.asarray(alphas, dtype=np.float32), "rgb": rgb, "features": features, "islands": islands}
    save_npz(out / "interpolation.npz", **arrays)
    save_gif(out / "interpolation.gif", walk_frames(rgb, islands))
    return arrays


def walk_trained(apm, images: Sequence[Image.Image], alphas: Sequence[float] | np.ndarray,
                 chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A trained APM (no training): its trigger columns of two images mixed, (1 - alpha) a + alpha b, and decoded.

    Returns features (F, h, w, d) in the teacher's units (the checkpoint's `feature_scale`), colours
    (F, h, w, 3) and each image's own decoding's colours (2, h, w, 3).
    """
    import torch

    from .images import image_to_tensor

    if len(images) != 2:
        raise InputError("a walk needs exactly two images")
    alphas = np.asarray(alphas, dtype=np.float32)
    if alphas.ndim != 1 or alphas.size < 2:
        raise InputError("give at least two alphas")
    h, w = apm.config.grid
    scale = float(apm.meta.get("feature_scale", 1.0))
    device = next(apm.parameters()).device
    with torch.no_grad():
        x = torch.stack([image_to_tensor(im, apm.config.image_size) for im in images]).to(device)  # (2, 3, H, W)
        columns = apm.trigger_column(x)  # (2, column_dim)
        a = torch.from_numpy(alphas).to(device)[:, None]
        mixed = (1 - a) * columns[0] + a * columns[1]  # (F, column_dim)
        features, rgb = apm.decode(mixed, chunk_size=chunk_size)  # (F, h*w, d), (F, h*w, 3)
        _, own = apm.decode(columns, chunk_size=chunk_size)
    n = len(alphas)
    return (features.float().reshape(n, h, w, -1).cpu().numpy() * scale,
            rgb.float().reshape(n, h, w, 3).cpu().numpy(), own.float().reshape(2, h, w, 3).cpu().numpy())
