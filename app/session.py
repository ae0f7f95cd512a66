"""The app's state: every run and session type, and nothing that computes. The engine builds runs and frames
into these types; panels and tabs read them. A session (one browser tab, or one API client) holds what its page
shows; a run's record can be watched by several sessions at once (the same computation, joined), so nothing in a
`RunRecord` belongs to one viewer: a viewer's own view, shown frame and decoding live in its `IslandsState`.

Sessions live in a process-wide registry keyed by Gradio's session hash, so a Stop click (a separate request)
reaches the run it stops. Sessions expire after an idle time, and their files go with them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from apm.asynchronous import Decoder
from apm.content import ContentMetrics, ContentReference
from apm.interpolate import PathProjection
from apm.islands import IslandMetrics, Projection, ProjectionConfig, project
from apm.live import History, LiveRun
from apm.recipes import Experiment
from apm.train import OverfitRun

SESSION_TTL_S = 3600.0  # a session idle this long is dropped with its files
MAX_SESSIONS = 64  # beyond this the least recently used session is dropped
MAX_FRAMES = 120  # frames kept per run for the timeline; older ones are thinned out


@dataclass
class View:
    """How the islands are drawn; the page's projection controls change it, also during a run."""

    experiment: Experiment = field(default_factory=Experiment)  # its projection fields are read
    comparable: bool = True  # the APM's islands rotated onto the teacher's, so an island has one colour in both

    @property
    def config(self) -> ProjectionConfig:
        return self.experiment.projection_config()

    def same_drawing(self, other: View | None) -> bool:
        """Draws frames exactly as `other` does (the same projection settings and colouring)."""
        return other is not None and self.config == other.config and self.comparable == other.comparable


@dataclass(frozen=True)
class Frame:
    """One displayed moment of a run: everything its panels need, so scrubbing recomputes nothing."""

    step: int
    elapsed_s: float
    feat_loss: float
    rgb_loss: float
    features: np.ndarray  # (h, w, d) float16: the unfolded feature grid (exports, agreement maps)
    rgb: np.ndarray  # (h, w, 3) float32 in [0, 1]: the RGB head's reconstruction
    trigger_column: np.ndarray  # (column_dim,) float32
    conv_filter: np.ndarray  # (C, 3, p, p) float32
    projection: Projection  # embedding, colours and islands image
    metrics: IslandMetrics  # island counts, agreement, fidelity map
    global_vector: np.ndarray | None = None  # (d_g,) the APM's global prediction, when it has a global head
    apm_labels: list[tuple[str, float]] | None = None  # zero-shot top-5 of the APM's global vector
    content: ContentMetrics | None = None  # what its islands rest on (CKA to the teacher and to the position, ...)
    final: bool = False  # a run's last frame: a full fit, every figure on every location


@dataclass
class RunRecord:
    """One run of the Islands tab: its settings, what it compares with, and the frames shown."""

    run_id: int
    experiment: Experiment
    image_name: str  # the input's file name (exports, links)
    grid_shape: tuple[int, int]
    input_small: np.ndarray  # (h, w, 3) float32: the input at grid resolution
    teacher_label: str
    teacher_grid: np.ndarray | None = None  # (h, w, d) float32 when the target is a dense grid of this shape
    teacher_projection: Projection | None = None  # the teacher's islands, in the run's projection
    teacher_labels: list[tuple[str, float]] | None = None  # the teacher's zero-shot top-5
    labels: list[str] = field(default_factory=list)  # zero-shot labels asked for
    total_steps: int = 0
    folded: dict[str, Any] = field(default_factory=dict)  # parameter counts and bytes by part
    positional: np.ndarray | None = None  # (h*w, pos_dim) the positional half of the unfolded queries
    content_ref: ContentReference | None = None  # the teacher's grid and the location code, prepared for the frames
    configs: dict[str, Any] | None = None  # the train and model configs it used (`apm.runs.config_record`)
    key: str | None = None  # the run's identity (the run cache and joining): every input that changes what it computes
    created: float | None = None  # when it was trained (a replayed run: the recording's time)
    live: LiveRun | RecordedRun | None = None
    decoder: Decoder | None = None  # a trained APM's one pass: the APM and the image's trigger column
    frames: list[Frame] = field(default_factory=list)
    status: str = "running"  # running | done | stopped | failed
    note: str = ""  # why it ended, when that needs saying

    def add_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        if len(self.frames) > MAX_FRAMES:  # keep the first and the last; drop every other in between
            self.frames = [self.frames[0], *self.frames[1:-1:2], self.frames[-1]]

    def frame_at_step(self, step: float | None) -> tuple[int, Frame]:
        """The recorded frame nearest to a training step (None: the last)."""
        if step is None:
            return len(self.frames) - 1, self.frames[-1]
        steps = np.array([f.step for f in self.frames])
        index = int(np.argmin(np.abs(steps - float(step))))
        return index, self.frames[index]

    def history(self) -> dict[str, np.ndarray]:
        """Every step's losses so far (one consistent copy)."""
        if self.live is None:
            return {"step": np.zeros(0, np.int64), "feat_loss": np.zeros(0), "rgb_loss": np.zeros(0)}
        return self.live.history.arrays()


