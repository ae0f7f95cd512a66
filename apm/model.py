"""The Asynchronous Perception Machine, top to bottom.

One conv filter (kernel = stride = patch size) squeezes the image into the *trigger column*. Each grid
location (i, j) gets a query = [trigger column, sincos(i, j)]; one shared MLP maps a query to that
location's feature, and an RGB head maps [feature, query] to its colour. Folded: the parameters.
Unfolded: the h*w queries. Locations never interact, so they can be decoded in any order and any chunk.

Implementation note: the first layer of the MLP and of the RGB head see a concatenation
[column, position] (and [feature, column, position]). They are stored as one Linear per input block, and
the column part is computed once per image rather than once per location: the same maths as one Linear
over the concatenated query (`first_layer()` gives that weight), without materialising the
(h*w, query_dim) unfolded matrix on every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError
from .io import WEIGHTS_FILE, load_tensors, read_weights_config, save_weights_folder

# helpers


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos positional encoding: (h * w, dim), row-major over (i, j), values in [-1, 1].

    A quarter of the channels each for sin(i), cos(i), sin(j), cos(j) at geometrically spaced frequencies.
    `dim` need not be a multiple of 4: the encoding is computed for the next multiple and truncated.
    """
    quarter = max(1, math.ceil(dim / 4))
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (quarter,)
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    yi = ii.reshape(-1, 1) * omega  # (h*w, quarter)
    xj = jj.reshape(-1, 1) * omega  # (h*w, quarter)
    enc = torch.cat([yi.sin(), yi.cos(), xj.sin(), xj.cos()], dim=1)  # (h*w, 4*quarter)
    return enc[:, :dim].float().contiguous()


def official_positional_code(dim: int, h: int, w: int) -> torch.Tensor:
    """The official code's layout as (h*w, dim), written from its definition: the first half of the channels
    encodes j, the second i; within a half, even channels are sin and odd ones cos of the position times
    10000^(-2k/half). The frequencies are `sincos_2d`'s: the two codes are one channel permutation apart."""
    if dim % 4:
        raise ValueError(f"the official positional code needs a multiple of 4 channels, got {dim}")
    half = dim // 2
    freq = torch.exp(torch.arange(0.0, half, 2, dtype=torch.float64) * -(math.log(10000.0) / half))  # (half/2,)
    jj = torch.arange(float(w), dtype=torch.float64)[:, None] * freq  # (w, half/2)
    ii = torch.arange(float(h), dtype=torch.float64)[:, None] * freq  # (h, half/2)
    code = torch.zeros(h, w, dim, dtype=torch.float64)
    code[:, :, 0:half:2] = jj.sin()[None, :, :]
    code[:, :, 1:half:2] = jj.cos()[None, :, :]
    code[:, :, half::2] = ii.sin()[:, None, :]
    code[:, :, half + 1 :: 2] = ii.cos()[:, None, :]
    return code.reshape(h * w, dim).float().contiguous()


def positional_code(kind: str, h: int, w: int, dim: int) -> torch.Tensor:
    """(h*w, dim) location code: "sincos" (this project's blocks) or "official" (the official code's interleaving)."""
    return official_positional_code(dim, h, w) if kind == "official" else sincos_2d(h, w, dim)


