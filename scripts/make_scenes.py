"""Synthetic scenes with known wholes and parts, for training and checking a dataset APM.

    python scripts/make_scenes.py --n 64 --out data/scenes [--size 224] [--seed 0]

Each scene is a textured grey background with two or three objects (the *wholes*: discs, boxes, triangles),
each of its own hue, and each made of two to four *parts* (stripes or blobs inside it) in lighter and darker
shades of that hue. `labels/scene_000.npz` holds its label maps `wholes` and `parts` (uint8, 0 is the
background, 1.. the wholes; parts numbered across the scene; not images, so `apm fit` does not train on them).
`labels_at(labels, h, w)` reads a label map at grid resolution (the most common label of each patch) for
scoring islands against it.
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="number of scenes")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=int, default=224, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.n):
        picture, wholes, parts = make_scene(rng, args.size)
        picture.save(out / f"scene_{i:03d}.png")
        np.savez_compressed(out / "labels" / f"scene_{i:03d}.npz", wholes=wholes, parts=parts)
    print(f"wrote {args.n} scenes to {out} (label maps in {out / 'labels'})")


if __name__ == "__main__":
    main()
