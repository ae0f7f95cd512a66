"""MViTv2-S through torchvision, Kinetics-400 weights: a static image is a boring video.

The image is repeated 16 times along time, (1, 3, 16, 224, 224), normalised with the weights' own mean/std.
Block k's output tokens are taken with a forward hook (the forward stops right there), the CLS token is
dropped and the rest reshaped to (T', H', W', C); the grid is the middle time slice (the slices differ at the
ends because of the temporal padding of the patch embedding), the global vector is block k's CLS token.

Grids: 56 x 56 (block 0), 28 x 28 (blocks 1-2), 14 x 14 (blocks 3-13), 7 x 7 (blocks 14-15); channels
96, 192, 384, 768. timm's `mvitv2_*` are image models without a time axis: not this teacher.

The whole square is resized to the weights' crop size (224) rather than resized to 256 and centre-cropped
as torchvision's video preset does, so that the grid covers exactly the pixels the APM and the app show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import APMError, InputError
from .base import LayerSpec, Preprocess, Teacher, Variant
from .registry import register_teacher
from .weights import UrlWeights, weights_broken

try:  # optional backend
    from torchvision.models.video import MViT_V2_S_Weights, mvit_v2_s
except ImportError:  # pragma: no cover - torchvision is in requirements.txt
    MViT_V2_S_Weights = mvit_v2_s = None

logger = logging.getLogger(__name__)

FRAMES = 16  # clip length MViTv2-S was trained on; its position tables fix the input at 16 x 224 x 224


@dataclass(frozen=True)
class MViTConfig:
    """Which MViT and how it is read."""

    model_id: str = "mvit_v2_s.kinetics400_v1"  # torchvision builder . weights name
    image_size: int | None = None  # fixed by the network's position tables: 224 (None or 224 only)
    time_index: int | None = None  # which of the T' = 8 time slices is the grid; None = the middle one (T' // 2)


BLOCK_SHAPES = (  # (T', H', W', C) after each of the 16 blocks; checked against the built network in `_verify`
    (8, 56, 56, 96),
    *[(8, 28, 28, 192)] * 2,
    *[(8, 14, 14, 384)] * 11,
    *[(8, 7, 7, 768)] * 2,
)


def derive_layer_shapes(model: torch.nn.Module) -> list[tuple[int, int, int, int]]:
    """(T', H', W', C) of every block's output, worked out from the blocks' query pooling and MLP widths."""
    thw = [int(model.pos_encoding.temporal_size), *map(int, model.pos_encoding.spatial_size)]
    shapes = []
    for block in model.blocks:
        pool_q = block.attn.pool_q
        if pool_q is not None:  # a strided conv on the queries shrinks the token grid
            conv = pool_q.pool
            thw = [(n + 2 * p - k) // s + 1 for n, k, s, p in zip(thw, conv.kernel_size, conv.stride, conv.padding)]
        linears = [m for m in block.mlp.modules() if isinstance(m, torch.nn.Linear)]
        shapes.append((thw[0], thw[1], thw[2], int(linears[-1].out_features)))
    return shapes


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass once the wanted block has run."""


def _require_torchvision() -> None:
    if mvit_v2_s is None:
        raise APMError("the MViT teacher needs torchvision's video models: pip install torchvision==0.29.2")


GFLOPS = 64.5  # torchvision's published figure for MViT_V2_S at 16 x 224 x 224


@register_teacher
class MViTTeacher(Teacher):
    """MViTv2-S (video) on a 16-frame still clip, read at one block; middle time slice."""

    name = "mvit"
    rank = 2
    PICKS = (("MViTv2-S: a still image as a boring video", "mvit"),)
    Config = MViTConfig
    VARIANTS: ClassVar[dict[str, Variant]] = {
        "mvit_v2_s.kinetics400_v1": Variant("MViTv2-S (Kinetics-400)", 224),
    }
    ALIASES: ClassVar[dict[str, str]] = {"mvit_v2_s": "mvit_v2_s.kinetics400_v1", "s": "mvit_v2_s.kinetics400_v1"}

    @classmethod
    def weight_source(cls, model_id: str) -> UrlWeights:
        _require_torchvision()
        return UrlWeights(url=MViT_V2_S_Weights.KINETICS400_V1.url)

    @classmethod
    def layer_table(cls, config: MViTConfig) -> list[LayerSpec]:
        return [LayerSpec((h, w), c, c) for _, h, w, c in BLOCK_SHAPES]

    @classmethod
    def image_size_for_grid(cls, config: MViTConfig, grid: int) -> int:
        sides = sorted({h for _, h, _, _ in BLOCK_SHAPES}, reverse=True)
        raise InputError(f"MViTv2-S takes 224 px inputs only (its position tables are fixed): its grids are "
                         f"{', '.join(map(str, sides))} locations a side, set by the layer, so a {grid} x {grid} grid "
                         "cannot be made; leave the grid to the teacher")

    @classmethod
    def forward_gflops(cls, config: MViTConfig) -> float:
        return GFLOPS

    def _check_config(self) -> None:
        if self.spec.image_size != 224:
            raise InputError(f"MViTv2-S takes 224 px inputs only (its position tables are fixed), got {self.spec.image_size}")
        for layer in range(self.num_layers):  # an impossible time_index fails at creation, not at the first encode
            self._time_index(layer)

    def _build(self) -> torch.nn.Module:
        _require_torchvision()
        if self.random_weights:
            return mvit_v2_s(weights=None)
        try:  # torchvision's own loader; it finds the file fetched at creation in the torch hub cache
            return mvit_v2_s(weights=MViT_V2_S_Weights.KINETICS400_V1, progress=False)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file in the cache
            raise weights_broken(self.short_id, self.model_id, self.weights_path, exc) from None

    def _verify(self, module: torch.nn.Module) -> None:
        found = derive_layer_shapes(module)
        if found != list(BLOCK_SHAPES):
            raise RuntimeError(f"{self.model_id}: built block shapes {found} differ from the table {BLOCK_SHAPES}")

    def _make_preprocess(self) -> Preprocess:
        _require_torchvision()
        preset = MViT_V2_S_Weights.KINETICS400_V1.transforms()  # the weights' own video preset
        return Preprocess(
            size=int(preset.crop_size[0]),
            mean=tuple(float(v) for v in preset.mean),
            std=tuple(float(v) for v in preset.std),
            interpolation=str(getattr(preset.interpolation, "value", preset.interpolation)),
        )

    def layer_shapes(self) -> list[tuple[int, int, int, int]]:
        """(T', H', W', C) of every block's output for the 16 x 224 x 224 input."""
        return list(BLOCK_SHAPES)

    def _time_index(self, layer: int) -> int:
        t = BLOCK_SHAPES[layer][0]
        idx = self.config.time_index
        if idx is None:
            return t // 2
        if not -t <= int(idx) < t:
            raise InputError(f"time_index {idx} does not exist; block {layer} has time slices 0-{t - 1}")
        return int(idx) % t

    def _forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        video = x.unsqueeze(2).repeat(1, 1, FRAMES, 1, 1)  # (1, 3, T, S, S): the still image, T times
        wanted, last = set(layers), max(layers)
        captured: dict[int, tuple] = {}

        def capture(k: int):
            def hook(module, inputs, output):
                captured[k] = output  # ((1, 1 + T'H'W', C), (T', H', W'))
                if k == last:
                    raise _Stop
            return hook

        handles = [self.model.blocks[k].register_forward_hook(capture(k)) for k in sorted(wanted)]
        try:
            self.model(video)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        results = []
        for k in layers:
            tokens, (t, h, w) = captured[k]
            cls_token = tokens[0, 0]  # (C,)
            patches = tokens[0, 1:].reshape(t, h, w, -1)  # (T', H', W', C)
            results.append((patches[self._time_index(k)], cls_token))  # (H', W', C), (C,)
        return results
