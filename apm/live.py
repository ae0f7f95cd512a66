"""Live runs: train an `OverfitRun` in a background thread while something else watches.

The app's tabs, the CLI's progress bar and a notebook all drive the same object:

    live = LiveRun(OverfitRun(image, target)).start()
    seen = 0
    while not live.finished:
        snap, seen = live.wait(seen, timeout=0.25)   # the newest recorded snapshot, if there is a new one
        if snap is not None:
            print(snap.step, snap.feat_loss)         # draw it: features, rgb, trigger column, conv filter
    live.history.feat_loss                           # every step's loss
    live.stop()                                      # or Stop at any time: the thread ends after its step

Rendering a frame never pauses training, and training never waits on a renderer: the thread publishes the
newest recorded snapshot and moves on. Everything a panel needs comes from the snapshot (features, colours,
trigger column, conv filter) or from `positional_code()` / `folded_state()`, never from the model mid-update.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .model import FoldedState, ModelConfig
from .train import OverfitRun, Snapshot

STATUSES = ("ready", "running", "done", "stopped", "failed")


@dataclass
class History:
    """Every step's numbers, appended by the training thread (read `arrays()` for one consistent copy)."""

    step: list[int] = field(default_factory=list)
    feat_loss: list[float] = field(default_factory=list)
    rgb_loss: list[float] = field(default_factory=list)
    global_loss: list[float] = field(default_factory=list)  # NaN where there is no global target
    lr: list[float] = field(default_factory=list)
    elapsed_s: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.elapsed_s)  # appended last: every list is at least this long

    def append(self, snap: Snapshot) -> None:
        self.step.append(snap.step)
        self.feat_loss.append(snap.feat_loss)
        self.rgb_loss.append(snap.rgb_loss)
        self.global_loss.append(float("nan") if snap.global_loss is None else snap.global_loss)
        self.lr.append(snap.lr)
        self.elapsed_s.append(snap.elapsed_s)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every list as a numpy array of the same length, safe to call while the run goes on."""
        n = len(self)
        return {
            "step": np.asarray(self.step[:n], dtype=np.int64),
            "feat_loss": np.asarray(self.feat_loss[:n], dtype=np.float64),
            "rgb_loss": np.asarray(self.rgb_loss[:n], dtype=np.float64),
            "global_loss": np.asarray(self.global_loss[:n], dtype=np.float64),
            "lr": np.asarray(self.lr[:n], dtype=np.float64),
            "elapsed_s": np.asarray(self.elapsed_s[:n], dtype=np.float64),
        }


def thin(snapshots: list[Snapshot], keep: int) -> list[Snapshot]:
    """At most `keep` snapshots: the first and the last stay, every other one in between goes."""
    while len(snapshots) > max(2, keep):
        snapshots = [snapshots[0], *snapshots[1:-1:2], snapshots[-1]]
    return snapshots


class LiveRun:
    """An `OverfitRun` trained in a background thread: latest snapshot, history, stop within one step.

    `keep` bounds the recorded snapshots kept (None: all; the first and last always stay). With
    `idle_timeout_s`, the run stops by itself when nobody called `wait()` or `touch()` for that long (a
    watcher that went away). `threads` sets torch's threads in the training thread.
    """

    def __init__(self, run: OverfitRun, *, keep: int | None = None, threads: int | None = None,
                 idle_timeout_s: float | None = None):
        self.run = run
        self.keep = keep
        self.threads = threads
        self.idle_timeout_s = idle_timeout_s
        self.history = History()
        self.snapshots: list[Snapshot] = []
        self.latest: Snapshot | None = None  # the newest recorded snapshot
        self.version = 0  # bumped with every published snapshot
        self.status = "ready"
        self.stop_reason: str | None = None  # steps | target_loss | time_budget | stopped | abandoned | failed
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._last_seen = time.monotonic()
        self._thread = threading.Thread(target=self._train, daemon=True, name="apm-live")

    # control

    def start(self) -> LiveRun:
        if self.status != "ready":
            raise RuntimeError("a LiveRun starts once")
        self.status = "running"
        self._last_seen = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the run to stop; it ends after the step in progress (use `join` to wait for that)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the training thread to end; True when it has."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def touch(self) -> None:
        """Someone is still watching (see `idle_timeout_s`)."""
        self._last_seen = time.monotonic()

    def __enter__(self) -> LiveRun:
        return self if self.status != "ready" else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.join()

    # watching

    @property
    def finished(self) -> bool:
        return self.status in ("done", "stopped", "failed")

    @property
    def alive(self) -> bool:
        """The training thread is still running (it may be finishing its last step after `stop`)."""
        return self._thread.is_alive()

    def wait(self, seen: int = 0, timeout: float | None = None) -> tuple[Snapshot | None, int]:
        """The newest recorded snapshot if it is newer than version `seen` (waits up to `timeout` for one).

        Returns (snapshot or None, current version). Counts as `touch()`.
        """
        self.touch()
        with self._cond:
            if self.version == seen and not self.finished:
                self._cond.wait(timeout)
            return (self.latest if self.version != seen else None), self.version

    def stream(self, timeout: float = 1.0) -> Iterator[Snapshot]:
        """Every newer recorded snapshot as it is published, until the run ends (skips what it was too slow for)."""
        seen = 0
        while True:
            snap, seen = self.wait(seen, timeout)
            if snap is not None:
                yield snap
            elif self.finished:
                return

    @property
    def steps_done(self) -> int:
        return len(self.history)

    @property
    def total_steps(self) -> int:
        return self.run.config.steps

    @property
    def steps_per_s(self) -> float:
        n = len(self.history)
        return n / self.history.elapsed_s[n - 1] if n and self.history.elapsed_s[n - 1] > 0 else 0.0

    # what the panels read besides snapshots

    @property
    def model_config(self) -> ModelConfig:
        return self.run.model_config

    def positional_code(self) -> np.ndarray:
        """(h*w, pos_dim): the positional half of every unfolded query (fixed: safe to read at any time)."""
        return self.run.model.positional_code()

    def folded_state(self) -> FoldedState:
        return self.run.model.folded_state()

    # the thread

    def _train(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        stream = iter(self.run)
        try:
            for snap in stream:
                self.history.append(snap)
                if snap.recorded:
                    self._publish(snap)
                if snap.done:
                    self.stop_reason = snap.stop_reason
                    break
                if self._stop.is_set():
                    self.stop_reason = "stopped"
                    break
                if self.idle_timeout_s is not None and time.monotonic() - self._last_seen > self.idle_timeout_s:
                    self.stop_reason = "abandoned"
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to whoever watches, never lost in a thread
            self.error = exc
            self.stop_reason = "failed"
        finally:
            stream.close()
            with self._cond:
                self.status = {"failed": "failed", "stopped": "stopped", "abandoned": "stopped"}.get(
                    self.stop_reason or "stopped", "done"
                )
                self._cond.notify_all()  # wake every waiter: the end is news too

    def _publish(self, snap: Snapshot) -> None:
        with self._cond:
            self.snapshots.append(snap)
            if self.keep is not None:
                self.snapshots = thin(self.snapshots, self.keep)
            self.latest = snap
            self.version += 1
            self._cond.notify_all()
