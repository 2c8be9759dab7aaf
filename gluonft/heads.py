"""The new output layer on the pooled backbone features: a linear layer, an MLP, or a user block.

    head="linear"          Dense(classes), the default; a 1x1-conv head on a pooled map
                           (MobileNet v2/v3, SqueezeNet) computes the same, so one type serves
                           every family and a GluonCV head of the right size is carried over
                           (``classes=1000`` with ImageNet weights keeps the ImageNet classifier)
    head="mlp:512"         per hidden width: Dense(512, no bias) -> BatchNorm -> ReLU -> Dropout,
    head="mlp:1024,256"    then Dense(classes) (the Keras labs' "second dense layer with
                           BatchNormalization before the activation", fastai's hidden layer)
    head=<HybridBlock>     the user's own block; it must output ``classes`` values per image

The head's parameters live under ``net.output`` (structural names ``output.*``): the regimes
train them in every regime, its BatchNorm layers always learn (they are new, unlike the
backbone's), and the feature cache serves a frozen backbone whatever the head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import mxnet as mx
from mxnet.gluon import nn

__all__ = ["HeadSpec", "parse_head", "make_head", "FeatureBatchNorm", "carry_over_head",
           "check_head_output", "head_params", "HEAD_KINDS", "DEFAULT_DROPOUT"]

HEAD_KINDS = ("linear", "mlp")
# fastai's default head drops 0.5 before its last layer; Keras' transfer-learning guide 0.2.
DEFAULT_DROPOUT = 0.5


@dataclass(frozen=True)
class HeadSpec:
    """A head as data: what model folders, cards and configs record.

    Attributes:
        kind: ``"linear"``, ``"mlp"`` or ``"custom"`` (a user block, recorded by class name).
        hidden: hidden widths of an MLP, e.g. ``(1024, 256)``.
        dropout: dropout after each hidden layer of an MLP, in [0, 1).
        block: the user's block for ``"custom"``.
    """
    kind: str = "linear"
    hidden: Tuple[int, ...] = ()
    dropout: float = DEFAULT_DROPOUT
    block: Optional[mx.gluon.HybridBlock] = None

    @property
    def label(self) -> str:
        """``"linear"``, ``"mlp:1024,256"`` or ``"custom:MyHead"`` (the spec as typed)."""
        if self.kind == "mlp":
            return "mlp:" + ",".join(str(h) for h in self.hidden)
        if self.kind == "custom":
            return f"custom:{type(self.block).__name__}"
        return "linear"

    def to_dict(self) -> dict:
        out = {"head": self.label}
        if self.kind == "mlp":
            out["dropout"] = self.dropout
        return out

    def describe(self, classes: int) -> str:
        """``"Dense(10)"``, ``"MLP 512 (BatchNorm, ReLU, dropout 0.5) + Dense(10)"``."""
        if self.kind == "mlp":
            return (f"MLP {','.join(str(h) for h in self.hidden)} (BatchNorm, ReLU, dropout "
                    f"{self.dropout:g}) + Dense({classes})")
        if self.kind == "custom":
            return f"{type(self.block).__name__} (user block)"
        return f"Dense({classes})"


def parse_head(head: Union[str, HeadSpec, mx.gluon.HybridBlock, None] = "linear", *,
               dropout: Optional[float] = None) -> HeadSpec:
    """Read a head argument: a name or spec string, a `HeadSpec`, or a Gluon ``HybridBlock``.

    Raises ValueError naming the value for an unknown name, a malformed MLP spec, a dropout
    outside [0, 1), or a block that is not a HybridBlock (it must export to a symbol).

    Example:
        >>> parse_head("mlp:1024,256", dropout=0.3)
        HeadSpec(kind='mlp', hidden=(1024, 256), dropout=0.3, block=None)
    """
    if dropout is not None:
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        dropout = float(dropout)
    if head is None:
        head = "linear"
    if isinstance(head, HeadSpec):
        return head if dropout is None else HeadSpec(head.kind, head.hidden, dropout, head.block)
    if isinstance(head, mx.gluon.Block):
        if not isinstance(head, mx.gluon.HybridBlock):
            raise ValueError(f"head must be a gluon HybridBlock (so the model can be hybridized "
                             f"and exported), got a {type(head).__name__}")
        if dropout is not None:
            raise ValueError("dropout= is for the mlp heads; put dropout inside your own block")
        return HeadSpec("custom", block=head)
    if not isinstance(head, str):
        raise ValueError(f"head must be 'linear', 'mlp:W[,W...]' or a gluon HybridBlock, "
                         f"got {head!r}")
    name, sep, widths = head.strip().partition(":")
    if name == "linear" and not sep:
        if dropout is not None:
            raise ValueError("dropout= needs an mlp head (e.g. head='mlp:512'); the linear "
                             "head has no dropout")
        return HeadSpec("linear")
    if name != "mlp":
        raise ValueError(f"unknown head {head!r}: expected one of 'linear', 'mlp:W[,W...]' "
                         f"(e.g. 'mlp:512', 'mlp:1024,256') or a gluon HybridBlock")
    hidden = []
    for part in widths.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"head {head!r}: hidden widths must be positive ints separated by "
                             f"commas, e.g. 'mlp:512' or 'mlp:1024,256'; got {part!r}")
        hidden.append(int(part))
    return HeadSpec("mlp", tuple(hidden), DEFAULT_DROPOUT if dropout is None else dropout)


class FeatureBatchNorm(nn.BatchNorm):
    """BatchNorm over (N, C) features, computed as on (N, C, 1, 1): the same numbers and
    parameters as `nn.BatchNorm`.

    Why: MXNet 1.9.1's oneDNN BatchNorm crashes the process (segfault, or "terminate called
    without an active exception") on AVX-512 CPUs when a 2-D input of C channels follows,
    in the same process, a 4-D BatchNorm of C channels: seen on an Intel Xeon with AVX-512
    (a mobilenet0.25 net, last BatchNorm (1, 256, 1, 1), then an MLP head's (1, 256)); never on
    AVX2. The 4-D form takes the path every convolutional BatchNorm takes.
    """

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        y = super().hybrid_forward(F, F.reshape(x, (0, 0, 1, 1)), gamma, beta, running_mean,
                                   running_var)
        return F.reshape(y, (0, 0))


def make_head(classes: int, head: Union[str, HeadSpec, mx.gluon.HybridBlock] = "linear"
              ) -> mx.gluon.HybridBlock:
    """The head block; input widths are inferred on the first forward pass.

    Example:
        >>> block = make_head(10, "mlp:512")
        >>> [type(b).__name__ for b in block]
        ['Dense', 'FeatureBatchNorm', 'Activation', 'Dropout', 'Dense']
    """
    spec = parse_head(head)
    if spec.kind == "custom":
        return spec.block
    if spec.kind == "linear":
        return nn.Dense(classes, flatten=True, prefix="output_")
    block = nn.HybridSequential(prefix="output_")
    with block.name_scope():
        for width in spec.hidden:
            # No bias: the BatchNorm after it has one (beta).
            block.add(nn.Dense(width, use_bias=False, flatten=True), FeatureBatchNorm(),
                      nn.Activation("relu"), nn.Dropout(spec.dropout))
        block.add(nn.Dense(classes, flatten=True))
    return block


def head_params(spec: HeadSpec, in_features: int, classes: int) -> Optional[int]:
    """Weights of a linear or MLP head on ``in_features`` pooled features (BatchNorm's running
    statistics excluded, as `count_params` counts); None for a user block.

    Example:
        >>> head_params(parse_head("mlp:512"), 768, 10)
        399370
    """
    if spec.kind == "custom":
        return None
    total, width = 0, in_features
    for hidden in spec.hidden:
        total += width * hidden + 2 * hidden   # Dense without bias, BatchNorm gamma and beta
        width = hidden
    return total + width * classes + classes


def check_head_output(spec: HeadSpec, shape, classes: int) -> None:
    """A user block must give ``(batch, classes)``: say so before any data is loaded."""
    if tuple(shape[1:]) != (classes,):
        raise ValueError(f"the head {spec.label} outputs shape {tuple(shape)} for a batch of "
                         f"{shape[0]}: expected (batch, {classes}), one value per class")


def carry_over_head(stored: Dict[str, mx.nd.NDArray], head_paths: Sequence[str],
                    head: mx.gluon.Block, ctx) -> bool:
    """Copy a stored GluonCV head into a linear ``head`` when it has the same number of weights.

    Args:
        stored: parameters read from a weights file, by structural name.
        head_paths: where the family keeps its head (``"fc"``, ``"output.0"`` ...).
        head: the new, already shaped head; only a `Dense` is carried over.
        ctx: contexts to place the weights on.

    Returns:
        True when the head was carried over; False leaves ``head`` as initialised.
    """
    if not isinstance(head, nn.Dense):
        return False
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
