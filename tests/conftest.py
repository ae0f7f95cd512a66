"""Shared pytest fixtures. Several test modules use these: add new fixtures in their own section."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` (not only `python -m pytest`) can import apm and tests.corpus
    sys.path.insert(0, str(ROOT))

# Offline, untrained teachers unless the caller chose otherwise: set before anything imports apm or
# huggingface_hub (the hub reads HF_HUB_OFFLINE once, at import). Tests that need other values monkeypatch them.
os.environ.setdefault("APM_RANDOM_WEIGHTS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# teacher outputs cached by the tests go to a throwaway folder, not the user's ~/.cache/apm
os.environ.setdefault("APM_CACHE_DIR", tempfile.mkdtemp(prefix="apm-test-cache-"))

# numpy's BLAS on one thread, as the app pins it (apm.live.serve_single_threaded): the tests run the app's
# handlers in this process, several sessions in threads at once
from threadpoolctl import threadpool_limits  # noqa: E402

_BLAS_PIN = threadpool_limits(limits=1, user_api="blas")


# broken / unusual input corpus (tests/corpus/make_corpus.py)

@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """The folder the corpus is written to (also where the pickle canary would drop its marker)."""
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="session")
def corpus(corpus_dir) -> dict[str, Path]:
    """{name: path} of every corpus file, generated once per test session; see make_corpus's docstring."""
    from tests.corpus.make_corpus import make_corpus

    return make_corpus(corpus_dir)
