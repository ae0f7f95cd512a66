"""Every figure of the app, and the small image helpers: arrays in, plotly figures or uint8 images out.

Figures are plain plotly JSON dicts handed to Gradio as `PlotData`: building `plotly.graph_objects` figures
validates every property and cost ~0.2 s per frame, more than a training burst between two frames.
Titles are short and axes use automargins, so the figures stay legible on a 390 px phone. Scatters with few
points are SVG (`scatter`): browsers keep only a few WebGL contexts per page, and a live run would use them up.
"""

from __future__ import annotations

import numpy as np
import orjson
from gradio.components.plot import PlotData

from apm.islands import Projection

# pictures (no Gradio) live in app/pictures.py; imported here so every figure and picture is one `plots.` away
from .pictures import (  # noqa: F401
    GRID_PX,
    PANEL_PX,
    colormap,
    enlarge,
    filter_image,
    grid_image,
    highlight,
    labels_html,
    mark,
    to_uint8,
)

FONT = {"family": "Inter, system-ui, sans-serif", "size": 12}
MARGIN = {"l": 10, "r": 10, "t": 36, "b": 10}
CONFIG = {"displaylogo": False, "responsive": True}
WEBGL_ABOVE = 4000  # points; below this a scatter is drawn as SVG
# plotly.js knows only a few colourscales by name; this one is spelled out (red: low, green: high)
RED_YELLOW_GREEN = [[0.0, "#d73027"], [0.25, "#fc8d59"], [0.5, "#fee08b"], [0.75, "#91cf60"], [1.0, "#1a9850"]]
BLUE_WHITE_RED = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#b2182b"]]


def figure(data: list[dict], layout: dict) -> PlotData:
    """A plotly figure from plain dicts (numpy arrays allowed), ready for `gr.Plot`."""
    payload = {"data": data, "layout": {"font": FONT, "margin": MARGIN, "autosize": True, **layout}, "config": CONFIG}
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


def _title(text: str, sub: str | None = None) -> dict:
    return {"text": text + (f"<br><sup>{sub}</sup>" if sub else ""), "x": 0.02, "xanchor": "left", "font": {"size": 14}}


def placeholder(title: str, text: str, height: int = 340) -> PlotData:
    """An empty figure with a hint in the middle, for panels that have nothing to show yet."""
    layout = {"title": _title(title), "height": height, "showlegend": False, "plot_bgcolor": "#fafafa",
              "xaxis": {"visible": False}, "yaxis": {"visible": False},
              "annotations": [{"text": text, "showarrow": False, "font": {"size": 13, "color": "#888"}}]}
    return figure([], layout)


# islands

def _rgb_strings(colours: np.ndarray) -> list[str]:
    return [f"rgb({r},{g},{b})" for r, g, b in to_uint8(colours).tolist()]


def _hidden_axis() -> dict:
    return {"showticklabels": False, "zeroline": False, "showgrid": False, "title": {"text": ""}}


def islands_scatter(projection: Projection | None, step: int | None = None) -> PlotData:
    """Each location is a point at its t-SNE / PCA embedding, coloured by its island colour."""
    title = "Islands" if step is None else f"Islands · step {step}"
    layout = {"title": _title(title, "one point per location"), "height": 400, "showlegend": False,
              "plot_bgcolor": "#fafafa", "margin": {"l": 10, "r": 10, "t": 50, "b": 10}}
    if projection is None:
        layout.update(xaxis={"visible": False}, yaxis={"visible": False}, annotations=[
            {"text": "press Run to watch islands form", "showarrow": False, "font": {"size": 13, "color": "#888"}}])
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
        trace["marker"]["size"] = 4 if h * w <= 1200 else 2
        layout["scene"] = {"xaxis": _hidden_axis(), "yaxis": _hidden_axis(), "zaxis": _hidden_axis(), "aspectmode": "cube"}
    else:
        trace.update(type="scattergl" if h * w > WEBGL_ABOVE else "scatter",
                     x=emb[:, 0], y=emb[:, 1] if projection.dim == 2 else np.zeros(len(emb)))
        trace["marker"]["size"] = 7 if h * w <= 400 else 4
        layout["xaxis"] = _hidden_axis()
        layout["yaxis"] = {**_hidden_axis(), **({"scaleanchor": "x"} if projection.dim == 2 else {})}
    return figure([trace], layout)


