"""What every part of `apm.islands` shares: the checks of a grid and the distances between its locations."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from ..errors import InputError
from ..threads import one_blas_thread  # noqa: F401 - every BLAS product of a live frame runs under it

METRICS = ("cosine", "euclidean")  # how locations are compared
_CONSTANT_RTOL = 1e-6  # features whose spread is below this fraction of their magnitude count as constant


def _check_grid(features: np.ndarray, name: str = "features") -> np.ndarray:
    """Validate an (h, w, d) grid of finite numbers and return it as float32."""
    try:
        grid = np.asarray(features)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name} cannot be read as an array: {exc}") from exc
    if grid.ndim != 3:
        raise InputError(f"{name} must be an (h, w, d) grid, got an array of shape {grid.shape}")
    if min(grid.shape) == 0:
        raise InputError(f"{name} grid is empty: shape {grid.shape}")
    if not (np.issubdtype(grid.dtype, np.number) or grid.dtype == np.bool_) or np.iscomplexobj(grid):
        raise InputError(f"{name} must hold real numbers, got dtype {grid.dtype}")
    grid = grid.astype(np.float32, copy=False)
    if not np.all(np.isfinite(grid)):
        raise InputError(f"{name} contain NaN or infinite values")
    return grid



def _readonly(a: np.ndarray) -> np.ndarray:
    """Mark an array read-only (results are shared between frames)."""
    a.flags.writeable = False
    return a


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""  # (n, d)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def _is_constant(x: np.ndarray) -> bool:
    """True when every row of x is (numerically) the same vector."""
    if len(x) < 2:
        return True
    spread = float(np.max(np.ptp(x, axis=0)))
    return spread <= _CONSTANT_RTOL * float(np.max(np.abs(x)))


def _metric_space(x: np.ndarray, metric: str) -> np.ndarray:
    """The rows in the space whose Euclidean distances the projection preserves."""  # (n, d)
    return _normalise(x) if metric == "cosine" else x


def squared_distances(features: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Squared Euclidean distances between a grid's locations in the space a metric compares them in.

    (h, w, d) or (n, d) -> (n, n) float32; for "cosine" the rows are unit-normalised first, so an entry is
    2 (1 - cosine similarity). The diagonal is +inf: a location is never its own neighbour. One frame's t-SNE
    neighbours and its island clusters both read this matrix (`project(..., distances=)`,
    `island_metrics(..., distances=)`), so a live frame forms it once.
    """
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, not {metric!r}")
    x = np.asarray(features)
    x = x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x
    with one_blas_thread():
        y = _metric_space(np.asarray(x, dtype=np.float32), metric)
        y = y - y.mean(axis=0)  # distances unchanged; a shared component no longer swamps float32 round-off
        sq = np.einsum("ij,ij->i", y, y)  # (n,)
        out = y @ y.T  # (n, n)
    out *= -2.0
    out += sq[:, None]
    out += sq[None, :]
    np.maximum(out, 0.0, out=out)
    np.fill_diagonal(out, np.inf)
    return out


def _check_distances(distances: np.ndarray, n: int) -> np.ndarray:
    d = np.asarray(distances)
    if d.shape != (n, n):
        raise InputError(f"distances must be ({n}, {n}) for this grid, got {d.shape}")
    return d




def _pca_scores(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The first k principal-component scores of the rows of y, zero-padded when rank is short."""  # (n, k)
    n, d = y.shape
    out = np.zeros((n, k), dtype=np.float64)
    if n < 2 or _is_constant(y):
        return out
    if k < min(n, d):
        pca = PCA(n_components=k, svd_solver="arpack", random_state=seed)  # a few ms even for 1024 x 384
    else:
        pca = PCA(n_components=min(k, n, d), svd_solver="full")
    scores = pca.fit_transform(y.astype(np.float64))
    out[:, : scores.shape[1]] = scores
    return out


def _spread(embedding: np.ndarray) -> float:
    return float(np.max(np.ptp(embedding, axis=0))) if len(embedding) > 1 else 0.0
