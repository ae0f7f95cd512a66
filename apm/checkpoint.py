"""Trained APMs on disk: `safetensors` weights plus a JSON config, never a pickle.

A checkpoint folder holds
    config.json         {"format": "apm", "format_version": 1, "model": ModelConfig fields, "meta": {...}}
    model.safetensors   the parameters, by their `state_dict` names
and, for `apm fit --resume`, `optimizer.safetensors` + `trainer.json` (written by `apm.fit`). Every file is
written atomically, so an interrupted save leaves the previous checkpoint whole. `APM.save_pretrained(dir)`
and `APM.from_pretrained(dir)` are the public entry points; `meta` carries what the model was trained on
(teacher id, layer, images) for the CLI and the app to show.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .io import save_json, write_atomic

FORMAT = "apm"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_TUPLE_FIELDS = ("grid", "hidden", "rgb_hidden")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file, written atomically (tensors made contiguous and moved to the CPU)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_atomic(Path(path), lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors on the CPU; a damaged file is an `InputError` naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - the library raises several types for a bad header
        raise InputError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def config_to_dict(config) -> dict[str, Any]:
    return asdict(config)


def config_from_dict(values: dict[str, Any]):
    """A `ModelConfig` from a config.json's `model` entry (unknown keys are an error: a newer format)."""
    from .model import ModelConfig

    names = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"the checkpoint's config has unknown model fields {unknown}: is it from a newer version?")
    values = {k: tuple(v) if k in _TUPLE_FIELDS and v is not None else v for k, v in values.items()}
    try:
        config = ModelConfig(**values)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise InputError(f"the checkpoint's model config is invalid: {exc}") from None
    return config


def save_pretrained(model, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write `model` (an `APM`) to `folder`: config.json and model.safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / WEIGHTS_FILE, model.state_dict(), metadata={"format": FORMAT})
    save_json(folder / CONFIG_FILE, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config_to_dict(model.config),
        "meta": meta or {},
    })
    return folder


def read_config(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """(ModelConfig, meta) of a checkpoint folder, checked; one clear `InputError` for anything wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"checkpoint folder not found: {folder}")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{folder} is not an APM checkpoint: it has no {CONFIG_FILE}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("model"), dict):
        raise InputError(f"{path} is not an APM checkpoint config (no \"format\": \"{FORMAT}\")")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} has format version {data['format_version']}; this build reads {FORMAT_VERSION}")
    return config_from_dict(data["model"]), dict(data.get("meta") or {})


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu"):
    """The `APM` saved in `folder`, in eval mode on `device`."""
    from .model import APM

    config, meta = read_config(folder)
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{folder} has a config but no {WEIGHTS_FILE}")
    state = load_tensors(weights)
    model = APM(config)
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
