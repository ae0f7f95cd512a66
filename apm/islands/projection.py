"""Projections of a feature grid: t-SNE (openTSNE, with this module's own perplexity search) and PCA, warm-started
from the previous frame, in 1, 2 or 3 dimensions; named views (the CLI's --projection, the app's picker)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from openTSNE import TSNEEmbedding, affinity, initialization
from openTSNE.tsne import kl_divergence_bh, kl_divergence_fft

from ..errors import InputError
from .colours import _colours, align_embedding
from .common import (
    METRICS,
    _check_distances,
    _check_grid,
    _is_constant,
    _metric_space,
    _pca_scores,
    _readonly,
    _spread,
    one_blas_thread,
    squared_distances,
)

log = logging.getLogger("apm.islands")

METHODS = ("tsne", "pca")
INITS = ("pca", "random")
COLOURINGS = ("aligned", "minmax")
PERPLEXITY_RANGE = (2.0, 100.0)  # what the app's perplexity control offers
GRADIENTS = ("auto", "bh", "fft")
LIVE_WARM_ITERS = 5  # t-SNE steps per live frame of a run (the embedding keeps converging over the frames)
FFT_MIN_POINTS_2D = 5000  # below this many points Barnes-Hut beats FFT in 2D (FFT is always used in 1D by "auto")
MIN_TSNE_POINTS = 4  # fewer locations than this are embedded by PCA (t-SNE needs a perplexity >= 1)
_LOG_BETA_MAX = 690.0  # beta stays finite (a row with more than `perplexity` equal nearest distances never closes)


# configs and results

@dataclass(frozen=True)
class ProjectionConfig:
    """How a feature grid is projected and coloured."""

    method: str = "tsne"  # "tsne" or "pca"
    dim: int = 2  # embedding dimensions: 1, 2 or 3
    perplexity: float = 30.0  # t-SNE perplexity; clipped to (n - 1) / 3 for small grids
    metric: str = "cosine"  # "cosine" (features unit-normalised first) or "euclidean"
    warm_iters: int = 20  # optimisation steps of a warm-started update
    early_exaggeration_iters: int = 100  # full fit: steps with early exaggeration, from a PCA start
    full_iters: int = 250  # full fit: steps after early exaggeration
    early_exaggeration: float = 12.0  # attraction multiplier of the early phase
    exaggeration: float = 1.0  # attraction multiplier of the main phase and warm updates (> 1 tightens islands)
    theta: float = 0.5  # Barnes-Hut accuracy of full fits: larger is faster and coarser
    warm_theta: float = 1.0  # Barnes-Hut accuracy of warm updates, where speed matters more than precision
    gradient: str = "auto"  # "auto", "bh" or "fft"; auto: FFT in 1D and for >= 5000 points in 2D, else Barnes-Hut
    n_jobs: int = 1  # openTSNE threads; one is fastest for grids this small on a shared 2-core machine
    seed: int = 0  # seed of the start (PCA jitter or random); results are deterministic given it
    init: str = "pca"  # t-SNE start of a full fit: "pca" (stable) or "random" (the official scripts')
    colouring: str = "aligned"  # "aligned": hue wheel / ramp / centred RGB; "minmax": coordinates min-max scaled
    # straight to RGB (the official scripts; 1D gives grey)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"projection method must be one of {METHODS}, got {self.method!r}")
        if self.init not in INITS:
            raise InputError(f"t-SNE init must be one of {INITS}, got {self.init!r}")
        if self.colouring not in COLOURINGS:
            raise InputError(f"colouring must be one of {COLOURINGS}, got {self.colouring!r}")
        if self.dim not in (1, 2, 3):
            raise InputError(f"projection dim must be 1, 2 or 3, got {self.dim!r}")
        if self.metric not in METRICS:
            raise InputError(f"projection metric must be one of {METRICS}, got {self.metric!r}")
        if self.gradient not in GRADIENTS:
            raise InputError(f"t-SNE gradient must be one of {GRADIENTS}, got {self.gradient!r}")
        if self.gradient == "fft" and self.dim == 3:
            raise InputError("FFT t-SNE supports only 1 or 2 dimensions; use gradient='bh' for 3D")
        if not (np.isfinite(self.perplexity) and self.perplexity > 0):
            raise InputError(f"perplexity must be a positive number, got {self.perplexity!r}")
        for name in ("warm_iters", "early_exaggeration_iters", "full_iters"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (self.early_exaggeration > 0 and self.exaggeration > 0):
            raise InputError("exaggeration factors must be positive")
        if not (0 < self.theta <= 2 and 0 < self.warm_theta <= 2):
            raise InputError(f"theta and warm_theta must be in (0, 2], got {self.theta!r}, {self.warm_theta!r}")


# named views: what the CLI's --projection and the app's picker offer
PROJECTIONS: dict[str, ProjectionConfig] = {
    "tsne2d": ProjectionConfig(method="tsne", dim=2),
    "tsne3d": ProjectionConfig(method="tsne", dim=3),
    "pca": ProjectionConfig(method="pca", dim=3),
    # the official scripts' islands: 3D t-SNE, perplexity 3, random start, Euclidean, coordinates min-max to RGB
    # (both threads and a coarser Barnes-Hut: a still of up to 56 x 56 locations in seconds, not half a minute)
    "paper": ProjectionConfig(method="tsne", dim=3, perplexity=3.0, metric="euclidean", init="random",
                              colouring="minmax", early_exaggeration_iters=250, full_iters=750, n_jobs=2, theta=0.7),
    # the official test-time-training script's dumps: the same in 1D, as grey levels
    "paper1d": ProjectionConfig(method="tsne", dim=1, perplexity=3.0, metric="euclidean", init="random",
                                colouring="minmax", early_exaggeration_iters=250, full_iters=750, n_jobs=2),
}
PROJECTION_LABELS = {
    "tsne2d": "t-SNE 2D",
    "tsne3d": "t-SNE 3D",
    "pca": "PCA (3 components)",
    "paper": "Paper view: 3D t-SNE, perplexity 3, min-max RGB",
    "paper1d": "Paper view 1D (grey)",
}
PERPLEXITY_NOTE = ("Island sizes and the gaps between islands in a t-SNE depend on its perplexity: compare a few "
                   "values before reading meaning into them.")


def projection_config(name: str = "tsne2d", **overrides) -> ProjectionConfig:
    """A named view (`PROJECTIONS`) with some fields replaced (None values are ignored)."""
    if name not in PROJECTIONS:
        raise InputError(f"unknown projection {name!r}; choose one of: {', '.join(PROJECTIONS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "perplexity" in changes:
        lo, hi = PERPLEXITY_RANGE
        if not lo <= float(changes["perplexity"]) <= hi:
            raise InputError(f"perplexity must be between {lo:g} and {hi:g}, got {changes['perplexity']}")
    return replace(PROJECTIONS[name], **changes)


@dataclass(frozen=True, eq=False)
class Projection:
    """One frame: an embedding of the grid's locations and their colours. Arrays are read-only."""

    embedding: np.ndarray  # (n, dim) float32, centred and aligned to the previous frame; warm starts begin here
    colours: np.ndarray  # (n, 3) float32 in [0, 1], one RGB colour per location
    image: np.ndarray  # (h, w, 3) float32 in [0, 1], the colours laid out on the grid (the islands image)
    grid_shape: tuple[int, int]  # (h, w)
    method: str  # "tsne" or "pca" (the method asked for; tiny or constant grids fall back to PCA / zeros)
    dim: int  # embedding dimensions
    warm: bool  # True when this frame was warm-started from the previous one
    aligned: bool  # True when the embedding was Procrustes-aligned to the previous frame
    n_iter: int  # t-SNE optimisation steps run (0 for PCA and degenerate grids)
    perplexity: float | None  # perplexity actually used (None when t-SNE did not run)
    kl_divergence: float | None  # t-SNE objective at the end of a full fit (None for warm updates and non-t-SNE)


