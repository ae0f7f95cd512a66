"""`convert-official`: the official APM's checkpoint, converted, computes what the official forward pass does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from apm.cli import main
from apm.errors import InputError
from apm.model import APM

# the official model, from its published definition: names and shapes
SHAPES = {
    "conv1": (1, 3, 14, 14), "fc1": (4096, 2048), "fc2": (4096, 4096), "fc3": (4096, 4096), "fc4": (2048, 4096),
    "fc5": (1024, 2048), "feat_proj_head": (1024, 1024), "rgb_head_1": (256, 3072), "rgb_head_2": (256, 256),
    "rgb_head_3": (3, 256),
}


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in SHAPES.items():
        fan_in = math.prod(shape[1:])
        bound = 1 / math.sqrt(fan_in)
        state[f"{name}.weight"] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        state[f"{name}.bias"] = (torch.rand(shape[0], generator=gen) * 2 - 1) * bound
    return state


def official_code(d: int = 1024, h: int = 32, w: int = 32) -> torch.Tensor:
    """(d, h, w): width half first, sin on even and cos on odd channels, then the height half."""
    half = d // 2
    div = torch.exp(torch.arange(0.0, half, 2) * -(math.log(10000.0) / half))
    pe = torch.zeros(d, h, w)
    pw, ph = torch.arange(0.0, w)[:, None], torch.arange(0.0, h)[:, None]
    pe[0:half:2] = torch.sin(pw * div).T[:, None, :].repeat(1, h, 1)
    pe[1:half:2] = torch.cos(pw * div).T[:, None, :].repeat(1, h, 1)
    pe[half::2] = torch.sin(ph * div).T[:, :, None].repeat(1, 1, w)
    pe[half + 1::2] = torch.cos(ph * div).T[:, :, None].repeat(1, 1, w)
    return pe


@torch.no_grad()
def official_predict(state: dict, bgr_scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official predict_image on one (1, 3, 448, 448) BGR min-max-scaled image: (1024, 1024), (1024, 3)."""
    col = F.conv2d(bgr_scaled, state["conv1.weight"], state["conv1.bias"], stride=14)  # (1, 1, 32, 32)
    col = col.flatten(2).squeeze(1)  # (1, 1024): row-major over (h, w)
    pe = official_code().reshape(1024, -1).T  # (1024 locations, 1024 channels)
    x_pos = torch.cat([col.expand(1024, -1), pe], dim=1)  # (1024, 2048)
    x = x_pos
    for name in ("fc1", "fc2", "fc3", "fc4", "fc5"):
        x = F.relu(F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"]))
    feat = F.linear(x, state["feat_proj_head.weight"], state["feat_proj_head.bias"])
    rgb = F.relu(F.linear(torch.cat([feat, x_pos], 1), state["rgb_head_1.weight"], state["rgb_head_1.bias"]))
    rgb = F.relu(F.linear(rgb, state["rgb_head_2.weight"], state["rgb_head_2.bias"]))
    rgb = F.relu(F.linear(rgb, state["rgb_head_3.weight"], state["rgb_head_3.bias"]))
    return feat, rgb


def test_converted_checkpoint_matches_the_official_forward(tmp_path, capsys):
    state = official_state()
    torch.save(state, tmp_path / "model_15.pth")
    out = tmp_path / "converted"
    assert main(["convert-official", str(tmp_path / "model_15.pth"), str(out)]) == 0
    assert "official APM" in capsys.readouterr().out
    apm = APM.from_pretrained(out)
    assert apm.config.input_scaling == "minmax" and apm.config.rgb_output == "relu"

    rgb_image = torch.rand(1, 3, 448, 448, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1  # RGB in [0, 1]
    bgr = rgb_image[:, [2, 1, 0]]
    bgr_scaled = (bgr - bgr.min()) / (bgr.max() - bgr.min())  # the official script's input
    feat, rgb = official_predict(state, bgr_scaled)
    with torch.no_grad():
        ours = apm(rgb_image)
    np.testing.assert_allclose(ours.features.reshape(1024, 1024).numpy(), feat.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours.rgb.reshape(1024, 3).numpy(), rgb.numpy(), atol=1e-5, rtol=0)
    assert float(rgb.abs().max()) > 0 and float(feat.std()) > 1e-3  # not a trivially zero comparison


def test_bad_official_files(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    partial = {k: v for k, v in official_state().items() if not k.startswith("fc3")}
    torch.save(partial, tmp_path / "partial.pth")

    class Payload:  # anything but tensors must never be unpickled
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"conv1.weight": Payload()}, tmp_path / "pickle.pth")
    for name, message in (("missing.pth", "not found"), ("junk.pth", "cannot read"),
                          ("partial.pth", "no fc3.weight"), ("pickle.pth", "cannot read")):
        assert main(["convert-official", str(tmp_path / name), str(tmp_path / "o")]) == 1
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert "unpickled!" not in captured.out
    with pytest.raises(InputError):
        from apm.official import convert_state

        convert_state({"conv1.weight": torch.zeros(1, 3, 7, 7)})


def test_islands_of_the_converted_checkpoint(tmp_path, capsys):
    from PIL import Image

    torch.save(official_state(2), tmp_path / "model_15.pth")
    assert main(["convert-official", str(tmp_path / "model_15.pth"), str(tmp_path / "ck")]) == 0
    Image.fromarray((np.random.default_rng(0).random((500, 500, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert main(["islands", str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "ck"), "--projection", "pca",
                 "--out", str(tmp_path / "isl")]) == 0
    assert np.load(tmp_path / "isl" / "features.npy").shape == (32, 32, 1024)
    assert list(np.load(tmp_path / "isl" / "islands.npz")["grid_shape"]) == [32, 32]


def test_the_official_model_as_timed_computes_the_official_forward():
    """`OfficialModel` (the bench's yardstick) is the published computation: chunked, with its own names."""
    from apm.official import OfficialModel

    state = official_state(3)
    model = OfficialModel(chunk=300)  # a chunk that does not divide 1024: the last one is short
    model.load_state_dict(state, strict=True)
    bgr_scaled = torch.rand(1, 3, 448, 448, generator=torch.Generator().manual_seed(4))
    feat, rgb = official_predict(state, bgr_scaled)
    with torch.no_grad():
        ours_feat, ours_rgb = model(bgr_scaled)
    assert ours_feat.shape == (1, 1024, 1024) and ours_rgb.shape == (1, 1024, 3)
    np.testing.assert_allclose(ours_feat[0].numpy(), feat.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_rgb[0].numpy(), rgb.numpy(), atol=1e-5, rtol=0)
