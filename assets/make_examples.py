"""Make the example images for the app's gallery: `python assets/make_examples.py [OUT_DIR]`.

Each picture is a small part-whole scene (a face, a house, a car, a snowman, nested shapes) so that GLOM's
islands of agreement have obvious parts and wholes to find. Scenes are drawn at 4x on a float canvas with
soft shading and mild value-noise texture, then downsampled to 448 x 448 (anti-aliased) and saved as PNG.

Deterministic: numpy + Pillow only, every random number comes from a seeded generator, so running the script
again gives the same pixels. Output defaults to `assets/examples/` next to this file.

It also copies the two sample photos that scikit-learn ships (china.jpg, flower.jpg; CC BY 2.0, see CREDITS.md)
from the installed package, centre-cropped and resized to 448 x 448, JPEG quality 90. scikit-learn is only
located on disk, never imported; without it the photos are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 448  # output side in pixels
SCALE = 4  # drawing is done at SIZE * SCALE and box-filtered down
BIG = SIZE * SCALE


# canvas helpers (all coordinates below are in output pixels, 0..448; they are scaled when drawn)

def _s(v):
    """Scale a coordinate, a tuple or a list of tuples from output pixels to canvas pixels."""
    if isinstance(v, (list, tuple)):
        return type(v)(_s(x) for x in v)
    return v * SCALE


def rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float32) / 255.0


def mask(draw_fn) -> np.ndarray:
    """Run `draw_fn(ImageDraw)` on a blank L canvas (fill=255 draws) and return a (BIG, BIG, 1) mask in [0, 1]."""
    m = Image.new("L", (BIG, BIG), 0)
    draw_fn(ImageDraw.Draw(m))
    return (np.asarray(m, dtype=np.float32) / 255.0)[..., None]


def ellipse(box):
    return mask(lambda d: d.ellipse(_s(box), fill=255))


def polygon(points):
    return mask(lambda d: d.polygon(_s(points), fill=255))


def rect(box, radius=0):
    if radius:
        return mask(lambda d: d.rounded_rectangle(_s(box), radius=radius * SCALE, fill=255))
    return mask(lambda d: d.rectangle(_s(box), fill=255))


def line(points, width, joint="curve"):
    return mask(lambda d: d.line(_s(points), fill=255, width=int(width * SCALE), joint=joint))


def arc(box, start, end, width):
    return mask(lambda d: d.arc(_s(box), start, end, fill=255, width=int(width * SCALE)))


def chord(box, start, end):
    return mask(lambda d: d.chord(_s(box), start, end, fill=255))


_YY, _XX = np.mgrid[0:BIG, 0:BIG].astype(np.float32) / SCALE  # output-pixel coordinates of every canvas pixel


def radial(cx, cy, r, colour, strength=0.35, light=(-0.35, -0.4)):
    """A sphere-like shaded fill: lighter towards the light direction, darker at the far rim."""
    lx, ly = cx + light[0] * r, cy + light[1] * r
    d = np.sqrt((_XX - lx) ** 2 + (_YY - ly) ** 2) / (1.6 * r)
    shade = 1.0 + strength * (0.5 - np.clip(d, 0.0, 1.0))
    return np.clip(colour[None, None, :] * shade[..., None], 0.0, 1.0)


def vertical(top, bottom, c_top, c_bottom):
    """A vertical gradient between two colours from y=top to y=bottom (output pixels)."""
    t = np.clip((_YY - top) / max(bottom - top, 1e-6), 0.0, 1.0)[..., None]
    return c_top[None, None, :] * (1 - t) + c_bottom[None, None, :] * t


def value_noise(rng: np.random.Generator, cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth fractal noise in about [-1, 1] at canvas size (bicubic-upsampled random grids)."""
    out = np.zeros((BIG, BIG), dtype=np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2 ** o
        grid = rng.random((n, n), dtype=np.float32)
        img = Image.fromarray(grid, "F").resize((BIG, BIG), Image.Resampling.BICUBIC)
        out += amp * (np.asarray(img, dtype=np.float32) * 2.0 - 1.0)
        total += amp
        amp *= 0.5
    return out / total


class Canvas:
    def __init__(self, background: np.ndarray, seed: int):
        self.rng = np.random.default_rng(seed)
        self.px = np.broadcast_to(background, (BIG, BIG, 3)).astype(np.float32).copy()

    def paint(self, m: np.ndarray, fill, alpha: float = 1.0, texture: float = 0.0, cells: int = 24):
        """Composite `fill` (a colour or a (BIG, BIG, 3) array) through mask `m`, optionally textured."""
        fill = np.asarray(fill, dtype=np.float32)
        if fill.ndim == 1:
            fill = fill[None, None, :]
        if texture:
            fill = fill * (1.0 + texture * value_noise(self.rng, cells))[..., None]
        a = m * alpha
        self.px = self.px * (1 - a) + np.clip(fill, 0.0, 1.0) * a

    def shadow(self, m: np.ndarray, offset=(6, 8), blur: float = 6.0, alpha: float = 0.25):
        """A soft drop shadow of mask `m`, offset by (dx, dy) output pixels."""
        from PIL import ImageFilter

        img = Image.fromarray((m[..., 0] * 255).astype(np.uint8), "L")
        img = img.transform(img.size, Image.Transform.AFFINE,
                            (1, 0, -offset[0] * SCALE, 0, 1, -offset[1] * SCALE))
        img = img.filter(ImageFilter.GaussianBlur(blur * SCALE))
        self.paint((np.asarray(img, dtype=np.float32) / 255.0)[..., None], np.zeros(3), alpha=alpha)

    def finish(self, grain: float = 0.012) -> Image.Image:
        small = Image.fromarray((np.clip(self.px, 0, 1) * 255).round().astype(np.uint8), "RGB")
        small = small.resize((SIZE, SIZE), Image.Resampling.BOX)  # box filter = exact anti-aliasing of the 4x draw
        if grain:  # a touch of film grain so flat areas are not perfectly flat (kept low so PNGs stay small)
            arr = np.asarray(small, dtype=np.float32)
            noise = self.rng.normal(0.0, grain * 255.0, size=(SIZE, SIZE, 1)).astype(np.float32)
            small = Image.fromarray(np.clip(arr + noise, 0, 255).round().astype(np.uint8), "RGB")
        return small


# scenes

def face() -> Image.Image:
    c = Canvas(vertical(0, SIZE, rgb("#b9d7ea"), rgb("#e8d9f1")), seed=1)
    # shoulders and neck
    shoulders = ellipse((84, 360, 364, 560))
    c.paint(shoulders, radial(224, 420, 150, rgb("#3d6e9e"), 0.4), texture=0.05)
    neck = rect((189, 290, 259, 380), radius=20)
    c.paint(neck, radial(224, 330, 60, rgb("#d9a07a"), 0.5))
    # ears
    for cx in (112, 336):
        ear = ellipse((cx - 22, 190, cx + 22, 260))
        c.paint(ear, radial(cx, 225, 30, rgb("#e3ad87"), 0.4))
    # head
    head = ellipse((118, 78, 330, 352))
    c.shadow(head, offset=(5, 7), blur=8, alpha=0.22)
    c.paint(head, radial(224, 215, 120, rgb("#f0bf98"), 0.45), texture=0.03)
    # hair: a cap over the top of the head
    hair = chord((110, 64, 338, 250), 180, 360)
    c.paint(hair, radial(210, 110, 120, rgb("#5a3a22"), 0.5), texture=0.10, cells=40)
    for cx in np.linspace(136, 312, 6):  # a scalloped fringe along the hairline
        tuft = ellipse((cx - 22, 132, cx + 22, 172))
        c.paint(tuft, radial(210, 110, 120, rgb("#5a3a22"), 0.5), texture=0.10, cells=40)
    # cheeks
    for cx in (164, 284):
        c.paint(ellipse((cx - 24, 252, cx + 24, 280)), rgb("#ef8f8f"), alpha=0.35)
    # eyebrows
    for x0, x1 in ((150, 198), (250, 298)):
        c.paint(arc((x0, 168, x1, 196), 200, 340, 6), rgb("#4a2e1a"))
    # eyes: white, iris, pupil, highlight
    for cx in (174, 274):
        white = ellipse((cx - 28, 196, cx + 28, 232))
        c.paint(white, radial(cx, 214, 30, rgb("#fbfbf7"), 0.15))
        c.paint(arc((cx - 28, 196, cx + 28, 232), 190, 350, 3), rgb("#3a2616"))
        c.paint(ellipse((cx - 14, 200, cx + 14, 228)), radial(cx, 214, 14, rgb("#3f7fb6"), 0.6))
        c.paint(ellipse((cx - 7, 207, cx + 7, 221)), rgb("#141414"))
        c.paint(ellipse((cx - 7, 204, cx - 1, 210)), rgb("#ffffff"), alpha=0.9)
    # nose
    nose = polygon([(224, 226), (206, 280), (224, 288), (242, 280)])
    c.paint(nose, radial(218, 262, 30, rgb("#e2a67f"), 0.6))
    c.paint(ellipse((210, 276, 238, 292)), rgb("#d3906b"), alpha=0.8)
    # mouth: an open smile with teeth
    mouth = chord((180, 288, 268, 334), 0, 180)
    c.paint(mouth, rgb("#8c2b2b"))
    c.paint(chord((190, 290, 258, 314), 0, 180) * mouth, rgb("#fafafa"))
    c.paint(arc((178, 286, 270, 336), 0, 180, 3), rgb("#b84848"))
    return c.finish()


def house() -> Image.Image:
    c = Canvas(vertical(0, 300, rgb("#7fb3e0"), rgb("#d6ecf7")), seed=2)
    # sun and clouds
    c.paint(ellipse((356, 36, 416, 96)), rgb("#fff3b0"), alpha=0.5)
    c.paint(ellipse((364, 44, 408, 88)), rgb("#ffe066"))
    for cx, cy, s in ((80, 70, 1.0), (250, 50, 0.8)):
        for dx, dy, r in ((-28, 6, 20), (0, 0, 28), (30, 6, 22), (8, 12, 22)):
            x, y, rr = cx + dx * s, cy + dy * s, r * s
            c.paint(ellipse((x - rr, y - rr * 0.8, x + rr, y + rr * 0.8)), rgb("#ffffff"), alpha=0.9)
    # ground and path
    ground = rect((0, 330, SIZE, SIZE))
    c.paint(ground, vertical(330, SIZE, rgb("#79b85a"), rgb("#4f8f3c")), texture=0.12, cells=60)
    path = polygon([(204, 392), (244, 392), (290, SIZE), (170, SIZE)])
    c.paint(path, rgb("#cdb48c"), texture=0.1, cells=50)
    # chimney behind the roof
    c.paint(rect((290, 110, 320, 190)), rgb("#8a4a3a"), texture=0.08)
    c.paint(rect((285, 102, 325, 114)), rgb("#6e3a2d"))
    # walls with brick courses
    walls = rect((96, 200, 352, 394))
    c.shadow(walls, offset=(8, 4), blur=6, alpha=0.25)
    c.paint(walls, rgb("#e8c9a0"), texture=0.06, cells=30)
    bricks = mask(lambda d: [d.line(_s([(96, y), (352, y)]), fill=255, width=SCALE) for y in range(214, 394, 14)])
    c.paint(bricks * walls, rgb("#c9a67c"), alpha=0.6)
    # roof with shingle rows
    roof = polygon([(78, 206), (224, 96), (370, 206)])
    c.shadow(roof, offset=(4, 6), blur=5, alpha=0.2)
    c.paint(roof, vertical(96, 206, rgb("#c0473a"), rgb("#8e2f27")), texture=0.06)
    rows = mask(lambda d: [d.line(_s([(60, y), (390, y)]), fill=255, width=SCALE) for y in range(120, 206, 16)])
    c.paint(rows * roof, rgb("#6f221c"), alpha=0.5)
    c.paint(line([(78, 206), (224, 96), (370, 206)], 6), rgb("#5e1d18"))
    # door with knob and step
    door = rect((196, 290, 252, 392), radius=6)
    c.paint(door, vertical(290, 392, rgb("#5a7fa8"), rgb("#3c5b80")), texture=0.05)
    c.paint(rect((204, 300, 244, 338), radius=4), rgb("#4b6e96"))
    c.paint(ellipse((238, 340, 246, 348)), rgb("#f2d16b"))
    c.paint(rect((188, 390, 260, 398)), rgb("#9a9a9a"))
    # windows: frame, glass with reflection, cross bars, sill
    for x0, y0 in ((118, 238), (276, 238), (128, 316), (286, 316)):
        if y0 == 316:
            x0, y0, w, h = x0 - 4, y0, 46, 40
        else:
            w, h = 56, 52
        c.paint(rect((x0 - 4, y0 - 4, x0 + w + 4, y0 + h + 4)), rgb("#fdfdfd"))
        c.paint(rect((x0, y0, x0 + w, y0 + h)), vertical(y0, y0 + h, rgb("#bfe3f7"), rgb("#6fa9d6")))
        c.paint(polygon([(x0 + 6, y0 + h - 6), (x0 + w * 0.55, y0 + 4), (x0 + w * 0.75, y0 + 4),
                         (x0 + 20, y0 + h - 6)]), rgb("#ffffff"), alpha=0.35)
        c.paint(rect((x0 + w / 2 - 2, y0, x0 + w / 2 + 2, y0 + h)), rgb("#fdfdfd"))
        c.paint(rect((x0, y0 + h / 2 - 2, x0 + w, y0 + h / 2 + 2)), rgb("#fdfdfd"))
        c.paint(rect((x0 - 8, y0 + h + 4, x0 + w + 8, y0 + h + 10)), rgb("#d8d8d8"))
    # a bush either side
    for cx in (70, 384):
        for dx, dy, r in ((-20, 8, 22), (0, -6, 28), (22, 6, 22)):
            b = ellipse((cx + dx - r, 370 + dy - r, cx + dx + r, 370 + dy + r))
            c.paint(b, radial(cx + dx, 370 + dy, r, rgb("#3f8a3a"), 0.5), texture=0.12, cells=60)
    return c.finish()


def car() -> Image.Image:
    c = Canvas(vertical(0, 280, rgb("#f6c89f"), rgb("#f3e6c9")), seed=3)
    # far hills
    c.paint(ellipse((-80, 200, 260, 420)), rgb("#b7c99a"), texture=0.06)
    c.paint(ellipse((180, 220, 540, 440)), rgb("#a5bd8a"), texture=0.06)
    # road with dashed centre line
    road = rect((0, 300, SIZE, SIZE))
    c.paint(road, vertical(300, SIZE, rgb("#6b6b70"), rgb("#4a4a50")), texture=0.10, cells=80)
    c.paint(rect((0, 296, SIZE, 302)), rgb("#d9d9d9"))
    for x in range(-10, SIZE, 70):
        c.paint(rect((x, 414, x + 40, 420)), rgb("#f0e3a0"))
    # body
    body = polygon([(52, 318), (48, 270), (70, 250), (130, 240), (168, 186), (290, 184),
                    (338, 236), (392, 246), (404, 272), (400, 318)])
    c.shadow(ellipse((40, 318, 410, 352)), offset=(0, 0), blur=6, alpha=0.45)
    c.paint(body, vertical(184, 318, rgb("#e2433a"), rgb("#a8231d")), texture=0.03)
    c.paint(line([(60, 276), (396, 276)], 3), rgb("#ffffff"), alpha=0.35)  # highlight along the side
    # windows
    front_win = polygon([(236, 196), (284, 196), (322, 238), (236, 238)])
    rear_win = polygon([(176, 196), (226, 196), (226, 238), (146, 238)])
    for win in (front_win, rear_win):
        c.paint(win, vertical(196, 238, rgb("#d9eef8"), rgb("#7fb0cf")))
    c.paint(polygon([(248, 234), (268, 200), (278, 200), (258, 234)]), rgb("#ffffff"), alpha=0.4)
    # door line and handle
    c.paint(line([(230, 244), (230, 312)], 2.5), rgb("#7c1813"))
    c.paint(rect((246, 256, 266, 262), radius=2), rgb("#e8e8e8"))
    c.paint(rect((196, 256, 216, 262), radius=2), rgb("#e8e8e8"))
    # lights and bumpers
    c.paint(ellipse((380, 256, 404, 274)), rgb("#fff4b8"))
    c.paint(rect((46, 258, 60, 276), radius=3), rgb("#ff6b5b"))
    c.paint(rect((36, 306, 84, 318), radius=4), rgb("#bdbdbd"))
    c.paint(rect((366, 306, 412, 318), radius=4), rgb("#bdbdbd"))
    # wheels: arch, tyre, rim, hub, spokes
    for cx in (122, 330):
        cy, r = 318, 40
        c.paint(ellipse((cx - r - 6, cy - r - 6, cx + r + 6, cy + r + 6)) * (_YY < cy)[..., None], rgb("#2a2a2a"))
        c.paint(ellipse((cx - r, cy - r, cx + r, cy + r)), radial(cx, cy, r, rgb("#222226"), 0.4), texture=0.05)
        c.paint(ellipse((cx - 24, cy - 24, cx + 24, cy + 24)), radial(cx, cy, 24, rgb("#c9ccd2"), 0.5))
        spokes = mask(lambda d, cx=cx, cy=cy: [
            d.line(_s([(cx, cy), (cx + 22 * np.cos(a), cy + 22 * np.sin(a))]), fill=255, width=3 * SCALE)
            for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)])
        c.paint(spokes, rgb("#8a8e96"))
        c.paint(ellipse((cx - 7, cy - 7, cx + 7, cy + 7)), rgb("#5d6168"))
    return c.finish()


