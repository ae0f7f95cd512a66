"""The asynchronous perception panel, its handlers called directly: decode in an order and watch it fill in, clicked
locations, a rectangle from two clicks, the colour switch, and the cost against the teacher."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from app.panels.asynchronous import EMPTY
from app.pictures import to_uint8
from app.testing.harness import Req, by_id, example, figure, is_error, islands, plain, run_islands
from app.widgets import STORE

SERVED = 256  # the grid is served at 256 px: 16 pixels a location on a 16 x 16 grid
GREY = tuple(to_uint8(EMPTY[None, None])[0, 0])


@pytest.fixture(scope="module")
def finished():
    request = Req("async-finished")
    run_islands(request, example("face"), steps=30)
    yield request, STORE.peek(request.session_hash)
    STORE.drop(request.session_hash)


def panel():
    return islands().panel("asynchronous")


def decoded_cells(picture: np.ndarray, side: int = 16) -> np.ndarray:
    """(side, side) bool: the served picture's cells that are not the empty grey."""
    k = picture.shape[0] // side
    centres = picture[k // 2 :: k, k // 2 :: k][:side, :side]
    return ~np.all(centres == np.array(GREY, np.uint8), axis=-1)


def click(i: int, j: int, side: int = 16) -> SimpleNamespace:
    k = SERVED // side
    return SimpleNamespace(index=[j * k + k // 2, i * k + k // 2])  # (x, y) in the served picture's pixels


def test_before_any_run_it_says_what_to_do():
    out = [by_id(o) for o in panel().on_decode("random", 16, "islands", request=Req("async-empty"))]
    assert len(out) == 1 and is_error(out[0]["async-readout"]) and "press Run first" in plain(out[0]["async-readout"])
    STORE.drop("async-empty")


def test_random_order_fills_the_grid_and_it_is_the_same_grid(finished):
    request, session = finished
    out = [by_id(o) for o in panel().on_decode("random", 16, "islands", request=request)]
    assert len(out) >= 8  # it fills in over several pictures, chunk by chunk
    filled = [decoded_cells(o["async-grid"]).sum() for o in out]
    assert filled == sorted(filled) and filled[0] < 256 and filled[-1] == 256
    text = plain(out[-1]["async-readout"])
    assert "256 of 256 locations decoded in 16 chunks" in text and "the same grid as one full pass" in text
    decoding = session.islands.decoding
    assert np.abs(decoding.partial.features - decoding.full).max() <= 1e-5 * max(1.0, decoding.decoder.scale)
    # islands colours: each location shows the island colour of its own one-pass feature
    islands_image = np.asarray(session.islands.run.frames[-1].projection.image)
    shown = out[-1]["async-grid"][8::16, 8::16]
    assert np.abs(shown.astype(int) - to_uint8(islands_image).astype(int)).max() <= 1


def test_a_rectangle_from_two_clicks_fills_only_itself(finished):
    request, session = finished
    p = panel()
    p.on_clear("rgb", request=request)
    first = [by_id(o) for o in p.on_click("rectangle", 4, "rgb", click(2, 3), request=request)]
    assert "corner (2, 3)" in plain(first[-1]["async-readout"]) and decoded_cells(first[-1]["async-grid"]).sum() == 0
    out = [by_id(o) for o in p.on_click("rectangle", 4, "rgb", click(7, 1), request=request)]
    cells = decoded_cells(out[-1]["async-grid"])
    expected = np.zeros((16, 16), bool)
    expected[2:8, 1:4] = True
    assert np.array_equal(cells, expected)
    assert "(2, 3) to (7, 1) (18 locations)" in plain(out[-1]["async-readout"])
    assert np.array_equal(session.islands.decoding.partial.mask, expected)
    rgb = session.islands.decoding.full_rgb  # RGB-head colours: the decoded location's own
    assert np.abs(out[-1]["async-grid"][2 * 16 + 8, 1 * 16 + 8].astype(int) - to_uint8(rgb[2, 1]).astype(int)).max() <= 1


def test_clicked_locations_add_up(finished):
    request, session = finished
    p = panel()
    p.on_clear("islands", request=request)
    for i, j in ((0, 0), (15, 15), (4, 9)):
        out = [by_id(o) for o in p.on_click("click", 16, "islands", click(i, j), request=request)]
    assert decoded_cells(out[-1]["async-grid"]).sum() == 3
    assert "3 of 256 locations decoded in 3 chunks" in plain(out[-1]["async-readout"])
    hint = [by_id(o) for o in p.on_click("random", 16, "islands", click(1, 1), request=request)]
    assert "pick 'clicked locations'" in plain(hint[-1]["async-readout"])
    bad = [by_id(o) for o in p.on_decode("row", "many", "islands", request=request)]
    assert is_error(bad[-1]["async-readout"]) and "whole number" in plain(bad[-1]["async-readout"])


def test_cost_against_the_teacher(finished):
    request, _ = finished
    out = [by_id(o) for o in panel().on_measure(request=request)]
    last = out[-1]
    names = [trace["name"] for trace in figure(last["async-cost"])["data"] if trace.get("showlegend")]
    assert names[:3] == ["APM, chunks of 8", "APM, chunks of 64", "APM, all at once"] and names[3].startswith("teacher")
    layout = figure(last["async-cost"])["layout"]
    assert layout["xaxis"]["type"] == layout["yaxis"]["type"] == layout["yaxis2"]["type"] == "log"
    text = plain(last["async-readout"])
    assert "memory follows the chunk" in text and "GFLOPs" in text
    table = plain(last["async-table"])
    assert "APM, chunks of 8" in table and "teacher" in table and "params (M)" in table