def grid_locations(h: int, w: int) -> torch.Tensor:
    """All (i, j) locations of an h x w grid in row-major order: (h * w, 2) int64."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([ii.reshape(-1), jj.reshape(-1)], dim=1)


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _init_as_one_linear(*blocks: nn.Linear) -> None:
    """Initialise Linear blocks that read parts of one input as torch initialises a single Linear over all of it."""
    bound = 1.0 / math.sqrt(sum(b.in_features for b in blocks))
    with torch.no_grad():
        for block in blocks:
            block.weight.uniform_(-bound, bound)
            if block.bias is not None:
                block.bias.uniform_(-bound, bound)


def _mlp(widths: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or k < len(widths) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


# config


@dataclass(frozen=True)
class ModelConfig:
    grid: tuple[int, int] = (16, 16)  # (h, w) locations; follows the target's grid when one is given
    patch_size: int = 8  # conv kernel = stride; the input image is (h * p, w * p) pixels
    column_channels: int = 1  # C: channels of the conv filter; trigger column has C * h * w entries
    pos_dim: int = 256  # length of the positional half of each query
    hidden: tuple[int, ...] = (1024, 1024, 512)  # widths of the shared MLP after the query
    feature_dim: int = 384  # d: the feature head's output, the teacher's channel count
    rgb_hidden: tuple[int, ...] = (64, 64)  # widths of the RGB head before its 3 outputs
    activation: str = "relu"  # relu | gelu | silu | tanh
    global_dim: int | None = None  # length of the global (CLS) target; None: no global head
    global_heads: int = 4  # attention heads of the global head (reduced until it divides feature_dim)
    global_head: str = "attention"  # "attention": LayerNorm, pooling, projection; "paper": the pooling output itself
    init: str = "torch"  # "torch": PyTorch's defaults; "normal": every parameter N(0, 0.01), as the official TTT
    rgb_output: str = "sigmoid"  # colour head output: "sigmoid" in [0, 1], or "relu" (the official checkpoint's)
    input_scaling: str = "imagenet"  # "imagenet": (x - mean) / std; "minmax": whole image to [0, 1] (official)
    pos_code: str = "sincos"  # location codes' channel layout: "sincos" (blocks) or "official" (interleaved)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch_size, self.grid[1] * self.patch_size

    @property
    def column_dim(self) -> int:
        return self.column_channels * self.grid[0] * self.grid[1]

    @property
    def query_dim(self) -> int:
        return self.column_dim + self.pos_dim

    def validate(self) -> None:
        h, w = self.grid
        if h < 2 or w < 2:
            raise ValueError(f"grid {h} x {w} is too small: the APM needs at least 2 x 2 locations")
        if self.patch_size < 1 or self.column_channels < 1 or self.pos_dim < 4 or self.feature_dim < 1:
            raise ValueError(f"invalid model config: {self}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, not {self.activation!r}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.global_head == "paper" and self.global_dim not in (None, self.feature_dim):
            raise ValueError(
                f"the paper's pooling head predicts the global vector in the feature space: global_dim "
                f"{self.global_dim} must equal feature_dim {self.feature_dim}"
            )


    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A config from a config.json's `model` entry (unknown keys are an error: a newer format)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"the checkpoint's config has unknown model fields {unknown}: is it from a newer version?")
        values = {k: tuple(v) if k in _TUPLE_FIELDS and v is not None else v for k, v in values.items()}
        try:
            config = cls(**values)
            config.validate()
        except (TypeError, ValueError) as exc:
            raise InputError(f"the checkpoint's model config is invalid: {exc}") from None
        return config


_TUPLE_FIELDS = ("grid", "hidden", "rgb_hidden")
_CHOICES = {
    "global_head": ("attention", "paper"),
    "init": ("torch", "normal"),
    "rgb_output": ("sigmoid", "relu"),
    "input_scaling": ("imagenet", "minmax"),
    "pos_code": ("sincos", "official"),
}


GRID_CHOICES = (16, 24, 32)  # grid sides the app, the CLI and the API offer (32 x 32: the paper's 448 px)


def check_grid(value: Any) -> int | None:
    """A grid setting -> locations a side (None, '', 0 or 'auto': the teacher's own). The one home of this rule:
    the app's picker, the API, links, the CLI and `Experiment` all read a grid through it."""
    if value is None or value in ("", 0, "auto"):
        return None
    choices = ", ".join(map(str, GRID_CHOICES))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"grid must be one of {choices} locations a side, not {value!r}") from None
    if not math.isfinite(number) or number != int(number) or int(number) not in GRID_CHOICES:
        raise InputError(f"grid must be one of {choices} locations a side, not {value!r}")
    return int(number)

MODEL_PRESETS: dict[str, ModelConfig] = {
    # fast on 2 CPU cores: a 16 x 16 grid trains at > 60 steps/s and still forms islands
    "cpu": ModelConfig(),
    # the paper: 448 px, patch 14, 32 x 32 grid, query 1024 + 1024, MLP 2048-4096-4096-4096-2048-1024
    "paper": ModelConfig(
        grid=(32, 32),
        patch_size=14,
        column_channels=1,
        pos_dim=1024,
        hidden=(4096, 4096, 4096, 2048, 1024),
        feature_dim=1024,
        rgb_hidden=(256, 256),
        activation="relu",
    ),
}


