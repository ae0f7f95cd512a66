"""Asynchronous perception: decode any locations of an APM's grid, in any order, in chunks of any size.

Every location is decoded from its own query (the trigger column plus that location's code), so the order and the
chunking cannot change what a location decodes to; only rounding can, and `order_difference` measures how much.

    decoder = Decoder.from_image(apm, image)                   # the trigger column, computed once
    for part in decoder.stream(decode_order(apm.config.grid, "random"), chunk=16):
        draw(part.locations, part.features, part.rgb)          # each chunk as it is decoded
    partial = decoder.fill(rectangle((2, 3), (5, 8)))          # only those locations; the rest stay empty
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .model import APM, grid_locations

ORDERS = ("row", "random")  # row by row (row-major), or a seeded random permutation of the grid


def decode_order(grid: tuple[int, int], order: str = "random", seed: int = 0) -> np.ndarray:
    """Every (i, j) of an h x w grid in the given order: (h * w, 2) int64."""
    if order not in ORDERS:
        raise InputError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    locations = grid_locations(*grid).numpy()
    if order == "random":
        locations = locations[np.random.default_rng(seed).permutation(len(locations))]
    return locations


def rectangle(corner_a: tuple[int, int], corner_b: tuple[int, int]) -> np.ndarray:
    """The locations of the rectangle with these opposite corners (both included), row-major: (n, 2) int64."""
    (i0, j0), (i1, j1) = corner_a, corner_b
    ii, jj = np.mgrid[min(i0, i1) : max(i0, i1) + 1, min(j0, j1) : max(j0, j1) + 1]
    return np.stack([ii.ravel(), jj.ravel()], axis=1).astype(np.int64)


def check_chunk(chunk: int | None, n: int) -> int:
    """A chunk size of 1 to n locations (None: all n at once)."""
    if chunk is None:
        return max(1, n)
    chunk = int(chunk)
    if chunk < 1:
        raise InputError(f"the chunk must be at least 1 location, not {chunk}")
    return min(chunk, max(1, n))


@dataclass(frozen=True)
class Chunk:
    """One decoded chunk: its locations and what they decode to, in the teacher's units."""

    locations: np.ndarray  # (k, 2) int64 (i, j)
    features: np.ndarray  # (k, d) float32
    rgb: np.ndarray  # (k, 3) float32 in [0, 1]
    seconds: float  # the decoding's own time for this chunk


@dataclass(frozen=True)
class Partial:
    """A grid decoded at some locations: the rest are empty (NaN features, not in `mask`)."""

    features: np.ndarray  # (h, w, d) float32, NaN where not decoded
    rgb: np.ndarray  # (h, w, 3) float32, NaN where not decoded
    mask: np.ndarray  # (h, w) bool: decoded
    chunks: int  # how many chunks it took
    seconds: float  # the decoding's own time, all chunks

    def add(self, parts: Iterable[Chunk]) -> Partial:
        """This grid with more decoded chunks in it: a new object (a grid once shown never changes)."""
        features, rgb, mask = self.features.copy(), self.rgb.copy(), self.mask.copy()
        chunks, seconds = self.chunks, self.seconds
        for part in parts:
            i, j = part.locations[:, 0], part.locations[:, 1]
            features[i, j], rgb[i, j], mask[i, j] = part.features, part.rgb, True
            chunks, seconds = chunks + 1, seconds + part.seconds
        return Partial(features, rgb, mask, chunks, seconds)