def snowman() -> Image.Image:
    c = Canvas(vertical(0, 330, rgb("#24335e"), rgb("#6d7fb3")), seed=4)
    # stars and moon
    rng = np.random.default_rng(44)
    for x, y, r in zip(rng.uniform(10, 438, 40), rng.uniform(10, 280, 40), rng.uniform(0.8, 2.0, 40)):
        c.paint(ellipse((x - r, y - r, x + r, y + r)), rgb("#fffbe0"), alpha=0.8)
    c.paint(ellipse((48, 40, 108, 100)), rgb("#f7f3d8"))
    c.paint(ellipse((64, 34, 122, 92)), vertical(0, 330, rgb("#24335e"), rgb("#6d7fb3")))  # crescent
    # snowy ground
    ground = ellipse((-200, 320, 648, 700))
    c.paint(ground, vertical(320, SIZE, rgb("#f4f7ff"), rgb("#c9d3ea")), texture=0.04, cells=40)
    # three stacked balls: bottom, middle, head
    balls = ((224, 360, 86), (224, 248, 64), (224, 160, 46))
    c.shadow(ellipse((140, 420, 330, 452)), offset=(10, 0), blur=8, alpha=0.3)
    for cx, cy, r in balls:
        ball = ellipse((cx - r, cy - r, cx + r, cy + r))
        c.paint(ball, radial(cx, cy, r, rgb("#f2f5fc"), 0.35, light=(-0.4, -0.5)), texture=0.03, cells=30)
    # stick arms
    for pts in ([(172, 236), (92, 190), (70, 176)], [(92, 190), (78, 200)],
                [(276, 236), (356, 196), (380, 184)], [(356, 196), (366, 176)]):
        c.paint(line(pts, 5), rgb("#6b4426"))
    # scarf
    c.paint(rect((168, 192, 280, 212), radius=8), rgb("#d23c3c"), texture=0.08)
    c.paint(polygon([(244, 204), (268, 204), (276, 262), (252, 266)]), rgb("#b92f2f"), texture=0.08)
    for y in (224, 240):
        c.paint(line([(256, y), (272, y - 2)], 3), rgb("#f2d16b"))
    # hat: brim and crown with a band
    c.paint(rect((164, 116, 284, 128), radius=4), rgb("#1d1d22"))
    c.paint(rect((188, 58, 260, 120), radius=4), vertical(58, 120, rgb("#34343c"), rgb("#16161a")))
    c.paint(rect((188, 102, 260, 114)), rgb("#3d6ed1"))
    # face: coal eyes, carrot nose, coal smile
    for cx in (208, 240):
        c.paint(ellipse((cx - 5, 146, cx + 5, 156)), rgb("#1a1a1a"))
    c.paint(polygon([(222, 164), (262, 174), (222, 176)]), rgb("#f08a24"))
    for a in np.linspace(0.25 * np.pi, 0.75 * np.pi, 5):
        x, y = 224 + 22 * np.cos(a), 174 + 14 * np.sin(a)
        c.paint(ellipse((x - 3, y - 3, x + 3, y + 3)), rgb("#1a1a1a"))
    # buttons
    for cy in (236, 262, 296, 330):
        c.paint(ellipse((218, cy - 6, 230, cy + 6)), rgb("#26262a"))
    return c.finish()


