"""Islands of agreement: live projections of a feature grid, colours that stay put, and island metrics.

Everything here is a pure function of numpy arrays. A feature grid is (h, w, d): one d-dimensional vector per
location. Location (i, j) is row `i * w + j` of every flattened (n, .) array, n = h * w.

- `project` embeds the grid with t-SNE (openTSNE, Barnes-Hut) or PCA, in 1, 2 or 3 dimensions, and colours each
  location from its embedding. Given the previous frame's `Projection` it warm-starts t-SNE from the previous
  embedding (new affinities, a short optimisation) and aligns the new embedding to the old one by an orthogonal
  Procrustes fit, so an island keeps its colour while it grows or splits.
- `pca_colours` is the quick DINO-style view: the first three principal components as RGB.
- `island_metrics` counts islands (agglomerative clustering on unit-normalised features at a cosine-distance
  threshold, and the spatially connected pieces of those clusters), measures neighbour agreement and, given the
  teacher's grid, per-location fidelity.
- `whole_to_part` computes the island count over a sequence of snapshots.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from openTSNE import TSNEEmbedding, affinity, initialization
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.linalg import orthogonal_procrustes
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform
from sklearn.decomposition import PCA
from threadpoolctl import ThreadpoolController

from .errors import InputError

log = logging.getLogger(__name__)

METHODS = ("tsne", "pca")
INITS = ("pca", "random")
COLOURINGS = ("aligned", "minmax")
PERPLEXITY_RANGE = (2.0, 100.0)  # what the app's perplexity control offers
METRICS = ("cosine", "euclidean")
GRADIENTS = ("auto", "bh", "fft")
LIVE_WARM_ITERS = 5  # t-SNE steps per live frame of a run (the embedding keeps converging over the frames)
FFT_MIN_POINTS_2D = 5000  # below this many points Barnes-Hut beats FFT in 2D (FFT is always used in 1D by "auto")
MIN_TSNE_POINTS = 4  # fewer locations than this are embedded by PCA (t-SNE needs a perplexity >= 1)
_CONSTANT_RTOL = 1e-6  # features whose spread is below this fraction of their magnitude count as constant
_COLOUR_PERCENTILE = 95.0  # embeddings are scaled so this percentile of points lies inside the colour gamut
_GREY = 0.5  # colour of a degenerate (constant) embedding
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
    kl_divergence: float | None  # t-SNE objective at the end (None when t-SNE did not run)


@dataclass(frozen=True)
class IslandConfig:
    """How islands are counted."""

    distance_threshold: float = 0.5  # cosine distance (average linkage) at which clusters stop merging
    connectivity: int = 4  # 4 or 8: grid neighbours that join one spatially connected island
    min_size: int = 1  # clusters and islands with fewer locations are not counted (1 counts all)

    def __post_init__(self) -> None:
        if not (0 <= self.distance_threshold <= 2):
            raise InputError(f"distance_threshold is a cosine distance in [0, 2], got {self.distance_threshold!r}")
        if self.connectivity not in (4, 8):
            raise InputError(f"connectivity must be 4 or 8, got {self.connectivity!r}")
        if int(self.min_size) < 1:
            raise InputError(f"min_size must be >= 1, got {self.min_size!r}")


@dataclass(frozen=True, eq=False)
class IslandMetrics:
    """Numbers describing the islands of one snapshot. Arrays are read-only."""

    n_islands: int  # clusters of the features at the threshold (with >= min_size locations)
    n_connected: int  # spatially connected pieces of those clusters (with >= min_size locations)
    labels: np.ndarray  # (h, w) int32 cluster of each location, numbered 0.. in raster order of first appearance
    connected_labels: np.ndarray  # (h, w) int32 connected island of each location, numbered likewise
    agreement: float  # mean cosine similarity of 4-neighbour pairs (1.0 for a 1 x 1 grid)
    agreement_map: np.ndarray  # (h, w) float32 mean cosine similarity of each location to its 4-neighbours
    fidelity_map: np.ndarray | None  # (h, w) float32 cosine similarity to the teacher per location, or None
    fidelity: float | None  # mean of fidelity_map, or None


@dataclass(frozen=True, eq=False)
class WholeToPart:
    """Island counts against training step: wholes breaking into parts."""

    steps: np.ndarray  # (m,) int64 training step of each snapshot
    n_islands: np.ndarray  # (m,) int64 clusters per snapshot
    n_connected: np.ndarray  # (m,) int64 spatially connected islands per snapshot


# validation and small helpers

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


_blas_lock = threading.Lock()
_blas_users = 0  # callers inside one_blas_thread(); the first sets the limit, the last restores it
_blas_limiter = None
_blas_controller: ThreadpoolController | None = None


@contextlib.contextmanager
def one_blas_thread():
    """Run numpy's BLAS on one thread (every BLAS product of a live frame runs inside it: a thread count changed
    while another thread is inside a BLAS call can leave OpenBLAS spinning). The products here are small (n <= a few thousand): on a shared 2-core
    machine waking a second BLAS thread costs more than it saves, and turns a 0.5 ms product into 5-10 ms."""
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


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


def _effective_perplexity(perplexity: float, n: int) -> float | None:
    """Perplexity clipped to what n points support (k = 3 * perplexity neighbours), or None if too few points."""
    if n < MIN_TSNE_POINTS:
        return None
    return float(min(perplexity, (n - 1) / 3.0))


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


def _knn(y: np.ndarray, k: int, distances: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (self excluded) by Euclidean distance: indices (n, k), distances (n, k).

    `distances`: the rows' `squared_distances`, when the caller has them."""
    sq = squared_distances(y, "euclidean") if distances is None else distances  # (n, n), inf on the diagonal
    idx = np.argpartition(sq, k - 1, axis=1)[:, :k]  # (n, k), unsorted: openTSNE does not need the order
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
    order = np.argsort(idx, axis=1)  # each row's neighbours in column order: a canonical CSR matrix, no re-sorting
    cols = np.take_along_axis(np.asarray(idx), order, axis=1).ravel()
    conditional = sp.csr_matrix((np.take_along_axis(p, order, axis=1).ravel(), cols, np.arange(0, n * k + 1, k)),
                                shape=(n, n))
    conditional.has_sorted_indices = True
    both = conditional + conditional.T.tocsr()  # mutual neighbours' two halves are summed
    both.data /= 2.0 * n
    return both


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


