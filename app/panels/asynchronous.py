"""Asynchronous perception: decode the run's APM at any locations, in any order, in chunks of any size, and watch
the grid fill in; then what decoding costs against the teacher, measured here.

Each decoded location is coloured by its RGB head, or by the islands view: the island colour of the location whose
one-pass feature is nearest to the decoded one (so a location that decoded differently would show another colour).
The readout gives the largest difference it measured between the decoded features and one full pass.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import gradio as gr
import numpy as np
import torch

from apm.asynchronous import Decoder, Partial, check_chunk, decode_order, largest_difference, rectangle
from apm.cost import apm_costs, memory_crossover, teacher_architecture, teacher_costs
from apm.errors import APMError, InputError

from .. import engine, plots
from ..session import RunRecord, Session
from ..widgets import LIMITS, guarded, session_for, user_message
from .base import Panel

log = logging.getLogger("apm.app")

ORDER_CHOICES = [("random order", "random"), ("row by row", "row"), ("clicked locations", "click"),
                 ("a rectangle: two clicks", "rectangle")]
COLOUR_CHOICES = [("islands view", "islands"), ("RGB head", "rgb")]
EMPTY = np.array([0.92, 0.92, 0.92], np.float32)  # a location not decoded yet
FILL_FRAMES = 24  # a decoding is shown filling in over at most this many pictures
FILL_PAUSE_S = 0.06  # between them (the decoding itself is timed without the pauses)
SAME_GRID = 1e-5  # the largest difference (fp32, the APM's units) still called the same grid
COST_CHUNKS = (8, 64)  # the cost plot's chunk sizes, beside decoding everything at once
GRID_IMAGE = {"interactive": False, "height": 256, "min_width": 200, "format": "png", "buttons": []}

_teachers: dict[str, tuple] = {}  # the last teacher architecture measured (one at a time: ViT-L is 1.2 GB)
_teachers_lock = threading.Lock()


@dataclass(frozen=True)
class Decoding:
    """One run's partly decoded grid, as the panel shows it."""

    run_id: int
    decoder: Decoder
    full: np.ndarray  # (h, w, d) one full pass, the reference
    full_rgb: np.ndarray  # (h, w, 3)
    islands: np.ndarray  # (h, w, 3) the island colours of the run's last frame
    partial: Partial
    corner: tuple[int, int] | None = None  # the first click of a rectangle
    seed: int = 0  # random orders so far (each Decode draws a new one)


def _box(text: str, kind: str = "") -> str:
    return f"<div class='apm-content {kind}'><div class='apm-content-sentence'>{html.escape(text)}</div></div>"


def picture(decoding: Decoding, colour: str, mark_at: tuple[int, int] | None = None) -> np.ndarray:
    """The grid as decoded so far: each decoded location's colour, the rest light grey."""
    partial = decoding.partial
    h, w = partial.mask.shape
    image = np.broadcast_to(EMPTY, (h, w, 3)).copy()
    if partial.mask.any():
        where = np.argwhere(partial.mask)
        if colour == "rgb":
            image[partial.mask] = np.clip(partial.rgb[partial.mask], 0, 1)
        else:  # the island colour of the nearest one-pass feature
            # in torch, the decoding's own thread pool (numpy's OpenBLAS threads would spin against it)
            ref = torch.from_numpy(decoding.full.reshape(h * w, -1))  # (h*w, d)
            got = torch.from_numpy(partial.features[partial.mask])  # (k, d)
            nearest = torch.cdist(got, ref).argmin(dim=1).numpy()  # (k,)
            image[where[:, 0], where[:, 1]] = decoding.islands.reshape(h * w, 3)[nearest]
    return plots.mark(image, mark_at) if mark_at is not None else plots.grid_image(image)


def readout(decoding: Decoding, what: str) -> str:
    partial = decoding.partial
    n, total = int(partial.mask.sum()), partial.mask.size
    if n == 0:
        return _box("Nothing decoded yet: pick an order and press Decode, or click the grid.")
    diff = largest_difference(partial, decoding.full, decoding.decoder.scale)
    same = (f"the same grid as one full pass (largest difference {diff:.1e}, fp32, in the APM's units)"
            if diff <= SAME_GRID else f"NOT the same as one full pass: largest difference {diff:.1e}")
    return _box(f"{what}. {n} of {total} locations decoded in {partial.chunks} chunks, "
                f"{partial.seconds * 1e3:.1f} ms of decoding: {same}.", "apm-done" if diff <= SAME_GRID else "apm-error")


