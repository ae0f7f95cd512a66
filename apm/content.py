"""What a feature grid's islands rest on: content metrics as pure functions (arrays in, numbers out).

An islands picture can look the same whether it shows the image's parts or only the positional code magnified
by a t-SNE. These figures say which, each computed over the grid's locations (so independent of the feature
space's basis and scale):
- `cka_teacher`: linear CKA to the teacher's grid (1: it carries the teacher's structure);
- `cka_position`: linear CKA to the 2D sin-cos code of the locations alone (1: a linear map of where a location is);
- `ari_teacher`: agreement (adjusted Rand index) of its islands with the teacher's, cut the same way;
- `spread`: how different its locations are, over how different the teacher's are (near 0: nearly constant).
`content_sentence` says in one sentence what they mean, naming the figure it rests on.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

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


def _centred_gram(x: np.ndarray) -> np.ndarray:
    """(n, d) -> the (n, n) Gram matrix of the column-centred rows (the cost grows with n, not with d); the
    product in float32, the entries then in float64 for the sums CKA takes over them."""
    from .threads import one_blas_thread  # every BLAS product of a live frame under the one guard

    x = (x - x.mean(axis=0)).astype(np.float32)
    with one_blas_thread():
        return (x @ x.T).astype(np.float64)


def _cka_grams(kx: np.ndarray, ky: np.ndarray) -> float:
    norm = np.sqrt((kx * kx).sum() * (ky * ky).sum())
    if norm <= 0 or not np.isfinite(norm):
        return 0.0
    return float(np.clip((kx * ky).sum() / norm, 0.0, 1.0))


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same locations, in [0, 1].

    `a` (h, w, d1) or (n, d1) and `b` (h, w, d2) or (n, d2): 1 when one is an orthogonal transform and
    rescaling of the other (after centring), near 0 when their location-to-location similarities are unrelated.
    A constant representation carries no structure: its CKA with anything is 0.
    """
    x, y = _rows(a, "a"), _rows(b, "b")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"a has {x.shape[0]} locations, b has {y.shape[0]}")
    return _cka_grams(_centred_gram(x), _centred_gram(y))


