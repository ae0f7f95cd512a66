"""The teacher interface: what every backend adapter provides, the registry and `create_teacher` factory,
and the per-process model cache.

A teacher is a frozen, pretrained (or, on request, untrained) vision network read at one layer. One layer is
one GLOM level: `encode` turns an image into that layer's per-patch feature grid (h, w, d) and a global vector,
the targets an APM is overfit to. Models load once per process, at the first forward pass that is not an
output-cache hit (metadata comes from static tables checked against the built network), and are shared
read-only by every teacher object that reads them (any layer); a lock per model makes `encode` thread-safe.
Pretrained weights are located (downloaded if need be) when the teacher is created, so a missing file fails
at `create_teacher`.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import threading
from collections.abc import Callable
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
_TRUE = ("1", "true", "yes", "on")


# metadata and outputs

@dataclass(frozen=True)
class TeacherInfo:
    """What a teacher output is: which network, which layer, what shape, trained or not."""

    name: str  # registry key: 'dinov2', 'clip', 'mvit'
    model_id: str  # the backing library's model id, e.g. 'vit_small_patch14_dinov2.lvd142m'
    layer: int  # block index read, from 0
    num_layers: int  # number of blocks (valid layers are 0 .. num_layers - 1)
    grid_shape: tuple[int, int]  # (h, w) of the feature grid
    feature_dim: int  # d, channels of the grid
    global_dim: int  # d_g, length of the global vector
    random_weights: bool  # True: the architecture is untrained (random init), not the pretrained network
    label: str  # human-readable, e.g. 'DINOv2 ViT-S/14 · layer 11 · untrained (random weights)'


@dataclass(frozen=True)
class TeacherOutput:
    """One image through one teacher layer. Arrays are float32 copies the caller may modify."""

    grid: np.ndarray  # (h, w, d) float32 per-patch features
    global_vector: np.ndarray  # (d_g,) float32 global token (CLS, or CLIP's projected image embedding)
    info: TeacherInfo  # where the arrays come from


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


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


# environment helpers

def env_flag(name: str) -> bool:
    """True when the environment variable is set to 1 / true / yes / on."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def random_weights_default() -> bool:
    """The default for `random_weights`: True when APM_RANDOM_WEIGHTS=1 (offline demos, tests, CI)."""
    return env_flag("APM_RANDOM_WEIGHTS")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA if present, else Apple MPS, else CPU; anything else is checked and returned."""
    if isinstance(device, torch.device):
        return device
    text = str(device).strip().lower()
    if text in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}' was asked for but CUDA is not available; use auto or cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device '{device}' was asked for but MPS is not available; use auto or cpu")
    return dev


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


# the interface

class Teacher(abc.ABC):
    """A frozen network read at one layer. Subclasses are the backend adapters (one file each).

    Subclasses set `name`, `Config` (their config dataclass), `VARIANTS` (model id -> display name) and
    `ALIASES` (short variant names), and implement `_build`, `_forward` and the per-layer shape methods.
    """

    name: ClassVar[str] = ""  # registry key
    rank: ClassVar[int] = 100  # position in `list_teachers()` (lower first)
    Config: ClassVar[type] = object  # the adapter's config dataclass (has a `model_id` field)
    VARIANTS: ClassVar[dict[str, str]] = {}  # model id -> display name, e.g. 'DINOv2 ViT-S/14'
    ALIASES: ClassVar[dict[str, str]] = {}  # short variant name -> model id

    def __init__(self, config: Any, *, layer: int | None, random_weights: bool, device: torch.device):
        self.config = config
        self.model_id: str = config.model_id
        if self.VARIANTS and self.model_id not in self.VARIANTS:
            choices = ", ".join([*self.ALIASES, *self.VARIANTS])
            raise InputError(f"unknown {self.name} variant '{self.model_id}'; choose one of: {choices}")
        self.random_weights = bool(random_weights)
        self.device = device
        self.num_layers: int = self._count_layers()
        self.layer: int = _resolve_layer(layer, self.num_layers, self.name)
        self._check_config()
        self.preprocess: Preprocess = self._make_preprocess()  # image -> (1, 3, S, S) input
        self.info = TeacherInfo(
            name=self.name,
            model_id=self.model_id,
            layer=self.layer,
            num_layers=self.num_layers,
            grid_shape=self.layer_grid_shape(self.layer),
            feature_dim=self.layer_feature_dim(self.layer),
            global_dim=self.layer_global_dim(self.layer),
            random_weights=self.random_weights,
            label=self.describe(self.layer),
        )
        self.forward_passes = 0  # how many times this object ran the network (cache misses)
        self._key = (self.name, self._model_key(), self.random_weights, str(device))
        self._shared_entry: SharedModel | None = None
        # pretrained weights are located (or downloaded) now, so a missing file fails here, not mid-way;
        # the network itself is built at the first forward pass (an output-cache hit never builds it)
        self.weights_path: str | None = None
        if not self.random_weights:
            source = self.weight_source(self.model_id)
            self.weights_path = fetch_weights(source, teacher=self.name, model_id=self.model_id)

    # subclass hooks

    @classmethod
    @abc.abstractmethod
    def weight_source(cls, model_id: str) -> WeightSource:
        """Where the pretrained weights of `model_id` are downloaded from (for the cache and `download`)."""

    @abc.abstractmethod
    def _build(self) -> torch.nn.Module:
        """Build the network on CPU: from `self.weights_path`, or random init when `self.random_weights`."""

    def _verify(self, module: torch.nn.Module) -> None:
        """Raise RuntimeError if the built network disagrees with the adapter's static layer table."""

    @abc.abstractmethod
    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, S, S) input on the device -> grid (h, w, d), global vector (d_g,). Called under the lock."""

    @abc.abstractmethod
    def _count_layers(self) -> int:
        """Number of blocks (known without building the network)."""

    @abc.abstractmethod
    def layer_grid_shape(self, layer: int) -> tuple[int, int]:
        """(h, w) of the grid at `layer` for the default input."""

    @abc.abstractmethod
    def layer_feature_dim(self, layer: int) -> int:
        """Channels d of the grid at `layer`."""

    @abc.abstractmethod
    def layer_global_dim(self, layer: int) -> int:
        """Length of the global vector at `layer`."""

    @abc.abstractmethod
    def _make_preprocess(self) -> Preprocess:
        """The image -> tensor transform this teacher's weights expect (from the library's pretrained config)."""

    def _check_config(self) -> None:
        """Raise `InputError` for config values the adapter cannot use (layer known; nothing loaded yet)."""

    def _model_key(self) -> tuple:
        """Everything that makes a loaded network different (the layer is not: all layers share one)."""
        return (self.model_id,)

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
        if self.random_weights:
            module = seeded_build(self._build)
        else:
            module = self._build()
        self._verify(module)
        return module.to(self.device)

    def display_name(self) -> str:
        """e.g. 'DINOv2 ViT-S/14'."""
        return self.VARIANTS.get(self.model_id, self.model_id)

    def describe(self, layer: int) -> str:
        """Human-readable label of this teacher at `layer`."""
        label = f"{self.display_name()} · layer {layer}"
        return label + " · untrained (random weights)" if self.random_weights else label

    def check_layer(self, layer: int | None) -> int:
        """A valid block index (negative counts from the end), or `InputError` naming the valid range."""
        return _resolve_layer(layer, self.num_layers, self.name)

    def cache_key(self, img: Image.Image) -> str:
        """Key of this image's output in the teacher-output cache: (image content, teacher, layer, config)."""
        parts = (
            "v1", content_hash(img), self.name, self.model_id, self.random_weights, self.layer,
            repr(sorted(asdict(self.config).items())),
        )
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:40]

    def encode(self, image: Image.Image, *, use_cache: bool = True) -> TeacherOutput:
        """Image -> this layer's feature grid (h, w, d) and global vector (d_g,), float32 numpy.

        Outputs are cached by (image content, teacher, layer): a repeated call does not run the network.
        A path or bytes is decoded with `apm.images.load_image` first.
        """
        img = image if isinstance(image, Image.Image) else load_image(image)
        key = self.cache_key(img) if use_cache else None
        if key is not None:
            hit = OUTPUT_CACHE.get(key)
            if hit is not None and hit[0].shape == (*self.info.grid_shape, self.info.feature_dim):
                return TeacherOutput(grid=hit[0], global_vector=hit[1], info=self.info)
        x = self.preprocess(img).to(self.device)  # (1, 3, S, S)
        with self._shared.lock, torch.inference_mode():
            grid_t, glob_t = self._forward(x)
            self.forward_passes += 1
        grid = grid_t.detach().float().cpu().numpy().astype(np.float32, copy=True)  # (h, w, d)
        glob = glob_t.detach().float().cpu().numpy().astype(np.float32, copy=True).reshape(-1)  # (d_g,)
        expected = (*self.info.grid_shape, self.info.feature_dim)
        if grid.shape != expected:  # a bug in an adapter, not a user error
            raise RuntimeError(f"{self.info.label}: grid shape {grid.shape} != expected {expected}")
        if key is not None:
            OUTPUT_CACHE.put(key, grid, glob)
        return TeacherOutput(grid=grid, global_vector=glob, info=self.info)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.label} grid={self.info.grid_shape} d={self.info.feature_dim}>"


