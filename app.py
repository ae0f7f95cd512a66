"""Hugging Face Spaces entry point: `python app.py` starts the APM islands explorer."""

from __future__ import annotations

import logging
import os

from apm.env import server_niceness
from apm.live import prioritise_training, serve_single_threaded
from app.ui import CSS, MAX_QUEUE, MAX_THREADS, build_demo, prefill_examples

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
# training processes (forked from a helper thread started here) run before the web server's threads on 2 cores
prioritise_training(server_niceness())
# the server's own torch work on one thread: training processes get the cores, and OpenMP stays fast in them
serve_single_threaded()

demo = build_demo()
demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=2)
# Gradio's queue looks for work every 1 ms when it has none: a thousand wake-ups a second, each of which can
# preempt a training thread mid-step. Every 20 ms is plenty for a human clicking.
demo._queue.sleep_when_free = 0.02
# the examples' default runs train into the run cache now, so a class that clicks an example replays it
prefill_examples()

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        css=CSS,
        max_file_size="25mb",
        show_error=True,
        max_threads=MAX_THREADS,
    )
