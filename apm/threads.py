"""Thread, BLAS and memory tuning, in one place: how many threads torch and numpy's BLAS use where, how the
server yields to training, and how training keeps freed memory. Each function says what it measured."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading

import torch
from threadpoolctl import ThreadpoolController

_TRAIN_THREADS: int | None = None  # torch threads of training processes, when the server keeps one for itself


def serve_single_threaded() -> int:
    """Run this process's own torch work on one thread and give training processes the cores instead.

    On a 2-core machine, GNU OpenMP slows every parallel region once more threads have OpenMP teams than there
    are cores: it stops spinning and sleeps between regions. Teams are made by each thread that runs torch ops
    (a server's workers encoding with the teacher) and a forked child inherits the count, so a training process
    forked from such a server trained about 20% slower than the same process on its own (measured: 45 against
    55 steps/s for the `cpu` preset). With the server's torch on one thread (no teams at all), each training
    process (the process backend) sets the thread count it had before, and trains at full speed. Returns it.
    """
    global _TRAIN_THREADS, _BLAS_PIN
    if _TRAIN_THREADS is None:
        _TRAIN_THREADS = torch.get_num_threads()
        torch.set_num_threads(1)
        _BLAS_PIN = _pin_blas()
    return _TRAIN_THREADS


_BLAS_PIN = None  # keeps numpy's BLAS on one thread for the server's lifetime


def _pin_blas():
    """numpy's BLAS on one thread for good. Its products in a server (projections, agreement maps) are small,
    and a BLAS thread pool that is resized while another thread multiplies (or that a fork shuts down under a
    running product) can spin forever: with one thread there is no pool to resize."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return None
    return threadpool_limits(limits=1, user_api="blas")


def training_threads() -> int | None:
    """torch threads of a training process forked from a server that keeps one for itself (None: not set)."""
    return _TRAIN_THREADS


def lower_priority(niceness: int) -> bool:
    """Lower the calling thread's priority (Linux niceness is per thread and inherited by the threads it starts
    later; raising it needs no privilege). False where it cannot."""
    if not hasattr(os, "nice"):
        return False
    try:
        os.nice(niceness)
    except OSError:
        return False
    return True


_blas_lock = threading.Lock()
_blas_users = 0  # callers inside one_blas_thread(); the first sets the limit, the last restores it
_blas_limiter = None
_blas_controller: ThreadpoolController | None = None


@contextlib.contextmanager
def one_blas_thread():
    """Run numpy's BLAS on one thread (every BLAS product of a live frame runs inside it: a thread count changed
    while another thread is inside a BLAS call can leave OpenBLAS spinning). The products here are small (n <= a few thousand): on a shared 2-core
    machine waking a second BLAS thread costs more than it saves, and turns a 0.5 ms product into 5-10 ms."""
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None



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
