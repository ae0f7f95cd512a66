"""Cache of teacher outputs, keyed by (image content hash, teacher, layer, config).

Two tiers: an in-memory LRU bounded in bytes (per process) and, unless disabled, `.npz` files on disk so that
re-running the CLI on the same image does not recompute the teacher. The disk folder is
`apm.env.cache_root() / "teachers"`; `APM_TEACHER_DISK_CACHE=0` turns the disk tier off. Disk files are read
with `allow_pickle=False` and any unreadable file is ignored (the output is recomputed and rewritten).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..env import cache_root, teacher_disk_cache_enabled
from ..io import write_atomic

logger = logging.getLogger(__name__)


@dataclass
class OutputCacheConfig:
    """Sizes and switches of the teacher-output cache."""

    memory_bytes: int = 256 * 2**20  # outputs kept in memory per process (least recently used dropped first)
    disk: bool = True  # also keep outputs on disk (overridden off by APM_TEACHER_DISK_CACHE=0)


Pair = tuple[np.ndarray, np.ndarray]  # (grid (h, w, d), global vector (d_g,))


class OutputCache:
    """Thread-safe two-tier store of (grid, global_vector) pairs. `get` returns copies."""

    def __init__(self, config: OutputCacheConfig | None = None):
        self.config = config or OutputCacheConfig()
        self._memory: OrderedDict[str, Pair] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # served from memory or disk
        self.misses = 0  # not found: the caller runs the network

    def _disk(self) -> bool:
        return self.config.disk and teacher_disk_cache_enabled()

    @staticmethod
    def _path(key: str) -> Path:
        return cache_root() / "teachers" / f"{key}.npz"

    def get(self, key: str) -> Pair | None:
        """(grid, global_vector) copies for `key`, or None."""
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return found[0].copy(), found[1].copy()
        found = self._read_disk(key) if self._disk() else None
        with self._lock:
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            self._remember(key, found)
        return found[0].copy(), found[1].copy()

    def put(self, key: str, grid: np.ndarray, global_vector: np.ndarray) -> None:
        """Store copies of the arrays under `key` (memory, and disk when enabled)."""
        pair = (np.array(grid, dtype=np.float32, copy=True), np.array(global_vector, dtype=np.float32, copy=True))
        with self._lock:
            self._remember(key, pair)
        if self._disk():
            self._write_disk(key, pair)

    def clear(self, disk: bool = False) -> None:
        """Forget the in-memory entries (and, with disk=True, delete this cache's files)."""
        with self._lock:
            self._memory.clear()
            self._bytes = 0
            self.hits = self.misses = 0
        if disk:
            folder = cache_root() / "teachers"
            for path in folder.glob("*.npz") if folder.is_dir() else []:
                path.unlink(missing_ok=True)

    def _remember(self, key: str, pair: Pair) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._bytes -= old[0].nbytes + old[1].nbytes
        self._memory[key] = pair
        self._bytes += pair[0].nbytes + pair[1].nbytes
        while self._bytes > max(0, self.config.memory_bytes) and len(self._memory) > 1:
            _, (grid, glob) = self._memory.popitem(last=False)
            self._bytes -= grid.nbytes + glob.nbytes

    def _read_disk(self, key: str) -> Pair | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                grid = np.asarray(data["grid"], dtype=np.float32)
                glob = np.asarray(data["global_vector"], dtype=np.float32)
            if grid.ndim != 3 or glob.ndim != 1:
                raise ValueError(f"bad shapes {grid.shape}, {glob.shape}")
            return grid, glob
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is simply recomputed
            logger.warning("ignoring unreadable teacher cache file %s (%s)", path, exc)
            return None

    def _write_disk(self, key: str, pair: Pair) -> None:
        try:
            write_atomic(self._path(key), lambda tmp: np.savez(tmp, grid=pair[0], global_vector=pair[1]))
        except OSError as exc:
            logger.warning("could not write teacher cache file %s (%s)", self._path(key), exc)


OUTPUT_CACHE = OutputCache()  # the process-wide teacher-output cache
