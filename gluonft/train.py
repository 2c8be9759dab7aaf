"""`fit` and `evaluate`: one plain training loop for every regime, device and script.

Per batch: uint8 images go to each device, are augmented and normalised there, the frozen
prefix of the backbone runs outside ``autograd.record()`` (no graph, no backward through it),
and only the trainable rest is recorded. Augmentation and shuffling draw from numpy generators
seeded by (seed, epoch), so a run is repeatable and does not depend on the number of devices.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn

from .backbones import MAX_IMAGE_SIZE, TransferNet, check_image_size
from .checkpoint import checkpoint_files, read_checkpoint, save_checkpoint
from .data.imageset import ImageSet, iterate_batches
from .devices import as_contexts, contexts_of
from .features import Features, batch_indices, cached_features, feature_key, \
    weights_digest
from .regimes import frozen_prefix
from .schedules import Schedule
from .transforms import Augment, BatchTransform, sample_affine, to_device

__all__ = ["fit", "evaluate", "History", "StopTraining", "TrainingDiverged", "OPTIMIZERS",
           "predict_proba", "MAX_IMAGE_SIZE"]

OPTIMIZERS = ("sgd", "nag", "adam")


class StopTraining(Exception):
    """Raise from a callback to end training after the current epoch (e.g. early stopping)."""


@dataclass
class History:
    """What `fit` measured, epoch by epoch, and the settings that produced it.

    ``history["val_acc"]`` gives one metric as a list, as Keras' ``History.history`` does.
    """
    epochs: List[Dict[str, float]] = field(default_factory=list)
    settings: Dict[str, object] = field(default_factory=dict)
    stopped_early: bool = False

    def __getitem__(self, key: str) -> List[float]:
        return [row.get(key) for row in self.epochs]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(epochs=list(data["epochs"]), settings=dict(data["settings"]),
                   stopped_early=bool(data.get("stopped_early", False)))


def _smoothed_cross_entropy(logits, labels, smoothing: float, classes: int):
    """Cross-entropy against ``(1 - s) * one_hot + s / classes`` (s = 0: the usual loss)."""
    log_p = mx.nd.log_softmax(logits, axis=-1)
    nll = -mx.nd.pick(log_p, labels, axis=-1)
    if smoothing == 0:
        return nll
    return (1 - smoothing) * nll - smoothing * log_p.mean(axis=-1)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _validate_fit_args(net, train, val, epochs, batch_size, lr, optimizer, label_smoothing,
                       momentum, wd):
    if not isinstance(net, TransferNet):
        raise ValueError(f"fit needs a net from gluonft.load_backbone, got {type(net).__name__}")
    for name, data in (("train", train), ("val", val)):
        if data is None and name == "val":
            continue
        if not isinstance(data, ImageSet):
            raise ValueError(f"{name} must be a gluonft ImageSet (e.g. from "
                             f"gluonft.datasets.cifar10), got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError(f"{name} holds no images")
        if len(data.classes) > net.classes:
            raise ValueError(f"{name} has {len(data.classes)} classes but the net has "
                             f"{net.classes} outputs; load the backbone with "
                             f"classes={len(data.classes)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (_is_number(lr) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive number (and finite), got {lr!r}")
    if not (_is_number(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if not (_is_number(wd) and 0 <= wd < math.inf):
        raise ValueError(f"wd (weight decay) must be a finite number >= 0, got {wd!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: expected one of "
                         f"{', '.join(OPTIMIZERS)}")
    if not (0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")


def _optimizer_params(optimizer, lr, momentum, wd) -> dict:
    params = {"learning_rate": lr, "wd": wd}
    if optimizer in ("sgd", "nag"):
        params["momentum"] = momentum
    return params


def _default_size(net, image_size):
    """``image_size``, or the backbone's pretrained size when it is None (0 is an error)."""
    return net.family.input_size if image_size is None else image_size


def _split(batch: np.ndarray, n: int) -> List[np.ndarray]:
    """Split a batch over ``n`` devices the way `gluon.utils.split_and_load` does."""
    return np.array_split(batch, n) if n > 1 else [batch]


