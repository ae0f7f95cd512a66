"""Distil one APM over a folder of images (`python -m apm fit`), on one process or many (torchrun).

    config = FitConfig(teacher="dinov2", layer=11, epochs=10, batch=16)
    result = fit("images/", "runs/fit", config)          # or: torchrun --nproc_per_node N -m apm fit ...
    apm = APM.from_pretrained("runs/fit/checkpoint")     # islands of a new image in one forward pass

The teacher runs once per image, ever (`apm.data.FeatureCache`); the training loop reads the cache through a
DataLoader. Under torchrun each process trains on its own slice of every global batch (DistributedSampler over
the same seeded order) and DistributedDataParallel averages the gradients, so N processes at batch B / N take
the same steps as one process at batch B. Rank 0 alone logs and writes checkpoints. Checkpoints are written at
the end of every epoch (weights, optimiser state, the epoch): `resume=True` continues from the last one and
reaches the same weights as a run that was never interrupted (same seed, CPU).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data import CachedImages, CacheKey, FeatureCache, list_images, split
from .device import autocast_dtype, resolve_device
from .errors import InputError
from .io import load_tensors, save_json, save_tensors
from .model import APM, MODEL_PRESETS, model_config_for
from .threads import keep_freed_memory
from .train import TRAIN_PRESETS

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"  # the run folder's checkpoint subfolder
LOG_FIELDS = ("step", "epoch", "feat_loss", "rgb_loss", "lr", "images_per_s", "val_fidelity")


@dataclass(frozen=True)
class FitConfig:
    """Dataset training: teacher, model preset, optimisation, data pipeline."""

    teacher: str = "dinov2"  # teacher id
    layer: int | None = None  # teacher block; None: the last
    random_weights: bool | None = None  # untrained teacher; None: APM_RANDOM_WEIGHTS
    preset: str = "cpu"  # model preset (the grid and feature dim follow the teacher)
    epochs: int = 10
    batch: int = 16  # the global batch: split evenly over the processes
    lr: float | None = None  # Adam; None: the preset's
    rgb_weight: float = 1.0
    val_fraction: float = 0.1  # held out for the validation fidelity
    workers: int | None = None  # DataLoader worker processes per training process; None: auto (see `loader_workers`)
    seed: int = 0  # initialisation, split and data order
    precision: str = "fp32"  # fp32, bf16 or auto (bf16 only where native)
    device: str = "auto"  # auto, cpu, cuda (cuda:LOCAL_RANK under torchrun)
    log_every: int = 10  # a CSV row every this many steps
    cache_dir: str | None = None  # the feature cache's root; None: <APM cache>/fit

    def validate(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; choose one of: {', '.join(MODEL_PRESETS)}")
        if self.epochs < 1 or self.batch < 1 or (self.workers or 0) < 0 or self.log_every < 1:
            raise InputError("--epochs and --batch must be at least 1, --workers at least 0")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else TRAIN_PRESETS[self.preset].lr


@dataclass
class FitResult:
    out: Path
    steps: int
    epochs_done: int
    images: int  # training images
    val_images: int
    skipped: int  # unreadable images
    cache_hits: int
    cache_computed: int
    val_fidelity: list[float] = field(default_factory=list)  # per epoch (nan without a validation split)
    images_per_s: float = 0.0  # training throughput of this run (all processes together)
    final_feat_loss: float = float("nan")


# processes


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> Dist:
    """torchrun's environment -> an initialised process group (gloo on CPU, NCCL on CUDA); one process: none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank)


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _rank_mean(values: tuple[torch.Tensor, ...], d: Dist) -> list[float]:
    """Each loss averaged over the processes (their shards make up the global batch); as is on one process."""
    stacked = torch.stack([v.detach().float() for v in values])  # (k,)
    if d.world > 1:
        import torch.distributed as dist

        dist.all_reduce(stacked)  # every rank logs at the same steps, so every rank joins
        stacked = stacked / d.world
    return [float(v) for v in stacked.cpu()]


def loader_workers(requested: int | None, world: int = 1) -> int:
    """DataLoader workers: as asked, or auto: none on a small CPU (reading the memory-mapped cache in the training
    process is faster there than feeding a worker: measured on 2 cores, 1.03 x the in-memory rate against 0.90 x
    with one worker), and up to 4 per process where cores are left over after training."""
    if requested is not None:
        return int(requested)
    spare = (os.cpu_count() or 1) // max(world, 1) - 2
    return max(0, min(4, spare))


# the model as DDP sees it: tensors out


class _Forward(torch.nn.Module):
    def __init__(self, apm: APM):
        super().__init__()
        self.apm = apm

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.apm(images)
        return out.features, out.rgb  # (B, h, w, d), (B, h, w, 3)


# optimiser state on disk: safetensors + JSON, no pickle


