"""Decoding and validating user images, and turning them into model inputs.

Every image goes through `load_image` (any file or bytes a user may hand us, checked before it is decoded)
and then `square_crop`, so the teacher and the APM see exactly the same square of pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

MAX_IMAGE_BYTES = 25 * 1024 * 1024  # an upload larger than this is refused before decoding
MAX_IMAGE_PIXELS = 40_000_000  # width * height read from the header; larger is refused (decompression bombs)
MAX_ASPECT = 8.0  # a 20000 x 20 strip has nothing square to crop
MIN_SIDE = 8  # smaller images carry too little to learn from
# formats a user may upload; others (EPS runs Ghostscript, exotic scientific formats) are never tried
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


# helpers

def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white, so transparent pixels do not turn black."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (CMYK, 16-bit, palette, alpha, 1-bit) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: stretch the actual range to 8 bits instead of clipping at 255
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:  # palette index or tRNS colour key
        return _flatten_alpha(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten_alpha(img)
    return img.convert("RGB")


def _describe(source: ImageSource) -> str:
    if isinstance(source, (bytes, bytearray)):
        return "the uploaded image"
    return f"'{Path(source).name}'"


# public API

def load_image(
    source: ImageSource,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    min_side: int = MIN_SIDE,
    max_aspect: float = MAX_ASPECT,
) -> Image.Image:
    """Decode an image file, bytes or PIL image into an 8-bit RGB PIL image, or raise `InputError`.

    Size limits are checked on the file and on the header before any pixel is decoded. EXIF orientation
    is applied; animated images give their first frame; transparency is composited onto white.
    """
    if isinstance(source, Image.Image):
        img = source
        name = "the image"
    else:
        name = _describe(source)
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise InputError(f"image file not found: {path}")
            size = path.stat().st_size
            if size > max_bytes:
                raise InputError(f"{name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
            data = path.read_bytes()
        if len(data) == 0:
            raise InputError(f"{name} is empty (0 bytes)")
        if len(data) > max_bytes:
            raise InputError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                Image.init()
                img = Image.open(io.BytesIO(data), formats=[f for f in UPLOAD_FORMATS if f in Image.OPEN])
        except UnidentifiedImageError:
            raise InputError(f"{name} is not an image PIL can read (PNG, JPEG, WebP, GIF, BMP, TIFF, ...)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{name} declares too many pixels to decode safely") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault, not ours
            raise InputError(f"{name} cannot be decoded: {exc}") from None

    w, h = img.size
    if w * h > max_pixels:
        raise InputError(f"{name} is {w} x {h} pixels; the limit is {max_pixels / 1e6:.0f} megapixels")
    if min(w, h) < min_side:
        raise InputError(f"{name} is {w} x {h} pixels; each side needs at least {min_side} pixels")
    if max(w, h) / min(w, h) > max_aspect:
        raise InputError(f"{name} is {w} x {h} pixels, too elongated (more than {max_aspect:g}:1); crop it first")
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated: the first frame
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{name} declares too many pixels to decode safely") from None
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise InputError(f"{name} is damaged and cannot be decoded ({exc})") from None
    return rgb


def square_crop(img: Image.Image) -> Image.Image:
    """The largest centred square of an image."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def crop_to_aspect(img: Image.Image, height: int, width: int) -> Image.Image:
    """The largest centred crop with the aspect ratio width : height (a square for a square grid)."""
    if height == width:
        return square_crop(img)
    w, h = img.size
    target = width / height
    cw, ch = (round(h * target), h) if w / h > target else (w, round(w / target))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to size x size (bicubic, antialiased)."""
    return square_crop(img).resize((size, size), Image.Resampling.BICUBIC)


def image_to_tensor(img: Image.Image, size: int | tuple[int, int]) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 tensor in [0, 1], centre-cropped to the aspect of (H, W)."""
    height, width = (size, size) if isinstance(size, int) else size
    fitted = crop_to_aspect(img.convert("RGB"), height, width).resize((width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(fitted, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)


def downsample_rgb(img: Image.Image, h: int, w: int) -> np.ndarray:
    """The image at grid resolution: (h, w, 3) float32 in [0, 1], each cell the mean colour of its patch."""
    cropped = crop_to_aspect(img.convert("RGB"), h, w)
    return np.asarray(cropped.resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255.0


def patch_pixels(img: Image.Image, h: int, w: int, patch: int = 8) -> np.ndarray:
    """Each grid cell's own pixels, as a feature: (h, w, patch * patch * 3) float32 in [0, 1].

    The baseline a distilled grid is read against: how much of a teacher's grid the raw input already carries
    (its linear CKA to the teacher), before anything is learned.
    """
    cropped = crop_to_aspect(img.convert("RGB"), h, w).resize((w * patch, h * patch), Image.Resampling.BOX)
    x = np.asarray(cropped, dtype=np.float32) / 255.0  # (h p, w p, 3)
    return x.reshape(h, patch, w, patch, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, patch * patch * 3)


def content_hash(img: Image.Image) -> str:
    """A stable hash of an image's pixels (for caching teacher outputs)."""
    import hashlib

    rgb = img.convert("RGB")
    digest = hashlib.sha256(f"{rgb.size}".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()[:32]
