"""The one run driver: every run of the app (the Islands tab's, the Interpolation tab's, the control's, the API's)
is submitted here, waits for a training slot in one line, is produced by one thread, and is watched by its viewers.

    run, viewer, source = RUNS.submit(key, produce, expected_s)   # source: "trained" or "joined"
    for item in run.follow(viewer):                                # `Waiting(...)` while in line, then items
        ...
    run.leave(viewer)                                              # Stop: this viewer only

`produce(run)` is a generator (the islands frames of a run, a walk's progress): it runs in the run's own thread,
once, whoever watches, and checks `run.should_stop()` between items. Viewers get the newest item when they look
(a slow viewer skips items, never slows the run); a run whose key equals one in line or in progress is joined,
not trained again. A run ends when its last viewer has left, or when no viewer has looked for `idle_timeout_s`
(a closed tab). `LIMITS.max_concurrent_runs` runs train at once (each on one thread when they share the cores);
the waiting run with the most viewers starts first (then the earliest), so a class that clicks the same example is
served before single visitors; at most `LIMITS.max_queue` wait, and past that `submit` raises `QueueFull` with one
line that says how long the line is.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from apm.errors import APMError
from apm.recipes import format_duration

from ..settings import LIMITS

log = logging.getLogger("apm.app")

IDLE_TIMEOUT_S = 15.0  # a run nobody has looked at for this long ends (its tabs were closed)
GATHER_S = 1.0  # in a burst of submissions (a class clicking at once), runs wait this long to be ranked by viewers
POLL_S = 0.5  # how often a waiting viewer hears where it stands


class QueueFull(APMError):
    """The line is full: one clear line, at once, that stands alone (no "the run failed:" before it)."""

    stands_alone = True


@dataclass(frozen=True)
class Waiting:
    """A viewer's place in line: `position` 1 is next; `eta_s` the measured estimate until its run starts."""

    position: int
    eta_s: float

    def text(self) -> str:
        nth = {1: "1st", 2: "2nd", 3: "3rd"}.get(self.position, f"{self.position}th")
        return f"{nth} in line, about {format_duration(max(1.0, self.eta_s))}"

    def status(self) -> str:
        """The status line of a visitor in line: 'waiting for a free slot: 2nd in line, about 12 s'."""
        return f"waiting for a free slot: {self.text()}"


