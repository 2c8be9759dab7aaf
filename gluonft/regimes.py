"""Training regimes as data, and `apply_regime`, which sets what trains and returns a `Plan`.

    head     backbone frozen (a feature extractor); only the new head trains
    last_k   the last k natural blocks of the backbone train (see `feature_blocks`), and the head
    full     everything trains, starting from the loaded (pretrained) weights
    scratch  everything trains, starting from random weights (the backbone is re-initialised)

BatchNorm is handled explicitly: ``grad_req='null'`` freezes gamma/beta but not the running
statistics, which a forward pass in training mode keeps updating. With ``bn='frozen'`` (the
default) every BatchNorm in a frozen block runs with ``use_global_stats=True``: it normalises
with, and keeps, its pretrained statistics, hybridized or not, while BatchNorm in trainable
blocks learns as usual. ``bn='global'`` does the same for every BatchNorm, trainable blocks
included (gamma and beta still train): GluonCV's ``freeze_bn``, for batches too small to give
good statistics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import mxnet as mx
from mxnet.gluon import nn

from .backbones import TransferNet, feature_blocks, is_running_stat
from .inference import inference_forward

__all__ = ["Regime", "Plan", "BlockPlan", "apply_regime", "parse_regime", "REGIMES",
           "REGIME_INFO", "RegimeInfo", "regime_title", "regime_colour", "BN_POLICIES",
           "frozen_prefix", "NetParts", "split_net", "batchnorms_learning", "batchnorm_layers"]

BN_POLICIES = ("frozen", "global")


@dataclass(frozen=True)
class RegimeInfo:
    """How a regime is named and shown, and the learning rate it starts from.

    Attributes:
        title: words for charts and tables (``{k}`` is the block count of ``last_k``).
        colour: bar colour in charts; ``last_k`` uses `LAST_K_SHADES` by k.
        lr: default learning rate (SGD, batch 64): a frozen backbone takes a larger step than
            a pretrained one being fine-tuned.
    """
    title: str
    colour: str
    lr: float


# The one regime vocabulary: regimes, results, plots and the bench read it from here.
REGIME_INFO: Dict[str, RegimeInfo] = {
    "head": RegimeInfo("head only", "#1f77b4", 0.05),
    "last_k": RegimeInfo("last {k} blocks", "#2ca02c", 0.02),
    "full": RegimeInfo("full fine-tune", "#ff7f0e", 0.01),
    "scratch": RegimeInfo("from scratch", "#9467bd", 0.05),
}
REGIMES = tuple(REGIME_INFO)
RECORDED = "recorded"  # the regime label of a baseline result given by the user
# last_k:1, last_k:2... are different experiments: greens from light to dark, so two of them
# side by side stay apart (and match their separate legend entries).
LAST_K_SHADES = ("#98df8a", "#2ca02c", "#1a6e1a", "#5fd35f", "#0c420c")


def regime_title(regime: str) -> str:
    """Human words for a regime label: ``"last_k:2"`` -> ``"last 2 blocks"``.

    ``"recorded"`` (a baseline's given result, nothing trained) reads "recorded result"; any
    other label is an error naming it.

    Example:
        >>> regime_title("last_k:1"), regime_title("head")
        ('last 1 block', 'head only')
    """
    if regime == RECORDED:
        return "recorded result"
    parsed = parse_regime(regime)
    if parsed.name == "last_k":
        return f"last {parsed.k} block{'s' if parsed.k != 1 else ''}"
    return REGIME_INFO[parsed.name].title


def regime_colour(regime: str) -> str:
    """The chart colour of a regime label (``head``, ``last_k:2`` ...)."""
    parsed = parse_regime(regime)
    if parsed.name == "last_k":
        return LAST_K_SHADES[(parsed.k - 1) % len(LAST_K_SHADES)]
    return REGIME_INFO[parsed.name].colour


@dataclass(frozen=True)
class Regime:
    """A training regime: its name, ``k`` for ``last_k``, and the BatchNorm policy."""
    name: str
    k: Optional[int] = None
    bn: str = "frozen"

    def __post_init__(self):
        if self.name not in REGIMES:
            raise ValueError(f"unknown regime {self.name!r}: expected one of {', '.join(REGIMES)}"
                             f" (last_k as 'last_k:K')")
        if self.bn not in BN_POLICIES:
            raise ValueError(f"unknown BatchNorm policy bn={self.bn!r}: expected one of "
                             f"{', '.join(BN_POLICIES)}")
        if self.name == "last_k":
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
                raise ValueError(f"regime last_k needs k, a positive int number of blocks, got "
                                 f"k={self.k!r}")
        elif self.k is not None:
            raise ValueError(f"k={self.k!r} only applies to the last_k regime, not {self.name!r}")

    @property
    def label(self) -> str:
        """Short form used on the command line and in charts: ``head``, ``last_k:2`` ..."""
        return f"last_k:{self.k}" if self.name == "last_k" else self.name


def parse_regime(text: str, *, bn: str = "frozen") -> Regime:
    """``"head"``, ``"full"``, ``"scratch"`` or ``"last_k:K"`` -> `Regime`."""
    if not isinstance(text, str):
        raise ValueError(f"regime must be a string such as 'head' or 'last_k:2', got {text!r}")
    name, sep, k_text = text.strip().partition(":")
    if name == "last_k":
        try:
            k = int(k_text)
        except ValueError:
            raise ValueError(f"regime {text!r}: last_k needs a block count, e.g. 'last_k:2'") \
                from None
        return Regime("last_k", k, bn)
    if sep:
        raise ValueError(f"regime {text!r}: only last_k takes a number ('last_k:2')")
    return Regime(name, None, bn)


@dataclass(frozen=True)
class BlockPlan:
    label: str
    steps: Tuple[int, ...]
    params: int
    trainable: bool


@dataclass(frozen=True)
class Plan:
    """What `apply_regime` made trainable, as data.

    Attributes:
        regime: the regime's label; ``bn``: the BatchNorm policy.
        blocks: every backbone block, in order, with its parameter count and trainability.
        head_params: parameters of the new head (always trainable).
        trainable_params / frozen_params: counts of weights (running statistics excluded).
        frozen_steps: leading ``features`` steps that are frozen with frozen BatchNorm; the
            training loop runs them outside ``autograd.record()``.
        frozen_batchnorms: BatchNorm layers that keep their running statistics;
            ``batchnorms``: all the backbone's BatchNorm layers; ``head_batchnorms``: the
            new head's, which always learn.
        reinitialised: True for ``scratch``: the backbone was re-initialised at random.
    """
    regime: str
    bn: str
    blocks: Tuple[BlockPlan, ...]
    head_params: int
    trainable_params: int
    frozen_params: int
    frozen_steps: int
    frozen_batchnorms: int
    reinitialised: bool
    batchnorms: int = 0
    head_batchnorms: int = 0

    @property
    def trainable_blocks(self) -> List[str]:
        return [b.label for b in self.blocks if b.trainable]

    @property
    def frozen_blocks(self) -> List[str]:
        return [b.label for b in self.blocks if not b.trainable]

    def describe(self) -> str:
        """One line for logs: what trains."""
        trained = self.trainable_blocks
        if not trained:
            what = "the new head only"
        else:
            span = trained[0] if len(trained) == 1 else f"{trained[0]} .. {trained[-1]}"
            what = (f"the new head and {len(trained)} of {len(self.blocks)} backbone blocks "
                    f"({span})")
        return (f"{self.regime}: {what}; {self.trainable_params:,} trainable, "
                f"{self.frozen_params:,} frozen parameters; {self.describe_batchnorm()}"
                + ("; backbone re-initialised at random" if self.reinitialised else ""))

    def describe_batchnorm(self) -> str:
        """What the BatchNorm layers do in this regime, as a fact about the net."""
        backbone = self._describe_backbone_batchnorm()
        if self.head_batchnorms:
            backbone += (f"; the new head's {self.head_batchnorms} BatchNorm layer"
                         f"{'s' if self.head_batchnorms > 1 else ''} learn"
                         f"{'' if self.head_batchnorms > 1 else 's'}")
        return backbone

    def _describe_backbone_batchnorm(self) -> str:
        total, kept = self.batchnorms, self.frozen_batchnorms
        if total == 0:
            return "no BatchNorm layers"
        source = "initial" if self.reinitialised else "pretrained"
        if kept == 0:
            return f"all {total} BatchNorm layers learn their statistics from the new data"
        if kept == total:
            trains = "; their scale and shift still train" if self.trainable_blocks else ""
            return f"all {total} BatchNorm layers keep their {source} statistics{trains}"
        return (f"{kept} of {total} BatchNorm layers (in the frozen blocks) keep their "
                f"{source} statistics, the other {total - kept} learn from the new data")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["trainable_blocks"] = self.trainable_blocks
        out["frozen_blocks"] = self.frozen_blocks
        return out


def _weights(block):
    return [p for p in block.collect_params().values() if not is_running_stat(p)]


def _count(params) -> int:
    return int(sum(p.data().size if p.shape and 0 not in p.shape else 0 for p in params))


def batchnorm_layers(block) -> list:
    """Every BatchNorm layer inside ``block`` (anything with a ``use_global_stats`` setting)."""
    found = []
    block.apply(lambda b: found.append(b) if "use_global_stats" in getattr(b, "_kwargs", {})
                else None)
    return found


def batchnorms_learning(net: TransferNet) -> int:
    """How many BatchNorm layers normalise with batch statistics while ``net`` trains: those
    of the new head (always) and of the trained blocks that do not keep global statistics
    (the frozen prefix runs in inference mode). Such a layer needs at least 2 images in a
    batch: on 1 its output is its bias alone and its running variance shrinks."""
    steps = list(net.features._children.values())[frozen_prefix(net):]
    norms = batchnorm_layers(net.output) + [n for step in steps
                                           for n in batchnorm_layers(step)]
    return sum(1 for n in norms if not n._kwargs.get("use_global_stats"))


def apply_regime(net: TransferNet, regime, *, k: Optional[int] = None,
                 bn: str = "frozen", seed: Optional[int] = None) -> Plan:
    """Set which parameters of ``net`` train, and how BatchNorm behaves, for ``regime``.

    Args:
        net: a `TransferNet` from `load_backbone`.
        regime: ``"head"``, ``"last_k"`` (with ``k``), ``"full"``, ``"scratch"``, a string like
            ``"last_k:2"``, or a `Regime`.
        k: number of backbone blocks to train for ``last_k``: 1..len(feature_blocks(net)).
        bn: ``"frozen"`` or ``"global"`` (see the module docstring).
        seed: for ``scratch``, seeds the random re-initialisation.

    Returns:
        A `Plan`.

    Example:
        >>> plan = gluonft.apply_regime(net, "last_k", k=2)
        >>> plan.trainable_blocks
        ['features.6 (HybridSequential)', 'features.7 (HybridSequential)']
    """
    if not isinstance(net, TransferNet):
        raise ValueError(f"apply_regime needs a net from gluonft.load_backbone, got "
                         f"{type(net).__name__}")
    if isinstance(regime, Regime):
        if k is not None and k != regime.k:
            raise ValueError(f"k={k!r} contradicts {regime!r}")
    elif isinstance(regime, str) and ":" in regime:
        regime = parse_regime(regime, bn=bn)
    else:
        regime = Regime(regime, k, bn)
    blocks = feature_blocks(net)
    n_blocks = len(blocks)
    if regime.name == "last_k" and regime.k > n_blocks:
        raise ValueError(f"last_k with k={regime.k} is out of range for {net.backbone}: it has "
                         f"{n_blocks} blocks ({net.family.blocks_doc}); expected 1 <= k <= "
                         f"{n_blocks}")
    n_trainable = {"head": 0, "last_k": regime.k, "full": n_blocks,
                   "scratch": n_blocks}[regime.name]
    first_trainable = n_blocks - n_trainable

    steps = list(net.features._children.values())
    if regime.name == "scratch":
        if seed is not None:
            mx.random.seed(seed)
        # Parameters with an initialiser of their own (BatchNorm's gamma, beta and running
        # statistics) get it back; conv and dense weights get Xavier.
        net.features.initialize(mx.init.Xavier(), force_reinit=True)

    block_plans = []
    frozen_batchnorms = batchnorms = 0
    for index, (label, step_ids) in enumerate(blocks):
        trainable = index >= first_trainable
        params = []
        for i in step_ids:
            params += _weights(steps[i])
            for norm in batchnorm_layers(steps[i]):
                frozen = regime.bn == "global" or not trainable
                norm._kwargs["use_global_stats"] = frozen
                frozen_batchnorms += frozen
                batchnorms += 1
        for p in params:
            p.grad_req = "write" if trainable else "null"
        block_plans.append(BlockPlan(label, tuple(step_ids), _count(params), trainable))
    for p in _weights(net.output):
        p.grad_req = "write"
    head_norms = batchnorm_layers(net.output)
    for norm in head_norms:  # new layers: their statistics come from the new data
        norm._kwargs["use_global_stats"] = False
    # A hybridized graph has the old use_global_stats baked in: drop the cached graphs.
    net.apply(lambda b: b._clear_cached_op() if hasattr(b, "_clear_cached_op") else None)

    trainable_params = sum(b.params for b in block_plans if b.trainable)
    head_params = _count(_weights(net.output))
    return Plan(regime=regime.label, bn=regime.bn, blocks=tuple(block_plans),
                head_params=head_params, trainable_params=trainable_params + head_params,
                frozen_params=sum(b.params for b in block_plans if not b.trainable),
                frozen_steps=frozen_prefix(net), frozen_batchnorms=frozen_batchnorms,
                reinitialised=regime.name == "scratch", batchnorms=batchnorms,
                head_batchnorms=len(head_norms))


def frozen_prefix(net: TransferNet) -> int:
    """How many leading ``features`` steps are frozen with frozen BatchNorm, read off the net.

    Derived from the parameters themselves, so it is right whoever set them.
    """
    count = 0
    for step in net.features._children.values():
        weights_frozen = all(p.grad_req == "null" for p in _weights(step))
        norms_frozen = all(n._kwargs.get("use_global_stats") for n in batchnorm_layers(step))
        if not (weights_frozen and norms_frozen):
            break
        count += 1
    return count


class NetParts:
    """A net cut after its first ``frozen_steps`` steps: the frozen prefix and the rest.

    The parts hold the net's own blocks (same objects, same weights): ``frozen`` runs outside
    ``autograd.record()`` (or once, into the feature cache), ``trainable`` (the remaining
    backbone steps and the head) is what a training step records.

    Attributes:
        frozen: HybridSequential of the first steps (empty when ``frozen_steps`` is 0).
        trainable: HybridSequential of the other steps, then ``net.output``.
        frozen_steps: the cut.
    """

    def __init__(self, net: TransferNet, frozen_steps: int, *, hybridize: bool = False,
                 images: Optional[int] = None):
        steps = list(net.features._children.values())
        self.frozen = nn.HybridSequential(prefix="")
        self.trainable = nn.HybridSequential(prefix="")
        for step in steps[:frozen_steps]:
            self.frozen.add(step)
        for step in steps[frozen_steps:]:
            self.trainable.add(step)
        self.trainable.add(net.output)
        self.frozen_steps = frozen_steps
        self.hybridized = hybridize
        # images per pass of the frozen prefix (`gluonft.inference`'s choice of path), the
        # same for the cache and for the batches, so that both compute the same numbers
        self.images = images
        if hybridize:
            for part in (self.frozen, self.trainable):
                part.hybridize(static_alloc=True, static_shape=True)
        self._frozen_forward = None

    def prefix(self, x):
        """The frozen prefix's output for input ``x`` (``x`` itself when nothing is frozen),
        by the inference path (`gluonft.inference`): it runs outside ``autograd.record``,
        and its weights and BatchNorm statistics stay as they are for as long as these parts
        are used (one `fit` run), so one fused twin serves every batch."""
        if not self.frozen_steps:
            return x
        if self._frozen_forward is None:
            self._frozen_forward = inference_forward(self.frozen, [x.context],
                                                     hybridize=self.hybridized,
                                                     images=self.images)
        return self._frozen_forward(x)

    def prefix_shape(self, image_size: int) -> tuple:
        """Shape of the prefix output for one image, by symbolic shape inference (no compute)."""
        _, shapes, _ = self.frozen(mx.sym.var("data")).infer_shape(
            data=(1, 3, image_size, image_size))
        return tuple(shapes[0][1:])


def split_net(net: TransferNet, steps: Optional[int] = None, *,
              hybridize: bool = False, images: Optional[int] = None) -> NetParts:
    """The net cut after ``steps`` leading steps (default: its frozen prefix, `frozen_prefix`).

    Example:
        >>> parts = split_net(net)  # after apply_regime(net, "head"): the whole backbone
        >>> parts.frozen_steps == len(net.features)
        True
    """
    count = len(net.features._children)
    if steps is None:
        steps = frozen_prefix(net)
    elif isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= count:
        raise ValueError(f"steps must be an int in [0, {count}] (the number of leading "
                         f"net.features steps), got {steps!r}")
    return NetParts(net, steps, hybridize=hybridize, images=images)
