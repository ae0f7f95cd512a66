"""How fast the page's part-whole instruments answer: `name value` lines.

    python -m scripts.measure_levels

- levels_strip_s_dinov2 / levels_strip_s_mvit: from a chosen image to the strip of every layer's islands
  (one forward pass of an untrained teacher, PCA colours each), the teacher already built (as after the first
  image) and the first time (`_cold`, the network built too); `levels_strip_s_dinov2_g32`: the same at the
  32 x 32 grid (448 px);
- point_ms: a click on a grid image to both agreement maps, the marked grid images and the column plot;
- trained_one_pass_s_cold / trained_one_pass_s: the shipped checkpoint's islands of an example image (load, one
  forward pass, the teacher's grid for fidelity, t-SNE), the first time and for a second image.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    import os

    os.environ.setdefault("APM_RANDOM_WEIGHTS", "1")
    os.environ.setdefault("APM_TEACHER_DISK_CACHE", "0")
    from apm.teachers.base import clear_model_cache
    from app.testing.harness import Req, example, file_payload, islands, run_islands

    tab = islands()
    request = Req("measure-levels")
    levels = tab.panel("levels")
    for teacher, grid, name in (("dinov2", "auto", "dinov2"), ("dinov2", "32", "dinov2_g32"), ("mvit", "auto", "mvit")):
        clear_model_cache()
        start = time.perf_counter()
        levels.on_levels(file_payload(example("house")), teacher, True, grid, request=request)
        print(f"levels_strip_s_{name}_cold {time.perf_counter() - start:.2f}")
        start = time.perf_counter()
        out = levels.on_levels(file_payload(example("face")), teacher, True, grid, request=request)  # a new image
        assert out[levels.gallery]
        print(f"levels_strip_s_{name} {time.perf_counter() - start:.2f}")

    run_islands(request, example("face"), steps=20)

    class Select:
        def __init__(self, index):
            self.index = index

    shown = np.zeros((128, 128, 3), np.uint8)
    times = []
    for k in range(20):
        start = time.perf_counter()
        tab.panel("pointing").on_point(shown, Select([(7 * k) % 128, (11 * k) % 128]), request=request)
        times.append(time.perf_counter() - start)
    print(f"point_ms {1000 * float(np.median(times)):.1f}")

    clear_model_cache()
    for name, stem in (("trained_one_pass_s_cold", "face"), ("trained_one_pass_s", "house")):
        start = time.perf_counter()
        tab.on_trained(file_payload(example(stem)), "dinov2-s-l11-imgfocus", "tsne2d", True, request=request)
        print(f"{name} {time.perf_counter() - start:.2f}")


if __name__ == "__main__":
    main()
