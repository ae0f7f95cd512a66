"""Pictures the page and the exports show: grid images enlarged crisply, colour ramps, a marked or lit location,
the conv filter, the zero-shot label bars. Pure numpy (and HTML text): no Gradio, so the run engine can use them.
"""

from __future__ import annotations

import numpy as np

PANEL_PX = 256  # exported images are enlarged (nearest neighbour) to about this size
FILTER_PX = 128  # the conv filter (p x p) is served at about this size: the page never scales an image up


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) float in [0, 1] -> uint8."""
    return (np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def enlarge(image: np.ndarray, size: int = PANEL_PX) -> np.ndarray:
    """Nearest-neighbour enlargement of an (h, w, 3) grid image so its cells stay crisp."""
    image = to_uint8(image) if image.dtype != np.uint8 else image
    h, w = image.shape[:2]
    k = max(1, size // max(h, w))
    return np.repeat(np.repeat(image, k, axis=0), k, axis=1)


GRID_PX = 256  # grid images are served at about this size: the browser maps a click on them to a location


def grid_image(image: np.ndarray) -> np.ndarray:
    """A grid image (h, w, 3) as the page shows it: enlarged with nearest neighbour to about GRID_PX a side, so
    it is never drawn larger than its own pixels (Gradio maps clicks in the image's own pixels)."""
    return enlarge(image, GRID_PX)


def colormap(values: np.ndarray, vmin: float = -1.0, vmax: float = 1.0) -> np.ndarray:
    """(h, w) values -> (h, w, 3) float colours on a red-yellow-green ramp (red: low, green: high)."""
    stops = np.array([[0.84, 0.19, 0.15], [0.99, 0.88, 0.55], [0.10, 0.60, 0.31]], dtype=np.float32)
    t = np.clip((np.nan_to_num(values) - vmin) / (vmax - vmin), 0.0, 1.0) * 2.0
    lower = np.minimum(t.astype(int), 1)
    frac = (t - lower)[..., None]
    return stops[lower] * (1 - frac) + stops[lower + 1] * frac


def filter_image(weight: np.ndarray) -> np.ndarray:
    """Conv filter weights (C, 3, p, p) -> about FILTER_PX x FILTER_PX x 3 uint8: the first channel,
    contrast-stretched, enlarged with nearest neighbour (a p x p image would be drawn at p pixels: a dot)."""
    w = np.asarray(weight)[0].transpose(1, 2, 0)  # (p, p, 3)
    lo, hi = float(w.min()), float(w.max())
    return enlarge((w - lo) / (hi - lo) if hi > lo else np.full_like(w, 0.5), FILTER_PX)


def mark(image: np.ndarray, location: tuple[int, int] | None) -> np.ndarray:
    """A grid image (h, w, 3) with one location outlined (for 'point at a location'), as `grid_image` enlarges."""
    big = grid_image(image)
    if location is None:
        return big
    k = big.shape[0] // image.shape[0]
    i, j = location
    y0, x0 = i * k, j * k
    out = big.copy()
    for t in range(max(1, k // 6)):  # a ring, white outside, black inside, visible on any colour
        for colour, d in (((255, 255, 255), t), ((0, 0, 0), t + max(1, k // 6))):
            y1, y2, x1, x2 = y0 + d, y0 + k - 1 - d, x0 + d, x0 + k - 1 - d
            if y2 <= y1 or x2 <= x1:
                continue
            out[y1, x1:x2 + 1] = colour
            out[y2, x1:x2 + 1] = colour
            out[y1:y2 + 1, x1] = colour
            out[y1:y2 + 1, x2] = colour
    return out


def highlight(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A grid image (h, w, 3) with the locations outside `mask` (h, w) dimmed, as `grid_image` enlarges."""
    picture = np.asarray(image, dtype=np.float32) if np.asarray(image).dtype != np.uint8 else image / 255.0
    lit = np.where(np.asarray(mask, dtype=bool)[..., None], picture, 0.25 * picture + 0.6)
    return grid_image(lit)


# zero-shot labels

def labels_html(pairs: list[tuple[str, float]] | None, title: str, empty: str = "none yet") -> str:
    """Top-k (label, probability) as a titled list of bars (HTML, escaped)."""
    import html

    rows = []
    for label, p in pairs or []:
        pct = max(0.0, min(100.0, 100.0 * float(p)))
        rows.append(f"<div class='apm-label-row'><span class='apm-label-name'>{html.escape(label)}</span>"
                    f"<span class='apm-label-bar'><span style='width:{pct:.1f}%'></span></span>"
                    f"<span class='apm-label-p'>{pct:.0f}%</span></div>")
    body = "".join(rows) or f"<div class='apm-caption'>{html.escape(empty)}</div>"
    return f"<div class='apm-labels'><div class='apm-labels-title'>{html.escape(title)}</div>{body}</div>"
