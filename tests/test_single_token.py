"""The paper's single-token experiment as the official code runs it: the model's shapes and parameter count, its
initialisation and training settings, and why one copy of the image per step trains what eight do."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from apm.model import APM, ModelConfig, official_positional_code, sincos_2d
from apm.single_token import (
    OFFICIAL_COPIES,
    UNUSED,
    as_official,
    faithful_config,
    faithful_train_config,
    official_shapes,
)


@pytest.mark.parametrize("token_dim", [768, 384])  # CLIP ViT-L/14's image embedding, DINOv2-S's CLS token
def test_the_faithful_model_has_the_official_shapes_and_parameter_count(token_dim):
    torch.manual_seed(0)
    apm = APM(faithful_config(token_dim))
    official = as_official(apm.state_dict())
    shapes = official_shapes(token_dim)
    assert set(official) == set(shapes) - set(UNUSED)
    for name, tensor in official.items():
        assert tuple(tensor.shape) == shapes[name], name
    ours = sum(p.numel() for p in apm.parameters())
    theirs = sum(math.prod(s) for s in shapes.values())
    assert ours == theirs - 2 * 1024  # all but the LayerNorm(1024) the official forward never calls
    if token_dim == 768:
        assert theirs == 22_822_224
    # the official code's layout, for the query (1024 channels) and the pooling (token_dim channels)
    assert torch.equal(apm.pos, official_positional_code(1024, 32, 32))
    assert torch.equal(apm.global_head.pos, official_positional_code(token_dim, 32, 32))
    assert apm.config.image_size == (448, 448) and apm.global_head.attn.num_heads == 8


def test_every_parameter_starts_from_n_0_001_and_the_training_is_the_officials():
    torch.manual_seed(0)
    values = torch.cat([p.detach().flatten() for p in APM(faithful_config(384)).parameters()])
    assert abs(float(values.mean())) < 1e-4 and float(values.std()) == pytest.approx(0.01, rel=0.01)
    config = faithful_train_config()
    assert (config.steps, config.lr, config.lr_decay_every, config.lr_decay) == (1200, 1e-4, 200, 0.1)
    assert config.rgb_weight == 0.0 and config.loss == "mse" and not config.normalize_target


def test_the_two_location_codes_are_one_permutation_apart():
    """The official interleaved code and this project's blocks carry the same frequencies: channel for channel."""
    ours, theirs = sincos_2d(32, 32, 768).double(), official_positional_code(768, 32, 32).double()
    distance = torch.cdist(theirs.T, ours.T, p=float("inf"))  # (768, 768)
    match = distance.argmin(dim=1)
    assert len(set(match.tolist())) == 768 and float(distance.min(dim=1).values.max()) < 1e-5


def test_eight_copies_of_the_image_give_the_gradient_of_one():
    """The official step repeats the image 8 times (no augmentation): the mean loss over identical copies has the
    gradient of one copy, so training one copy is the same training (fp32, a small model of the same kind)."""
    config = ModelConfig(grid=(4, 4), patch_size=4, pos_dim=16, hidden=(32, 24), feature_dim=16, rgb_hidden=(8,),
                         global_dim=16, global_heads=8, global_head="paper", init="normal", rgb_output="relu",
                         pos_code="official")
    torch.manual_seed(0)
    apm = APM(config)
    image = torch.rand(1, 3, 16, 16)
    token = torch.randn(1, 16)

    def gradients(copies: int) -> list[torch.Tensor]:
        apm.zero_grad()
        out = apm(image.expand(copies, -1, -1, -1))
        F.mse_loss(out.global_vector, token.expand(copies, -1)).backward()
        return [p.grad.clone() for p in apm.parameters() if p.grad is not None]  # the RGB head has none: no RGB term

    one, eight = gradients(1), gradients(OFFICIAL_COPIES)
    assert len(one) == len(eight) > 10 and any(float(g.abs().max()) > 0 for g in one)
    for a, b in zip(one, eight):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
