"""The app's design promises: a new panel is one module and one list; the controls registry reads the page into an
`Experiment` and writes it back; every teacher call goes through the GPU hook; every handler's failure reaches
the page as one of our messages."""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import fields

import gradio as gr
import numpy as np
import pytest

from apm.recipes import RECIPES, Experiment, experiment
from app import engine
from app.controls import BY_NAME, EXPERIMENT_FIELDS, RECIPE_SHOWN, RUN_INPUTS, Controls
from app.panels import Panel, RenderContext, default_panels
from app.tabs.islands import IslandsTab
from app.testing.harness import Req, by_id, example, file_payload, is_error, islands, islands_settings, plain, walk
from app.widgets import STORE

# a new panel, written here as a user of the design would: this module and one list, nothing else


class StepPanel(Panel):
    """Says which step and how many islands each frame shows."""

    name = "step"

    def build(self, tab) -> None:
        self.text = gr.Markdown(elem_id="test-step-panel")

    @property
    def outputs(self) -> list:
        return [self.text]

    def reset(self, record) -> dict:
        return {self.text: "waiting for the first frame"}

    def render(self, ctx: RenderContext) -> dict:
        return {self.text: f"step {ctx.frame.step}: {ctx.frame.metrics.n_islands} islands"}


def test_a_new_panel_is_one_module_and_one_list():
    with gr.Blocks():
        tab = IslandsTab(panels=[*default_panels(), StepPanel()]).build()
    panel = tab.panel("step")
    assert panel.text in tab.frame_outputs  # the event lists are derived from the panels
    request = Req("design-new-panel")
    tab.begin(request=request)
    prepared = by_id(tab.prepare(*islands_settings(example(), steps=20), request=request))
    assert prepared["test-step-panel"] == "waiting for the first frame"
    stream = [by_id(out) for out in tab.stream(request=request)]
    drawn = [out["test-step-panel"] for out in stream if "test-step-panel" in out]
    record = STORE.peek(request.session_hash).islands.run
    assert drawn and drawn[-1] == f"step 20: {record.frames[-1].metrics.n_islands} islands"
    assert len(drawn) == len(stream)  # every frame, live and final
    scrubbed = by_id(tab.panel("timeline").scrub(record.frames[0].step, request=request))
    assert scrubbed["test-step-panel"].startswith(f"step {record.frames[0].step}:")
    STORE.drop(request.session_hash)


# the controls registry


def test_the_registry_reads_and_writes_every_setting():
    assert len(RUN_INPUTS) == len(set(RUN_INPUTS)) and RUN_INPUTS[-1] == "comparable"
    assert {c.name for c in BY_NAME.values()} - {"image", "features", "labels", "comparable"} <= EXPERIMENT_FIELDS
    assert {c.elem_id for c in BY_NAME.values()} >= {"teacher", "layer", "steps", "normalize", "lr-schedule"}
    tab = islands()
    names = {tab.controls[name].elem_id for name in RUN_INPUTS}
    assert names == {c.elem_id for c in BY_NAME.values()}  # every control built, under its element id
    for recipe in RECIPES:
        exp = experiment(recipe, random_weights=True)
        shown = tab.controls.show(exp, ("recipe", *RECIPE_SHOWN))
        values = {name: shown[tab.controls[name]] for name in ("recipe", *RECIPE_SHOWN)}
        values["layer"] = values["layer"]["value"]  # a slider update
        read = Controls.read({**values, "random_weights": True}).experiment
        for f in fields(Experiment):
            if f.name in values:
                assert getattr(read, f.name) == getattr(exp, f.name) or f.name in ("lr", "perplexity", "metric",
                                                                                   "tsne_init", "layer"), f.name
        assert read.effective_lr == exp.effective_lr and read.teacher == exp.teacher
    with pytest.raises(Exception, match="steps must be a whole number"):
        Controls.read({"steps": 10**9})
    with pytest.raises(TypeError, match=f"expected {len(RUN_INPUTS)} values"):
        Controls.named([1, 2, 3])


# the GPU hook


