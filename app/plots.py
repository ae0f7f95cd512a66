"""Plotly figures and small image helpers for the panels. Arrays in, figures or uint8 images out.

Figures are written as plain plotly JSON dicts and handed to Gradio as `PlotData`: building
`plotly.graph_objects` figures validates every property and cost ~0.2 s per frame, more than a
training burst between two frames.
"""

from __future__ import annotations

import numpy as np
import orjson
from gradio.components.plot import PlotData

from apm.islands import Projection

PANEL_PX = 256  # images are enlarged (nearest neighbour) to about this size so each location is a visible cell
FONT = {"family": "Inter, system-ui, sans-serif", "size": 12}
MARGIN = {"l": 40, "r": 10, "t": 40, "b": 36}
CONFIG = {"displaylogo": False, "responsive": True}
# plotly.js knows only a few colourscales by name; this one is spelled out (red: low, green: high)
RED_YELLOW_GREEN = [[0.0, "#d73027"], [0.25, "#fc8d59"], [0.5, "#fee08b"], [0.75, "#91cf60"], [1.0, "#1a9850"]]


def figure(data: list[dict], layout: dict) -> PlotData:
    """A plotly figure from plain dicts (numpy arrays allowed), ready for `gr.Plot`."""
    payload = {"data": data, "layout": {"font": FONT, "margin": MARGIN, **layout}, "config": CONFIG}
    return PlotData(type="plotly", plot=orjson.dumps(payload, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode())


def _json_default(obj):
    if isinstance(obj, np.ndarray):  # orjson serialises only C-contiguous arrays natively
        return np.ascontiguousarray(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def figure_dict(plot: PlotData) -> dict:
    """The JSON dict behind a figure (for tests and exports)."""
    return orjson.loads(plot.plot)


# images


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) float in [0, 1] -> uint8."""
    return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def enlarge(image: np.ndarray, size: int = PANEL_PX) -> np.ndarray:
    """Nearest-neighbour enlargement of an (h, w, 3) grid image so its cells stay crisp."""
    image = to_uint8(image) if image.dtype != np.uint8 else image
    h, w = image.shape[:2]
    k = max(1, size // max(h, w))
    return np.repeat(np.repeat(image, k, axis=0), k, axis=1)


def colormap(values: np.ndarray, vmin: float = -1.0, vmax: float = 1.0) -> np.ndarray:
    """(h, w) values -> (h, w, 3) float colours on a red-yellow-green ramp (red: low, green: high)."""
    stops = np.array([[0.84, 0.19, 0.15], [0.99, 0.88, 0.55], [0.10, 0.60, 0.31]], dtype=np.float32)
    t = np.clip((np.nan_to_num(values) - vmin) / (vmax - vmin), 0.0, 1.0) * 2.0
    lower = np.minimum(t.astype(int), 1)
    frac = (t - lower)[..., None]
    return stops[lower] * (1 - frac) + stops[lower + 1] * frac


def filter_image(weight: np.ndarray) -> np.ndarray:
    """Conv filter weights (C, 3, p, p) -> (p, p, 3) in [0, 1], the first channel, contrast-stretched."""
    w = weight[0].transpose(1, 2, 0)  # (p, p, 3)
    lo, hi = float(w.min()), float(w.max())
    return (w - lo) / (hi - lo) if hi > lo else np.full_like(w, 0.5)


# figures


def _rgb_strings(colours: np.ndarray) -> list[str]:
    return [f"rgb({r},{g},{b})" for r, g, b in to_uint8(colours).tolist()]


def _hidden_axis() -> dict:
    return {"showticklabels": False, "zeroline": False, "showgrid": False, "title": {"text": ""}}


def islands_scatter(projection: Projection | None, title: str = "Islands") -> PlotData:
    """Each location is a point at its t-SNE / PCA embedding, coloured by its island colour."""
    layout = {"title": {"text": title}, "height": 420, "showlegend": False, "plot_bgcolor": "#fafafa"}
    if projection is None:
        layout.update(xaxis={"visible": False}, yaxis={"visible": False}, annotations=[
            {"text": "press Run to watch islands form", "showarrow": False, "font": {"size": 14, "color": "#888"}}])
        return figure([], layout)
    h, w = projection.grid_shape
    ii, jj = np.divmod(np.arange(h * w), w)
    emb = projection.embedding.astype(np.float32)
    trace = {
        "mode": "markers",
        "customdata": np.stack([ii, jj], axis=1),
        "hovertemplate": "location (i, j) = (%{customdata[0]}, %{customdata[1]})<extra></extra>",
        "marker": {"color": _rgb_strings(projection.colours), "line": {"width": 0}},
    }
    # a constant uirevision keeps the user's zoom and 3D camera across live updates
    layout["uirevision"] = f"islands-{projection.dim}"
    if projection.dim >= 3:
        trace.update(type="scatter3d", x=emb[:, 0], y=emb[:, 1], z=emb[:, 2])
        trace["marker"]["size"] = 4
        layout["scene"] = {"xaxis": _hidden_axis(), "yaxis": _hidden_axis(), "zaxis": _hidden_axis(), "aspectmode": "cube"}
    else:
        trace.update(type="scattergl", x=emb[:, 0], y=emb[:, 1] if projection.dim == 2 else np.zeros(len(emb)))
        trace["marker"]["size"] = 7 if h * w <= 400 else 5
        layout["xaxis"] = _hidden_axis()
        layout["yaxis"] = {**_hidden_axis(), **({"scaleanchor": "x"} if projection.dim == 2 else {})}
    return figure([trace], layout)


def _subplot_title(text: str, x: float) -> dict:
    return {"text": f"<b>{text}</b>", "x": x, "y": 1.0, "xref": "paper", "yref": "paper", "xanchor": "center",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 13}}


def loss_figure(
    steps: list[int], feat: list[float], rgb: list[float],
    island_steps: list[int], n_islands: list[int], n_connected: list[int], current_step: int | None = None,
) -> PlotData:
    """Loss curves (log scale) beside the whole-to-part curve (island count against step)."""
    data = [
        {"type": "scatter", "x": steps, "y": feat, "name": "feature loss", "line": {"color": "#1f77b4"}},
        {"type": "scatter", "x": steps, "y": rgb, "name": "RGB loss", "line": {"color": "#d62728"}},
        {"type": "scatter", "x": island_steps, "y": n_islands, "name": "feature clusters", "mode": "lines+markers",
         "line": {"color": "#2ca02c", "shape": "hv"}, "xaxis": "x2", "yaxis": "y2"},
        {"type": "scatter", "x": island_steps, "y": n_connected, "name": "connected islands", "mode": "lines+markers",
         "line": {"color": "#9467bd", "shape": "hv", "dash": "dot"}, "xaxis": "x2", "yaxis": "y2"},
    ]
    shapes = []
    if current_step is not None:
        for xref, yref in (("x", "y domain"), ("x2", "y2 domain")):
            shapes.append({"type": "line", "x0": current_step, "x1": current_step, "y0": 0, "y1": 1, "xref": xref,
                           "yref": yref, "line": {"color": "#888", "width": 1, "dash": "dash"}})
    layout = {
        "height": 300, "margin": {"l": 55, "r": 10, "t": 40, "b": 40}, "uirevision": "loss", "shapes": shapes,
        "legend": {"orientation": "h", "y": -0.3},
        "xaxis": {"domain": [0.0, 0.44], "title": {"text": "step"}},
        "yaxis": {"type": "log", "exponentformat": "e"},
        "xaxis2": {"domain": [0.56, 1.0], "title": {"text": "step"}, "anchor": "y2"},
        "yaxis2": {"anchor": "x2", "rangemode": "tozero"},
        "annotations": [_subplot_title("Loss (log scale)", 0.22), _subplot_title("Whole to part: islands", 0.78)],
    }
    return figure(data, layout)


def heatmap_figure(values: np.ndarray | None, title: str, zmin: float = -1.0, zmax: float = 1.0,
                   colorscale: str | list = RED_YELLOW_GREEN) -> PlotData:
    """An (h, w) map with (i, j) hover; rows top to bottom like the image."""
    data = []
    if values is not None:
        data.append({"type": "heatmap", "z": np.asarray(values, dtype=np.float32), "zmin": zmin, "zmax": zmax,
                     "colorscale": colorscale, "hovertemplate": "(i, j) = (%{y}, %{x}): %{z:.3f}<extra></extra>"})
    layout = {"title": {"text": title}, "height": 300,
              "xaxis": {"showticklabels": False, "constrain": "domain"},
              "yaxis": {"autorange": "reversed", "scaleanchor": "x", "showticklabels": False, "constrain": "domain"}}
    return figure(data, layout)


def unfolded_figure(trigger_column: np.ndarray, positional: np.ndarray, grid: tuple[int, int],
                    max_rows: int = 128, max_cols: int = 192) -> PlotData:
    """The unfolded state: the trigger column as an (h, w) map, and the (h*w, query_dim) query matrix.

    Every row of the query matrix is [the same trigger column | that location's positional code]; rows and
    columns are subsampled to keep the figure light.
    """
    h, w = grid
    column_map = trigger_column.reshape(-1, h, w)[0]  # first channel: (h, w)
    n, pos_dim = positional.shape
    rows = np.linspace(0, n - 1, min(n, max_rows)).round().astype(int)
    col_keep = np.linspace(0, trigger_column.size - 1, min(trigger_column.size, max_cols // 2)).round().astype(int)
    pos_keep = np.linspace(0, pos_dim - 1, min(pos_dim, max_cols // 2)).round().astype(int)
    col_part = np.broadcast_to(trigger_column[col_keep], (len(rows), len(col_keep)))
    scale = float(np.abs(col_part).max()) or 1.0
    matrix = np.concatenate([col_part / scale, positional[rows][:, pos_keep]], axis=1).astype(np.float32)  # (rows, cols)
    data = [
        {"type": "heatmap", "z": column_map.astype(np.float32), "colorscale": "Viridis", "showscale": False,
         "hovertemplate": "patch (%{y}, %{x}): %{z:.3f}<extra></extra>"},
        {"type": "heatmap", "z": matrix, "colorscale": "RdBu", "zmin": -1, "zmax": 1, "showscale": False,
         "xaxis": "x2", "yaxis": "y2", "hovertemplate": "location row %{y}, query dim %{x}<extra></extra>"},
    ]
    split = len(col_keep) - 0.5
    layout = {
        "height": 300, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "xaxis": {"domain": [0.0, 0.3], "showticklabels": False, "constrain": "domain"},
        "yaxis": {"autorange": "reversed", "showticklabels": False, "scaleanchor": "x", "constrain": "domain"},
        "xaxis2": {"domain": [0.36, 1.0], "showticklabels": False, "anchor": "y2"},
        "yaxis2": {"autorange": "reversed", "showticklabels": False, "anchor": "x2"},
        "shapes": [{"type": "line", "x0": split, "x1": split, "y0": 0, "y1": 1, "xref": "x2", "yref": "y2 domain",
                    "line": {"color": "black", "width": 2}}],
        "annotations": [_subplot_title("trigger column (one value per patch)", 0.15),
                        _subplot_title("unfolded queries: [column | position]", 0.68)],
    }
    return figure(data, layout)
