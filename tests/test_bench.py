"""`python -m apm.bench` (`apm.bench.sections`) detects native bf16 and never times or trains in emulated bf16."""

from __future__ import annotations

import sys

import pytest
import torch

from apm import device
from apm.bench import sections as bench


class Spy:
    """Stands in for the timed functions: records what was asked, answers at once."""

    def __init__(self, peaks=None):
        self.matmuls: list[torch.dtype] = []
        self.steps: list[str] = []
        self.events: list[tuple] = []  # ("matmul", dtype) and ("step", precision), in order
        self.peaks = peaks  # successive GFLOP/s the probe answers (None: always 100)

    def matmul(self, dtype, n=2048, repeats=10):
        self.matmuls.append(dtype)
        self.events.append(("matmul", dtype))
        return 100.0 if self.peaks is None else self.peaks[len(self.matmuls) - 1]

    def step(self, preset, grid, d, precision, steps):
        self.steps.append(precision)
        self.events.append(("step", precision))
        image, target = bench._synthetic(*grid, 8)
        from apm.train import OverfitRun, TrainConfig

        run = OverfitRun(image, target, TrainConfig(steps=1, precision=precision), "cpu")
        return 0.01, run


def figures(monkeypatch, native: bool, peaks=None) -> tuple[dict, Spy]:
    spy = Spy(peaks)
    monkeypatch.setattr(bench, "cpu_has_fast_bf16", lambda: native)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: native)
    monkeypatch.setattr(bench, "matmul_gflops", spy.matmul)
    monkeypatch.setattr(bench, "step_seconds", spy.step)
    monkeypatch.setattr(bench, "resolve_device", lambda _: torch.device("cpu"))
    monkeypatch.setattr(bench, "official_step", lambda steps=3: spy.events.append(("official",)) or (2.0, 4 * 10**11))
    out: dict = {}
    bench.training_figures(lambda name, value, precision=None: out.__setitem__(name, (value, precision)))
    return out, spy


def test_without_native_bf16_nothing_runs_in_bf16(monkeypatch):
    out, spy = figures(monkeypatch, native=False)
    assert out["bf16_native"] == (0, None)
    assert set(spy.matmuls) == {torch.float32}  # no bf16 matmul is timed
    assert "matmul_gflops_bf16" not in out and "cpu_preset_fp32_steps_per_s" not in out
    assert all(p in (None, "fp32") for _, p in out.values())  # every figure says fp32
    assert out["cpu_preset_steps_per_s"][1] == "fp32"


def test_with_native_bf16_both_precisions_are_timed(monkeypatch):
    out, spy = figures(monkeypatch, native=True)
    assert out["bf16_native"] == (1, None)
    assert spy.matmuls[:2] == [torch.float32, torch.bfloat16]
    assert out["matmul_gflops_bf16"][1] == "bf16" and out["cpu_preset_steps_per_s"][1] == "bf16"
    assert out["cpu_preset_fp32_steps_per_s"][1] == "fp32" and spy.steps[-1] == "fp32"
    assert {"cpu_preset_g32_steps_per_s", "cpu_preset_g32_peak_fraction", "paper_preset_peak_fraction"} <= set(out)
    assert out["paper_vs_official_step"][0] == 2.0 / 0.01  # the official step over the paper preset's
    paper_flops = out["paper_preset_gflops"][0] * 0.01 * 1e9
    # the ceiling: both steps' FLOPs at their precision's peak (the spy's matmuls run at 100 GFLOP/s in both)
    assert abs(out["paper_vs_official_ceiling"][0] - 4 * 10**11 / paper_flops) < 1e-9


def test_each_fraction_is_read_against_probes_taken_beside_its_step(monkeypatch):
    """A shared VM drifts within minutes: each step's peak is the mean of a probe of its precision right before and
    right after it, and the official step's (fp32) likewise; nothing else runs between a probe and its step."""
    for native in (True, False):
        peaks = [100.0 + 10 * i for i in range(64)]  # every probe answers differently
        out, spy = figures(monkeypatch, native=native, peaks=peaks)
        probes = iter(peaks)
        events = [(e, next(probes)) if e[0] == "matmul" else (e, None) for e in spy.events]
        timed = [i for i, (e, _) in enumerate(events) if e[0] in ("step", "official")]
        step_dtype = torch.bfloat16 if native else torch.float32
        for i, name in zip(timed, ("cpu_preset", "cpu_preset_g32", "paper_preset")):
            (before, a), (after, b) = events[i - 1], events[i + 1]
            assert before == after == ("matmul", step_dtype)
            assert out[f"{name}_peak_gflops"][0] == (a + b) / 2
            assert abs(out[f"{name}_peak_fraction"][0] * (a + b) / 2 - out[f"{name}_gflops"][0]) < 1e-9
        official = timed[-1]
        assert events[official][0] == ("official",)
        assert events[official - 1][0] == events[official + 1][0] == ("matmul", torch.float32)
        assert out["official_peak_gflops"][0] == (events[official - 1][1] + events[official + 1][1]) / 2
        paper_flops = out["paper_preset_gflops"][0] * 0.01 * 1e9
        ceiling = (4 * 10**11 / out["official_peak_gflops"][0]) / (paper_flops / out["paper_preset_peak_gflops"][0])
        assert abs(out["paper_vs_official_ceiling"][0] - ceiling) < 1e-9


