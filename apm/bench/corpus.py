"""A corpus of broken, hostile and unusual input files, generated on the fly for tests.

    from apm.bench.corpus import make_corpus
    files = make_corpus(tmp_path)          # {name: path}
    python -m apm.bench.corpus OUT_DIR

Everything is built deterministically from numpy, Pillow, zlib and torch; nothing is downloaded.

Images that must be refused (`load_image` raises `InputError`):
    truncated_png, truncated_jpeg   a valid file cut in half (the header still parses)
    empty                           a zero-byte .png
    text_as_png                     a text file renamed to .png
    png_signature_garbage           the PNG signature followed by random bytes
    bomb_png                        a few KB whose header declares 30000 x 30000 (beyond Pillow's own bomb limit)
    bomb_moderate_png               a few KB whose header declares 8000 x 8000 (64 MP: under Pillow's limit,
                                    over apm.images.MAX_IMAGE_PIXELS)
    tiny_1x1                        a 1 x 1 PNG
    strip_20000x20                  a 20000 x 20 PNG strip
Images that are valid but unusual (`load_image` gives 8-bit RGB):
    cmyk_jpeg          64 x 64 CMYK JPEG: left half pure cyan, right half paper white
    gray16_png         64 x 32 16-bit greyscale PNG, a horizontal ramp from 1000 to 3000 (of 65535)
    palette_alpha_png  64 x 64 palette PNG: left half the transparent index, right half opaque red
    rgba_png           64 x 64 RGBA PNG: left half fully transparent black, right half opaque blue,
                       bottom-right quarter half-transparent black over it
    la_trns_png        64 x 64 greyscale PNG with a tRNS colour key: left half the key (transparent), right grey 60
    animated_gif       48 x 48 GIF of three frames: red, green, blue
    exif_rotated_jpeg  stored 80 wide x 40 high (left half red, right half blue) with EXIF orientation 6, so it
                       displays 40 x 80 with red on top
    plain_jpeg         96 x 64 RGB JPEG, a smooth colour gradient
Feature arrays (for the feature loader; `.npy` must be read with allow_pickle=False):
    feat_good_npy        (16, 16, 8) float32
    feat_2d_npy          (16, 16) float32 (wrong rank)
    feat_4d_npy          (1, 16, 16, 8) float32 (wrong rank)
    feat_nan_npy         (16, 16, 8) float32 with NaN and inf entries
    feat_object_npy      an object-dtype .npy whose pickle would, if unpickled, create the file PICKLE_MARKER
    feat_pickle_as_npy   a plain pickle (same canary) renamed to .npy
    feat_good_pt         a .pt holding one (16, 16, 8) float32 tensor (torch.save)
    feat_pickle_pt       a .pt holding a dict with the same canary object (must be refused by weights_only=True)

The canary is harmless: unpickling it only touches `dest / PICKLE_MARKER`. A test can check that the marker
does not exist after trying to load the hostile files.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PICKLE_MARKER = "PICKLE_WAS_LOADED"

BROKEN_IMAGES = (
    "truncated_png", "truncated_jpeg", "empty", "text_as_png", "png_signature_garbage",
    "bomb_png", "bomb_moderate_png", "tiny_1x1", "strip_20000x20",
)
UNUSUAL_IMAGES = (
    "cmyk_jpeg", "gray16_png", "palette_alpha_png", "rgba_png", "la_trns_png",
    "animated_gif", "exif_rotated_jpeg", "plain_jpeg",
)
FEATURE_FILES = (
    "feat_good_npy", "feat_2d_npy", "feat_4d_npy", "feat_nan_npy", "feat_object_npy",
    "feat_pickle_as_npy", "feat_good_pt", "feat_pickle_pt",
)


class PickleCanary:
    """Unpickling this calls `Path.touch(marker)`: proof that someone unpickled an untrusted file."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


