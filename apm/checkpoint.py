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

from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .io import CONFIG_FILE, WEIGHTS_FILE, load_tensors, read_weights_config, save_tensors  # noqa: F401 - re-exported
from .io import WEIGHTS_FORMAT as FORMAT  # noqa: F401
from .io import WEIGHTS_FORMAT_VERSION as FORMAT_VERSION  # noqa: F401
from .model import APM, ModelConfig


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    return config.to_dict()


def config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """A `ModelConfig` from a config.json's `model` entry (unknown keys are an error: a newer format)."""
    return ModelConfig.from_dict(values)


def save_pretrained(model: APM, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write `model` to `folder`: config.json and model.safetensors (`APM.save_pretrained`)."""
    return model.save_pretrained(folder, meta)


def read_config(folder: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, meta) of a checkpoint folder, checked; one clear `InputError` for anything wrong."""
    values, meta = read_weights_config(Path(folder))
    return ModelConfig.from_dict(values), meta


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu") -> APM:
    """The `APM` saved in `folder`, in eval mode on `device` (`APM.from_pretrained`)."""
    return APM.from_pretrained(folder, device)


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
