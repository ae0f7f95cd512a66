"""Islands of the teacher grid itself, no APM involved.

Project a teacher's (h, w, d) grid to RGB so that patches with similar features get similar colours: in a
video transformer's early blocks these regions are already GLOM's islands of agreement (the NeurIPS 2023
observation that started the APM). The projection is `apm.islands.pca_colours` when that module is present,
so teacher and APM islands are coloured the same way; otherwise a small local PCA to RGB.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

_FIT_ROWS = 4096  # PCA components are fitted on at most this many patches (all patches are projected)


def _pca_rgb(features: np.ndarray) -> np.ndarray:
    """(h, w, d) -> (h, w, 3) float32 in [0, 1]: first three principal components, robustly scaled."""
    h, w, d = features.shape
    x = features.reshape(h * w, d).astype(np.float64)  # (N, d)
    x = x - x.mean(axis=0, keepdims=True)
    if h * w < 2 or not np.any(x):
        return np.full((h, w, 3), 0.5, dtype=np.float32)
    fit = x
    if len(x) > _FIT_ROWS:  # evenly spaced rows: deterministic and enough to find the main directions
        fit = x[np.linspace(0, len(x) - 1, _FIT_ROWS).astype(int)]
    _, _, vt = np.linalg.svd(fit, full_matrices=False)  # vt (k, d)
    comps = vt[:3]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1.0  # fix each component's sign so the output does not flip between runs
    proj = x @ (comps * signs[:, None]).T  # (N, k)
    if proj.shape[1] < 3:  # fewer than three directions (d < 3): pad with a neutral channel
        proj = np.concatenate([proj, np.zeros((len(proj), 3 - proj.shape[1]))], axis=1)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    rgb = np.where(hi > lo, (proj - lo) / span, 0.5)  # (N, 3)
    return np.clip(rgb, 0.0, 1.0).reshape(h, w, 3).astype(np.float32)


def teacher_islands(grid: np.ndarray) -> np.ndarray:
    """A teacher's feature grid (h, w, d) -> an RGB picture of its islands, (h, w, 3) float32 in [0, 1]."""
    arr = np.asarray(grid)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise InputError(f"teacher islands need an (h, w, d) feature grid, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise InputError(f"teacher islands need a numeric grid, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError("the feature grid has NaN or infinite values")
    try:
        from ..islands import pca_colours
    except ImportError:
        logger.debug("apm.islands.pca_colours not available; using the local PCA")
        pca_colours = _pca_rgb
    rgb = np.asarray(pca_colours(arr), dtype=np.float32)
    if rgb.shape != (*arr.shape[:2], 3):
        raise RuntimeError(f"projection gave shape {rgb.shape}, expected {(*arr.shape[:2], 3)}")
    return np.clip(rgb, 0.0, 1.0)
