"""Benchmarks, in one place: `python -m apm.bench` prints this machine's speed figures (`sections`: training,
quality, islands, experiments, teachers, asynchronous), with the CPU's kind first. One timer (`timing`) and one
synthetic-data generator (`synthetic`) serve every section, the islands figures (`islands`) and the measuring
scripts; `corpus` writes the broken-input corpus the reliability tests and `scripts.load_test --broken` use.
"""

from __future__ import annotations

from .synthetic import labels_at, make_scene, synthetic_grid, synthetic_image, synthetic_target
from .timing import median_ms, median_seconds

__all__ = ["labels_at", "make_scene", "median_ms", "median_seconds", "synthetic_grid", "synthetic_image",
           "synthetic_target"]