# The largest feature cache `fit` builds on its own (cache_features=None), over train and val
# together; above it the frozen prefix runs every epoch. cache_features=True has no limit.
AUTO_CACHE_MAX_BYTES = 2 * 1024 ** 3
# An epoch whose mean training loss exceeds this many times ln(classes) (the loss of a
# uniform guess) has diverged: no run that learns comes near it.
EXPLODED_LOSS_FACTOR = 1000
# Steps between two reads of the running loss and accuracy for the progress bar: each read
# waits for the device, so it is not done every step.
_REPORT_EVERY = 25


class _Parts:
    """The frozen prefix and the trainable rest of a net, each hybridized on its own."""

    def __init__(self, net: TransferNet, hybridize: bool):
        steps = list(net.features._children.values())
        cut = frozen_prefix(net)
        self.frozen = nn.HybridSequential(prefix="")
        self.trainable = nn.HybridSequential(prefix="")
        for step in steps[:cut]:
            self.frozen.add(step)
        for step in steps[cut:]:
            self.trainable.add(step)
        self.trainable.add(net.output)
        self.frozen_steps = cut
        if hybridize:
            for part in (self.frozen, self.trainable):
                part.hybridize(static_alloc=True, static_shape=True)

    def prefix(self, x):
        return self.frozen(x) if self.frozen_steps else x

    def prefix_shape(self, image_size: int) -> tuple:
        """Shape of the prefix output for one image, by symbolic shape inference (no compute)."""
        _, shapes, _ = self.frozen(mx.sym.var("data")).infer_shape(
            data=(1, 3, image_size, image_size))
        return tuple(shapes[0][1:])


class _Meter:
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


def _check_views(feature_views, augment: Augment) -> int:
    """``feature_views`` as an int (0: off), validated."""
    if feature_views is None:
        return 0
    if isinstance(feature_views, bool) or not isinstance(feature_views, int) \
            or feature_views < 1:
        raise ValueError(f"feature_views must be None or a positive int (the number of fixed "
                         f"augmented views of each image), got {feature_views!r}")
    if augment.is_identity:
        raise ValueError(f"feature_views={feature_views} needs an augmentation: with "
                         f"{augment} every view is the same image; leave feature_views=None")
    return feature_views


def _cache_plan(cache_features, parts: _Parts, augment: Augment, views: int, image_size: int,
                n_images: int):
    """(use the feature cache?, why) for fit's ``cache_features`` argument."""
    if cache_features not in (None, True, False):
        raise ValueError(f"cache_features must be None (automatic), True or False, got "
                         f"{cache_features!r}")
    if cache_features is False:
        return False, "cache_features=False"
    if not parts.frozen_steps:
        problem = "the regime leaves no frozen prefix (every backbone step trains)"
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


