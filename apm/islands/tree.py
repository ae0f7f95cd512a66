"""The part-whole tree: a grid's islands at coarse-to-fine levels of detail, each inside the island that holds it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .common import _check_grid, _is_constant, _normalise, one_blas_thread
from .metrics import _canonical


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
