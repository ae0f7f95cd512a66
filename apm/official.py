"""The checkpoint released with the official APM code, converted into this project's format.

`python -m apm convert-official CHECKPOINT.pth OUT_DIR` reads the official model's `state_dict` (saved with
`torch.save`; read with `weights_only=True`, so nothing but tensors is ever unpickled) and writes a checkpoint
that `APM.from_pretrained(OUT_DIR)` loads like any other. What differs, and how it is carried over:

- names: `conv1` (the column filter, Conv2d(3, 1, 14, 14)), `fc1`..`fc5` (the shared MLP, ReLU after each),
  `feat_proj_head` (the feature head), `rgb_head_1`..`rgb_head_3` (the colour head, ReLU after each, the
  output included) become `column.conv`, `mlp_in_column` + `mlp_in_position` + `mlp.*`, `feature_head`,
  `rgb_in_feature` + `rgb_in_column` + `rgb_in_position` + `rgb_mlp.*`: the first layers are split by input
  block ([column 1024, position 1024] and [feature 1024, column 1024, position 1024]);
- the positional code: the official one interleaves sin and cos and puts the width (j) half before the height
  (i) half; this project's puts sin(i), cos(i), sin(j), cos(j) in blocks, with the same frequencies. The
  columns of the weights that read the code are permuted to match (found by matching the two codes, and
  checked to agree to 1e-5);
- the input: the official scripts feed the image in BGR order, resized to 448 px and min-max scaled over the
  whole image. The channel order is folded into the conv filter and `input_scaling="minmax"` is set in the
  config, so the converted model takes the usual RGB tensor in [0, 1];
- the colour output is a ReLU (`rgb_output="relu"`), not a sigmoid.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError
from .model import APM, MODEL_PRESETS, official_positional_code, sincos_2d

GRID = (32, 32)
HIDDEN = 1024  # column length = positional code length = feature dim
OFFICIAL_SHAPES = {
    "conv1.weight": (1, 3, 14, 14), "conv1.bias": (1,),
    "fc1.weight": (4096, 2 * HIDDEN), "fc1.bias": (4096,),
    "fc2.weight": (4096, 4096), "fc2.bias": (4096,),
    "fc3.weight": (4096, 4096), "fc3.bias": (4096,),
    "fc4.weight": (2048, 4096), "fc4.bias": (2048,),
    "fc5.weight": (1024, 2048), "fc5.bias": (1024,),
    "feat_proj_head.weight": (1024, 1024), "feat_proj_head.bias": (1024,),
    "rgb_head_1.weight": (256, 3 * HIDDEN), "rgb_head_1.bias": (256,),
    "rgb_head_2.weight": (256, 256), "rgb_head_2.bias": (256,),
    "rgb_head_3.weight": (3, 256), "rgb_head_3.bias": (3,),
}


def official_config():
    """The official model as a `ModelConfig`: the paper preset, ReLU colours, min-max input scaling."""
    return replace(MODEL_PRESETS["paper"], grid=GRID, feature_dim=HIDDEN, pos_dim=HIDDEN, column_channels=1,
                   rgb_output="relu", input_scaling="minmax", global_dim=None)


def channel_permutation(dim: int = HIDDEN, h: int = GRID[0], w: int = GRID[1]) -> torch.Tensor:
    """`perm` with ours[:, perm[c]] == official[:, c] for every official channel c (a bijection)."""
    ours = sincos_2d(h, w, dim).double()  # (n, dim)
    theirs = official_positional_code(dim, h, w).double()  # (n, dim)
    distance = torch.cdist(theirs.T, ours.T, p=float("inf"))  # (dim, dim): max abs difference of channels
    perm = distance.argmin(dim=1)
    if len(set(perm.tolist())) != dim or float(distance.min(dim=1).values.max()) > 1e-5:
        raise RuntimeError("the official positional code does not match this project's up to a permutation")
    return perm


def _check(state: dict) -> None:
    missing = [k for k in OFFICIAL_SHAPES if k not in state]
    if missing:
        raise InputError(f"not an official APM checkpoint: it has no {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}")
    for name, shape in OFFICIAL_SHAPES.items():
        if tuple(state[name].shape) != shape:
            raise InputError(f"official checkpoint: {name} is {tuple(state[name].shape)}, expected {shape}")


def convert_state(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official state dict -> this project's `APM` state dict (same maths, see the module doc)."""
    official = {k.removeprefix("module."): v.float() for k, v in official.items()}  # DataParallel prefixes
    _check(official)
    perm = channel_permutation()
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))  # ours channel -> official channel

    def by_our_channel(weight: torch.Tensor) -> torch.Tensor:  # (out, official channels) -> (out, our channels)
        return weight[:, inverse]

    fc1, rgb1 = official["fc1.weight"], official["rgb_head_1.weight"]
    bgr_to_rgb = [2, 1, 0]  # the official filter reads B, G, R: our channel 0 (R) is its channel 2
    state = {
        "column.conv.weight": official["conv1.weight"][:, bgr_to_rgb],
        "column.conv.bias": official["conv1.bias"],
        "mlp_in_column.weight": fc1[:, :HIDDEN],
        "mlp_in_column.bias": official["fc1.bias"],
        "mlp_in_position.weight": by_our_channel(fc1[:, HIDDEN:]),
        "feature_head.weight": official["feat_proj_head.weight"],
        "feature_head.bias": official["feat_proj_head.bias"],
        "rgb_in_feature.weight": rgb1[:, :HIDDEN],
        "rgb_in_column.weight": rgb1[:, HIDDEN:2 * HIDDEN],
        "rgb_in_column.bias": official["rgb_head_1.bias"],
        "rgb_in_position.weight": by_our_channel(rgb1[:, 2 * HIDDEN:]),
    }
    for k, name in enumerate(("fc2", "fc3", "fc4", "fc5")):
        state[f"mlp.{2 * k}.weight"] = official[f"{name}.weight"]
        state[f"mlp.{2 * k}.bias"] = official[f"{name}.bias"]
    for k, name in enumerate(("rgb_head_2", "rgb_head_3")):
        state[f"rgb_mlp.{2 * k}.weight"] = official[f"{name}.weight"]
        state[f"rgb_mlp.{2 * k}.bias"] = official[f"{name}.bias"]
    return {k: v.contiguous() for k, v in state.items()}


