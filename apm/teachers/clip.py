"""CLIP through open_clip: ViT-B/16 with OpenAI's weights by default (also B/32, and L/14 as the paper's teacher).

OpenAI trained these with QuickGELU. In open_clip 3.x `('ViT-B-16', 'openai')` silently builds plain GELU,
so the model ids here are the `-quickgelu` names (and `force_quick_gelu=True` is passed as well).

Grid: the patch tokens of block k after `ln_post`, from `visual.forward_intermediates` (every block in one
pass), optionally projected into the joint image-text space.
Global: the projected image embedding (joint space, 512-d for ViT-B). `zero_shot` scores any global vector in
that space against user labels ("a photo of a {label}"), so the app can show CLIP's and the APM's top-5.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import APMError, InputError
from .base import LayerSpec, Preprocess, Teacher, Variant, vit_gflops
from .registry import register_teacher
from .weights import HubWeights, weights_broken

try:  # optional backend
    import open_clip
except ImportError:  # pragma: no cover - open_clip_torch is in requirements.txt
    open_clip = None

logger = logging.getLogger(__name__)

MAX_LABELS = 1000  # zero-shot label lists longer than this are refused
MAX_LABEL_CHARS = 200  # one label longer than this is refused
_TEXT_CACHE_ITEMS = 16  # label lists whose text embeddings are kept per model


@dataclass(frozen=True)
class CLIPConfig:
    """Which CLIP and how it is read."""

    model_id: str = "ViT-B-16-quickgelu/openai"  # open_clip model name / pretrained tag
    image_size: int | None = None  # side of the square input in px (None: 224; / 16 = a 14 x 14 grid for B/16)
    norm: bool = True  # apply ln_post to the layer's tokens (open_clip always does for the last layer)
    project_grid: bool = False  # map grid tokens through visual.proj into the joint space (d = global_dim)
    prompt: str = "a photo of a {label}"  # zero-shot prompt template; must contain {label}


def _require_open_clip() -> None:
    if open_clip is None:
        raise APMError("the CLIP teacher needs open_clip: pip install open_clip_torch==3.3.0")


def _split_id(model_id: str) -> tuple[str, str]:
    name, _, tag = model_id.partition("/")
    return name, tag or "openai"


def clean_labels(labels: list[str] | tuple[str, ...] | str) -> list[str]:
    """User labels -> a non-empty list of distinct stripped strings (a string is split at commas / newlines)."""
    if isinstance(labels, str):
        labels = labels.replace("\n", ",").split(",")
    if not isinstance(labels, (list, tuple)):
        raise InputError("labels must be a list of strings")
    out: list[str] = []
    for item in labels:
        if not isinstance(item, str):
            raise InputError(f"labels must be strings, got {type(item).__name__}")
        text = " ".join(item.split())
        if len(text) > MAX_LABEL_CHARS:
            raise InputError(f"label '{text[:40]}...' is {len(text)} characters; the limit is {MAX_LABEL_CHARS}")
        if text and text not in out:
            out.append(text)
    if not out:
        raise InputError("give at least one label for zero-shot classification")
    if len(out) > MAX_LABELS:
        raise InputError(f"{len(out)} labels given; the limit is {MAX_LABELS}")
    return out


def _arch(model_id: str) -> dict:
    """open_clip's model config: embed_dim and vision_cfg (layers, width, patch_size, image_size)."""
    _require_open_clip()
    cfg = open_clip.get_model_config(_split_id(model_id)[0])
    if not cfg:
        raise InputError(f"open_clip does not know the model '{model_id}'")
    return cfg


