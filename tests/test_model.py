"""The APM itself: shapes, positional encoding, the trigger column, asynchronous querying, introspection."""

from __future__ import annotations

import pytest
import torch

from apm.model import APM, MODEL_PRESETS, ModelConfig, grid_locations, model_config_for, sincos_2d


def small_config(**kw) -> ModelConfig:
    base = dict(grid=(6, 5), patch_size=4, pos_dim=32, hidden=(64, 48), feature_dim=24, rgb_hidden=(16,))
    return ModelConfig(**{**base, **kw})


def make_model(cfg: ModelConfig, seed: int = 0) -> APM:
    torch.manual_seed(seed)
    return APM(cfg).eval()


def test_sincos_distinct_and_bounded():
    pos = sincos_2d(12, 9, 64)
    assert pos.shape == (12 * 9, 64)
    assert pos.abs().max() <= 1.0 + 1e-6
    dists = torch.cdist(pos, pos) + torch.eye(len(pos)) * 1e9
    assert dists.min() > 1e-3  # every location has its own code


@pytest.mark.parametrize("dim", [4, 30, 33])
def test_sincos_any_dim(dim):
    assert sincos_2d(4, 4, dim).shape == (16, dim)


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_preset_shapes(preset):
    cfg = model_config_for(preset, feature_dim=40, global_dim=12)
    if preset == "paper":
        assert cfg.image_size == (448, 448) and cfg.grid == (32, 32)
        assert (cfg.column_dim, cfg.pos_dim, cfg.query_dim) == (1024, 1024, 2048)
        assert cfg.hidden == (4096, 4096, 4096, 2048, 1024) and cfg.rgb_hidden == (256, 256)
    model = make_model(cfg)
    images = torch.rand(2, 3, *cfg.image_size)
    with torch.no_grad():
        out = model(images)
    h, w = cfg.grid
    assert out.features.shape == (2, h, w, 40)
    assert out.rgb.shape == (2, h, w, 3)
    assert out.global_vector.shape == (2, 12)
    assert 0 <= out.rgb.min() and out.rgb.max() <= 1


def test_grid_follows_target():
    cfg = model_config_for("cpu", grid=(14, 14), feature_dim=768)
    assert cfg.image_size == (14 * cfg.patch_size,) * 2 and cfg.column_dim == 14 * 14


def test_trigger_column_is_one_conv_filter():
    cfg = small_config(column_channels=1)
    model = make_model(cfg)
    images = torch.rand(1, 3, *cfg.image_size)
    column = model.trigger_column(images)
    assert column.shape == (1, 6 * 5)
    changed = images.clone()
    changed[:, :, 4:8, 8:12] += 0.5  # the pixels of patch (1, 2)
    delta = (model.trigger_column(changed) - column).reshape(6, 5)
    assert delta[1, 2].abs() > 0
    delta[1, 2] = 0
    assert delta.abs().max() == 0  # kernel = stride: no other entry sees that patch


@pytest.mark.parametrize("channels, patch, grid", [(1, 8, (16, 16)), (3, 4, (6, 5)), (2, 14, (4, 4))])
def test_the_column_is_the_conv_filters_convolution(channels, patch, grid):
    """The column is computed as one matmul over the patches: the same numbers as the conv it stores, in the
    conv's (C, h, w) order, forward and backward (fp32 rounding apart)."""
    cfg = small_config(column_channels=channels, patch_size=patch, grid=grid)
    model = make_model(cfg)
    images = torch.rand(2, 3, *cfg.image_size)
    conv = model.column.conv
    reference = conv(model.column.scale(images)).flatten(1)  # (B, C * h * w)
    column = model.trigger_column(images)
    torch.testing.assert_close(column, reference, rtol=1e-5, atol=1e-5)
    (column**2).sum().backward()
    grad = conv.weight.grad.clone()
    conv.weight.grad = None
    (reference**2).sum().backward()
    torch.testing.assert_close(grad, conv.weight.grad, rtol=1e-4, atol=1e-4)


def test_wrong_image_size_is_refused():
    model = make_model(small_config())
    with pytest.raises(ValueError, match="pixels"):
        model.trigger_column(torch.rand(1, 3, 20, 20))


def test_split_first_layer_equals_concatenated_queries():
    """The column/position split of the first layers is exactly the MLP applied to [column, position]."""
    cfg = small_config()
    model = make_model(cfg)
    images = torch.rand(2, 3, *cfg.image_size)
    with torch.no_grad():
        column = model.trigger_column(images)
        queries = model.unfolded_queries(column)  # (B, h*w, query_dim)
        assert queries.shape == (2, 30, cfg.query_dim)
        hidden = model.mlp(model.act(torch.nn.functional.linear(queries, *model.first_layer())))
        features = model.feature_head(hidden)
        rgb_in = torch.cat([features, queries], dim=-1)
        rgb = torch.sigmoid(model.rgb_mlp(model.act(torch.nn.functional.linear(rgb_in, *model.rgb_first_layer()))))
        f2, c2 = model.query(column)
    torch.testing.assert_close(f2, features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, rgb, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 30])
def test_asynchronous_shuffled_chunks_equal_full_grid(chunk):
    cfg = small_config(global_dim=None)
    model = make_model(cfg)
    column = model.trigger_column(torch.rand(2, 3, *cfg.image_size))
    with torch.no_grad():
        full_f, full_c = model.query(column)  # (B, 30, d), row-major
    locations = grid_locations(*cfg.grid)
    order = torch.randperm(len(locations), generator=torch.Generator().manual_seed(chunk))
    feats, cols = model.decode(column, locations[order], chunk_size=chunk)
    assert feats.shape == full_f.shape
    assert (feats[:, order.argsort()] - full_f).abs().max() <= 1e-5
    assert (cols[:, order.argsort()] - full_c).abs().max() <= 1e-5


def test_query_any_subset_in_any_order():
    cfg = small_config()
    model = make_model(cfg)
    column = model.trigger_column(torch.rand(1, 3, *cfg.image_size))
    with torch.no_grad():
        full, _ = model.query(column)
        some = torch.tensor([[5, 4], [0, 0], [2, 3], [2, 3]])
        f, _ = model.query(column, some)
    idx = some[:, 0] * 5 + some[:, 1]
    assert (f[0] - full[0, idx]).abs().max() <= 1e-5


def test_locations_outside_grid():
    model = make_model(small_config())
    column = torch.zeros(1, model.config.column_dim)
    with pytest.raises(ValueError, match="outside"):
        model.query(column, torch.tensor([[6, 0]]))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        model.query(column, torch.tensor([1, 2, 3]))


def test_folded_state_counts_every_parameter():
    model = make_model(small_config(global_dim=8))
    state = model.folded_state()
    assert state.param_count == sum(p.numel() for p in model.parameters())
    assert state.param_bytes == 4 * state.param_count
    assert sum(state.parts.values()) == state.param_count
    assert state.parts["conv filter (column)"] == 3 * 4 * 4 + 1


def test_flops_grow_with_grid_and_batch():
    a = make_model(small_config()).flops_per_step()
    assert make_model(small_config(grid=(12, 10))).flops_per_step() > 3 * a
    assert make_model(small_config()).flops_per_step(batch=2) == 2 * a


def test_invalid_configs():
    with pytest.raises(ValueError, match="too small"):
        model_config_for("cpu", grid=(1, 1))
    with pytest.raises(ValueError, match="activation"):
        APM(small_config(activation="swish2"))
    with pytest.raises(ValueError, match="preset"):
        model_config_for("huge")
