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

Rendering a frame never pauses training, and training never waits on a renderer: the trainer publishes the
newest recorded snapshot and moves on. Everything a panel needs comes from the snapshot (features, colours,
trigger column, conv filter) or from `positional_code()` / `folded_state()`, never from the model mid-update.

Backends. "thread" trains in a thread of this process: simplest, and right for a notebook or the CLI. "process"
trains in a forked child process, which has its own interpreter lock: next to a busy web server (Gradio's event
loop and a renderer hold the GIL a third of the time) a thread trains at half speed, a child at full speed. The
child sends every step's numbers and every recorded snapshot through a pipe, and at the end the trained weights
and optimiser state, which are loaded back into `run`, so the run is the same object afterwards either way.
Children are forked from one helper thread that never runs torch: a process forked from a thread that has used
OpenMP can hang in its first parallel region. "auto" picks "process" on a CPU where fork exists, else "thread"
(CUDA cannot be forked).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import pickle
import queue
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import APMError
from .model import FoldedState, ModelConfig
from .threads import lower_priority, serve_single_threaded, training_threads  # noqa: F401 - serve_single_threaded: re-exported
from .train import OverfitRun, Snapshot

log = logging.getLogger(__name__)
BACKENDS = ("auto", "thread", "process")

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
        snapshots = [snapshots[0], *snapshots[2:-1:2], snapshots[-1]]  # strictly shorter from 3 on
    return snapshots


class LiveRun:
    """An `OverfitRun` trained in a background thread: latest snapshot, history, stop within one step.

    `keep` bounds the recorded snapshots kept (None: all; the first and last always stay). With
    `idle_timeout_s`, the run stops by itself when nobody called `wait()` or `touch()` for that long (a
    watcher that went away). `threads` sets torch's threads in the training thread; `niceness` lowers the
    training process's priority (the process backend: a server busy streaming to many visitors keeps its share).
    """

    def __init__(self, run: OverfitRun, *, keep: int | None = None, threads: int | None = None,
                 idle_timeout_s: float | None = None, backend: str = "thread", niceness: int = 0):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if backend == "auto":
            backend = "process" if _can_fork(run) else "thread"
        elif backend == "process" and not _can_fork(run):
            raise ValueError("the process backend needs fork (Linux, macOS) and a CPU run")
        self.backend = backend
        self.run = run
        self.keep = keep
        self.threads = threads
        self.niceness = niceness  # the process backend's training process runs this much nicer (0: as forked)
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
        target = self._train if backend == "thread" else self._train_in_child
        self._thread = threading.Thread(target=target, daemon=True, name="apm-live")
        if backend == "process":
            self._child_stop = _FORK.Event()
            self._child_record = _FORK.Event()

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
        if self.backend == "process":
            self._child_stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the training thread to end; True when it has."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def request_snapshot(self) -> None:
        """Record the next step whatever `record_every` says (a watcher that paces frames by time)."""
        if self.backend == "process":
            self._child_record.set()
        else:
            self.run.record_next = True

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
        threads = self.threads or training_threads()  # (process-wide here: the thread backend is the fallback)
        if threads:
            torch.set_num_threads(threads)
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
            self._finish()

    def _finish(self) -> None:
        with self._cond:
            self.status = {"failed": "failed", "stopped": "stopped", "abandoned": "stopped"}.get(
                self.stop_reason or "stopped", "done"
            )
            self._cond.notify_all()  # wake every waiter: the end is news too

    def _train_in_child(self) -> None:
        """The process backend: fork a child that trains, read what it sends, load its final state back."""
        receiver, sender = _FORK.Pipe(duplex=False)
        _widen(receiver)
        try:
            threads = self.threads or training_threads()
            child = _FORKER.start(_child_main, (self.run, sender, self._child_stop, self._child_record, threads,
                                                self.niceness))
        except BaseException as exc:  # noqa: BLE001
            self.error, self.stop_reason = exc, "failed"
            self._finish()
            return
        sender.close()  # the child's end: EOF here means the child is gone
        try:
            while True:
                if self.idle_timeout_s is not None and time.monotonic() - self._last_seen > self.idle_timeout_s:
                    self.stop_reason = self.stop_reason or "abandoned"
                    self._child_stop.set()
                if not receiver.poll(0.25):
                    if not child.is_alive() and not receiver.poll(0):
                        raise RuntimeError(f"the training process ended unexpectedly (exit code {child.exitcode})")
                    continue
                message = pickle.loads(receiver.recv_bytes())
                if message[0] == "step":
                    snap = message[1]
                    self.history.append(snap)
                    if snap.recorded:
                        self._publish(snap)
                elif message[0] == "end":
                    _, reason, state = message
                    self.run.load_state(state)
                    if self.stop_reason != "abandoned":
                        self.stop_reason = reason
                    break
                else:  # ("error", type name, message, user-facing)
                    _, name, text, user_facing = message
                    raise APMError(text) if user_facing else RuntimeError(f"{name}: {text}")
        except BaseException as exc:  # noqa: BLE001 - handed to whoever watches
            self.error, self.stop_reason = exc, "failed"
            if child.is_alive():
                child.kill()
        finally:
            receiver.close()
            child.join(5.0)
            self._finish()

    def _publish(self, snap: Snapshot) -> None:
        with self._cond:
            self.snapshots.append(snap)
            if self.keep is not None:
                self.snapshots = thin(self.snapshots, self.keep)
            self.latest = snap
            self.version += 1
            self._cond.notify_all()


