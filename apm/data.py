"""Image folders and the teacher-feature cache that dataset training reads from.

`apm fit` runs the teacher once per image, ever. `FeatureCache` stores, per image, the teacher's grid at one
layer (float16), the image at the APM's input size (uint8) and its colours at grid resolution (float16), in
memory-mapped shards:

    <cache root>/fit/<teacher>-L<layer>-<hash of the key>/
        index.json               key, shards, and content hash -> (shard, row)
        shard-00000/features.npy (n, h, w, d) float16
                    images.npy   (n, H, W, 3) uint8
                    rgb.npy      (n, h, w, 3) float16

The key is the teacher id, its layer, whether it is untrained, and the teacher's and the APM's input sizes, so
changing any of them uses another folder; an image is found by the hash of its file's bytes, so renaming or
moving files costs nothing and a changed file is a miss. A shard is written to a temporary folder and renamed,
and the index is rewritten atomically after it, so an interrupted build keeps every finished shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .env import cache_root
from .errors import InputError
from .io import save_json

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SHARD_ROWS = 256  # images per shard


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted; an `InputError` if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths


def file_hash(path: Path) -> str:
    """The hash of a file's bytes: how the cache finds an image."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CacheKey:
    """What a cached feature depends on, besides the image."""

    teacher: str  # teacher id, name:model_id
    layer: int
    random_weights: bool
    teacher_size: int  # the teacher's input side, px
    image_size: tuple[int, int]  # the APM's input (H, W), px
    grid: tuple[int, int]  # the teacher's grid (h, w) = the APM's

    def folder_name(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.teacher.split(":")[0])
        return f"{name}-L{self.layer}-{digest}"


@dataclass
class BuildReport:
    """What building the cache did."""

    hashes: list[str] = field(default_factory=list)  # one per usable image, in the order of the paths
    paths: list[Path] = field(default_factory=list)  # the usable images
    hits: int = 0  # found in the cache
    computed: int = 0  # teacher run now
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images and why


