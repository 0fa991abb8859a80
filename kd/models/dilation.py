"""Output stride by dilation (DeepLab's atrous convolution), for any stack of convolutions.

DeepLabV3's ResNet-50 runs its last two stages at 1/8 of the input (output stride 8): their
strides are replaced by dilation, so the receptive field grows while the resolution stays.
`set_output_stride` does the same to any module that takes an image: a probe forward finds
each convolution's input stride; a convolution whose output would be coarser than the goal
loses its stride, and every later spatial convolution is dilated by how much finer its input
now is than it was (the convolution that loses its stride keeps the dilation before it, as
torchvision's ResNet does).
"""

from __future__ import annotations

import torch
from torch import nn

from kd.errors import UserInputError

OUTPUT_STRIDES = (8, 16, 32)


def _input_strides(module: nn.Module, in_channels: int, size: int = 256) -> dict[nn.Module, int]:
    strides, handles = {}, []

    def record(layer, inputs, output) -> None:  # a hook that returned a value would replace the output
        strides.setdefault(layer, size // inputs[0].shape[-1])

    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            handles.append(layer.register_forward_hook(record))
    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, in_channels, size, size, device=next(module.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return strides


def output_stride(module: nn.Module, in_channels: int = 3) -> int:
    """The ratio of the input's size to the module's output size."""
    size = 256
    with torch.no_grad():
        was_training = module.training
        out = module.eval()(torch.zeros(1, in_channels, size, size, device=next(module.parameters()).device))
        module.train(was_training)
    return size // out.shape[-1]


def _stride(layer: nn.Module) -> int:
    stride = layer.stride
    return int(stride if isinstance(stride, int) else stride[0])


def set_output_stride(module: nn.Module, goal: int, in_channels: int = 3) -> nn.Module:
    """Dilate `module` in place so its output is at 1/goal of the input; returns it.

    The goal can only make a module denser: a module already at output stride 8 cannot be
    made coarser (that would need its undilated architecture).
    """
    if goal not in OUTPUT_STRIDES:
        raise UserInputError(
            f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, got {goal!r}."
        )
    current = output_stride(module, in_channels)
    if goal > current:
        raise UserInputError(
            f"output_stride {goal}: the feature extractor already has output stride {current}; "
            f"it can be made denser (a smaller stride), not coarser: choose {current} or less."
        )
    if goal == current:
        return module
    for layer, stride_in in _input_strides(module, in_channels).items():
        stride_out = stride_in * _stride(layer)
        if stride_out > goal and _stride(layer) > 1:
            if not isinstance(layer, nn.Conv2d):
                raise UserInputError(
                    f"output_stride {goal}: a {type(layer).__name__} strides past it; "
                    f"choose {stride_in} or more."
                )
            layer.stride = type(layer.stride)([1] * len(layer.stride))
        finer = stride_in // min(stride_in, goal)  # how much finer this layer's input now is
        if finer > 1 and isinstance(layer, nn.Conv2d) and any(k > 1 for k in layer.kernel_size):
            _dilate(layer, layer.dilation[0] * finer)
    return module


def _dilate(conv: nn.Conv2d, dilation: int) -> None:
    old = conv.dilation
    new = type(old)([dilation] * len(old))
    if type(conv).forward is nn.Conv2d.forward:  # fixed 'same' padding: widen it with the dilation
        same = all(p == (k - 1) // 2 * d for p, k, d in zip(conv.padding, conv.kernel_size, old, strict=True))
        if not same:
            raise UserInputError(
                f"cannot dilate a convolution with padding {conv.padding} and kernel "
                f"{conv.kernel_size}: only 'same'-padded convolutions keep their size"
            )
        conv.padding = tuple((k - 1) // 2 * dilation for k in conv.kernel_size)
    # Conv2d subclasses (EfficientNet-Lite's dynamic 'same' padding) pad from their dilation at run time.
    conv.dilation = new