def fit(net: TransferNet, train: ImageSet, val: Optional[ImageSet] = None, *, epochs: int,
        batch_size: int, lr: float, optimizer: str = "sgd", momentum: float = 0.9,
        wd: float = 1e-4, schedule: Schedule = Schedule(), label_smoothing: float = 0.0,
        augment: Augment = Augment(), image_size: Optional[int] = None, ctx=None, seed: int = 0,
        callbacks: Sequence[Callable] = (), checkpoint: Optional[str] = None,
        progress: bool = True, hybridize: bool = True, cache_features: Optional[bool] = None,
        cache_dir: Optional[str] = None, feature_views: Optional[int] = None,
        amp: Union[bool, str] = False) -> History:
    """Train ``net`` (as set up by `apply_regime`) on ``train``; evaluate on ``val`` each epoch.

    Args:
        net: a `TransferNet`; its parameters with ``grad_req != 'null'`` are trained.
        train, val: `ImageSet`s (uint8 images; resized, augmented and normalised on the device).
        epochs, batch_size, lr: the usual; ``batch_size`` is split over the contexts.
        optimizer: ``sgd`` (with ``momentum``), ``nag`` or ``adam``; ``wd``: weight decay.
        schedule: a `Schedule` (cosine by default; step, constant, onecycle; warm-up).
        label_smoothing: in [0, 1).
        augment: training augmentation (`Augment`); ``Augment.none()`` disables it.
        image_size: input side (default: the backbone's pretrained size).
        ctx: a context or a list (each batch is split across them); default `devices()`.
        seed: seeds shuffling, augmentation and MXNet's generator.
        callbacks: callables ``(epoch, logs)`` run after each epoch; raise `StopTraining` to end.
            A callback's ``lr_scale`` attribute (`ReduceLROnPlateau`) multiplies the
            schedule's learning rate from the next epoch on.
        checkpoint: a file path; after each epoch the parameters, optimizer state and history
            are saved there (atomically), and a run started with an existing checkpoint of the
            same settings resumes after its last epoch.
        progress: show a tqdm bar per epoch.
        hybridize: compile the net (static memory) for speed.
        amp: mixed precision with MXNet AMP: ``True`` or ``"float16"`` on GPU contexts only
            (on CPU training stays float32: a clear error), ``"bfloat16"`` on CPUs with
            AVX512-BF16. MXNet's AMP patches its operators for the whole process, so once
            on it stays on, and a second fit cannot ask for the other type.
        cache_features: compute the frozen prefix's features of ``train`` and ``val`` once and
            train the rest on them (`gluonft.features`); the result equals the uncached run
            within float tolerance. ``None`` (default): cache when the regime leaves a frozen
            prefix, ``augment`` is the identity and the features fit in
            ``AUTO_CACHE_MAX_BYTES``; ``True``: cache (an error when impossible); ``False``:
            never. ``history.settings["cache_features"]`` records what was done.
        cache_dir: a folder where features are also kept on disk (``<sha1 key>.npz``) and
            reused by later runs with the same frozen weights, data, size and prefix; an
            unreadable or stale file is rebuilt with a warning.
        feature_views: with an augmentation, draw K fixed augmented views of each training
            image (seeded by ``seed``) and train epoch e on view e % K instead of on fresh
            draws: the frozen prefix's features of the K views can then be cached. ``None``
            (default): fresh augmentation every epoch.

    Returns:
        A `History`.

    Example:
        >>> plan = gluonft.apply_regime(net, "head")
        >>> history = gluonft.fit(net, train, val, epochs=3, batch_size=64, lr=0.05,
        ...                       augment=gluonft.Augment.none())  # features computed once
        >>> history["val_acc"][-1], history.settings["cache_features"]
        (0.81, True)
    """
    _validate_fit_args(net, train, val, epochs, batch_size, lr, optimizer, label_smoothing,
                       momentum, wd)
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a gluonft.Schedule, got {schedule!r}")
    if not isinstance(augment, Augment):
        raise ValueError(f"augment must be a gluonft.Augment, got {augment!r}")
    contexts = as_contexts(ctx)
    image_size = check_image_size(net.backbone, _default_size(net, image_size),
                                  family=net.family)
    net.collect_params().reset_ctx(contexts)
    mx.random.seed(seed)
    trainable = [p for p in net.collect_params().values() if p.grad_req != "null"]
    if not trainable:
        raise ValueError("nothing to train: every parameter is frozen; call apply_regime first")
    amp_dtype = _start_amp(amp, contexts)  # before the parts are traced: the graph casts
    trainer = gluon.Trainer(trainable, optimizer,
                            _optimizer_params(optimizer, lr, momentum, wd))
    if amp_dtype:
        from mxnet.contrib import amp as mx_amp
        mx_amp.init_trainer(trainer)  # dynamic loss scaling; overflowing steps are skipped
    settings = {
        "backbone": net.backbone, "classes": net.classes, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "optimizer_params": _optimizer_params(optimizer, lr, momentum, wd),
        "schedule": schedule.to_dict(), "label_smoothing": label_smoothing,
        "augment": asdict(augment), "image_size": image_size, "seed": seed,
        "contexts": [str(c) for c in contexts], "train_images": len(train),
        "val_images": len(val) if val is not None else 0,
        "trainable_params": int(sum(p.data(contexts[0]).size for p in trainable)),
    }
    if amp_dtype:  # absent when off, as in earlier versions
        settings["amp"] = amp_dtype
    views = _check_views(feature_views, augment)
    if views:  # a setting that changes results; absent otherwise, as in earlier versions
        settings["feature_views"] = views
    history = History(settings=settings)
    parts = _Parts(net, hybridize)
    transform = BatchTransform(image_size, net.family.mean, net.family.std)
    use_cache, why = _cache_plan(cache_features, parts, augment, views, image_size,
                                 len(train) * max(views, 1) + (len(val) if val is not None else 0))
    start_epoch = _resume(checkpoint, net, trainer, history, settings)
    # Each view draws one augmentation per image, from its own seeded generator.
    view_rows = [sample_affine(len(train), augment, np.random.RandomState([seed % 2 ** 32, v]))
                 for v in range(views)]
    train_features: List[Features] = []
    val_features = None
    if use_cache and start_epoch < epochs:
        weights = weights_digest(parts.frozen)
        make = lambda data, rows=None: _frozen_features(  # noqa: E731
            parts, data, net, image_size, transform, contexts, batch_size, cache_dir, weights,
            rows)
        train_features = [make(train, rows) for rows in view_rows] or [make(train)]
        val_features = make(val) if val is not None else None
    # Not compared on resume: caching changes how, not what, is computed.
    settings["cache_features"] = use_cache
    settings["feature_cache"] = {
        "reason": why, "cache_dir": cache_dir,
        "train": train_features[0].info() if train_features else None,
        "val": val_features.info() if val_features is not None else None}
    if views and train_features:
        settings["feature_cache"]["train_views"] = [f.info() for f in train_features]

    per_epoch = -(-len(train) // batch_size)
    for epoch in range(start_epoch, epochs):
        begin = time.perf_counter()
        rng = np.random.RandomState((seed * 100003 + epoch) % (2 ** 32))
        meter = _Meter()
        bar = _progress(progress, per_epoch, f"epoch {epoch + 1}/{epochs}")
        pending = []
        # Callbacks such as ReduceLROnPlateau scale the schedule's rate (they set lr_scale
        # after an epoch); multiplying keeps warm-up and cosine shapes intact.
        lr_scale = float(np.prod([getattr(cb, "lr_scale", 1.0) for cb in callbacks]))
        # The order iterate_batches gives (tests/test_features.py checks it).
        for step, idx in enumerate(batch_indices(len(train), batch_size, shuffle=True,
                                                 seed=seed, epoch=epoch)):
            trainer.set_learning_rate(lr_scale * schedule.lr(
                lr, iteration=epoch * per_epoch + step, per_epoch=per_epoch, epochs=epochs))
            if train_features:
                inputs = _cached_inputs(train_features[epoch % len(train_features)], idx,
                                        contexts)
            else:
                if views:
                    affine = view_rows[epoch % views][idx]
                elif augment.is_identity:  # no resampling: the images stay exact (transforms)
                    affine = None
                else:
                    affine = sample_affine(len(idx), augment, rng)
                inputs = _image_inputs(parts, transform, train.images[idx], train.labels[idx],
                                       affine, contexts)
            losses = _train_step(parts, trainer, inputs, label_smoothing, net.classes, meter,
                                 scale_loss=bool(amp_dtype))
            # Wait for the previous batch only: the host prepares the next batch while the
            # device computes, and at most two batches are queued. Its losses are read then
            # (a few floats), so a diverging run stops one step after its loss is non-finite.
            _check_finite(pending, epoch=epoch, step=step, lr=lr, trainer=trainer,
                          checkpoint=checkpoint, history=history)
            pending = losses
            if bar is not None:
                bar.update(1)
                if (step + 1) % _REPORT_EVERY == 0 or step + 1 == per_epoch:
                    totals = meter.read()
                    bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}",
                                    acc=f"{totals[1] / totals[2]:.3f}", refresh=False)
        _check_finite(pending, epoch=epoch, step=per_epoch, lr=lr, trainer=trainer,
                      checkpoint=checkpoint, history=history)
        totals = meter.read()
        seconds = time.perf_counter() - begin
        if bar is not None:
            bar.close()
        logs = {"epoch": epoch + 1, "train_loss": totals[0] / totals[2],
                "train_acc": totals[1] / totals[2], "lr": trainer.learning_rate,
                "seconds": seconds, "images_per_s": totals[2] / seconds}
        # A loss can explode without reaching inf (1e17 with BatchNorm at lr 1e4): far above
        # a uniform guess's ln(classes) it means the weights are wrecked all the same.
        if logs["train_loss"] > EXPLODED_LOSS_FACTOR * math.log(net.classes):
            raise _diverged(f"the mean training loss of epoch {epoch + 1} is "
                            f"{logs['train_loss']:.3g}, over {EXPLODED_LOSS_FACTOR} times that "
                            f"of a uniform guess", lr=lr, trainer=trainer, checkpoint=checkpoint,
                            history=history)
        if val is not None:
            result = _evaluate_parts(parts, val, val_features, transform, contexts, batch_size)
            logs.update(val_loss=result["loss"], val_acc=result["accuracy"])
            if not math.isfinite(result["loss"]):
                raise _diverged(f"the validation loss of epoch {epoch + 1} is "
                                f"{result['loss']}", lr=lr, trainer=trainer,
                                checkpoint=checkpoint, history=history)
        history.epochs.append({k: float(v) for k, v in logs.items()})
        if checkpoint:
            save_checkpoint(checkpoint, net, trainer, history)
        try:
            for callback in callbacks:
                callback(epoch + 1, dict(logs))
        except StopTraining:
            history.stopped_early = True
            break
    return history


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: training stopped; the last good checkpoint is kept."""


def _diverged(what: str, *, lr, trainer, checkpoint, history) -> TrainingDiverged:
    done = len(history.epochs)
    kept = (f"; the checkpoint of epoch {done} ({checkpoint}.json) is the last good state"
            if checkpoint and done else "")
    return TrainingDiverged(
        f"training diverged: {what}. The learning rate is the likely cause (lr={lr:g}, "
        f"{trainer.learning_rate:.3g} at that step): try a 10x smaller lr (e.g. "
        f"{lr / 10:g}) or a warm-up{kept}")


def _check_finite(losses, *, epoch, step, lr, trainer, checkpoint, history) -> None:
    """Raise `TrainingDiverged` when a batch's per-image losses hold a NaN or an infinity."""
    for loss in losses:
        values = loss.asnumpy()  # waits for the batch; a few floats
        if not np.isfinite(values).all():
            bad = values[~np.isfinite(values)][0]
            raise _diverged(f"the training loss became {bad} in epoch {epoch + 1} (step "
                            f"{step} of the epoch)", lr=lr, trainer=trainer,
                            checkpoint=checkpoint, history=history)