# building blocks

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(width: int, height: int, rows: int = 4) -> bytes:
    """A PNG whose IHDR declares width x height RGB but whose IDAT holds only the first `rows` rows of zeros.

    A loader that trusts the header and allocates (or decodes) the whole image is the one that gets hurt; the
    file itself is a few KB.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB), no interlace
    raw = b"".join(b"\x00" + bytes(width * 3) for _ in range(rows))  # filter byte 0 + a row of black pixels
    idat = zlib.compress(raw, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _noise_rgb(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _halves(w: int, h: int, left, right, mode: str = "RGB") -> Image.Image:
    img = Image.new(mode, (w, h), left)
    img.paste(right, (w // 2, 0, w, h))
    return img


# the corpus

def make_corpus(dest: Path) -> dict[str, Path]:
    """Write every corpus file into `dest` (created if missing) and return {name: path}."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240601)
    files: dict[str, Path] = {}

    def put(name: str, filename: str, data: bytes) -> None:
        path = dest / filename
        path.write_bytes(data)
        files[name] = path

    # broken images
    png = _encode(_noise_rgb(rng, 64, 64), "PNG")
    put("truncated_png", "truncated.png", png[: len(png) // 2])
    jpeg = _encode(_noise_rgb(rng, 64, 64), "JPEG", quality=90)
    put("truncated_jpeg", "truncated.jpg", jpeg[: len(jpeg) // 2])
    put("empty", "empty.png", b"")
    put("text_as_png", "notes.png", b"This is not an image.\nJust a few lines of plain text, renamed to .png.\n")
    put("png_signature_garbage", "garbage.png", b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 512, np.uint8).tobytes())
    put("bomb_png", "bomb_30000x30000.png", _bomb_png(30000, 30000))
    put("bomb_moderate_png", "bomb_8000x8000.png", _bomb_png(8000, 8000))
    put("tiny_1x1", "tiny_1x1.png", _encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    put("strip_20000x20", "strip_20000x20.png", _encode(Image.new("RGB", (20000, 20), (30, 120, 200)), "PNG"))

    # valid but unusual images
    cmyk = _halves(64, 64, (255, 0, 0, 0), (0, 0, 0, 0), mode="CMYK")
    put("cmyk_jpeg", "cmyk.jpg", _encode(cmyk, "JPEG", quality=95))

    ramp = np.tile(np.linspace(1000, 3000, 64).round().astype(np.uint16), (32, 1))  # (32, 64)
    put("gray16_png", "gray16.png", _encode(Image.fromarray(ramp), "PNG"))

    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black (made transparent), index 1 red
    pal.paste(1, (32, 0, 64, 64))
    put("palette_alpha_png", "palette_alpha.png", _encode(pal, "PNG", transparency=0))

    rgba = _halves(64, 64, (0, 0, 0, 0), (0, 0, 255, 255), mode="RGBA")
    rgba.alpha_composite(Image.new("RGBA", (32, 32), (0, 0, 0, 128)), (32, 32))
    put("rgba_png", "rgba.png", _encode(rgba, "PNG"))

    la = _halves(64, 64, 0, 60, mode="L")
    put("la_trns_png", "grey_trns.png", _encode(la, "PNG", transparency=0))

    frames = [Image.new("RGB", (48, 48), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("animated_gif", "animated.gif", gif.getvalue())

    rotated = _halves(80, 40, (255, 0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    put("exif_rotated_jpeg", "exif_rotated.jpg", _encode(rotated, "JPEG", quality=95, exif=exif.tobytes()))

    yy, xx = np.mgrid[0:64, 0:96]
    grad = np.stack([xx * 255 / 95, yy * 255 / 63, np.full_like(xx, 128)], axis=-1).round().astype(np.uint8)
    put("plain_jpeg", "plain.jpg", _encode(Image.fromarray(grad, "RGB"), "JPEG", quality=92))

    # feature arrays
    good = rng.standard_normal((16, 16, 8)).astype(np.float32)

    def put_npy(name: str, filename: str, arr: np.ndarray, allow_pickle: bool = False) -> None:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=allow_pickle)
        put(name, filename, buf.getvalue())

    put_npy("feat_good_npy", "features_good.npy", good)
    put_npy("feat_2d_npy", "features_2d.npy", good[..., 0].copy())
    put_npy("feat_4d_npy", "features_4d.npy", good[None].copy())
    nan = good.copy()
    nan[3, 4, 5] = np.nan
    nan[7, 1, 2] = np.inf
    put_npy("feat_nan_npy", "features_nan.npy", nan)

    canary = PickleCanary(dest / PICKLE_MARKER)
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = canary, good
    put_npy("feat_object_npy", "features_object.npy", obj, allow_pickle=True)
    put("feat_pickle_as_npy", "features_pickle.npy", pickle.dumps({"features": good, "canary": canary}, protocol=4))

    import torch

    buf = io.BytesIO()
    torch.save(torch.from_numpy(good.copy()), buf)
    put("feat_good_pt", "features_good.pt", buf.getvalue())
    buf = io.BytesIO()
    torch.save({"features": torch.from_numpy(good.copy()), "canary": canary}, buf)
    put("feat_pickle_pt", "features_pickle.pt", buf.getvalue())

    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m apm.bench.corpus OUT_DIR")
    for key, path in make_corpus(Path(sys.argv[1])).items():
        print(f"{key:24s} {path.stat().st_size:>8d}  {path}")
