"""How every islands run starts (the page's Run, the API's /run, the server's prefill of the examples): by its key,
a run trained before is replayed, a run in line or in progress is joined, and only a run nobody has asked for is
prepared (encoded, built) and submitted to the driver, once however many ask for it at the same moment.

`Prefill` is the run cache's warm start, in the spirit of Gradio's example caching but keyed by the whole run (so
a visitor who changes a setting is not served a stale example) and aware of runs in flight: at server start the
examples' default runs go through `start_run` like any visitor's."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from apm.errors import APMError
from apm.recipes import Experiment, estimate_seconds

from ..session import RunRecord, View
from . import cache as run_cache
from . import driver
from .export import shared_files
from .islands import prepare_run, producer

log = logging.getLogger("apm.app")

# runs prepared at once (the teacher's forward pass, the teacher's islands, the APM built): a class's uploads are
# prepared one after another, so the server's other core keeps streaming to everybody else
_PREPARING_SLOTS = threading.BoundedSemaphore(1)


@dataclass(frozen=True)
class Started:
    """Where a visitor's run comes from.

    source: "replayed" (recorded in the run cache), "joined" (in line or training for another visitor), "trained"
    (submitted now for this visitor), "teacher" (the teacher's own islands: nothing to train) or "stopped" (the
    visitor stopped or started another run while this one was prepared: nothing was submitted).
    """

    source: str
    key: str | None
    record: RunRecord | None = None
    run: driver.Run | None = None
    viewer: int | None = None


def start_run(exp: Experiment, view: View, image: Image.Image, image_name: str, features: np.ndarray | None,
              labels: list[str], run_id: int, loaded: Any = None, fresh: bool = False,
              wanted: Callable[[], bool] = lambda: True) -> Started:
    """Replay, join or prepare and submit the run of these settings (`fresh`: Train anew, the cache is not read).
    `wanted()` is asked once the run is prepared, before it is submitted (False: the visitor moved on).

    Raises `InputError` (or another `APMError`) with a message for the page, `driver.QueueFull` when the line is
    full."""
    key = run_cache.run_key(exp, view, image, labels, features, loaded) if exp.trains else None
    with run_cache.preparing(key):  # the same run asked for at once by many: prepared and submitted once
        found = run_cache.find_run(key, fresh=fresh)
        if found is not None:
            source, what = found
            if source == "replayed":
                return Started("replayed", key, what)
            run, viewer = what
            return Started("joined", key, run.context.record, run, viewer)
        with _PREPARING_SLOTS:
            prepared = prepare_run(exp, image, image_name, features, labels, run_id, view, loaded)
        record = prepared.record
        if prepared.overfit is None:
            return Started("teacher", None, record)
        if not wanted():
            return Started("stopped", key, record)
        record.key = key
        run, viewer, source = driver.drive(key, producer(prepared, run_cache.RUN_CACHE),
                                           estimate_seconds(record.experiment), context=prepared)
        return Started(source, key, record, run, viewer)


class Prefill:
    """The examples' runs at their default settings, trained (or found recorded) when the server starts, so that a
    class that clicks an example replays it instead of waiting for it to train. A visitor who comes while one is
    still training joins it. `done` is set when every run has ended (trained, replayed, or failed: logged)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.sources: dict[str, str] = {}  # image name -> replayed | joined | trained | failed
        self.seconds = 0.0

    def start(self, runs: Sequence[tuple[Experiment, View, Image.Image, str]]) -> Prefill:
        threading.Thread(target=self._run, args=(list(runs),), daemon=True, name="apm-prefill").start()
        return self

    def _run(self, runs: list[tuple[Experiment, View, Image.Image, str]]) -> None:
        """One example at a time: a run alone has every core, so it is short, and so is its replay (a replay
        shows its recorded frames at the live cadence). A visitor who asks for an example first trains it."""
        t0 = time.monotonic()
        try:
            for exp, view, image, name in runs:
                try:
                    started = start_run(exp, view, image, name, None, [], run_id=0)
                except APMError as exc:  # a bad example must not stop the others
                    log.warning("prefill: %s could not start (%s)", name, exc)
                    self.sources[name] = "failed"
                    continue
                self.sources[name] = started.source
                record = started.record
                if started.run is not None:  # follow it to its end (a run nobody watches stops): then it is kept
                    self._follow(started, name)
                    record = started.run.context.record
                self._export(record, name)
            self.seconds = time.monotonic() - t0
            counts = {s: list(self.sources.values()).count(s) for s in sorted(set(self.sources.values()))}
            log.info("prefill: the examples' default runs are ready in %.0f s (%s)", self.seconds,
                     ", ".join(f"{n} {s}" for s, n in counts.items()))
        finally:  # a bug ends the prefill (the driver logged it), never leaves it waited for
            self.done.set()

    @staticmethod
    def _export(record: RunRecord | None, name: str) -> None:
        """Write the finished run's shared files now (`export.shared_files`), so that the first class's viewers
        link them at their run's end instead of one of them encoding the GIF while the others stream."""
        if record is None or not record.frames:
            return
        try:
            shared_files(record)
        except (APMError, OSError) as exc:  # the first viewer writes them instead
            log.warning("prefill: %s's files could not be written (%s)", name, exc)

    def _follow(self, started: Started, name: str) -> None:
        run, viewer = started.run, started.viewer
        try:
            for _ in run.follow(viewer):
                pass
        except APMError as exc:  # the example trains for its first visitor instead
            log.warning("prefill: %s failed (%s)", name, exc)
            self.sources[name] = "failed"
        finally:
            run.leave(viewer)