def model_config_for(
    preset: str | ModelConfig = "cpu",
    grid: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    global_dim: int | None = None,
) -> ModelConfig:
    """A preset resized to a target: its grid (h, w), feature dim d and global dim."""
    if isinstance(preset, ModelConfig):
        cfg = preset
    elif preset in MODEL_PRESETS:
        cfg = MODEL_PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(MODEL_PRESETS)}")
    changes: dict = {}
    if grid is not None:
        changes["grid"] = (int(grid[0]), int(grid[1]))
    if feature_dim is not None:
        changes["feature_dim"] = int(feature_dim)
    if global_dim is not None:
        changes["global_dim"] = int(global_dim)
    cfg = replace(cfg, **changes)
    cfg.validate()
    return cfg


# modules


class Column(nn.Module):
    """One conv filter with kernel = stride = patch: image (B, 3, H, W) -> trigger column (B, C * h * w)."""

    # ImageNet statistics: a fixed input normalisation so the filter starts in a sensible range
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, patch_size: int, channels: int, scaling: str = "imagenet"):
        super().__init__()
        self.scaling = scaling
        self.conv = nn.Conv2d(3, channels, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def scale(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> what the filter sees."""
        if self.scaling == "minmax":  # each image's darkest value to 0, brightest to 1, over all channels
            lo = images.amin(dim=(1, 2, 3), keepdim=True)
            hi = images.amax(dim=(1, 2, 3), keepdim=True)
            return (images - lo) / (hi - lo).clamp_min(1e-12)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # the conv as one matmul over the image's patches (kernel = stride: the patches tile the image): the same
        # sums as `self.conv`, without oneDNN's convolution, which costs more than the MLP's biggest layer on a CPU
        x = self.scale(images)  # (B, 3, H, W)
        B, p = x.shape[0], self.conv.kernel_size[0]
        h, w = x.shape[2] // p, x.shape[3] // p
        patches = x[:, :, : h * p, : w * p].reshape(B, 3, h, p, w, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, 3, p, p)
        out = F.linear(patches.reshape(B, h * w, 3 * p * p), self.conv.weight.flatten(1), self.conv.bias)  # (B, hw, C)
        return out.transpose(1, 2).flatten(1)  # (B, C, h*w) -> (B, C * h * w), the conv's channel-major order


class GlobalHead(nn.Module):
    """One learned query attending over the unfolded feature grid (plus an output positional encoding)."""

    def __init__(self, grid: tuple[int, int], feature_dim: int, global_dim: int, heads: int, kind: str = "attention",
                 pos_code: str = "sincos"):
        super().__init__()
        while feature_dim % heads:
            heads -= 1
        self.kind = kind
        self.query = nn.Parameter(torch.randn(1, 1, feature_dim) * 0.02)
        self.register_buffer("pos", positional_code(pos_code, grid[0], grid[1], feature_dim), persistent=False)
        self.attn = nn.MultiheadAttention(feature_dim, heads, batch_first=True)
        # "paper": one learned query attends over [features + a fixed sin-cos code]; its output is the prediction
        self.norm = nn.LayerNorm(feature_dim) if kind == "attention" else nn.Identity()
        self.proj = nn.Linear(feature_dim, global_dim) if kind == "attention" else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B = features.shape[0]
        kv = self.norm(features) + self.pos  # (B, N, d)
        pooled, _ = self.attn(self.query.expand(B, -1, -1), kv, kv, need_weights=False)  # (B, 1, d)
        return self.proj(pooled[:, 0])  # (B, global_dim)


@dataclass(frozen=True)
class APMOutput:
    features: torch.Tensor  # (B, h, w, d)
    rgb: torch.Tensor  # (B, h, w, 3) in [0, 1] (sigmoid output)
    global_vector: torch.Tensor | None  # (B, global_dim)
    column: torch.Tensor  # (B, column_dim): the trigger columns the grid was decoded from


@dataclass(frozen=True)
class FoldedState:
    """What the folded APM is: its parameters, by part."""

    param_count: int
    param_bytes: int
    parts: dict[str, int] = field(default_factory=dict)  # part name -> parameter count


class APM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.meta: dict[str, Any] = {}  # what it was trained on (teacher id, layer, feature scale); saved with it
        h, w = config.grid
        self.column = Column(config.patch_size, config.column_channels, config.input_scaling)
        self.register_buffer("pos", positional_code(config.pos_code, h, w, config.pos_dim), persistent=False)  # (h*w, p)
        widths = [config.query_dim, *config.hidden]
        # the first layers see [column, position] and [feature, column, position]: one Linear per input block
        self.mlp_in_column = nn.Linear(config.column_dim, widths[1])
        self.mlp_in_position = nn.Linear(config.pos_dim, widths[1], bias=False)
        _init_as_one_linear(self.mlp_in_column, self.mlp_in_position)
        self.mlp = _mlp(widths[1:], config.activation, last_activation=True)
        self.act = _ACTIVATIONS[config.activation]()
        self.feature_head = nn.Linear(widths[-1], config.feature_dim)
        r0 = config.rgb_hidden[0]
        self.rgb_in_feature = nn.Linear(config.feature_dim, r0, bias=False)
        self.rgb_in_column = nn.Linear(config.column_dim, r0)
        self.rgb_in_position = nn.Linear(config.pos_dim, r0, bias=False)
        _init_as_one_linear(self.rgb_in_column, self.rgb_in_feature, self.rgb_in_position)
        self.rgb_mlp = _mlp([*config.rgb_hidden, 3], config.activation, last_activation=False)
        self.global_head = (
            GlobalHead(config.grid, config.feature_dim, config.global_dim, config.global_heads, config.global_head,
                       config.pos_code)
            if config.global_dim
            else None
        )
        if config.init == "normal":  # the official test-time training draws every parameter from N(0, 0.01)
            with torch.no_grad():
                for param in self.parameters():
                    param.normal_(0.0, 0.01)

    # on disk: safetensors + JSON (`apm.io`'s weights folder; `apm.checkpoint` finds folders, the Hub, uploads)

    def save_pretrained(self, folder, meta: dict | None = None) -> Path:
        """Write config.json and model.safetensors to `folder` (atomically); returns the folder."""
        return save_weights_folder(Path(folder), self.config.to_dict(), meta if meta is not None else self.meta,
                                   self.state_dict())

    @classmethod
    def from_pretrained(cls, folder, device: str | torch.device = "cpu") -> APM:
        """The APM saved in `folder` (by `save_pretrained`, `apm fit` or `apm convert-official`), in eval mode."""
        values, meta = read_weights_config(Path(folder))
        config = ModelConfig.from_dict(values)
        weights = Path(folder) / WEIGHTS_FILE
        if not weights.is_file():
            raise InputError(f"{folder} has a config but no {WEIGHTS_FILE}")
        state = load_tensors(weights)
        model = cls(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if expected != found:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
            detail = "; ".join(part for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {extra[:3]}" if extra else "",
                f"shape of {wrong[0]} is {found[wrong[0]]}, the config needs {expected[wrong[0]]}" if wrong else "",
            ) if part)
            raise InputError(f"the weights in {weights} do not match its config.json: {detail}")
        model.load_state_dict(state, strict=True)
        model.meta = meta
        return model.to(device).eval()

    # folded -> unfolded

    def trigger_column(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, h*p, w*p) in [0, 1] -> trigger columns (B, column_dim)."""
        expected = self.config.image_size
        if tuple(images.shape[-2:]) != expected:
            raise ValueError(f"images must be {expected[0]} x {expected[1]} pixels, got {tuple(images.shape[-2:])}")
        return self.column(images)

    def location_index(self, locations: torch.Tensor) -> torch.Tensor:
        """(n, 2) (i, j) locations -> (n,) row-major indices, checked against the grid."""
        h, w = self.config.grid
        if locations.ndim != 2 or locations.shape[1] != 2:
            raise ValueError(f"locations must be (n, 2) (i, j) pairs, got shape {tuple(locations.shape)}")
        i, j = locations[:, 0].long(), locations[:, 1].long()
        if (i < 0).any() or (i >= h).any() or (j < 0).any() or (j >= w).any():
            raise ValueError(f"locations outside the {h} x {w} grid")
        return i * w + j

    def unfolded_queries(self, column: torch.Tensor) -> torch.Tensor:
        """The unfolded state, materialised: (B, column_dim) -> (B, h*w, query_dim) = [column, position]."""
        B, n = column.shape[0], self.pos.shape[0]
        return torch.cat([column[:, None, :].expand(B, n, -1), self.pos[None].expand(B, n, -1)], dim=-1)

    # decoding

    def column_parts(self, column: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The column's halves of the two first layers, (B, H0) and (B, R0): once per image, whatever the chunks."""
        return self.mlp_in_column(column), self.rgb_in_column(column)

    def query(
        self,
        column: torch.Tensor,
        locations: torch.Tensor | None = None,
        parts: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode features (B, n, d) and colours (B, n, 3) at n locations ((n, 2) (i, j); None: all, row-major).

        Each location's result depends only on its own query, never on which others share the call.
        `parts`: `column_parts(column)`, when the caller decodes the same column in several calls.
        """
        pos = self.pos if locations is None else self.pos[self.location_index(locations)]  # (n, pos_dim)
        col_part, rgb_col = self.column_parts(column) if parts is None else parts  # (B, H0), (B, R0)
        B, n = col_part.shape[0], pos.shape[0]
        pos_part = self.mlp_in_position(pos)  # (n, H0)
        # the MLP runs on (B * n, width) rows: a Linear over 2D input is one addmm forward and backward (a 3D input
        # costs a separate bias add and bias-gradient sum per layer, about 15% of a CPU step)
        queries = self.act(col_part[:, None, :] + pos_part[None, :, :]).reshape(B * n, col_part.shape[1])  # (B*n, H0)
        features = self.feature_head(self.mlp(queries))  # (B*n, d)

        rgb_pos = self.rgb_in_position(pos)  # (n, R0)
        R0 = rgb_col.shape[1]
        rgb_hidden = self.rgb_in_feature(features).reshape(B, n, R0) + rgb_col[:, None, :] + rgb_pos[None, :, :]
        rgb = self.rgb_mlp(self.act(rgb_hidden).reshape(B * n, R0))  # (B*n, 3)
        rgb = torch.relu(rgb) if self.config.rgb_output == "relu" else torch.sigmoid(rgb)
        return features.reshape(B, n, features.shape[-1]), rgb.reshape(B, n, 3)  # (B, n, d), (B, n, 3)

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared MLP's first layer as one (H0, column_dim + pos_dim) weight and its bias."""
        return torch.cat([self.mlp_in_column.weight, self.mlp_in_position.weight], dim=1), self.mlp_in_column.bias

    def rgb_first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The RGB head's first layer as one (R0, d + column_dim + pos_dim) weight and its bias."""
        weight = torch.cat([self.rgb_in_feature.weight, self.rgb_in_column.weight, self.rgb_in_position.weight], dim=1)
        return weight, self.rgb_in_column.bias

    def forward(self, images: torch.Tensor) -> APMOutput:
        """Images (B, 3, h*p, w*p) in [0, 1] -> the full unfolded grid of features and colours."""
        h, w = self.config.grid
        column = self.trigger_column(images)  # (B, column_dim)
        features, rgb = self.query(column)  # (B, h*w, d), (B, h*w, 3)
        global_vector = self.global_head(features) if self.global_head is not None else None
        B = images.shape[0]
        return APMOutput(features.reshape(B, h, w, -1), rgb.reshape(B, h, w, 3), global_vector, column)

    @torch.no_grad()
    def decode(
        self, column: torch.Tensor, locations: torch.Tensor | None = None, chunk_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference in chunks of `chunk_size` locations: memory is bounded by the chunk, not the grid.

        Features (B, n, d) and colours (B, n, 3) at `locations` ((n, 2) (i, j); None: all, row-major), in that order.
        """
        parts = list(self.decode_chunks(column, locations, chunk_size))
        return torch.cat([f for _, f, _ in parts], dim=1), torch.cat([c for _, _, c in parts], dim=1)

    @torch.no_grad()
    def decode_chunks(
        self, column: torch.Tensor, locations: torch.Tensor | None = None, chunk_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Asynchronous decoding: (locations (k, 2), features (B, k, d), colours (B, k, 3)) per chunk of `locations`.

        Only the chunk's activations are alive at a time (a consumer that drops each chunk keeps memory bounded
        by the chunk); the column's halves of the first layers are computed once for all chunks.
        """
        if locations is None:
            locations = grid_locations(*self.config.grid).to(column.device)
        self.location_index(locations)  # every location checked before any work
        n = locations.shape[0]
        step = n if not chunk_size else max(1, int(chunk_size))
        parts = self.column_parts(column)
        for k in range(0, max(n, 1), step):
            chunk = locations[k : k + step]
            yield (chunk, *self.query(column, chunk, parts))

    def decode_flops(self, n: int | None = None, batch: int = 1) -> int:
        """FLOPs (2 per multiply-add) of decoding n locations (None: the grid) as `decode_chunks` does: the column's
        halves of the first layers once, then every location's matmuls. Element-wise work is not counted."""
        cfg = self.config
        n = cfg.grid[0] * cfg.grid[1] if n is None else int(n)
        widths = [cfg.query_dim, *cfg.hidden]
        rgb_widths = [*cfg.rgb_hidden, 3]
        per_location = cfg.pos_dim * (widths[1] + cfg.rgb_hidden[0])  # the positional halves of the first layers
        per_location += sum(a * b for a, b in zip(widths[1:-1], widths[2:]))  # shared MLP after layer 0
        per_location += widths[-1] * cfg.feature_dim  # feature head
        per_location += cfg.feature_dim * cfg.rgb_hidden[0]  # feature half of the RGB head's first layer
        per_location += sum(a * b for a, b in zip(rgb_widths[:-1], rgb_widths[1:]))
        per_image = cfg.column_dim * (widths[1] + cfg.rgb_hidden[0])  # the column halves
        return 2 * batch * (n * per_location + per_image)

    # introspection

    @torch.no_grad()
    def positional_code(self) -> np.ndarray:
        """The positional half of the unfolded queries: (h*w, pos_dim) float32, row-major over (i, j)."""
        return self.pos.float().cpu().numpy().copy()

    @torch.no_grad()
    def conv_filter(self) -> np.ndarray:
        """The conv filter's weights: (C, 3, p, p) float32 (what squeezes the image into the trigger column)."""
        return self.column.conv.weight.detach().float().cpu().numpy().copy()

    def folded_state(self) -> FoldedState:
        """Parameter count and bytes of the folded APM, by part."""
        parts = {
            "conv filter (column)": self.column,
            "shared MLP": nn.ModuleList([self.mlp_in_column, self.mlp_in_position, self.mlp]),
            "feature head": self.feature_head,
            "RGB head": nn.ModuleList([self.rgb_in_feature, self.rgb_in_column, self.rgb_in_position, self.rgb_mlp]),
        }
        if self.global_head is not None:
            parts["global head"] = self.global_head
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
        params = list(self.parameters())
        return FoldedState(
            param_count=sum(p.numel() for p in params),
            param_bytes=sum(p.numel() * p.element_size() for p in params),
            parts=counts,
        )

    def flops_per_step(self, batch: int = 1) -> int:
        """FLOPs (2 per multiply-add) of one training step as implemented: forward plus backward.

        Backward costs twice the forward for every matmul whose input needs a gradient, and once for the
        positional halves of the first layers (their input is a fixed buffer: only the weight gradient).
        """
        cfg = self.config
        n = cfg.grid[0] * cfg.grid[1]
        widths = [cfg.query_dim, *cfg.hidden]
        rgb_widths = [*cfg.rgb_hidden, 3]
        position = cfg.pos_dim * (widths[1] + cfg.rgb_hidden[0])  # per location, fwd + weight grad only
        per_location = sum(a * b for a, b in zip(widths[1:-1], widths[2:]))  # shared MLP after layer 0
        per_location += widths[-1] * cfg.feature_dim  # feature head
        per_location += cfg.feature_dim * cfg.rgb_hidden[0]  # feature half of the RGB head's first layer
        per_location += sum(a * b for a, b in zip(rgb_widths[:-1], rgb_widths[1:]))
        per_image = cfg.column_dim * (widths[1] + cfg.rgb_hidden[0])  # column halves, once per image
        per_image += 3 * cfg.patch_size**2 * cfg.column_dim  # the conv filter
        if self.global_head is not None:
            d = cfg.feature_dim
            per_image += 2 * n * d * d + 2 * n * d + 2 * d * d + d * cfg.global_dim  # k/v, attention, q/out
        macs = batch * (n * (3 * per_location + 2 * position) + 3 * per_image)
        return 2 * macs
