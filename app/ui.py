"""The page: inputs on the left, live panels on the right, a timeline and exports below.

`build_demo()` returns the Blocks; `app.py` at the top level queues and launches it.
"""

from __future__ import annotations

import os

import gradio as gr

from . import handlers as H
from . import interpolation

MAX_QUEUE = int(os.environ.get("APM_MAX_QUEUE", 8))  # waiting runs beyond this get "queue is full"

CSS = """
.apm-status { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 15px; padding: 8px 12px;
              border-radius: 8px; background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.apm-error { color: #b42318; background: #fef3f2; border-color: #fda29b; }
.apm-caption { color: var(--body-text-color-subdued); font-size: 13px; }
/* grid-resolution images are sent small and enlarged by the browser, crisp */
#input-small img, #islands-image img, #teacher-islands img, #rgb-image img, #conv-filter img,
#walk-rgb-a img, #walk-rgb img, #walk-islands img, #walk-rgb-b img {
  width: 100% !important; height: 100% !important; object-fit: contain; image-rendering: pixelated; }
"""

INTRO = """
# Islands of agreement with an Asynchronous Perception Machine
Pick an image and a teacher network, press **Run**, and watch a fresh APM learn to reproduce the teacher's
features for that one image. Each dot is one location of the image; as training goes on, locations that
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


def raw_upload(component: gr.Image) -> gr.Image:
    """Make an image input hand the handler the uploaded file's path, undecoded.

    Gradio's own preprocessing opens the file with PIL before our code runs, so a broken or hostile file would
    fail there with a bare error badge. Passing the path lets `apm.images.load_image` check sizes and formats
    first and answer with a readable message in the page. (Patched on the instance: a subclass would make
    Gradio write a .pyi stub into the source tree.)
    """
    original = component.preprocess

    def preprocess(payload):
        if payload is not None and getattr(payload, "path", None) and not str(payload.url or "").startswith("data:"):
            return str(payload.path)
        return original(payload)

    component.preprocess = preprocess
    return component


def build_demo() -> gr.Blocks:
    teachers = list(H.TEACHERS)
    num_layers, default_layer = H.layer_choices(teachers[0])
    with gr.Blocks(title="APM islands", delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Islands", id="islands-tab"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=320):
                    image = raw_upload(gr.Image(label="Image", type="filepath", sources=["upload", "clipboard", "webcam"],
                                        elem_id="input-image", height=260))
                    gr.Examples(H.example_paths(), inputs=image, label="Examples", examples_per_page=8)
                    teacher = gr.Dropdown(teachers, value=teachers[0], label="Teacher", elem_id="teacher")
                    layer = gr.Slider(0, max(1, num_layers - 1), value=default_layer, step=1,
                                      label=f"Layer (GLOM level, 0-{num_layers - 1})", elem_id="layer")
                    random_weights = gr.Checkbox(value=H.default_random_weights(), label="Untrained teacher (random weights, works offline)",
                                                 elem_id="random-weights")
                    features_file = gr.File(label="Your feature array: .npy / .pt, shape (h, w, d) or (d,)",
                                            file_types=[".npy", ".pt"], type="filepath", visible=False, elem_id="features-file")
                    target = gr.Radio(list(H.TARGETS), value="Dense grid", label="Target", elem_id="target")
                    labels = gr.Textbox(H.DEFAULT_LABELS, label="CLIP labels (comma-separated)", visible=False, elem_id="labels")
                    with gr.Accordion("Training", open=False):
                        preset = gr.Radio(["cpu", "paper"], value="cpu", label="Preset",
                                          info="cpu: fast on 2 cores; paper: the NeurIPS configuration (slow on CPU)")
                        steps = gr.Slider(10, H.MAX_STEPS, value=300, step=10, label="Steps", elem_id="steps")
                        lr = gr.Number(1e-3, label="Learning rate (Adam)", elem_id="lr")
                        seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                        update_every = gr.Slider(1, 50, value=10, step=1, label="Update the panels every N steps",
                                                 elem_id="update-every")
                    projection = gr.Radio(list(H.PROJECTIONS), value="t-SNE 2D", label="Projection", elem_id="projection")
                    with gr.Row():
                        run_btn = gr.Button("Run", variant="primary", elem_id="run")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=3):
                    status = gr.HTML(H.status_line(None, None), elem_id="status")
                    with gr.Row(equal_height=False):
                        islands_plot = gr.Plot(H.plots.islands_scatter(None), label="Islands (t-SNE / PCA of the unfolded features)",
                                               elem_id="islands-plot", scale=3)
                        with gr.Column(scale=2):
                            with gr.Row():
                                input_small = gr.Image(label="Input (grid)", elem_id="input-small", interactive=False, height=180)
                                islands_image = gr.Image(label="APM islands", elem_id="islands-image", interactive=False, height=180)
                            with gr.Row():
                                teacher_islands = gr.Image(label="Teacher islands", elem_id="teacher-islands", interactive=False, height=180)
                                rgb_image = gr.Image(label="RGB head", elem_id="rgb-image", interactive=False, height=180)
                    timeline = gr.Slider(0, 1, value=0, step=1, label="Timeline: scrub through recorded snapshots", elem_id="timeline")
                    loss_plot = gr.Plot(label="Loss and whole-to-part curves", elem_id="loss-plot")
                    with gr.Row():
                        fidelity_plot = gr.Plot(label="Teacher fidelity (error map)", elem_id="fidelity-plot")
                        with gr.Column():
                            clip_labels = gr.Label(num_top_classes=5, label="CLIP's top-5 labels (teacher)", elem_id="clip-labels", visible=False)
                            apm_labels = gr.Label(num_top_classes=5, label="APM's top-5 labels (its global vector)", elem_id="apm-labels", visible=False)
                    with gr.Accordion("Folded and unfolded state", open=True):
                        with gr.Row():
                            with gr.Column(scale=2):
                                folded = gr.Markdown(elem_id="folded")
                            conv_filter = gr.Image(label="The conv filter (3 x p x p, as colours)", interactive=False, height=140,
                                                   elem_id="conv-filter", scale=1)
                        unfolded_plot = gr.Plot(label="Unfolded state", elem_id="unfolded-plot")
                    with gr.Row():
                        export_btn = gr.Button("Export GIF, snapshots (.npz) and panels (PNG)", elem_id="export")
                        export_files = gr.File(label="Exports", file_count="multiple", interactive=False, elem_id="export-files",
                                               visible=False)
                    with gr.Accordion("About: GLOM, islands and the APM, in plain words", open=False):
                        gr.Markdown(ABOUT)

        panel_outputs = [status, islands_plot, input_small, islands_image, teacher_islands, rgb_image, loss_plot,
                         fidelity_plot, unfolded_plot, folded, conv_filter, clip_labels, apm_labels, timeline]
        inputs = [image, teacher, layer, random_weights, features_file, target, preset, steps, lr, seed,
                  projection, update_every, labels]

        # Run first stops this tab's previous run (not queued), then trains (queued, few at a time)
        run_btn.click(H.queue_run, None, None, queue=False, api_name=False).then(
            H.run, inputs, panel_outputs, concurrency_limit=H.MAX_CONCURRENT_RUNS, concurrency_id="train",
            show_progress="hidden", api_name="run",
        )
        stop_btn.click(H.stop, None, None, queue=False, api_name="stop")
        timeline.input(H.scrub, timeline, panel_outputs, show_progress="hidden", trigger_mode="always_last",
                       concurrency_limit=4, concurrency_id="view", api_name="scrub")
        teacher.change(H.on_teacher_change, [teacher, target], [layer, features_file, labels, target, clip_labels, apm_labels],
                       queue=False, api_name=False)
        export_btn.click(H.export, None, [export_files, status], concurrency_limit=2, concurrency_id="export",
                         api_name="export")
        with gr.Tab("Interpolation", id="interpolation-tab"):
            interpolation.build_tab(raw_upload, H.layer_choices)
        demo.unload(H.unload)
    return demo
