"""Command line: `python -m apm {overfit,teacher,interpolate,download} ...`.

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

from .errors import APMError, InputError
from .io import save_json, save_npz, write_atomic

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
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"], help="model and training preset")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--record-every", type=int, default=None, help="keep the feature grid every K steps")
    p.add_argument("--seed", type=int, default=None, help="initialisation seed")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the preset's)")
    p.add_argument("--loss", choices=["mse", "cosine"], default=None, help="feature loss")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None, help="autocast precision")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m apm", description="Asynchronous Perception Machine: overfit, inspect, interpolate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("overfit", help="overfit a fresh APM on one image against a target")
    p.add_argument("image", help="input image (PNG, JPEG, ...)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--target", help="target features: .npy/.pt of shape (h, w, d) (dense) or (d,) (global)")
    src.add_argument("--teacher", help="compute the target with a teacher: dinov2, clip or mvit")
    p.add_argument("--layer", type=int, default=None, help="teacher block index from 0 (default: the last)")
    p.add_argument("--variant", default=None, help="teacher model id, e.g. vit_base_patch14_dinov2.lvd142m")
    p.add_argument("--random-weights", action="store_true", help="use an untrained teacher (no download)")
    p.add_argument(
        "--target-kind", choices=["dense", "global", "both"], default="dense", help="with --teacher: what to fit"
    )
    _add_training_args(p)
    p.add_argument("--out", default="runs/overfit", help="output folder (run.npz, summary.json)")
    p.set_defaults(func=cmd_overfit)

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


def _train_config(args: argparse.Namespace):
    from .train import train_config_for

    return train_config_for(
        args.preset,
        steps=args.steps,
        record_every=args.record_every,
        seed=args.seed,
        lr=args.lr,
        loss=args.loss,
        precision=args.precision,
        time_budget_s=args.time_budget,
        device=args.device,
    )


def _teacher(args: argparse.Namespace):
    from .teachers import create_teacher

    return create_teacher(args.teacher, layer=args.layer, random_weights=args.random_weights or None, variant=args.variant)


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
    from .train import OverfitRun, Target

    image = load_image(args.image)
    target_info: dict = {}
    if args.target is not None:
        from .teachers import load_feature_array

        target = Target.from_array(load_feature_array(args.target))
        target_info = {"source": "file", "path": str(args.target)}
    else:
        teacher = _teacher(args)
        output = teacher.encode(image)
        kind = args.target_kind
        target = Target(
            grid=output.grid if kind in ("dense", "both") else None,
            global_vector=output.global_vector if kind in ("global", "both") else None,
        )
        target_info = {"source": "teacher", "kind": kind, **asdict(output.info)}
    config = _train_config(args)
    run = OverfitRun(image, target, config, args.preset)
    live, interrupted = _run_training(run, "overfit")
    out = Path(args.out)
    write_run(out, live, target_info, interrupted)
    state = "interrupted" if interrupted else "done"
    print(f"{state}: {live.steps_done} steps, feature loss {live.history.feat_loss[-1]:.3e}, "
          f"wrote {out / 'run.npz'} and {out / 'summary.json'}")
    return EXIT_INTERRUPTED if interrupted else 0


def write_run(out: Path, live, target_info: dict, interrupted: bool = False, recipe: dict | None = None) -> None:
    """run.npz (recorded snapshots plus every step's losses) and summary.json (everything needed to rerun it)."""
    from .io import environment_record

    run, recorded, curve = live.run, live.snapshots, live.history.arrays()
    arrays = {
        "step": np.array([s.step for s in recorded], dtype=np.int64),  # (n,)
        "feat_loss": np.array([s.feat_loss for s in recorded], dtype=np.float32),  # (n,)
        "rgb_loss": np.array([s.rgb_loss for s in recorded], dtype=np.float32),  # (n,)
        "features": np.stack([s.features for s in recorded]),  # (n, h, w, d)
        "rgb": np.stack([s.rgb for s in recorded]),  # (n, h, w, 3)
        "trigger_column": np.stack([s.trigger_column for s in recorded]),  # (n, column_dim)
        "curve_step": curve["step"],  # every step
        "curve_feat_loss": curve["feat_loss"].astype(np.float32),
        "curve_rgb_loss": curve["rgb_loss"].astype(np.float32),
        "curve_lr": curve["lr"].astype(np.float32),
    }
    if recorded[-1].global_vector is not None:
        arrays["global_vector"] = np.stack([s.global_vector for s in recorded])
        arrays["curve_global_loss"] = curve["global_loss"].astype(np.float32)
    save_npz(out / "run.npz", **arrays)
    last_step, elapsed = int(curve["step"][-1]), max(float(curve["elapsed_s"][-1]), 1e-9)
    folded = run.model.folded_state()
    summary = {
        "recipe": recipe,
        "config": {"train": asdict(run.config), "model": asdict(run.model_config)},
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
        "environment": environment_record(),
    }
    save_json(out / "summary.json", summary)


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
    run = train_pair(images, grids, _train_config(args), args.preset)
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