# the process backend

_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


PIPE_BYTES = 8 * 2**20  # a recorded snapshot is ~0.4 MB (cpu preset): the child writes without waiting for us


def _widen(connection) -> None:
    """Grow a pipe's kernel buffer (Linux), so the child's writes return at once while we are busy."""
    try:
        import fcntl

        limit = int(open("/proc/sys/fs/pipe-max-size").read())
        fcntl.fcntl(connection.fileno(), 1031, min(PIPE_BYTES, limit))  # F_SETPIPE_SZ
    except (ImportError, OSError, ValueError):
        pass


def _can_fork(run: OverfitRun) -> bool:
    return _FORK is not None and run.device.type == "cpu"


def _close_inherited_sockets() -> None:
    """A child forked from a web server holds copies of the server's connections, and a connection a client
    closes does not end for the server while a copy is open: close them (our pipe to the parent is no socket)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (macOS): nothing to find them by
        return
    for fd in fds:
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


def _child_main(run: OverfitRun, sender, stop, record, threads: int | None, niceness: int = 0) -> None:
    """In the forked child: train, send every step (with its arrays when recorded), then the final state."""
    try:
        _close_inherited_sockets()
        if niceness > 0:
            lower_priority(niceness)
        if threads:
            torch.set_num_threads(threads)
        reason = "stopped"
        for snap in run:
            sender.send_bytes(pickle.dumps(("step", snap), protocol=pickle.HIGHEST_PROTOCOL))
            if snap.done:
                reason = snap.stop_reason
                break
            if stop.is_set():
                break
            if record.is_set():
                record.clear()
                run.record_next = True
        # plain pickle bytes: multiprocessing's own pickler would share tensors through handles that die with us
        sender.send_bytes(pickle.dumps(("end", reason, run.state()), protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        try:
            sender.send_bytes(pickle.dumps(("error", type(exc).__name__, str(exc), isinstance(exc, APMError))))
        except Exception:  # noqa: BLE001 - the parent sees EOF instead
            pass
    finally:
        sender.close()
        os._exit(0)  # no atexit handlers, no flushing of the parent's copied buffers


class _Forker:
    """Starts child processes from one thread that never runs torch (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ready(self) -> None:
        """Start the forking thread now (it inherits this thread's scheduling priority, as will the children)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="apm-forker")
                self._thread.start()

    def start(self, target, args) -> multiprocessing.process.BaseProcess:
        self.ready()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((target, args, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            target, args, future = self._jobs.get()
            try:
                process = _FORK.Process(target=target, args=args, daemon=True, name="apm-train")
                process.start()
                future.set_result(process)
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)


_FORKER = _Forker()


def prioritise_training(niceness: int = 7) -> bool:
    """Let training processes run before this thread and every thread it starts later (a web server).

    Starts the forking thread at today's priority, then lowers the calling thread's priority (Linux niceness is
    per thread and inherited by new threads; raising it needs no privilege). A server's short, frequent wake-ups
    otherwise preempt one of torch's two OpenMP threads mid-step and the other waits at the barrier. The server
    still runs in the gaps training leaves, so its frames arrive, a little later at worst. False where it cannot.
    """
    if _FORK is None or not hasattr(os, "nice"):
        return False
    _FORKER.ready()
    return lower_priority(niceness)