def _frozen_features(parts, data, net, image_size, transform, contexts, batch_size,
                     cache_dir, weights, rows=None) -> Features:
    key = feature_key(parts.frozen, data, backbone=net.backbone, steps=parts.frozen_steps,
                      image_size=image_size, mean=transform.mean, std=transform.std,
                      weights=weights, augment_rows=rows)
    return cached_features(parts.frozen, data, key=key, transform=transform, contexts=contexts,
                           batch_size=batch_size, cache_dir=cache_dir, augment_rows=rows)


def _image_inputs(parts, transform, images, labels, affine, contexts):
    """[(prefix output, labels)] per device for a batch of uint8 images."""
    inputs = []
    for i, (ctx, x, y) in enumerate(zip(contexts, _split(images, len(contexts)),
                                        _split(labels, len(contexts)))):
        if len(x) == 0:  # a last batch smaller than the number of devices
            continue
        a = None if affine is None else _split(affine, len(contexts))[i]
        x = transform(to_device(x, ctx, "uint8"), a)
        inputs.append((parts.prefix(x), to_device(y, ctx)))  # float32, as argmax gives
    return inputs


def _cached_inputs(features: Features, idx: np.ndarray, contexts):
    """[(cached prefix output, labels)] per device for the images at ``idx``."""
    inputs = []
    for ctx, i in zip(contexts, _split(idx, len(contexts))):
        if len(i) == 0:
            continue
        inputs.append((to_device(features.values[i], ctx),
                       to_device(features.labels[i], ctx)))
    return inputs