@register_teacher
class CLIPTeacher(Teacher):
    """CLIP image tower read at one block; global = the projected image embedding (joint space)."""

    name = "clip"
    rank = 1
    PICKS = (("CLIP ViT-B/16", "clip"), ("CLIP ViT-L/14 (paper scale, slow)", "clip:l14"))
    Config = CLIPConfig
    supports_zero_shot = True
    VARIANTS: ClassVar[dict[str, Variant]] = {
        "ViT-B-16-quickgelu/openai": Variant("CLIP ViT-B/16 (OpenAI)", 224),
        "ViT-B-32-quickgelu/openai": Variant("CLIP ViT-B/32 (OpenAI)", 224),
        "ViT-L-14-quickgelu/openai": Variant("CLIP ViT-L/14 (OpenAI, the paper's)", 224),
    }
    ALIASES: ClassVar[dict[str, str]] = {
        "vit-b-16": "ViT-B-16-quickgelu/openai",
        "b16": "ViT-B-16-quickgelu/openai",
        "vit-b-32": "ViT-B-32-quickgelu/openai",
        "b32": "ViT-B-32-quickgelu/openai",
        "vit-l-14": "ViT-L-14-quickgelu/openai",
        "l14": "ViT-L-14-quickgelu/openai",
        "paper": "ViT-L-14-quickgelu/openai",
    }

    @classmethod
    def weight_source(cls, model_id: str) -> HubWeights:
        _require_open_clip()
        name, tag = _split_id(model_id)
        cfg = open_clip.get_pretrained_cfg(name, tag)
        hub = (cfg or {}).get("hf_hub", "")
        if not hub:
            raise InputError(f"open_clip has no hub weights for '{model_id}'")
        repo, filename = os.path.split(hub)  # 'org/repo/' (default file) or 'org/repo/file.bin'
        filename = filename or "open_clip_pytorch_model.bin"
        stem, ext = os.path.splitext(filename)
        names = (stem.replace("pytorch_", "") + ".safetensors", filename) if ext in (".bin", ".pth") else (filename,)
        return HubWeights(repo_id=repo, filenames=names)

    @classmethod
    def layer_table(cls, config: CLIPConfig) -> list[LayerSpec]:
        cfg = _arch(config.model_id)
        vision = cfg["vision_cfg"]
        patch = vision["patch_size"]
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        size = cls.image_size_of(config)
        width = int(cfg["embed_dim"]) if config.project_grid else int(vision["width"])
        return [LayerSpec((size // ph, size // pw), width, int(cfg["embed_dim"]))] * int(vision["layers"])

    @classmethod
    def image_size_for_grid(cls, config: CLIPConfig, grid: int) -> int:
        patch = _arch(config.model_id)["vision_cfg"]["patch_size"]
        return int(grid) * int(patch if isinstance(patch, int) else patch[0])  # B/16: 256, 384, 512 px

    @classmethod
    def forward_gflops(cls, config: CLIPConfig) -> float:
        vision = _arch(config.model_id)["vision_cfg"]
        h, w = cls.layer_table(config)[0].grid
        return vit_gflops(int(vision["layers"]), int(vision["width"]), h * w + 1)

    def _check_config(self) -> None:
        if not 32 <= self.spec.image_size <= 1024:
            raise InputError(f"CLIP image_size must be 32-1024 px, got {self.spec.image_size}")
        if "{label}" not in self.config.prompt:
            raise InputError(f"the CLIP prompt must contain {{label}}, got '{self.config.prompt}'")

    def _build(self) -> torch.nn.Module:
        _require_open_clip()
        name, _ = _split_id(self.model_id)
        kwargs = {"force_quick_gelu": True}
        native = _arch(self.model_id)["vision_cfg"].get("image_size", 224)
        if self.spec.image_size != int(native):
            kwargs["force_image_size"] = self.spec.image_size
        if self.random_weights:
            return open_clip.create_model(name, pretrained=None, **kwargs)
        path = self.weights_path
        try:  # open_clip's own loader, pointed at the cached file
            return open_clip.create_model(name, pretrained=path, require_pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file in the cache
            raise weights_broken(self.short_id, self.model_id, path, exc) from None

    def _verify(self, module: torch.nn.Module) -> None:
        visual, cfg = module.visual, _arch(self.model_id)
        found = (len(visual.transformer.resblocks), int(visual.transformer.width), int(visual.output_dim),
                 tuple(int(g) for g in visual.grid_size))
        table = (self.num_layers, int(cfg["vision_cfg"]["width"]), int(cfg["embed_dim"]), self.spec.layers[0].grid)
        if found != table:
            raise RuntimeError(f"{self.model_id}: built (blocks, width, dim, grid) {found}, config says {table}")

    def _make_preprocess(self) -> Preprocess:
        name, tag = _split_id(self.model_id)
        cfg = open_clip.get_pretrained_cfg(name, tag) or {}  # the weights' preprocessing, even when untrained
        return Preprocess(
            size=self.spec.image_size,
            mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
            interpolation=str(cfg.get("interpolation", "bicubic")),
        )

    def _forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        visual = self.model.visual
        order = sorted(set(layers))
        out = visual.forward_intermediates(x, indices=order, normalize_intermediates=self.config.norm, output_fmt="NLC")
        pooled = out["image_features"][0]  # (D_g,): the projected image embedding, from the full pass
        h, w = self.spec.layers[0].grid
        by_layer = {}
        for k, tokens in zip(order, out["image_intermediates"]):  # (1, h*w, C), CLS dropped
            if self.config.project_grid and visual.proj is not None:
                tokens = tokens @ visual.proj  # (1, h*w, D_g)
            by_layer[k] = tokens[0].reshape(h, w, -1)
        return [(by_layer[k], pooled) for k in layers]

    # zero-shot classification

    def text_embeddings(self, labels: list[str] | str) -> np.ndarray:
        """Unit-norm text embeddings (L, D_g) of the prompt filled with each label; cached per label list."""
        labels = clean_labels(labels)
        key = (self.config.prompt, tuple(labels))
        shared = self._shared
        with shared.lock:
            cache: OrderedDict = shared.extras.setdefault("text_cache", OrderedDict())
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            tokenizer = shared.extras.get("tokenizer")
            if tokenizer is None:
                tokenizer = shared.extras["tokenizer"] = open_clip.get_tokenizer(_split_id(self.model_id)[0])
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(labels), 256):
                    prompts = [self.config.prompt.format(label=label) for label in labels[start : start + 256]]
                    tokens = tokenizer(prompts).to(self.device)  # (n, context_length)
                    chunks.append(self.model.encode_text(tokens, normalize=True).float().cpu())  # (n, D_g)
            emb = torch.cat(chunks).numpy().astype(np.float32)  # (L, D_g)
            emb.setflags(write=False)
            cache[key] = emb
            while len(cache) > _TEXT_CACHE_ITEMS:
                cache.popitem(last=False)
            return emb

    def logit_scale(self) -> float:
        """CLIP's learned temperature exp(t) (100 for OpenAI's weights, 1/0.07 untrained)."""
        return float(min(self.model.logit_scale.exp().item(), 100.0))

    def zero_shot(
        self, global_vector: np.ndarray, labels: list[str] | str, top_k: int = 5
    ) -> list[tuple[str, float]]:
        """Top-k (label, probability) for a global vector in CLIP's joint space (a teacher's or an APM's)."""
        vec = np.asarray(global_vector, dtype=np.float32).reshape(-1)  # (D_g,)
        dim = self.info.global_dim
        if vec.shape != (dim,):
            raise InputError(f"zero-shot needs a {dim}-d vector in CLIP's joint space, got shape {np.shape(global_vector)}")
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or norm == 0.0:
            raise InputError("zero-shot needs a finite, non-zero vector")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        labels = clean_labels(labels)
        text = self.text_embeddings(labels)  # (L, D_g)
        logits = self.logit_scale() * (text @ (vec / norm))  # (L,)
        logits = logits - logits.max()
        probs = np.exp(logits) / np.exp(logits).sum()
        order = np.argsort(-probs, kind="stable")[: int(top_k)]
        return [(labels[i], float(probs[i])) for i in order]
