"""Island metrics: how many islands a grid holds (clusters at a cosine threshold, cut into spatially connected
pieces), how well neighbours agree, fidelity to a teacher, the whole-to-part curve, and agreement maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

from ..errors import InputError
from .common import _check_distances, _check_grid, _is_constant, _normalise, _readonly, one_blas_thread, squared_distances


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