def loss_figure(
    steps: np.ndarray, feat: np.ndarray, rgb: np.ndarray, island_steps: list[int], n_islands: list[int],
    n_connected: list[int], current_step: int | None = None, global_only: bool = False,
    cka: list[float | None] | None = None,
) -> PlotData:
    """Loss curves (log scale) above the whole-to-part curve (island count against step); `cka`, one value per
    island step, adds the CKA to the teacher on a 0-1 axis at the right of the lower panel."""
    feat_name = "global (CLS) loss" if global_only else "feature loss"
    data = [
        {"type": "scatter", "x": steps, "y": feat, "name": feat_name, "line": {"color": "#1f77b4"}},
        {"type": "scatter", "x": island_steps, "y": n_islands, "name": "feature clusters", "mode": "lines+markers",
         "line": {"color": "#2ca02c", "shape": "hv"}, "xaxis": "x2", "yaxis": "y2"},
        {"type": "scatter", "x": island_steps, "y": n_connected, "name": "connected islands", "mode": "lines+markers",
         "line": {"color": "#9467bd", "shape": "hv", "dash": "dot"}, "xaxis": "x2", "yaxis": "y2"},
    ]
    if cka is not None and any(v is not None for v in cka):
        data.append({"type": "scatter", "x": island_steps, "y": [None if v is None else float(v) for v in cka],
                     "name": "CKA to teacher", "mode": "lines+markers", "line": {"color": "#ff7f0e"},
                     "xaxis": "x2", "yaxis": "y3"})
    if rgb is not None and len(rgb) and np.any(np.asarray(rgb) > 0):
        data.insert(1, {"type": "scatter", "x": steps, "y": rgb, "name": "RGB loss", "line": {"color": "#d62728"}})
    shapes = []
    if current_step is not None:
        for xref, yref in (("x", "y domain"), ("x2", "y2 domain")):
            shapes.append({"type": "line", "x0": current_step, "x1": current_step, "y0": 0, "y1": 1, "xref": xref,
                           "yref": yref, "line": {"color": "#888", "width": 1, "dash": "dash"}})
    layout = {  # two stacked panels: each keeps the full width on a phone
        "height": 420, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "uirevision": "loss", "shapes": shapes,
        "title": _title("Loss (log) and whole to part"),
        "legend": {"orientation": "h", "x": 0, "y": -0.12, "yanchor": "top"},
        "xaxis": {"domain": [0, 1], "anchor": "y", "showticklabels": False, "automargin": True},
        "yaxis": {"domain": [0.56, 1.0], "type": "log", "exponentformat": "e", "automargin": True,
                  "title": {"text": "loss"}},
        "xaxis2": {"domain": [0, 1], "anchor": "y2", "matches": "x", "automargin": True,
                   "title": {"text": "step", "standoff": 4}},
        "yaxis2": {"domain": [0.0, 0.44], "anchor": "x2", "rangemode": "tozero", "automargin": True,
                   "title": {"text": "islands"}},
        "yaxis3": {"overlaying": "y2", "side": "right", "range": [0, 1.05], "anchor": "x2", "automargin": True,
                   "title": {"text": "CKA"}, "showgrid": False},
    }
    return figure(data, layout)


def heatmap_figure(values: np.ndarray | None, title: str, zmin: float = -1.0, zmax: float = 1.0,
                   colorscale: str | list = RED_YELLOW_GREEN, sub: str | None = None, height: int = 320,
                   mark_at: tuple[int, int] | None = None) -> PlotData:
    """An (h, w) map with (i, j) hover; rows top to bottom like the image; `mark_at` outlines one location."""
    data = []
    if values is not None:
        data.append({"type": "heatmap", "z": np.asarray(values, dtype=np.float32), "zmin": zmin, "zmax": zmax,
                     "colorscale": colorscale, "colorbar": {"thickness": 10, "len": 0.8},
                     "hovertemplate": "(i, j) = (%{y}, %{x}): %{z:.3f}<extra></extra>"})
    shapes = []
    if mark_at is not None:
        i, j = mark_at
        shapes.append({"type": "rect", "x0": j - 0.5, "x1": j + 0.5, "y0": i - 0.5, "y1": i + 0.5,
                       "line": {"color": "black", "width": 2}})
    layout = {"title": _title(title, sub), "height": height, "shapes": shapes,
              "margin": {"l": 10, "r": 10, "t": 50 if sub else 36, "b": 10},
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
        "height": 320, "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
        "title": _title("Unfolded state", "left: trigger column · right: queries [column | position]"),
        "xaxis": {"domain": [0.0, 0.3], "showticklabels": False, "constrain": "domain"},
        "yaxis": {"autorange": "reversed", "showticklabels": False, "scaleanchor": "x", "constrain": "domain"},
        "xaxis2": {"domain": [0.36, 1.0], "showticklabels": False, "anchor": "y2"},
        "yaxis2": {"autorange": "reversed", "showticklabels": False, "anchor": "x2"},
        "shapes": [{"type": "line", "x0": split, "x1": split, "y0": 0, "y1": 1, "xref": "x2", "yref": "y2 domain",
                    "line": {"color": "black", "width": 2}}],
    }
    return figure(data, layout)