def test_the_memory_bound_parts_are_timed_and_bound_the_fraction(monkeypatch):
    """Adam's update and autocast's casts, timed on their own, give each preset a ceiling on its peak fraction:
    the matmuls at the probe's peak plus those two; the casts are 0 where nothing runs in bf16."""
    for native in (True, False):
        out, _ = figures(monkeypatch, native=native)
        for name in ("cpu_preset", "cpu_preset_g32", "paper_preset"):
            adam, casts, ceiling = (out[f"{name}_{k}"][0] for k in ("adam_ms", "casts_ms", "fraction_ceiling"))
            assert adam > 0 and 0 < ceiling < 1
            assert (casts > 0) == native and out[f"{name}_casts_ms"][1] == ("bf16" if native else "fp32")
            at_peak_ms = out[f"{name}_gflops"][0] * 0.01 / 100 * 1e3  # the spy: 0.01 s a step, 100 GFLOP/s peak
            assert abs(ceiling - at_peak_ms / (at_peak_ms + adam + casts)) < 1e-9


def test_memory_bound_seconds_leaves_gradients_it_needs_and_times_both_parts():
    from apm.train import OverfitRun, TrainConfig

    image, target = bench._synthetic(16, 16, 8)
    run = OverfitRun(image, target, TrainConfig(steps=1, precision="fp32"), "cpu")
    assert all(p.grad is None for p in run.model.parameters())  # never stepped
    update, casts = bench.memory_bound_seconds(run, repeats=1)
    assert update > 0 and casts == 0.0  # fp32: no casts
    assert all(p.grad is not None for p in run.model.parameters())


def test_the_official_step_is_the_official_models_work():
    """One timed step of the official model: its FLOPs are forward plus backward of every layer, as published."""
    from apm.official import OFFICIAL_SHAPES

    seconds, flops = bench.official_step(steps=1)
    linear = [shape for name, shape in OFFICIAL_SHAPES.items() if name.endswith(".weight") and len(shape) == 2]
    macs = 1024 * sum(a * b for a, b in linear)  # per image: 1024 locations through every layer
    conv = 1024 * 3 * 14 * 14  # the column filter, once per location of the grid
    assert seconds > 0
    assert abs(flops - (6 * macs + 4 * conv)) / flops < 1e-3  # forward, input and weight gradients


def test_the_cpu_model_is_read_from_its_description(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert device.cpu_model(str(info)) == "AMD EPYC, family 25 model 17"  # the first core's
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert device.cpu_model(str(info)) == "Some CPU"
    assert device.cpu_model(str(tmp_path / "missing")) == "unknown"


def test_the_cpu_flag_is_read_not_assumed(tmp_path, monkeypatch):
    """The kind comes from the flags line of the CPU's description: AMX, AVX512-BF16, AVX2 only, or none."""
    cases = {"fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile": ("amx", True),
             "fpu avx2 avx512f avx512_bf16": ("avx512_bf16", True),
             "fpu sse4_2 avx2 fma": ("avx2", False), "fpu sse2": ("other", False)}
    device.cpu_has_fast_bf16.cache_clear()
    try:
        for flags, (kind, fast) in cases.items():
            info = tmp_path / "cpuinfo"
            info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\nbugs\t\t: amx_bf16_fake\n")
            monkeypatch.setattr(device, "CPUINFO", str(info))
            device.cpu_has_fast_bf16.cache_clear()
            assert device.cpu_kind() == kind and device.cpu_has_fast_bf16() is fast, flags
        monkeypatch.setattr(device, "CPUINFO", str(tmp_path / "missing"))
        device.cpu_has_fast_bf16.cache_clear()
        assert device.cpu_kind() == "other" and device.cpu_has_fast_bf16() is False
    finally:
        device.cpu_has_fast_bf16.cache_clear()


def test_the_islands_bench_is_the_benchs_islands_section(monkeypatch, capsys):
    """`python -m apm.islands_bench` runs `apm.bench`'s islands section alone and passes its own arguments on."""
    import runpy

    from apm.bench import sections

    ran = []
    fake = {name: (lambda emit, name=name: (ran.append(name), emit(f"{name}_ms", 1.0))) for name in sections.SECTIONS}
    monkeypatch.setattr(sections, "SECTIONS", fake)
    monkeypatch.setattr(sys, "argv", ["apm.islands_bench", "--threads", "1"])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_module("apm.islands_bench", run_name="__main__")
        assert done.value.code == 0 and ran == ["islands"] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert "islands_ms 1" in capsys.readouterr().out