class AsynchronousPanel(Panel):
    name = "asynchronous"

    def build(self, tab) -> None:
        with gr.Accordion("Asynchronous perception: decode any locations, in any order", open=False,
                          elem_id="asynchronous"):
            gr.Markdown("Every location is decoded from its own query (the trigger column and its position), so the "
                        "order and the chunk size cannot change what it decodes to. Decode the grid in an order, or "
                        "click locations (or two corners of a rectangle) on the grid below.",
                        elem_classes=["apm-hint"])
            with gr.Row(equal_height=False):
                self.order = gr.Radio(ORDER_CHOICES, value="random", label="Decode", elem_id="async-order", scale=3)
                self.chunk = gr.Number(16, label="Chunk (locations at a time)", precision=0, minimum=1,
                                       maximum=4096, elem_id="async-chunk", scale=1, min_width=120)
                self.colour = gr.Radio(COLOUR_CHOICES, value="islands", label="Colour by", elem_id="async-colour",
                                       scale=2)
            with gr.Row():
                self.decode_btn = gr.Button("Decode", elem_id="async-decode", variant="secondary")
                self.clear_btn = gr.Button("Clear", elem_id="async-clear")
            with gr.Row(equal_height=False):
                self.grid = gr.Image(label="Decoded so far", elem_id="async-grid", **GRID_IMAGE)
                self.summary = gr.HTML(_box("Run an experiment (or pick a trained APM), then decode it here."),
                                       elem_id="async-readout", min_width=260)
            with gr.Row(equal_height=False):
                self.measure_btn = gr.Button("Measure the cost against the teacher", elem_id="async-measure")
            self.cost = gr.Plot(plots.placeholder("Cost against the teacher", "press Measure: time and peak memory "
                                                  "of decoding n locations, and of the teacher at n patches"),
                                label="Cost", elem_id="async-cost")
            self.table = gr.HTML("", elem_id="async-table")

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.grid, self.summary, self.cost, self.table]

    @property
    def frame_outputs(self) -> list[gr.Component]:
        return []  # drawn by its own events, from the run on the page

    def wire(self, tab) -> None:
        view = {"concurrency_limit": 4, "concurrency_id": "view", "show_progress": "hidden"}
        shown = [self.grid, self.summary]
        self.decode_btn.click(self.on_decode, [self.order, self.chunk, self.colour], shown, **view,
                              **tab.private("async_decode"))
        self.grid.select(self.on_click, [self.order, self.chunk, self.colour], shown, **view,
                         trigger_mode="always_last", **tab.private("async_click"))
        self.clear_btn.click(self.on_clear, [self.colour], shown, **view, **tab.private("async_clear"))
        self.order.change(self.on_order, [self.order, self.colour], shown, **view, **tab.private("async_order"))
        self.colour.change(self.on_colour, [self.colour], [self.grid], **view, **tab.private("async_colour"))
        self.measure_btn.click(self.on_measure, None, [self.cost, self.table, self.summary],
                               concurrency_limit=LIMITS.max_concurrent_runs, concurrency_id="train",
                               show_progress="hidden", **tab.private("async_cost"))

    def reset(self, record: RunRecord) -> dict:
        return {self.grid: None, self.summary: _box("Decode this run's APM here once it has finished."),
                self.table: ""}

    # state

    def decoding(self, session: Session) -> Decoding:
        """The page's run, ready to decode (built once per run: the reference pass and the island colours)."""
        state = session.islands
        record = state.run
        decoder = engine.decoder_for(record)  # a clear line when there is nothing to decode yet
        current = state.decoding
        if current is not None and current.run_id == record.run_id and current.decoder is decoder:
            return current
        full, full_rgb = decoder.full()
        frame = state.frame_in_view(len(record.frames) - 1)
        islands = np.asarray(frame.projection.image, np.float32)
        if islands.shape[:2] != full.shape[:2]:
            islands = full_rgb
        state.decoding = Decoding(record.run_id, decoder, full, full_rgb, islands, decoder.empty())
        return state.decoding

    # events

    @guarded("the asynchronous panel")
    def on_decode(self, order: str, chunk, colour: str, request: gr.Request = None) -> Iterator[dict]:
        session = session_for(request)
        decoding = self.decoding(session)
        if order in ("click", "rectangle"):
            yield self.on_order(order, colour, request)
            return
        seed = decoding.seed + (order == "random")
        locations = decode_order(decoding.decoder.grid, order, seed)
        start = replace(decoding, partial=decoding.decoder.empty(), corner=None, seed=seed)
        how = f"random order (seed {seed})" if order == "random" else "row by row"
        yield from self._fill(session, start, locations, chunk, colour, f"The whole grid, {how}")

    @guarded("the asynchronous panel")
    def on_click(self, order: str, chunk, colour: str, evt: gr.SelectData, request: gr.Request = None) -> Iterator[dict]:
        session = session_for(request)
        decoding = self.decoding(session)
        h, w = decoding.decoder.grid
        size = plots.grid_image(np.zeros((h, w, 3), np.float32)).shape
        x, y = evt.index[0], evt.index[1]
        spot = (min(h - 1, max(0, int(y * h / size[0]))), min(w - 1, max(0, int(x * w / size[1]))))
        if order == "rectangle":
            if decoding.corner is None:
                session.islands.decoding = replace(decoding, corner=spot)
                yield {self.grid: picture(decoding, colour, mark_at=spot),
                       self.summary: _box(f"corner {spot}: now click the opposite corner")}
                return
            corner, decoding = decoding.corner, replace(decoding, corner=None)
            yield from self._fill(session, decoding, rectangle(corner, spot), chunk, colour,
                                  f"The rectangle {corner} to {spot} ({len(rectangle(corner, spot))} locations)")
            return
        if order != "click":
            yield {self.summary: _box("pick 'clicked locations' or 'a rectangle' above to decode where you click")}
            return
        yield from self._fill(session, decoding, np.array([spot]), 1, colour, f"Location {spot}")

    @guarded("the asynchronous panel")
    def on_order(self, order: str, colour: str, request: gr.Request = None) -> dict:
        """Clicked locations or a rectangle: the grid to click on, as decoded so far."""
        if order not in ("click", "rectangle"):
            return {self.summary: gr.skip()}
        decoding = self.decoding(session_for(request))
        what = "a location" if order == "click" else "two opposite corners of a rectangle"
        return {self.grid: picture(decoding, colour), self.summary: _box(f"click {what} on the grid to decode there")}

    @guarded("the asynchronous panel")
    def on_clear(self, colour: str, request: gr.Request = None) -> dict:
        session = session_for(request)
        decoding = self.decoding(session)
        session.islands.decoding = replace(decoding, partial=decoding.decoder.empty(), corner=None)
        return {self.grid: picture(session.islands.decoding, colour), self.summary: readout(session.islands.decoding, "")}

    def on_colour(self, colour: str, request: gr.Request = None) -> dict:
        decoding = session_for(request).islands.decoding
        return {self.grid: picture(decoding, colour) if decoding is not None else gr.skip()}

    def _fill(self, session: Session, decoding: Decoding, locations: np.ndarray, chunk, colour: str,
              what: str) -> Iterator[dict]:
        """Decode `locations` chunk by chunk, then show the grid filling in chunk by chunk, slowed down to be seen
        (the decoding is timed at full speed: pauses between chunks would let the CPU's threads fall asleep)."""
        try:
            size = check_chunk(None if chunk in (None, "") else int(chunk), len(locations))
        except (TypeError, ValueError):
            raise InputError(f"the chunk must be a whole number of locations, not {chunk!r}") from None
        run_id = session.islands.run.run_id
        parts = list(decoding.decoder.stream(locations, size))
        every = max(1, -(-len(parts) // FILL_FRAMES))
        shown, done = decoding.partial, 0  # each picture adds only the chunks since the last one
        for k in range(every, len(parts), every):
            if session.islands.run is None or session.islands.run.run_id != run_id:
                return  # a new run took the page
            shown, done = shown.add(parts[done:k]), k
            yield {self.grid: picture(replace(decoding, partial=shown), colour)}
            time.sleep(FILL_PAUSE_S)
        decoding = replace(decoding, partial=shown.add(parts[done:]))
        session.islands.decoding = decoding
        yield {self.grid: picture(decoding, colour), self.summary: readout(decoding, what)}

    @guarded("the asynchronous panel")
    def on_measure(self, request: gr.Request = None) -> Iterator[dict]:
        """Time and peak memory of decoding n locations (at a few chunk sizes) and of the teacher at n patches."""
        session = session_for(request)
        decoding = self.decoding(session)
        record = session.islands.run
        apm = decoding.decoder.apm
        h, w = apm.config.grid
        yield {self.summary: _box("measuring the APM's decoding and the teacher's forward pass on this server…",
                                  "apm-running")}
        sides = [s for s in (2, 4, 8, 16, 32) if s * s < h * w]
        ns = [s * s for s in sides] + [h * w]
        chunks = [c for c in COST_CHUNKS if c < h * w] + [h * w]
        points = apm_costs(apm, ns, chunks, repeats=2)
        teacher, patch, label = self._teacher(record.experiment.teacher)
        teacher_points = teacher_costs(teacher, patch, [(s, s) for s in sides] + [(h, w)], repeats=2)
        yield {self.cost: plots.cost_figure(points, chunks, teacher_points, label),
               self.table: cost_table_html(apm, points, teacher, teacher_points, label),
               self.summary: _box(cost_sentence(points, teacher_points, chunks), "apm-done")}

    def _teacher(self, teacher_id: str | None) -> tuple:
        with _teachers_lock:
            key = str(teacher_id)
            if key not in _teachers:
                _teachers.clear()
                _teachers[key] = teacher_architecture(teacher_id)
            return _teachers[key]

    def failed(self, exc: BaseException, what: str, lead: str = "") -> dict:
        """A failure of this panel's handlers: one line in its own readout (`guarded`)."""
        if not isinstance(exc, APMError):
            log.error("%s failed", what, exc_info=exc)
        return {self.summary: _box(f"{lead}{user_message(exc)}", "apm-error")}


def cost_sentence(points: list, teacher_points: list, chunks: list[int]) -> str:
    """What the measured figures say: memory follows the chunk, and where the teacher's passes the APM's."""
    chunk, full = chunks[0], max(p.n for p in points)
    chunked = sorted((p for p in points if p.chunk == chunk), key=lambda p: p.n)  # chunks full: n >= chunk
    parts = []
    if len(chunked) >= 2:
        a, b = chunked[0], chunked[-1]
        parts.append(f"decoding {b.n} locations in chunks of {chunk} peaks at {b.peak_mb:.2f} MB, decoding {a.n} at "
                     f"{a.peak_mb:.2f} MB: memory follows the chunk, not the number of locations")
    crossing = memory_crossover(points, teacher_points, chunk)
    teacher_full = max(teacher_points, key=lambda p: p.n)
    parts.append(f"the teacher's forward pass needs {teacher_full.peak_mb:.2f} MB at {teacher_full.n} patches"
                 + (f" and passes the APM's (chunks of {chunk}) from {crossing} patches on" if crossing else
                    f" and stays under the APM's (chunks of {chunk}) at every size measured"))
    apm_full = next(p for p in points if p.n == full and p.chunk == full)
    parts.append(f"for the whole grid the APM needs {apm_full.flops / 1e9:.2f} GFLOPs, the teacher "
                 f"{teacher_full.flops / 1e9:.2f} (torch's counter), in {apm_full.seconds * 1e3:.0f} against "
                 f"{teacher_full.seconds * 1e3:.0f} ms")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def cost_table_html(apm, points: list, teacher, teacher_points: list, label: str) -> str:
    """The whole grid, like the paper's Table 4: parameters, GFLOPs per image, peak memory, time."""
    full = max(p.n for p in points)
    rows = [(("APM, all at once" if p.chunk == full else f"APM, chunks of {p.chunk}"),
             sum(q.numel() for q in apm.parameters()), p) for p in sorted(points, key=lambda p: -(p.chunk or 0))
            if p.n == full]
    rows += [(f"teacher: {label}", sum(q.numel() for q in teacher.parameters()), p) for p in teacher_points
             if p.n == full]
    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{params / 1e6:.1f}</td><td>{p.flops / 1e9:.2f}</td>"
                   f"<td>{p.peak_mb:.2f}</td><td>{p.seconds * 1e3:.1f}</td></tr>" for name, params, p in rows)
    return (f"<table class='apm-table'><caption>One image, the whole {full}-location grid, measured here"
            f"</caption><tr><th>model</th><th>params (M)</th><th>GFLOPs</th><th>peak MB</th><th>ms</th></tr>"
            f"{body}</table>")
