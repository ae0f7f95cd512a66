"""Dataset training: the feature cache, a bad image, checkpoints, resume, two processes (torchrun), islands."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apm.checkpoint import load_tensors
from apm.cli import main
from apm.data import CachedImages, CacheKey, FeatureCache, list_images, split
from apm.errors import InputError
from apm.fit import FitConfig, fit

ROOT = Path(__file__).resolve().parent.parent
TEACHER = "dinov2"  # untrained, block 0 only: cheap


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """16 small images in two subfolders, and one broken file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(16):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        base = rng.random(3) * 255
        pixels = np.clip(base + rng.normal(0, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((64, 64)).save(sub / f"{i:02d}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture()
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("APM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("APM_RANDOM_WEIGHTS", "1")
    return tmp_path


def config(**changes) -> FitConfig:
    values = dict(teacher=TEACHER, layer=0, random_weights=True, epochs=2, batch=4, workers=0, val_fraction=0.25,
                  log_every=1, precision="fp32", device="cpu")
    values.update(changes)
    return FitConfig(**values)


def test_cache_hits_invalidation_and_a_bad_image(folder, env):
    paths = list_images(folder)
    assert len(paths) == 17 and all(p.suffix == ".png" for p in paths)
    calls = []

    def encode(image):
        calls.append(1)
        return np.random.default_rng(len(calls)).normal(size=(4, 4, 8)).astype(np.float32)

    key = CacheKey("dinov2:x", 0, True, 224, (32, 32), (4, 4))
    cache = FeatureCache(key, env / "fc")
    report = cache.build(paths, encode, shard_rows=6)
    assert report.computed == 16 and report.hits == 0 and len(calls) == 16
    assert len(report.skipped) == 1 and report.skipped[0][0].name == "broken.png"
    assert len(list(cache.folder.glob("shard-*"))) == 3  # 6 + 6 + 4
    row = cache.row(report.hashes[3])
    assert row["features"].dtype == np.float16 and row["features"].shape == (4, 4, 8)
    assert row["images"].shape == (32, 32, 3) and row["images"].dtype == np.uint8 and row["rgb"].shape == (4, 4, 3)

    again = FeatureCache(key, env / "fc").build(paths, encode)  # a new process: memory maps, no teacher
    assert again.hits == 16 and again.computed == 0 and len(calls) == 16 and again.hashes == report.hashes

    changed = paths[0]
    original = changed.read_bytes()
    try:
        Image.new("RGB", (64, 64), (10, 200, 30)).save(changed)
        assert FeatureCache(key, env / "fc").build(paths, encode).computed == 1  # a changed file is a miss
    finally:
        changed.write_bytes(original)
    other = FeatureCache(CacheKey("dinov2:x", 1, True, 224, (32, 32), (4, 4)), env / "fc")
    assert other.folder != cache.folder and len(other) == 0  # another layer: another cache

    dataset = CachedImages(cache, report.hashes[:5])
    image, feats, rgb = dataset[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and feats.shape == (4, 4, 8)
    train, val = split(report.hashes, 0.25, seed=1)
    assert len(val) == 4 and len(train) == 12 and not set(train) & set(val)
    assert split(report.hashes, 0.25, seed=1) == (train, val)


def test_fit_writes_logs_and_a_checkpoint(folder, env):
    out = env / "run"
    result = fit(folder, out, config(), progress=False)
    assert result.images == 12 and result.val_images == 4 and result.skipped == 1
    assert result.cache_computed == 16 and result.steps == 6 and len(result.val_fidelity) == 2
    assert all(-1 <= v <= 1 for v in result.val_fidelity)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert set(rows[0]) == {"step", "epoch", "feat_loss", "rgb_loss", "lr", "images_per_s", "val_fidelity"}
    assert [r["step"] for r in rows if r["val_fidelity"]] == ["3", "6"]
    assert float(rows[-1]["images_per_s"]) > 0
    from apm.model import APM

    apm = APM.from_pretrained(out / "checkpoint")
    assert apm.config.grid == (16, 16) and apm.config.feature_dim == 384
    assert apm.meta["teacher"].startswith("dinov2:") and apm.meta["layer"] == 0 and apm.meta["epoch"] == 2
    second = fit(folder, env / "run2", config(epochs=1), progress=False)
    assert second.cache_hits == 16 and second.cache_computed == 0  # the teacher never runs twice


def test_resume_equals_an_uninterrupted_run(folder, env):
    fit(folder, env / "whole", config(epochs=3), progress=False)
    fit(folder, env / "parts", config(epochs=1), progress=False)
    trainer = json.loads((env / "parts" / "checkpoint" / "trainer.json").read_text())
    assert trainer["epoch"] == 1 and trainer["step"] == 3
    fit(folder, env / "parts", config(epochs=3), resume=True, progress=False)
    a = load_tensors(env / "whole" / "checkpoint" / "model.safetensors")
    b = load_tensors(env / "parts" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    with pytest.raises(InputError, match="nothing to resume"):
        fit(folder, env / "fresh", config(), resume=True, progress=False)
    with pytest.raises(InputError, match="another teacher, layer or seed"):
        fit(folder, env / "parts", config(epochs=4, seed=5), resume=True, progress=False)


def test_bad_input(env, tmp_path):
    with pytest.raises(InputError, match="image folder not found"):
        fit(tmp_path / "nope", env / "o", config(), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        fit(tmp_path / "empty", env / "o", config(), progress=False)


def test_two_processes_equal_one(folder, env):
    """torchrun with 2 CPU processes (gloo) at batch 2 + 2 takes the same steps as one process at batch 4."""
    common = ["fit", str(folder), "--teacher", TEACHER, "--layer", "0", "--random-weights", "--epochs", "1",
              "--batch", "4", "--workers", "0", "--val-fraction", "0.25", "--device", "cpu"]
    run_env = {**os.environ, "APM_CACHE_DIR": str(env / "cache"), "APM_RANDOM_WEIGHTS": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "apm", *common, "--out", str(env / "one")],
                            capture_output=True, text=True, cwd=ROOT, env=run_env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "apm", *common, "--out", str(env / "two")],
        capture_output=True, text=True, cwd=ROOT, env=run_env, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("done:") == 1  # rank 0 alone reports
    a = load_tensors(env / "one" / "checkpoint" / "model.safetensors")
    b = load_tensors(env / "two" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    # The same steps, not the same last bits: the all-reduce sums the gradient in another order, and Adam's
    # normalised step turns a rounding difference in a near-zero gradient into a different step for that weight
    # (14 of 1M weights by 3.7e-5 on an AVX512-BF16 CPU). So each tensor's two *updates* (from the shared
    # initialisation) must agree to 1% of their size, and the losses logged along the way must match.
    from apm.model import APM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the fit's seed: both runs started here
        init = APM(APM.from_pretrained(env / "one" / "checkpoint").config).state_dict()
    for k in a:
        update = (a[k] - init[k]).float()
        if update.abs().max() == 0:  # never trained by these steps (the global head, say)
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
            continue
        assert float((a[k] - b[k]).float().norm()) <= 0.01 * float(update.norm()), k
    logs = [list(csv.DictReader((env / run / "log.csv").open())) for run in ("one", "two")]
    assert logs[1] and logs[1][-1]["step"] == "3" and [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    for one, two in zip(*logs):
        assert float(two["feat_loss"]) == pytest.approx(float(one["feat_loss"]), rel=1e-3)


def test_islands_from_a_checkpoint(folder, env, capsys):
    fit(folder, env / "run", config(epochs=1), progress=False)
    image = sorted(folder.rglob("*.png"))[0]
    out = env / "isl"
    assert main(["islands", str(image), "--checkpoint", str(env / "run"), "--projection", "pca", "--out", str(out)]) == 0
    data = np.load(out / "islands.npz")
    assert list(data["grid_shape"]) == [16, 16] and data["embedding"].shape == (256, 3)
    features = np.load(out / "features.npy")
    assert features.shape == (16, 16, 384) and np.isfinite(features).all()
    assert np.asarray(Image.open(out / "rgb.png")).shape == (448, 448, 3)
    assert "one forward pass" in capsys.readouterr().out

    bad = env / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"format": "apm", "model": {"grid": [8, 8]}}))
    for checkpoint, message in ((env / "missing", "not found"), (folder, "not an APM checkpoint"),
                                (bad, "no model.safetensors")):
        assert main(["islands", str(image), "--checkpoint", str(checkpoint), "--out", str(env / "e")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (env / "e").exists()


def test_test_time_training_starts_from_the_checkpoint(folder, env):
    """OverfitRun(init=trained APM) continues from its weights: on the grid the checkpoint itself decodes, its
    first loss is about zero, where a fresh APM's is of order one."""
    from apm.fit import predict
    from apm.model import APM
    from apm.train import OverfitRun, Target, TrainConfig

    fit(folder, env / "run", config(epochs=1), progress=False)
    apm = APM.from_pretrained(env / "run" / "checkpoint")
    image = Image.open(sorted(folder.rglob("*.png"))[1]).convert("RGB")
    grid, _ = predict(apm, image)  # (16, 16, 384) in the teacher's units
    steps = TrainConfig(steps=3, precision="fp32", lr=1e-4)
    warm = list(OverfitRun(image, Target(grid=grid), steps, init=apm, target_scale=apm.meta["feature_scale"]))
    fresh = list(OverfitRun(image, Target(grid=grid), steps, apm.config))
    assert warm[0].feat_loss < 1e-8 and fresh[0].feat_loss > 1e-3
    with pytest.raises(InputError, match="decodes"):
        OverfitRun(image, Target(grid=grid[:8, :8]), steps, init=apm)


def test_checkpoint_sources(env, tmp_path, monkeypatch):
    from apm.checkpoint import list_checkpoints, resolve_checkpoint
    from apm.model import APM, model_config_for

    root = tmp_path / "checkpoints"
    APM(model_config_for("cpu", grid=(4, 4), feature_dim=8)).save_pretrained(root / "tiny")
    (root / "notes").mkdir()
    monkeypatch.setenv("APM_CHECKPOINTS_DIR", str(root))
    assert [p.name for p in list_checkpoints()] == ["tiny"]
    assert resolve_checkpoint("tiny") == root / "tiny" and resolve_checkpoint(str(root / "tiny")) == root / "tiny"
    with pytest.raises(InputError, match="not found"):
        resolve_checkpoint("nothing-here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InputError, match="not in the local Hub cache"):
        resolve_checkpoint("hf:someone/apm-checkpoint")


def test_cli_overfit_from_a_checkpoint(folder, env, capsys):
    fit(folder, env / "run", config(epochs=1), progress=False)
    image = sorted(folder.rglob("*.png"))[0]
    out = env / "ttt"
    assert main(["overfit", str(image), "--recipe", "trained-apm", "--checkpoint", str(env / "run" / "checkpoint"),
                 "--steps", "3", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"]["checkpoint"].endswith("checkpoint") and summary["config"]["train"]["lr"] == 1e-4
    assert summary["target"]["layer"] == 0 and summary["target"]["random_weights"] is True  # the checkpoint's
    assert main(["overfit", str(image), "--recipe", "trained-apm", "--out", str(out)]) == 1
    assert "--checkpoint" in capsys.readouterr().err


def test_loader_workers_change_nothing_but_speed(folder, env):
    """Two DataLoader worker processes read the same cache rows in the same order: the same weights."""
    from apm.fit import loader_workers

    fit(folder, env / "w0", config(epochs=1, workers=0), progress=False)
    fit(folder, env / "w2", config(epochs=1, workers=2), progress=False)
    a = load_tensors(env / "w0" / "checkpoint" / "model.safetensors")
    b = load_tensors(env / "w2" / "checkpoint" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert loader_workers(3) == 3 and loader_workers(None, world=64) == 0
