"""Devices and precision: where tensors go, and whether bf16 is worth using on this machine.

A CPU either has native bf16 matrix instructions (AVX512-BF16 or AMX: bf16 matmul about twice fp32) or it
emulates bf16 (AVX2: far slower than fp32). `cpu_has_fast_bf16` reads the CPU's flags; nothing assumes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_KEEP_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap (a paper-preset weight is 64 MiB in fp32)
_KEEP_TRIM_THRESHOLD = (1 << 31) - 1  # and freed heap memory is kept for the next step


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let this process reuse the memory of freed tensors instead of giving it back to the OS (glibc's mallopt).

    A training step frees and re-allocates the same large tensors every time (autocast's bf16 copies of the
    weights, the gradients). By default glibc maps each block over 128 KiB to fresh pages and unmaps it when it
    is freed, so every step pays page faults on all of them. Measured here, three runs each: the `paper` preset's
    step went from about 0.96 to 0.86 s. The cost is that the process keeps its peak memory. Called by every training
    loop (`OverfitRun`, `apm.fit`); once per process. False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # no mallopt: not glibc (macOS, musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM_THRESHOLD))
