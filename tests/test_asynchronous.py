"""Asynchronous decoding: any order and any chunk give the same grid; a subset decodes only itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from apm.asynchronous import Decoder, check_chunk, decode_order, largest_difference, order_difference, rectangle
from apm.errors import InputError
from apm.model import APM, MODEL_PRESETS, ModelConfig

SAME = 1e-5  # fp32: the order and the chunking may change rounding, nothing else


def decoder(config: ModelConfig | None = None, scale: float = 1.0, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    apm = APM(config or MODEL_PRESETS["cpu"]).eval()
    pixels = torch.rand(1, 3, *apm.config.image_size, generator=torch.Generator().manual_seed(seed))
    return Decoder.from_pixels(apm, pixels, scale=scale)


def test_orders_cover_the_grid_once():
    row = decode_order((6, 5), "row")
    assert row.shape == (30, 2) and row[:3].tolist() == [[0, 0], [0, 1], [0, 2]]
    shuffled = decode_order((6, 5), "random", seed=3)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, row)) and not np.array_equal(shuffled, row)
    assert np.array_equal(decode_order((6, 5), "random", seed=3), shuffled)  # seeded
    with pytest.raises(InputError, match="order must be one of"):
        decode_order((6, 5), "spiral")


@pytest.mark.parametrize("preset", ["cpu"])
def test_any_order_and_chunk_give_the_same_grid(preset):
    """The cpu preset (16 x 16, d = 384), fp32: one full pass against row and random orders in chunks of 1 to all."""
    d = decoder(MODEL_PRESETS[preset])
    assert order_difference(d, chunks=(1, 7, 64, 255, None), seed=1) <= SAME
    full, rgb = d.full()
    partial = d.fill(decode_order(d.grid, "random", 5), chunk=13)
    assert partial.mask.all() and partial.chunks == -(-256 // 13)
    assert np.abs(partial.rgb - rgb).max() <= SAME
    assert np.abs(partial.features - full).max() <= SAME * float(np.abs(full).max() + 1)


def test_a_wide_grid_and_channels():
    """A non-square grid, several conv channels and a deeper MLP: still the same grid in any order."""
    config = ModelConfig(grid=(6, 9), patch_size=4, column_channels=3, pos_dim=20, hidden=(48, 40, 32),
                         feature_dim=12, rgb_hidden=(8, 8))
    assert order_difference(decoder(config), chunks=(1, 4, None)) <= SAME


def test_a_subset_decodes_only_those_locations():
    d = decoder(scale=2.5)
    full, _ = d.full()
    box = rectangle((6, 2), (3, 5))  # corners in any order
    assert box.shape == (16, 2) and box.min(axis=0).tolist() == [3, 2] and box.max(axis=0).tolist() == [6, 5]
    partial = d.fill(box, chunk=3)
    expected = np.zeros(d.grid, bool)
    expected[3:7, 2:6] = True
    assert np.array_equal(partial.mask, expected) and partial.chunks == 6
    assert np.isnan(partial.features[~expected]).all() and np.isnan(partial.rgb[~expected]).all()
    assert largest_difference(partial, full, d.scale) <= SAME
    more = d.fill(np.array([[0, 0], [15, 15]]), into=partial)  # adding to a grid keeps what it had
    assert more.mask.sum() == 18 and more.mask[0, 0] and more.mask[15, 15] and more.chunks == 7
    assert partial.mask.sum() == 16  # ... in a new object
    assert d.fill(np.zeros((0, 2), np.int64)).mask.sum() == 0


def test_the_scale_is_the_teachers_units():
    plain, scaled = decoder(scale=1.0), decoder(scale=3.0)
    assert np.allclose(scaled.full()[0], 3.0 * plain.full()[0], atol=1e-5)
    assert np.allclose(scaled.full()[1], plain.full()[1])  # colours are not scaled


def test_from_image_matches_the_forward_pass():
    from apm.images import image_to_tensor

    torch.manual_seed(0)
    apm = APM(MODEL_PRESETS["cpu"]).eval()
    image = Image.fromarray((np.random.default_rng(0).random((90, 70, 3)) * 255).astype(np.uint8))
    d = Decoder.from_image(apm, image)
    with torch.no_grad():
        out = apm(image_to_tensor(image, apm.config.image_size)[None])
    assert np.abs(d.full()[0] - out.features[0].numpy()).max() <= SAME


def test_bad_locations_and_chunks_are_clear():
    d = decoder()
    with pytest.raises(InputError, match="outside the 16 x 16 grid"):
        d.fill(np.array([[0, 16]]))
    with pytest.raises(InputError, match="outside"):
        d.fill(np.array([[-1, 0]]))
    with pytest.raises(InputError, match=r"\(n, 2\)"):
        d.fill(np.zeros((3, 3), np.int64))
    with pytest.raises(InputError, match="at least 1"):
        check_chunk(0, 10)
    assert check_chunk(None, 10) == 10 and check_chunk(50, 10) == 10 and check_chunk(3, 10) == 3
