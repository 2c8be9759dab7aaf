"""The backbones `model="auto"` chooses from (`CANDIDATES`: size and ImageNet top-1), and
`pick_backbone`: a named model checked against a parameter budget, or the best that fits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import mxnet as mx
import numpy as np

from .backbones import count_params, family_of, load_backbone
from .heads import head_params, parse_head

__all__ = ["Candidate", "CANDIDATES", "model_params", "pick_backbone"]


@dataclass(frozen=True)
class Candidate:
    """A backbone `train_classifier` may pick: its size and ImageNet accuracy.

    Attributes:
        name: model-zoo name.
        backbone_params: weights of ``net.features`` (BatchNorm running statistics excluded).
        feature_dim: width of the pooled features, the input of the new head.
        top1: GluonCV's published ImageNet top-1 accuracy (%), used to rank candidates.
    """
    name: str
    backbone_params: int
    feature_dim: int
    top1: float

    def params(self, classes: int, head="linear") -> int:
        """Total weights with the head (a linear or MLP head: `gluonft.heads.head_params`)."""
        return self.backbone_params + head_params(parse_head(head), self.feature_dim, classes)


# Counted once by building each net (the test checks a few against a real build): building
# every backbone just to compare sizes would cost seconds each. Ranked best first by ImageNet
# top-1 as published in GluonCV's model zoo.
CANDIDATES: Tuple[Candidate, ...] = (
    # EfficientNet-B: the paper's top-1 (Tan & Le 2019, table 2), which efficientnet-pytorch
    # repeats for the checkpoints `weights="imagenet"` downloads.
    Candidate("efficientnet_b3", 10696232, 1536, 81.1),
    Candidate("efficientnet_b2", 7700994, 1408, 79.8),
    Candidate("resnet50_v1d", 23527264, 2048, 79.15),
    Candidate("efficientnet_b1", 6513184, 1280, 78.8),
    Candidate("inceptionv3", 21785568, 2048, 78.77),
    # EfficientNet-Lite: the TF release's float top-1 (tensorflow/tpu, efficientnet/lite).
    Candidate("efficientnet_lite2", 4811072, 1280, 77.6),
    Candidate("resnet50_v1", 23526912, 2048, 77.36),
    Candidate("efficientnet_lite1", 4135680, 1280, 76.7),
    Candidate("efficientnet_b0", 4007548, 1280, 76.3),
    Candidate("mobilenetv3_large", 4200752, 1280, 75.32),
    Candidate("efficientnet_lite0", 3371008, 1280, 75.1),
    Candidate("densenet121", 6953856, 1024, 74.97),
    Candidate("resnet34_v1", 21284672, 512, 74.37),
    Candidate("mobilenet1.0", 3206976, 1024, 73.28),
    Candidate("googlenet", 5599904, 1024, 72.87),
    Candidate("mobilenetv2_1.0", 2223872, 1280, 72.04),
    Candidate("resnet18_v1", 11176512, 512, 70.93),
    Candidate("mobilenet0.75", 1816560, 768, 70.25),
    Candidate("mobilenetv2_0.75", 1346968, 1280, 69.36),
    Candidate("mobilenetv3_small", 1664288, 1280, 67.72),
    Candidate("mobilenet0.5", 818592, 512, 65.20),
    Candidate("mobilenetv2_0.5", 684448, 1280, 64.43),
    Candidate("squeezenet1.0", 735424, 512, 56.11),
    Candidate("squeezenet1.1", 722496, 512, 54.96),
    Candidate("mobilenet0.25", 213072, 256, 52.91),
    Candidate("mobilenetv2_0.25", 236312, 1280, 51.76),
)
_BY_NAME = {c.name: c for c in CANDIDATES}


def model_params(name: str, *, classes: int, head="linear") -> int:
    """Weights of backbone ``name`` with the head (table, else a real build)."""
    spec = parse_head(head)
    if name in _BY_NAME and spec.kind != "custom":
        return _BY_NAME[name].params(classes, spec)
    return count_params(load_backbone(name, classes=classes, weights=None, ctx=mx.cpu(),
                                      head=spec))


def pick_backbone(*, model: str = "mobilenet0.75", max_params: Optional[int] = None,
                  classes: int, head="linear") -> str:
    """The backbone to train: ``model`` checked against ``max_params``, or the best candidate.

    Args:
        model: a name from `gluonft.list_backbones()`, or ``"auto"``: the candidate with the
            best ImageNet top-1 (`CANDIDATES`) whose parameter count is within ``max_params``.
        max_params: parameter budget (with the new head), or None for no limit.
        classes: number of classes of the head.
        head: the head the budget includes (`gluonft.heads`; a user block is built to count).

    Returns:
        the backbone name.

    Raises:
        ValueError: a named ``model`` over the budget (the message lists those that fit), or a
            budget no candidate fits.

    Example:
        >>> pick_backbone(model="auto", max_params=2_000_000, classes=10)
        'mobilenet0.75'
    """
    if max_params is not None and (isinstance(max_params, bool)
                                   or not isinstance(max_params, (int, np.integer))
                                   or max_params < 1):
        raise ValueError(f"max_params must be a positive int (a parameter count) or None, "
                         f"got {max_params!r}")
    spec = parse_head(head)
    if max_params is None:
        fitting = [c.name for c in CANDIDATES]
    else:
        fitting = [c.name for c in CANDIDATES
                   if model_params(c.name, classes=classes, head=spec) <= max_params]
    if model == "auto":
        if not fitting:
            smallest = min(CANDIDATES, key=lambda c: c.backbone_params)
            raise ValueError(f"no backbone fits max_params={max_params:,}: the smallest, "
                             f"{smallest.name}, has "
                             f"{model_params(smallest.name, classes=classes, head=spec):,} "
                             f"parameters with {classes} classes and the {spec.label} head")
        return fitting[0]
    family_of(model)  # an unknown name fails here, with the list of valid names
    if max_params is not None:
        count = model_params(model, classes=classes, head=spec)
        if count > max_params:
            raise ValueError(f"{model} has {count:,} parameters with {classes} classes "
                             f"({spec.label} head), over "
                             f"max_params={max_params:,}; backbones within it, best first: "
                             f"{', '.join(fitting) or 'none'} (or pass model='auto')")
    return model
