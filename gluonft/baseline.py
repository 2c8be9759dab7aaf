"""The lab-1 baseline: a plain CNN trained from scratch on 32x32 CIFAR-10 images.

Three conv blocks (conv-BN-ReLU twice, then max-pool), global average pooling and a dense
layer: the network of a first deep-learning lab, in the same `TransferNet` shape as the
backbones so that `fit`, `evaluate`, `summary` and `apply_regime("scratch")` all apply.
"""
from __future__ import annotations

from typing import Sequence

import mxnet as mx
from mxnet.gluon import nn

from .backbones import Family, TransferNet
from .devices import as_contexts
from .heads import make_head
from .transforms import CIFAR_MEAN, CIFAR_STD
from .weights import WeightsSource

__all__ = ["LAB1_CNN", "lab1_cnn"]

LAB1_CNN = Family("lab1_cnn", r"lab1_cnn", input_size=32, min_size=8, mean=CIFAR_MEAN,
                  std=CIFAR_STD, pretrained_on="none",
                  blocks_doc="the 3 conv blocks (two 3x3 convs and a max-pool each)")


def lab1_cnn(*, classes: int = 10, widths: Sequence[int] = (32, 64, 128), ctx=None,
             seed: int = 0) -> TransferNet:
    """The lab-1 CNN, randomly initialised (seeded).

    Example:
        >>> net = gluonft.baseline.lab1_cnn(classes=10)
        >>> net(mx.nd.zeros((2, 3, 32, 32))).shape
        (2, 10)
    """
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an int >= 2, got {classes!r}")
    contexts = as_contexts(ctx)
    steps = []
    for width in widths:
        block = nn.HybridSequential(prefix="")
        for _ in range(2):
            block.add(nn.Conv2D(width, 3, padding=1, use_bias=False), nn.BatchNorm(),
                      nn.Activation("relu"))
        block.add(nn.MaxPool2D(2))
        steps.append(block)
    steps.append(nn.GlobalAvgPool2D())
    net = TransferNet(backbone="lab1_cnn", steps=steps, head=make_head(classes), classes=classes,
                      family=LAB1_CNN, prefix="lab1_cnn_")
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(), ctx=contexts)
    with mx.autograd.predict_mode():
        net(mx.nd.zeros((1, 3, 32, 32), ctx=contexts[0]))
    net.weights_source = WeightsSource("random")
    return net