def test_the_gpu_hook_wraps_every_teacher_call(monkeypatch, tmp_path):
    """A fake `spaces` on a pretend ZeroGPU Space counts the decorated calls: the Islands run, the levels strip,
    a trained APM's one pass and the walk all go through it."""
    from apm.model import APM, model_config_for
    from app.engine import islands as engine_islands
    from app.engine import teacher as engine_teacher
    from app.engine import walk as engine_walk

    calls = []

    def gpu(fn):
        def counted(*args, **kwargs):
            calls.append(args[0].name)  # the teacher's registry name
            return fn(*args, **kwargs)

        return counted

    def reload() -> None:
        for module in (engine_teacher, engine_islands, engine_walk, engine):
            importlib.reload(module)

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    reload()
    try:
        root = tmp_path / "checkpoints"
        apm = APM(model_config_for("cpu", feature_dim=384))
        apm.save_pretrained(root / "tiny", meta={"teacher": "dinov2:vit_small_patch14_dinov2.lvd142m", "layer": 0,
                                                 "random_weights": True})
        monkeypatch.setenv("APM_CHECKPOINTS_DIR", str(root))
        tab, request = islands(), Req("design-gpu")
        tab.begin(request=request)
        assert not is_error(tab.prepare(*islands_settings(example(), steps=10), request=request)[tab.status])
        assert len(calls) == 1
        list(tab.stream(request=request))
        tab.panel("levels").on_levels(file_payload(example()), "dinov2", True, "auto", request=request)
        assert len(calls) == 2
        out = by_id(tab.on_trained(file_payload(example()), "tiny", "pca", True, request=request))
        assert "one forward pass" in plain(out["status"]) and len(calls) == 3
        updates = list(walk().train(file_payload(example("face")), file_payload(example("house")), "dinov2", 0,
                                    True, 10, 4, "pca", request=request))
        # one encoding per image: the face at layer 0 was encoded for the trained APM's pass already (shared)
        assert not is_error(by_id(updates[-1])["walk-status"]) and len(calls) == 4
        assert set(calls) == {"dinov2"}
    finally:
        monkeypatch.delenv("SPACES_ZERO_GPU")
        reload()
        STORE.drop("design-gpu")


# failures are our messages


def test_every_handler_failure_reaches_the_page_as_our_message(monkeypatch):
    """Whatever breaks inside a handler, the page gets one line of ours: no traceback, no server path."""
    tab, request = islands(), Req("design-failures")
    boom = RuntimeError("disk exploded at /srv/secret/cache/file.npz")

    def fail(*args, **kwargs):
        raise boom

    def check(out: dict, lead: str = "") -> None:
        text = plain(out[tab.status])
        assert is_error(out[tab.status]), text
        assert text.lstrip("⚠ ").startswith(lead) and "RuntimeError" in text and "/srv" not in text and "Traceback" not in text

    with monkeypatch.context() as mp:
        from app.engine import start as engine_start

        mp.setattr(engine_start, "prepare_run", fail)  # every run is prepared in `start_run`
        tab.begin(request=request)
        check(tab.prepare(*islands_settings(example(), steps=10), request=request))
    with monkeypatch.context() as mp:  # the run's own thread fails: every viewer hears it
        from app.engine import islands as engine_islands

        mp.setattr(engine_islands, "live_frames", fail)
        tab.begin(request=request)
        tab.prepare(*islands_settings(example(), steps=11), request=request)
        check(list(tab.stream(request=request))[-1], "the run failed: ")
    tab.begin(request=request)
    tab.prepare(*islands_settings(example(), steps=10), request=request)
    list(tab.stream(request=request))
    with monkeypatch.context() as mp:
        mp.setattr(engine, "export_run", fail)
        check(tab.panel("export").export(request=request), "the export failed: ")
    with monkeypatch.context() as mp:
        import app.panels.islands as islands_panel

        mp.setattr(islands_panel, "project", fail)
        check(tab.panel("islands").reproject("pca", 30, "cosine", "pca", True, request=request))
    with monkeypatch.context() as mp:
        from app import trained

        mp.setattr(trained, "load", fail)
        check(tab.on_trained(file_payload(example()), "tiny", "pca", True, request=request))
    with monkeypatch.context() as mp:
        mp.setattr(engine, "train_and_walk", fail)
        wtab = walk()
        last = list(wtab.train(file_payload(example()), file_payload(example("house")), "dinov2", 0, True, 10, 4,
                               "pca", request=request))[-1]
        text = plain(last[wtab.status])
        assert is_error(last[wtab.status]) and "RuntimeError" in text and "/srv" not in text
    STORE.drop(request.session_hash)


def test_frames_of_a_run_are_left_as_recorded_by_a_new_view():
    """A change of view draws the shown frame again; the recorded frames (exports, the timeline) stay."""
    tab, request = islands(), Req("design-view")
    tab.begin(request=request)
    tab.prepare(*islands_settings(example(), steps=20), request=request)
    list(tab.stream(request=request))
    state = STORE.peek(request.session_hash).islands
    before = [f.projection for f in state.run.frames]
    tab.panel("islands").reproject("pca", 30, "cosine", "pca", True, request=request)
    assert [f.projection for f in state.run.frames] == before
    assert state.shown_frame().projection.method == "pca" and before[-1].method == "tsne"
    scrubbed = by_id(tab.panel("timeline").scrub(state.run.frames[0].step, request=request))
    assert state.reprojected and np.asarray(scrubbed["islands-image"]).shape[2] == 3
    STORE.drop(request.session_hash)


