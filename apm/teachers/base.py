"""The teacher interface: what every backend adapter provides, and the per-process model cache.

A teacher is a frozen, pretrained (or, on request, untrained) vision network read at one layer. One layer is
one GLOM level: `encode` turns an image into that layer's per-patch feature grid (h, w, d) and a global vector,
the targets an APM is overfit to; `encode_layers` reads every layer in one forward pass (the levels strip).

What a teacher *is* (layers, grids, widths, whether it can label images) is known without building the
network: `Teacher.spec(config)` reads static tables, checked against the built network the first time it loads.
Models load once per process, at the first forward pass that is not an output-cache hit, and are shared
read-only by every teacher object that reads them (any layer); a lock per model makes `encode` thread-safe.
Pretrained weights are located (downloaded if need be) when the teacher is created, so a missing file fails at
`create_teacher`.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..images import content_hash, load_image, square_crop
from .cache import OUTPUT_CACHE
from .weights import WeightSource, fetch_weights

logger = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0  # untrained teachers are initialised from this seed, so they are the same in every process


# metadata and outputs

@dataclass(frozen=True)
class Variant:
    """One pretrained network a teacher adapter can read."""

    display_name: str  # e.g. 'DINOv2 ViT-S/14'
    image_size: int  # default input side in px


@dataclass(frozen=True)
class LayerSpec:
    """The shapes one layer gives for the default input."""

    grid: tuple[int, int]  # (h, w)
    feature_dim: int  # d
    global_dim: int  # d_g


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher is, known without building its network (the app's pickers read this)."""

    id: str  # 'name:model_id', the one string that names this teacher everywhere
    name: str  # registry key: 'dinov2', 'clip', 'mvit'
    model_id: str  # the backing library's model id, e.g. 'vit_small_patch14_dinov2.lvd142m'
    display_name: str  # e.g. 'DINOv2 ViT-S/14'
    image_size: int  # input side, px
    layers: tuple[LayerSpec, ...]  # one per block, in order
    supports_zero_shot: bool  # can score its global vector against text labels
    gflops: float  # one forward pass at this input size, approximate

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def default_layer(self) -> int:
        return len(self.layers) - 1

    def label(self, layer: int, random_weights: bool) -> str:
        """e.g. 'DINOv2 ViT-S/14 · layer 11 · untrained (random weights)'."""
        text = f"{self.display_name} · layer {layer}"
        return text + " · untrained (random weights)" if random_weights else text


@dataclass(frozen=True)
class TeacherInfo:
    """What a teacher output is: which network, which layer, what shape, trained or not."""

    name: str  # registry key: 'dinov2', 'clip', 'mvit'
    id: str  # 'name:model_id'
    model_id: str  # the backing library's model id
    layer: int  # block index read, from 0
    num_layers: int  # number of blocks (valid layers are 0 .. num_layers - 1)
    grid_shape: tuple[int, int]  # (h, w) of the feature grid
    feature_dim: int  # d, channels of the grid
    global_dim: int  # d_g, length of the global vector
    image_size: int  # input side, px
    random_weights: bool  # True: the architecture is untrained (random init), not the pretrained network
    label: str  # human-readable, e.g. 'DINOv2 ViT-S/14 · layer 11 · untrained (random weights)'


@dataclass(frozen=True)
class TeacherOutput:
    """One image through one teacher layer. Arrays are float32 copies the caller may modify."""

    grid: np.ndarray  # (h, w, d) float32 per-patch features
    global_vector: np.ndarray  # (d_g,) float32 global token (CLS, or CLIP's projected image embedding)
    info: TeacherInfo  # where the arrays come from


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class Preprocess:
    """How a teacher turns a PIL image into its input tensor (the values come from the backing library)."""

    size: int  # side of the square input, px
    mean: tuple[float, float, float]  # per-channel mean subtracted after scaling to [0, 1]
    std: tuple[float, float, float]  # per-channel std divided by
    interpolation: str  # resampling filter name: 'bicubic', 'bilinear', 'nearest', 'lanczos', 'box'

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """Centre square crop, resize to size x size, normalise -> (1, 3, S, S) float32."""
        resample = _RESAMPLE.get(str(self.interpolation).lower(), Image.Resampling.BICUBIC)
        square = square_crop(img.convert("RGB")).resize((self.size, self.size), resample)
        arr = np.asarray(square, dtype=np.float32) / 255.0  # (S, S, 3)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, S, S)