class Run:
    """One computation and its viewers. Items are published by the producer thread; viewers follow them."""

    def __init__(self, key: str | None, produce: Callable[[Run], Iterator[Any]], expected_s: float,
                 hub: Runs, idle_timeout_s: float = IDLE_TIMEOUT_S):
        self.key = key
        self.produce = produce
        self.expected_s = max(0.1, float(expected_s))
        self.hub = hub
        self.idle_timeout_s = idle_timeout_s
        self.state = "waiting"  # waiting | running | done | failed | cancelled
        self.error: BaseException | None = None
        self.latest: Any = None
        self.version = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._cond = threading.Condition()
        self._viewers: dict[int, float] = {}  # viewer id -> when it last looked
        self._ids = itertools.count(1)
        self._stop = threading.Event()  # no viewer is left: the producer stops after its step
        self.context: Any = None  # what the producer made the run from (the engine's `Prepared`)
        self.threads: int | None = None  # torch threads its training may use (1 while other runs share the cores)

    # viewers

    def join(self) -> int:
        with self._cond:
            viewer = next(self._ids)
            self._viewers[viewer] = time.monotonic()
            return viewer

    def leave(self, viewer: int) -> None:
        """This viewer goes (Stop, a new run, a closed tab); the run ends when the last one has gone."""
        with self._cond:
            self._viewers.pop(viewer, None)
            if not self._viewers:
                self._stop.set()
            self._cond.notify_all()
        if self._stop.is_set():
            self.hub.withdraw(self)

    def request_stop(self) -> None:
        """End the training after its step; viewers keep following what the producer still makes of it."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.hub.withdraw(self)

    @property
    def viewers(self) -> int:
        with self._cond:
            return len(self._viewers)

    def should_stop(self) -> bool:
        """Nobody watches any more: every viewer left, or none has looked for `idle_timeout_s`."""
        if self._stop.is_set():
            return True
        with self._cond:
            newest = max(self._viewers.values(), default=0.0)
        if time.monotonic() - newest > self.idle_timeout_s:
            self._stop.set()
        return self._stop.is_set()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def follow(self, viewer: int, poll_s: float = POLL_S) -> Iterator[Any]:
        """`Waiting` while in line (again whenever the place changes, at least every `poll_s`), then the newest
        item whenever there is a new one, until the run ends. Raises the producer's error."""
        seen, last_place = 0, None
        while True:
            with self._cond:
                if viewer in self._viewers:
                    self._viewers[viewer] = time.monotonic()
                if self.version == seen and not self.finished and self.state != "waiting":
                    self._cond.wait(poll_s)
                    if viewer in self._viewers:
                        self._viewers[viewer] = time.monotonic()
                state, version, latest = self.state, self.version, self.latest
            if viewer not in self._viewers and not self.finished:
                return  # left (Stop): nothing more of this run for this viewer
            if state == "waiting":
                place = self.hub.place(self)
                if place is not None and place != last_place:
                    last_place = place
                    yield place
                with self._cond:
                    if self.state == "waiting":
                        self._cond.wait(poll_s)
                continue
            if version != seen:
                seen = version
                yield latest
                continue
            if self.finished:
                if self.state == "failed" and self.error is not None:
                    raise self.error
                return

    # the producer's side

    def publish(self, item: Any) -> None:
        with self._cond:
            self.latest = item
            self.version += 1
            self._cond.notify_all()

    def _set_state(self, state: str) -> None:
        with self._cond:
            self.state = state
            if state == "running":
                self.started_at = time.monotonic()
            if state in ("done", "failed", "cancelled"):
                self.finished_at = time.monotonic()
            self._cond.notify_all()

    def wait_finished(self, timeout: float | None = None) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self.finished, timeout)
            return self.finished