def _gradient_method(config: ProjectionConfig, n: int) -> str:
    if config.gradient != "auto":
        return config.gradient
    if config.dim == 1 or (config.dim == 2 and n >= FFT_MIN_POINTS_2D):
        return "fft"
    return "bh"


def _spread(embedding: np.ndarray) -> float:
    return float(np.max(np.ptp(embedding, axis=0))) if len(embedding) > 1 else 0.0


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


# colours

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


# metrics

def _canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0.. in order of first appearance (raster order), so equal partitions get equal labels."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first), dtype=np.int32)
    return rank[inverse.ravel()]


def _clusters(y: np.ndarray, threshold: float, distances: np.ndarray | None = None) -> np.ndarray:
    """Average-linkage clusters of unit rows y (n, d) at a cosine-distance threshold: labels (n,).

    `distances`: the rows' cosine `squared_distances`, when the caller has them."""
    n = len(y)
    if n < 2 or _is_constant(y):
        return np.zeros(n, dtype=np.int32)
    sq = squared_distances(y, "cosine") if distances is None else distances  # (n, n): 2 (1 - cos), inf diagonal
    # the condensed cosine distances, read off the upper triangle (squareform takes i < j and skips the diagonal)
    condensed = squareform(sq, checks=False).astype(np.float64)  # (n (n - 1) / 2,)
    condensed *= 0.5
    np.clip(condensed, 0.0, 2.0, out=condensed)
    tree = linkage(condensed, method="average")
    # merged while the mean distance between two clusters is below the threshold (strictly, as scikit-learn's)
    return _canonical(fcluster(tree, t=np.nextafter(threshold, -np.inf), criterion="distance"))


