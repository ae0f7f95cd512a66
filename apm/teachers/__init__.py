"""Teachers: frozen vision networks whose per-patch features (one layer = one GLOM level) are the APM's target.

    from apm.teachers import create_teacher, teacher_spec
    teacher_spec("dinov2").num_layers                     # 12: metadata without weights or a network
    teacher = create_teacher("dinov2", layer=11)          # or "dinov2:imgfocus" (no Hub), "clip", "mvit", ...
    out = teacher.encode(image)                           # out.grid (16, 16, 384), out.global_vector (384,)
    levels = teacher.encode_layers(image)                 # every layer, one forward pass
    print(out.info.label)                                 # 'DINOv2 ViT-S/14 · layer 11'

Backends (one adapter file each): DINOv2 through timm (`dinov2.py`), CLIP through open_clip (`clip.py`),
MViTv2-S through torchvision's video models (`mvit.py`); importing this package registers them (each
guards its optional backend import). The environment variables they read are listed in `apm.env`.
"""

from ..env import random_weights_default
from .base import LayerSpec, Preprocess, Teacher, TeacherInfo, TeacherOutput, TeacherSpec, clear_model_cache
from .cache import OUTPUT_CACHE, OutputCacheConfig
from .clip import CLIPConfig, CLIPTeacher
from .dinov2 import DINOv2Config, DINOv2Teacher
from .features import FeatureLimits, load_feature_array
from .mvit import MViTConfig, MViTTeacher
from .registry import (
    create_teacher,
    download_weights,
    grid_options,
    hub_free_substitute,
    list_teachers,
    parse_teacher_id,
    register_teacher,
    teacher_class,
    teacher_picks,
    teacher_spec,
    weights_identity,
)

__all__ = [
    "grid_options",
    "OUTPUT_CACHE",
    "CLIPConfig",
    "CLIPTeacher",
    "DINOv2Config",
    "DINOv2Teacher",
    "FeatureLimits",
    "LayerSpec",
    "MViTConfig",
    "MViTTeacher",
    "OutputCacheConfig",
    "Preprocess",
    "Teacher",
    "TeacherInfo",
    "TeacherOutput",
    "TeacherSpec",
    "clear_model_cache",
    "create_teacher",
    "download_weights",
    "hub_free_substitute",
    "list_teachers",
    "load_feature_array",
    "parse_teacher_id",
    "random_weights_default",
    "register_teacher",
    "teacher_picks",
    "weights_identity",
    "teacher_class",
    "teacher_spec",
]