def load_official(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official checkpoint file: tensors only (`weights_only=True`), never arbitrary pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file, or one holding more than tensors
        raise InputError(f"cannot read {path} as a state dict of tensors ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{path} does not hold a plain state_dict of tensors")
    return state


def convert_official(path: str | Path, out: str | Path) -> APM:
    """Convert the official checkpoint at `path` into a checkpoint folder `out`; returns the loaded APM."""
    apm = APM(official_config())
    apm.load_state_dict(convert_state(load_official(path)), strict=True)
    apm.save_pretrained(out, meta={"source": "official APM checkpoint", "converted_from": Path(path).name,
                                   "input": "RGB in [0, 1] at 448 x 448; min-max scaled inside the model"})
    return apm.eval()


class OfficialModel(nn.Module):
    """The official dense APM as its training script runs it: the yardstick `apm.bench` times a step against.

    Written from the published definition (the names and shapes are `OFFICIAL_SHAPES`, so `convert_state` reads
    its `state_dict`): every location's query is the materialised [column, code] row, pushed through `fc1` whole,
    in chunks of `chunk` locations (its training script: 512), fp32. `images` are (B, 3, 448, 448) as the
    official scripts feed them (BGR, min-max scaled); returns features (B, 1024, 1024) and colours (B, 1024, 3).
    """

    def __init__(self, chunk: int = 512):
        super().__init__()
        self.chunk = int(chunk)
        self.conv1 = nn.Conv2d(3, 1, kernel_size=14, stride=14)
        for key, shape in OFFICIAL_SHAPES.items():  # every Linear layer, named and shaped as published
            if key.endswith(".weight") and len(shape) == 2:
                setattr(self, key.removesuffix(".weight"), nn.Linear(shape[1], shape[0]))
        code = official_positional_code(HIDDEN, *GRID).float()  # (n, 1024): location-major, the official channel order
        self.register_buffer("code", code, persistent=False)

    def _decode(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = queries  # (m, 2048)
        for name in ("fc1", "fc2", "fc3", "fc4", "fc5"):
            x = F.relu(getattr(self, name)(x))
        features = self.feat_proj_head(x)  # (m, 1024)
        rgb = F.relu(self.rgb_head_1(torch.cat([features, queries], dim=1)))
        rgb = F.relu(self.rgb_head_3(F.relu(self.rgb_head_2(rgb))))  # (m, 3)
        return features, rgb

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = images.shape[0]
        column = self.conv1(images).flatten(1)  # (B, 1024)
        n = self.code.shape[0]
        queries = torch.cat([column[:, None, :].expand(B, n, -1), self.code[None].expand(B, n, -1)], dim=2)
        queries = queries.reshape(B * n, 2 * HIDDEN)  # (B n, 2048), every row materialised
        parts = [self._decode(queries[k:k + self.chunk]) for k in range(0, B * n, self.chunk)]
        features = torch.cat([f for f, _ in parts]).reshape(B, n, HIDDEN)
        rgb = torch.cat([c for _, c in parts]).reshape(B, n, 3)
        return features, rgb
