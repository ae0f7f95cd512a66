"""Islands of agreement: live projections of a feature grid, colours that stay put, and island metrics.

Everything here is a pure function of numpy arrays. A feature grid is (h, w, d): one d-dimensional vector per
location. Location (i, j) is row `i * w + j` of every flattened (n, .) array, n = h * w. One module a concern:

- `projection`: `project` embeds the grid with t-SNE (openTSNE, Barnes-Hut) or PCA, in 1, 2 or 3 dimensions,
  and colours each location from its embedding. Given the previous frame's `Projection` it warm-starts t-SNE
  from the previous embedding and aligns the new embedding to the old one (orthogonal Procrustes), so an island
  keeps its colour while it grows or splits. Named views: `projection_config`, `PROJECTIONS`.
- `colours`: aligned and min-max colours of an embedding; `pca_colours`, the quick DINO-style view.
- `metrics`: `island_metrics` counts islands (agglomerative clustering on unit-normalised features at a
  cosine-distance threshold, and the spatially connected pieces of those clusters), measures neighbour agreement
  and, given the teacher's grid, per-location fidelity; `whole_to_part`; `agreement_map`, `column_agreement`.
- `tree`: `part_whole_tree`, the islands at coarse-to-fine levels of detail.
- `common`: grid checks and `squared_distances`, the one (n, n) product a live frame shares.
"""

from __future__ import annotations

from ..threads import one_blas_thread
from .colours import align_embedding, embedding_to_colours, minmax_colours, pca_colours
from .common import squared_distances
from .metrics import IslandConfig, IslandMetrics, WholeToPart, agreement_map, column_agreement, island_metrics, whole_to_part
from .projection import (
    COLOURINGS,
    FFT_MIN_POINTS_2D,
    GRADIENTS,
    INITS,
    LIVE_WARM_ITERS,
    METHODS,
    METRICS,
    MIN_TSNE_POINTS,
    PERPLEXITY_NOTE,
    PERPLEXITY_RANGE,
    PROJECTION_LABELS,
    PROJECTIONS,
    Projection,
    ProjectionConfig,
    _knn,
    conditional_affinities,
    joint_affinities,
    project,
    projection_config,
)
from .tree import PartWholeTree, TreeNode, part_whole_tree

__all__ = [
    "COLOURINGS", "FFT_MIN_POINTS_2D", "GRADIENTS", "INITS", "LIVE_WARM_ITERS", "METHODS", "METRICS", "MIN_TSNE_POINTS",
    "PERPLEXITY_NOTE", "PERPLEXITY_RANGE", "PROJECTIONS", "PROJECTION_LABELS", "IslandConfig", "IslandMetrics",
    "PartWholeTree", "Projection", "ProjectionConfig", "TreeNode", "WholeToPart", "_knn", "agreement_map",
    "align_embedding", "column_agreement", "conditional_affinities", "embedding_to_colours", "island_metrics",
    "joint_affinities", "minmax_colours", "one_blas_thread", "part_whole_tree", "pca_colours", "project",
    "projection_config", "squared_distances", "whole_to_part",
]
