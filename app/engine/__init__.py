"""The run engine of the app, without Gradio. One room a concern:

- `teacher`: the one teacher path (`encode_image`, under the ZeroGPU hook) and its shared output cache;
- `islands`: an islands run: prepare, live frames, a trained APM's one pass, status lines;
- `start`: how every islands run starts: replayed, joined, or prepared and submitted once (`start_run`);
- `driver`: the one run driver (its line is `driver.RUNS`, read when called: a test may replace it): every run waits in one line for a training slot, is produced once by its own
  thread, and is followed by its viewers (a run with the same key is joined, not trained again);
- `walk`: the Interpolation tab's training (through the driver) and the walk it decodes;
- `export`: a run's files, through the one run writer `apm.runs`;
- `cache`: the run cache: finished runs by key on disk, replayed to the next visitor (`run_key`, `RUN_CACHE`).

Tabs, panels and the API call the engine; the engine reads and writes the app's state types (`app.session`)
and the library (`apm`), never a tab or a panel.
"""

from __future__ import annotations

from .cache import RUN_CACHE, RunCache, find_run, preparing, run_key
from .driver import QueueFull, Run, Runs, Waiting, drive
from .export import export_run, run_summary
from .islands import (
    content_reference,
    decoder_for,
    ending,
    live_frames,
    make_frame,
    one_pass_run,
    prepare_run,
    producer,
    redraw,
    replay,
    status_text,
    teacher_key,
    trained_experiment,
)
from .start import Prefill, Started, start_run
from .teacher import TEACHER_OUTPUTS, encode_image, image_digest, zero_gpu
from .walk import PROJECTIONS as WALK_PROJECTIONS
from .walk import export_walk, train_and_walk, trained_walk

__all__ = [
    "RUN_CACHE", "Prefill", "Started", "start_run", "RunCache", "find_run", "preparing", "run_key", "replay", "TEACHER_OUTPUTS", "WALK_PROJECTIONS", "QueueFull", "Run", "Runs", "Waiting", "content_reference",
    "decoder_for", "drive", "encode_image", "ending", "export_run", "export_walk", "image_digest", "live_frames",
    "make_frame", "one_pass_run", "prepare_run", "producer", "redraw", "run_summary", "status_text", "teacher_key",
    "train_and_walk", "trained_experiment", "trained_walk", "zero_gpu",
]