class FeatureCache:
    """Teacher features, input images and colour targets of many images, on disk, memory-mapped."""

    def __init__(self, key: CacheKey, root: str | Path | None = None):
        self.key = key
        self.folder = Path(root or cache_root() / "fit") / key.folder_name()
        self._index = self._read_index()
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    # the index

    def _read_index(self) -> dict:
        path = self.folder / "index.json"
        if path.is_file():
            try:
                index = json.loads(path.read_text())
                if index.get("key") == json.loads(json.dumps(asdict(self.key))):
                    return index
                log.warning("feature cache %s has another key: rebuilding it", self.folder)
            except (OSError, ValueError):
                log.warning("feature cache index %s is unreadable: rebuilding it", path)
            shutil.rmtree(self.folder, ignore_errors=True)
        return {"key": asdict(self.key), "shards": [], "entries": {}}

    def _write_index(self) -> None:
        save_json(self.folder / "index.json", self._index)

    def __contains__(self, content_hash: str) -> bool:
        return content_hash in self._index["entries"]

    def __len__(self) -> int:
        return len(self._index["entries"])

    def location(self, content_hash: str) -> tuple[int, int]:
        shard, row = self._index["entries"][content_hash]
        return int(shard), int(row)

    # building

    def build(
        self,
        paths: Sequence[Path],
        encode: Callable[[object], np.ndarray],
        load: Callable[[Path], object] | None = None,
        shard_rows: int = SHARD_ROWS,
        progress: Callable[[int], None] | None = None,
    ) -> BuildReport:
        """Make sure every readable image in `paths` is cached.

        `encode(pil_image) -> (h, w, d)` runs the teacher (only for images not cached yet); `load(path)` decodes
        an image or raises `InputError` (default `apm.images.load_image`). An unreadable image is skipped with
        a warning and counted in the report, never the whole build.
        """
        from .images import downsample_rgb, image_to_tensor, load_image

        load = load or load_image
        report = BuildReport()
        pending: dict[str, list[np.ndarray]] = {"features": [], "images": [], "rgb": []}
        pending_hashes: list[str] = []
        h, w = self.key.grid
        for path in paths:
            path = Path(path)
            try:
                digest = file_hash(path)
            except OSError as exc:
                report.skipped.append((path, f"cannot read it ({exc.strerror or exc})"))
                continue
            if digest in self or digest in pending_hashes:
                report.hits += digest in self
                report.hashes.append(digest)
                report.paths.append(path)
                if progress:
                    progress(1)
                continue
            try:
                image = load(path)
                grid = np.asarray(encode(image), dtype=np.float32)
            except InputError as exc:
                report.skipped.append((path, str(exc)))
                continue
            if grid.shape[:2] != (h, w) or not np.isfinite(grid).all():
                report.skipped.append((path, f"the teacher gave a {grid.shape} grid (expected {h} x {w}) or NaN"))
                continue
            pixels = image_to_tensor(image, self.key.image_size).permute(1, 2, 0).numpy()  # (H, W, 3) in [0, 1]
            pending["features"].append(grid.astype(np.float16))
            pending["images"].append(np.round(pixels * 255).astype(np.uint8))
            pending["rgb"].append(downsample_rgb(image, h, w).astype(np.float16))
            pending_hashes.append(digest)
            report.hashes.append(digest)
            report.paths.append(path)
            report.computed += 1
            if progress:
                progress(1)
            if len(pending_hashes) >= shard_rows:
                self._write_shard(pending, pending_hashes)
        if pending_hashes:
            self._write_shard(pending, pending_hashes)
        for path, why in report.skipped:
            log.warning("skipped %s: %s", path, why)
        return report

    def _write_shard(self, pending: dict[str, list[np.ndarray]], hashes: list[str]) -> None:
        number = len(self._index["shards"])
        name = f"shard-{number:05d}"
        tmp = self.folder / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for key, rows in pending.items():
            array = np.lib.format.open_memmap(tmp / f"{key}.npy", mode="w+", dtype=rows[0].dtype,
                                              shape=(len(rows), *rows[0].shape))
            for i, row in enumerate(rows):
                array[i] = row
            array.flush()
            del array
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        self._index["shards"].append({"name": name, "rows": len(hashes)})
        for row, digest in enumerate(hashes):
            self._index["entries"][digest] = [number, row]
        self._write_index()
        for rows in pending.values():
            rows.clear()
        hashes.clear()

    # reading

    def arrays(self, shard: int) -> dict[str, np.ndarray]:
        """A shard's arrays, memory-mapped read-only (opened once per process)."""
        if shard not in self._arrays:
            folder = self.folder / self._index["shards"][shard]["name"]
            self._arrays[shard] = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ("features", "images", "rgb")}
        return self._arrays[shard]

    def row(self, content_hash: str) -> dict[str, np.ndarray]:
        shard, row = self.location(content_hash)
        return {k: v[row] for k, v in self.arrays(shard).items()}

    def feature_rms(self, hashes: Sequence[str], limit: int = 256) -> float:
        """The root mean square of the cached features of (up to `limit` of) these images: the target scale."""
        total, count = 0.0, 0
        for digest in list(hashes)[:limit]:
            f = self.row(digest)["features"].astype(np.float32)
            total += float(np.square(f).sum())
            count += f.size
        return float(np.sqrt(total / max(count, 1))) or 1.0

    def __getstate__(self) -> dict:  # DataLoader workers: reopen the memory maps in each process
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


class CachedImages(torch.utils.data.Dataset):
    """(image (3, H, W) uint8, features (h, w, d) float16, rgb (h, w, 3) float16) of cached images."""

    def __init__(self, cache: FeatureCache, hashes: Sequence[str]):
        missing = [h for h in hashes if h not in cache]
        if missing:
            raise InputError(f"{len(missing)} images are not in the feature cache {cache.folder}")
        self.cache = cache
        self.hashes = list(hashes)

    def __len__(self) -> int:
        return len(self.hashes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = self.cache.row(self.hashes[i])
        image = torch.from_numpy(np.array(row["images"])).permute(2, 0, 1)  # (3, H, W) uint8
        return image, torch.from_numpy(np.array(row["features"])), torch.from_numpy(np.array(row["rgb"]))


def split(hashes: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded (train, validation) split of unique hashes; at least one of each when there are two or more."""
    unique = sorted(set(hashes))
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = int(round(val_fraction * len(unique)))
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    val = sorted(unique[i] for i in order[:n_val])
    train = sorted(unique[i] for i in order[n_val:])
    return train, val
