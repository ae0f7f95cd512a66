"""`python -m apm`: the overfit round trip, its files and keys, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apm.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    image = tmp_path / "image.png"
    Image.fromarray((rng.random((96, 96, 3)) * 255).astype(np.uint8)).save(image)
    dense = tmp_path / "dense.npy"
    np.save(dense, rng.normal(size=(6, 6, 16)).astype(np.float32))
    glob = tmp_path / "global.npy"
    np.save(glob, rng.normal(size=(10,)).astype(np.float32))
    return {"image": image, "dense": dense, "global": glob, "dir": tmp_path}


def test_overfit_round_trip(files, capsys):
    out = files["dir"] / "run"
    code = main(["overfit", str(files["image"]), "--target", str(files["dense"]), "--steps", "12",
                 "--record-every", "5", "--seed", "1", "--lr", "2e-3", "--out", str(out)])
    assert code == 0
    run = np.load(out / "run.npz")
    assert list(run["step"]) == [1, 5, 10, 12]
    assert run["feat_loss"].shape == run["rgb_loss"].shape == (4,)
    assert run["features"].shape == (4, 6, 6, 16) and run["features"].dtype == np.float32
    assert run["rgb"].shape == (4, 6, 6, 3)
    assert run["curve_feat_loss"].shape == (12,)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_per_second"] > 0 and summary["steps_done"] == 12
    assert summary["final_feat_loss"] == pytest.approx(float(run["feat_loss"][-1]), rel=1e-5)
    assert summary["config"]["train"]["lr"] == 2e-3 and summary["config"]["train"]["seed"] == 1
    assert summary["config"]["model"]["grid"] == [6, 6]
    printed = capsys.readouterr()
    assert "overfit" in printed.err  # the progress bar is on stderr
    # what the islands rest on: against the dense target array, and said on stdout
    assert set(summary["content"]) == {"cka_teacher", "cka_position", "ari_teacher", "spread"}
    assert 0 <= summary["content"]["cka_teacher"] <= 1 and summary["content"]["spread"] > 0
    assert "content: CKA to teacher" in printed.out


def test_overfit_global_target(files):
    out = files["dir"] / "g"
    assert main(["overfit", str(files["image"]), "--target", str(files["global"]), "--steps", "3", "--out", str(out)]) == 0
    run = np.load(out / "run.npz")
    assert run["global_vector"].shape == (2, 10)
    assert run["features"].shape[1:] == (16, 16, 10)  # the preset's grid, width of the global target


def bad_case(files, kind: str) -> list[str]:
    d = files["dir"]
    if kind == "missing image":
        return ["overfit", str(d / "nope.png"), "--target", str(files["dense"])]
    if kind == "missing target":
        return ["overfit", str(files["image"]), "--target", str(d / "nope.npy")]
    if kind == "broken image":
        (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
        return ["overfit", str(d / "broken.png"), "--target", str(files["dense"])]
    if kind == "wrong shape":
        np.save(d / "flat.npy", np.zeros((6, 16), np.float32))
        return ["overfit", str(files["image"]), "--target", str(d / "flat.npy")]
    if kind == "wrong dtype":
        np.save(d / "text.npy", np.array([["a", "b"]] * 3))
        return ["overfit", str(files["image"]), "--target", str(d / "text.npy")]
    if kind == "nan":
        a = np.zeros((6, 6, 4), np.float32)
        a[1, 2, 3] = np.nan
        np.save(d / "nan.npy", a)
        return ["overfit", str(files["image"]), "--target", str(d / "nan.npy")]
    if kind == "grid too small":
        np.save(d / "one.npy", np.zeros((1, 1, 4), np.float32))
        return ["overfit", str(files["image"]), "--target", str(d / "one.npy")]
    if kind == "image too small for grid":
        Image.new("RGB", (20, 20)).save(d / "small.png")
        np.save(d / "big.npy", np.zeros((32, 32, 4), np.float32))
        return ["overfit", str(d / "small.png"), "--target", str(d / "big.npy")]
    if kind == "bad steps":
        return ["overfit", str(files["image"]), "--target", str(files["dense"]), "--steps", "0"]
    raise AssertionError(kind)


KINDS = ["missing image", "missing target", "broken image", "wrong shape", "wrong dtype", "nan",
         "grid too small", "image too small for grid", "bad steps"]


@pytest.mark.parametrize("kind", KINDS)
def test_error_paths_are_one_line(files, kind, capsys):
    code = main(bad_case(files, kind) + ["--out", str(files["dir"] / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0] and "unexpected" not in err[0]
    assert not (files["dir"] / "o" / "run.npz").exists()


def test_usage_errors_are_one_line(files):
    for argv in (["overfit", str(files["image"]), "--recipe", "nope"],
                 ["overfit", str(files["image"]), "--target", "x", "--steps", "many"]):
        proc = subprocess.run([sys.executable, "-m", "apm", *argv], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_subprocess_exit_code_and_no_traceback(files):
    proc = subprocess.run(
        [sys.executable, "-m", "apm", "overfit", str(files["dir"] / "missing.png"), "--target", str(files["dense"])],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: image file not found: {files['dir'] / 'missing.png'}"


def test_teacher_dump(files, capsys):
    out = files["dir"] / "grid.npy"
    assert main(["teacher", str(files["image"]), "--teacher", "dinov2", "--layer", "3", "--random-weights", "--out", str(out)]) == 0
    grid = np.load(out, allow_pickle=False)
    assert grid.shape == (16, 16, 384) and grid.dtype == np.float32 and np.isfinite(grid).all()
    assert "layer 3" in capsys.readouterr().out


def test_overfit_with_a_teacher(files):
    out = files["dir"] / "t"
    code = main(["overfit", str(files["image"]), "--teacher", "dinov2", "--layer", "5", "--random-weights",
                 "--target-kind", "both", "--steps", "3", "--out", str(out)])
    assert code == 0
    run = np.load(out / "run.npz")
    assert run["features"].shape[1:] == (16, 16, 384) and run["global_vector"].shape[1:] == (384,)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["name"] == "dinov2" and summary["target"]["layer"] == 5
    assert summary["target"]["random_weights"] is True and "untrained" in summary["target"]["label"]


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "dinov2", "--layer", "40", "--random-weights"], "layers 0-11"),
    (["--teacher", "resnet", "--random-weights"], "dinov2, clip, mvit"),
])
def test_teacher_errors_are_one_line(files, argv, message, capsys):
    assert main(["teacher", str(files["image"]), *argv, "--out", str(files["dir"] / "g.npy")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_missing_weights_offline_is_one_clear_line(files, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "APM_RANDOM_WEIGHTS": "0"}
    for argv in (["download", "dinov2"], ["overfit", str(files["image"]), "--teacher", "dinov2", "--steps", "2",
                                          "--out", str(tmp_path / "o")]):
        proc = subprocess.run([sys.executable, "-m", "apm", *argv], capture_output=True, text=True, cwd=ROOT, env=env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr
        assert "vit_small_patch14_dinov2" in lines[0] and "python -m apm download dinov2" in lines[0]
        assert str(tmp_path / "hf") in lines[0]


# recipes, the advanced flags, the islands command


def test_cls_ttt_recipe_drops_the_loss_by_1e8(files):
    """The paper's Fig. 3 setting: CLIP's image embedding alone, RGB weight 0, lr 1e-4, 250 steps, fp32."""
    out = files["dir"] / "cls"
    code = main(["overfit", str(files["image"]), "--teacher", "clip", "--random-weights", "--recipe", "cls-ttt",
                 "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    train, model = summary["config"]["train"], summary["config"]["model"]
    assert train["rgb_weight"] == 0.0 and train["lr"] == 1e-4 and train["steps"] == 250
    assert train["lr_decay_every"] == 200 and train["lr_decay"] == 0.1 and summary["autocast"] == "fp32"
    assert summary["target"]["kind"] == "global" and model["global_head"] == "paper"
    assert summary["recipe"]["recipe"] == "cls-ttt" and summary["recipe"]["projection"] == "paper"
    assert summary["steps_done"] == 250
    assert summary["first_feat_loss"] / summary["final_feat_loss"] >= 1e8
    run = np.load(out / "run.npz")
    assert "global_vector" in run and np.isnan(run["curve_global_loss"]).sum() == 0
    islands = np.load(out / "islands.npz")
    colours = islands["colours"]  # the paper view: a min-max of a 3D embedding, straight to RGB
    assert islands["embedding"].shape == (colours.shape[0] * colours.shape[1], 3)
    np.testing.assert_allclose(colours.reshape(-1, 3).min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(colours.reshape(-1, 3).max(0), 1.0, atol=1e-6)


def test_advanced_flags_reach_the_run_and_the_summary(files):
    out = files["dir"] / "adv"
    code = main(["overfit", str(files["image"]), "--target", str(files["dense"]), "--steps", "4", "--rgb-weight", "0.25",
                 "--normalize-target", "off", "--loss", "cosine", "--lr-schedule", "step", "--init", "normal",
                 "--projection", "tsne3d", "--perplexity", "7", "--metric", "euclidean", "--tsne-init", "random",
                 "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    train, model, exp = summary["config"]["train"], summary["config"]["model"], summary["recipe"]
    assert train["rgb_weight"] == 0.25 and train["normalize_target"] is False and train["loss"] == "cosine"
    assert train["lr_decay_every"] == 200 and model["init"] == "normal"
    assert exp["projection"] == "tsne3d" and exp["perplexity"] == 7 and exp["metric"] == "euclidean"
    assert exp["tsne_init"] == "random" and exp["teacher"] == "file"
    assert np.load(out / "islands.npz")["embedding"].shape == (36, 3)
    env = summary["environment"]["packages"]
    assert env["torch"] and env["numpy"] and summary["seed"] == 0


def test_same_recipe_and_seed_give_the_same_losses(files):
    losses = []
    for name in ("a", "b"):
        out = files["dir"] / name
        assert main(["overfit", str(files["image"]), "--teacher", "dinov2", "--random-weights", "--recipe",
                     "dense-distill", "--steps", "6", "--seed", "3", "--precision", "fp32", "--out", str(out)]) == 0
        losses.append(np.load(out / "run.npz")["curve_feat_loss"])
    np.testing.assert_array_equal(losses[0], losses[1])


def test_teacher_islands_command_files(files, capsys):
    out = files["dir"] / "isl"
    code = main(["islands", str(files["image"]), "--teacher", "dinov2", "--layer", "2", "--random-weights",
                 "--projection", "tsne2d", "--perplexity", "5", "--out", str(out)])
    assert code == 0
    data = np.load(out / "islands.npz")
    assert list(data["grid_shape"]) == [16, 16] and data["embedding"].shape == (256, 2)
    assert data["colours"].shape == (16, 16, 3) and 0 <= data["colours"].min() and data["colours"].max() <= 1
    picture = np.asarray(Image.open(out / "islands.png"))
    assert picture.shape == (448, 448, 3)  # nearest-neighbour enlargement: 28 x 28 pixels per location
    np.testing.assert_array_equal(picture[::28, ::28], (data["colours"] * 255 + 0.5).astype(np.uint8))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"]["layer"] == 2 and summary["projection"]["perplexity"] == 5
    assert "16 x 16 islands" in capsys.readouterr().out


def test_islands_paper_view_is_the_default(files):
    out = files["dir"] / "paper"
    assert main(["islands", str(files["image"]), "--teacher", "clip", "--layer", "0", "--random-weights",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["projection"]["perplexity"] == 3 and summary["projection"]["init"] == "random"
    assert summary["projection"]["dim"] == 3 and summary["projection"]["colouring"] == "minmax"


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "mvit", "--layer", "99"], "layer 99"),
    (["--teacher", "dinov3"], "unknown teacher"),
    (["--teacher", "dinov2", "--perplexity", "500"], "perplexity must be between 2 and 100"),
    (["--checkpoint", "{dir}/no-such-run"], "checkpoint"),
    (["--teacher", "dinov2", "--chunk", "8"], "use them with --checkpoint"),
])
def test_islands_errors_are_one_line(files, argv, message, capsys):
    argv = [a.format(dir=files["dir"]) for a in argv]
    code = main(["islands", str(files["image"]), *argv, "--random-weights", "--out", str(files["dir"] / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (files["dir"] / "e" / "islands.png").exists()


@pytest.mark.parametrize("grid", [24, 32])
def test_the_grid_reaches_the_teacher_and_the_apm(files, grid):
    """--grid N: the teacher's input is N x 14 px (DINOv2), its grid and the APM's are N x N; islands too."""
    out = files["dir"] / f"g{grid}"
    assert main(["overfit", str(files["image"]), "--teacher", "dinov2", "--layer", "0", "--random-weights",
                 "--grid", str(grid), "--steps", "3", "--projection", "pca", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["image_size"] == 14 * grid and summary["target"]["grid_shape"] == [grid, grid]
    assert summary["recipe"]["grid"] == grid
    assert np.load(out / "run.npz")["features"].shape[1:3] == (grid, grid)
    assert main(["islands", str(files["image"]), "--teacher", "dinov2", "--layer", "0", "--random-weights",
                 "--grid", str(grid), "--projection", "pca", "--out", str(out / "teacher")]) == 0
    assert list(np.load(out / "teacher" / "islands.npz")["grid_shape"]) == [grid, grid]


@pytest.mark.parametrize("argv, message", [
    (["overfit", "{image}", "--teacher", "mvit", "--random-weights", "--grid", "16"], "MViTv2-S takes 224 px"),
    (["overfit", "{image}", "--target", "{dense}", "--grid", "16"], "the target array is a 6 x 6 grid"),
    (["islands", "{image}", "--teacher", "dinov2", "--grid", "20", "--random-weights"], "invalid choice"),
])
def test_a_grid_that_cannot_be_made_is_one_line(files, argv, message, capsys):
    argv = [a.format(image=files["image"], dense=files["dense"]) for a in argv]
    try:
        code = main([*argv, "--out", str(files["dir"] / "e")])
    except SystemExit as exit_:  # argparse's own check of the choices
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) >= 1 and message in err[-1], err


def test_islands_from_a_checkpoint_in_random_order_and_chunks(files, capsys):
    """--chunk K --order random decodes that way and writes the same files, with the same grid, as one pass."""
    import torch

    from apm.model import APM, ModelConfig

    torch.manual_seed(0)
    apm = APM(ModelConfig(grid=(8, 8), patch_size=8, pos_dim=32, hidden=(64, 48), feature_dim=24, rgb_hidden=(16,)))
    apm.meta = {"feature_scale": 2.0}
    folder = apm.save_pretrained(files["dir"] / "ckpt")
    args = ["islands", str(files["image"]), "--checkpoint", str(folder), "--projection", "pca"]
    assert main([*args, "--out", str(files["dir"] / "once")]) == 0
    assert "one forward pass" in capsys.readouterr().out
    assert main([*args, "--chunk", "7", "--order", "random", "--out", str(files["dir"] / "async")]) == 0
    printed = capsys.readouterr().out
    assert "random order, chunks of 7" in printed and "decoded 64 locations in 10 chunks" in printed
    once, shuffled = (np.load(files["dir"] / name / "features.npy") for name in ("once", "async"))
    assert shuffled.shape == once.shape == (8, 8, 24) and np.abs(shuffled - once).max() <= 2e-5
    for name in ("islands.png", "islands.npz", "rgb.png", "summary.json"):
        assert (files["dir"] / "async" / name).is_file()
    decoding = json.loads((files["dir"] / "async" / "summary.json").read_text())["decoding"]
    assert decoding["order"] == "random" and decoding["chunk"] == 7 and decoding["chunks"] == 10
    assert decoding["locations"] == 64 and decoding["max_diff"] <= 1e-5
    assert json.loads((files["dir"] / "once" / "summary.json").read_text())["decoding"] is None


def test_recipe_errors(files, capsys):
    assert main(["overfit", str(files["image"]), "--recipe", "teacher-islands", "--out", str(files["dir"] / "x")]) == 1
    assert "apm islands" in capsys.readouterr().err
    assert main(["overfit", str(files["image"]), "--out", str(files["dir"] / "x")]) == 1
    assert "--teacher" in capsys.readouterr().err


def test_cli_choices_are_read_from_the_registries():
    """--recipe, --projection, --grid and --lr-schedule offer what the registries hold (no copies to keep in step)."""
    from apm.cli import build_parser
    from apm.islands import PROJECTIONS
    from apm.model import GRID_CHOICES
    from apm.recipes import LR_SCHEDULES, RECIPES

    overfit = build_parser()._subparsers._group_actions[0].choices["overfit"]
    choices = {a.dest: a.choices for a in overfit._actions if a.choices is not None}
    assert set(choices["recipe"]) == set(RECIPES) and set(choices["projection"]) == set(PROJECTIONS)
    assert set(choices["lr_schedule"]) == set(LR_SCHEDULES) and tuple(choices["grid"]) == tuple(GRID_CHOICES)
