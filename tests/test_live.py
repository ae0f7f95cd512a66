"""The live-run engine: latest snapshot, history, stop within a step, the thread gone after stop, both backends."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from apm.errors import InputError
from apm.live import LiveRun, thin
from apm.train import OverfitRun, TrainConfig


@pytest.fixture(scope="module")
def image() -> Image.Image:
    yy, xx = np.mgrid[0:128, 0:128]
    rgb = np.stack([xx / 128, yy / 128, 0.5 + 0 * xx], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def target() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(8, 8, 32)).astype(np.float32)


def make_run(image, target, steps=30, **kw) -> OverfitRun:
    return OverfitRun(image, target, TrainConfig(steps=steps, record_every=kw.pop("record_every", 5), **kw), "cpu")


def live_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "apm-live" and t.is_alive()]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_history_latest_and_snapshots(image, target, backend):
    live = LiveRun(make_run(image, target, steps=30), backend=backend).start()
    watched = []
    for snap in live.stream(timeout=5.0):
        watched.append(snap.step)
    assert live.finished and live.status == "done" and live.stop_reason == "steps" and live.error is None
    hist = live.history.arrays()
    assert hist["step"].tolist() == list(range(1, 31)) and np.all(np.isfinite(hist["feat_loss"]))
    assert [s.step for s in live.snapshots] == [1, 5, 10, 15, 20, 25, 30]  # every recorded step, kept
    assert live.latest.step == 30 and watched[-1] == 30 and watched == sorted(watched)
    snap = live.latest
    assert snap.features.shape == (8, 8, 32) and snap.rgb.shape == (8, 8, 3)
    assert snap.trigger_column.shape == (live.model_config.column_dim,) and snap.conv_filter.shape == (1, 3, 8, 8)
    assert live.positional_code().shape == (64, live.model_config.pos_dim)
    assert live.run.steps_done == 30 and live.steps_per_s > 0
    assert live.join(5) and not live_threads()


def test_the_process_backend_trains_exactly_like_the_thread(image, target):
    """Same seed, same data: the same losses, and the trained weights come back into the run object."""
    runs = {}
    for backend in ("thread", "process"):
        run = make_run(image, target, steps=25, precision="fp32")
        live = LiveRun(run, backend=backend).start()
        assert live.join(60) and live.status == "done", live.error
        runs[backend] = (live.history.arrays()["feat_loss"], run)
    np.testing.assert_allclose(runs["thread"][0], runs["process"][0], rtol=1e-5)
    a, b = runs["thread"][1], runs["process"][1]
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], atol=1e-6, rtol=1e-5)
    assert b.steps_done == 25 and b.optimizer.state_dict()["state"]  # Adam's moments came back too
    columns = b.trigger_columns()
    features, _ = b.decode_columns(columns)
    np.testing.assert_allclose(features[0], a.decode_columns(a.trigger_columns())[0][0], atol=1e-4)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_stop_ends_the_run_within_a_step(image, target, backend):
    live = LiveRun(make_run(image, target, steps=100_000), backend=backend).start()
    assert live.wait(0, timeout=30)[0] is not None  # the first snapshot
    time.sleep(0.3)
    t0 = time.monotonic()
    live.stop()
    assert live.join(10)
    latency = time.monotonic() - t0
    print(f"\n{backend}: stopped {latency:.3f} s after stop() at step {live.steps_done}")
    assert latency < 2.0 and live.status == "stopped" and live.stop_reason == "stopped"
    n = live.steps_done
    assert 1 <= n < 100_000 and live.run.steps_done == n  # the weights of the last step are the run's
    time.sleep(0.3)
    assert live.steps_done == n and not live_threads()  # nothing trains after the stop


def test_an_unwatched_run_stops_itself(image, target):
    live = LiveRun(make_run(image, target, steps=100_000), idle_timeout_s=0.5, backend="process").start()
    assert live.join(20) and live.stop_reason == "abandoned" and live.status == "stopped"


def test_request_snapshot_records_the_next_step(image, target):
    live = LiveRun(make_run(image, target, steps=100_000, record_every=10_000), backend="process").start()
    snap, seen = live.wait(0, timeout=30)
    assert snap.step == 1  # the first step is always recorded
    live.request_snapshot()
    snap, seen = live.wait(seen, timeout=10)
    assert snap is not None and 1 < snap.step < 10_000
    live.stop()
    live.join(10)


def test_a_failing_run_reports_its_error(image, target, monkeypatch):
    run = make_run(image, target, steps=50)

    def broken_step():
        raise InputError("the target went away")

    monkeypatch.setattr(run, "_step", broken_step)
    for backend in ("thread", "process"):
        live = LiveRun(run, backend=backend).start()
        assert live.join(20)
        assert live.status == "failed" and isinstance(live.error, InputError) is (backend == "thread")
        assert "the target went away" in str(live.error)


def test_thin_keeps_first_and_last_and_always_ends():
    items = list(range(200))
    for keep in (1, 2, 3, 5, 120):
        out = thin(items, keep)
        assert out[0] == 0 and out[-1] == 199 and len(out) <= max(2, keep) and out == sorted(out)
    assert thin([1, 2, 3], 2) == [1, 3]


def test_the_process_backend_needs_a_cpu_run(image, target):
    with pytest.raises(ValueError, match="backend"):
        LiveRun(make_run(image, target), backend="gpu")


def test_the_servers_niceness_is_a_setting(monkeypatch):
    from apm.env import SERVER_NICENESS, server_niceness

    monkeypatch.delenv("APM_SERVER_NICENESS", raising=False)
    assert server_niceness() == SERVER_NICENESS == 7
    for raw, expected in (("0", 0), ("12", 12), ("40", 19), ("-3", 0)):
        monkeypatch.setenv("APM_SERVER_NICENESS", raw)
        assert server_niceness() == expected


def _children_niceness() -> list[int]:
    """The niceness of this process's child processes (Linux /proc: field 19 of stat)."""
    import os
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid
            found.append(int(fields[16]))  # nice (the 19th field; two were before the ")")
    return found


def test_a_training_process_can_run_nicer_than_the_server(image, target):
    """`niceness`: the forked training process lowers its own priority (a server streaming to a class keeps its
    share); without it, it runs at the priority it was forked with."""
    import os

    own = os.nice(0)
    for niceness in (0, 5):
        live = LiveRun(make_run(image, target, steps=100000), backend="process", niceness=niceness).start()
        try:
            snap, _ = live.wait(0, timeout=60)
            assert snap is not None
            assert min(own + niceness, 19) in _children_niceness()
        finally:
            live.stop()
            live.join(30)
