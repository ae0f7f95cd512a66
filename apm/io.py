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
