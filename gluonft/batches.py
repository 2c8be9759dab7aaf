"""What one training batch becomes inside `fit`: its inputs per device (images augmented,
mixed and through the frozen prefix, or the prefix's cached features), the step (loss with
label smoothing and mixing, backward, update), the running loss meter, and `fit`'s plan for the
feature cache. `training_batch` shows a batch as the net sees it."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Dict, List, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd

from .datasets.imageset import ImageSet
from .devices import read_in_flight, split_batch
from .features import Features, batch_indices, cached_features, deepen_features, feature_key
from .inference import inference_forward
from .mixing import Mix, draw_mix, mix_images
from .pipelines import Albumentations
from .predict import scores
from .regimes import NetParts, batchnorms_learning
from .transforms import Augment, BatchTransform, sample_augment, to_device

__all__ = ["training_batch", "describe_augment", "AUTO_CACHE_MAX_BYTES", "cache_plan",
           "check_views", "augmented_batch", "image_inputs", "cached_inputs", "frozen_features",
           "train_step", "LossMeter", "smoothed_cross_entropy", "evaluate_parts", "val_share",
           "drops_last_batch", "check_shares"]

# The largest feature cache `fit` builds on its own (cache_features=None), over train and val
# together; above it the frozen prefix runs every epoch. cache_features=True has no limit.
AUTO_CACHE_MAX_BYTES = 2 * 1024 ** 3


def smoothed_cross_entropy(logits, labels, smoothing: float, classes: int):
    """Cross-entropy against ``(1 - s) * one_hot + s / classes`` (s = 0: the usual loss)."""
    log_p = mx.nd.log_softmax(logits, axis=-1)
    nll = -mx.nd.pick(log_p, labels, axis=-1)
    if smoothing == 0:
        return nll
    return (1 - smoothing) * nll - smoothing * log_p.mean(axis=-1)


class LossMeter:
    """Per-batch loss sums and correct counts, kept on the device until read.

    Reading a value waits for the device; keeping the sums there lets the host queue the next
    batch while the device still computes this one. `read` adds the float32 per-batch sums in
    float64 on the host, as the loop always did, so the logged numbers do not change.
    """

    def __init__(self):
        self.pending: List[mx.nd.NDArray] = []  # [loss sum, correct] pairs not read yet
        self.totals = np.zeros(3)  # loss sum, correct, seen

    def add(self, losses, outputs, labels) -> None:
        for loss, out, y in zip(losses, outputs, labels):
            self.pending += [loss.sum(), (out.argmax(axis=1) == y).sum()]
            self.totals[2] += len(y)

    def read(self) -> np.ndarray:
        """[loss sum, correct, seen] so far (waits for the device)."""
        for i in range(0, len(self.pending), 2):
            self.totals[0] += float(self.pending[i].asscalar())
            self.totals[1] += float(self.pending[i + 1].asscalar())
        self.pending = []
        return self.totals.copy()


def training_batch(train: ImageSet, *, augment=Augment(), mix: Optional[Mix] = None,
                   image_size: int, mean, std, n: int = 8, seed: int = 0):
    """``n`` training images, spread over the set (so over its classes), as `fit` feeds them
    to the net (augmented, mixed, resized), back in uint8 RGB for a look, with one caption
    each.

    Example:
        >>> images, captions = training_batch(data.train, augment=Augment.preset("strong"),
        ...                                   image_size=96, mean=net.family.mean,
        ...                                   std=net.family.std)  # doctest: +SKIP
    """
    take = np.unique(np.linspace(0, len(train) - 1, min(n, len(train))).astype(int))
    rng = np.random.RandomState(seed)
    images, affine = augmented_batch(train.images[take], augment, rng)
    transform = BatchTransform(image_size, mean, std)
    x = transform(to_device(images, mx.cpu(), "uint8"), affine)
    labels = [train.classes[i] for i in train.labels[take]]
    captions = list(labels)
    draw = draw_mix(mix, len(take), image_size, rng) if mix is not None else None
    if draw is not None:
        x = mix_images(x, draw)
        captions = [f"{labels[i]} {draw.lam:.2f} + {labels[j]} {1 - draw.lam:.2f}"
                    for i, j in enumerate(draw.partner)]
    pixels = x.asnumpy().transpose(0, 2, 3, 1) * np.array(std) + np.array(mean)
    return np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8), captions


def augmented_batch(images: np.ndarray, augment, rng, share=slice(None)):
    """(images, affine rows) of ``images[share]`` of a training batch, drawn as for all of
    ``images``: a distributed worker's share gets what one process gives those images. An
    albumentations pipeline changes the images on the host (one seed per image); an `Augment`
    draws the affine rows the device applies (None for the identity: no resampling, the
    images stay exact)."""
    if isinstance(augment, Albumentations):
        seeds = rng.randint(0, 2 ** 31, size=len(images))
        return augment(images[share], seeds[share]), None
    if augment.is_identity:
        return images[share], None
    return images[share], sample_augment(len(images), augment, rng)[share]


def describe_augment(augment) -> dict:
    """The augmentation as data, for History settings and cards."""
    return augment.to_dict() if isinstance(augment, Albumentations) else asdict(augment)


def check_views(feature_views, augment: Augment) -> int:
    """``feature_views`` as an int (0: off), validated."""
    if feature_views is None:
        return 0
    if isinstance(feature_views, bool) or not isinstance(feature_views, int) \
            or feature_views < 1:
        raise ValueError(f"feature_views must be None or a positive int (the number of fixed "
                         f"augmented views of each image), got {feature_views!r}")
    if isinstance(augment, Albumentations):
        raise ValueError(f"feature_views={feature_views} takes an Augment; an albumentations "
                         f"pipeline runs fresh on the host every epoch")
    if augment.is_identity:
        raise ValueError(f"feature_views={feature_views} needs an augmentation: with "
                         f"{augment} every view is the same image; leave feature_views=None")
    return feature_views


def cache_plan(cache_features, parts: NetParts, augment: Augment, views: int, image_size: int,
                n_images: int, mix: Optional[Mix] = None):
    """(use the feature cache?, why) for fit's ``cache_features`` argument."""
    if cache_features not in (None, True, False):
        raise ValueError(f"cache_features must be None (automatic), True or False, got "
                         f"{cache_features!r}")
    if cache_features is False:
        return False, "cache_features=False"
    if not parts.frozen_steps:
        problem = "the regime leaves no frozen prefix (every backbone step trains)"
    elif mix is not None:
        problem = f"{mix.kind} mixes the images of every batch anew (mix=None to cache)"
    elif not augment.is_identity and not views:
        problem = (f"training augmentation is on ({augment}); features are only cached for "
                   f"augment=Augment.none() or a fixed number of views (feature_views=K)")
    else:
        problem = None
    if problem:
        if cache_features:
            raise ValueError(f"cache_features=True but {problem}")
        return False, problem
    if cache_features is None:
        nbytes = 4 * int(np.prod(parts.prefix_shape(image_size))) * n_images
        if nbytes > AUTO_CACHE_MAX_BYTES:
            return False, (f"the features would take {nbytes / 2 ** 30:.1f} GiB, more than the "
                           f"automatic limit of {AUTO_CACHE_MAX_BYTES / 2 ** 30:.1f} GiB; pass "
                           f"cache_features=True to cache them anyway")
    return True, (f"the first {parts.frozen_steps} backbone steps are frozen and "
                  + (f"augmentation is {views} fixed view(s) per image" if views
                     else "there is no augmentation"))


