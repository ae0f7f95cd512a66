"""Content metrics on constructed grids where the right answer is known: a grid against itself, a purely
positional grid, a rotated feature space, a nearly constant grid; the sentences they lead to; the speed bound."""

from __future__ import annotations

import numpy as np
import pytest

from apm.content import (
    ContentReference,
    content_metrics,
    content_sentence,
    islands_agreement,
    linear_cka,
    position_code,
    relative_spread,
    resize_grid,
)
from apm.errors import InputError

H = W = 16


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q.astype(np.float32)


@pytest.fixture(scope="module")
def teacher() -> np.ndarray:
    """A structured teacher grid: four quadrant 'parts', each its own direction, plus noise."""
    rng = np.random.default_rng(0)
    parts = rng.normal(size=(4, 64)).astype(np.float32) * 3
    quadrant = (np.arange(H)[:, None] >= H // 2) * 2 + (np.arange(W)[None, :] >= W // 2)
    return (parts[quadrant] + rng.normal(size=(H, W, 64))).astype(np.float32)


def test_a_grid_against_itself_and_a_rotation_of_it(teacher):
    assert linear_cka(teacher, teacher) == pytest.approx(1.0, abs=1e-6)
    rotated = teacher @ rotation(64, 1) * 7.5  # another basis and scale: the same structure
    m = content_metrics(rotated, teacher)
    assert m.cka_teacher == pytest.approx(1.0, abs=1e-5)
    assert m.ari_teacher == pytest.approx(1.0) and m.spread == pytest.approx(1.0, rel=1e-4)
    same = content_metrics(teacher, teacher)
    assert m.cka_position == pytest.approx(same.cka_position, abs=1e-5)  # rotation changes nothing
    assert content_sentence(m).startswith("the islands follow the teacher")


def test_a_purely_positional_grid(teacher):
    code = position_code(H, W)  # (256, 256)
    positional = (code @ rotation(256, 2)).reshape(H, W, 256)
    m = content_metrics(positional, teacher, code)
    assert m.cka_position == pytest.approx(1.0, abs=1e-5)
    assert m.cka_teacher < m.cka_position  # the quadrants are low-frequency positional structure too: 0.56 here
    assert content_sentence(m).startswith("mostly the positional code")


def test_nearly_constant_features_are_said_to_be(teacher):
    rng = np.random.default_rng(3)
    base = rng.normal(size=64).astype(np.float32) * 5
    flat = (base + 0.01 * teacher).astype(np.float32)  # the locations differ by well under 1% of their norm
    m = content_metrics(flat, teacher)
    assert m.spread < 0.01 and relative_spread(flat) < 0.01
    assert m.cka_teacher == pytest.approx(1.0, abs=1e-3)  # CKA alone would not tell: the structure is there, tiny
    assert content_sentence(m).startswith("the features are nearly constant")
    assert linear_cka(np.ones((H, W, 8)), teacher) == 0.0  # a constant grid carries no structure


def test_unrelated_grids_and_no_teacher(teacher):
    noise = np.random.default_rng(4).normal(size=(H, W, 64)).astype(np.float32)
    m = content_metrics(noise, teacher)
    assert m.cka_teacher < 0.5 and m.ari_teacher < 0.3
    assert content_sentence(m).startswith("the islands follow the teacher only in part") or "positional" in content_sentence(m)
    alone = content_metrics(noise)
    assert alone.cka_teacher is None and alone.ari_teacher is None and alone.spread is None
    assert set(alone.to_dict()) == {"cka_teacher", "cka_position", "ari_teacher", "spread"}
    assert content_sentence(alone).startswith("no teacher to compare with")


def test_islands_agreement_is_about_the_partition(teacher):
    assert islands_agreement(teacher, teacher, k=4) == pytest.approx(1.0)
    shuffled = teacher.reshape(H * W, -1)[np.random.default_rng(5).permutation(H * W)]
    assert islands_agreement(shuffled, teacher.reshape(H * W, -1), k=4) < 0.2


def test_a_reference_measures_frames_as_the_one_off_does(teacher):
    ref = ContentReference((H, W), teacher)
    frame = teacher + np.random.default_rng(6).normal(size=teacher.shape).astype(np.float32)
    assert ref.measure(frame) == content_metrics(frame, teacher)
    with pytest.raises(InputError, match="16 x 16 x d"):
        ref.measure(frame[:8])
    with pytest.raises(InputError, match="locations"):
        linear_cka(frame, frame[:8])
    with pytest.raises(InputError, match="teacher's grid is 8 x 16"):
        ContentReference((H, W), teacher[:8])


def test_resize_grid_reads_a_grid_at_other_locations(teacher):
    assert resize_grid(teacher, (H, W)) is not None and np.array_equal(resize_grid(teacher, (H, W)), teacher)
    small = resize_grid(teacher, (14, 14))
    assert small.shape == (14, 14, 64)
    back = resize_grid(small, (H, W))
    assert linear_cka(back, teacher) > 0.9  # the quadrants survive the round trip


def test_a_live_frame_of_a_large_grid_reads_an_even_subgrid():
    """32 x 32 with max_locations=256: a stride-2 subgrid of 256 locations, said in `locations`; the figures read
    off it agree with the full grid's (they are about which locations go together, sampled evenly)."""
    from apm.content import subgrid

    rng = np.random.default_rng(1)
    parts = rng.normal(size=(4, 64)).astype(np.float32) * 3
    quadrant = (np.arange(32)[:, None] >= 16) * 2 + (np.arange(32)[None, :] >= 16)
    big = (parts[quadrant] + rng.normal(size=(32, 32, 64))).astype(np.float32)
    index = subgrid((32, 32), 256)
    assert len(index) == 256 and index[:3].tolist() == [0, 2, 4] and index[16] == 64  # rows 0, 2, ...; columns too
    assert subgrid((16, 16), 256) is None and len(subgrid((24, 24), 256)) == 144  # stride 2: 12 x 12
    frame = big + rng.normal(size=big.shape).astype(np.float32)
    ref = ContentReference((32, 32), big)
    live, full = ref.measure(frame, max_locations=256), ref.measure(frame)
    assert live.locations == 256 and full.locations is None
    assert abs(live.cka_teacher - full.cka_teacher) < 0.05 and abs(live.spread - full.spread) < 0.05
    assert live.ari_teacher > 0.9 and full.ari_teacher > 0.9
    assert set(live.to_dict()) == {"cka_teacher", "cka_position", "ari_teacher", "spread"}
