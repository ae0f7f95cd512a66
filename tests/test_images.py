"""apm.images: decoding hostile/unusual uploads (over the generated corpus) and the crop/resize/hash helpers."""

from __future__ import annotations

import hashlib
import pickle
import re
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image

from apm.bench.corpus import BROKEN_IMAGES, FEATURE_FILES, PICKLE_MARKER, UNUSUAL_IMAGES
from apm.errors import APMError, InputError
from apm.images import (
    content_hash,
    downsample_rgb,
    image_to_tensor,
    load_image,
    resize_square,
    square_crop,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def px(img: Image.Image, x: int, y: int) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)[y, x]


def assert_close(actual, expected, tol: int = 6) -> None:
    actual = np.asarray(actual, dtype=np.int16)
    assert np.abs(actual - np.asarray(expected, dtype=np.int16)).max() <= tol, f"{actual.tolist()} != {expected}"


def assert_one_clear_line(message: str) -> None:
    assert message and message == message.strip()
    assert "\n" not in message and "\r" not in message
    assert "Traceback" not in message and 'File "' not in message
    assert len(message) < 200


# broken files: InputError with one clear line

BROKEN_EXPECTED = {
    "truncated_png": r"damaged|truncated",
    "truncated_jpeg": r"damaged|truncated",
    "empty": r"empty \(0 bytes\)",
    "text_as_png": r"not an image",
    "png_signature_garbage": r"not an image|cannot be decoded|damaged",
    "bomb_png": r"too many pixels",
    "bomb_moderate_png": r"8000 x 8000 pixels.*megapixels",
    "tiny_1x1": r"1 x 1 pixels.*at least",
    "strip_20000x20": r"20000 x 20 pixels.*elongated",
}


def test_broken_table_covers_corpus():
    assert set(BROKEN_EXPECTED) == set(BROKEN_IMAGES)


@pytest.mark.parametrize("name", sorted(BROKEN_EXPECTED))
def test_broken_file_raises_input_error(corpus, name):
    path = corpus[name]
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert_one_clear_line(message)
    assert re.search(BROKEN_EXPECTED[name], message), message
    assert path.name in message  # the user learns which file
    err = info.value  # no chained decoder exception for a UI to print: raised directly or `from None`
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


@pytest.mark.parametrize("name", sorted(BROKEN_EXPECTED))
def test_broken_bytes_raise_input_error(corpus, name):
    with pytest.raises(InputError) as info:
        load_image(corpus[name].read_bytes())
    message = str(info.value)
    assert_one_clear_line(message)
    assert re.search(BROKEN_EXPECTED[name], message), message
    assert "uploaded image" in message


def test_input_error_is_a_value_error_and_apm_error():
    assert issubclass(InputError, ValueError) and issubclass(InputError, APMError)


def test_bombs_are_refused_quickly_from_the_header(corpus):
    for name in ("bomb_png", "bomb_moderate_png"):
        data = corpus[name].read_bytes()
        assert len(data) < 8192
        assert struct.unpack(">II", data[16:24]) in {(30000, 30000), (8000, 8000)}  # what IHDR declares
        start = time.perf_counter()
        with pytest.raises(InputError):
            load_image(corpus[name])
        assert time.perf_counter() - start < 1.0


def test_bomb_warning_does_not_leak(corpus, recwarn):
    with pytest.raises(InputError):
        load_image(corpus["bomb_png"])
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        load_image(tmp_path / "nope.png")
    assert_one_clear_line(str(info.value))


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path)


def test_too_many_bytes(corpus):
    path = corpus["plain_jpeg"]
    for source in (path, path.read_bytes()):
        with pytest.raises(InputError, match="MB; the limit is") as info:
            load_image(source, max_bytes=100)
        assert_one_clear_line(str(info.value))


