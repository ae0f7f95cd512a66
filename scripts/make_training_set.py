"""A licence-clean image set for `apm fit`: this project's examples, scikit-image's public-domain and CC0 photos,
square crops of each, and synthetic scenes; some photos are held out whole, for figures on images never seen.

    pip install scikit-image            # only for its sample photos (read from its data folder, not imported)
    python -m scripts.make_training_set --out data/shipped [--crops 12] [--scenes 64] [--seed 0]

Writes `OUT/train/*.png` (every source at 448 x 448, centre square, plus `--crops` random square crops of 50 to
100% of its short side, flipped at random), `OUT/heldout/*.png` (the held-out photos and 4 crops each) and
`OUT/sources.json` (every file's source, licence and crop box). Without scikit-image only the examples and the
scenes are used (the script says so).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from apm.bench.synthetic import make_scene

ROOT = Path(__file__).resolve().parent.parent

SIZE = 448
# scikit-image's sample photos (skimage/data), with the licence its own docstrings give
SKIMAGE_PHOTOS = {
    "astronaut.png": "public domain (NASA Great Images; no known copyright restrictions)",
    "rocket.jpg": "public domain (SpaceX photos released into the public domain)",
    "hubble_deep_field.jpg": "public domain (NASA / HubbleSite)",
    "retina.jpg": "CC0 1.0 (Mikael Haggstrom, Wikimedia Commons)",
    "ihc.png": "no known copyright restrictions (CMMI immunohistochemistry)",
    "camera.png": "CC0 (Lav Varshney)",
    "coins.png": "no known copyright restrictions (Brooklyn Museum)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
}
HELD_OUT = ("chelsea.png", "coffee.png")  # never trained on: the one-pass figures are measured on these


def skimage_data() -> Path | None:
    """scikit-image's data folder, found without importing the package (its photos are all this needs)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if folder.is_dir() else None


def square(image: Image.Image, box: tuple[int, int, int]) -> Image.Image:
    """The square (left, top, side) of an image, at SIZE x SIZE."""
    left, top, side = box
    return image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def crops(image: Image.Image, n: int, rng: np.random.Generator) -> list[tuple[Image.Image, dict]]:
    """The centre square, then n random squares of 50-100% of the short side (half of them mirrored)."""
    w, h = image.size
    short = min(w, h)
    out = [(square(image, ((w - short) // 2, (h - short) // 2, short)), {"crop": "centre", "flip": False})]
    for _ in range(n):
        side = int(short * rng.uniform(0.5, 1.0))
        box = (int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1)), side)
        picture = square(image, box)
        flip = bool(rng.random() < 0.5)
        if flip:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append((picture, {"crop": list(box), "flip": flip}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--crops", type=int, default=12, help="random crops per training source")
    parser.add_argument("--scenes", type=int, default=64, help="synthetic scenes (scripts/make_scenes.py)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    sources = [(p, "see assets/CREDITS.md") for p in sorted((ROOT / "assets" / "examples").iterdir())
               if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    data = skimage_data()
    if data is None:
        print("scikit-image is not installed: its photos are left out (pip install scikit-image)", file=sys.stderr)
    else:
        sources += [(data / name, licence) for name, licence in SKIMAGE_PHOTOS.items() if (data / name).is_file()]

    record = []
    for path, licence in sources:
        image = Image.open(path).convert("RGB")
        held = path.name in HELD_OUT
        for k, (picture, how) in enumerate(crops(image, 4 if held else args.crops, rng)):
            name = f"{path.stem}_{k:02d}.png"
            picture.save(out / ("heldout" if held else "train") / name)
            record.append({"file": f"{'heldout' if held else 'train'}/{name}", "source": path.name,
                           "licence": licence, **how})
    for i in range(args.scenes):
        picture, _, _ = make_scene(rng, size=SIZE)
        name = f"scene_{i:03d}.png"
        picture.save(out / "train" / name)
        record.append({"file": f"train/{name}", "source": "scripts/make_scenes.py", "licence": "MIT (this project)"})
    (out / "sources.json").write_text(json.dumps(record, indent=1) + "\n")
    n_train = sum(r["file"].startswith("train/") for r in record)
    print(f"wrote {n_train} training and {len(record) - n_train} held-out images from {len(sources)} sources "
          f"and {args.scenes} scenes to {out}")


if __name__ == "__main__":
    main()