@dataclass
class Prepared:
    """A validated run, built and ready to train (or, for teacher islands, already done)."""

    run_id: int
    record: RunRecord
    overfit: OverfitRun | None  # None: nothing to train (the teacher's own islands)
    zero_shot: Any = None  # the teacher, when it can score the APM's global vector against labels
    view: View | None = None  # how its frames are drawn (the settings it was prepared with)


@dataclass
class Walk:
    """A trained pair and its decoded walk (the Interpolation tab's slider, Play and export)."""

    alphas: np.ndarray  # (F,)
    rgb: np.ndarray  # (F, h, w, 3)
    features: np.ndarray  # (F, h, w, d)
    path: PathProjection
    own_rgb: np.ndarray  # (2, h, w, 3): each image's own reconstruction
    endpoint_error: float  # max |decode(alpha=0 or 1) - own reconstruction|
    teacher_label: str = ""


class Watched(Protocol):
    """A run a session watches (the engine's `Run`): leaving it detaches this viewer only."""

    def leave(self, viewer: int) -> None: ...

    def request_stop(self) -> None: ...


@dataclass
class RecordedRun:
    """A finished run read back from the run cache: what the panels read of a `LiveRun` (every step's numbers,
    how it ended), nothing that trains. `load_decoder()` rebuilds its APM for the asynchronous panel."""

    history: History
    stop_reason: str | None
    steps_per_s: float
    load_decoder: Any = None  # () -> Decoder: the trained APM and the image's trigger column, from the cache

    alive = False
    finished = True
    backend = "replay"

    @property
    def steps_done(self) -> int:
        return len(self.history)


@dataclass(frozen=True)
class Levels:
    """The teacher's grid at every layer for the image on the page (the levels strip; pointing reads it)."""

    teacher: str  # the teacher id they came from
    grids: list[np.ndarray]  # one (h, w, d) grid per layer


@dataclass
class IslandsState:
    """What the Islands tab holds for one session."""

    run: RunRecord | None = None  # the run the page shows (training, finished, or one trained APM's pass)
    view: View | None = None  # how islands are drawn now (a live run reads it for every frame)
    levels: Levels | None = None  # the levels strip of the image on the page
    point: tuple[int, int] | None = None  # the location last pointed at
    shown: int = -1  # index of the frame the page shows (the timeline's; -1: the newest)
    reprojected: dict[int, Projection] = field(default_factory=dict)  # frames drawn again in a newer view, by index
    stale: bool = False  # the view changed after the run's frames were drawn: show them drawn again
    decoding: Any = None  # the asynchronous panel's partly decoded grid of this run
    teacher_view: Projection | None = None  # the teacher's islands in this page's view, when it is not the run's
    source: str = "trained"  # how this page got the run: trained | joined | replayed
    fresh: bool = False  # the next run is trained anew (Train anew): the run cache is not read
    pending: Any = None  # (run id, "replayed" | "joined", the record or (run, viewer)): found by its key, unprepared
    skip: bool = False  # Skip to the end: a replay shows its last frame at once

    def show(self, record: RunRecord) -> None:
        """A new run on the page: nothing of the old one's view stays."""
        self.run, self.shown, self.stale, self.decoding, self.teacher_view = record, -1, False, None, None
        self.reprojected.clear()

    def teacher_projection(self) -> Projection | None:
        """The teacher's islands as this page draws them (the run's own, unless this page changed the view)."""
        if self.teacher_view is not None:
            return self.teacher_view
        return self.run.teacher_projection if self.run is not None else None

    def frame_in_view(self, index: int) -> Frame:
        """A recorded frame as the page's current view draws it: projected again (once) after a change of view."""
        record, view = self.run, self.view
        frame = record.frames[index]
        if not self.stale or view is None:
            return frame
        if index not in self.reprojected:
            align = self.teacher_projection() if view.comparable else None
            self.reprojected[index] = project(frame.features.astype(np.float32), view.config, align_to=align)
        return replace(frame, projection=self.reprojected[index])

    def shown_frame(self) -> Frame | None:
        """The frame the page shows, in the current view (None before any frame)."""
        record = self.run
        if record is None or not record.frames:
            return None
        return self.frame_in_view(self.shown if 0 <= self.shown < len(record.frames) else len(record.frames) - 1)