# the interpolation walk

WALK_SCATTER_TITLE = "Islands along the walk"
WALK_LOSS_TITLE = "Training on both images"


def walk_scatter(embedding: np.ndarray, colours: np.ndarray, index: int, grid: tuple[int, int]) -> PlotData:
    """Every location of every frame in grey, the current frame's locations in their island colours."""
    F, n, k = embedding.shape
    emb = embedding.astype(np.float32)
    everything = emb.reshape(F * n, k)
    current = emb[index]
    _, w = grid
    ii, jj = np.divmod(np.arange(n), w)
    kind = "scattergl" if F * n > WEBGL_ABOVE else "scatter"
    ys = (lambda e: e[:, 1]) if k > 1 else (lambda e: np.zeros(len(e)))
    data = [
        {"type": kind, "x": everything[:, 0], "y": ys(everything), "mode": "markers", "hoverinfo": "skip",
         "marker": {"size": 4, "color": "rgba(160,160,160,0.25)"}},
        {"type": kind, "x": current[:, 0], "y": ys(current), "mode": "markers",
         "marker": {"size": 7 if n <= 400 else 5, "color": _rgb_strings(colours[index]), "line": {"width": 0}},
         "customdata": np.stack([ii, jj], axis=1),
         "hovertemplate": "location (i, j) = (%{customdata[0]}, %{customdata[1]})<extra></extra>"},
    ]
    axis = {"showticklabels": False, "zeroline": False, "showgrid": False}
    layout = {"title": _title(WALK_SCATTER_TITLE, "one projection for all frames: colours agree"), "height": 380,
              "showlegend": False, "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
              "xaxis": axis, "yaxis": {**axis, "scaleanchor": "x"}, "uirevision": "walk", "plot_bgcolor": "#fafafa"}
    return figure(data, layout)


def walk_loss(steps: np.ndarray, feat: np.ndarray, rgb: np.ndarray) -> PlotData:
    """Feature and RGB losses against step: the joint loss over both images."""
    if not len(steps):
        return placeholder(WALK_LOSS_TITLE, "the losses appear here<br>while the APM trains", height=380)
    data = [
        {"type": "scatter", "x": steps, "y": feat, "name": "feature loss", "line": {"color": "#1f77b4"}},
        {"type": "scatter", "x": steps, "y": rgb, "name": "RGB loss", "line": {"color": "#d62728"}},
    ]
    layout = {"title": _title(WALK_LOSS_TITLE, "log scale"), "height": 380, "uirevision": "walk-loss",
              "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
              "legend": {"orientation": "h", "x": 0, "y": -0.25, "yanchor": "top"},
              "xaxis": {"title": {"text": "step"}, "automargin": True},
              "yaxis": {"type": "log", "exponentformat": "e", "automargin": True}}
    return figure(data, layout)


# part-whole structure

