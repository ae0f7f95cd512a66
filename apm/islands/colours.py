"""Colours of an embedding: aligned so an island keeps its colour from frame to frame, min-max (the paper's view),
a ramp for 1D embeddings, and PCA colours of a grid (the quick DINO-style view)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes

from ..errors import InputError
from .common import _check_grid, _normalise, _pca_scores, _spread, one_blas_thread

_COLOUR_PERCENTILE = 95.0  # embeddings are scaled so this percentile of points lies inside the colour gamut
_GREY = 0.5  # colour of a degenerate (constant) embedding


def align_embedding(embedding: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Centre an embedding (n, k) and, given a reference (n, k), rotate or reflect it onto the reference.

    The rotation is the orthogonal Procrustes fit of the centred embedding to the centred reference; distances
    within the embedding are unchanged, so a t-SNE or PCA embedding stays as good as it was.
    """
    x = _check_embedding(embedding)
    x = x - x.mean(axis=0)  # (n, k)
    if reference is None:
        return x.astype(np.float32)
    r = _check_embedding(reference, "reference")
    if r.shape != x.shape:
        raise InputError(f"reference embedding has shape {r.shape}, expected {x.shape}")
    r = r - r.mean(axis=0)  # (n, k)
    if _spread(x) == 0.0 or _spread(r) == 0.0:
        return x.astype(np.float32)
    rotation, _ = orthogonal_procrustes(x, r)  # (k, k), minimises |x @ rotation - r|
    return (x @ rotation).astype(np.float32)


def embedding_to_colours(embedding: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """RGB colours (n, 3) float32 in [0, 1] for an embedding (n, k), k = 1, 2 or 3.

    With a reference embedding (n, k) the embedding is first aligned to it (`align_embedding`), so the same
    structure gets the same colours whatever its rotation or reflection. 1D embeddings map onto a colour ramp,
    2D onto a colour wheel (angle = hue, distance from the centre = saturation), 3D straight onto RGB.
    """
    return _colours(align_embedding(embedding, reference))


def _check_embedding(embedding: np.ndarray, name: str = "embedding") -> np.ndarray:
    e = np.asarray(embedding, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0 or e.shape[1] not in (1, 2, 3):
        raise InputError(f"{name} must be an (n, k) array with k in 1..3, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise InputError(f"{name} contains NaN or infinite values")
    return e


# A ramp from blue through cyan, green and yellow to red for 1D embeddings: (position, r, g, b).
_RAMP = np.array(
    [
        [0.00, 0.23, 0.30, 0.75],
        [0.25, 0.15, 0.65, 0.85],
        [0.50, 0.35, 0.78, 0.35],
        [0.75, 0.95, 0.78, 0.20],
        [1.00, 0.80, 0.20, 0.18],
    ]
)


def _hsv_to_rgb(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Vectorised HSV to RGB; all inputs (n,) in [0, 1]."""  # (n, 3)
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = (offset + hue * 6.0) % 6.0
        channels.append(val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=1)


def minmax_colours(x: np.ndarray) -> np.ndarray:
    """The official scripts' colouring: each coordinate min-max scaled to [0, 1] and read as RGB (n, 3).

    3D coordinates are (r, g, b); 1D is grey; 2D is (r, g) with blue at one half."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    u = np.where(hi > lo, (x - lo) / span, 0.5)  # (n, k)
    if u.shape[1] == 1:
        u = np.repeat(u, 3, axis=1)
    elif u.shape[1] == 2:
        u = np.concatenate([u, np.full((len(u), 1), 0.5)], axis=1)
    return np.clip(u, 0.0, 1.0).astype(np.float32)


def _colours(x: np.ndarray, colouring: str = "aligned") -> np.ndarray:
    """Colours of a centred (and aligned) embedding x (n, k)."""  # (n, 3)
    if colouring == "minmax":
        return minmax_colours(x)
    n, k = x.shape
    radius = np.linalg.norm(x, axis=1) if k > 1 else np.abs(x[:, 0])
    scale = float(np.percentile(radius, _COLOUR_PERCENTILE)) if n else 0.0
    if not scale > 0.0:
        return np.full((n, 3), _GREY, dtype=np.float32)
    u = x / scale  # (n, k), most points inside the unit ball
    if k == 1:
        t = (np.clip(u[:, 0], -1.0, 1.0) + 1.0) / 2.0
        rgb = np.stack([np.interp(t, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)], axis=1)
    elif k == 2:
        hue = (np.arctan2(u[:, 1], u[:, 0]) / (2.0 * np.pi)) % 1.0
        sat = np.clip(np.linalg.norm(u, axis=1), 0.0, 1.0)
        rgb = _hsv_to_rgb(hue, sat, np.full(n, 0.95))
    else:
        # per-axis scale from the same percentile of the coordinates, so the RGB cube is filled
        axis_scale = float(np.percentile(np.abs(x), _COLOUR_PERCENTILE))
        if not axis_scale > 0.0:
            axis_scale = float(np.max(np.abs(x)))
        rgb = 0.5 + 0.5 * np.clip(x / axis_scale, -1.0, 1.0)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def pca_colours(features: np.ndarray, normalise: bool = True, seed: int = 0) -> np.ndarray:
    """The quick DINO-style view: the first three principal components of the grid's features as RGB.

    Returns (h, w, 3) float32 in [0, 1]. Each component is stretched so its 1st..99th percentiles span [0, 1].
    With `normalise` the features are unit-normalised first, so a few high-norm tokens do not take over.
    A constant grid is mid grey.
    """
    grid = _check_grid(features)
    h, w, d = grid.shape
    x = grid.reshape(h * w, d)  # (n, d)
    with one_blas_thread():
        scores = _pca_scores(_normalise(x) if normalise else x, 3, seed)  # (n, 3)
    lo, hi = np.percentile(scores, [1.0, 99.0], axis=0)  # (3,), (3,)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    rgb = np.where(span > 0, np.clip((scores - lo) / safe, 0.0, 1.0), _GREY)  # (n, 3)
    return rgb.reshape(h, w, 3).astype(np.float32)