def test_limits_are_parameters(corpus):
    path = corpus["plain_jpeg"]  # 96 x 64
    with pytest.raises(InputError, match="megapixels"):
        load_image(path, max_pixels=96 * 64 - 1)
    assert load_image(path, max_pixels=96 * 64).size == (96, 64)
    with pytest.raises(InputError, match="at least 65 pixels"):
        load_image(path, min_side=65)
    with pytest.raises(InputError, match="elongated"):
        load_image(path, max_aspect=1.4)
    assert load_image(corpus["tiny_1x1"], min_side=1).size == (1, 1)


def test_eps_is_never_handed_to_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n"
    with pytest.raises(InputError, match="not an image") as info:
        load_image(eps)
    assert "Ghostscript" not in str(info.value)


def test_small_pil_image_is_refused_with_a_generic_name():
    with pytest.raises(InputError, match="the image is 4 x 4 pixels"):
        load_image(Image.new("RGB", (4, 4)))


# valid but unusual files: 8-bit RGB with sensible pixels

@pytest.mark.parametrize("name", UNUSUAL_IMAGES)
def test_unusual_file_decodes_to_rgb(corpus, name):
    img = load_image(corpus[name])
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.shape == (img.height, img.width, 3)
    assert arr.std() > 0  # not a blank or all-black failure
    same = load_image(corpus[name].read_bytes())  # bytes decode the same as the path
    assert np.array_equal(np.asarray(same), arr)


def test_cmyk_jpeg(corpus):
    img = load_image(corpus["cmyk_jpeg"])
    assert img.size == (64, 64)
    assert_close(px(img, 8, 32), (0, 255, 255), tol=12)  # C=100% -> cyan
    assert_close(px(img, 56, 32), WHITE, tol=12)  # no ink -> white paper


def test_16bit_greyscale_is_stretched(corpus):
    with Image.open(corpus["gray16_png"]) as raw:
        assert raw.mode.startswith("I")  # really 16-bit in the file
    img = load_image(corpus["gray16_png"])
    arr = np.asarray(img).astype(int)
    assert img.size == (64, 32)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()  # still grey
    row = arr[0, :, 0]
    assert row[0] == 0 and row[-1] == 255  # 1000..3000 stretched to the full 8-bit range, not clipped to 255
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 32  # a smooth ramp


def test_palette_transparency_becomes_white(corpus):
    with Image.open(corpus["palette_alpha_png"]) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    img = load_image(corpus["palette_alpha_png"])
    assert_close(px(img, 8, 8), WHITE, tol=0)  # transparent index (black underneath) -> white, not black
    assert_close(px(img, 56, 8), RED, tol=0)


def test_rgba_transparency_becomes_white(corpus):
    img = load_image(corpus["rgba_png"])
    assert_close(px(img, 8, 8), WHITE, tol=0)  # alpha 0 over black -> white
    assert_close(px(img, 56, 8), BLUE, tol=0)  # opaque
    assert_close(px(img, 56, 56), (0, 0, 127), tol=2)  # half-transparent black over blue, itself opaque


def test_greyscale_colour_key_transparency_becomes_white(corpus):
    with Image.open(corpus["la_trns_png"]) as raw:
        assert raw.mode == "L" and raw.info.get("transparency") == 0
    img = load_image(corpus["la_trns_png"])
    assert_close(px(img, 8, 8), WHITE, tol=0)
    assert_close(px(img, 56, 8), (60, 60, 60), tol=0)


def test_rgb_colour_key_transparency_becomes_white():
    import io

    src = Image.new("RGB", (32, 32), (10, 20, 30))
    src.paste((200, 0, 0), (16, 0, 32, 32))
    buf = io.BytesIO()
    src.save(buf, format="PNG", transparency=(10, 20, 30))
    img = load_image(buf.getvalue())
    assert_close(px(img, 4, 4), WHITE, tol=0)
    assert_close(px(img, 28, 4), (200, 0, 0), tol=0)