def resize_grid(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (h', w', d) grid read at another grid's (h, w) locations (bilinear, half-pixel centres): to compare a
    teacher's grid with an APM's of another size. The same grid when the sizes match."""
    import torch
    import torch.nn.functional as F

    g = np.asarray(grid, dtype=np.float32)
    if g.ndim != 3:
        raise InputError(f"a grid must be (h, w, d), got shape {g.shape}")
    if tuple(g.shape[:2]) == tuple(shape):
        return g
    t = torch.from_numpy(np.ascontiguousarray(g)).permute(2, 0, 1)[None]  # (1, d, h', w')
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).numpy().copy()  # (h, w, d)


def position_code(h: int, w: int, dim: int = 256) -> np.ndarray:
    """The 2D sin-cos code of every location of an h x w grid (the APM's own positional queries): (h*w, dim)."""
    from .model import sincos_2d

    return sincos_2d(h, w, dim).numpy()


def relative_spread(grid: np.ndarray) -> float:
    """How different the locations are: RMS distance of the features from their mean, over their RMS norm.

    0 for a constant grid, about 1 when the locations share no common direction; a grid whose locations differ
    by 1% of their norm reads 0.01, whatever the scale of the features."""
    x = _rows(grid, "grid")
    total = float(np.sqrt((x**2).sum(axis=1).mean()))
    if total <= 0:
        return 0.0
    return float(np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()) / total)


LIVE_LOCATIONS = 256  # a live frame's content figures read at most this many locations (an even subgrid)
MAX_ISLANDS = 12  # islands compared at most (a noisy grid's threshold count can be every location)


def island_count(grid: np.ndarray) -> int:
    """How many islands to cut a grid into for comparisons: `apm.islands.island_metrics`'s count, in [2, 12]."""
    from .islands import island_metrics

    g = np.asarray(grid, dtype=np.float32)
    n = island_metrics(g if g.ndim == 3 else g.reshape(1, *g.shape)).n_islands
    return int(min(max(n, 2), MAX_ISLANDS, _rows(g, "grid").shape[0]))


def island_labels(grid: np.ndarray, k: int) -> np.ndarray:
    """(n,) labels of `k` islands: Ward clustering of the unit-normalised features (the same cut for any grid).

    The distances come from `apm.islands.squared_distances` (one BLAS product): at 1024 locations that is a few
    ms, where scipy's own pairwise loop takes about 60."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from .islands import squared_distances

    x = _rows(grid, "grid")
    squared = squared_distances(x, "cosine")  # (n, n), |a - b|^2 between unit rows; the diagonal is skipped below
    tree = linkage(np.sqrt(squareform(squared, checks=False).astype(np.float64)), method="ward")
    return fcluster(tree, t=int(min(max(k, 2), x.shape[0])), criterion="maxclust")


def islands_agreement(a: np.ndarray, b: np.ndarray, k: int | None = None) -> float:
    """Adjusted Rand index between the islands of two grids of the same locations, in [-1, 1] (1: the same).

    Both grids are cut into `k` islands the same way (`island_labels`; `k` defaults to `island_count(b)`), so
    the figure is about which locations go together, not about how many islands a threshold finds."""
    from sklearn.metrics import adjusted_rand_score

    x, y = _rows(a, "a"), _rows(b, "b")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"a has {x.shape[0]} locations, b has {y.shape[0]}")
    k = island_count(b) if k is None else k
    return float(adjusted_rand_score(island_labels(y, k), island_labels(x, k)))


@dataclass(frozen=True)
class ContentMetrics:
    """What a grid's islands rest on, against its teacher and its positional code (None: not measurable)."""

    cka_teacher: float | None  # linear CKA to the teacher's grid: 1 when it carries the teacher's structure
    cka_position: float  # linear CKA to the location code alone: 1 when it is a linear map of where a location is
    ari_teacher: float | None  # its islands against the teacher's islands (adjusted Rand index)
    spread: float | None  # its relative spread over the teacher's: well below 1 when the locations barely differ
    locations: int | None = None  # the locations measured, when a live frame measured an even subgrid of them

    def to_dict(self) -> dict[str, float | None]:
        """{"cka_teacher", "cka_position", "ari_teacher", "spread"}: as summary.json and /run write them."""
        return {k: (None if v is None else round(float(v), 4)) for k, v in asdict(self).items() if k != "locations"}


def subgrid(grid_shape: tuple[int, int], max_locations: int | None) -> np.ndarray | None:
    """Row-major indices of an evenly strided subgrid with at most `max_locations` locations (None: all of them)."""
    h, w = grid_shape
    if max_locations is None or h * w <= max_locations:
        return None
    stride = int(np.ceil(np.sqrt(h * w / max_locations)))
    while len(range(0, h, stride)) * len(range(0, w, stride)) > max_locations:
        stride += 1
    ii, jj = np.meshgrid(np.arange(0, h, stride), np.arange(0, w, stride), indexing="ij")
    return (ii * w + jj).ravel()


class _Prepared:
    """The reference at one set of locations: the Gram matrices, the teacher's islands and spread."""

    def __init__(self, code: np.ndarray, teacher: np.ndarray | None):
        self.position = _centred_gram(code)
        self.teacher = self.labels = self.spread = self.k = None
        if teacher is not None:
            self.teacher = _centred_gram(teacher)
            self.k = island_count(teacher)
            self.labels = island_labels(teacher, self.k)
            self.spread = relative_spread(teacher)


class ContentReference:
    """What a run's frames are measured against, prepared once: the teacher's grid and the location code (their
    Gram matrices, the teacher's islands and spread), so each frame costs one Gram matrix and one clustering.

    `measure(features, max_locations=K)` measures an evenly strided subgrid of at most K locations (a live frame
    of a 32 x 32 grid: 256 of its 1024 locations, a sixteenth of the cost), said in `ContentMetrics.locations`."""

    def __init__(self, grid_shape: tuple[int, int], teacher: np.ndarray | None = None,
                 positional: np.ndarray | None = None):
        h, w = grid_shape
        self.grid_shape = (int(h), int(w))
        code = position_code(h, w) if positional is None else np.asarray(positional, dtype=np.float32)
        if code.shape[0] != h * w:
            raise InputError(f"the positional code has {code.shape[0]} rows for a {h} x {w} grid")
        self._code = _rows(code, "positional")
        self._target = None
        if teacher is not None:
            target = np.asarray(teacher, dtype=np.float32)
            if target.shape[:2] != self.grid_shape:
                raise InputError(f"the teacher's grid is {target.shape[0]} x {target.shape[1]}, the features' {h} x {w}")
            self._target = _rows(target, "teacher")
        self._prepared: dict[int | None, _Prepared] = {}
        self._lock = threading.Lock()

    def _at(self, max_locations: int | None) -> tuple[np.ndarray | None, _Prepared]:
        index = subgrid(self.grid_shape, max_locations)
        key = None if index is None else len(index)
        with self._lock:
            if key not in self._prepared:
                pick = (lambda a: a) if index is None else (lambda a: a[index])
                self._prepared[key] = _Prepared(pick(self._code), None if self._target is None else pick(self._target))
            return index, self._prepared[key]

    def measure(self, features: np.ndarray, max_locations: int | None = None) -> ContentMetrics:
        """The content figures of one (h, w, d) grid of these locations (of an even subgrid of at most
        `max_locations` of them, when given and smaller than the grid)."""
        from sklearn.metrics import adjusted_rand_score

        grid = np.asarray(features, dtype=np.float32)
        if grid.ndim != 3 or grid.shape[:2] != self.grid_shape:
            raise InputError(f"features must be a {self.grid_shape[0]} x {self.grid_shape[1]} x d grid, got {grid.shape}")
        index, ref = self._at(max_locations)
        rows = _rows(grid, "features")
        if index is not None:
            rows = rows[index]
        measured = None if index is None else len(index)
        kx = _centred_gram(rows)
        cka_position = _cka_grams(kx, ref.position)
        if ref.teacher is None:
            return ContentMetrics(None, cka_position, None, None, measured)
        return ContentMetrics(
            cka_teacher=_cka_grams(kx, ref.teacher),
            cka_position=cka_position,
            ari_teacher=float(adjusted_rand_score(ref.labels, island_labels(rows, ref.k))),
            spread=relative_spread(rows) / ref.spread if ref.spread else None,
            locations=measured,
        )


def content_metrics(features: np.ndarray, teacher: np.ndarray | None = None,
                    positional: np.ndarray | None = None) -> ContentMetrics:
    """The content figures of an (h, w, d) grid: against the teacher's (h, w, d_t) grid when given, and against
    a positional code (h*w, p) (default: the 2D sin-cos code of the grid). For many frames of one run, build a
    `ContentReference` once and `measure` each."""
    grid = np.asarray(features, dtype=np.float32)
    if grid.ndim != 3:
        raise InputError(f"features must be an (h, w, d) grid, got shape {grid.shape}")
    return ContentReference(grid.shape[:2], teacher, positional).measure(grid)


# what the figures mean, in one sentence

FOLLOWS_TEACHER = 0.8  # CKA to the teacher from which the islands are said to follow it
NEARLY_CONSTANT = 0.1  # relative spread (over the teacher's) under which the features are said to be nearly constant


def content_sentence(m: ContentMetrics) -> str:
    """One plain sentence saying what the islands rest on, from the figures (each sentence names its figure)."""
    if m.spread is not None and m.spread < NEARLY_CONSTANT:
        return (f"the features are nearly constant (spread {m.spread:.2f} of the teacher's): the view magnifies tiny "
                "differences, so these islands are not the image's parts")
    if m.cka_teacher is None:
        if m.cka_position >= FOLLOWS_TEACHER:
            return f"mostly the positional code (CKA {m.cka_position:.2f} to the location code alone)"
        return f"no teacher to compare with (CKA {m.cka_position:.2f} to the location code alone)"
    if m.cka_teacher >= FOLLOWS_TEACHER and m.cka_teacher >= m.cka_position:
        return f"the islands follow the teacher (CKA {m.cka_teacher:.2f})"
    if m.cka_position > m.cka_teacher:
        return (f"mostly the positional code: CKA {m.cka_position:.2f} to the location code alone, "
                f"{m.cka_teacher:.2f} to the teacher")
    return f"the islands follow the teacher only in part (CKA {m.cka_teacher:.2f})"


def measure_against(features: np.ndarray, teacher_grid: np.ndarray | None, positional: np.ndarray | None):
    """The content figures of a grid against a teacher's grid (read at the grid's locations), or None."""
    if teacher_grid is None or np.asarray(teacher_grid).ndim != 3:
        return None
    shape = features.shape[:2]
    return ContentReference(shape, resize_grid(teacher_grid, shape), positional).measure(features)


def content_line(m: ContentMetrics | None) -> str:
    """The `content:` line the CLI prints: the four figures, then the one sentence."""
    if m is None:
        return "content: no teacher grid to compare with"
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"content: CKA to teacher {fmt(m.cka_teacher)}, CKA to position {fmt(m.cka_position)}, islands ARI "
            f"{fmt(m.ari_teacher)}, spread {fmt(m.spread)}: {content_sentence(m)}")
