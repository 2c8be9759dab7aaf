"""EfficientNet-B0..B3 in Gluon, exactly as ``efficientnet-pytorch`` 0.7.1 builds them.

The Lite variants' building blocks (`gluonft.efficientnet`: one home for MBConv, the TF "SAME"
padding by one 180-degree turn of the image, BatchNorm's epsilon 1e-3) with what B adds:
squeeze-excitation in every block (a quarter of the block's input channels), swish instead of
ReLU6, the stem and head widths scaled with the width, every stage's repeats scaled with the
depth, and drop-connect (stochastic depth: the residual branch of block i dropped per image
with probability 0.2 * i / blocks, in training only). BatchNorm's running statistics move as
PyTorch's with momentum 0.01.

    stem conv 3x3/2 + BN + swish, 16 / 23 / 23 / 26 MBConv blocks (B0 / B1 / B2 / B3), head conv
    1x1 to 1280 / 1280 / 1408 / 1536 + BN + swish, global average pool, dropout, Dense

Input normalisation: the reference's, ImageNet mean/std (its README's transform).
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from .download import fetch, sha256_of
from .efficientnet import STAGES, MBConv, Rotate180, Swish, conv_bn, round_filters, torch_kernels
from .fileio import atomic_write
from .torchfile import TorchFileError, read_state_dict
from .transforms import IMAGENET_MEAN, IMAGENET_STD
from .weights import WeightsMismatch, store_root

__all__ = ["B_VARIANTS", "EfficientNetB", "efficientnet_b", "b_block_specs", "B_MEAN", "B_STD",
           "DROP_CONNECT", "convert_b_state_dict", "read_b_torch_weights", "b_pretrained_file",
           "B_CHECKPOINTS", "REPO_VARIABLE"]

# name: (width multiplier, depth multiplier, native input side, dropout), efficientnet-pytorch's
B_VARIANTS: Dict[str, Tuple[float, float, int, float]] = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
}
SE_RATIO = 0.25
DROP_CONNECT = 0.2
BN_MOMENTUM = 0.99  # PyTorch's momentum 0.01
B_MEAN, B_STD = IMAGENET_MEAN, IMAGENET_STD


def _check(name: str) -> None:
    if name not in B_VARIANTS:
        raise ValueError(f"unknown EfficientNet-B {name!r}: expected one of "
                         f"{', '.join(B_VARIANTS)}")


def b_block_specs(name: str) -> List[Tuple[int, int, int, int, int, int]]:
    """(in, out, kernel, stride, expand, squeezed channels) of each MBConv block."""
    _check(name)
    width, depth, _, _ = B_VARIANTS[name]
    out = []
    for repeats, kernel, stride, expand, c_in, c_out in STAGES:
        c_in, c_out = round_filters(c_in, width), round_filters(c_out, width)
        for r in range(int(math.ceil(depth * repeats))):
            block_in = c_in if r == 0 else c_out
            out.append((block_in, c_out, kernel, stride if r == 0 else 1, expand,
                        max(1, int(block_in * SE_RATIO))))
    return out


class EfficientNetB(nn.HybridBlock):
    """``output(features(x))`` like GluonCV's classifiers; ``features`` ends pooled and
    flattened, ``output`` is dropout + Dense."""

    def __init__(self, name: str, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        _check(name)
        width, _, _, dropout = B_VARIANTS[name]
        specs = b_block_specs(name)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(Rotate180(), *conv_bn(round_filters(32, width), 3, 2,
                                                    activation=Swish, momentum=BN_MOMENTUM))
            for i, (c_in, c_out, kernel, stride, expand, squeezed) in enumerate(specs):
                self.features.add(MBConv(c_in, c_out, kernel, stride, expand, activation=Swish,
                                         squeezed=squeezed,
                                         drop_connect=DROP_CONNECT * i / len(specs),
                                         momentum=BN_MOMENTUM))
            self.features.add(*conv_bn(round_filters(1280, width), 1, activation=Swish,
                                       momentum=BN_MOMENTUM),
                              nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.HybridSequential(prefix="")
            self.output.add(nn.Dropout(dropout), nn.Dense(classes))

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def efficientnet_b(name: str, **kwargs) -> EfficientNetB:
    """The architecture of ``name`` (random weights), a GluonCV-like model-zoo net."""
    return EfficientNetB(name, **kwargs)


# --- the reference's state dicts ----------------------------------------------------------------

_BN = ("weight", "bias", "running_mean", "running_var")


def _torch_names(name: str) -> List[str]:
    """The state-dict names of efficientnet-pytorch, in the order of this net's parameters."""
    names = ["_conv_stem.weight"] + [f"_bn0.{p}" for p in _BN]
    for i, (_, _, _, _, expand, _) in enumerate(b_block_specs(name)):
        parts = (["_expand_conv", "_bn0"] if expand != 1 else []) + [
            "_depthwise_conv", "_bn1", "_se_reduce", "_se_expand", "_project_conv", "_bn2"]
        for part in parts:
            if part.startswith("_se_"):
                names += [f"_blocks.{i}.{part}.weight", f"_blocks.{i}.{part}.bias"]
            elif "conv" in part:
                names.append(f"_blocks.{i}.{part}.weight")
            else:
                names += [f"_blocks.{i}.{part}.{p}" for p in _BN]
    names += ["_conv_head.weight"] + [f"_bn1.{p}" for p in _BN] + ["_fc.weight", "_fc.bias"]
    return names


