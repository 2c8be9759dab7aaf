"""The new output layer: one `Dense(classes)` on the pooled backbone features, for every family.

A 1x1-conv head on a pooled map (MobileNet v2/v3, SqueezeNet) computes the same as a Dense
layer, so one head type serves all families, and a GluonCV head of the right size can be
carried over (e.g. ``classes=1000`` with ImageNet weights keeps the ImageNet classifier).
"""
from __future__ import annotations

from typing import Dict, Sequence

import mxnet as mx
from mxnet.gluon import nn

__all__ = ["make_head", "carry_over_head"]


def make_head(classes: int) -> nn.Dense:
    """A fresh ``Dense(classes)``; its input width is inferred on the first forward pass."""
    return nn.Dense(classes, flatten=True, prefix="output_")


def carry_over_head(stored: Dict[str, mx.nd.NDArray], head_paths: Sequence[str],
                    head: nn.Dense, ctx) -> bool:
    """Copy a stored GluonCV head into ``head`` when it has the same number of weights.

    Args:
        stored: parameters read from a weights file, by structural name.
        head_paths: where the family keeps its head (``"fc"``, ``"output.0"`` ...).
        head: the new, already shaped `Dense` head.
        ctx: contexts to place the weights on.

    Returns:
        True when the head was carried over; False leaves ``head`` as initialised.
    """
    weight_shape = head.weight.shape
    for path in head_paths:
        weight = stored.get(f"{path}.weight")
        if weight is None or weight.size != weight_shape[0] * weight_shape[1]:
            continue
        if weight.shape[0] != weight_shape[0]:
            continue
        head.weight.set_data(weight.reshape(weight_shape))  # a 1x1 conv kernel is a matrix
        bias = stored.get(f"{path}.bias")
        head.bias.set_data(bias if bias is not None else mx.nd.zeros(weight_shape[0]))
        return True
    return False
