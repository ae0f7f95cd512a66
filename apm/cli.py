"""Command line: `python -m apm {overfit,islands,teacher,interpolate,download} ...`.

Every user mistake (a missing file, a broken image, a wrong-shaped array) ends in one line on stderr and
a non-zero exit code, never a traceback. Output files are written atomically, and an interrupted run
(Ctrl-C) still writes what it recorded so far.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from . import runs
from .asynchronous import decode_everywhere
from .content import content_line, measure_against
from .errors import APMError, InputError
from .io import save_json, write_atomic

log = logging.getLogger("apm")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# shared argument groups


def _add_teacher_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--teacher", required=required, help="teacher model: dinov2, clip or mvit")
    p.add_argument("--layer", type=int, default=None, help="teacher block index from 0 (default: the last)")
    p.add_argument("--variant", default=None, help="teacher model id, e.g. vit_base_patch14_dinov2.lvd142m")
    p.add_argument(
        "--random-weights", action="store_true", help="use an untrained teacher (no download; also APM_RANDOM_WEIGHTS=1)"
    )


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, choices=["cpu", "paper"], help="model and training preset (default: cpu)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's or preset's)")
    p.add_argument("--record-every", type=int, default=None, help="keep the feature grid every K steps")
    p.add_argument("--seed", type=int, default=None, help="initialisation seed")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the preset's)")
    p.add_argument("--loss", choices=["mse", "cosine"], default=None, help="feature loss")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None, help="autocast precision")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    adv = p.add_argument_group("advanced training")
    adv.add_argument("--rgb-weight", type=float, default=None, help="weight of the RGB loss (0: features only)")
    adv.add_argument("--normalize-target", choices=["on", "off"], default=None,
                     help="divide the target by its RMS so losses read as relative errors (default: on)")
    from .recipes import LR_SCHEDULES

    adv.add_argument("--lr-schedule", choices=list(LR_SCHEDULES), default=None,
                     help="constant, or step: x0.1 every 200 steps (the official test-time training)")
    adv.add_argument("--init", choices=["torch", "normal"], default=None,
                     help="torch defaults, or N(0, 0.01) for every weight (the official initialisation)")
    adv.add_argument("--global-head", choices=["attention", "paper"], default=None,
                     help="pooling head of a global target: attention (LayerNorm + projection) or paper")


def _add_grid_arg(p: argparse.ArgumentParser) -> None:
    from .model import GRID_CHOICES

    p.add_argument("--grid", type=int, choices=GRID_CHOICES, default=None,
                   help="locations a side; the teacher's input follows (14 px a location for DINOv2: 224, 336, "
                        "448 px). Default: the teacher's own input size")


def _add_projection_args(p: argparse.ArgumentParser) -> None:
    from .islands import PROJECTIONS

    g = p.add_argument_group("islands view")
    g.add_argument("--projection", choices=list(PROJECTIONS), default=None,
                   help="paper (3D t-SNE, perplexity 3, min-max RGB), paper1d, tsne2d, tsne3d or pca")
    g.add_argument("--perplexity", type=float, default=None, help="t-SNE perplexity, 2 to 100 (default: the view's)")
    g.add_argument("--metric", choices=["cosine", "euclidean"], default=None, help="t-SNE distance")
    g.add_argument("--tsne-init", choices=["pca", "random"], default=None, help="t-SNE initialisation")


def build_parser() -> argparse.ArgumentParser:
    """The parser; every choice list is read from its registry (recipes, projections, grids, schedules)."""
    from .recipes import RECIPES

    parser = _Parser(prog="python -m apm", description="Asynchronous Perception Machine: overfit, inspect, interpolate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("overfit", help="overfit a fresh APM on one image against a target")
    p.add_argument("image", help="input image (PNG, JPEG, ...)")
    p.add_argument("--recipe", choices=list(RECIPES), default="custom",
                   help="a named experiment that sets every control at once (flags given here still win): "
                        "cls-ttt (islands from CLIP's image embedding alone, paper Fig. 3), dense-distill, custom")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--target", help="target features: .npy/.pt of shape (h, w, d) (dense) or (d,) (global)")
    src.add_argument("--teacher", help="compute the target with a teacher: dinov2, clip or mvit (or name:variant)")
    p.add_argument("--layer", type=int, default=None, help="teacher block index from 0 (default: the last)")
    p.add_argument("--variant", default=None, help="teacher model id, e.g. vit_base_patch14_dinov2.lvd142m")
    p.add_argument("--random-weights", action="store_true", help="use an untrained teacher (no download)")
    p.add_argument("--target-kind", choices=["dense", "global", "both"], default=None,
                   help="with a teacher: what to fit (default: the recipe's, dense for custom)")
    _add_grid_arg(p)
    p.add_argument("--checkpoint", default=None,
                   help="start from a trained APM (folder, or hf:ORG/REPO): test-time training; its teacher and "
                        "layer are the default")
    _add_training_args(p)
    _add_projection_args(p)
    p.add_argument("--out", default="runs/overfit", help="output folder (run.npz, summary.json, islands.png)")
    p.set_defaults(func=cmd_overfit)

    p = sub.add_parser("islands", help="the islands of one image: a teacher's layer (no APM), or a trained APM")
    p.add_argument("image", help="input image (PNG, JPEG, ...)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", help="the teacher's own islands: mvit, dinov2 or clip (or name:variant)")
    src.add_argument("--checkpoint", help="a trained APM's folder (apm fit, convert-official): one forward pass")
    p.add_argument("--layer", type=int, default=None, help="teacher block index from 0 (default: the last)")
    p.add_argument("--variant", default=None, help="teacher model id")
    p.add_argument("--random-weights", action="store_true", help="use an untrained teacher (no download)")
    _add_grid_arg(p)
    _add_projection_args(p)
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda (with --checkpoint)")
    g = p.add_argument_group("asynchronous decoding (with --checkpoint)")
    g.add_argument("--chunk", type=int, default=None, help="decode this many locations at a time (default: all at once)")
    g.add_argument("--order", choices=["row", "random"], default=None,
                   help="the order locations are decoded in: row by row, or random (seeded by --order-seed)")
    g.add_argument("--order-seed", type=int, default=0, help="seed of the random order (default: 0)")
    p.add_argument("--out", required=True, help="output folder (islands.png, islands.npz)")
    p.set_defaults(func=cmd_islands)

    p = sub.add_parser("fit", help="distil one APM over a folder of images (torchrun for many processes)")
    p.add_argument("images_dir", help="folder of images (searched recursively)")
    p.add_argument("--teacher", default="dinov2", help="teacher id: dinov2, clip, mvit or name:variant")
    p.add_argument("--layer", type=int, default=None, help="teacher block index from 0 (default: the last)")
    p.add_argument("--random-weights", action="store_true", help="use an untrained teacher (no download)")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"], help="model preset")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16, help="global batch size (split over torchrun's processes)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the preset's)")
    p.add_argument("--rgb-weight", type=float, default=1.0, help="weight of the RGB loss")
    p.add_argument("--val-fraction", type=float, default=0.1, help="images held out for the validation fidelity")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes per training process (default: none on a small CPU, up to 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="fp32")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--log-every", type=int, default=10, help="a log.csv row every this many steps")
    p.add_argument("--cache-dir", default=None, help="feature cache root (default: $APM_CACHE_DIR/fit)")
    p.add_argument("--out", required=True, help="run folder: checkpoint/, log.csv, fit.json")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("convert-official", help="convert the official APM code's checkpoint into this format")
    p.add_argument("checkpoint", help="the official state_dict file (e.g. model_15.pth)")
    p.add_argument("out", help="output checkpoint folder (config.json, model.safetensors)")
    p.set_defaults(func=cmd_convert_official)

    p = sub.add_parser("teacher", help="dump a teacher's feature grid for an image")
    p.add_argument("image")
    _add_teacher_args(p, required=True)
    p.add_argument("--out", required=True, help="output .npy file: the (h, w, d) grid")
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser("interpolate", help="train on two images, then walk the trigger column between them")
    p.add_argument("image_a")
    p.add_argument("image_b")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", help="teacher for both targets: dinov2, clip or mvit")
    src.add_argument("--targets", nargs=2, metavar=("A", "B"), help="two target arrays (h, w, d), same shape")
    p.add_argument("--layer", type=int, default=None)
    p.add_argument("--variant", default=None)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--frames", type=int, default=16, help="number of alphas from 0 to 1")
    _add_training_args(p)
    p.add_argument("--out", required=True, help="output folder (interpolation.npz, interpolation.gif)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("download", help="fetch teacher weights into the local caches ahead of time")
    p.add_argument("names", nargs="+", help="teachers to fetch: dinov2 clip mvit")
    p.set_defaults(func=cmd_download)
    return parser


# commands


def _variant_id(args: argparse.Namespace) -> str | None:
    """--teacher NAME with --variant ID as one teacher id (name:variant)."""
    if args.teacher is None:
        return None
    if getattr(args, "variant", None):
        if ":" in args.teacher:
            raise InputError("give the variant once: --teacher NAME:VARIANT or --teacher NAME --variant VARIANT")
        return f"{args.teacher}:{args.variant}"
    return args.teacher


def _experiment(args: argparse.Namespace, **fixed):
    """The run's settings: the recipe's, then every flag the user gave."""
    from .recipes import experiment

    normalize = getattr(args, "normalize_target", None)
    changes = dict(
        layer=args.layer,
        random_weights=True if getattr(args, "random_weights", False) else None,
        preset=getattr(args, "preset", None),
        steps=getattr(args, "steps", None),
        lr=getattr(args, "lr", None),
        lr_schedule=getattr(args, "lr_schedule", None),
        seed=getattr(args, "seed", None),
        record_every=getattr(args, "record_every", None),
        rgb_weight=getattr(args, "rgb_weight", None),
        feature_loss=getattr(args, "loss", None),
        normalize_target=None if normalize is None else normalize == "on",
        init=getattr(args, "init", None),
        global_head=getattr(args, "global_head", None),
        precision=getattr(args, "precision", None),
        projection=getattr(args, "projection", None),
        perplexity=getattr(args, "perplexity", None),
        metric=getattr(args, "metric", None),
        tsne_init=getattr(args, "tsne_init", None),
        grid=getattr(args, "grid", None),
    )
    changes.update(fixed)
    return experiment(getattr(args, "recipe", None) or "custom", **changes)


def _train_config(args: argparse.Namespace):
    return _experiment(args).train_config(time_budget_s=args.time_budget, device=args.device or "auto")


def _teacher(args: argparse.Namespace, teacher_id: str | None = None, random_weights: bool | None = None):
    from .teachers import create_teacher, grid_options

    teacher_id = teacher_id or _variant_id(args)
    if random_weights is None:
        random_weights = args.random_weights or None
    options = grid_options(teacher_id, getattr(args, "grid", None))
    return create_teacher(teacher_id, layer=args.layer, random_weights=random_weights, **options)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)


def _run_training(run, desc: str):
    """Train through the live-run engine with a progress bar; Ctrl-C stops it and keeps what was recorded.

    Returns (the finished `LiveRun`, interrupted)."""
    from .live import LiveRun

    live = LiveRun(run).start()
    bar = _progress(run.config.steps, desc)
    interrupted, shown, seen = False, 0, 0
    try:
        while True:
            _, seen = live.wait(seen, timeout=0.2)
            n = live.steps_done
            if n > shown:
                bar.update(n - shown)
                shown = n
                bar.set_postfix(feat=f"{live.history.feat_loss[n - 1]:.2e}", rgb=f"{live.history.rgb_loss[n - 1]:.2e}")
            if live.finished:
                break
    except KeyboardInterrupt:
        interrupted = True
        live.stop()
    finally:
        live.join()
        bar.close()
    if live.error is not None:
        raise live.error
    if not live.steps_done or live.latest is None:
        raise APMError("interrupted before the first step finished; nothing to write")
    return live, interrupted or live.stop_reason == "stopped"


def cmd_overfit(args: argparse.Namespace) -> int:
    from .images import load_image
    from .recipes import FILE_TEACHER, RECIPES
    from .train import OverfitRun, Target

    recipe = RECIPES[args.recipe]
    if not recipe.trains:
        raise InputError(f"the {recipe.name} recipe trains no APM: use `python -m apm islands IMAGE --teacher ...`")
    trained = None
    if args.checkpoint:
        from .checkpoint import resolve_checkpoint
        from .model import APM

        trained = APM.from_pretrained(resolve_checkpoint(args.checkpoint))
        meta = trained.meta
        if args.target is None and args.teacher is None and meta.get("teacher"):
            args.teacher = meta["teacher"]
            args.layer = meta.get("layer") if args.layer is None else args.layer
            args.random_weights = args.random_weights or bool(meta.get("random_weights"))
    elif recipe.needs_checkpoint:
        raise InputError(f"the {recipe.name} recipe starts from a trained APM: give --checkpoint DIR")
    if args.target is None and args.teacher is None and not recipe.names_teacher:
        raise InputError("give --teacher NAME or --target FILE (or a --recipe that names a teacher)")
    exp = _experiment(
        args,
        teacher=FILE_TEACHER if args.target is not None else _variant_id(args),
        target=args.target_kind,
        checkpoint=str(args.checkpoint or ""),
    )
    image = load_image(args.image)
    if args.target is not None:
        from .teachers import load_feature_array

        array = load_feature_array(args.target)
        if args.grid is not None and array.ndim == 3 and array.shape[:2] != (args.grid, args.grid):
            raise InputError(f"--grid {args.grid}: the target array is a {array.shape[0]} x {array.shape[1]} grid")
        target = Target.from_array(array)
        compare = array if array.ndim == 3 else None
        target_info: dict = {"source": "file", "path": str(args.target)}
    else:
        teacher = _teacher(args, teacher_id=exp.teacher, random_weights=exp.random_weights)
        output = teacher.encode(image)
        target = Target(
            grid=output.grid if exp.target in ("dense", "both") else None,
            global_vector=output.global_vector if exp.target in ("global", "both") else None,
        )
        if target.grid is None and target.global_vector is None:
            raise InputError(f"{output.info.label} gives no global vector: use --target-kind dense")
        target_info = {"source": "teacher", "kind": exp.target, **asdict(output.info)}
        compare = output.grid  # the islands are compared with the teacher's grid, whatever the target
    config = exp.train_config(time_budget_s=args.time_budget, device=args.device or "auto")
    if trained is not None:
        _check_grid(args, trained)
        if target.grid is None:
            raise InputError("test-time training from a checkpoint needs a dense target (--target-kind dense)")
        run = OverfitRun(image, target, config, init=trained, target_scale=trained.meta.get("feature_scale"))
    else:
        run = OverfitRun(image, target, config, exp.model_config())
    live, interrupted = _run_training(run, "overfit")
    out = Path(args.out)
    content = measure_against(live.latest.features, compare, run.model.positional_code())
    write_run(out, live, target_info, interrupted, recipe=exp.to_dict(),
              content=content.to_dict() if content is not None else None)
    runs.write_islands(out, live.latest.features, exp.projection_config(), grid_shape=None)
    state = "interrupted" if interrupted else "done"
    print(f"{state}: {live.steps_done} steps, feature loss {live.history.feat_loss[-1]:.3e}, "
          f"wrote {out / 'run.npz'}, {out / 'summary.json'} and {out / 'islands.png'}")
    print(content_line(content))
    return EXIT_INTERRUPTED if interrupted else 0


def cmd_islands(args: argparse.Namespace) -> int:
    from .images import load_image

    image = load_image(args.image)
    out = Path(args.out)
    if args.checkpoint is not None:
        return _islands_from_checkpoint(args, image, out)
    if args.chunk is not None or args.order is not None:
        raise InputError("--chunk and --order decode a trained APM's locations: use them with --checkpoint DIR")
    exp = _experiment(args, teacher=_variant_id(args), trains=False,
                      projection=args.projection or "paper")
    teacher = _teacher(args, teacher_id=exp.teacher, random_weights=exp.random_weights)
    output = teacher.encode(image)
    config = exp.projection_config()
    projection = runs.write_islands(out, output.grid, config)
    save_json(out / "summary.json", {
        "command": "islands",
        "teacher": asdict(output.info),
        "projection": asdict(config),
        "grid_shape": list(projection.grid_shape),
        "kl_divergence": projection.kl_divergence,
        "environment": _environment(),
    })
    h, w = projection.grid_shape
    print(f"wrote {out / 'islands.png'} and {out / 'islands.npz'}: {h} x {w} islands of {output.info.label}")
    return 0


def _environment() -> dict:
    from .io import environment_record

    return environment_record()


def _islands_from_checkpoint(args: argparse.Namespace, image, out: Path) -> int:
    """A trained APM's islands of a new image: one forward pass, no training."""

    from .checkpoint import read_config
    from .device import resolve_device
    from .fit import CHECKPOINT, predict
    from .model import APM
    from .recipes import experiment

    if args.teacher is not None or args.layer is not None:
        raise InputError("--checkpoint decodes the trained APM alone: drop --teacher / --layer")
    folder = Path(args.checkpoint)
    if (folder / CHECKPOINT).is_dir() and not (folder / "config.json").is_file():
        folder = folder / CHECKPOINT  # a run folder of `apm fit`
    read_config(folder)  # one clear line for a folder that is not a checkpoint, before any work
    device = resolve_device(args.device or "auto")
    apm = APM.from_pretrained(folder, device=device)
    _check_grid(args, apm)
    decoding = None
    if args.chunk is None and args.order is None:
        features, rgb = predict(apm, image, device)  # (h, w, d), (h, w, 3): one forward pass
    else:
        features, rgb, decoding = decode_everywhere(apm, image, args.order or "row", args.chunk, args.order_seed)
    exp = experiment("custom", projection=args.projection or "paper", perplexity=args.perplexity,
                     metric=args.metric, tsne_init=args.tsne_init)
    config = exp.projection_config()
    projection = runs.write_islands(out, features, config)
    write_atomic(out / "features.npy", lambda tmp: np.save(tmp, features.astype(np.float32)))
    h, w = projection.grid_shape
    runs.write_rgb(out, rgb)
    meta = apm.meta
    content, why = None, "the checkpoint names no teacher"
    if meta.get("teacher"):  # the teacher it was distilled from, to say what its islands rest on
        from .errors import WeightsUnavailableError
        from .teachers import create_teacher

        try:
            teacher = create_teacher(meta["teacher"], layer=meta.get("layer"), random_weights=bool(meta.get("random_weights")))
            content = measure_against(features, teacher.encode(image).grid, apm.positional_code())
        except WeightsUnavailableError as exc:
            why = f"its teacher cannot be loaded here ({exc})"
    save_json(out / "summary.json", {
        "command": "islands",
        "checkpoint": str(folder),
        "meta": meta,
        "projection": asdict(config),
        "grid_shape": [h, w],
        "content": content.to_dict() if content is not None else None,
        "decoding": decoding,
        "environment": _environment(),
    })
    how = "one forward pass" if decoding is None else f"{decoding['order']} order, chunks of {decoding['chunk']}"
    print(f"wrote {out / 'islands.png'}, {out / 'islands.npz'}, {out / 'rgb.png'} and {out / 'features.npy'}: "
          f"{h} x {w} islands of the APM in {folder} ({how})")
    if decoding is not None:
        print(f"decoded {decoding['locations']} locations in {decoding['chunks']} chunks in "
              f"{decoding['seconds'] * 1e3:.1f} ms: largest difference from one full pass {decoding['max_diff']:.2g} "
              f"(fp32, the APM's units)")
    if content is None:
        print(f"content: not measured: {why}")
    else:
        print(content_line(content))
    return 0


