"""Trained APMs on disk: safetensors + JSON round trips, and one clear error for anything wrong."""

from __future__ import annotations

import json

import pytest
import torch

from apm.checkpoint import read_config
from apm.errors import InputError
from apm.model import APM, model_config_for


@pytest.fixture()
def model() -> APM:
    torch.manual_seed(0)
    return APM(model_config_for("cpu", grid=(6, 6), feature_dim=16, global_dim=16))


def test_round_trip_equals_the_model(model, tmp_path):
    model.save_pretrained(tmp_path / "ck", meta={"teacher": "dinov2:vit_small_patch14_dinov2.lvd142m", "layer": 3})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    loaded = APM.from_pretrained(tmp_path / "ck")
    assert loaded.config == model.config and loaded.meta["layer"] == 3 and not loaded.training
    images = torch.rand(2, 3, 48, 48)
    a, b = model.eval()(images), loaded(images)
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)
    torch.testing.assert_close(a.rgb, b.rgb, rtol=0, atol=0)
    torch.testing.assert_close(a.global_vector, b.global_vector, rtol=0, atol=0)
    assert b"pickle" not in (tmp_path / "ck" / "model.safetensors").read_bytes()[:200]


def test_errors_are_clear(model, tmp_path):
    with pytest.raises(InputError, match="checkpoint folder not found"):
        APM.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        APM.from_pretrained(tmp_path / "empty")
    folder = model.save_pretrained(tmp_path / "ck")
    config = json.loads((folder / "config.json").read_text())

    config["model"]["feature_dim"] = 32  # the weights no longer fit the config
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="do not match its config.json: shape of"):
        APM.from_pretrained(folder)

    config["model"]["feature_dim"] = 16
    config["model"]["wings"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="unknown model fields"):
        read_config(folder)

    del config["model"]["wings"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="not a readable safetensors file"):
        APM.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        APM.from_pretrained(folder)
