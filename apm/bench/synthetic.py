"""The one synthetic-data generator of the benchmarks (and of tests about speed and plumbing): noise images and
targets, feature grids made of a whole and a few parts, and scenes with known wholes and parts.

- `synthetic_image(size, seed)`: an RGB noise picture; `synthetic_target(h, w, d, seed)`: an (h, w, d) noise grid;
- `synthetic_grid(side, d, n_parts, seed)`: a grid shaped like a ViT teacher's: a shared whole direction, Voronoi
  parts and noise;
- `make_scene(rng, size)`: a textured background with two or three objects (the wholes: discs, boxes,
  triangles), each of its own hue and made of two to four parts (stripes); `labels_at` reads its label maps at
  grid resolution (the most common label of each patch) for scoring islands against them.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

FEATURE_DIM = 384  # ViT-S width, as DINO's
N_PARTS = 8  # parts in a synthetic grid


def synthetic_image(size: int = 256, seed: int = 0) -> Image.Image:
    """A (size, size) RGB picture of uniform noise."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def synthetic_target(h: int, w: int, d: int, seed: int = 0) -> np.ndarray:
    """An (h, w, d) float32 grid of standard normal noise."""
    return np.random.default_rng(seed).normal(size=(h, w, d)).astype(np.float32)


def synthetic_grid(side: int, d: int = FEATURE_DIM, n_parts: int = N_PARTS, seed: int = 0) -> np.ndarray:
    """An (side, side, d) float32 grid: a shared whole plus Voronoi-shaped parts plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, side, (n_parts, 2))  # (p, 2)
    ii, jj = np.mgrid[:side, :side]
    dist = (ii[..., None] - centres[:, 0]) ** 2 + (jj[..., None] - centres[:, 1]) ** 2  # (side, side, p)
    part = np.argmin(dist, axis=-1)  # (side, side)
    whole = rng.normal(size=d)  # (d,)
    parts = rng.normal(size=(n_parts, d))  # (p, d)
    grid = whole + parts[part] + 0.3 * rng.normal(size=(side, side, d))
    return grid.astype(np.float32)


SHAPES = ("disc", "box", "triangle")


def _mask(size: int, shape: str, box: tuple[int, int, int, int]) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = box
    if shape == "disc":
        draw.ellipse(box, fill=255)
    elif shape == "box":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=255)
    return np.asarray(canvas) > 0


def make_scene(rng: np.random.Generator, size: int = 224) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """One scene: (RGB image, wholes (size, size) uint8, parts (size, size) uint8)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    grey = 0.45 + 0.1 * np.sin(2 * np.pi * (xx * rng.uniform(1, 3) + yy * rng.uniform(1, 3)))
    image = np.repeat(grey[..., None], 3, axis=2) + rng.normal(0, 0.02, (size, size, 3))
    wholes = np.zeros((size, size), np.uint8)
    parts = np.zeros((size, size), np.uint8)
    n_objects = int(rng.integers(2, 4))
    hues = rng.permutation(6)[:n_objects] / 6.0 + rng.uniform(0, 0.05)
    # objects on a loose grid so they overlap little
    slots = rng.permutation([(r, c) for r in range(2) for c in range(2)])[:n_objects]
    part_id = 0
    for k, ((r, c), hue) in enumerate(zip(slots, hues), start=1):
        extent = int(size * rng.uniform(0.36, 0.46))
        x0 = int(c * size / 2 + rng.uniform(0, size / 2 - extent))
        y0 = int(r * size / 2 + rng.uniform(0, size / 2 - extent))
        whole = _mask(size, SHAPES[int(rng.integers(len(SHAPES)))], (x0, y0, x0 + extent, y0 + extent))
        n_parts = int(rng.integers(2, 5))
        cuts = np.sort(rng.uniform(0, 1, n_parts - 1))
        direction = (yy - y0 / size) if rng.random() < 0.5 else (xx - x0 / size)
        band = np.digitize(direction * size / extent, cuts)  # which stripe of the object a pixel is in
        for p in range(n_parts):
            part = whole & (band == p)
            if not part.any():
                continue
            part_id += 1
            value = 0.6 + 0.3 * (p + 0.5) / n_parts  # parts: shades of the whole, closer to each other than to other wholes
            colour = np.array(colorsys.hsv_to_rgb(hue % 1.0, 0.85, value))
            image[part] = colour + rng.normal(0, 0.02, (int(part.sum()), 3))
            parts[part] = part_id
        wholes[whole] = k
    picture = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return picture, wholes, parts


def labels_at(labels: np.ndarray, h: int, w: int) -> np.ndarray:
    """A label map (H, W) at grid resolution (h, w): the most common label in each patch."""
    H, W = labels.shape
    out = np.zeros((h, w), np.int64)
    for i in range(h):
        for j in range(w):
            patch = labels[i * H // h:(i + 1) * H // h, j * W // w:(j + 1) * W // w]
            out[i, j] = np.bincount(patch.ravel()).argmax()
    return out