def test_every_handler_that_reads_the_session_gets_it_from_gradio():
    """Gradio hands `request` (the session) only to a positional-or-keyword parameter: a handler taking it as
    keyword-only would run every visitor in one shared 'local' session."""
    import inspect

    from app.testing.harness import demo

    checked = 0
    for block_fn in demo().fns.values():
        if block_fn.fn is None:
            continue
        params = inspect.signature(block_fn.fn).parameters
        if "request" in params:
            assert params["request"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, block_fn.name
            checked += 1
    assert checked >= 15


def test_streaming_handlers_stay_generators_through_their_wrappers():
    """Gradio streams a handler only when it is a generator function: a wrapper (the controls' positional
    handler, `guarded`) must keep it one, or the page gets the generator object as a value."""
    import inspect

    from app.testing.harness import demo

    streaming = {"islands_stream", "islands_stream_anew", "walk_train", "walk_play", "islands_control",
                 "islands_async_decode", "run", "walk"}
    found = {}
    for block_fn in demo().fns.values():
        if block_fn.fn is not None and block_fn.api_name in streaming:
            found[block_fn.api_name] = inspect.isgeneratorfunction(block_fn.fn)
    assert set(found) == streaming and all(found.values()), found


def test_the_page_sends_unchanged_outputs_as_gradio_would_without_rebuilding_them(monkeypatch):
    """`Page.postprocess_data` sets the outputs an event leaves unchanged aside (an empty update, which Gradio
    answers by rebuilding the component and its config) and sends exactly what Gradio sends, for every way a
    handler leaves an output unchanged: missing from a returned dict, or `gr.skip()` in a list."""
    import asyncio
    import copy

    import plotly.graph_objects as go
    from gradio.state_holder import SessionState

    from app.ui import Page

    figure = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout={"title": {"text": "t"}})
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    with Page() as page:
        outs = [gr.Textbox(), gr.Button("b"), gr.Plot(), gr.HTML(), gr.Markdown(), gr.Slider(0, 10), gr.Image()]
        gr.Button("go").click(lambda: None, None, outs)
    fn = page.fns[0]
    text, button, plot, html, md, slider, img = outs
    cases = [  # (what the handler returns, how many outputs it leaves unchanged)
        ({text: "status"}, 6),  # one kept: Gradio wraps a single output's value
        ({text: "status", plot: figure, img: image}, 4),
        ({slider: gr.update(value=3, maximum=20), button: gr.update(visible=False), md: "**m**"}, 4),
        ({html: gr.skip(), text: "x"}, 6),  # an explicit skip in a dict
        (["a", gr.skip(), figure, gr.skip(), "m", 4, gr.skip()], 3),  # skips in a list
        (["a", gr.update(visible=True), figure, "<b>h</b>", "m", 4, image], 0),  # nothing unchanged
    ]
    rebuilt = []
    monkeypatch.setattr(SessionState, "_update_config", lambda self, key, _orig=SessionState._update_config: (
        rebuilt.append(key), _orig(self, key))[1])

    def run(blocks_cls, case):
        rebuilt.clear()
        value = {k: copy.deepcopy(v) for k, v in case.items()} if isinstance(case, dict) else copy.deepcopy(case)
        out = asyncio.run(blocks_cls.postprocess_data(page, fn, value, SessionState(page)))
        return out, len(rebuilt)

    for case, unchanged in cases:
        ours, ours_rebuilt = run(Page, case)
        theirs, theirs_rebuilt = run(gr.Blocks, case)
        assert len(ours) == len(outs)
        for a, b in zip(ours, theirs):
            if isinstance(a, dict) and "path" in a:  # an image saved to Gradio's cache: the same picture
                assert a.keys() == b.keys() and a["path"].rsplit("/", 1)[-1] == b["path"].rsplit("/", 1)[-1]
            elif isinstance(b, dict) and b.get("props") == gr.skip():  # Gradio's gr.HTML copies the update's own
                assert a == {k: v for k, v in b.items() if k != "props"}  # marker into its props: nothing to change
            else:
                assert a == b
        assert ours_rebuilt == theirs_rebuilt - unchanged  # only the real updates of properties are rebuilt