def _effective_perplexity(perplexity: float, n: int) -> float | None:
    """Perplexity clipped to what n points support (k = 3 * perplexity neighbours), or None if too few points."""
    if n < MIN_TSNE_POINTS:
        return None
    return float(min(perplexity, (n - 1) / 3.0))


def _knn(y: np.ndarray, k: int, distances: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (self excluded) by Euclidean distance: indices (n, k), distances (n, k).

    Each row's neighbours come in column order (what a CSR matrix of them needs). Where several locations tie at
    the k-th distance, the lowest-numbered are kept, so the result is the same on every machine. `distances`: the
    rows' `squared_distances`, when the caller has them.
    """
    sq = squared_distances(y, "euclidean") if distances is None else distances  # (n, n), inf on the diagonal
    n = len(sq)
    # the k-th smallest distance of each row, then the entries up to it: a selection, a comparison and a scan
    # (about half of what np.argpartition over the rows, then sorting them, costs for a 32 x 32 grid)
    kth = np.partition(sq, k - 1, axis=1)[:, k - 1:k]  # (n, 1)
    within = sq <= kth  # (n, n): k entries a row, more where distances tie at the k-th
    counts = np.count_nonzero(within, axis=1)  # (n,)
    idx = np.empty((n, k), dtype=np.intp)
    plain = np.flatnonzero(counts == k)  # (m,) rows without a tie
    rows = within if len(plain) == n else within[plain]  # (m, n)
    # their columns: flat positions less each row's start (np.nonzero of the 2D mask costs four times as much)
    idx[plain] = np.flatnonzero(rows).reshape(-1, k) - (n * np.arange(len(plain)))[:, None]
    tied = np.flatnonzero(counts != k)  # ties at the k-th distance (or, in a caller's matrix, NaN: never garbage)
    if len(tied):
        idx[tied] = np.sort(np.argsort(sq[tied], axis=1, kind="stable")[:, :k], axis=1)
    d2 = np.take_along_axis(sq, idx, axis=1)  # (n, k)
    return idx, np.sqrt(d2.astype(np.float64))


def conditional_affinities(dist: np.ndarray, perplexity: float, tol: float = 1e-8, max_iter: int = 100) -> np.ndarray:
    """t-SNE's P_{j|i} over each point's k neighbours: exp(-beta_i d_ij^2), normalised per row, with beta_i set so
    that the row's entropy is log(perplexity) within `tol` nats. Distances (n, k) -> probabilities (n, k).

    What openTSNE's perplexity search computes, solved for all rows at once: Newton steps on log(beta_i), kept
    inside a bisection bracket. It takes a few milliseconds for 1024 x 90 neighbours where openTSNE's row-by-row
    bisection takes about 20, and it also reaches the perplexity on rows whose distances are nearly equal (the
    high-dimensional noise of a live frame), where openTSNE's search stops short of it.
    """
    d2 = np.asarray(dist, dtype=np.float64) ** 2  # (n, k)
    d2 = d2 - d2.min(axis=1, keepdims=True)  # the same P; the nearest neighbour's weight is 1 before normalising
    n, k = d2.shape
    if not 1.0 <= perplexity <= k:
        raise InputError(f"perplexity {perplexity} needs between 1 and {k} neighbours a point")
    target = np.log(perplexity)
    spread = d2.std(axis=1)
    log_beta = -np.log(np.where(spread > 0, spread, 1.0))  # (n,): beta about 1 / the spread of d^2
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)  # the bracket of log(beta) found so far
    p = np.empty_like(d2)
    rows = np.arange(n)  # the rows still searching (each step works on these alone)
    for _ in range(max_iter):
        x = d2[rows]  # (m, k)
        beta = np.exp(log_beta[rows])  # (m,)
        weights = np.exp(-beta[:, None] * x)  # the largest is 1
        total = weights.sum(axis=1)
        weights /= total[:, None]
        p[rows] = weights
        mean = np.einsum("ij,ij->i", weights, x)
        excess = np.log(total) + beta * mean - target  # entropy - log(perplexity): falls as beta grows
        searching = np.abs(excess) >= tol
        if not searching.any():
            break
        rows, excess, beta, x, weights, mean = (a[searching] for a in (rows, excess, beta, x, weights, mean))
        b = log_beta[rows]
        lo[rows] = np.where(excess > 0, b, lo[rows])
        hi[rows] = np.where(excess < 0, b, hi[rows])
        low, high = lo[rows], hi[rows]
        slope = beta**2 * np.einsum("ij,ij->i", weights, (x - mean[:, None]) ** 2)  # -d entropy / d log(beta)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = b + excess / slope
        inside = np.isfinite(newton) & (newton > low) & (newton < high)
        bisect = np.where(np.isfinite(low) & np.isfinite(high), 0.5 * (low + high),
                          np.where(np.isfinite(low), low + 2.0, high - 2.0))
        log_beta[rows] = np.clip(np.where(inside, newton, bisect), -_LOG_BETA_MAX, _LOG_BETA_MAX)
    return p


def joint_affinities(idx: np.ndarray, dist: np.ndarray, perplexity: float) -> sp.csr_matrix:
    """t-SNE's joint probabilities P = (P_{j|i} + P_{i|j}) / 2n from each point's k neighbours: (n, n) sparse, sum 1."""
    n, k = idx.shape
    p = conditional_affinities(dist, perplexity)  # (n, k)
    idx = np.asarray(idx)
    if k > 1 and not np.all(idx[:, 1:] > idx[:, :-1]):  # each row's neighbours in column order: a canonical CSR
        order = np.argsort(idx, axis=1)  # matrix, no re-sorting (`_knn` gives them so)
        idx, p = np.take_along_axis(idx, order, axis=1), np.take_along_axis(p, order, axis=1)
    conditional = sp.csr_matrix((p.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    conditional.has_sorted_indices = True
    both = conditional + conditional.T.tocsr()  # mutual neighbours' two halves are summed
    both.data /= 2.0 * n
    return both


def _gradient_method(config: ProjectionConfig, n: int) -> str:
    if config.gradient != "auto":
        return config.gradient
    if config.dim == 1 or (config.dim == 2 and n >= FFT_MIN_POINTS_2D):
        return "fft"
    return "bh"


def _no_final_error(objective):
    """openTSNE's objective (KL divergence and gradient) for a warm update: openTSNE evaluates it once more after
    the last step only to report the KL divergence, a whole gradient (a sixth of a live frame's five steps) that a
    live frame never shows; that evaluation, the only one asked for its error here, is skipped."""

    def evaluate(embedding, P, should_eval_error=False, **kwargs):
        if should_eval_error:  # with no callbacks and verbose off, asked only after the last step
            return None, None
        return objective(embedding, P, should_eval_error=False, **kwargs)

    return evaluate


# t-SNE

def _tsne(
    y: np.ndarray, config: ProjectionConfig, start: np.ndarray | None, distances: np.ndarray | None = None
) -> tuple[np.ndarray, int, float, float | None]:
    """t-SNE of the rows of y; warm-started from `start` (n, dim) when given, else a full fit from PCA.

    Returns the embedding (n, dim) float64, the steps run, the perplexity used and the final KL divergence
    (None when no step ran).
    """
    n = len(y)
    perplexity = _effective_perplexity(config.perplexity, n)
    assert perplexity is not None
    k = min(n - 1, max(1, int(3 * perplexity)))
    idx, dist = _knn(y, k, distances)
    affinities = affinity.PrecomputedAffinities(joint_affinities(idx, dist, perplexity), normalize=False)
    params = {
        "negative_gradient_method": _gradient_method(config, n),
        "theta": config.warm_theta if start is not None else config.theta,
        "n_jobs": config.n_jobs,
        "random_state": config.seed,
    }
    if start is not None:
        method = {"bh": kl_divergence_bh, "fft": kl_divergence_fft}[params["negative_gradient_method"]]
        params["negative_gradient_method"] = _no_final_error(method)
        embedding = TSNEEmbedding(np.asarray(start, dtype=np.float64), affinities, **params)
        steps = int(config.warm_iters)
        if steps:
            embedding = embedding.optimize(steps, exaggeration=config.exaggeration, momentum=0.8, inplace=True)
    else:
        if config.init == "random":
            init = initialization.random(n, n_components=config.dim, random_state=config.seed)
        else:
            init = initialization.rescale(_pca_scores(y, config.dim, config.seed))
            init = initialization.jitter(init, scale=0.01, random_state=config.seed)
        embedding = TSNEEmbedding(init, affinities, **params)
        steps = int(config.early_exaggeration_iters) + int(config.full_iters)
        if config.early_exaggeration_iters:
            embedding = embedding.optimize(
                int(config.early_exaggeration_iters), exaggeration=config.early_exaggeration, momentum=0.5,
                inplace=True,
            )
        if config.full_iters:
            embedding = embedding.optimize(
                int(config.full_iters), exaggeration=config.exaggeration, momentum=0.8, inplace=True
            )
    kl = embedding.kl_divergence
    return np.asarray(embedding, dtype=np.float64), steps, perplexity, (float(kl) if kl is not None else None)


# projections

def project(
    features: np.ndarray,
    config: ProjectionConfig = ProjectionConfig(),
    previous: Projection | None = None,
    *,
    full_fit: bool = False,
    align_to: Projection | None = None,
    distances: np.ndarray | None = None,
) -> Projection:
    """Embed and colour a feature grid (h, w, d).

    With `previous` (a frame of the same grid shape and dim) the colours are aligned to it, and a t-SNE frame
    is warm-started from it: affinities are recomputed for the new features and a short optimisation runs from
    the previous embedding, so the picture evolves instead of jumping. Without it, or with `full_fit=True`
    (a final or still frame), t-SNE is fitted from scratch (colours are still aligned to `previous` if given).
    With `align_to` (another grid's projection of the same shape, e.g. the teacher's), the embedding is rotated
    onto that one instead, so the same island gets the same colour in both pictures. Deterministic given
    `config.seed`. `distances`: the grid's `squared_distances` in `config.metric` (a live frame's, shared with
    `island_metrics`), when the caller has them.
    """
    grid = _check_grid(features)
    if not isinstance(config, ProjectionConfig):
        raise InputError("config must be a ProjectionConfig")
    if distances is not None:
        distances = _check_distances(distances, grid.shape[0] * grid.shape[1])
    with one_blas_thread():
        return _project(grid, config, previous, full_fit, align_to, distances)


def _project(grid: np.ndarray, config: ProjectionConfig, previous: Projection | None, full_fit: bool,
             align_to: Projection | None = None, distances: np.ndarray | None = None) -> Projection:
    h, w, d = grid.shape
    n = h * w
    y = _metric_space(grid.reshape(n, d), config.metric)  # (n, d)

    reference = None
    if previous is not None:
        if not isinstance(previous, Projection):
            raise InputError("previous must be a Projection returned by project()")
        if tuple(previous.grid_shape) == (h, w) and previous.dim == config.dim:
            reference = np.asarray(previous.embedding, dtype=np.float64)  # (n, dim)
        else:
            log.info("previous frame is %s dim %d, this one %s dim %d: full fit, colours not aligned",
                     previous.grid_shape, previous.dim, (h, w), config.dim)

    warm = False
    n_iter = 0
    perplexity = kl = None
    constant = _is_constant(y)
    if config.method == "tsne" and not constant and _effective_perplexity(config.perplexity, n) is not None:
        warm = (
            reference is not None and not full_fit and previous.method == "tsne"
            and previous.perplexity is not None and _spread(reference) > 0.0
        )
        embedding, n_iter, perplexity, kl = _tsne(y, config, reference if warm else None, distances)
    else:
        if config.method == "tsne":
            log.debug("grid of %d locations is constant or too small for t-SNE: using PCA", n)
        embedding = _pca_scores(y, config.dim, config.seed)

    target = reference
    if align_to is not None:
        if not isinstance(align_to, Projection):
            raise InputError("align_to must be a Projection returned by project()")
        if tuple(align_to.grid_shape) == (h, w) and align_to.dim == config.dim:
            target = np.asarray(align_to.embedding, dtype=np.float64)
    aligned_embedding = align_embedding(embedding, target)  # (n, dim) float32
    colours = _colours(aligned_embedding.astype(np.float64), config.colouring)  # (n, 3)
    return Projection(
        embedding=_readonly(aligned_embedding),
        colours=_readonly(colours),
        image=_readonly(colours.reshape(h, w, 3).copy()),
        grid_shape=(h, w),
        method=config.method,
        dim=config.dim,
        warm=warm,
        aligned=target is not None,
        n_iter=n_iter,
        perplexity=perplexity,
        kl_divergence=kl,
    )


