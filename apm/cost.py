"""What asynchronous decoding costs against the teacher's forward pass, measured on this machine.

- **Time**: the median wall-clock time of a few repeats after a warm-up, in this process's torch threads.
- **Peak memory**: torch's profiler (`profile_memory=True`) sees every allocation and free of tensor memory that
  torch's CPU allocator makes during the call; the peak is the largest running total of them, net of what existed
  before the call. So it counts the activations and outputs the call creates, not the parameters, the input or the
  interpreter. The APM's decoding drops each chunk once it is decoded (a consumer that draws or stores a chunk keeps
  its own copy of k x d numbers), so its figure is the decoding's working memory.
- **FLOPs**: `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention; 2 per multiply-add),
  which `APM.decode_flops` checks analytically.

The teacher is timed as its architecture, untrained: time, memory and FLOPs do not depend on the weights. Its forward
pass is read at square grids of `side` x `side` patches (the input is side * patch pixels a side), plus its prefix
tokens. timm's ViTs use torch's fused attention, which never holds the tokens x tokens matrix at once; with
`explicit_attention=True` the attention matrix is formed as in the original ViT (the quadratic memory).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .bench.timing import median_seconds
from .model import APM

REFERENCE_TEACHER = "vit_small_patch14_dinov2"  # DINOv2 ViT-S/14: the architecture when a teacher's cannot resize


def peak_bytes(fn: Callable[[], object]) -> int:
    """The peak of tensor memory that `fn()` allocates on the CPU, net of what was allocated before (see the module)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and str(event.extra_fields.device).startswith("cpu"):
            events.append((event.start_time_ns, int(event.extra_fields.alloc_size)))
    total = peak = 0
    for _, size in sorted(events):
        total += size
        peak = max(peak, total)
    return peak


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Whatever is written to the process's stderr during the block is dropped: torch's profiler prints
    `USDT: ... profiler_start/stop` lines from C++ on some builds, and the block only runs the measured call
    (an exception still propagates, and is reported once the block has given stderr back)."""
    fd = 2  # where native code writes, whatever Python's sys.stderr is
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of `fn()` by torch's own counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class CostPoint:
    """One measured decoding (or teacher forward pass) of n locations (or patches)."""

    model: str  # "apm" or "teacher"
    n: int  # locations decoded, or the teacher's patches
    chunk: int | None  # the APM's chunk size (None for the teacher)
    seconds: float
    peak_bytes: int
    flops: int

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def apm_decoder(apm: APM, n: int, chunk: int, seed: int = 0) -> Callable[[], None]:
    """Decode n locations of the grid (a seeded random draw) in chunks, dropping each chunk as it comes."""
    h, w = apm.config.grid
    order = torch.from_numpy(np.random.default_rng(seed).permutation(h * w)[:n])
    locations = torch.stack([order // w, order % w], dim=1)
    column = torch.zeros(1, apm.config.column_dim, device=next(apm.parameters()).device)

    def run() -> None:
        for _ in apm.decode_chunks(column, locations, chunk):
            pass

    return run


def apm_costs(apm: APM, ns: Sequence[int], chunks: Sequence[int], repeats: int = 3) -> list[CostPoint]:
    """The APM's decoding of each n at each chunk size (chunks larger than n are run as n)."""
    points, seen = [], set()
    for n in ns:
        for chunk in chunks:
            size = min(chunk, n)
            if (n, size) in seen:
                continue
            seen.add((n, size))
            run = apm_decoder(apm, n, size)
            points.append(CostPoint("apm", n, size, median_seconds(run, repeats), peak_bytes(run), count_flops(run)))
    return points


def teacher_architecture(teacher_id: str | None) -> tuple[torch.nn.Module, int, str]:
    """(the teacher's network, untrained, that takes any square input; its patch in px; a label).

    DINOv2 ids give their own architecture; other teachers (CLIP, MViTv2 take one input size) give DINOv2 ViT-S/14's.
    """
    import timm

    from .teachers.dinov2 import DINOv2Teacher
    from .teachers.registry import parse_teacher_id

    arch, label = REFERENCE_TEACHER, "DINOv2 ViT-S/14 (architecture)"
    if teacher_id:
        cls, model_id = parse_teacher_id(teacher_id)
        if cls is DINOv2Teacher:
            model_id = model_id or DINOv2Teacher.Config().model_id
            arch = model_id.rsplit(".", 1)[0]
            label = f"{DINOv2Teacher.VARIANTS[model_id].display_name} (architecture)"
        else:
            label = f"DINOv2 ViT-S/14 (architecture; {cls.name} takes one input size)"
    torch.manual_seed(0)
    module = timm.create_model(arch, pretrained=False, dynamic_img_size=True, num_classes=0).eval()
    return module, int(module.patch_embed.patch_size[0]), label


def teacher_forward(module: torch.nn.Module, grid: tuple[int, int], patch: int,
                    explicit_attention: bool = False) -> Callable[[], None]:
    """One forward pass of the teacher over an h x w grid of patches."""
    x = torch.rand(1, 3, grid[0] * patch, grid[1] * patch)
    blocks = [m for m in module.modules() if hasattr(m, "fused_attn")]

    def run() -> None:
        saved = [m.fused_attn for m in blocks]
        try:
            for m in blocks:
                m.fused_attn = not explicit_attention
            with torch.inference_mode():
                module.forward_features(x)
        finally:
            for m, value in zip(blocks, saved):
                m.fused_attn = value

    return run


def teacher_costs(module: torch.nn.Module, patch: int, grids: Sequence[tuple[int, int]], repeats: int = 3,
                  explicit_attention: bool = False) -> list[CostPoint]:
    """The teacher's forward pass over each (h, w) grid of patches."""
    points = []
    for grid in grids:
        run = teacher_forward(module, grid, patch, explicit_attention)
        points.append(CostPoint("teacher", grid[0] * grid[1], None, median_seconds(run, repeats), peak_bytes(run),
                                count_flops(run)))
    return points


def memory_crossover(apm_points: Sequence[CostPoint], teacher_points: Sequence[CostPoint], chunk: int) -> int | None:
    """The fewest patches at which the teacher's measured peak passes the APM's (decoding as many, `chunk` at a time)."""
    apm_at = {p.n: p.peak_bytes for p in apm_points if p.chunk == min(chunk, p.n)}
    for point in sorted(teacher_points, key=lambda p: p.n):
        if point.n in apm_at and point.peak_bytes > apm_at[point.n]:
            return point.n
    return None


@dataclass(frozen=True)
class TableRow:
    """One line of a Table-4-like comparison: one image's full grid."""

    model: str
    params: int
    gflops: float  # per image
    peak_mb: float
    seconds: float


def cost_table(apm: APM, teacher: torch.nn.Module, patch: int, teacher_label: str, chunk: int = 64,
               repeats: int = 2) -> list[TableRow]:
    """The APM decoding its whole grid (`chunk` at a time, and in one go) beside the teacher at the same grid."""
    h, w = apm.config.grid
    params = sum(p.numel() for p in apm.parameters())
    rows = []
    for size in (chunk, h * w):
        run = apm_decoder(apm, h * w, size)
        rows.append(TableRow(f"APM, chunks of {size}" if size < h * w else "APM, whole grid at once", params,
                             count_flops(run) / 1e9, peak_bytes(run) / 2**20, median_seconds(run, repeats)))
    run = teacher_forward(teacher, (h, w), patch)
    rows.append(TableRow(teacher_label, sum(p.numel() for p in teacher.parameters()), count_flops(run) / 1e9,
                         peak_bytes(run) / 2**20, median_seconds(run, repeats)))
    return rows
