"""Bring your own features: a user's array as the APM's target instead of a teacher's output.

Accepted: a `.npy` file (read with `allow_pickle=False`: pickles are refused, never unpickled), a `.pt` /
`.pth` file holding one tensor (read with `torch.load(weights_only=True)`), the raw bytes of either, or an
array. The result is float32 of shape (h, w, d), a feature grid, or (d,), a global vector; shape, dtype,
finiteness and size are checked, and every failure is an `InputError` with a one-line message.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

FeatureSource = str | os.PathLike | bytes | bytearray | np.ndarray | torch.Tensor

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class FeatureLimits:
    """Size limits for user feature arrays."""

    max_bytes: int = 512 * 2**20  # largest file accepted, bytes
    max_side: int = 256  # largest grid height / width
    min_side: int = 2  # smallest grid height / width (a 1-wide grid has no islands to show)
    max_dim: int = 8192  # largest feature dimension d
    max_elements: int = 64 * 2**20  # largest h * w * d (256 MiB as float32)


def _describe(source: FeatureSource, name: str | None) -> str:
    if name:
        return f"'{name}'"
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source).name}'"
    if isinstance(source, (bytes, bytearray)):
        return "the uploaded features"
    return "the feature array"


def _check_shape(shape: tuple[int, ...], label: str, limits: FeatureLimits, expect: str) -> None:
    ndim = len(shape)
    if ndim not in (1, 3):
        raise InputError(
            f"{label} has shape {tuple(shape)}; features must be (h, w, d) for a grid or (d,) for a global vector"
        )
    if expect == "grid" and ndim != 3:
        raise InputError(f"{label} has shape {tuple(shape)}; a feature grid (h, w, d) is needed here")
    if expect == "vector" and ndim != 1:
        raise InputError(f"{label} has shape {tuple(shape)}; a global vector (d,) is needed here")
    d = int(shape[-1])
    if not 1 <= d <= limits.max_dim:
        raise InputError(f"{label} has feature dimension {d}; it must be 1-{limits.max_dim}")
    if ndim == 3:
        h, w = int(shape[0]), int(shape[1])
        if not (limits.min_side <= h <= limits.max_side and limits.min_side <= w <= limits.max_side):
            raise InputError(
                f"{label} is a {h} x {w} grid; each side must be {limits.min_side}-{limits.max_side} "
                f"(if it is (d, h, w), transpose it to (h, w, d))"
            )
        if h * w * d > limits.max_elements:
            raise InputError(f"{label} has {h * w * d:,} values; the limit is {limits.max_elements:,}")


def _check_dtype(dtype: np.dtype, label: str) -> None:
    if dtype.hasobject or dtype.kind not in "iuf":
        raise InputError(f"{label} has dtype {dtype}; features must be a plain integer or float array")


def _npy_header(data: bytes, label: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, read before any data is touched (no pickle involved)."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            shape, _, dtype = np.lib.format._read_array_header(buf, version)
    except Exception as exc:  # noqa: BLE001 - any header problem is the file's fault
        raise InputError(f"{label} is not a valid .npy file ({exc})") from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _load_npy(data: bytes, label: str, limits: FeatureLimits, expect: str) -> np.ndarray:
    shape, dtype = _npy_header(data, label)
    _check_dtype(dtype, label)
    _check_shape(shape, label, limits, expect)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - truncated data, pickled objects, ...
        raise InputError(f"{label} cannot be read as a .npy array ({str(exc).splitlines()[0]})") from None


def _load_npz(data: bytes, label: str, limits: FeatureLimits, expect: str) -> np.ndarray:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            keys = list(archive.files)
            if len(keys) != 1:
                raise InputError(f"{label} holds {len(keys)} arrays; save exactly one (np.save to a .npy)")
            with archive.zip.open(keys[0] + ".npy") as member:
                inner = member.read(limits.max_bytes + 1)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{label} cannot be read as a .npz archive ({str(exc).splitlines()[0]})") from None
    if len(inner) > limits.max_bytes:
        raise InputError(f"{label} unpacks to more than {limits.max_bytes / 2**20:.0f} MB")
    return _load_npy(inner, label, limits, expect)


def _load_torch(data: bytes, label: str) -> np.ndarray:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"{label} holds Python objects that are not loaded for safety; save one tensor with torch.save(t, path)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - not a torch file, truncated, ...
        raise InputError(f"{label} cannot be read as a .pt file ({str(exc).splitlines()[0][:160]})") from None
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    else:
        items = [obj]
    tensors = [t for t in items if isinstance(t, torch.Tensor)]
    if len(items) != 1 or len(tensors) != 1:
        raise InputError(f"{label} must hold exactly one tensor, found {type(obj).__name__} with {len(items)} item(s)")
    return _tensor_to_array(tensors[0], label)


def _tensor_to_array(tensor: torch.Tensor, label: str) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    integer = tensor.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if not (tensor.is_floating_point() or integer):
        raise InputError(f"{label} has dtype {tensor.dtype}; features must be a plain integer or float tensor")
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # numpy has no bfloat16 / float8
    return tensor.numpy()


def load_feature_array(
    source: FeatureSource,
    *,
    name: str | None = None,
    expect: str = "any",
    limits: FeatureLimits | None = None,
) -> np.ndarray:
    """A user's features -> float32 (h, w, d) or (d,), validated; `InputError` with a one-line reason otherwise.

    `source` is a path (.npy, .npz with one array, .pt / .pth with one tensor), raw bytes of one of those,
    or an array / tensor. `name` is used in messages; `expect` is 'any', 'grid' or 'vector'.
    """
    limits = limits or FeatureLimits()
    if expect not in ("any", "grid", "vector"):
        raise ValueError(f"expect must be 'any', 'grid' or 'vector', not {expect!r}")
    label = _describe(source, name)

    if isinstance(source, torch.Tensor):
        arr = _tensor_to_array(source, label)
    elif isinstance(source, np.ndarray):
        arr = source
    elif isinstance(source, (bytes, bytearray, str, os.PathLike)):
        suffix = ""
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
            suffix = Path(name).suffix.lower() if name else ""
        else:
            path = Path(source)
            suffix = path.suffix.lower()
            if not path.is_file():
                raise InputError(f"feature file not found: {path}")
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise InputError(f"{label} is {size / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB")
            data = path.read_bytes()
        if len(data) == 0:
            raise InputError(f"{label} is empty (0 bytes)")
        if len(data) > limits.max_bytes:
            raise InputError(f"{label} is {len(data) / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB")
        arr = _load_bytes(data, suffix, label, limits, expect)
    else:
        raise InputError(f"features must be a .npy / .pt file, bytes or an array, not {type(source).__name__}")

    arr = np.asarray(arr)
    _check_dtype(arr.dtype, label)
    _check_shape(arr.shape, label, limits, expect)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf, refused just below
        out = arr.astype(np.float32)  # a copy: the caller's array is never aliased
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise InputError(f"{label} has {bad} NaN or infinite value(s) (after conversion to float32)")
    return out


def _load_bytes(data: bytes, suffix: str, label: str, limits: FeatureLimits, expect: str) -> np.ndarray:
    if data.startswith(_NPY_MAGIC):
        return _load_npy(data, label, limits, expect)
    if suffix == ".npy":  # named .npy but not one: possibly a pickle, which is never unpickled
        raise InputError(f"{label} is not a NumPy .npy file (no .npy header); save the array with np.save")
    if data.startswith(_ZIP_MAGIC) and _is_npz(data):
        return _load_npz(data, label, limits, expect)
    if suffix in (".pt", ".pth") or data.startswith(_ZIP_MAGIC) or data[:1] == b"\x80":  # zip or legacy pickle
        return _load_torch(data, label)
    raise InputError(f"{label} is neither a .npy nor a .pt file")


def _is_npz(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)