# MXNet's AMP is process-wide and cannot be undone: the type it was started with.
_AMP_STATE: Dict[str, Optional[str]] = {"dtype": None}
_AMP_TYPES = {True: "float16", "float16": "float16", "bfloat16": "bfloat16"}


def _start_amp(amp, contexts) -> Optional[str]:
    """Validate ``amp`` for ``contexts`` and start MXNet AMP; the low-precision type or None."""
    if amp is False or amp is None:
        if _AMP_STATE["dtype"]:
            # MXNet's operators stay patched: training is mixed precision anyway, so it gets
            # the loss scaling that goes with it, and the settings say so.
            warnings.warn(f"MXNet AMP ({_AMP_STATE['dtype']}) was started by an earlier fit in "
                          f"this process and cannot be turned off: this fit trains in mixed "
                          f"precision too; restart Python for float32", stacklevel=3)
        return _AMP_STATE["dtype"]
    if isinstance(amp, (bool, str)) and amp in _AMP_TYPES:
        dtype = _AMP_TYPES[amp]
    else:
        raise ValueError(f"amp must be False, True, 'float16' or 'bfloat16', got {amp!r}")
    if dtype == "float16":
        cpus = [str(c) for c in contexts if c.device_type != "gpu"]
        if cpus:
            raise ValueError(f"amp={amp!r} (float16 training) needs GPU contexts, got "
                             f"{', '.join(cpus)}: on a CPU train in float32 (amp=False), or "
                             f"amp='bfloat16' on a CPU with AVX512-BF16")
    if _AMP_STATE["dtype"] not in (None, dtype):
        raise ValueError(f"MXNet AMP already runs in {_AMP_STATE['dtype']} in this process "
                         f"and cannot switch to {dtype}; restart Python to change it")
    from mxnet.contrib import amp as mx_amp
    mx_amp.init(target_dtype=dtype)  # patches MXNet's operators; a no-op the second time
    _AMP_STATE["dtype"] = dtype
    return dtype