def test_animated_gif_gives_first_frame(corpus):
    with Image.open(corpus["animated_gif"]) as raw:
        assert raw.n_frames == 3
    img = load_image(corpus["animated_gif"])
    assert img.size == (48, 48)
    arr = np.asarray(img).reshape(-1, 3)
    assert (arr == RED).all()


def test_exif_orientation_is_applied(corpus):
    with Image.open(corpus["exif_rotated_jpeg"]) as raw:
        assert raw.size == (80, 40) and raw.getexif().get(0x0112) == 6
    img = load_image(corpus["exif_rotated_jpeg"])
    assert img.size == (40, 80)  # width and height swap
    assert_close(px(img, 20, 10), RED, tol=12)  # stored left half (red) is on top after a 90 degree turn
    assert_close(px(img, 20, 70), BLUE, tol=12)


def test_plain_jpeg(corpus):
    img = load_image(corpus["plain_jpeg"])
    assert img.size == (96, 64)
    assert_close(px(img, 0, 0), (0, 0, 128), tol=8)
    assert_close(px(img, 95, 63), (255, 255, 128), tol=8)


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("RGBA", (0, 255, 0, 0), WHITE),
        ("RGBA", (0, 255, 0, 255), GREEN),
        ("LA", (30, 255), (30, 30, 30)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, WHITE),
        ("CMYK", (0, 255, 255, 0), RED),
    ],
)
def test_pil_image_modes(mode, value, expected):
    img = load_image(Image.new(mode, (16, 16), value))
    assert img.mode == "RGB"
    assert_close(px(img, 3, 3), expected, tol=1)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_wide_greyscale_pil_images_are_stretched(mode):
    ramp = np.tile(np.linspace(500, 1500, 16), (16, 1))
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    src = Image.fromarray(ramp.astype(dtype))
    if src.mode != mode:
        src = src.convert(mode)
    arr = np.asarray(load_image(src))[..., 0].astype(int)
    assert arr[0, 0] == 0 and arr[0, -1] == 255 and (np.diff(arr[0]) >= 0).all()


def test_flat_16bit_image_does_not_divide_by_zero():
    img = load_image(Image.fromarray(np.full((16, 16), 4000, dtype=np.uint16)))
    assert np.asarray(img).max() == 0


# crop / resize / tensor / downsample

@pytest.fixture()
def halves() -> Image.Image:
    """96 x 64: left half red, right half blue."""
    img = Image.new("RGB", (96, 64), RED)
    img.paste(BLUE, (48, 0, 96, 64))
    return img


@pytest.mark.parametrize("size, box", [((96, 64), (16, 0, 80, 64)), ((64, 96), (0, 16, 64, 80)), ((50, 50), None)])
def test_square_crop_is_centred(size, box):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    sq = square_crop(img)
    assert sq.size == (min(size),) * 2
    expected = img.crop(box) if box else img
    assert np.array_equal(np.asarray(sq), np.asarray(expected))


def test_resize_square(halves):
    out = resize_square(halves, 32)
    assert out.size == (32, 32) and out.mode == "RGB"
    assert_close(px(out, 2, 16), RED, tol=2)
    assert_close(px(out, 29, 16), BLUE, tol=2)
    assert resize_square(halves, 200).size == (200, 200)  # upsampling works too


def test_image_to_tensor(halves):
    t = image_to_tensor(halves, 32)
    assert isinstance(t, torch.Tensor) and t.shape == (3, 32, 32) and t.dtype == torch.float32
    assert t.is_contiguous()
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert t[0, 16, 2] > 0.99 and t[2, 16, 2] < 0.01  # channel 0 is red, on the left
    assert t[2, 16, 29] > 0.99 and t[0, 16, 29] < 0.01
    assert image_to_tensor(Image.new("RGBA", (40, 40), (0, 0, 0, 255)), 16).shape == (3, 16, 16)


