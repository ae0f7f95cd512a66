"""Test-time training: overfit a fresh APM on one image's (or a few images') teacher target.

`OverfitRun` builds the model and optimiser; iterating it is a generator of frozen `Snapshot`s, one per
step, carrying the unfolded feature grid and RGB reconstruction every `record_every` steps. No printing,
no I/O, no global state: the CLI, the app and the tests all consume this same stream.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .device import autocast_dtype, resolve_device
from .errors import InputError
from .images import downsample_rgb, image_to_tensor
from .model import APM, ModelConfig, model_config_for
from .threads import keep_freed_memory


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300  # maximum optimisation steps
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # initialisation seed; same seed, inputs and config give the same losses on CPU
    record_every: int = 10  # keep the feature grid and RGB every k steps (and at the first and last)
    loss: str = "mse"  # feature loss: "mse" or "cosine"
    rgb_weight: float = 1.0  # weight of the RGB reconstruction loss
    global_weight: float = 1.0  # weight of the global (CLS) loss, when there is a global target
    target_loss: float | None = None  # stop once the feature loss is at or below this
    time_budget_s: float | None = None  # stop once this many seconds have passed
    precision: str = "auto"  # "auto" (bf16 autocast where the hardware has it), "bf16" or "fp32"
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", ...
    normalize_target: bool = True  # divide the target by its RMS so losses read as relative errors
    lr_decay_every: int | None = None  # multiply the lr by `lr_decay` every this many steps (None: constant lr)
    lr_decay: float = 0.1  # the step decay's factor (the official test-time training: x0.1 every 200 steps)

    def validate(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate must be a positive number, got {self.lr}")
        if self.record_every < 1:
            raise InputError(f"record_every must be at least 1, got {self.record_every}")
        if self.loss not in ("mse", "cosine"):
            raise InputError(f"loss must be 'mse' or 'cosine', got {self.loss!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if not (self.rgb_weight >= 0 and math.isfinite(self.rgb_weight)):
            raise InputError(f"the RGB loss weight must be a number >= 0, got {self.rgb_weight}")
        if not (self.global_weight >= 0 and math.isfinite(self.global_weight)):
            raise InputError(f"the global loss weight must be a number >= 0, got {self.global_weight}")
        if self.lr_decay_every is not None and self.lr_decay_every < 1:
            raise InputError(f"lr_decay_every must be at least 1 step, got {self.lr_decay_every}")
        if not 0 < self.lr_decay <= 1:
            raise InputError(f"lr_decay must be in (0, 1], got {self.lr_decay}")


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "cpu": TrainConfig(),
    "paper": TrainConfig(lr=1e-4),  # the paper's Adam lr 1e-4, MSE
}


@dataclass(frozen=True)
class Target:
    """What the APM is overfit to: a dense grid, a global vector, or both (leading batch axis optional)."""

    grid: np.ndarray | None = None  # (h, w, d) or (B, h, w, d)
    global_vector: np.ndarray | None = None  # (d_g,) or (B, d_g)

    @classmethod
    def from_array(cls, array: np.ndarray) -> "Target":
        """(h, w, d) is a dense target, (d,) a global one."""
        array = np.asarray(array)
        if array.ndim == 3:
            return cls(grid=array)
        if array.ndim == 1:
            return cls(global_vector=array)
        raise InputError(f"a target array must be (h, w, d) or (d,), got shape {array.shape}")


@dataclass(frozen=True)
class Snapshot:
    step: int  # optimisation steps taken, 1..total_steps; losses are from this step's forward pass
    total_steps: int  # the configured maximum
    feat_loss: float  # the feature loss (dense grid if there is one, else the global vector)
    rgb_loss: float  # MSE of the RGB head against the image at grid resolution
    global_loss: float | None  # the global-vector loss, when there is a global target
    loss: float  # the total optimised
    lr: float
    elapsed_s: float  # wall-clock seconds since the run started
    features: np.ndarray | None = None  # (h, w, d), (B, h, w, d) for a batch; on recorded steps
    rgb: np.ndarray | None = None  # (h, w, 3) in [0, 1], (B, h, w, 3) for a batch; on recorded steps
    global_vector: np.ndarray | None = None  # (d_g,) or (B, d_g); on recorded steps with a global head
    trigger_column: np.ndarray | None = None  # (column_dim,) or (B, column_dim); on recorded steps
    conv_filter: np.ndarray | None = None  # (C, 3, p, p): the conv filter's weights; on recorded steps
    done: bool = False  # the last snapshot of the run
    stop_reason: str | None = None  # on the last: "steps", "target_loss" or "time_budget"

    @property
    def recorded(self) -> bool:
        return self.features is not None


# helpers


def _as_images(images: Image.Image | Sequence[Image.Image]) -> tuple[list[Image.Image], bool]:
    if isinstance(images, Image.Image):
        return [images], True
    images = list(images)
    if not images or not all(isinstance(im, Image.Image) for im in images):
        raise InputError("images must be a PIL image or a non-empty list of PIL images")
    return images, False


def _check_array(name: str, array: np.ndarray, ndim: int, batch: int, single: bool) -> np.ndarray:
    """A target array as float32 with a leading batch axis, checked for shape and finite values."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"the {name} target must be a real numeric array, got dtype {array.dtype}")
    if array.ndim == ndim:
        array = np.broadcast_to(array, (batch, *array.shape)) if single or batch == 1 else None
        if array is None:
            raise InputError(f"{batch} images need a {name} target with a leading batch axis of {batch}")
    elif array.ndim != ndim + 1 or array.shape[0] != batch:
        raise InputError(f"the {name} target has shape {array.shape}; expected {ndim} axes (or {batch} stacked)")
    if array.size == 0:
        raise InputError(f"the {name} target is empty (shape {array.shape})")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"the {name} target contains NaN or infinite values")
    return array


