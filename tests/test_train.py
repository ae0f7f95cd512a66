"""The overfit loop: convergence, determinism, stopping, recording, targets, batches and interpolation."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from PIL import Image

from apm.errors import InputError
from apm.model import ModelConfig, sincos_2d
from apm.train import OverfitRun, Target, TrainConfig, overfit

TINY = ModelConfig(grid=(8, 8), patch_size=8, pos_dim=64, hidden=(512, 512), feature_dim=32, rgb_hidden=(32,))


def noise_image(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def smooth_target(h: int = 8, w: int = 8, d: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth, learnable (h, w, d) grid: a random nonlinear function of position."""
    rng = np.random.default_rng(seed)
    pos = sincos_2d(h, w, 16).numpy()
    return np.tanh(pos @ rng.normal(size=(16, d))).reshape(h, w, d).astype(np.float32) * 3.0


def losses(config: TrainConfig, target=None, image=None) -> list[float]:
    target = smooth_target() if target is None else target
    return [s.feat_loss for s in overfit(image or noise_image(), target, config, TINY)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_overfit_drives_feature_loss_down_100x(precision):
    curve = losses(TrainConfig(steps=200, lr=3e-3, precision=precision))
    assert curve[0] / curve[-1] >= 100, (curve[0], curve[-1])


def test_bf16_is_not_worse_than_fp32():
    fp32 = losses(TrainConfig(steps=150, precision="fp32"))
    bf16 = losses(TrainConfig(steps=150, precision="bf16"))
    assert bf16[-1] <= 1.5 * fp32[-1]
    assert abs(bf16[0] - fp32[0]) < 0.05 * fp32[0]


def test_deterministic_with_seed():
    a = losses(TrainConfig(steps=15, seed=3))
    b = losses(TrainConfig(steps=15, seed=3))
    c = losses(TrainConfig(steps=15, seed=4))
    assert a == b
    assert a != c


def test_seed_does_not_touch_global_rng():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    losses(TrainConfig(steps=2))
    assert torch.equal(torch.rand(3), expected)


def test_snapshots_record_every_k_and_last():
    snaps = list(overfit(noise_image(), smooth_target(), TrainConfig(steps=25, record_every=10), TINY))
    assert [s.step for s in snaps] == list(range(1, 26))
    assert [s.step for s in snaps if s.recorded] == [1, 10, 20, 25]
    last = snaps[-1]
    assert last.done and last.stop_reason == "steps" and not any(s.done for s in snaps[:-1])
    assert last.features.shape == (8, 8, 32) and last.features.dtype == np.float32
    assert last.rgb.shape == (8, 8, 3) and 0 <= last.rgb.min() and last.rgb.max() <= 1
    assert all(s.elapsed_s >= 0 and s.lr == 1e-3 for s in snaps)
    assert last.loss == pytest.approx(last.feat_loss + last.rgb_loss, rel=1e-4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        last.step = 3  # frozen


def test_features_are_in_target_units():
    target = smooth_target() * 50.0
    last = list(overfit(noise_image(), target, TrainConfig(steps=150), TINY))[-1]
    rel = np.mean((last.features - target) ** 2) / np.mean(target**2)
    assert rel < 0.05 and rel == pytest.approx(last.feat_loss, rel=0.5, abs=1e-3)


def test_close_stops_at_once():
    threads = threading.active_count()
    run = OverfitRun(noise_image(), smooth_target(), TrainConfig(steps=1000), TINY)
    stream = iter(run)
    for _ in range(3):
        next(stream)
    stream.close()
    assert run.steps_done == 3
    with pytest.raises(StopIteration):
        next(stream)
    assert run.steps_done == 3
    assert threading.active_count() <= threads


def test_stops_at_target_loss_and_time_budget():
    snaps = list(overfit(noise_image(), smooth_target(), TrainConfig(steps=500, target_loss=0.05), TINY))
    assert snaps[-1].stop_reason == "target_loss" and snaps[-1].feat_loss <= 0.05 and snaps[-1].recorded
    assert len(snaps) < 500
    snaps = list(overfit(noise_image(), smooth_target(), TrainConfig(steps=100000, time_budget_s=0.3), TINY))
    assert snaps[-1].stop_reason == "time_budget" and snaps[-1].recorded
    assert 0.3 <= snaps[-1].elapsed_s < 5


def test_cosine_loss():
    curve = losses(TrainConfig(steps=120, loss="cosine"))
    assert curve[-1] < 0.1 * curve[0]


def test_global_only_target():
    rng = np.random.default_rng(0)
    target = Target(global_vector=rng.normal(size=24).astype(np.float32))
    cfg = ModelConfig(grid=(4, 4), patch_size=8, pos_dim=32, hidden=(64,), feature_dim=8, rgb_hidden=(16,))
    snaps = list(overfit(noise_image(), target, TrainConfig(steps=150, lr=3e-3), cfg))
    assert snaps[-1].global_vector.shape == (24,)
    assert snaps[-1].features.shape == (4, 4, 24)  # the grid's width follows the global target
    assert snaps[-1].feat_loss == snaps[-1].global_loss
    assert snaps[-1].global_loss < 0.01 * snaps[0].global_loss


def test_dense_and_global_together():
    rng = np.random.default_rng(1)
    target = Target(grid=smooth_target(), global_vector=rng.normal(size=16).astype(np.float32))
    snaps = list(overfit(noise_image(), target, TrainConfig(steps=60), TINY))
    last = snaps[-1]
    assert last.global_loss is not None and last.feat_loss != last.global_loss
    assert last.global_vector.shape == (16,) and last.features.shape == (8, 8, 32)


def make_pair():
    a = Image.new("RGB", (64, 64), (230, 40, 40))
    b = Image.new("RGB", (64, 64), (30, 60, 220))
    return [a, b], Target(grid=np.stack([smooth_target(seed=1), smooth_target(seed=2)]))


def test_batch_and_interpolation_endpoints():
    images, target = make_pair()
    run = OverfitRun(images, target, TrainConfig(steps=150, precision="fp32"), TINY)
    last = list(run)[-1]
    assert last.features.shape == (2, 8, 8, 32) and last.rgb.shape == (2, 8, 8, 3)
    own_f, own_rgb = run.decode_columns(run.trigger_columns())
    feats, rgb = run.interpolate([0.0, 0.25, 0.5, 0.75, 1.0])
    assert feats.shape == (5, 8, 8, 32) and rgb.shape == (5, 8, 8, 3)
    np.testing.assert_allclose(feats[0], own_f[0], atol=1e-5)
    np.testing.assert_allclose(feats[-1], own_f[1], atol=1e-5)
    np.testing.assert_allclose(rgb[-1], own_rgb[1], atol=1e-6)
    # the walk moves away from image a and towards image b
    to_a = [np.abs(frame - rgb[0]).mean() for frame in rgb]
    to_b = [np.abs(frame - rgb[-1]).mean() for frame in rgb]
    assert all(x <= y + 1e-6 for x, y in zip(to_a, to_a[1:]))
    assert all(x >= y - 1e-6 for x, y in zip(to_b, to_b[1:]))
    # each endpoint looks like its own image (red vs blue)
    assert rgb[0][..., 0].mean() > rgb[0][..., 2].mean() and rgb[-1][..., 2].mean() > rgb[-1][..., 0].mean()


@pytest.mark.parametrize(
    "target, message",
    [
        (np.full((8, 8, 4), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8), np.float32), r"\(h, w, d\) or \(d,\)"),
        (np.array([["a"]] * 3), r"\(h, w, d\) or \(d,\)"),
        (np.zeros((8, 8, 2), dtype=np.complex64), "real numeric"),
        (np.zeros((1, 1, 4), np.float32), "too small"),
    ],
)
def test_bad_targets(target, message):
    with pytest.raises((InputError, ValueError), match=message):
        OverfitRun(noise_image(), target, TrainConfig(steps=2), "cpu")


def test_image_too_small_for_grid():
    with pytest.raises(InputError, match="too small"):
        OverfitRun(noise_image(size=10), np.zeros((16, 16, 4), np.float32), TrainConfig(steps=2), "cpu")


def test_bad_train_config():
    with pytest.raises(InputError, match="steps"):
        OverfitRun(noise_image(), smooth_target(), TrainConfig(steps=0), TINY)
    with pytest.raises(InputError, match="learning rate"):
        OverfitRun(noise_image(), smooth_target(), TrainConfig(lr=float("nan")), TINY)


def test_training_keeps_freed_memory_for_reuse(monkeypatch):
    """The overfit loop asks glibc to keep freed tensors' memory (no page faults on each step's tensors), and
    the request is honoured where the C library is glibc."""
    import platform

    import apm.train as train_module
    from apm.threads import keep_freed_memory

    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(1) or True)
    run = OverfitRun(noise_image(), smooth_target(), TrainConfig(steps=2), TINY)
    assert not calls  # asked when training starts, not when the run is built
    assert [s.step for s in run] == [1, 2] and calls
    monkeypatch.undo()
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    """'auto' trains in bf16 on a CPU with native bf16 (AVX512-BF16, AMX) and never on one without (AVX2), where
    emulated bf16 would be far slower than fp32; 'fp32' is fp32 everywhere."""
    import torch

    from apm import device

    for native, expected in ((False, None), (True, torch.bfloat16)):
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda native=native: native)
        for precision, dtype in (("auto", expected), ("fp32", None)):
            run = OverfitRun(noise_image(), smooth_target(), TrainConfig(steps=2, precision=precision, device="cpu"),
                             TINY)
            assert run.amp_dtype is dtype, (native, precision)
            assert all(s.features is None or s.features.dtype == np.float32 for s in run)