def vit_gflops(depth: int, width: int, tokens: int) -> float:
    """Approximate GFLOPs of a ViT's blocks: attention and MLP matmuls (4x MLP), 2 FLOPs per multiply-add."""
    per_block = 12 * tokens * width * width + 2 * tokens * tokens * width  # qkv + proj + mlp, and QK^T + AV
    return 2.0 * depth * per_block / 1e9


# per-process model cache

@dataclass
class SharedModel:
    """A loaded network, shared read-only by every teacher that reads it."""

    module: torch.nn.Module  # in eval mode, no gradients
    lock: threading.RLock = field(default_factory=threading.RLock)  # held around every forward (hooks are global)
    extras: dict[str, Any] = field(default_factory=dict)  # backend-specific companions (tokenizer, text cache, ...)


_MODELS: dict[tuple, SharedModel] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(key: tuple, build: Callable[[], torch.nn.Module]) -> SharedModel:
    """The model for `key`, built by `build()` the first time it is asked for in this process."""
    with _MODELS_LOCK:
        entry = _MODELS.get(key)
        if entry is None:
            module = build()
            module.eval()
            module.requires_grad_(False)
            entry = SharedModel(module)
            _MODELS[key] = entry
            logger.info("loaded teacher model %s", key)
        return entry


def seeded_build(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Run `build` with the CPU RNG seeded from RANDOM_INIT_SEED, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()


def clear_model_cache() -> None:
    """Forget every loaded teacher model (tests; freeing memory)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def resolve_layer(layer: int | None, num_layers: int, name: str) -> int:
    """A valid block index (None: the last; negative counts from the end), or `InputError` naming the range."""
    if layer is None:
        return num_layers - 1
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        try:
            layer = int(str(layer).strip())
        except ValueError:
            raise InputError(
                f"layer must be an integer; {name} has layers 0-{num_layers - 1} (default {num_layers - 1})"
            ) from None
    layer = int(layer)
    if not -num_layers <= layer < num_layers:
        raise InputError(
            f"layer {layer} does not exist; {name} has layers 0-{num_layers - 1} (default {num_layers - 1})"
        )
    return layer % num_layers


# the interface

class Teacher(abc.ABC):
    """A frozen network read at one layer. Subclasses are the backend adapters (one file each).

    Subclasses set `name`, `Config` (their config dataclass, with `model_id` and `image_size` fields),
    `VARIANTS` (model id -> `Variant`), `ALIASES` (short variant names) and `supports_zero_shot`, and
    implement `weight_source`, `layer_table`, `forward_gflops`, `_build`, `_make_preprocess` and
    `_forward_layers`.
    """

    name: ClassVar[str] = ""  # registry key
    rank: ClassVar[int] = 100  # position in `list_teachers()` (lower first)
    Config: ClassVar[type] = object  # the adapter's config dataclass
    VARIANTS: ClassVar[dict[str, Variant]] = {}  # model id -> variant
    ALIASES: ClassVar[dict[str, str]] = {}  # short variant name -> model id
    supports_zero_shot: ClassVar[bool] = False  # `zero_shot(vector, labels)` scores global vectors against text
    PICKS: ClassVar[tuple[tuple[str, str], ...]] = ()  # (label, teacher id) the pickers offer, in order

    def __init__(self, config: Any, *, layer: int | None, random_weights: bool, device: torch.device):
        self.config = config
        self.model_id: str = config.model_id
        self.random_weights = bool(random_weights)
        self.device = device
        self.spec: TeacherSpec = self.spec_for(config)
        self.num_layers: int = self.spec.num_layers
        self.layer: int = resolve_layer(layer, self.num_layers, self.name)
        self._check_config()
        self.preprocess: Preprocess = self._make_preprocess()  # image -> (1, 3, S, S) input
        self.info = self.info_for(self.layer)
        self.forward_passes = 0  # how many times this object ran the network (cache misses)
        self._key = (self.name, self._model_key(), self.random_weights, str(device))
        self._shared_entry: SharedModel | None = None
        # pretrained weights are located (or downloaded) now, so a missing file fails here, not mid-way;
        # the network itself is built at the first forward pass (an output-cache hit never builds it)
        self.weights_path: str | None = None
        if not self.random_weights:
            self.weights_path = fetch_weights(self.weight_source(self.model_id), teacher=self.short_id, model_id=self.model_id)

    # static description

    @classmethod
    def short_id_for(cls, model_id: str) -> str:
        """The shortest teacher id naming this variant: 'dinov2' for the default, else 'dinov2:imgfocus'."""
        if model_id == cls.Config().model_id:
            return cls.name
        aliases = sorted((a for a, target in cls.ALIASES.items() if target == model_id), key=len)
        return f"{cls.name}:{aliases[0] if aliases else model_id}"

    @property
    def short_id(self) -> str:
        return self.short_id_for(self.model_id)

    @classmethod
    def image_size_of(cls, config: Any) -> int:
        """The input side: the config's, else the variant's default."""
        return int(config.image_size or cls.VARIANTS[config.model_id].image_size)

    @classmethod
    def image_size_for_grid(cls, config: Any, grid: int) -> int:
        """The input side in px that gives a grid x grid feature grid; an `InputError` where the network cannot."""
        raise InputError(f"the {cls.name} teacher cannot make a {grid} x {grid} grid: leave the grid to the teacher")

    @classmethod
    def spec_for(cls, config: Any) -> TeacherSpec:
        """Cheap metadata for a config: no weights, no network."""
        if cls.VARIANTS and config.model_id not in cls.VARIANTS:
            choices = ", ".join([*cls.ALIASES, *cls.VARIANTS])
            raise InputError(f"unknown {cls.name} variant '{config.model_id}'; choose one of: {choices}")
        return TeacherSpec(
            id=f"{cls.name}:{config.model_id}",
            name=cls.name,
            model_id=config.model_id,
            display_name=cls.VARIANTS[config.model_id].display_name if cls.VARIANTS else config.model_id,
            image_size=cls.image_size_of(config),
            layers=tuple(cls.layer_table(config)),
            supports_zero_shot=cls.supports_zero_shot,
            gflops=float(cls.forward_gflops(config)),
        )

    def info_for(self, layer: int) -> TeacherInfo:
        """The `TeacherInfo` of this teacher read at another layer."""
        layer = resolve_layer(layer, self.num_layers, self.name)
        shapes = self.spec.layers[layer]
        return TeacherInfo(
            name=self.name,
            id=self.spec.id,
            model_id=self.model_id,
            layer=layer,
            num_layers=self.num_layers,
            grid_shape=shapes.grid,
            feature_dim=shapes.feature_dim,
            global_dim=shapes.global_dim,
            image_size=self.spec.image_size,
            random_weights=self.random_weights,
            label=self.spec.label(layer, self.random_weights),
        )

    # subclass hooks

    @classmethod
    @abc.abstractmethod
    def weight_source(cls, model_id: str) -> WeightSource:
        """Where the pretrained weights of `model_id` are downloaded from (for the cache and `download`)."""

    @classmethod
    @abc.abstractmethod
    def layer_table(cls, config: Any) -> Sequence[LayerSpec]:
        """Every layer's shapes for the config's input size (static: no network)."""

    @classmethod
    @abc.abstractmethod
    def forward_gflops(cls, config: Any) -> float:
        """Approximate GFLOPs of one forward pass (to tell the expected CPU time before a run)."""

    @abc.abstractmethod
    def _build(self) -> torch.nn.Module:
        """Build the network on CPU: from `self.weights_path`, or random init when `self.random_weights`."""

    def _verify(self, module: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Raise RuntimeError if the built network disagrees with the adapter's static layer table."""

    @abc.abstractmethod
    def _forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(1, 3, S, S) input on the device -> [(grid (h, w, d), global (d_g,)) per layer]. Under the lock."""

    @abc.abstractmethod
    def _make_preprocess(self) -> Preprocess:
        """The image -> tensor transform this teacher's weights expect (from the library's pretrained config)."""

    def _check_config(self) -> None:  # noqa: B027 - optional hook
        """Raise `InputError` for config values the adapter cannot use (layer known; nothing loaded yet)."""

    def _model_key(self) -> tuple:
        """Everything that makes a loaded network different (the layer is not: all layers share one)."""
        return (self.model_id, self.spec.image_size)

    # shared implementation

    @property
    def _shared(self) -> SharedModel:
        if self._shared_entry is None:
            self._shared_entry = shared_model(self._key, self._load)
        return self._shared_entry

    @property
    def model(self) -> torch.nn.Module:
        """The shared network, built on first use (read-only: do not train or modify it)."""
        return self._shared.module

    def load(self) -> Teacher:
        """Build the network now rather than at the first cache miss (e.g. to warm up an app)."""
        _ = self._shared
        return self

    @property
    def loaded(self) -> bool:
        """Whether the network is built in this process."""
        return self._shared_entry is not None or self._key in _MODELS

    def _load(self) -> torch.nn.Module:
        module = seeded_build(self._build) if self.random_weights else self._build()
        self._verify(module)
        return module.to(self.device)

    def check_layer(self, layer: int | None) -> int:
        """A valid block index (negative counts from the end), or `InputError` naming the valid range."""
        return resolve_layer(layer, self.num_layers, self.name)

    def cache_key(self, img: Image.Image | str, layer: int | None = None) -> str:
        """Key of an image's output in the teacher-output cache: (image content, teacher, layer, config).

        `img` may be the image's `content_hash` already (when many layers of one image are keyed)."""
        digest = img if isinstance(img, str) else content_hash(img)
        layer = self.layer if layer is None else layer
        parts = ("v2", digest, self.spec.id, self.random_weights, layer, repr(sorted(asdict(self.config).items())))
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:40]

    def encode(self, image: Image.Image, *, use_cache: bool = True) -> TeacherOutput:
        """Image -> this layer's feature grid (h, w, d) and global vector (d_g,), float32 numpy.

        Outputs are cached by (image content, teacher, layer): a repeated call does not run the network.
        A path or bytes is decoded with `apm.images.load_image` first.
        """
        return self.encode_layers(image, [self.layer], use_cache=use_cache)[0]

    def encode_layers(
        self, image: Image.Image, layers: Sequence[int] | None = None, *, use_cache: bool = True
    ) -> list[TeacherOutput]:
        """Image -> one `TeacherOutput` per layer (None: every layer), from at most one forward pass.

        Layers found in the output cache are not recomputed; the rest come from one pass that stops after
        the deepest of them. Every computed layer is cached, so training on any of them later is a cache hit.
        """
        img = image if isinstance(image, Image.Image) else load_image(image)
        wanted = list(range(self.num_layers)) if layers is None else [self.check_layer(k) for k in layers]
        infos = {k: self.info_for(k) for k in wanted}
        found: dict[int, TeacherOutput] = {}
        keys: dict[int, str] = {}
        if use_cache:
            digest = content_hash(img)
            for k in dict.fromkeys(wanted):
                keys[k] = self.cache_key(digest, k)
                hit = OUTPUT_CACHE.get(keys[k])
                if hit is not None and hit[0].shape == (*infos[k].grid_shape, infos[k].feature_dim):
                    found[k] = TeacherOutput(grid=hit[0], global_vector=hit[1], info=infos[k])
        missing = [k for k in dict.fromkeys(wanted) if k not in found]
        if missing:
            x = self.preprocess(img).to(self.device)  # (1, 3, S, S)
            with self._shared.lock, torch.inference_mode():
                results = self._forward_layers(x, missing)
                self.forward_passes += 1
            for k, (grid_t, glob_t) in zip(missing, results):
                grid = grid_t.detach().float().cpu().numpy().astype(np.float32, copy=True)  # (h, w, d)
                glob = glob_t.detach().float().cpu().numpy().astype(np.float32, copy=True).reshape(-1)  # (d_g,)
                expected = (*infos[k].grid_shape, infos[k].feature_dim)
                if grid.shape != expected:  # a bug in an adapter, not a user error
                    raise RuntimeError(f"{infos[k].label}: grid shape {grid.shape} != expected {expected}")
                if k in keys:
                    OUTPUT_CACHE.put(keys[k], grid, glob)
                found[k] = TeacherOutput(grid=grid, global_vector=glob, info=infos[k])
        return [found[k] for k in wanted]

    def zero_shot(self, global_vector: np.ndarray, labels: list[str] | str, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k (label, probability) of a global vector against text labels (teachers with `supports_zero_shot`)."""
        raise InputError(f"the {self.spec.display_name} teacher cannot score text labels")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.label} grid={self.info.grid_shape} d={self.info.feature_dim}>"