@dataclass(frozen=True)
class Decoder:
    """One image's unfolded APM, ready to decode: the folded parameters and the image's trigger column."""

    apm: APM
    column: torch.Tensor  # (1, column_dim) float32
    scale: float = 1.0  # the APM's outputs times this are in the teacher's units

    @classmethod
    def from_image(cls, apm: APM, image: Image.Image, scale: float | None = None) -> Decoder:
        """The trigger column of a PIL image (resized to the APM's input); scale: the checkpoint's own by default."""
        from .images import image_to_tensor

        device = next(apm.parameters()).device
        x = image_to_tensor(image, apm.config.image_size)[None].to(device)  # (1, 3, H, W)
        return cls.from_pixels(apm, x, scale)

    @classmethod
    def from_pixels(cls, apm: APM, pixels: torch.Tensor, scale: float | None = None) -> Decoder:
        """pixels: (1, 3, H, W) in [0, 1] at the APM's input size."""
        if scale is None:
            scale = float(apm.meta.get("feature_scale", 1.0))
        with torch.no_grad():
            column = apm.trigger_column(pixels.float()).float()  # (1, column_dim)
        return cls(apm, column, float(scale))

    @property
    def grid(self) -> tuple[int, int]:
        return self.apm.config.grid

    def _locations(self, locations: np.ndarray | Sequence | None) -> torch.Tensor:
        if locations is None:
            return grid_locations(*self.grid)
        array = np.asarray(locations, dtype=np.int64)
        if array.ndim != 2 or array.shape[1] != 2:
            raise InputError(f"locations must be (n, 2) (i, j) pairs, got shape {array.shape}")
        h, w = self.grid
        if len(array) and ((array.min(axis=0) < 0).any() or (array.max(axis=0) >= (h, w)).any()):
            raise InputError(f"locations outside the {h} x {w} grid")
        return torch.from_numpy(array)

    def stream(self, locations: np.ndarray | Sequence | None = None, chunk: int | None = None) -> Iterator[Chunk]:
        """Decode `locations` ((n, 2); None: the grid, row-major) in that order, `chunk` at a time, in fp32."""
        where = self._locations(locations)
        step = check_chunk(chunk, len(where))
        device = self.column.device
        chunks = self.apm.decode_chunks(self.column, where.to(device), step)
        while True:
            start = time.perf_counter()
            try:
                part, features, rgb = next(chunks)
            except StopIteration:
                return
            features = features[0].float().cpu().numpy() * self.scale  # (k, d)
            rgb = rgb[0].float().cpu().numpy()  # (k, 3)
            yield Chunk(part.cpu().numpy(), features, rgb, time.perf_counter() - start)

    def fill(self, locations: np.ndarray | Sequence | None = None, chunk: int | None = None,
             into: Partial | None = None) -> Partial:
        """The grid with `locations` decoded (added to `into`'s, when given)."""
        return (into or self.empty()).add(self.stream(locations, chunk))

    def empty(self) -> Partial:
        h, w = self.grid
        d = self.apm.config.feature_dim
        return Partial(np.full((h, w, d), np.nan, np.float32), np.full((h, w, 3), np.nan, np.float32),
                       np.zeros((h, w), bool), 0, 0.0)

    def full(self) -> tuple[np.ndarray, np.ndarray]:
        """One pass over the whole grid: features (h, w, d) in the teacher's units and colours (h, w, 3)."""
        h, w = self.grid
        with torch.no_grad():
            features, rgb = self.apm.query(self.column)  # (1, h*w, d), (1, h*w, 3)
        return (features[0].float().cpu().numpy().reshape(h, w, -1) * self.scale,
                rgb[0].float().cpu().numpy().reshape(h, w, 3))


def largest_difference(partial: Partial, full: np.ndarray, scale: float = 1.0) -> float:
    """max |decoded - one full pass| over the decoded locations, in the APM's own units (its outputs / scale)."""
    if not partial.mask.any():
        return 0.0
    return float(np.abs(partial.features[partial.mask] - full[partial.mask]).max() / (scale or 1.0))


def order_difference(decoder: Decoder, orders: Sequence[str] = ORDERS, chunks: Sequence[int | None] = (1, 7, 64, None),
                     seed: int = 0) -> float:
    """The largest difference, in the APM's own units, between one full pass and every (order, chunk) decoding."""
    full, _ = decoder.full()
    worst = 0.0
    for order in orders:
        for chunk in chunks:
            partial = decoder.fill(decode_order(decoder.grid, order, seed), chunk)
            worst = max(worst, largest_difference(partial, full, decoder.scale))
    return worst


def decode_everywhere(apm: APM, image: Image.Image, order: str, chunk: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every location decoded in `order`, `chunk` at a time: the grid, its colours and what the decoding took."""
    decoder = Decoder.from_image(apm, image)
    locations = decode_order(decoder.grid, order, seed)
    size = check_chunk(chunk, len(locations))
    partial = decoder.fill(locations, size)
    full, _ = decoder.full()
    record = {"order": order, "chunk": size, "seed": seed if order == "random" else None,
              "locations": int(partial.mask.sum()), "chunks": partial.chunks, "seconds": partial.seconds,
              "max_diff": largest_difference(partial, full, decoder.scale)}
    return partial.features, partial.rgb, record
