"""The page: a tab per module (`app/tabs/`), the shared CSS, and the public API endpoints.

`build_demo()` returns the Blocks; `app.py` at the top level queues and launches it. The API (see "Use via
API" on the page, or the README) is a few typed endpoints with stable keys: `/run`, `/stop`, `/walk`; the page's
own events are callable but undocumented.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import gradio as gr

from . import engine
from .api import api_run, api_stop, api_walk
from .session import View
from .tabs.islands import PLOT_EVENTS_JS, IslandsTab
from .tabs.walk import WalkTab
from .widgets import example_paths, page_experiment, unload

MAX_QUEUE = None  # Gradio's queue refuses nobody: the run driver's line (APM_MAX_QUEUE) says when the app is full
MAX_THREADS = 160  # every visitor's stream waits in a worker thread (Gradio's default of 40 would stall a class)

CSS = """
.apm-offscreen { position: absolute !important; left: -10000px; width: 1px; height: 1px; overflow: hidden; }
.apm-status { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 14px; padding: 8px 12px;
              border-radius: 8px; background: var(--block-background-fill); border: 1px solid var(--border-color-primary);
              overflow-wrap: anywhere; }
.apm-running { border-color: #84adff; }
.apm-done { border-color: #75e0a7; }
.apm-error { color: #b42318; background: #fef3f2; border-color: #fda29b; }
/* Run, Stop and the status stay in view wherever the page is scrolled */
#action-bar, #walk-action-bar { position: sticky; top: 0; z-index: 60; background: var(--background-fill-primary);
              padding: 6px 4px; border-bottom: 1px solid var(--border-color-primary); align-items: center; }
#action-bar .apm-status, #walk-action-bar .apm-status { font-size: 13px; }
/* on a phone the status takes its own line under the buttons */
@media (max-width: 720px) {
  #status, #walk-status { flex-basis: 100% !important; min-width: 100% !important; }
  #action-bar .apm-status, #walk-action-bar .apm-status { font-size: 12px; padding: 4px 8px; }
}
/* grid-resolution images are sent small and enlarged by the browser, crisp */
#input-small img, #islands-image img, #teacher-islands img, #rgb-image img,
#walk-rgb-a img, #walk-rgb img, #walk-islands img, #walk-rgb-b img {
  width: 100% !important; height: 100% !important; object-fit: contain; image-rendering: pixelated; }
/* the conv filter: served at 128 px and shown at its own size (a 100% width in a box that fits its content
   is 0 px wide, and a lazy image that is 0 px wide never loads) */
#conv-filter img { width: 128px !important; height: 128px !important; max-width: 100%; object-fit: contain;
  image-rendering: pixelated; }
.apm-caption { color: var(--body-text-color-subdued); font-size: 13px; }
.apm-labels { padding: 8px 10px; border: 1px solid var(--border-color-primary); border-radius: 8px; }
.apm-labels-title { font-weight: 600; margin-bottom: 6px; }
.apm-label-row { display: grid; grid-template-columns: minmax(4em, 10em) 1fr 3em; gap: 8px; align-items: center;
                 font-size: 13px; margin: 2px 0; }
.apm-label-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.apm-label-bar { background: var(--neutral-100); height: 10px; border-radius: 5px; overflow: hidden; }
.apm-label-bar > span { display: block; height: 100%; background: #4f7df3; }
.apm-label-p { text-align: right; font-variant-numeric: tabular-nums; }
#teacher select, #teacher input { text-overflow: ellipsis; padding-right: 2em; }
/* what the islands rest on: figures, then one sentence */
.apm-content { padding: 6px 10px; border: 1px solid var(--border-color-primary); border-radius: 8px; font-size: 13px; }
.apm-content-figures { font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued); }
.apm-content-figures b { color: var(--body-text-color); }
.apm-content-sentence { margin-top: 2px; }
/* asynchronous perception: the grid filling in, and the cost table */
#async-grid img { image-rendering: pixelated; }
.apm-table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; margin-top: 6px; }
.apm-table caption { text-align: left; color: var(--body-text-color-subdued); padding-bottom: 4px; }
.apm-table th, .apm-table td { padding: 2px 10px; border-bottom: 1px solid var(--border-color-primary); text-align: right; }
.apm-table th:first-child, .apm-table td:first-child { text-align: left; }
/* the examples fit their column: three thumbnails that share its width, captions on up to two lines */
#examples .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
#examples .gallery-item, #examples .thumbnail-item { width: 100% !important; min-width: 0 !important; }
#examples .caption-label { white-space: normal !important; overflow: hidden; text-overflow: clip; max-width: 100%;
              font-size: 11px; line-height: 1.2; padding: 2px 4px; }
