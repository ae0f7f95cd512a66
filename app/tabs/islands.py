"""The Islands tab: pick an experiment, an image and a teacher, press Run, and watch an APM's islands form.

The controls come from the registry (`app/controls.py`): the page is read into an `Experiment` by name and
written back by name (recipes, shared links). The panels (`app/panels/`) draw every run's frames; this module
lays out the controls, places the panels, and paces the run engine (`app/engine.py`) into the page. A trained
APM (a checkpoint) shows its islands of the image from one forward pass, and Run then trains it further.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr

from apm.errors import APMError, InputError
from apm.islands import Projection, project
from apm.recipes import FILE_TEACHER, RECIPES, Experiment, estimate_seconds, experiment, format_duration
from apm.teachers import teacher_spec

from .. import engine, trained
from ..controls import (
    GRID_AUTO,
    LINK_INPUTS,
    LINK_KEYS,
    RECIPE_SHOWN,
    Controls,
    layer_update,
    read_grid,
)
from ..panels import Panel, RenderContext, default_panels
from ..session import Frame, RunRecord, Session, View
from ..widgets import (
    LIMITS,
    PRESET_CHOICES,
    PROJECTION_CHOICES,
    Tab,
    check_upload,
    choice,
    example_gallery,
    example_paths,
    file_name,
    guarded,
    label_of,
    number,
    page_experiment,
    page_teacher,
    read_features,
    read_image,
    read_steps,
    recipe_choices,
    selected_index,
    session_for,
    status_html,
    teacher_choices,
    toast,
    user_message,
    whole,
)

SLOW_PANELS_EVERY_S = 2.0  # the conv filter and the unfolded queries change slowly: refreshed every 2 s
RECIPE_CONTROLS = tuple(name for name in RECIPE_SHOWN if name != "seed")  # a recipe leaves the seed alone

# plotly's hover and click events reach the server through a hidden box: hovering a point of the islands scatter
# names its location ('loc:<index>'), clicking a segment of the part-whole tree names it ('seg:<id>'); a counter
# makes each event a new value
PLOT_EVENTS_JS = """() => {
    const send = (text) => {
        const box = document.querySelector('#plot-pick textarea, #plot-pick input');
        if (!box) return;
        window.__apmPick = (window.__apmPick || 0) + 1;
        box.value = text + ':' + window.__apmPick;
        box.dispatchEvent(new Event('input', {bubbles: true}));
    };
    const point = (e) => { const p = e.points && e.points[0]; if (p) send('loc:' + p.pointNumber); };
    const segment = (e) => { const p = e.points && e.points[0]; if (p && p.id) send('seg:' + p.id); };
    // each plot element once, as plotly first draws it (the page's plot hook, KEEP_VIEW_JS in app/ui.py)
    (window.__apmPlotHooks = window.__apmPlotHooks || []).push((gd) => {
        const on = gd.closest('#islands-plot') ? point : gd.closest('#part-whole-tree') ? segment : null;
        if (on) { gd.on('plotly_hover', on); gd.on('plotly_click', on); }
    });
}"""
# the browser copies the link (the clipboard may be refused: the box shows it either way)
COPY_LINK_JS = """(query) => {
    const url = window.location.origin + window.location.pathname + query;
    if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
    return url;
}"""


def recipe_markdown(name: str) -> str:
    recipe = RECIPES[name]
    if not recipe.settings:
        return f"**{recipe.title}.** {recipe.description}"
    shown = ", ".join(f"{k.replace('_', ' ')} = {v}" for k, v in recipe.settings.items())
    return f"**{recipe.title}.** {recipe.description}\n\n*This recipe set:* {shown}. Change anything afterwards."


def expected_markdown(exp: Experiment) -> str:
    """The expected CPU time of a run, said before it starts."""
    try:
        seconds = estimate_seconds(exp)
    except APMError as exc:
        return user_message(exc)
    text = f"Expected time on this machine: about {format_duration(seconds)}"
    if exp.trains and seconds > LIMITS.max_run_seconds:
        text += f" · runs are cut off after {LIMITS.max_run_seconds:.0f} s on this shared hardware"
    return text


class IslandsTab(Tab):
    """The controls by name, the panels in order; handlers return {component: value} dicts."""

    key = "islands"
    starting = "starting: reading the image and the teacher…"

    def __init__(self, panels: list[Panel] | None = None):
        self.controls = Controls()
        self.panels = default_panels() if panels is None else list(panels)
        for panel in self.panels:
            panel.host = self  # a panel knows the tab only as a `PanelHost`

    def panel(self, name: str) -> Panel:
        return next(p for p in self.panels if p.name == name)

    # layout

    def build(self) -> IslandsTab:
        start = page_experiment("custom")
        c = self.controls
        with gr.Row(elem_id="action-bar", equal_height=False):
            self.run_btn = gr.Button("Run", variant="primary", elem_id="run", scale=0, min_width=90, size="lg")
            self.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", scale=0, min_width=90, size="lg")
            self.status = gr.HTML(status_html("Ready: pick an image and a teacher, then press Run."),
                                  elem_id="status", scale=5, min_width=300)
            # shown while a recorded run is replayed: its last frame at once, or the same run trained again
            self.skip_btn = gr.Button("Skip to the end", elem_id="skip", scale=0, min_width=90, size="sm", visible=False)
            self.anew_btn = gr.Button("Train anew", elem_id="train-anew", scale=0, min_width=90, size="sm",
                                      visible=False)
            self.copy_link = gr.Button("Copy link", elem_id="copy-link", scale=0, min_width=90, size="sm")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300, elem_id="inputs"):
                c.make("recipe", start)
                self.recipe_note = gr.Markdown(recipe_markdown("custom"), elem_id="recipe-note")
                with gr.Accordion("Trained APM (a checkpoint)", open=False, elem_id="trained"):
                    c.add("checkpoint", gr.Dropdown(
                        trained.checkpoint_choices(), value=trained.NONE, label="Start from", elem_id="checkpoint",
                        allow_custom_value=True, info="islands of your image in one forward pass; Run then trains it "
                        "further on this image. hf:ORG/REPO fetches one from the Hub."))
                    self.checkpoint_files = gr.File(label="… or upload model.safetensors + config.json",
                                                    file_count="multiple", file_types=[".safetensors", ".json"],
                                                    elem_id="checkpoint-files")
                c.make("image", start)
                self.examples = gr.Gallery(example_gallery(), label="Examples (click one)", columns=3, height="auto",
                                           allow_preview=False, elem_id="examples", object_fit="cover", buttons=[])
                for name in ("teacher", "layer", "grid", "random_weights", "features", "target", "labels"):
                    c.make(name, start)
                with gr.Accordion("Training", open=False, elem_id="training"):
                    for name in ("preset", "steps", "lr", "lr_schedule", "seed", "record_every"):
                        c.make(name, start)
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    for name in ("rgb_weight", "feature_loss", "normalize_target", "init", "global_head", "precision"):
                        c.make(name, start)
                c.make("projection", start)
                with gr.Accordion("t-SNE settings", open=False, elem_id="tsne"):
                    for name in ("perplexity", "metric", "tsne_init", "comparable"):
                        c.make(name, start)
                self.expected = gr.Markdown(expected_markdown(start), elem_id="expected")
                self.link = gr.Textbox(label="Link to these settings (an example image, teacher, layer, recipe, seed, "
                                       "steps and view)", elem_id="share-link", interactive=False, visible=False,
                                       buttons=["copy"])
            with gr.Column(scale=3, min_width=300):
                for panel in self.panels:
                    panel.build(self)
        self._wire()
        return self

    # what events read and set, derived from the controls and the panels

    @property
    def panel_outputs(self) -> list[gr.Component]:
        return [component for panel in self.panels for component in panel.outputs]

    @property
    def frame_outputs(self) -> list[gr.Component]:
        """What a frame sets (the live stream, the timeline): the status and what the panels draw of a frame."""
        return [self.status, self.skip_btn, self.anew_btn, *(c for panel in self.panels for c in panel.frame_outputs)]

    @property
    def run_outputs(self) -> list[gr.Component]:
        """What a new run (or a one-pass decoding) sets: the status and every panel, reset then drawn."""
        return [self.status, self.skip_btn, self.anew_btn, *self.panel_outputs]

    @property
    def visibility_outputs(self) -> list[gr.Component]:
        """What follows the teacher picker: the feature-file box, the labels box, the untrained box, and what the
        panels show only for some teachers."""
        return [*self.controls.inputs(("features", "labels", "random_weights")),
                *(c for panel in self.panels for c in panel.teacher_outputs)]

    @property
    def setting_outputs(self) -> list[gr.Component]:
        """What a recipe or a shared link sets."""
        c = self.controls
        return list(dict.fromkeys([*c.inputs(RECIPE_CONTROLS), c["recipe"], c["image"], c["seed"], self.recipe_note,
                                   self.expected, *self.visibility_outputs, self.status]))

    def _wire(self) -> None:
        c, private = self.controls, self.private
        c["recipe"].input(self.on_recipe, [c["recipe"]], self.setting_outputs, queue=False, **private("recipe"))
        c["teacher"].input(self.on_teacher, [c["teacher"]], [c["layer"], *self.visibility_outputs], queue=False,
                           **private("teacher"))
        c["preset"].input(self.on_preset, [c["preset"]], [c["lr"]], queue=False, **private("preset"))
        for name in ("teacher", "layer", "grid", "target", "preset", "steps", "recipe"):
            c[name].change(self.on_settings, c.inputs(), [self.expected], queue=False, preprocess=False,
                           trigger_mode="always_last", **private("expected"))
        c["image"].change(self.on_image, [c["image"]], [self.status], queue=False, preprocess=False, **private("image"))
        self.examples.select(self.on_example, None, [c["image"]], queue=False, **private("example"))

        # Run: stop what runs here now (unqueued), then prepare, then stream; a new Run always starts a new run
        run = self.run_btn.click(self.begin, None, [self.status], queue=False, trigger_mode="multiple", **private("begin"))
        run = run.then(c.handler(self.prepare_values), c.inputs(), self.run_outputs, preprocess=False, concurrency_limit=2,
                       concurrency_id="prepare", show_progress="hidden", trigger_mode="multiple", **private("prepare"))
        # the run driver keeps the line and the training slots: every stream is admitted and told its place
        run.then(self.stream, None, self.frame_outputs, concurrency_limit=None, show_progress="hidden",
                 trigger_mode="multiple", **private("stream"))
        self.stop_btn.click(self.stop, None, None, queue=False, **private("stop"))
        self.skip_btn.click(self.skip, None, None, queue=False, **private("skip"))
        # Train anew: the same chain as Run, past the run cache (the new recording replaces the old)
        anew = self.anew_btn.click(self.begin_anew, None, [self.status], queue=False, **private("begin_anew"))
        anew = anew.then(c.handler(self.prepare_values), c.inputs(), self.run_outputs, preprocess=False,
                         concurrency_limit=2, concurrency_id="prepare", show_progress="hidden", **private("prepare_anew"))
        anew.then(self.stream, None, self.frame_outputs, concurrency_limit=None, show_progress="hidden",
                  **private("stream_anew"))

        # a trained APM: its islands of the image at once (one forward pass), no training
        trained_inputs = c.inputs(("image", "checkpoint", "projection", "comparable"))
        trained_outputs = list(dict.fromkeys([*self.run_outputs, c["teacher"], c["layer"]]))
        for name in ("checkpoint", "image"):
            c[name].change(self.on_trained, trained_inputs, trained_outputs, preprocess=False, concurrency_limit=2,
                           concurrency_id="levels", show_progress="minimal", trigger_mode="always_last",
                           **private("trained"))
        self.checkpoint_files.upload(self.on_checkpoint_upload, [self.checkpoint_files], [c["checkpoint"], self.status],
                                     preprocess=False, concurrency_limit=2, concurrency_id="levels",
                                     **private("checkpoint_upload"))
        # a shareable link: built here, copied by the browser
        self.copy_link.click(self.share_link, c.inputs(LINK_INPUTS), [self.link], queue=False,
                             preprocess=False, **private("link")).then(None, [self.link], [self.link], js=COPY_LINK_JS)
        for panel in self.panels:
            panel.wire(self)

    # settings

    def on_recipe(self, name: str) -> dict:
        """Picking a recipe sets every control it names (and shows what it set)."""
        name = choice(name, recipe_choices(), "experiment")
        exp = page_experiment(name)
        out = self.controls.show(exp, RECIPE_CONTROLS)
        out.update({self.recipe_note: recipe_markdown(name), self.expected: expected_markdown(exp)})
        out.update(self._teacher_visibility(exp.teacher))
        return out

    def _teacher_visibility(self, teacher_id: str) -> dict:
        own = teacher_id == FILE_TEACHER
        zero_shot = not own and teacher_spec(teacher_id).supports_zero_shot
        c = self.controls
        out = {c["features"]: gr.update(visible=own), c["labels"]: gr.update(visible=zero_shot),
               c["random_weights"]: gr.update(visible=not own)}
        for panel in self.panels:
            out.update(panel.on_teacher(teacher_id))
        return out

    def on_teacher(self, teacher_id: str, layer: float | None = None) -> dict:
        """The layer slider, the feature-file box, the labels boxes and the untrained box follow the teacher."""
        teacher_id = choice(teacher_id, teacher_choices(), "teacher")
        return {self.controls["layer"]: layer_update(teacher_id), **self._teacher_visibility(teacher_id)}

    def on_preset(self, preset: str) -> dict:
        """Picking a preset puts its learning rate in the box: a run uses exactly what the page shows."""
        return {self.controls["lr"]: experiment(preset=choice(preset, PRESET_CHOICES, "preset")).effective_lr}

    def on_settings(self, *values) -> dict:
        try:
            exp = self.controls.read(self.controls.named(values)).experiment
        except APMError:
            return {self.expected: gr.skip()}
        return {self.expected: expected_markdown(exp)}

    def on_image(self, payload) -> dict:
        """A chosen file is checked at once: a bad upload is reported now, and a stale error is cleared."""
        message = check_upload(payload)
        if not message:
            return {self.status: status_html("Ready: pick a teacher and press Run.")}
        if message.endswith("ready"):
            return {self.status: status_html(f"{message}: press Run.")}
        toast(message)
        return {self.status: status_html(message, "error")}

    def on_example(self, evt: gr.SelectData) -> dict:
        paths = example_gallery()
        return {self.controls["image"]: paths[selected_index(evt)][0]}

    # running

    def prepare(self, *values: Any, request: gr.Request = None) -> dict:
        """`prepare_values` with the controls' values in the registry's order (tests, scripts)."""
        return self.prepare_values(self.controls.named(values), request=request)

    @guarded("preparing a run")
    def prepare_values(self, values: dict[str, Any], request: gr.Request = None) -> dict:
        """Validate, encode, build; reset the panels for the new run. `values`: the page's, by control name."""
        session = session_for(request)
        state = session.islands
        run_id = session.run_id
        settings = self.controls.read(values)
        exp = settings.experiment
        picture = read_image(settings.image)
        features = read_features(settings.features) if exp.teacher == FILE_TEACHER else None
        view = View(exp, settings.comparable)
        loaded = trained.load(exp.checkpoint, session)
        # the same run trained before, or training now: replayed or joined, with nothing prepared again
        started = engine.start_run(exp, view, picture, file_name(settings.image), features, settings.labels, run_id,
                                   loaded, fresh=state.fresh, wanted=lambda: session.is_current(run_id))
        source, record = started.source, started.record
        if source in ("joined", "trained"):
            session.watch(started.run, started.viewer)  # left again by Stop or a newer run, even before the stream
            if not session.is_current(run_id):  # Stop or a newer Run came first
                started.run.leave(started.viewer)
                source = "stopped"
        if source == "stopped":
            return {self.status: status_html("stopped before it started")}
        state.view = view
        out = self.reset(record)
        if source == "teacher":  # the teacher's own islands: nothing to train
            state.show(record)
            out[self.status] = status_html(
                f"done · the teacher's own islands: {record.grid_shape[0]} x {record.grid_shape[1]} locations, "
                f"{label_of(exp.projection, PROJECTION_CHOICES)} · {record.teacher_label}", "done")
            return out
        state.pending = (run_id, source, record if source == "replayed" else (started.run, started.viewer))
        if source == "trained":
            expected = format_duration(estimate_seconds(record.experiment))
            out[self.status] = status_html(f"training starts (expected {expected}) · {record.teacher_label}", "running")
        else:
            out[self.status] = status_html(f"{'replaying' if source == 'replayed' else 'joining'} the same run "
                                           f"(same image and settings) · {record.teacher_label}", "running")
        return out

    def reset(self, record: RunRecord) -> dict:
        out: dict = {}
        for panel in self.panels:
            out.update(panel.reset(record))
        return out

    def begin_anew(self, request: gr.Request = None) -> dict:
        """Train anew: like Run, but the run cache is not read (the new recording replaces the old one)."""
        out = self.begin(request=request)
        session_for(request).islands.fresh = True
        return out

    def skip(self, request: gr.Request = None) -> None:
        """Skip to the end of a replay: its last frame at once."""
        session_for(request).islands.skip = True

    @guarded("a run", "the run failed: ")
    def stream(self, request: gr.Request = None) -> Iterator[dict]:
        """Follow the prepared run: replayed from the run cache when this exact run was trained before, joined when
        it is training for another visitor now, else submitted to the driver (its place in line, then its frames)."""
        session = session_for(request)
        state = session.islands
        pending, state.pending = state.pending, None
        state.fresh = state.skip = False  # Train anew was read when the run was prepared
        if pending is not None and session.is_current(pending[0]):  # found by its key when it was prepared
            run_id, source, what = pending
            if source == "replayed":
                yield from self.replay(session, what, run_id)
                return
            run, viewer = what
            state.show(run.context.record)
            state.source = source
            yield from self.follow(session, run, viewer, run_id)
            return
        # nothing to follow (failed, stopped, superseded, or teacher islands only): one update that changes
        # nothing, because a generator that yields none has Gradio blank all of its outputs
        yield {self.status: gr.skip()}

    def replay(self, session: Session, record: RunRecord, run_id: int) -> Iterator[dict]:
        """A recorded run, frame by frame at the live cadence (Skip to the end: the last at once), said plainly."""
        state = session.islands
        state.show(record)
        state.source = "replayed"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created or time.time()))
        lead = (f"replayed: this exact run was trained on {when} (same image and settings); Train anew runs it "
                "again")
        shown = {self.skip_btn: gr.update(visible=True), self.anew_btn: gr.update(visible=True)}
        last_slow, previous, frame = 0.0, None, None
        for item in engine.replay(record, skip=lambda: state.skip, stop=lambda: not session.is_current(run_id)):
            frame, previous = self.in_recorded_view(state, record, item, previous)
            slow = item.final or time.monotonic() - last_slow >= SLOW_PANELS_EVERY_S
            if slow:
                last_slow = time.monotonic()
            out = self.render(record, frame, live=not item.final, slow=slow, teacher=state.teacher_view)
            out[self.status] = status_html(engine.status_text(record, frame, lead, shown=True), "running")
            yield {**out, **shown}
            shown = {}
        if session.superseded(run_id) or frame is None:
            return
        stopped = not session.is_current(run_id)
        out = self.render(record, frame, live=False, slow=True, teacher=state.teacher_view)
        out[self.status] = status_html(engine.status_text(
            record, frame, f"stopped by you · {lead}" if stopped else lead, shown=True), "done")
        yield {**out, self.skip_btn: gr.update(visible=False), self.anew_btn: gr.update(visible=True)}

    def in_recorded_view(self, state, record: RunRecord, frame: Frame, previous) -> tuple[Frame, Any]:
        """A recorded frame as this page draws it (see `in_view`; a recording without the teacher's islands is
        shown as it was drawn)."""
        if state.view is None or record.teacher_projection is None:
            return frame, None
        return _drawn_here(state, View(record.experiment, state.view.comparable), record, frame, previous)

    def follow(self, session: Session, run: engine.Run, viewer: int, run_id: int) -> Iterator[dict]:
        """This page's view of a run: where it stands in line, then each frame (drawn again in this page's own view
        if it changed the view), then the final frame with how the run ended. Leaves the run when it returns."""
        state = session.islands
        record = run.context.record
        last_slow, previous = 0.0, None
        joined = state.source == "joined"
        lead = "training, joined: the same image and settings were already training" if joined else "training"
        try:
            for item in run.follow(viewer):
                if session.superseded(run_id):
                    return  # a newer run owns the page: nothing more of this one reaches it
                if isinstance(item, engine.Waiting):
                    yield {self.status: status_html(f"{item.status()} · {record.teacher_label}",
                                                    "running")}
                    continue
                if item.final:
                    break  # the final frame (a full fit): sent once, below, with how the run ended
                frame, previous = self.in_view(state, run, item, previous)
                slow = time.monotonic() - last_slow >= SLOW_PANELS_EVERY_S
                if slow:
                    last_slow = time.monotonic()
                yield self.render(record, frame, live=True, slow=slow, teacher=state.teacher_view, lead=lead)
            if session.superseded(run_id):
                return
            left = session.stopped_id == session.run_id  # Stop on this page: it left the run
            if not run.finished and (not left or run.viewers == 0):
                run.wait_finished(30.0)  # its final frame came (or the last viewer stopped it): it ends within a step
            if not record.frames:
                return
            kind, lead = engine.ending(record) if run.finished else ("done", "stopped by you: this page left the run "
                                                                     "(it goes on for the others who watch it)")
            if joined and run.finished:
                lead = f"{lead} (joined)"
            last, _ = self.in_view(state, run, record.frames[-1], previous)
            yield self.render(record, last, live=False, slow=True, lead=lead, kind=kind, teacher=state.teacher_view)
        finally:
            run.leave(viewer)

    @staticmethod
    def in_view(state, run: engine.Run, frame: Frame, previous) -> tuple[Frame, Any]:
        """The frame as this page draws it: the run's own drawing, or (after a change of view here) drawn again,
        warm-started from this page's previous drawing."""
        return _drawn_here(state, run.context.view, run.context.record, frame, previous)

    def render(self, record: RunRecord, frame: Frame, *, live: bool, slow: bool, lead: str = "training",
               kind: str = "running", shown: bool = False, one_pass: bool = False, teacher: Projection | None = None
               ) -> dict:
        """Every panel's drawing of one frame, and the status line (`teacher`: the teacher's islands as this page
        draws them, when not the run's own)."""
        ctx = RenderContext(record, frame, live=live, slow=slow, shown=shown, one_pass=one_pass, teacher=teacher)
        out = {self.status: status_html(engine.status_text(record, frame, lead, shown), kind)}
        for panel in self.panels:
            out.update(panel.render(ctx))
        return out

    # a trained APM

    @guarded("a checkpoint upload")
    def on_checkpoint_upload(self, files, request: gr.Request = None) -> dict:
        """An uploaded model.safetensors + config.json: checked now, then chosen."""
        value = trained.save_upload(files, session_for(request))
        choices = trained.checkpoint_choices([("your uploaded checkpoint", value)])
        return {self.controls["checkpoint"]: gr.update(choices=choices, value=value),
                self.status: status_html("checkpoint uploaded and checked: pick an image to see its islands")}

    @guarded("a trained APM's islands")
    def on_trained(self, image, checkpoint, projection, comparable, request: gr.Request = None) -> dict:
        """A trained APM and an image: the islands, colours and fidelity from one forward pass, no training."""
        session = session_for(request)
        state = session.islands
        if not checkpoint:
            return {self.status: gr.skip()}
        loaded = trained.load(checkpoint, session)
        if image is None:
            return {self.status: status_html(f"{trained.describe(loaded)}: pick an image to see its islands")}
        picture = read_image(image)
        base = replace(state.view.experiment if state.view is not None else Experiment(),
                       projection=choice(projection, PROJECTION_CHOICES, "islands view"), checkpoint=str(checkpoint))
        exp = engine.trained_experiment(base, loaded) if loaded.meta.get("teacher") else base
        view = View(exp, bool(comparable))
        record, seconds = engine.one_pass_run(session.new_run(), exp, picture, file_name(image), loaded, view)
        state.view = view
        state.show(record)
        state.shown = 0
        frame = record.frames[0]
        out = {**self.reset(record), **self.render(record, frame, live=False, slow=True, lead="", kind="done",
                                                   shown=True, one_pass=True)}
        out[self.status] = status_html(
            f"{trained.describe(loaded)} · islands of {record.image_name} from one forward pass in {seconds:.2f} s "
            f"(no training) · {frame.metrics.n_islands} islands · press Run to train it further on this image", "done")
        if loaded.meta.get("teacher"):
            out[self.controls["teacher"]] = exp.teacher
            out[self.controls["layer"]] = layer_update(exp.teacher, exp.layer)
        return out

    # links

    def share_link(self, recipe, image, teacher, layer, grid, seed, steps, projection, perplexity) -> dict:
        """The query string of a link that opens the page with these settings (an example image only)."""
        from urllib.parse import urlencode

        values = {"recipe": recipe, "teacher": teacher, "layer": layer, "seed": seed, "steps": steps,
                  "projection": projection, "perplexity": perplexity,
                  "grid": None if grid in (None, "", GRID_AUTO) else grid}
        stem = Path(file_name(image)).stem if image else ""
        if stem and any(p.stem == stem for p in example_paths()):
            values["example"] = stem
        query = {k: (int(v) if isinstance(v, float) and float(v).is_integer() else v)
                 for k in LINK_KEYS if (v := values.get(k)) not in (None, "")}
        return {self.link: gr.update(value="?" + urlencode(query), visible=True)}

    def from_link(self, request: gr.Request = None) -> dict:
        """Open the page with a shared link's settings (query parameters), ready to run."""
        params = dict(getattr(request, "query_params", None) or {})
        params = {k: v for k, v in params.items() if k in LINK_KEYS}
        if not params:
            return {self.status: gr.skip()}
        try:
            recipe = choice(params.get("recipe", "custom"), recipe_choices(), "experiment")
            base = experiment(recipe)
            changes = {
                "teacher": choice(params.get("teacher", page_teacher(base.teacher)), teacher_choices(), "teacher"),
                "layer": whole(params["layer"], "layer", 0, 0, 1000) if "layer" in params else None,
                "grid": read_grid(params["grid"]) if "grid" in params else None,
                "seed": whole(params["seed"], "seed", 0, 0, 2**31 - 1) if "seed" in params else None,
                "steps": read_steps(params["steps"]) if "steps" in params else None,
                "projection": (choice(params["projection"], PROJECTION_CHOICES, "islands view")
                               if "projection" in params else None),
                "perplexity": (number(params["perplexity"], "perplexity", None, 2, 100)
                               if "perplexity" in params else None),
            }
            exp = experiment(recipe, **changes)
            out = self.on_recipe(recipe)
            out.update(self.controls.show(exp, ("recipe", *RECIPE_CONTROLS, "seed")))
            out.update(self._teacher_visibility(exp.teacher))
            if "example" in params:
                found = [p for p in example_paths() if p.stem == params["example"]]
                if not found:
                    raise InputError(f"the link names an example that is not here: {params['example']!r}")
                out[self.controls["image"]] = str(found[0])
        except APMError as exc:
            return {self.status: status_html(f"this link could not be opened: {user_message(exc)}", "error")}
        out[self.status] = status_html("Opened a shared link: its settings are set; press Run.")
        return out

    @property
    def link_outputs(self) -> list[gr.Component]:
        return self.setting_outputs


def _drawn_here(state, drawn_in: View, record: RunRecord, frame: Frame, previous) -> tuple[Frame, Any]:
    """(the frame in this page's view, its projection) or (the frame, None) when `drawn_in` already draws it so."""
    if state.view is None or state.view.same_drawing(drawn_in):
        return frame, None
    if state.teacher_view is None and record.teacher_grid is not None:
        state.teacher_view = project(record.teacher_grid, state.view.config)
    drawn = engine.redraw(frame, state.view, previous, state.teacher_view)
    return drawn, drawn.projection