def convert_b_state_dict(name: str, state: Dict[str, np.ndarray],
                         classes: int = 1000) -> Dict[str, mx.nd.NDArray]:
    """efficientnet-pytorch's state dict of ``name`` as this net's structural parameter names;
    a ValueError naming what is missing, unexpected or misshaped for another architecture."""
    return torch_kernels(efficientnet_b(name, classes=classes), _torch_names(name), state,
                         name)


def read_b_torch_weights(name: str, path: str) -> Dict[str, mx.nd.NDArray]:
    """An efficientnet-pytorch ``.pth`` of ``name`` (legacy or zip format, read by numpy alone,
    nothing but tensors accepted), converted; `WeightsMismatch` naming the file otherwise."""
    try:
        state = read_state_dict(path)
    except (TorchFileError, ValueError) as error:
        raise WeightsMismatch(str(error) if str(path) in str(error) else f"{path}: {error}") \
            from None
    try:
        return convert_b_state_dict(name, state)
    except ValueError as error:
        raise WeightsMismatch(f"{path}: {_whose(state, name) or error}") from None


def _whose(state, name: str) -> str:
    """"a checkpoint of efficientnet_b1, not efficientnet_b0 ..." when another variant's
    names and shapes fit it exactly, else ""."""
    for other in B_VARIANTS:
        if other == name:
            continue
        try:
            convert_b_state_dict(other, state)
        except ValueError:
            continue
        return (f"a checkpoint of {other}, not {name}: load it with {other}, or use "
                f"{name}'s ({B_CHECKPOINTS[name]})")
    return ""


# The released ImageNet checkpoints efficientnet-pytorch 0.7.1 names (utils.url_map): the file
# name carries the first 8 hex digits of its sha256 (torch hub's check_hash convention).
B_CHECKPOINTS = {
    "efficientnet_b0": "efficientnet-b0-355c32eb.pth",
    "efficientnet_b1": "efficientnet-b1-f1951068.pth",
    "efficientnet_b2": "efficientnet-b2-8bb594d6.pth",
    "efficientnet_b3": "efficientnet-b3-5fb5a3c3.pth",
}
RELEASE = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"
# Another place holding the same files (a mirror; the tests' server on 127.0.0.1).
REPO_VARIABLE = "GLUONFT_EFFICIENTNET_REPO"


def b_pretrained_file(name: str, root) -> str:
    """The converted ImageNet weights of ``name`` in the store (`gluonft.weights.store_root`):
    on first use the released checkpoint is downloaded there (resumed after an interruption),
    its sha256 checked against its name, converted, and written atomically as
    ``<store>/<name>-<hash>.params``; a checkpoint put there by hand is checked the same way."""
    _check(name)
    checkpoint = B_CHECKPOINTS[name]
    prefix = checkpoint.rsplit("-", 1)[1].split(".")[0]
    folder = store_root(root)
    target = os.path.join(folder, f"{name}-{prefix}.params")
    if os.path.exists(target):
        return target
    source = os.path.join(folder, checkpoint)
    if not os.path.exists(source):
        repo = os.environ.get(REPO_VARIABLE, RELEASE)
        fetch(repo.rstrip("/") + "/" + checkpoint, source, sha256_prefix=prefix)
    else:
        actual = sha256_of(source)
        if not actual.startswith(prefix):
            raise WeightsMismatch(f"{source} has the sha256 {actual[:16]}..., but its name "
                                  f"says it starts with {prefix}: not the released checkpoint "
                                  f"of {name}; remove it (it is downloaded again) or put the "
                                  f"right file there")
    params = read_b_torch_weights(name, source)
    atomic_write(target, lambda tmp: mx.nd.save(tmp, params))
    return target