"""

INTRO = """
# Islands of agreement with an Asynchronous Perception Machine
Pick an image, an experiment and a teacher network, press **Run**, and watch a fresh APM learn to reproduce the
teacher's features for that one image. Each dot is one location of the image; as training goes on, locations that
belong to the same part of an object gather into islands that share a colour.
"""

ABOUT = """
### What am I looking at?

**GLOM and islands.** Geoffrey Hinton's GLOM is an idea for how a network could represent part-whole
hierarchies: every location of an image holds a vector per level (a pixel-sized part, a bigger part, a whole
object). Locations that belong to the same thing should come to *agree*: their vectors become almost the same.
Such a patch of agreeing locations is an **island**. A nose is an island at one level; the whole face is an
island at a higher level.

**The teacher.** A trained vision network (DINOv2, CLIP, or the video network MViTv2, which is simply shown
the same image 16 times: a still image is a boring video) gives one feature vector per image patch at some
layer. Each layer plays the role of one GLOM level; try early and late layers.

**The Asynchronous Perception Machine (APM).** A tiny machine learns to reproduce the teacher's grid of
features for this one image:
1. one convolution filter slides over the image in non-overlapping patches and squeezes the whole picture into
   one long vector, the **trigger column**;
2. for each location the trigger column is paired with a code that says *where* the location is
   (sine and cosine waves of its row and column), giving one question per location: "what is at (i, j)?";
3. one shared multi-layer perceptron answers every question, giving that location's feature, and a small
   head also predicts the location's colour.

**Folded and unfolded.** Before it looks anywhere, the APM is just its weights: that is the *folded* state.
Asking all h x w questions at once *unfolds* it into a grid. Because each question is answered on its own,
locations can be asked in any order, a few at a time, and the answers do not change: that is the
*asynchronous* part.

**Test-time training.** The APM here is not trained on a dataset. It starts from random weights and is
overfit on one image for a few hundred steps. Watch the loss curves fall while the islands scatter changes:
early on the whole image is one blob; later it breaks into parts. The count of islands against training step
is the *whole-to-part* curve.