def _grid_edges(h: int, w: int, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b) of neighbouring locations on an h x w grid."""
    ids = np.arange(h * w).reshape(h, w)
    pairs = [(ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])]
    if connectivity == 8:
        pairs += [(ids[:-1, :-1], ids[1:, 1:]), (ids[:-1, 1:], ids[1:, :-1])]
    a = np.concatenate([p[0].ravel() for p in pairs])
    b = np.concatenate([p[1].ravel() for p in pairs])
    return a, b


def _connected(labels: np.ndarray, h: int, w: int, connectivity: int) -> np.ndarray:
    """Split each cluster into its spatially connected pieces: labels (n,) of the pieces."""
    a, b = _grid_edges(h, w, connectivity)
    same = labels[a] == labels[b]
    n = h * w
    graph = sp.coo_matrix((np.ones(int(same.sum()), dtype=np.int8), (a[same], b[same])), shape=(n, n)).tocsr()
    _, pieces = connected_components(graph, directed=False)
    return _canonical(pieces)


def _count(labels: np.ndarray, min_size: int) -> int:
    return int(np.sum(np.bincount(labels) >= min_size))


def _agreement(y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cosine similarity of 4-neighbour pairs of a unit grid y (h, w, d), and its per-location map (h, w)."""
    h, w, _ = y.shape
    horiz = np.einsum("ijk,ijk->ij", y[:, :-1], y[:, 1:])  # (h, w - 1)
    vert = np.einsum("ijk,ijk->ij", y[:-1, :], y[1:, :])  # (h - 1, w)
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    for sims, first, second in (
        (horiz, np.s_[:, :-1], np.s_[:, 1:]),
        (vert, np.s_[:-1, :], np.s_[1:, :]),
    ):
        total[first] += sims
        total[second] += sims
        count[first] += 1
        count[second] += 1
    if horiz.size + vert.size == 0:  # a single location agrees with itself
        return 1.0, np.ones((h, w), dtype=np.float32)
    mean = float((horiz.sum() + vert.sum()) / (horiz.size + vert.size))
    return mean, (total / np.maximum(count, 1)).astype(np.float32)


def island_metrics(
    features: np.ndarray,
    teacher: np.ndarray | None = None,
    config: IslandConfig = IslandConfig(),
    distances: np.ndarray | None = None,
) -> IslandMetrics:
    """Island count, neighbour agreement and (given the teacher's grid) fidelity for a feature grid (h, w, d).

    Islands are average-linkage clusters of the unit-normalised features, merged while the mean cosine distance
    between them is below `config.distance_threshold` (independent of the features' scale); `n_connected` counts
    their spatially connected pieces on the grid. Costs a few ms for a 16 x 16 grid. `distances`: the grid's
    cosine `squared_distances`, when the caller has them (a live frame shares them with `project`).
    """
    grid = _check_grid(features)
    if not isinstance(config, IslandConfig):
        raise InputError("config must be an IslandConfig")
    h, w, d = grid.shape
    y = _normalise(grid.reshape(h * w, d))  # (n, d)
    if distances is not None:
        distances = _check_distances(distances, h * w)

    with one_blas_thread():
        labels = _clusters(y, config.distance_threshold, distances)  # (n,)
    pieces = _connected(labels, h, w, config.connectivity)  # (n,)
    agreement, agreement_map = _agreement(y.reshape(h, w, d))

    fidelity_map = fidelity = None
    if teacher is not None:
        target = _check_grid(teacher, "teacher")
        if target.shape != grid.shape:
            raise InputError(f"teacher grid has shape {target.shape}, features have {grid.shape}")
        t = _normalise(target.reshape(h * w, d))  # (n, d)
        fidelity_map = np.einsum("ij,ij->i", y, t).reshape(h, w).astype(np.float32)  # (h, w)
        fidelity = float(fidelity_map.mean())
        fidelity_map = _readonly(fidelity_map)

    return IslandMetrics(
        n_islands=_count(labels, config.min_size),
        n_connected=_count(pieces, config.min_size),
        labels=_readonly(labels.reshape(h, w)),
        connected_labels=_readonly(pieces.reshape(h, w)),
        agreement=agreement,
        agreement_map=_readonly(agreement_map),
        fidelity_map=fidelity_map,
        fidelity=fidelity,
    )


def whole_to_part(
    grids: Sequence[np.ndarray],
    steps: Sequence[int] | None = None,
    config: IslandConfig = IslandConfig(),
) -> WholeToPart:
    """The whole-to-part curve: island counts of a sequence of snapshots (h, w, d) against training step.

    `steps` defaults to 0, 1, 2, ... The app can instead accumulate (step, `island_metrics(...).n_islands`) pairs.
    """
    grids = list(grids)
    if steps is None:
        step_arr = np.arange(len(grids), dtype=np.int64)
    else:
        step_arr = np.asarray(list(steps), dtype=np.int64)
        if step_arr.shape != (len(grids),):
            raise InputError(f"got {len(grids)} grids but {step_arr.size} steps")
    metrics = [island_metrics(g, config=config) for g in grids]
    return WholeToPart(
        steps=_readonly(step_arr),
        n_islands=_readonly(np.array([m.n_islands for m in metrics], dtype=np.int64)),
        n_connected=_readonly(np.array([m.n_connected for m in metrics], dtype=np.int64)),
    )


# pointing at a location, and the part-whole tree


