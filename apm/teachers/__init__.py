"""Teachers: frozen vision networks whose per-patch features (one layer = one GLOM level) are the APM's target.

    from apm.teachers import create_teacher
    teacher = create_teacher("dinov2", layer=11)          # or "clip", "mvit"; random_weights=True offline
    out = teacher.encode(image)                           # out.grid (16, 16, 384), out.global_vector (384,)
    print(out.info.label)                                 # 'DINOv2 ViT-S/14 · layer 11'

Backends (one adapter file each): DINOv2 through timm (`dinov2.py`), CLIP through open_clip (`clip.py`),
MViTv2-S through torchvision's video models (`mvit.py`); importing this package registers them (each
guards its optional backend import). Environment: APM_RANDOM_WEIGHTS=1 makes untrained
teachers the default; HF_HUB_OFFLINE=1 / APM_OFFLINE=1 never touch the network; APM_CACHE_DIR moves the
teacher-output cache; APM_TEACHER_DISK_CACHE=0 keeps it in memory only.
"""

from .base import (
    Preprocess,
    Teacher,
    TeacherInfo,
    TeacherOutput,
    clear_model_cache,
    create_teacher,
    list_teachers,
    random_weights_default,
    register_teacher,
)
from .cache import OUTPUT_CACHE, OutputCacheConfig
from .clip import CLIPConfig, CLIPTeacher
from .dinov2 import DINOv2Config, DINOv2Teacher
from .features import FeatureLimits, load_feature_array
from .islands import teacher_islands
from .mvit import MViTConfig, MViTTeacher
from .weights import download_weights

__all__ = [
    "OUTPUT_CACHE",
    "CLIPConfig",
    "CLIPTeacher",
    "DINOv2Config",
    "DINOv2Teacher",
    "FeatureLimits",
    "MViTConfig",
    "MViTTeacher",
    "OutputCacheConfig",
    "Preprocess",
    "Teacher",
    "TeacherInfo",
    "TeacherOutput",
    "clear_model_cache",
    "create_teacher",
    "download_weights",
    "list_teachers",
    "load_feature_array",
    "random_weights_default",
    "register_teacher",
    "teacher_islands",
]
