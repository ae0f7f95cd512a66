"""The one timer of the benchmarks: the median wall-clock time of a call over repeats, after untimed warm-ups
(allocators, caches, oneDNN's kernel choice). Medians keep figures steady on a shared machine, not immune."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_ms(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """The same, in milliseconds."""
    return 1e3 * median_seconds(fn, repeats, warmup)
