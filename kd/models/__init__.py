"""Teachers, students, split points and the SD group-conv conversion."""
from kd.models.group_conv import group_conv_copy
from kd.models.segmenter import FeatureTap, Segmenter, Tail

__all__ = ["FeatureTap", "Segmenter", "Tail", "group_conv_copy"]
