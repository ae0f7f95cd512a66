"""What a feature grid's islands rest on: content metrics as pure functions (arrays in, numbers out).

An islands picture can look the same whether it shows the image's parts or only the positional code magnified
by a t-SNE. These figures say which: how much of the teacher's structure a grid carries (linear CKA), computed
over the grid's locations, so they are independent of the feature space's basis and scale.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def _rows(x: np.ndarray, name: str) -> np.ndarray:
    """(h, w, d) or (n, d) -> (n, d) float64, finite."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3:
        a = a.reshape(-1, a.shape[-1])
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise InputError(f"{name} must be a (h, w, d) grid or an (n, d) matrix with n >= 2, got shape {np.shape(x)}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} has non-finite values")
    return a


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same locations, in [0, 1].

    `a` (h, w, d1) or (n, d1) and `b` (h, w, d2) or (n, d2): 1 when one is an orthogonal transform and
    rescaling of the other (after centring), near 0 when their location-to-location similarities are unrelated.
    A constant representation carries no structure: its CKA with anything is 0.
    """
    x, y = _rows(a, "a"), _rows(b, "b")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"a has {x.shape[0]} locations, b has {y.shape[0]}")
    x = x - x.mean(axis=0)  # (n, d1)
    y = y - y.mean(axis=0)  # (n, d2)
    kx = x @ x.T  # (n, n) Gram matrices: the cost grows with n, not with the widths
    ky = y @ y.T
    norm = np.sqrt((kx * kx).sum() * (ky * ky).sum())
    if norm <= 0 or not np.isfinite(norm):
        return 0.0
    return float(np.clip((kx * ky).sum() / norm, 0.0, 1.0))
