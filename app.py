"""Hugging Face Spaces entry point: `python app.py` starts the APM islands explorer."""

from __future__ import annotations

import logging
import os

from app.ui import CSS, MAX_QUEUE, build_demo

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

demo = build_demo()
demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=2)

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        css=CSS,
        max_file_size="25mb",
        show_error=True,
    )
