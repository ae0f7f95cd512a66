"""How close a trained APM's one forward pass comes to its teacher on images: CKA and fidelity per image.

    python -m scripts.eval_checkpoint CHECKPOINT IMAGE_OR_FOLDER [...]

The teacher (and layer) is the one the checkpoint was distilled from (its config.json). Prints `name value`
lines: for each image `cka IMAGE value` and `fidelity IMAGE value`, then `onepass_cka_mean`,
`onepass_fidelity_mean` (mean cosine similarity of a location's feature to the teacher's), `pixels_cka_mean` (the
baseline: the CKA of each location's own patch pixels to the teacher) and `images`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from apm.content import linear_cka
from apm.fit import predict
from apm.images import load_image, patch_pixels
from apm.islands import island_metrics
from apm.model import APM
from apm.teachers import create_teacher

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()

    apm = APM.from_pretrained(args.checkpoint)
    meta = apm.meta
    teacher = create_teacher(meta["teacher"], layer=meta["layer"], random_weights=bool(meta.get("random_weights")))
    paths = []
    for item in map(Path, args.images):
        paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in SUFFIXES) if item.is_dir() else [item]
    ckas, fids, pixels = [], [], []
    for path in paths:
        image = load_image(path)
        features, _ = predict(apm, image)  # (h, w, d), one forward pass
        grid = teacher.encode(image).grid
        ckas.append(linear_cka(features, grid))
        fids.append(island_metrics(features, grid).fidelity)
        pixels.append(linear_cka(patch_pixels(image, *grid.shape[:2]), grid))
        print(f"cka {path.name} {ckas[-1]:.4f}")
        print(f"fidelity {path.name} {fids[-1]:.4f}")
    print(f"teacher {teacher.info.label}")
    print(f"images {len(paths)}")
    print(f"onepass_cka_mean {np.mean(ckas):.4f}")
    print(f"onepass_fidelity_mean {np.mean(fids):.4f}")
    print(f"pixels_cka_mean {np.mean(pixels):.4f}")


if __name__ == "__main__":
    main()