def agreement_map(features: np.ndarray, location: tuple[int, int]) -> np.ndarray:
    """Cosine similarity of the vector at `location` (i, j) to every location's vector: (h, w) float32 in [-1, 1].

    The clicked location's own value is exactly 1 (a zero vector agrees with nothing: 0 everywhere)."""
    grid = _check_grid(features)
    h, w, d = grid.shape
    i, j = int(location[0]), int(location[1])
    if not (0 <= i < h and 0 <= j < w):
        raise InputError(f"location ({i}, {j}) is outside the {h} x {w} grid")
    y = _normalise(grid.reshape(h * w, d))  # (n, d)
    sims = np.clip(y @ y[i * w + j], -1.0, 1.0).reshape(h, w).astype(np.float32)
    if np.any(y[i * w + j]):
        sims[i, j] = 1.0
    return _readonly(sims)


def column_agreement(grids: Sequence[np.ndarray], location: tuple[int, int]) -> np.ndarray:
    """A location's column across levels: at each grid (one per layer), the mean cosine similarity of its vector
    to its 8 neighbours' (how strongly it agrees with the island around it). (n_levels,) float32."""
    out = []
    for grid in grids:
        sims = agreement_map(grid, location)
        h, w = sims.shape
        i, j = int(location[0]), int(location[1])
        block = sims[max(0, i - 1):i + 2, max(0, j - 1):j + 2]
        out.append((float(block.sum()) - 1.0) / max(block.size - 1, 1))
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class TreeNode:
    """One segment of the part-whole tree: the locations of one island at one level of detail."""

    id: str  # 'L2.3': level 2, island 3
    parent: str  # '' for the root
    level: int  # 0: the whole image; 1.. finer
    size: int  # locations in it
    mask: np.ndarray  # (h, w) bool
    colour: tuple[float, float, float] | None = None  # the mean island colour of its locations, when given


@dataclass(frozen=True)
class PartWholeTree:
    levels: tuple[int, ...]  # the number of islands asked for at each level, coarse to fine
    nodes: tuple[TreeNode, ...]  # root first, then level by level

    def at(self, level: int) -> list[TreeNode]:
        return [n for n in self.nodes if n.level == level]


def part_whole_tree(
    features: np.ndarray, levels: Sequence[int] = (2, 4, 8, 16), colours: np.ndarray | None = None
) -> PartWholeTree:
    """Islands at coarse-to-fine levels of detail, each inside one island of the level above.

    One Ward dendrogram of the unit-normalised features (h, w, d) is cut into `levels[k]` clusters at level
    k + 1 (fewer where the grid has fewer distinct vectors), so every island at a finer level lies inside one
    island of the coarser level: the segments at each level partition the locations, and they nest. `colours`
    (h, w, 3), e.g. the islands image, gives each segment its locations' mean colour.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    grid = _check_grid(features)
    h, w, d = grid.shape
    n = h * w
    counts = [int(k) for k in levels]
    if not counts or any(k < 1 for k in counts) or counts != sorted(counts):
        raise InputError(f"levels must be increasing positive island counts, got {list(levels)}")
    y = _normalise(grid.reshape(n, d)).astype(np.float64)

    def colour_of(mask: np.ndarray):
        if colours is None:
            return None
        c = np.asarray(colours, dtype=np.float32).reshape(n, 3)[mask.ravel()].mean(axis=0)
        return (float(c[0]), float(c[1]), float(c[2]))

    root_mask = np.ones((h, w), dtype=bool)
    nodes = [TreeNode("L0", "", 0, n, root_mask, colour_of(root_mask))]
    if n < 2 or _is_constant(y):
        return PartWholeTree(tuple(counts), tuple(nodes))
    with one_blas_thread():
        tree = linkage(y, method="ward")
    parent_labels = np.zeros(n, dtype=np.int64)
    parent_ids = {0: "L0"}
    for level, k in enumerate(counts, start=1):
        labels = _canonical(fcluster(tree, t=min(k, n), criterion="maxclust"))  # (n,)
        ids = {}
        for label in range(int(labels.max()) + 1):
            members = labels == label
            parents = np.unique(parent_labels[members])
            if len(parents) != 1:  # cannot happen for cuts of one dendrogram; guards the nesting claim
                raise RuntimeError("part-whole tree: an island straddles two islands of the level above")
            ids[label] = f"L{level}.{label}"
            mask = members.reshape(h, w)
            nodes.append(TreeNode(ids[label], parent_ids[int(parents[0])], level, int(members.sum()), mask,
                                  colour_of(mask)))
        parent_labels, parent_ids = labels, ids
    return PartWholeTree(tuple(counts), tuple(nodes))