def _check_grid(args: argparse.Namespace, apm) -> None:
    """--grid with a trained APM: its grid is fixed by its weights."""
    h, w = apm.config.grid
    if getattr(args, "grid", None) is not None and (args.grid, args.grid) != (h, w):
        raise InputError(f"--grid {args.grid}: this checkpoint decodes a {h} x {w} grid (drop --grid)")


def cmd_convert_official(args: argparse.Namespace) -> int:
    from .official import convert_official

    apm = convert_official(args.checkpoint, args.out)
    h, w = apm.config.grid
    print(f"wrote {Path(args.out)}: the official APM ({apm.folded_state().param_count / 1e6:.1f} M parameters, "
          f"{h} x {w} grid, RGB input min-max scaled in the model); load it with APM.from_pretrained or "
          f"`python -m apm islands IMAGE --checkpoint {args.out}`")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from .fit import FitConfig, fit

    config = FitConfig(
        teacher=args.teacher, layer=args.layer, random_weights=True if args.random_weights else None,
        preset=args.preset, epochs=args.epochs, batch=args.batch, lr=args.lr, rgb_weight=args.rgb_weight,
        val_fraction=args.val_fraction, workers=args.workers, seed=args.seed, precision=args.precision,
        device=args.device, log_every=args.log_every, cache_dir=args.cache_dir,
    )
    result = fit(args.images_dir, args.out, config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        val = result.val_fidelity[-1] if result.val_fidelity else float("nan")
        print(f"done: {result.epochs_done} epochs, {result.steps} steps over {result.images} images "
              f"({result.skipped} skipped, {result.cache_hits} cached, {result.cache_computed} computed), "
              f"validation fidelity {val:.4f}, {result.images_per_s:.1f} images/s; wrote {Path(args.out) / 'checkpoint'}")
    return 0


def write_run(out: Path, live, target_info: dict, interrupted: bool = False, recipe: dict | None = None,
              content: dict | None = None) -> None:
    """run.npz (recorded snapshots plus every step's losses) and summary.json, through the one run writer."""
    from . import runs

    run, recorded, curve = live.run, live.snapshots, live.history.arrays()
    last_step, elapsed = int(curve["step"][-1]), max(float(curve["elapsed_s"][-1]), 1e-9)
    folded = run.model.folded_state()
    summary = {
        "recipe": recipe,
        "config": runs.config_record(run.config, run.model_config),
        "target": target_info,
        "seed": run.config.seed,
        "steps_done": last_step,
        "stop_reason": "interrupted" if interrupted else live.stop_reason,
        "steps_per_second": last_step / elapsed,
        "elapsed_s": elapsed,
        "final_feat_loss": float(curve["feat_loss"][-1]),
        "first_feat_loss": float(curve["feat_loss"][0]),
        "final_rgb_loss": float(curve["rgb_loss"][-1]),
        "final_global_loss": None if np.isnan(curve["global_loss"][-1]) else float(curve["global_loss"][-1]),
        "device": str(run.device),
        "autocast": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "fp32",
        "param_count": folded.param_count,
        "param_bytes": folded.param_bytes,
        "recorded_steps": len(recorded),
        "content": content,  # what the last snapshot's islands rest on (apm.content), None without a teacher grid
    }
    runs.write_run(out, runs.run_arrays(recorded, curve), summary)


def cmd_teacher(args: argparse.Namespace) -> int:
    from .images import load_image

    out = Path(args.out)
    if out.suffix != ".npy":
        raise InputError(f"--out must name a .npy file, got '{out}'")
    teacher = _teacher(args)
    output = teacher.encode(load_image(args.image))
    write_atomic(out, lambda tmp: np.save(tmp, output.grid))
    h, w, d = output.grid.shape
    print(f"wrote {out}: {h} x {w} x {d} grid from {output.info.label}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .images import load_image
    from .interpolate import save_interpolation, train_pair

    if args.frames < 2:
        raise InputError(f"--frames must be at least 2, got {args.frames}")
    images = [load_image(args.image_a), load_image(args.image_b)]
    if args.targets:
        from .teachers import load_feature_array

        grids = [load_feature_array(path) for path in args.targets]
        source = {"source": "files", "paths": list(args.targets)}
    else:
        teacher = _teacher(args)
        grids = [teacher.encode(im).grid for im in images]
        source = {"source": "teacher", **asdict(teacher.info)} if hasattr(teacher, "info") else {"source": "teacher"}
    run = train_pair(images, grids, _train_config(args), _experiment(args).model_config())
    live, interrupted = _run_training(run, "interpolate")
    alphas = np.linspace(0.0, 1.0, args.frames, dtype=np.float32)
    out = Path(args.out)
    save_interpolation(out, run, alphas)
    write_run(out, live, source, interrupted)
    print(f"wrote {out / 'interpolation.npz'} and {out / 'interpolation.gif'} ({args.frames} frames)")
    return EXIT_INTERRUPTED if interrupted else 0


def cmd_download(args: argparse.Namespace) -> int:
    from .teachers import download_weights

    for message in download_weights(args.names):
        print(message)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except APMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line unless APM_DEBUG asks for the trace
        if os.environ.get("APM_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set APM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