def _resolve_layer(layer: int | None, num_layers: int, name: str) -> int:
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


# registry and factory

_REGISTRY: dict[str, type[Teacher]] = {}


def register_teacher(cls: type[Teacher]) -> type[Teacher]:
    """Class decorator: make a `Teacher` subclass available to `create_teacher` under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no registry name")
    _REGISTRY[cls.name] = cls
    return cls


def list_teachers() -> list[str]:
    """Registry keys of the available teachers, e.g. ['dinov2', 'clip', 'mvit']."""
    return sorted(_REGISTRY, key=lambda key: (_REGISTRY[key].rank, key))


def teacher_class(name: str) -> type[Teacher]:
    """The adapter class registered as `name`, or `InputError` naming the choices."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise InputError(f"unknown teacher '{name}'; choose one of: {', '.join(list_teachers())}")
    return _REGISTRY[key]


def resolve_variant(cls: type[Teacher], variant: str | None) -> str | None:
    """A variant name or alias -> the model id it stands for (None keeps the default)."""
    if variant is None or str(variant).strip() == "":
        return None
    text = str(variant).strip()
    if text in cls.VARIANTS:
        return text
    lowered = {k.lower(): k for k in cls.VARIANTS}
    if text.lower() in lowered:
        return lowered[text.lower()]
    if text.lower() in cls.ALIASES:
        return cls.ALIASES[text.lower()]
    choices = ", ".join([*cls.ALIASES, *cls.VARIANTS])
    raise InputError(f"unknown {cls.name} variant '{variant}'; choose one of: {choices}")


def create_teacher(
    name: str,
    layer: int | None = None,
    random_weights: bool | None = None,
    device: str = "auto",
    variant: str | None = None,
    **options: Any,
) -> Teacher:
    """Build (or reuse) a teacher: `name` in `list_teachers()`, `layer` a block index (default the last).

    `random_weights=None` reads APM_RANDOM_WEIGHTS; `variant` picks another model id (e.g.
    'vit_base_patch14_dinov2.lvd142m') or an alias ('base', 'reg4'); `options` override fields of the
    adapter's config dataclass. Raises `InputError` for bad choices, `WeightsUnavailableError` when
    pretrained weights are neither cached nor downloadable.
    """
    cls = teacher_class(name)
    if random_weights is None:
        random_weights = random_weights_default()
    model_id = resolve_variant(cls, variant)
    fields = getattr(cls.Config, "__dataclass_fields__", {})
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise InputError(f"unknown {cls.name} option(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    if model_id is not None:
        options["model_id"] = model_id
    config = cls.Config(**options)
    return cls(config, layer=layer, random_weights=bool(random_weights), device=resolve_device(device))