def test_downsample_rgb(halves):
    grid = downsample_rgb(halves, 2, 2)
    assert grid.shape == (2, 2, 3) and grid.dtype == np.float32
    assert np.allclose(grid[:, 0], (1, 0, 0)) and np.allclose(grid[:, 1], (0, 0, 1))  # exact patch means
    grid = downsample_rgb(halves, 14, 7)
    assert grid.shape == (14, 7, 3)
    assert grid.min() >= 0.0 and grid.max() <= 1.0


def test_downsample_is_patch_mean():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    grid = downsample_rgb(Image.fromarray(arr), 4, 4)
    expected = arr.reshape(4, 16, 4, 16, 3).mean(axis=(1, 3)) / 255.0
    assert np.abs(grid - expected).max() <= 1 / 255 + 1e-6  # box filter, rounded to 8 bits


# content_hash

def test_content_hash_is_pinned():
    """Cached teacher outputs are keyed by this hash: changing the scheme silently invalidates every cache."""
    img = Image.new("RGB", (4, 3), (1, 2, 3))
    expected = hashlib.sha256(b"(4, 3)" + bytes([1, 2, 3]) * 12).hexdigest()[:32]
    assert content_hash(img) == expected == "3990397056461009fecb1e23895c5645"


def test_content_hash_stability(corpus):
    a = content_hash(load_image(corpus["plain_jpeg"]))
    assert re.fullmatch(r"[0-9a-f]{32}", a)
    assert content_hash(load_image(corpus["plain_jpeg"])) == a  # same file twice
    assert content_hash(load_image(corpus["plain_jpeg"].read_bytes())) == a  # path vs bytes
    img = load_image(corpus["plain_jpeg"])
    assert content_hash(img.convert("RGBA")) == a  # opaque alpha does not change the pixels
    changed = img.copy()
    changed.putpixel((0, 0), (9, 9, 9))
    assert content_hash(changed) != a


def test_content_hash_depends_on_shape():
    data = bytes(range(48))
    a = Image.frombytes("RGB", (4, 4), data)
    b = Image.frombytes("RGB", (2, 8), data)
    assert a.tobytes() == b.tobytes() and content_hash(a) != content_hash(b)


# the corpus itself (other test modules rely on it)

def test_corpus_has_every_file(corpus):
    assert set(corpus) == set(BROKEN_IMAGES) | set(UNUSUAL_IMAGES) | set(FEATURE_FILES)
    assert all(p.is_file() for p in corpus.values())
    assert corpus["empty"].stat().st_size == 0


def test_corpus_feature_files(corpus, corpus_dir):
    good = np.load(corpus["feat_good_npy"], allow_pickle=False)
    assert good.shape == (16, 16, 8) and good.dtype == np.float32
    assert np.load(corpus["feat_2d_npy"]).ndim == 2 and np.load(corpus["feat_4d_npy"]).ndim == 4
    assert np.isnan(np.load(corpus["feat_nan_npy"])).any()
    for name in ("feat_object_npy", "feat_pickle_as_npy"):
        with pytest.raises(ValueError, match="allow_pickle"):
            np.load(corpus[name], allow_pickle=False)
    with open(corpus["feat_object_npy"], "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(f)
    assert dtype == np.dtype(object)
    t = torch.load(corpus["feat_good_pt"], weights_only=True)
    assert torch.equal(t, torch.from_numpy(good))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(corpus["feat_pickle_pt"], weights_only=True)
    assert not (corpus_dir / PICKLE_MARKER).exists()  # nothing above ran the canary


def test_patch_pixels_are_each_cells_own_pixels():
    from apm.images import downsample_rgb, patch_pixels

    img = Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    px = patch_pixels(img, 6, 8, patch=4)
    assert px.shape == (6, 8, 48) and px.dtype == np.float32
    # a cell's pixels average to its mean colour; the cell's neighbours' pixels are elsewhere
    np.testing.assert_allclose(px.reshape(6, 8, 16, 3).mean(axis=2), downsample_rgb(img, 6, 8), atol=2 / 255)
    assert not np.allclose(px[0, 0], px[0, 1])
