"""The paper's single-token experiment, faithful to the official code, with the real DINOv2-S: `name value` lines,
a results-VARIANTS.json and one picture per run.

    python -m scripts.single_token_experiment [--images flower_photo china_photo] [--variants faithful rgb]
                                              [--steps 1200] [--out docs/single-token]

Each run is a fresh APM in `apm.single_token.faithful_config` (the official single-token model, its token 384
wide for DINOv2-S's CLS), trained as `faithful_train_config` says, on one example image against the CLS token of
`dinov2:imgfocus` at its last layer, read at 448 px (the APM's input size; the same pass gives the teacher's
32 x 32 grid the content figures compare with). Every `--every` steps: the loss and the content figures
(CKA to the teacher's grid and to the APM's own location code, islands ARI, spread). At the end: the islands in
the official view (a 1D t-SNE at perplexity 3, random start, min-max colours) beside the teacher's, and the CKA
between the final grids of every two images of one variant (islands that come from the image differ between
images). Variants: `faithful` (the official recipe, bf16 autocast where the CPU has it natively), `rgb` (plus the
RGB loss, weight 1), `constant` (no StepLR: Adam at 1e-4 all along), `layer6` (the CLS token of block 6), `fp32`
(no autocast: how far the loss falls when rounding does not stop it), `rgb-constant` (the RGB loss and no StepLR).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {  # name -> (train config changes, teacher layer)
    "faithful": ({}, None),
    "rgb": ({"rgb_weight": 1.0}, None),
    "constant": ({"lr_decay_every": None}, None),
    "layer6": ({}, 6),
    "fp32": ({"precision": "fp32"}, None),
    "rgb-constant": ({"rgb_weight": 1.0, "lr_decay_every": None}, None),
}


def emit(name: str, value: float) -> None:
    print(f"{name} {value:.4g}", flush=True)


def picture(image, teacher_islands: np.ndarray, apm_islands: np.ndarray, path: Path) -> None:
    """input | the teacher's islands | the APM's islands, each 224 px, nearest-neighbour enlarged."""
    from PIL import Image

    def big(a: np.ndarray) -> Image.Image:
        return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)).resize((224, 224), Image.NEAREST)

    canvas = Image.new("RGB", (3 * 224 + 16, 224), (255, 255, 255))
    canvas.paste(image.resize((224, 224)), (0, 0))
    canvas.paste(big(teacher_islands), (232, 0))
    canvas.paste(big(apm_islands), (464 + 16, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["flower_photo", "china_photo"], help="example image stems")
    parser.add_argument("--variants", nargs="+", default=["faithful", "rgb"], choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--every", type=int, default=100, help="content figures every this many steps")
    parser.add_argument("--out", default=str(ROOT / "docs" / "single-token"))
    args = parser.parse_args()

    from apm.content import ContentReference, linear_cka
    from apm.islands import project, projection_config
    from apm.single_token import COPIES, faithful_config, faithful_train_config
    from apm.teachers import create_teacher, grid_options
    from apm.train import OverfitRun, Target

    out = Path(args.out)
    view = projection_config("paper1d")
    results: dict = {"steps": args.steps, "copies": COPIES, "teacher": "dinov2:imgfocus", "runs": {}, "between": {}}
    finals: dict[str, dict[str, np.ndarray]] = {}
    for variant in args.variants:
        changes, layer = VARIANTS[variant]
        teacher = create_teacher("dinov2:imgfocus", layer=layer, random_weights=False, **grid_options("dinov2", 32))
        for stem in args.images:
            from PIL import Image

            path = next(p for p in (ROOT / "assets" / "examples").iterdir() if p.stem == stem)
            image = Image.open(path).convert("RGB")
            encoded = teacher.encode(image)  # the grid (32, 32, 384) and the CLS token (384,) at 448 px
            config = faithful_train_config(steps=args.steps, record_every=args.every, **changes)
            run = OverfitRun(image, Target(global_vector=encoded.global_vector), config,
                             faithful_config(encoded.global_vector.shape[-1]))
            reference = ContentReference((32, 32), encoded.grid, run.model.positional_code())
            curve, started, last = [], time.perf_counter(), None
            for snap in run:
                if snap.recorded:
                    m = reference.measure(snap.features)
                    curve.append({"step": snap.step, "loss": snap.feat_loss, **m.to_dict()})
                    last = snap
                    print(f"# {variant} {stem} step {snap.step}: loss {snap.feat_loss:.3g}, CKA to teacher "
                          f"{m.cka_teacher:.3f}, to position {m.cka_position:.3f}, ARI {m.ari_teacher:.3f}, "
                          f"spread {m.spread:.3f}", flush=True)
            seconds = time.perf_counter() - started
            key = f"{variant}/{stem}"
            final = curve[-1]
            for name in ("loss", "cka_teacher", "cka_position", "ari_teacher", "spread"):
                emit(f"{variant}_{stem}_{name}", final[name])
            emit(f"{variant}_{stem}_first_loss", curve[0]["loss"])
            emit(f"{variant}_{stem}_seconds", seconds)
            apm_view = project(last.features, view, full_fit=True)
            teacher_view = project(encoded.grid, view, full_fit=True)
            picture(image, teacher_view.image, apm_view.image, out / f"{variant}-{stem}.png")
            results["runs"][key] = {"curve": curve, "seconds": seconds, "train_config": asdict(config),
                                    "model_config": asdict(run.model_config), "precision": str(run.amp_dtype)}
            finals.setdefault(variant, {})[stem] = last.features
        stems = list(finals[variant])
        for a in range(len(stems)):
            for b in range(a + 1, len(stems)):
                cka = linear_cka(finals[variant][stems[a]], finals[variant][stems[b]])
                results["between"][f"{variant}/{stems[a]}~{stems[b]}"] = cka
                emit(f"{variant}_{stems[a]}_vs_{stems[b]}_cka", cka)
    out.mkdir(parents=True, exist_ok=True)
    name = f"results-{'-'.join(args.variants)}.json"
    (out / name).write_text(json.dumps(results, indent=1))
    print(f"# wrote {out / name} and the pictures in {out}")


if __name__ == "__main__":
    main()
