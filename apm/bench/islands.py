"""Timings of the islands views: `python -m apm.bench --only islands` prints one `name value` line per figure. Every figure is the median over several repeats, in milliseconds, on
synthetic grids shaped like a ViT teacher's (d = 384, a shared "whole" direction plus a few spatially coherent
parts plus noise). A warm update is one `project` of a slightly changed grid with the previous frame given.
Other processes on the machine may compete for its cores; medians keep the figures steady, not immune.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..content import LIVE_LOCATIONS
from ..islands import (
    LIVE_WARM_ITERS,
    IslandConfig,
    ProjectionConfig,
    island_metrics,
    pca_colours,
    project,
    squared_distances,
)
from .synthetic import synthetic_grid
from .timing import median_ms

log = logging.getLogger(__name__)

REPEATS = 9  # timed repeats per figure (median reported)
FULL_REPEATS = 5  # repeats of the slower full fits


def _median_ms(fn: Callable[[int], object], repeats: int) -> float:
    """Median wall time (ms) of fn(i) over repeats, each call with the next i, after one untimed warm-up call."""
    calls = iter(range(-1, repeats))
    return median_ms(lambda: fn(next(calls)), repeats, warmup=1)


def _warm_ms(side: int, dim: int, repeats: int) -> float:
    """One warm-started t-SNE update of a slightly changed grid."""
    config = ProjectionConfig(method="tsne", dim=dim)
    grid = synthetic_grid(side)
    previous = project(grid, config)
    rng = np.random.default_rng(1)
    changed = [grid + 0.05 * rng.normal(size=grid.shape).astype(np.float32) for _ in range(repeats + 1)]
    return _median_ms(lambda i: project(changed[i], config, previous=previous), repeats)


def islands_figures(repeats: int = REPEATS) -> dict[str, float]:
    """Medians (ms) of warm t-SNE updates (256 and 1024 points, 2D and 3D), a full fit, PCA and metrics."""
    figures: dict[str, float] = {}
    for side, n in ((16, 256), (32, 1024)):
        figures[f"tsne_warm_ms_{n}"] = _warm_ms(side, 2, repeats)
        figures[f"tsne_warm_ms_{n}_3d"] = _warm_ms(side, 3, repeats)
    grid_256 = synthetic_grid(16)
    figures["tsne_full_ms_256"] = _median_ms(lambda i: project(grid_256, ProjectionConfig()), FULL_REPEATS)
    grid_1024 = synthetic_grid(32)
    pca = ProjectionConfig(method="pca", dim=3)
    figures["pca_ms_1024"] = _median_ms(lambda i: project(grid_1024, pca), repeats)
    figures["pca_colours_ms_1024"] = _median_ms(lambda i: pca_colours(grid_1024), repeats)
    config = IslandConfig()
    figures["metrics_ms_256"] = _median_ms(lambda i: island_metrics(grid_256, grid_256, config), repeats)
    figures["metrics_ms_1024"] = _median_ms(lambda i: island_metrics(grid_1024, grid_1024, config), repeats)
    # the content figures of one live frame (apm.content): what a run's ContentReference.measure costs per frame
    from ..content import ContentReference, position_code

    for side, grid in ((16, grid_256), (32, grid_1024)):
        teacher = np.ascontiguousarray(grid[..., ::-1])  # another grid of the same locations
        reference = ContentReference((side, side), teacher, position_code(side, side))
        figures[f"content_ms_{side * side}"] = _median_ms(lambda i, g=grid, r=reference: r.measure(g), repeats)
        figures[f"content_live_ms_{side * side}"] = _median_ms(
            lambda i, g=grid, r=reference: r.measure(g, LIVE_LOCATIONS), repeats)
        figures[f"live_frame_ms_{side * side}"] = _live_frame_ms(side, repeats)
    return figures


def _live_frame_ms(side: int, repeats: int) -> float:
    """One live frame as the app makes it (`app.engine.make_frame`, then the page's pictures): the locations' distances
    (once), a warm t-SNE update of LIVE_WARM_ITERS steps aligned to the teacher's islands, the island metrics against the teacher, the content
    figures on at most LIVE_LOCATIONS locations, and the islands and colour pictures enlarged and PNG-encoded."""
    import io
    from dataclasses import replace

    from PIL import Image

    from ..content import ContentReference

    config = replace(ProjectionConfig(), warm_iters=LIVE_WARM_ITERS)
    teacher = synthetic_grid(side, seed=3)
    aligned_to = project(teacher, ProjectionConfig())
    previous = project(synthetic_grid(side), ProjectionConfig())
    reference = ContentReference((side, side), teacher)
    rng = np.random.default_rng(2)
    frames = [synthetic_grid(side) + 0.05 * rng.normal(size=teacher.shape).astype(np.float32)
              for _ in range(repeats + 1)]
    k = max(1, 256 // side)

    def frame(i: int) -> None:
        grid = frames[i]
        distances = squared_distances(grid)
        projection = project(grid, config, previous, align_to=aligned_to, distances=distances)
        island_metrics(grid, teacher, distances=distances)
        reference.measure(grid, LIVE_LOCATIONS)
        for picture in (projection.image, projection.image[::-1]):  # the islands and the colours, 256 px each
            big = np.repeat(np.repeat((np.asarray(picture) * 255).astype(np.uint8), k, axis=0), k, axis=1)
            Image.fromarray(big).save(io.BytesIO(), format="PNG")

    return _median_ms(frame, repeats)