class Runs:
    """The line and the training slots: runs by key (to join), waiting runs in order, running runs."""

    def __init__(self, slots: int | None = None, max_waiting: int | None = None):
        self.slots = slots
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._by_key: dict[str, Run] = {}
        self._waiting: deque[Run] = deque()
        self._running: list[Run] = []
        self._ratios: deque[float] = deque(maxlen=20)  # measured / expected seconds of recent runs
        self.started = 0  # runs whose producer ran (a test counts trainings with it)
        self._last_submit = -1e9
        self._burst_until = 0.0  # before this, runs of a burst wait to be ranked by their viewers

    @property
    def _slots(self) -> int:
        return self.slots if self.slots is not None else LIMITS.max_concurrent_runs

    @property
    def _max_waiting(self) -> int:
        return self.max_waiting if self.max_waiting is not None else LIMITS.max_queue

    def submit(self, key: str | None, produce: Callable[[Run], Iterator[Any]], expected_s: float,
               context: Any = None) -> tuple[Run, int, str]:
        """A run for `key`: the one in line or in progress (joined), else a new one in line. Returns (run, this
        viewer's id, "joined" or "trained"). `QueueFull` past the line's length."""
        with self._lock:
            found = self._by_key.get(key) if key is not None else None
            if found is not None and not found.finished and not found._stop.is_set():
                return found, found.join(), "joined"
            if len(self._waiting) >= self._max_waiting and len(self._running) >= self._slots:
                eta = self._eta(len(self._waiting))
                waiting = len(self._waiting)
                raise QueueFull(f"the app is full: {waiting} {'run is' if waiting == 1 else 'runs are'} waiting; try "
                                f"again in about {format_duration(max(5.0, eta))}")
            run = Run(key, produce, expected_s, self)
            run.context = context
            viewer = run.join()
            now = time.monotonic()
            if now - self._last_submit < GATHER_S:  # a burst: rank what arrives in it before the slots are given
                if self._burst_until < now:
                    self._burst_until = now + GATHER_S
                    threading.Timer(GATHER_S, self._reschedule).start()
            self._last_submit = now
            if key is not None:
                self._by_key[key] = run
            self._waiting.append(run)
            self._schedule()
            return run, viewer, "trained"

    def join(self, key: str | None) -> tuple[Run, int] | None:
        """Join the run of `key` in line or in progress: (run, this viewer's id), or None when there is none."""
        if key is None:
            return None
        with self._lock:
            found = self._by_key.get(key)
            if found is None or found.finished or found._stop.is_set():
                return None
            return found, found.join()

    def withdraw(self, run: Run) -> None:
        """A run nobody watches: out of the line if it is still waiting (it never trains); a running one stops
        itself (`should_stop`)."""
        with self._lock:
            if run.state != "waiting" or run not in self._waiting:
                return
            self._waiting.remove(run)
            if self._by_key.get(run.key) is run:
                del self._by_key[run.key]
        run._set_state("cancelled")
        self._notify_waiting()

    def _order(self) -> list[Run]:
        """The waiting runs in the order they will start: most viewers first, then the earliest."""
        return sorted(self._waiting, key=lambda r: -r.viewers)  # a stable sort: ties keep their order of arrival

    def place(self, run: Run) -> Waiting | None:
        with self._lock:
            if run not in self._waiting:
                return None
            index = self._order().index(run)
            return Waiting(index + 1, self._eta(index))

    def viewing(self) -> int:
        """Viewers of the runs training now."""
        with self._lock:
            running = list(self._running)
        return sum(run.viewers for run in running)

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _ratio(self) -> float:
        return statistics.median(self._ratios) if self._ratios else 1.0

    def _eta(self, index: int) -> float:
        """Seconds until the waiting run at `index` starts: what the running runs have left and the expected
        times of the runs ahead, both scaled by how recent runs' measured times compared with their estimates."""
        ratio, now = self._ratio(), time.monotonic()
        left = sorted(max(0.5, r.expected_s * ratio - (now - (r.started_at or now))) for r in self._running)
        ahead = [r.expected_s * ratio for r in self._order()[:index]]
        slots = [0.0] * max(1, self._slots)
        for k, seconds in enumerate(left[: len(slots)]):
            slots[k] = seconds
        for seconds in ahead:  # each run ahead takes the slot that frees first
            slots.sort()
            slots[0] += seconds
        return min(slots)

    def _reschedule(self) -> None:
        with self._lock:
            self._schedule()

    def _schedule(self) -> None:
        """Start waiting runs while there are free slots (called with the lock held); in a burst, only once it has
        gathered (`GATHER_S`), so that the runs most visitors wait for take the slots first."""
        if time.monotonic() < self._burst_until:
            self._notify_waiting()
            return
        while self._waiting and len(self._running) < self._slots:
            run = self._order()[0]
            self._waiting.remove(run)
            run.threads = 1 if self._running else None  # sharing the cores: one thread each, no oversubscription
            self._running.append(run)
            run._set_state("running")
            self.started += 1
            threading.Thread(target=self._drive, args=(run,), daemon=True, name="apm-run").start()
        self._notify_waiting()

    def _notify_waiting(self) -> None:
        for run in list(self._waiting):
            with run._cond:
                run._cond.notify_all()

    def _drive(self, run: Run) -> None:
        try:
            for item in run.produce(run):
                run.publish(item)
            run._set_state("done")
        except BaseException as exc:  # noqa: BLE001 - handed to every viewer by `follow`
            run.error = exc
            run._set_state("failed")
            if not isinstance(exc, APMError):
                log.error("a run failed", exc_info=exc)
        finally:
            with self._lock:
                if run in self._running:
                    self._running.remove(run)
                if run.key is not None and self._by_key.get(run.key) is run:
                    del self._by_key[run.key]
                if run.state == "done" and run.started_at is not None and not run._stop.is_set():
                    self._ratios.append((run.finished_at - run.started_at) / run.expected_s)
                self._schedule()


RUNS = Runs()


def drive(key: str | None, produce: Callable[[Run], Iterator[Any]], expected_s: float,
          context: Any = None) -> tuple[Run, int, str]:
    """Submit a run to the app's one line (`RUNS`, read when called: a test may give it a line of its own)."""
    return RUNS.submit(key, produce, expected_s, context)
