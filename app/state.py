"""Per-session state: what one browser tab has run and recorded. Two sessions never share any of it.

Sessions live in a process-wide registry keyed by Gradio's session hash, so a Stop click (a separate
request) reaches the run it stops. Sessions expire after an idle time, and their files go with them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apm.islands import IslandMetrics, Projection

SESSION_TTL_S = 3600.0  # a session idle this long is dropped with its files
MAX_SESSIONS = 64  # beyond this the least recently used session is dropped
MAX_FRAMES = 120  # frames kept per run for the timeline; older ones are thinned out


@dataclass(frozen=True)
class Frame:
    """One displayed moment of a run: everything every panel needs, so scrubbing recomputes nothing."""

    step: int
    total_steps: int
    elapsed_s: float
    steps_per_s: float
    feat_loss: float
    rgb_loss: float
    features: np.ndarray  # (h, w, d) float16: the unfolded feature grid (exports only)
    rgb: np.ndarray  # (h, w, 3) float32 in [0, 1]: the RGB head's reconstruction
    projection: Projection  # embedding, colours and islands image
    metrics: IslandMetrics  # island counts, agreement, fidelity map
    trigger_column: np.ndarray  # (column_dim,) float32
    apm_labels: list[tuple[str, float]] | None = None  # CLIP zero-shot top-5 of the APM's global vector


@dataclass
class RunRecord:
    """Everything recorded for one run. Curves hold every step; frames only the displayed ones."""

    run_id: int
    total_steps: int
    grid_shape: tuple[int, int]
    input_small: np.ndarray  # (h, w, 3) float32 the input at grid resolution
    teacher_label: str
    teacher_islands: np.ndarray | None  # (h, w, 3) float32
    teacher_grid: np.ndarray | None  # (h, w, d) float32
    folded: dict  # parameter counts and bytes by part
    conv_filter: np.ndarray  # (p, p, 3) float32 in [0, 1]: the learned conv filter as an image
    positional: np.ndarray  # (h*w, pos_dim) float32: the positional half of the unfolded queries
    teacher_labels: list[tuple[str, float]] | None = None
    curve_step: list[int] = field(default_factory=list)
    curve_feat: list[float] = field(default_factory=list)
    curve_rgb: list[float] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    status: str = "running"  # running | done | stopped | failed
    stop_reason: str | None = None
    last_active: float = field(default_factory=time.monotonic)  # when the run last took a step

    def add_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        if len(self.frames) > MAX_FRAMES:  # keep the first and the last; drop every other in between
            self.frames = [self.frames[0], *self.frames[1:-1:2], self.frames[-1]]


class Session:
    """One tab: its current run, a stop flag, and a private folder for exports."""

    def __init__(self, session_id: str, root: Path):
        self.session_id = session_id
        self.lock = threading.Lock()
        self.run: RunRecord | None = None
        self.walk = None  # the interpolation tab's trained walk (app.interpolation.Walk)
        self.active_run_id = 0
        self.stop_event = threading.Event()
        self.queued = False  # Run was pressed and its run has not started yet
        self.last_seen = time.monotonic()
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=root))

    def queue_run(self) -> None:
        """Run was pressed: the running run stops now, and the next run to start here takes a fresh stop flag.

        A Stop pressed while that run still waits in the queue sets the fresh flag, so the run ends as it starts.
        """
        with self.lock:
            self.active_run_id += 1
            self.stop_event.set()
            self.stop_event = threading.Event()
            self.queued = True

    def start_run(self) -> int:
        """The id of a starting run; a run still going in this session sees it and stops.

        After `queue_run` (the page's Run button) the queued id and its stop flag are taken as they are; a run
        started straight through the API gets a new id and a fresh flag.
        """
        with self.lock:
            if not self.queued:
                self.active_run_id += 1
                self.stop_event.set()
                self.stop_event = threading.Event()
            self.queued = False
            return self.active_run_id

    def should_stop(self, run_id: int) -> bool:
        return self.stop_event.is_set() or run_id != self.active_run_id

    def request_stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.request_stop()
        self.run = None
        self.walk = None
        shutil.rmtree(self.folder, ignore_errors=True)


def _process_root() -> Path:
    """This process's folder for session files, under one shared parent; folders of dead processes are swept."""
    parent = Path(tempfile.gettempdir()) / "apm-app"
    parent.mkdir(parents=True, exist_ok=True)
    for folder in parent.iterdir():
        pid = folder.name.removeprefix("pid-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
    root = parent / f"pid-{os.getpid()}"
    root.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


class SessionStore:
    """Thread-safe registry of sessions, with idle expiry and a size bound."""

    def __init__(self, root: Path | None = None, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS):
        self.root = Path(root) if root else _process_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Session:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id, self.root)
            session.last_seen = time.monotonic()
            return session

    def peek(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def drop(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        stale = [k for k, s in self._sessions.items() if now - s.last_seen > self.ttl_s and not self._busy(s)]
        by_age = sorted(self._sessions.items(), key=lambda kv: kv[1].last_seen)
        excess = [k for k, s in by_age if not self._busy(s)][: max(0, len(self._sessions) - self.max_sessions + 1)]
        for key in set(stale) | set(excess):
            self._sessions.pop(key).close()

    @staticmethod
    def _busy(session: Session) -> bool:
        """A run that stepped recently; one abandoned mid-way (a vanished client) stops counting after a minute."""
        run = session.run
        return run is not None and run.status == "running" and time.monotonic() - run.last_active < 60.0