**Reading the panels.** The islands image paints each location with its island colour. Compare it with the
teacher's own islands and the input. The fidelity map shows, per location, how closely the APM's feature
points the same way as the teacher's (1 is a perfect match). The reconstructed RGB is what the colour head
believes the image looks like at grid resolution.
"""


# Gradio's gr.Plot draws every new value into a new element (a keyed block), so plotly's uirevision, which keeps
# the user's 3D camera and zoom across redraws of one element, never applies: every live frame reset the view,
# and cut a drag short. This keeps, per plot (its elem_id) and uirevision, the view the user last set (camera,
# axis ranges; while dragging too) and writes it into each later figure before plotly draws it. The element being
# replaced is not drawn: before, each frame of every plot was drawn twice (a 3D frame is costly in a browser).
# It is also the page's one place where a new plot element is hooked: a tab adds its own plotly events with
# `window.__apmPlotHooks.push((gd) => ...)` (see PLOT_EVENTS_JS), called once for each element as it is drawn.
# Gradio never purges the element it replaces, and plotly keeps each one alive: a 3D scene runs its own render
# loop (requestAnimationFrame) until purged, and every plot holds a window resize listener. Over a long run the
# old elements piled up (one per frame per plot) and a 3D view slowed to a frame every 30 s and more. Each
# element that has left the page is purged when the next plot is drawn.
KEEP_VIEW_JS = """() => {
    const views = {};  // elem_id -> {rev, set: {path: value}}
    const drawn = new Set();  // hooked plot elements, until they leave the page and are purged
    const keyOf = (gd) => { const box = gd.parentElement && gd.parentElement.closest('[id]'); return box ? box.id : null; };
    const remember = (gd, ev) => {  // gd may be off the page by now (a drag that ended after the next frame)
        const key = gd.__apmKey, rev = gd.layout && gd.layout.uirevision;
        if (!key || rev === undefined || !ev) return;
        const view = views[key] && views[key].rev === rev ? views[key] : (views[key] = {rev, set: {}});
        for (const path of Object.keys(ev)) {
            const m = path.match(/^(scene\\d*\\.camera|[xy]axis\\d*\\.(range|autorange))/);
            if (!m) continue;
            const head = m[1].split('.')[0];
            if (m[1].endsWith('camera')) {  // while dragging, only the event has the camera
                const camera = typeof ev[path] === 'object' ? ev[path] : gd._fullLayout[head].camera;
                view.set[head + '.camera'] = JSON.parse(JSON.stringify(camera));
                continue;
            }
            const axis = gd._fullLayout[head];
            if (axis && axis.autorange) { delete view.set[head + '.range']; delete view.set[head + '.autorange']; }
            else if (axis) { view.set[head + '.range'] = axis.range.slice(); view.set[head + '.autorange'] = false; }
        }
    };
    const hook = (gd) => {  // once per plot element, when plotly first draws it
        if (gd.__apmHooked || !gd.on) return;
        gd.__apmHooked = true;
        gd.__apmKey = keyOf(gd);
        drawn.add(gd);
        gd.on('plotly_relayout', (ev) => remember(gd, ev));
        gd.on('plotly_relayouting', (ev) => remember(gd, ev));  // a drag cut short by the next frame is kept too
        for (const more of window.__apmPlotHooks || []) more(gd);  // the tabs' own events (PLOT_EVENTS_JS)
    };
    const wrap = () => {  // once: plotly's script arrives with the first plot
        const P = window.Plotly;
        if (!P) return;
        waiting.disconnect();
        if (P.__apmKeepsView) return;
        P.__apmKeepsView = true;
        const react = P.react;
        const purgeGone = () => {
            for (const old of drawn) {
                if (old.isConnected) continue;
                drawn.delete(old);
                try { P.purge(old); } catch (e) { /* an element plotly no longer knows: nothing to release */ }
            }
        };
        P.react = function (gd, data, layout, config) {
            purgeGone();
            const key = gd && gd.parentElement ? keyOf(gd) : null, view = key && views[key];
            if (view && layout && typeof layout === 'object' && layout.uirevision === view.rev) {
                for (const [path, value] of Object.entries(view.set)) {
                    const [head, leaf] = path.split('.');
                    layout[head] = Object.assign({}, layout[head], {[leaf]: JSON.parse(JSON.stringify(value))});
                }
            }
            if (gd && gd._fullLayout && gd.isConnected) {
                // a drawn element about to be replaced by the new one (it always is, in this Gradio): draw it only
                // if it is still on the page once the replacement is done, so each frame is drawn once, not twice
                const args = arguments, self = this;
                return Promise.resolve().then(() => {
                    if (!gd.isConnected) return gd;
                    const out = react.apply(self, args);
                    hook(gd);
                    return out;
                });
            }
            const out = react.apply(this, arguments);
            if (gd && gd.on) hook(gd);
            return out;
        };
    };
    const waiting = new MutationObserver(wrap);
    waiting.observe(document.body, {childList: true, subtree: true});
    wrap();
}"""

@dataclass(frozen=True)
class App:
    """The page and its tabs (whose components tests and scripts address by name)."""

    demo: gr.Blocks
    islands: IslandsTab
    walk: WalkTab


def build_demo() -> gr.Blocks:
    return build_app().demo


def _absent_modules_fail_fast(*names: str) -> None:
    """Gradio tries `import matplotlib` twice around every event call and every streamed update; where it is not
    installed, each try searches the whole import path again (a tenth of the server's time in a class's burst).
    A module found missing once is marked so (None in `sys.modules`): the next import fails at once, as it would."""
    import importlib.util
    import sys

    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]


def _is_skip(value: Any) -> bool:
    return isinstance(value, dict) and value == {"__type__": "update"}


class Page(gr.Blocks):
    """gr.Blocks that sends an output left unchanged without rebuilding it.

    An event that returns a dict of some of its outputs leaves the others to Gradio as `gr.skip()`, an empty update,
    and Gradio handles an empty update as it does any update of a component's properties: it builds a new
    instance of the component and its whole config, JSON schemas of its API included, and sends the same
    `{"__type__": "update"}` it was given. A live frame leaves nine of its outputs unchanged (the buttons, the
    panels drawn every few seconds), and that rebuilding was a fifth of the server's CPU a frame at 16 x 16, as
    much as the islands' t-SNE. Here the unchanged outputs are set aside, the others go through Gradio's own
    postprocessing, and each unchanged one gets the update Gradio would have sent (tests/test_app_design.py checks
    that the two agree).
    """

    async def postprocess_data(self, block_fn, predictions, state):  # noqa: ANN001, ANN201 (Gradio's signature)
        outputs = list(block_fn.outputs)
        values = predictions
        if isinstance(values, dict) and values and all(isinstance(k, gr.blocks.Block) for k in values):
            values = gr.blocks.convert_component_dict_to_list(outputs, values)
        if (block_fn.batch or block_fn.is_validator_function or not isinstance(values, (list, tuple))
                or len(outputs) < 2 or len(values) != len(outputs)):
            return await super().postprocess_data(block_fn, predictions, state)
        kept = [i for i, value in enumerate(values) if not _is_skip(value)]
        if len(kept) == len(outputs):
            return await super().postprocess_data(block_fn, values, state)
        out: list[Any] = [{"__type__": "update"} for _ in outputs]
        if kept:
            fn = copy.copy(block_fn)
            fn.outputs = [outputs[i] for i in kept]
            done = await super().postprocess_data(fn, [values[i] for i in kept] if len(kept) > 1 else values[kept[0]],
                                                  state)
            for i, value in zip(kept, done):
                out[i] = value
        return out


def build_app() -> App:
    _absent_modules_fail_fast("matplotlib")
    with Page(title="APM islands", delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Islands", id="islands-tab"):
            islands = IslandsTab().build()
            with gr.Accordion("About: GLOM, islands and the APM, in plain words", open=False):
                gr.Markdown(ABOUT)
        with gr.Tab("Interpolation", id="interpolation-tab"):
            walk = WalkTab().build()
        # runs wait in the run driver's line (one training slot, told their place), not in Gradio's queue
        gr.api(api_run, api_name="run", concurrency_limit=None)
        gr.api(api_stop, api_name="stop", queue=False)
        gr.api(api_walk, api_name="walk", concurrency_limit=None)
        demo.load(islands.from_link, None, islands.link_outputs, queue=False, api_visibility="undocumented",
                  api_name="islands_from_link")
        demo.load(None, None, None, js=PLOT_EVENTS_JS)  # plotly hover / click events into the page's events
        demo.load(None, None, None, js=KEEP_VIEW_JS)  # the user's camera and zoom across live frames
        demo.unload(unload)
    return App(demo, islands, walk)


def prefill_examples() -> engine.Prefill | None:
    """Train every example's default run into the run cache in the background (`engine.Prefill`), unless the run
    cache is off or APM_PREFILL_EXAMPLES=0. The examples' default run is the page's and the API's alike."""
    from apm.env import prefill_examples as wanted
    from apm.images import load_image

    if not wanted():
        return None
    exp = page_experiment("custom")
    runs = [(exp, View(exp, True), load_image(str(path)), path.name) for path in example_paths()]
    return engine.Prefill().start(runs)
