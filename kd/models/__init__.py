"""Teachers, students, split points and the SD group-conv conversion.

from kd.models import build_teacher, build_student
teacher = build_teacher("deeplabv3_efficientnet_lite0", num_classes=2)   # ImageNet-pretrained backbone
student = build_student("sd", num_classes=2, teacher=teacher, split_point="stage7")
amg, teacher_head = teacher.split("stage7")
"""

from kd.models.adapters import FeatureAdapter, make_adapter, needs_adapter
from kd.models.backbones import list_backbones
from kd.models.checkpoints import load_checkpoint
from kd.models.group_conv import group_conv_copy
from kd.models.registry import (
    DEFAULT_TEACHER,
    SPLIT_STUDENTS,
    STUDENTS,
    TEACHERS,
    build_student,
    build_teacher,
    model_names,
    register_split_student,
    register_student,
    register_teacher,
    split_points,
)
from kd.models.sd import SDHead, constructed_teacher, sd_student
from kd.models.segmenter import FeatureTap, Segmenter, Tail
from kd.models.teacher_training import TeacherTraining, fit_teacher
from kd.registry import discover

# Every module here registers the models it defines when imported (kd.models.registry).
discover(__name__)

__all__ = [
    "DEFAULT_TEACHER",
    "FeatureAdapter",
    "FeatureTap",
    "SDHead",
    "SPLIT_STUDENTS",
    "STUDENTS",
    "Segmenter",
    "TEACHERS",
    "Tail",
    "TeacherTraining",
    "build_student",
    "build_teacher",
    "constructed_teacher",
    "fit_teacher",
    "group_conv_copy",
    "list_backbones",
    "load_checkpoint",
    "make_adapter",
    "model_names",
    "needs_adapter",
    "register_split_student",
    "register_student",
    "register_teacher",
    "sd_student",
    "split_points",
]