def _train_step(parts, trainer, inputs, smoothing, classes, meter: _Meter, *,
                scale_loss: bool = False):
    """One optimiser step over a batch split across devices; returns the per-device losses."""
    losses, outputs = [], []
    with autograd.record():
        for features, y in inputs:
            out = parts.trainable(features)
            losses.append(_smoothed_cross_entropy(out, y, smoothing, classes))
            outputs.append(out)
        if scale_loss:  # AMP: scaled so that small float16 gradients do not vanish
            from mxnet.contrib import amp as mx_amp
            with mx_amp.scale_loss(losses, trainer) as scaled:
                autograd.backward(scaled)
    if not scale_loss:
        autograd.backward(losses)
    trainer.step(sum(len(y) for _, y in inputs))
    meter.add(losses, outputs, [y for _, y in inputs])
    return losses


def _evaluate_parts(parts, data, features, transform, contexts, batch_size) -> Dict[str, float]:
    """`evaluate` during `fit`: the same numbers through the already compiled parts (and the
    cached features when there are some), without re-hybridizing the whole net every epoch."""
    proba, pending = [], []
    for idx in batch_indices(len(data), batch_size, shuffle=False):
        if features is not None:
            inputs = _cached_inputs(features, idx, contexts)
        else:
            images = data.images[idx[0]:idx[-1] + 1]
            inputs = _image_inputs(parts, transform, images, data.labels[idx[0]:idx[-1] + 1],
                                   None, contexts)
        batch = [mx.nd.softmax(parts.trainable(x), axis=-1) for x, _ in inputs]
        proba += [p.asnumpy() for p in pending]  # the previous batch: two in flight at most
        pending = batch
    proba += [p.asnumpy() for p in pending]
    return _scores(np.concatenate(proba), data.labels)