def _feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8)).mean()
    return F.mse_loss(pred, target)


# the run


class OverfitRun:
    """A fresh APM, its optimiser and its inputs. Iterate it to train: it yields one `Snapshot` per step."""

    def __init__(
        self,
        images: Image.Image | Sequence[Image.Image],
        target: Target | np.ndarray,
        config: TrainConfig = TrainConfig(),
        model_config: ModelConfig | str = "cpu",
        *,
        init: "APM | None" = None,
        target_scale: float | None = None,
    ):
        """`init`: start from a trained APM's weights (test-time training from a checkpoint); its config is the
        model config, and the target must fit it. `target_scale`: divide the dense target by this instead of its
        own RMS (a checkpoint's training-set scale, so its outputs keep their meaning)."""
        if init is not None:
            model_config = init.config
        config.validate()
        self.config = config
        pil_images, self.single = _as_images(images)
        B = len(pil_images)
        target = target if isinstance(target, Target) else Target.from_array(target)
        if target.grid is None and target.global_vector is None:
            raise InputError("the target has neither a dense grid nor a global vector")

        grid = _check_array("dense", target.grid, 3, B, self.single) if target.grid is not None else None
        glob = (
            _check_array("global", target.global_vector, 1, B, self.single)
            if target.global_vector is not None
            else None
        )
        if grid is not None:
            h, w, d = grid.shape[1:]
            self.model_config = model_config_for(
                model_config, grid=(h, w), feature_dim=d, global_dim=None if glob is None else glob.shape[1]
            )
        else:
            self.model_config = model_config_for(model_config, feature_dim=glob.shape[1], global_dim=glob.shape[1])
        h, w = self.model_config.grid
        for im in pil_images:
            if min(im.size) < max(h, w):
                raise InputError(
                    f"an image of {im.size[0]} x {im.size[1]} pixels is too small for a {h} x {w} grid"
                )

        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        # RMS scales: losses become relative errors and the optimiser sees unit-scale targets
        self.grid_scale = float(np.sqrt(np.mean(grid**2))) if grid is not None and config.normalize_target else 1.0
        self.global_scale = float(np.sqrt(np.mean(glob**2))) if glob is not None and config.normalize_target else 1.0
        self.grid_scale = self.grid_scale or 1.0
        self.global_scale = self.global_scale or 1.0

        H, W = self.model_config.image_size
        self.images = torch.stack([image_to_tensor(im, (H, W)) for im in pil_images]).to(self.device)  # (B,3,H,W)
        self.rgb_target = torch.from_numpy(np.stack([downsample_rgb(im, h, w) for im in pil_images])).to(self.device)
        self.grid_target = None if grid is None else torch.from_numpy(grid / self.grid_scale).to(self.device)
        self.global_target = None if glob is None else torch.from_numpy(glob / self.global_scale).to(self.device)

        # seeded initialisation without touching the caller's global RNG state
        if init is not None:
            if (self.model_config.grid, self.model_config.feature_dim) != (init.config.grid, init.config.feature_dim):
                raise InputError(
                    f"the target is a {self.model_config.grid[0]} x {self.model_config.grid[1]} x "
                    f"{self.model_config.feature_dim} grid; the trained APM decodes "
                    f"{init.config.grid[0]} x {init.config.grid[1]} x {init.config.feature_dim}")
            if target_scale and grid is not None:
                self.grid_scale = float(target_scale)
                self.grid_target = torch.from_numpy(grid / self.grid_scale).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = APM(self.model_config).to(self.device)
        if init is not None:
            missing, unexpected = self.model.load_state_dict(init.state_dict(), strict=False)
            if unexpected or any(not k.startswith("global_head.") for k in missing):
                raise InputError(f"the trained APM's weights do not fit this run: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=fused)
        self.scheduler = (
            torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_decay_every, gamma=config.lr_decay)
            if config.lr_decay_every
            else None
        )
        self.steps_done = 0
        self.record_next = False  # set from any thread: the next step is recorded whatever record_every says

    def __iter__(self) -> Iterator[Snapshot]:
        return self._train()

    def state(self) -> dict:
        """Everything training changes: model and optimiser (and schedule) states, and the steps taken."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "steps_done": self.steps_done,
        }

    def load_state(self, state: dict) -> None:
        """Continue from `state()` (e.g. what a training process sent back)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.steps_done = int(state["steps_done"])

    def _step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], object]:
        cfg = self.config
        self.model.train()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.model(self.images)
        features = out.features.float()  # (B, h, w, d); losses in fp32
        losses = {"rgb": F.mse_loss(out.rgb.float(), self.rgb_target)}
        total = cfg.rgb_weight * losses["rgb"]
        if self.grid_target is not None:
            losses["feat"] = _feature_loss(features, self.grid_target, cfg.loss)
            total = total + losses["feat"]
        if self.global_target is not None:
            losses["global"] = _feature_loss(out.global_vector.float(), self.global_target, cfg.loss)
            total = total + cfg.global_weight * losses["global"]
            losses.setdefault("feat", losses["global"])
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return total, losses, out

    def _train(self) -> Iterator[Snapshot]:
        cfg = self.config
        keep_freed_memory()  # no page faults on every step's re-allocated tensors
        start = time.perf_counter()
        for step in range(self.steps_done + 1, cfg.steps + 1):
            lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used
            total, losses, out = self._step()
            losses = {k: float(v.detach()) for k, v in losses.items()}
            self.steps_done = step
            elapsed = time.perf_counter() - start
            feat_loss = losses["feat"]
            stop_reason = None
            if step == cfg.steps:
                stop_reason = "steps"
            elif cfg.target_loss is not None and feat_loss <= cfg.target_loss:
                stop_reason = "target_loss"
            elif cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
                stop_reason = "time_budget"
            record = stop_reason is not None or step == 1 or step % cfg.record_every == 0 or self.record_next
            if record:
                self.record_next = False
            arrays = self._arrays(out) if record else {}
            yield Snapshot(
                step=step,
                total_steps=cfg.steps,
                feat_loss=feat_loss,
                rgb_loss=losses["rgb"],
                global_loss=losses.get("global"),
                loss=float(total.detach()),
                lr=lr,
                elapsed_s=elapsed,
                done=stop_reason is not None,
                stop_reason=stop_reason,
                **arrays,
            )
            if stop_reason is not None:
                return

    def _arrays(self, out) -> dict[str, np.ndarray]:
        """The recorded arrays of a forward pass, in the target's own units, as float32 numpy."""
        features = out.features.detach().float().cpu().numpy() * self.grid_scale  # (B, h, w, d)
        rgb = out.rgb.detach().float().cpu().numpy()  # (B, h, w, 3)
        arrays = {"features": features, "rgb": rgb, "trigger_column": out.column.detach().float().cpu().numpy()}
        if out.global_vector is not None:
            arrays["global_vector"] = out.global_vector.detach().float().cpu().numpy() * self.global_scale
        if self.single:
            arrays = {k: v[0] for k, v in arrays.items()}
        arrays["conv_filter"] = self.model.conv_filter()  # after this step's update: the filter as it is now
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}

    # decoding after (or during) training

    @torch.no_grad()
    def decode_columns(self, columns: torch.Tensor, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode trigger columns (F, column_dim) -> features (F, h, w, d) and RGB (F, h, w, 3), numpy."""
        self.model.eval()
        h, w = self.model_config.grid
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            features, rgb = self.model.decode(columns.to(self.device), chunk_size=chunk_size)
        n = columns.shape[0]
        features = features.float().reshape(n, h, w, -1).cpu().numpy() * self.grid_scale
        rgb = rgb.float().reshape(n, h, w, 3).cpu().numpy()
        return features.astype(np.float32), rgb.astype(np.float32)

    @torch.no_grad()
    def trigger_columns(self) -> torch.Tensor:
        """The trained trigger columns of the run's images: (B, column_dim)."""
        self.model.eval()
        return self.model.trigger_column(self.images).float()

    def interpolate(self, alphas: Sequence[float] | np.ndarray, a: int = 0, b: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Decode along T(alpha) = T_a + alpha (T_b - T_a): features (F, h, w, d) and RGB (F, h, w, 3).

        alpha = 0 and 1 give images a's and b's own decodes; other values walk the field in between.
        """
        columns = self.trigger_columns()
        if not (0 <= a < columns.shape[0] and 0 <= b < columns.shape[0]):
            raise InputError(f"interpolation needs two trained images; this run has {columns.shape[0]}")
        alpha = torch.as_tensor(np.asarray(alphas, dtype=np.float32), device=columns.device)[:, None]  # (F, 1)
        mixed = columns[a][None] + alpha * (columns[b] - columns[a])[None]  # (F, column_dim)
        return self.decode_columns(mixed)


def overfit(
    images: Image.Image | Sequence[Image.Image],
    target: Target | np.ndarray,
    config: TrainConfig = TrainConfig(),
    model_config: ModelConfig | str = "cpu",
) -> Iterator[Snapshot]:
    """Overfit a fresh APM on image(s) and a target, yielding a frozen `Snapshot` per step.

    `close()` on the generator stops the run at once; nothing keeps running in the background.
    """
    yield from OverfitRun(images, target, config, model_config)


def train_config_for(preset: str = "cpu", **overrides) -> TrainConfig:
    """A named training preset with some fields replaced (None values are ignored)."""
    if preset not in TRAIN_PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {sorted(TRAIN_PRESETS)}")
    return replace(TRAIN_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
