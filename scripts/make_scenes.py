"""Synthetic scenes with known wholes and parts, for training and checking a dataset APM.

    python -m scripts.make_scenes --n 64 --out data/scenes [--size 224] [--seed 0]

Each scene is a textured grey background with two or three objects (the *wholes*: discs, boxes, triangles),
each of its own hue, and each made of two to four *parts* (stripes or blobs inside it) in lighter and darker
shades of that hue. `labels/scene_000.npz` holds its label maps `wholes` and `parts` (uint8, 0 is the
background, 1.. the wholes; parts numbered across the scene; not images, so `apm fit` does not train on them).
`apm.bench.labels_at(labels, h, w)` reads a label map at grid resolution (the most common label of each patch) for
scoring islands against it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from apm.bench.synthetic import labels_at, make_scene  # noqa: F401 - the one generator; labels_at for readers


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