def frozen_features(parts, data, net, image_size, transform, contexts, batch_size,
                     cache_dir, weights, rows=None, *, prefix=None, cluster=None) -> Features:
    key = feature_key(parts.frozen, data, backbone=net.backbone, steps=parts.frozen_steps,
                      image_size=image_size, mean=transform.mean, std=transform.std,
                      weights=weights, augment_rows=rows)
    features = cached_features(parts.frozen if prefix is None else prefix, data, key=key,
                               transform=transform, contexts=contexts, batch_size=batch_size,
                               cache_dir=cache_dir, augment_rows=rows,
                               hybridize=parts.hybridized, pass_images=parts.images,
                               cluster=cluster)
    return replace(features, steps=parts.frozen_steps)


def features_from_prefix(source, parts, net, train, val, *, contexts, batch_size):
    """`fit`'s cached (train, val) features computed from ``source``, a ``(train, val)`` pair
    of `Features` of fewer steps than the frozen prefix (``fit(prefix_features=...)``):
    only the steps in between run (`deepen_features`)."""
    frozen = parts.frozen_steps
    if not (isinstance(source, (tuple, list)) and len(source) == 2
            and isinstance(source[0], Features)):
        raise ValueError(f"prefix_features must be a (train, val) pair of gluonft Features, "
                         f"got {type(source).__name__}")
    steps = source[0].steps
    if steps is None or not 0 < steps <= frozen:
        raise ValueError(f"prefix_features come from {steps} backbone steps; this regime "
                         f"freezes the first {frozen}: expected features of 1 to {frozen} "
                         f"steps (extract_features(net, data, steps=...))")
    for name, data, features in (("train", train, source[0]), ("val", val, source[1])):
        if data is not None and not (isinstance(features, Features) and features.steps == steps
                                     and np.array_equal(features.labels, data.labels)):
            raise ValueError(f"prefix_features[{name!r}] are not the {len(data)} {name} "
                             f"images' features of {steps} steps (got "
                             f"{'none' if features is None else len(features)})")
    deepen = lambda f: deepen_features(  # noqa: E731
        f, net, frozen, ctx=contexts, batch_size=batch_size, hybridize=parts.hybridized,
        images=len(train))
    return deepen(source[0]), deepen(source[1]) if val is not None else None