def _scores(proba: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    labels = labels.astype(np.int64)
    picked = proba[np.arange(len(labels)), labels]
    return {"accuracy": float((proba.argmax(axis=1) == labels).mean()),
            "loss": float(-np.log(np.maximum(picked, 1e-12)).mean()),
            "count": int(len(labels))}


def _progress(enabled, total, description):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=description, leave=False, unit="batch")


def predict_proba(net: TransferNet, data: ImageSet, *, ctx=None, batch_size: int = 64,
                  image_size: Optional[int] = None, hybridize: bool = True) -> np.ndarray:
    """Class probabilities (N, classes) for every image of ``data``, in order."""
    return predict_view(net, data, None, ctx=ctx, batch_size=batch_size,
                        image_size=image_size, hybridize=hybridize)


def predict_view(net: TransferNet, data: ImageSet, affine: Optional[np.ndarray], *, ctx=None,
                 batch_size: int = 64, image_size: Optional[int] = None,
                 hybridize: bool = True) -> np.ndarray:
    """`predict_proba` of one view: every image resampled by the same ``affine`` row (the
    rows `sample_affine` makes; None: the image itself). Test-time augmentation uses it."""
    contexts = as_contexts(ctx)
    image_size = check_image_size(net.backbone, _default_size(net, image_size),
                                  family=net.family)
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    transform = BatchTransform(image_size, net.family.mean, net.family.std)
    out, pending = [], []
    for images, _ in iterate_batches(data, batch_size, shuffle=False):
        batch = []
        for ctx, x in zip(contexts, _split(images, len(contexts))):
            if len(x) == 0:
                continue
            rows = None if affine is None else to_device(
                np.tile(np.asarray(affine, np.float32), (len(x), 1)), ctx)
            logits = net(transform(to_device(x, ctx, "uint8"), rows))
            batch.append(mx.nd.softmax(logits, axis=-1))
        out += [o.asnumpy() for o in pending]  # the previous batch: two in flight at most
        pending = batch
    out += [o.asnumpy() for o in pending]
    return np.concatenate(out) if out else np.zeros((0, net.classes), np.float32)


def evaluate(net: TransferNet, data: ImageSet, *, ctx=None, batch_size: int = 64,
             image_size: Optional[int] = None, hybridize: bool = True) -> Dict[str, float]:
    """Accuracy and mean cross-entropy of ``net`` on ``data`` (inference mode).

    Returns:
        ``{"accuracy": ..., "loss": ..., "count": N}``.

    Example:
        >>> gluonft.evaluate(net, test, ctx=mx.cpu(), batch_size=128)["accuracy"]
        0.938
    """
    if not isinstance(data, ImageSet):
        raise ValueError(f"data must be a gluonft ImageSet, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("data holds no images")
    proba = predict_proba(net, data, ctx=ctx, batch_size=batch_size, image_size=image_size,
                          hybridize=hybridize)
    return _scores(proba, data.labels)


# --- checkpoints ------------------------------------------------------------------------------

def _comparable(settings: dict) -> dict:
    """Settings as they read back from JSON (tuples become lists); devices and the feature
    cache may differ."""
    skip = ("contexts", "cache_features", "feature_cache")  # how, not what, is computed
    return json.loads(json.dumps({k: v for k, v in settings.items() if k not in skip}))


def _resume(path, net, trainer, history: History, settings: dict) -> int:
    """Load a checkpoint of the same settings; returns the epoch to start from."""
    manifest = read_checkpoint(path) if path else None
    if manifest is None:
        return 0
    saved = History.from_dict(manifest)
    if _comparable(saved.settings) != _comparable(settings):
        raise ValueError(f"checkpoint {path}.json was written with other settings; remove it or "
                         f"choose another checkpoint path")
    files = checkpoint_files(path, manifest)
    net.load_parameters(files["params"], ctx=contexts_of(net))
    trainer.load_states(files["states"])
    history.epochs[:] = saved.epochs
    return len(saved.epochs)
