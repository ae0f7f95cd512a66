"""Devices and precision: where tensors go, and whether bf16 is worth using on this machine.

A CPU either has native bf16 matrix instructions (AVX512-BF16 or AMX: bf16 matmul about twice fp32) or it
emulates bf16 (AVX2: far slower than fp32). `cpu_has_fast_bf16` reads the CPU's flags; nothing assumes.
"""

from __future__ import annotations

import functools

import torch

from .errors import InputError


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


CPUINFO = "/proc/cpuinfo"


def _cpuinfo_lines(cpuinfo: str | None) -> list[tuple[str, str]] | None:
    """The CPU's description as (key, value) lines, every core's in turn; None where it cannot be read."""
    try:
        with open(cpuinfo or CPUINFO) as f:
            return [(key.strip(), value.strip()) for key, _, value in (line.partition(":") for line in f)]
    except OSError:
        return None


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The CPU's kind for speed figures: 'amx', 'avx512_bf16', 'avx2' or 'other' (read from its flags)."""
    lines = _cpuinfo_lines(cpuinfo)
    if lines is None:
        return "other"
    flags = set(" ".join(value for key, value in lines if key == "flags").split())
    for kind in ("amx_bf16", "avx512_bf16", "avx2"):
        if kind in flags:
            return "amx" if kind == "amx_bf16" else kind
    return "other"


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model as its description names it, with its family and model numbers ('AMD EPYC, family 25
    model 17'): two machines of one kind can differ twofold (a Zen 4 core multiplies bf16 on 256-bit halves, a
    Zen 5 core on full 512-bit units), so a speed figure says which it came from. 'unknown' where it is not said."""
    fields: dict[str, str] = {}
    for key, value in _cpuinfo_lines(cpuinfo) or []:
        fields.setdefault(key, value)  # the first core's
    name = fields.get("model name") or "unknown"
    numbers = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model")) if fields.get(key)]
    return ", ".join([name, " ".join(numbers)]) if numbers else name


def cpu_header() -> str:
    """The first lines of every speed script's output: the CPU's kind (figures compare only within one) and model."""
    return (f"cpu_kind {cpu_kind()}  # amx, avx512_bf16, avx2 or other: compare figures only within one kind\n"
            f"# cpu {cpu_model()}")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX)."""
    return cpu_kind() in ("amx", "avx512_bf16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device (None: plain fp32).

    "auto" uses bf16 only where it is native: CUDA with bf16 support (else fp16), or a CPU with fast bf16.
    "bf16" forces it (emulated, and slow, on a CPU without it).
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (precision == "bf16" or cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16' or 'fp32' for an autocast dtype."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


@functools.lru_cache(maxsize=1)
def measured_gflops() -> float:
    """This machine's fp32 matmul rate, GFLOP/s (a 1024^3 product timed a few times; about 0.1 s, once)."""
    import time

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best / 1e9