def _save_optimizer(folder: Path, optimizer: torch.optim.Optimizer, trainer: dict) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    save_tensors(folder / "optimizer.safetensors", tensors)
    save_json(folder / "trainer.json", {**trainer, "param_groups": state["param_groups"], "scalars": scalars})


def _load_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> dict:
    trainer = json.loads((folder / "trainer.json").read_text())
    tensors = load_tensors(folder / "optimizer.safetensors")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in trainer["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": trainer["param_groups"]})
    return trainer


# validation


@torch.no_grad()
def fidelity(model: APM, dataset: CachedImages, device: torch.device, batch: int = 16) -> float:
    """Mean cosine similarity between the APM's features and the teacher's, over locations and images."""
    if len(dataset) == 0:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        images = torch.stack([x[0] for x in items]).to(device).float() / 255.0
        target = torch.stack([x[1] for x in items]).to(device).float()
        features = model(images).features.float()
        cos = F.cosine_similarity(features, target, dim=-1)  # (B, h, w)
        total += float(cos.sum())
        count += cos.numel()
    model.train()
    return total / count


# the loop


def fit(
    images_dir: str | Path,
    out: str | Path,
    config: FitConfig = FitConfig(),
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train one APM over every image in `images_dir`; checkpoints and logs go to `out`."""
    config.validate()
    keep_freed_memory()  # no page faults on every step's re-allocated tensors
    d = _init_distributed(config.device)
    out = Path(out)
    device = _device(config.device, d)
    amp = autocast_dtype(config.precision, device)

    # 1. teacher features, once per image (rank 0 computes; the others read)
    from .teachers import create_teacher, teacher_spec

    spec = teacher_spec(config.teacher)
    layer = spec.default_layer if config.layer is None else config.layer
    if not 0 <= layer < spec.num_layers:
        raise InputError(f"layer {layer} does not exist: {spec.label()} has layers 0-{spec.num_layers - 1}")
    grid, feature_dim = spec.layers[layer].grid, spec.layers[layer].feature_dim
    model_config = model_config_for(config.preset, grid=grid, feature_dim=feature_dim)
    teacher_holder: list = []

    def encode(image) -> np.ndarray:
        if not teacher_holder:
            teacher_holder.append(create_teacher(config.teacher, layer=layer, random_weights=config.random_weights,
                                                 device=str(device) if device.type == "cuda" else "cpu"))
        return teacher_holder[0].encode(image, use_cache=False).grid

    from .env import random_weights_default

    random_weights = random_weights_default() if config.random_weights is None else bool(config.random_weights)
    key = CacheKey(spec.id, layer, random_weights, spec.image_size, model_config.image_size, tuple(grid))
    cache = FeatureCache(key, config.cache_dir)
    paths = list_images(images_dir)
    if d.main:
        bar = _bar(len(paths), "teacher features", progress)
        report = cache.build(paths, encode, progress=bar.update if bar else None)
        if bar:
            bar.close()
    _barrier(d)
    if not d.main:
        cache = FeatureCache(key, config.cache_dir)
        report = cache.build(paths, encode)  # everything is cached by now: hashes only
    teacher_holder.clear()
    if not report.hashes:
        raise InputError(f"none of the {len(paths)} images in {images_dir} could be read")
    train_hashes, val_hashes = split(report.hashes, config.val_fraction, config.seed)
    if len(train_hashes) < config.batch:
        raise InputError(f"{len(train_hashes)} training images are fewer than one batch of {config.batch}")
    if config.batch % d.world:
        raise InputError(f"--batch {config.batch} does not split evenly over {d.world} processes")
    scale = cache.feature_rms(train_hashes)

    # 2. model, optimiser, data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        apm = APM(model_config)
    apm.to(device).train()
    optimizer = torch.optim.Adam(apm.parameters(), lr=config.effective_lr, fused=device.type in ("cpu", "cuda"))
    start_epoch, step = 0, 0
    ckpt = out / CHECKPOINT
    if resume:
        if not (ckpt / "trainer.json").is_file():
            raise InputError(f"nothing to resume: {ckpt} has no trainer.json (run without --resume)")
        state = load_tensors(ckpt / "model.safetensors")
        apm.load_state_dict(state)
        trainer = _load_optimizer(ckpt, optimizer)
        if trainer.get("config", {}).get("seed") != config.seed or trainer.get("key") != json.loads(json.dumps(asdict(key))):
            raise InputError(f"{ckpt} was trained with another teacher, layer or seed; resume needs the same ones")
        start_epoch, step = int(trainer["epoch"]), int(trainer["step"])
    model = _Forward(apm)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)

    train_set, val_set = CachedImages(cache, train_hashes), CachedImages(cache, val_hashes)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=d.world, rank=d.rank, shuffle=True,
                                                  seed=config.seed, drop_last=True)
    workers = loader_workers(config.workers, d.world)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch // d.world, sampler=sampler, num_workers=workers,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )
    steps_per_epoch = len(loader)

    # 3. train
    result = FitResult(out, step, start_epoch, len(train_hashes), len(val_hashes), len(report.skipped),
                       report.hits, report.computed)
    writer = _Log(out / "log.csv", append=resume) if d.main else None
    if d.main:
        save_json(out / "fit.json", {"config": asdict(config), "key": asdict(key), "model": asdict(model_config),
                                      "images": len(paths), "train": len(train_hashes), "val": len(val_hashes),
                                      "skipped": [[str(p), why] for p, why in report.skipped]})
    bar = _bar(steps_per_epoch * (config.epochs - start_epoch), "fit", progress and d.main)
    images_seen, train_time = 0, 0.0
    feat_value = rgb_value = float("nan")
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        tick = time.perf_counter()
        for images, target, rgb_target in loader:
            images = images.to(device, non_blocking=True).float() / 255.0  # (b, 3, H, W)
            target = target.to(device, non_blocking=True).float() / scale  # (b, h, w, d)
            rgb_target = rgb_target.to(device, non_blocking=True).float()  # (b, h, w, 3)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                features, rgb = model(images)
            feat_loss = F.mse_loss(features.float(), target)
            rgb_loss = F.mse_loss(rgb.float(), rgb_target)
            optimizer.zero_grad(set_to_none=True)
            (feat_loss + config.rgb_weight * rgb_loss).backward()
            optimizer.step()
            step += 1
            images_seen += config.batch
            if step % config.log_every == 0 or step == 1:
                feat_value, rgb_value = _rank_mean((feat_loss, rgb_loss), d)  # the global batch's losses
                rate = images_seen / max(train_time + time.perf_counter() - tick, 1e-9)
                row = {"step": step, "epoch": epoch, "feat_loss": feat_value, "rgb_loss": rgb_value,
                       "lr": optimizer.param_groups[0]["lr"], "images_per_s": rate, "val_fidelity": ""}
                if writer:
                    writer.write(row)
                if bar:
                    bar.set_postfix(feat=f"{feat_value:.3e}", rgb=f"{rgb_value:.3e}", img_s=f"{rate:.1f}")
                if on_step:
                    on_step(row)
            if bar:
                bar.update(1)
        train_time += time.perf_counter() - tick
        feat_value, rgb_value = _rank_mean((feat_loss, rgb_loss), d)
        val = fidelity(apm, val_set, device) if d.main else float("nan")
        result.val_fidelity.append(val)
        if d.main:
            writer.write({"step": step, "epoch": epoch, "feat_loss": feat_value, "rgb_loss": rgb_value,
                          "lr": optimizer.param_groups[0]["lr"], "images_per_s": images_seen / max(train_time, 1e-9),
                          "val_fidelity": val})
            meta = {"teacher": spec.id, "layer": layer, "random_weights": random_weights, "feature_scale": scale,
                    "teacher_label": spec.label(layer, random_weights), "epoch": epoch + 1, "step": step, "val_fidelity": val,
                    "images": len(train_hashes)}
            apm.save_pretrained(ckpt, meta=meta)
            _save_optimizer(ckpt, optimizer, {"epoch": epoch + 1, "step": step, "config": asdict(config),
                                              "key": asdict(key)})
            if progress:
                print(f"epoch {epoch + 1}/{config.epochs}: feature loss {feat_value:.3e}, validation fidelity "
                      f"{val:.4f}, {images_seen / max(train_time, 1e-9):.1f} images/s", file=sys.stderr)
        _barrier(d)
    if bar:
        bar.close()
    result.steps, result.epochs_done = step, config.epochs
    result.images_per_s = images_seen / max(train_time, 1e-9)
    result.final_feat_loss = feat_value
    if d.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result


def _device(name: str, d: Dist) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and d.world > 1:
        return torch.device("cuda", d.local_rank)
    return device


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True, leave=False)


class _Log:
    """The CSV log (rank 0): one row every `log_every` steps and one per epoch with the validation fidelity."""

    def __init__(self, path: Path, append: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not (append and path.is_file())
        self.file = open(path, "w" if new else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()


# one forward pass: islands of a new image


@torch.no_grad()
def predict(apm: APM, image, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """A trained APM on one PIL image: features (h, w, d) in the teacher's units, colours (h, w, 3). No training."""
    from .images import image_to_tensor

    device = torch.device(device)
    x = image_to_tensor(image, apm.config.image_size)[None].to(device)  # (1, 3, H, W)
    out = apm.to(device).eval()(x)
    scale = float(apm.meta.get("feature_scale", 1.0))
    return out.features[0].float().cpu().numpy() * scale, out.rgb[0].float().cpu().numpy()