def tree_figure(tree, title: str = "Part-whole tree", sub: str | None = None, height: int = 300) -> PlotData:
    """The islands at coarse-to-fine levels as an icicle: each segment sits inside the island that holds it;
    widths are location counts; colours are the islands' mean colours in the islands image."""
    if tree is None or len(tree.nodes) <= 1:
        return placeholder(title, "appears when a run has a frame")
    colours = [("rgb(%d,%d,%d)" % tuple(int(255 * c + 0.5) for c in n.colour)) if n.colour else "#cccccc"
               for n in tree.nodes]
    data = [{
        "type": "icicle", "ids": [n.id for n in tree.nodes], "parents": [n.parent for n in tree.nodes],
        "labels": ["whole image" if n.level == 0 else f"{n.size}" for n in tree.nodes],
        "values": [n.size for n in tree.nodes], "branchvalues": "total",
        "marker": {"colors": colours, "line": {"color": "white", "width": 1}},
        "customdata": [n.level for n in tree.nodes],
        "hovertemplate": "level %{customdata}: %{value} locations<extra>%{id}</extra>",
        "tiling": {"orientation": "v"}, "sort": False,
    }]
    levels = " → ".join(str(k) for k in tree.levels)
    layout = {"title": _title(title, sub or f"islands of islands: at most {levels} islands, coarse to fine"),
              "height": height, "margin": {"l": 4, "r": 4, "t": 50, "b": 4}}
    return figure(data, layout)


def column_figure(levels: list[str], values: list[float] | None, title: str = "Its column across levels",
                  height: int = 240) -> PlotData:
    """How strongly one location agrees with its neighbours at each level (layer)."""
    if not values:
        return placeholder(title, "click a location on a grid image", height)
    data = [{"type": "scatter", "mode": "lines+markers", "x": levels, "y": values, "line": {"color": "#4c6ef5"},
             "hovertemplate": "%{x}: %{y:.2f}<extra></extra>"}]
    layout = {"title": _title(title, "mean cosine similarity to its 8 neighbours, per layer (L0 lowest)"),
              "height": height,
              "yaxis": {"range": [-1, 1.05], "title": {"text": "agreement"}}, "xaxis": {"type": "category"},
              "margin": {"l": 50, "r": 10, "t": 50, "b": 40}, "showlegend": False}
    return figure(data, layout)


COST_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf")


def cost_figure(apm_points: list, chunks: list[int], teacher_points: list, teacher_label: str) -> PlotData:
    """Time and peak memory against the number of locations (APM, one line per chunk size asked for) or patches
    (the teacher), both log-log, side by side; the points are `apm.cost.CostPoint`s (a chunk above n runs as n)."""
    data = []
    full = max((p.n for p in apm_points), default=0)
    for k, chunk in enumerate(sorted(chunks)):
        points = sorted((p for p in apm_points if p.chunk == chunk or (p.chunk == p.n and p.n < chunk)),
                        key=lambda p: p.n)
        name = "APM, all at once" if chunk == full else f"APM, chunks of {chunk}"
        style = {"color": COST_COLOURS[k % len(COST_COLOURS)]}
        for axis, key in (("", "seconds"), ("2", "peak_mb")):
            data.append({"type": "scatter", "mode": "lines+markers", "x": [p.n for p in points],
                         "y": [p.seconds * 1e3 if key == "seconds" else p.peak_mb for p in points], "name": name,
                         "legendgroup": name, "showlegend": axis == "", "line": style,
                         "xaxis": f"x{axis}", "yaxis": f"y{axis}"})
    teacher = sorted(teacher_points, key=lambda p: p.n)
    for axis, key in (("", "seconds"), ("2", "peak_mb")):
        data.append({"type": "scatter", "mode": "lines+markers", "x": [p.n for p in teacher],
                     "y": [p.seconds * 1e3 if key == "seconds" else p.peak_mb for p in teacher],
                     "name": f"teacher: {teacher_label}", "legendgroup": "teacher", "showlegend": axis == "",
                     "line": {"color": "#d62728", "dash": "dash"}, "xaxis": f"x{axis}", "yaxis": f"y{axis}"})
    log_axis = {"type": "log", "automargin": True}
    layout = {
        "height": 420, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "title": _title("Cost against the teacher"),
        "legend": {"orientation": "h", "x": 0, "y": -0.28, "yanchor": "top"},
        "xaxis": {**log_axis, "domain": [0, 0.45], "title": {"text": "locations / patches"}},
        "yaxis": {**log_axis, "title": {"text": "time (ms)"}},
        "xaxis2": {**log_axis, "domain": [0.55, 1], "anchor": "y2", "title": {"text": "locations / patches"}},
        "yaxis2": {**log_axis, "anchor": "x2", "title": {"text": "peak memory (MB)"}},
    }
    return figure(data, layout)