class Session:
    """One browser tab: each page tab's state, the run id that stops old runs, and a private folder for exports."""

    def __init__(self, session_id: str, root: Path):
        self.session_id = session_id
        self.lock = threading.Lock()
        self.islands = IslandsState()  # the Islands tab
        self.walk: Walk | None = None  # the Interpolation tab's trained walk
        self.watching: list[tuple[Watched, int, bool]] = []  # the runs watched: (run, viewer id, leave on Stop)
        self.run_id = 0  # the newest run asked for; an older run that sees a newer id stops
        self.stopped_id = -1  # the run id Stop made (a run it ended says so; one a newer Run ended goes quiet)
        self.play_id = 0  # the newest Play of the walk; an older one stops
        self.closed = False  # the tab (or client) went away: nothing more is written for it
        self.last_seen = time.monotonic()
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=root))

    def new_run(self) -> int:
        """A new run id: this session leaves every run it watches (a run ends when its last viewer has left) and
        any Play stops."""
        with self.lock:
            self.run_id += 1
            self.play_id += 1
            self.islands.pending = None
            watching, self.watching = self.watching, []
        for run, viewer, leave in watching:
            if leave:
                run.leave(viewer)
            else:
                run.request_stop()
        return self.run_id

    def watch(self, run: Watched, viewer: int, leave_on_stop: bool = True) -> None:
        """This session now watches `run` as `viewer`: on its next run, Stop or close it leaves the run (which ends
        when its last viewer has left), or, with `leave_on_stop=False` (a walk: Stop still decodes what was
        trained), asks the run to end its training and keeps following it."""
        with self.lock:
            self.watching.append((run, viewer, leave_on_stop))

    def is_current(self, run_id: int) -> bool:
        return run_id == self.run_id

    def superseded(self, run_id: int) -> bool:
        """A newer run owns the page (not merely Stop): this run's last words would overwrite the new one's."""
        return run_id != self.run_id and self.stopped_id != self.run_id

    def stop(self) -> None:
        """Stop: this session leaves the runs it watches (a run nobody else watches ends after its step, a walk
        asked to stop decodes what it trained), a prepared run is never submitted, Play pauses."""
        self.stopped_id = self.new_run()

    def close(self) -> None:
        self.closed = True
        self.stop()
        self.islands = IslandsState()
        self.walk = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def busy(self) -> bool:
        """A run that is still training (an abandoned one stops itself: the driver's idle timeout)."""
        run = self.islands.run
        return bool(self.watching) or (run is not None and run.live is not None and run.live.alive)


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
        stale = [k for k, s in self._sessions.items() if now - s.last_seen > self.ttl_s and not s.busy()]
        by_age = sorted(self._sessions.items(), key=lambda kv: kv[1].last_seen)
        excess = [k for k, s in by_age if not s.busy()][: max(0, len(self._sessions) - self.max_sessions + 1)]
        for key in set(stale) | set(excess):
            self._sessions.pop(key).close()
