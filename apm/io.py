"""Writing results: every file goes through a temporary sibling and a rename, so a reader (or a crash)
never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file through a temporary sibling and rename it into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private (0600): give them the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomic(path, _write)


def save_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n"))


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


# a weights folder: safetensors tensors and a JSON config (the checkpoint format; `apm.checkpoint` reads it)

WEIGHTS_FORMAT = "apm"
WEIGHTS_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file, written atomically (tensors made contiguous and moved to the CPU)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_atomic(Path(path), lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict:
    """A safetensors file's tensors on the CPU; a damaged file is an `InputError` naming it."""
    from safetensors.torch import load_file

    from .errors import InputError

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - the library raises several types for a bad header
        raise InputError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def save_weights_folder(folder: Path, model_values: dict, meta: dict | None, tensors: dict) -> Path:
    """config.json ({"format", "format_version", "model", "meta"}) and model.safetensors in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / WEIGHTS_FILE, tensors, metadata={"format": WEIGHTS_FORMAT})
    save_json(folder / CONFIG_FILE, {"format": WEIGHTS_FORMAT, "format_version": WEIGHTS_FORMAT_VERSION,
                                     "model": model_values, "meta": meta or {}})
    return folder


def read_weights_config(folder: Path) -> tuple[dict, dict]:
    """(the config's `model` entry, its `meta`) of a weights folder, checked; one clear `InputError`."""
    from .errors import InputError

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
    if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT or not isinstance(data.get("model"), dict):
        raise InputError(f"{path} is not an APM checkpoint config (no \"format\": \"{WEIGHTS_FORMAT}\")")
    if int(data.get("format_version", 0)) > WEIGHTS_FORMAT_VERSION:
        raise InputError(f"{path} has format version {data['format_version']}; this build reads {WEIGHTS_FORMAT_VERSION}")
    return data["model"], dict(data.get("meta") or {})


def save_png(path: Path, image: Image.Image) -> None:
    """A PNG, written atomically."""
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def save_gif(path: Path, frames: Sequence[Image.Image], duration_ms: int = 120) -> None:
    """An animated GIF that plays forward then back, written atomically."""
    loop = list(frames) + list(frames[-2:0:-1])
    write_atomic(path, lambda tmp: loop[0].save(tmp, format="GIF", save_all=True, append_images=loop[1:], duration=duration_ms, loop=0))


def environment_record() -> dict:
    """Versions and hardware a result came from (for summary files): python, packages, CPU bf16, CUDA."""
    import platform
    from importlib import metadata

    from .device import cpu_has_fast_bf16

    packages = {}
    for name in ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "scikit-learn", "openTSNE", "pillow"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "cpu_bf16_native": cpu_has_fast_bf16(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