def nested_shapes() -> Image.Image:
    # a woven-looking background: two soft stripe patterns and noise
    stripes = 0.5 + 0.5 * np.sin((_XX + _YY) / 9.0) * np.sin((_XX - _YY) / 9.0)
    bg = rgb("#efe6d6")[None, None, :] * (0.93 + 0.07 * stripes[..., None])
    c = Canvas(bg, seed=5)
    c.paint(np.ones((BIG, BIG, 1), np.float32), bg, texture=0.04, cells=30)
    # group 1: circle > square > triangle > dot
    outer = ellipse((30, 30, 230, 230))
    c.shadow(outer, offset=(5, 6), blur=5, alpha=0.25)
    c.paint(outer, radial(130, 130, 100, rgb("#2f7f8f"), 0.3), texture=0.06, cells=40)
    sq = rect((72, 72, 188, 188), radius=8)
    c.paint(sq, rgb("#f2c14e"), texture=0.05)
    tri = polygon([(130, 86), (180, 172), (80, 172)])
    c.paint(tri, rgb("#e4572e"), texture=0.05)
    c.paint(ellipse((118, 130, 142, 154)), rgb("#fafafa"))
    # group 2: square > circles (a flower of parts)
    sq2 = rect((250, 40, 418, 208), radius=18)
    c.shadow(sq2, offset=(5, 6), blur=5, alpha=0.25)
    c.paint(sq2, vertical(40, 208, rgb("#6a4c93"), rgb("#4b336b")), texture=0.05)
    for a in np.linspace(0, 2 * np.pi, 6, endpoint=False):
        x, y = 334 + 44 * np.cos(a), 124 + 44 * np.sin(a)
        c.paint(ellipse((x - 24, y - 24, x + 24, y + 24)), radial(x, y, 24, rgb("#f28fb3"), 0.4))
    c.paint(ellipse((312, 102, 356, 146)), radial(334, 124, 22, rgb("#ffd84d"), 0.5))
    # group 3: a big striped hexagon containing a ring of squares
    hexagon = [(224 + 150 * np.cos(a), 340 + 92 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    hexagon = [(float(x), float(y)) for x, y in hexagon]
    hx = polygon(hexagon)
    c.shadow(hx, offset=(5, 6), blur=5, alpha=0.25)
    band = (np.sin(_XX / 6.0) > 0).astype(np.float32)[..., None]
    c.paint(hx, rgb("#8cc084") * (0.9 + 0.1 * band), texture=0.05)
    inner = ellipse((150, 286, 298, 394))
    c.paint(inner, rgb("#3b8f4a"), texture=0.06)
    for i, x in enumerate((178, 212, 246)):
        col = (rgb("#fafafa"), rgb("#f2c14e"), rgb("#e4572e"))[i]
        c.paint(rect((x - 14, 326, x + 14, 354), radius=3), col)
    return c.finish()


# photos: two CC BY 2.0 photos that scikit-learn ships (credits in assets/CREDITS.md)

PHOTOS = {"china": "china_photo.jpg", "flower": "flower_photo.jpg"}


def sklearn_photo_dir() -> Path | None:
    """sklearn/datasets/images/ of the installed scikit-learn, found without importing it; None if absent."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images"
    return folder if folder.is_dir() else None


def photo(src: Path) -> Image.Image:
    """Centre-crop a photo to a square and resize it to SIZE x SIZE."""
    with Image.open(src) as img:
        img = img.convert("RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return img.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)


SCENES = {
    "face": face,
    "house": house,
    "car": car,
    "snowman": snowman,
    "nested_shapes": nested_shapes,
}


def main(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in SCENES.items():
        path = out_dir / f"{name}.png"
        draw().save(path, optimize=True)
        written.append(path)
        print(f"{path}  {path.stat().st_size / 1024:.0f} KB")
    folder = sklearn_photo_dir()
    if folder is None:
        print("scikit-learn is not installed: the two photos were not (re)made")
        return written
    for stem, name in PHOTOS.items():
        path = out_dir / name
        photo(folder / f"{stem}.jpg").save(path, quality=90, optimize=True)
        written.append(path)
        print(f"{path}  {path.stat().st_size / 1024:.0f} KB")
    return written


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "examples")
