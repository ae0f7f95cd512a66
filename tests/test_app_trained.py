"""A trained APM in the Islands tab: islands from one forward pass, test-time training from it, uploads and bad
checkpoints. The checkpoint is made here by `apm fit` (untrained teacher, a few images) into a checkpoints folder
the app is pointed at (APM_CHECKPOINTS_DIR)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.testing.harness import EXAMPLES, Req, by_id, example, file_payload, is_error, islands, parse_status, plain, run_islands
from app.widgets import STORE


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """checkpoints/tiny: a cpu-preset APM fitted on the example images (DINOv2 layer 0, untrained)."""
    from apm.fit import FitConfig, fit

    root = tmp_path_factory.mktemp("ckpts")
    mp = pytest.MonkeyPatch()
    mp.setenv("APM_CHECKPOINTS_DIR", str(root / "checkpoints"))
    mp.setenv("APM_CACHE_DIR", str(root / "cache"))
    fit(EXAMPLES, root / "run", FitConfig(teacher="dinov2", layer=0, random_weights=True, epochs=2, batch=2,
                                          workers=0, val_fraction=0.0, device="cpu"), progress=False)
    shutil.copytree(root / "run" / "checkpoint", root / "checkpoints" / "tiny")
    yield root / "checkpoints" / "tiny"
    mp.undo()


def test_one_pass_islands_with_no_training(shipped):
    from app import trained

    assert ("tiny (shipped)", "tiny") in trained.checkpoint_choices()
    tab = islands()
    request = Req("trained-one-pass")
    out = by_id(tab.on_trained(file_payload(example("face")), "tiny", "tsne2d", True, request=request))
    text = plain(out["status"])
    assert "from one forward pass" in text and "no training" in text and not is_error(out["status"])
    assert out["islands-image"].shape == (256, 256, 3) and out["rgb-image"].shape == (256, 256, 3)
    assert out["teacher"] == "dinov2" and out["layer"]["value"] == 0  # the checkpoint's own teacher and layer
    session = STORE.peek(request.session_hash)
    frame = session.islands.run.frames[0]
    assert frame.step == 0 and frame.features.shape == (16, 16, 384) and frame.metrics.fidelity is not None

    # the asynchronous panel decodes the trained APM itself, in the teacher's units, as the one pass did
    decoded = [by_id(o) for o in tab.panel("asynchronous").on_decode("row", 50, "rgb", request=request)]
    assert "256 of 256 locations decoded in 6 chunks" in plain(decoded[-1]["async-readout"])
    partial = session.islands.decoding.partial
    assert abs(partial.features - frame.features.astype(float)).max() <= 1e-2 * abs(frame.features).max()
    STORE.drop(request.session_hash)


def test_run_continues_from_the_checkpoint(shipped):
    request = Req("trained-ttt")
    _, fresh = run_islands(Req("trained-fresh"), example("face"), teacher="dinov2", layer=0, steps=10, lr=1e-4)
    prepared, stream = run_islands(request, example("face"), checkpoint="tiny", steps=10, lr=1e-4,
                                   teacher="clip", layer=3)  # the checkpoint's teacher wins over the page's
    assert not is_error(prepared["status"]), plain(prepared["status"])
    status = parse_status(stream[-1]["status"])
    assert status["lead"] == "done" and "from tiny" in status["text"] and "DINOv2" in status["text"]
    session = STORE.peek(request.session_hash)
    warm_first = session.islands.run.live.history.feat_loss[0]
    fresh_first = STORE.peek("trained-fresh").islands.run.live.history.feat_loss[0]
    assert warm_first < 0.9 * fresh_first  # it starts from what the trained APM knew
    STORE.drop(request.session_hash)
    STORE.drop("trained-fresh")


def _upload(folder: Path, tmp: Path, weights: bytes | None = None, config: dict | None = None) -> list[dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.safetensors").write_bytes(weights if weights is not None else (folder / "model.safetensors").read_bytes())
    cfg = config if config is not None else json.loads((folder / "config.json").read_text())
    (tmp / "config.json").write_text(json.dumps(cfg))
    return [file_payload(tmp / "model.safetensors"), file_payload(tmp / "config.json")]


def test_uploads_good_and_bad(shipped, tmp_path):
    tab = islands()
    request = Req("trained-upload")
    good = by_id(tab.on_checkpoint_upload(_upload(shipped, tmp_path / "good"), request=request))
    assert good["checkpoint"]["value"].startswith("upload:") and not is_error(good["status"])
    out = by_id(tab.on_trained(file_payload(example("house")), good["checkpoint"]["value"], "pca", True,
                               request=request))
    assert "your uploaded checkpoint" in plain(out["status"])

    weights = (shipped / "model.safetensors").read_bytes()
    wrong = json.loads((shipped / "config.json").read_text())
    wrong["model"]["feature_dim"] = 128
    cases = {
        "truncated": (_upload(shipped, tmp_path / "t", weights=weights[: len(weights) // 3]), "not a readable safetensors"),
        "pickle": (_upload(shipped, tmp_path / "p", weights=b"\x80\x04\x95" + b"cos\nsystem\n" * 10), "not a readable"),
        "wrong shapes": (_upload(shipped, tmp_path / "w", config=wrong), "do not match its config.json"),
    }
    for name, (files, message) in cases.items():
        bad = by_id(tab.on_checkpoint_upload(files, request=request))
        assert is_error(bad["status"]) and message in plain(bad["status"]), (name, plain(bad["status"]))
        assert "/tmp" not in plain(bad["status"]).replace(str(tmp_path), "")  # no server path beyond the file's own
    one = by_id(tab.on_checkpoint_upload([file_payload(tmp_path / "good" / "config.json")], request=request))
    assert is_error(one["status"]) and "model.safetensors" in plain(one["status"])
    assert is_error(by_id(tab.on_trained(file_payload(example("face")), "../../etc", "pca", True,
                                         request=request))["status"])
    STORE.drop(request.session_hash)


def test_walk_through_a_trained_apm_needs_no_training(shipped):
    from app.testing.harness import walk

    tab = walk()
    request = Req("trained-walk")
    tab.begin(request=request)
    updates = [by_id(out) for out in tab.train(file_payload(example("face")), file_payload(example("car")), "dinov2",
                                               None, True, 300, 5, "pca", "tiny", request=request)]
    last = updates[-1]
    text = plain(last["walk-status"])
    assert "column space" in text and "0 steps" in text and "tiny" in text, text
    session = STORE.peek(request.session_hash)
    walk_ = session.walk
    assert walk_.features.shape == (5, 16, 16, 384) and walk_.rgb.shape == (5, 16, 16, 3)
    assert walk_.endpoint_error < 1e-5  # alpha 0 and 1 decode the two images' own columns
    assert not any("training on both" in plain(u.get("walk-status", "")) for u in updates)
    STORE.drop(request.session_hash)
