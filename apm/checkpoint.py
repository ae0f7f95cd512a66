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


# where checkpoints come from: a folder, the project's checkpoints/, or a Hugging Face Hub repo


def checkpoints_dir() -> Path:
    """The folder of shipped checkpoints: $APM_CHECKPOINTS_DIR, else checkpoints/ beside the package."""
    import os

    return Path(os.environ.get("APM_CHECKPOINTS_DIR") or Path(__file__).resolve().parent.parent / "checkpoints")


def list_checkpoints(root: str | Path | None = None) -> list[Path]:
    """Checkpoint folders (those with a config.json) directly under `root`, sorted by name."""
    root = Path(root) if root is not None else checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_checkpoint(source: str | Path) -> Path:
    """A local checkpoint folder for `source`: a folder path, a name under checkpoints/, or `hf:org/repo`
    (fetched through huggingface_hub into its cache; offline, only the cache is read, with a clear error)."""
    text = str(source).strip()
    if not text:
        raise InputError("no checkpoint given")
    if text.startswith("hf:"):
        return _from_hub(text[3:])
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    shipped = checkpoints_dir() / text
    if shipped.is_dir():
        return shipped
    raise InputError(f"checkpoint folder not found: {text} (a folder, a name under {checkpoints_dir()}, "
                     f"or hf:ORG/REPO for the Hugging Face Hub)")


def _from_hub(repo_id: str) -> Path:
    from .env import hf_cache_dir, offline_reason

    if not repo_id or repo_id.count("/") != 1:
        raise InputError(f"a Hub checkpoint is hf:ORG/REPO, got hf:{repo_id}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of the project
        raise InputError("huggingface_hub is needed to fetch a checkpoint from the Hub") from None
    patterns = [CONFIG_FILE, WEIGHTS_FILE]
    try:  # the cache first: an offline machine with a filled cache just works
        return Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=str(hf_cache_dir()),
                                      local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (yet)
        pass
    reason = offline_reason()
    if reason:
        raise InputError(f"the checkpoint hf:{repo_id} is not in the local Hub cache {hf_cache_dir()} and cannot be "
                         f"downloaded: {reason}. Fetch it on a machine with network (same HF_HOME), or use a local "
                         f"folder.")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=str(hf_cache_dir())))
    except Exception as exc:  # noqa: BLE001 - no network, no such repo, no access
        raise InputError(f"cannot fetch the checkpoint hf:{repo_id}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]}") from None
