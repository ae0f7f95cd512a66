"""Interpolation: two images trained jointly, the walk between their trigger columns, its files and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apm.cli import main
from apm.errors import InputError
from apm.interpolate import project_path, train_pair, walk_frames
from apm.model import ModelConfig
from apm.train import TrainConfig

TINY = ModelConfig(grid=(6, 6), patch_size=8, pos_dim=32, hidden=(128, 128), feature_dim=12, rgb_hidden=(16,))


@pytest.fixture()
def pair(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for name, colour in (("a", (220, 40, 40)), ("b", (40, 60, 220))):
        arr = np.zeros((96, 96, 3), np.uint8) + np.array(colour, np.uint8)
        arr[30:60, 30:60] = 255 - arr[30:60, 30:60]  # a square "part" on each
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(6, 6, 12)).astype(np.float32))
        paths[name] = tmp_path / f"{name}.png"
        paths[name + "_target"] = tmp_path / f"{name}.npy"
    paths["dir"] = tmp_path
    return paths


def test_project_path_shares_colours_along_the_path():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(5, 5, 8)).astype(np.float32)
    features = np.stack([grid, grid + 0.01 * rng.normal(size=grid.shape), grid * 0 + grid[0, 0]])  # (3, 5, 5, 8)
    path = project_path(features)
    assert path.images.shape == (3, 5, 5, 3) and path.embedding.shape[:2] == (3, 25)
    assert np.abs(path.images[0] - path.images[1]).max() < 0.1  # nearly the same features, the same colours
    assert np.allclose(path.images[2], path.images[2][0, 0])  # one feature everywhere, one colour
    with pytest.raises(InputError, match=r"\(F, h, w, d\)"):
        project_path(grid)


def test_walk_frames_places_islands_beside_rgb():
    rgb = np.zeros((2, 4, 4, 3), np.float32)
    frames = walk_frames(rgb, rgb + 1.0, scale=2)
    assert len(frames) == 2 and frames[0].size == (2 * 9, 2 * 4)


def test_train_pair_checks_its_inputs(pair):
    images = [Image.open(pair["a"]), Image.open(pair["b"])]
    with pytest.raises(InputError, match="same shape"):
        train_pair(images, [np.zeros((6, 6, 12)), np.zeros((6, 6, 4))], TrainConfig(steps=1), TINY)
    with pytest.raises(InputError, match="dense"):
        train_pair(images, [np.zeros(12), np.zeros(12)], TrainConfig(steps=1), TINY)
    with pytest.raises(InputError, match="exactly two"):
        train_pair(images[:1], [np.zeros((6, 6, 12))], TrainConfig(steps=1), TINY)


def test_cli_interpolate_round_trip(pair):
    out = pair["dir"] / "walk"
    code = main(["interpolate", str(pair["a"]), str(pair["b"]), "--targets", str(pair["a_target"]), str(pair["b_target"]),
                 "--steps", "60", "--frames", "7", "--seed", "2", "--out", str(out)])
    assert code == 0
    data = np.load(out / "interpolation.npz")
    assert data["alpha"].shape == (7,) and data["alpha"][0] == 0 and data["alpha"][-1] == 1
    assert data["rgb"].shape == (7, 6, 6, 3) and 0 <= data["rgb"].min() and data["rgb"].max() <= 1
    assert data["features"].shape == (7, 6, 6, 12)
    gif = Image.open(out / "interpolation.gif")
    assert gif.n_frames >= 7
    # the walk starts red and ends blue, as the two images do
    assert data["rgb"][0][..., 0].mean() > data["rgb"][0][..., 2].mean()
    assert data["rgb"][-1][..., 2].mean() > data["rgb"][-1][..., 0].mean()
    assert (out / "run.npz").exists() and (out / "summary.json").exists()


def test_cli_interpolate_with_a_teacher(pair):
    out = pair["dir"] / "teacher-walk"
    code = main(["interpolate", str(pair["a"]), str(pair["b"]), "--teacher", "dinov2", "--random-weights", "--layer", "2",
                 "--steps", "3", "--frames", "3", "--out", str(out)])
    assert code == 0
    assert np.load(out / "interpolation.npz")["features"].shape == (3, 16, 16, 384)


@pytest.mark.parametrize("case", ["mismatch", "missing", "frames"])
def test_cli_interpolate_errors(pair, case, capsys):
    args = ["interpolate", str(pair["a"]), str(pair["b"]), "--targets", str(pair["a_target"]), str(pair["b_target"]),
            "--steps", "2", "--out", str(pair["dir"] / "bad")]
    if case == "mismatch":
        np.save(pair["dir"] / "c.npy", np.zeros((5, 5, 12), np.float32))
        args[5] = str(pair["dir"] / "c.npy")
    elif case == "missing":
        args[2] = str(pair["dir"] / "nope.png")
    else:
        args += ["--frames", "1"]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (pair["dir"] / "bad" / "interpolation.npz").exists()
