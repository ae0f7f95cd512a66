"""The paper's single-token experiment (Fig. 3) as the official code runs it, in this project's APM.

Read off rajatmodi62/apm, `single_token_segmentation/` (`model.py`, `model_tta.py`, `train_tta.py`), as facts:
- the image at 448 px (ImageNet mean and std), one conv filter Conv2d(3, 1, 14, stride 14): a 32 x 32 grid and a
  1024-long trigger column; each location's query is [column, a 1024-channel sin-cos code in the official
  interleaved layout];
- the shared MLP 2048-4096-2048-1024 (ReLU after each), then a 1024 -> d feature projection (d = 768, CLIP
  ViT-L/14's image embedding); a colour head 2816-256-256-3 over [feature, query] with a ReLU output;
- a d-channel sin-cos code (the same layout) added to the features, then one learned query's 8-head attention
  pooling, whose output is the prediction of the teacher's single token (MSE, no RGB term);
- every parameter drawn from N(0, 0.01); Adam at 1e-4 with StepLR(200, 0.1); mixed precision; 1200 iterations;
  8 copies of the same image per step (no augmentation);
- the islands are the features before the added code, shown as a 1D t-SNE at perplexity 3 (random start,
  min-max colours).
It also declares a LayerNorm(1024) that its forward never calls; this project leaves it out.

Eight identical copies give exactly the gradient of one (the loss is a mean over identical terms), so
`COPIES = 1` here trains the same model 8x faster; `copies=8` is there to check that claim (a test does).
"""

from __future__ import annotations

from dataclasses import replace

from .model import ModelConfig
from .train import TrainConfig

OFFICIAL_COPIES = 8  # the official script's copies of the image per step
COPIES = 1  # what this project runs: the same gradient (see the module docstring)
STEPS = 1200
CLIP_L14_DIM = 768  # the official teacher's image embedding


def faithful_config(token_dim: int = CLIP_L14_DIM) -> ModelConfig:
    """The official single-token model for a teacher token of `token_dim` channels (768: CLIP ViT-L/14)."""
    return ModelConfig(
        grid=(32, 32), patch_size=14, column_channels=1, pos_dim=1024, hidden=(4096, 2048, 1024),
        feature_dim=token_dim, rgb_hidden=(256, 256), activation="relu", global_dim=token_dim, global_heads=8,
        global_head="paper", init="normal", rgb_output="relu", input_scaling="imagenet", pos_code="official",
    )


def faithful_train_config(**changes) -> TrainConfig:
    """Adam 1e-4, StepLR(200, 0.1), MSE on the pooled token only (no RGB term, the raw target), 1200 steps."""
    config = TrainConfig(steps=STEPS, lr=1e-4, lr_decay_every=200, lr_decay=0.1, rgb_weight=0.0, loss="mse",
                         normalize_target=False, precision="auto", record_every=100)
    return replace(config, **changes)


def official_shapes(token_dim: int = CLIP_L14_DIM) -> dict[str, tuple[int, ...]]:
    """The official model's parameters (name -> shape) for a token of `token_dim` channels, as its code declares
    them (`norm`, declared and never called, included)."""
    d, q = token_dim, 2 * 1024
    return {
        "fc1.weight": (4096, q), "fc1.bias": (4096,),
        "fc4.weight": (2048, 4096), "fc4.bias": (2048,),
        "fc5.weight": (1024, 2048), "fc5.bias": (1024,),
        "feat_proj_head.weight": (d, 1024), "feat_proj_head.bias": (d,),
        "rgb_head_1.weight": (256, d + q), "rgb_head_1.bias": (256,),
        "rgb_head_2.weight": (256, 256), "rgb_head_2.bias": (256,),
        "rgb_head_3.weight": (3, 256), "rgb_head_3.bias": (3,),
        "conv1.weight": (1, 3, 14, 14), "conv1.bias": (1,),
        "norm.weight": (1024,), "norm.bias": (1024,),
        "little_self_attention.in_proj_weight": (3 * d, d), "little_self_attention.in_proj_bias": (3 * d,),
        "little_self_attention.out_proj.weight": (d, d), "little_self_attention.out_proj.bias": (d,),
        "little_query": (d,),
    }


UNUSED = ("norm.weight", "norm.bias")  # declared by the official model, never used in its forward


def as_official(state: dict) -> dict:
    """This project's faithful APM's state dict under the official names and shapes (the first layers' input
    blocks joined again), so the two can be compared tensor by tensor."""
    import torch

    return {
        "fc1.weight": torch.cat([state["mlp_in_column.weight"], state["mlp_in_position.weight"]], dim=1),
        "fc1.bias": state["mlp_in_column.bias"],
        "fc4.weight": state["mlp.0.weight"], "fc4.bias": state["mlp.0.bias"],
        "fc5.weight": state["mlp.2.weight"], "fc5.bias": state["mlp.2.bias"],
        "feat_proj_head.weight": state["feature_head.weight"], "feat_proj_head.bias": state["feature_head.bias"],
        "rgb_head_1.weight": torch.cat([state["rgb_in_feature.weight"], state["rgb_in_column.weight"],
                                        state["rgb_in_position.weight"]], dim=1),
        "rgb_head_1.bias": state["rgb_in_column.bias"],
        "rgb_head_2.weight": state["rgb_mlp.0.weight"], "rgb_head_2.bias": state["rgb_mlp.0.bias"],
        "rgb_head_3.weight": state["rgb_mlp.2.weight"], "rgb_head_3.bias": state["rgb_mlp.2.bias"],
        "conv1.weight": state["column.conv.weight"], "conv1.bias": state["column.conv.bias"],
        "little_self_attention.in_proj_weight": state["global_head.attn.in_proj_weight"],
        "little_self_attention.in_proj_bias": state["global_head.attn.in_proj_bias"],
        "little_self_attention.out_proj.weight": state["global_head.attn.out_proj.weight"],
        "little_self_attention.out_proj.bias": state["global_head.attn.out_proj.bias"],
        "little_query": state["global_head.query"].reshape(-1),
    }