def image_inputs(parts, transform, images, labels, affine, contexts, *,
                  mix: Optional[Mix] = None, rng=None):
    """[(prefix output, labels)] per device for a batch of uint8 images; with ``mix``,
    [(prefix output, labels, partner labels, lam)] for the batches it mixes."""
    inputs = []
    n = len(contexts)
    for i, (ctx, x, y) in enumerate(zip(contexts, split_batch(images, n),
                                        split_batch(labels, n))):
        if len(x) == 0:  # a last batch smaller than the number of devices
            continue
        a = None if affine is None else split_batch(affine, n)[i]
        x = transform(to_device(x, ctx, "uint8"), a)
        draw = draw_mix(mix, len(y), x.shape[-1], rng) if mix is not None else None
        if draw is None:
            inputs.append((parts.prefix(x), to_device(y, ctx)))  # float32, as argmax gives
        else:
            inputs.append((parts.prefix(mix_images(x, draw)), to_device(y, ctx),
                           to_device(y[draw.partner], ctx), draw.lam))
    return inputs


def cached_inputs(features: Features, idx: np.ndarray, contexts):
    """[(cached prefix output, labels)] per device for the images at ``idx``."""
    inputs = []
    for ctx, i in zip(contexts, split_batch(idx, len(contexts))):
        if len(i) == 0:
            continue
        inputs.append((to_device(features.values[i], ctx),
                       to_device(features.labels[i], ctx)))
    return inputs


def train_step(parts, trainer, inputs, smoothing, classes, meter: LossMeter, *,
                scale_loss: bool = False, step_size: Optional[int] = None):
    """One optimiser step over a batch split across devices; returns the per-device losses.
    ``step_size``: the images the gradients sum over (the global batch under a distributed
    kvstore, which sums the workers' gradients); default this batch's."""
    losses, outputs, dominant = [], [], []
    with autograd.record():
        for features, y, *mixed in inputs:
            out = parts.trainable(features)
            loss = smoothed_cross_entropy(out, y, smoothing, classes)
            if mixed:  # mixup/cutmix: both labels, weighted by their share of the image
                partner, lam = mixed
                loss = lam * loss + (1 - lam) * smoothed_cross_entropy(out, partner,
                                                                        smoothing, classes)
                y = y if lam >= 0.5 else partner  # accuracy against the dominant label
            losses.append(loss)
            outputs.append(out)
            dominant.append(y)
        if scale_loss:  # AMP: scaled so that small float16 gradients do not vanish
            from mxnet.contrib import amp as mx_amp
            with mx_amp.scale_loss(losses, trainer) as scaled:
                autograd.backward(scaled)
    if not scale_loss:
        autograd.backward(losses)
    trainer.step(step_size or sum(len(y) for y in dominant))
    meter.add(losses, outputs, dominant)
    return losses


def evaluate_parts(parts, data, features, transform, contexts, batch_size) -> Dict[str, float]:
    """`evaluate` during `fit`: the same numbers through the already compiled parts (and the
    cached features when there are some), without re-hybridizing the whole net every epoch."""
    forward = inference_forward(parts.trainable, contexts, hybridize=parts.hybridized,
                                images=len(data))

    def batches():
        for idx in batch_indices(len(data), batch_size, shuffle=False):
            if features is not None:
                inputs = cached_inputs(features, idx, contexts)
            else:
                inputs = image_inputs(parts, transform, data.images[idx[0]:idx[-1] + 1],
                                       data.labels[idx[0]:idx[-1] + 1], None, contexts)
            yield [mx.nd.softmax(forward(x), axis=-1) for x, _ in inputs]

    return scores(np.concatenate(list(read_in_flight(batches()))), data.labels)


def val_share(cluster, val: ImageSet, features: Optional[Features]):
    """This worker's share of the validation set (and of its cached features), taken once."""
    share = cluster.share(np.arange(len(val)))
    if features is not None:
        features = Features(features.values[share], features.labels[share], features.key,
                            features.source, features.seconds, features.path)
    return val.take(share), features


def drops_last_batch(count: int, batch: int, devices: int, net) -> int:
    """The images of the last training batch when it is dropped, else 0. The rule: the last
    batch of an epoch is dropped in training (never in evaluation) when some device would get
    fewer than 2 of its images and the net has a BatchNorm layer that learns from batch
    statistics (`batchnorms_learning`): on 1 image its output is its bias alone, no gradient
    flows through it and its running variance shrinks. The images are shuffled anew each
    epoch, so no image is left out for good."""
    last = count % batch
    if last == 0 or last // devices >= 2 or not batchnorms_learning(net):
        return 0
    return last


def check_shares(images: int, global_batch: int, workers: int, batch_size: int) -> None:
    """Every global batch must give every worker an image (a worker with none would have no
    gradient to send, and the others would wait for it)."""
    last = images % global_batch
    if workers > 1 and 0 < last < workers:
        raise ValueError(f"batch_size={batch_size} per worker x {workers} workers leaves a last "
                         f"batch of {last} of the {images} training images, fewer than the "
                         f"{workers} workers; choose a batch_size for which "
                         f"{images} % (batch_size x {workers}) is 0 or at least {workers}")
