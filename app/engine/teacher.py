"""The one teacher path of the app: every teacher forward pass goes through `encode_image`, the one function under
the ZeroGPU hook, and its outputs are kept in memory for every session (the same image bytes, teacher, layers and
grid are encoded once: clicking an example shows its teacher islands and levels at once)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from apm.teachers import TeacherOutput, create_teacher

log = logging.getLogger("apm.app")

TEACHER_CACHE_ENTRIES = 48  # (image, teacher, layers) outputs kept: a levels strip of a 12-layer ViT is ~9 MB


def zero_gpu() -> Callable[[Callable], Callable]:
    """`spaces.GPU` on a Hugging Face ZeroGPU Space, a no-op decorator everywhere else.

    ZeroGPU runs a decorated call in a short-lived GPU worker, so it suits the stateless teacher step; the
    APM's training stays in this process, where Stop and the timeline can reach it (and uses CUDA by itself on
    a Space with a dedicated GPU: devices default to "auto").
    """
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces  # only present on Spaces

            return spaces.GPU
        except ImportError:
            log.warning("SPACES_ZERO_GPU is set but the spaces package is missing; running without the GPU hook")
    return lambda fn: fn



def image_digest(image: Image.Image) -> str:
    """A hash of an image's pixels (and size and mode): the same picture gives the same digest, whatever file or
    session it came from."""
    h = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(np.asarray(image).tobytes())
    return h.hexdigest()


class _OutputCache:
    """Teacher outputs by (image digest, teacher, layer, weights, layers, options), least recently used out first."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[tuple, list[TeacherOutput]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> list[TeacherOutput] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return found

    def put(self, key: tuple, outputs: list[TeacherOutput]) -> None:
        with self._lock:
            self._items[key] = outputs
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


TEACHER_OUTPUTS = _OutputCache(TEACHER_CACHE_ENTRIES)


def encode_image(teacher_id: str, layer: int | None, random_weights: bool | None, image: Image.Image,
                 layers: Sequence[int] | None = (None,), options: dict[str, Any] | None = None
                 ) -> tuple[Any, list[TeacherOutput]]:
    """The teacher for these settings and its outputs for the image, one per layer of `layers` (None: every
    layer, from one forward pass; the default: the teacher's own layer). Every teacher call of the app.
    `options`: the teacher's config (`Experiment.teacher_options()`: the input size of a grid setting)."""
    teacher = create_teacher(teacher_id, layer=layer, random_weights=random_weights, **(options or {}))
    wanted = None if layers is None else tuple(teacher.layer if k is None else k for k in layers)
    key = (image_digest(image), teacher_id, teacher.layer, teacher.random_weights, wanted,
           tuple(sorted((options or {}).items())))
    found = TEACHER_OUTPUTS.get(key)
    if found is None:
        found = _forward(teacher, image, wanted)
        TEACHER_OUTPUTS.put(key, found)
    return teacher, list(found)


@zero_gpu()
def _forward(teacher: Any, image: Image.Image, layers: tuple[int, ...] | None) -> list[TeacherOutput]:
    return teacher.encode_layers(image) if layers is None else teacher.encode_layers(image, list(layers))
