"""`fit`: one plain training loop for every regime, device and script. Its settings'
vocabulary is `gluonft.settings`; what each batch becomes (inputs, step, loss) is
`gluonft.batches`.

Per batch: uint8 images go to each device, are augmented and normalised there, the frozen
prefix of the backbone runs outside ``autograd.record()`` (no graph, no backward through it),
and only the trainable rest is recorded. Shuffling, augmentation, mixing and MXNet's own
generator (dropout) draw from generators seeded by (seed, epoch), so a run repeats exactly on
the same devices, and a resumed run ends as an uninterrupted one. Over several devices each
device takes a share of every batch: the frozen-BatchNorm regimes without mixing or dropout
give the one-device result (to float rounding), but a BatchNorm that learns normalises each
share with that share's statistics, dropout draws its masks per device, and mixup/cutmix mix
images within a share, so those runs depend on the number of devices, as in any
data-parallel training.

    fit(...)
      _Run.start        devices, Trainer, the frozen/trainable split, feature cache, resume
      for each epoch:
        run.train_epoch   batches -> steps (hooks before/after each), losses checked
        run.end_epoch     validation, history, checkpoint, epoch hooks
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet import gluon

from .amp import start_amp
from .backbones import MAX_IMAGE_SIZE, TransferNet, check_image_size
from .batches import (
    LossMeter,
    augmented_batch,
    cache_plan,
    cached_inputs,
    check_shares,
    check_views,
    describe_augment,
    drops_last_batch,
    evaluate_parts,
    features_from_prefix,
    frozen_features,
    image_inputs,
    train_step,
    val_share,
)
from .callbacks import StopTraining, as_callback
from .checkpoint import resume_checkpoint, save_checkpoint
from .cpu import check_bfloat16
from .datasets.imageset import ImageSet
from .devices import as_contexts
from .distributed import DIST_KVSTORES, Cluster, check_kvstore
from .features import Features, batch_indices, weights_digest
from .mixing import Mix
from .pace import LOG, Pace, epoch_line, progress_bar, speaker
from .pipelines import Albumentations
from .predict import evaluate, predict_proba
from .quantize import (
    CALIBRATION_IMAGES,
    calibration_indices,
    check_feature_dtype,
    int8_block,
    int8_unavailable,
)
from .regimes import split_net
from .schedules import Schedule
from .settings import check_training, optimizer_params
from .transforms import Augment, BatchTransform, sample_augment, to_device

__all__ = ["fit", "evaluate", "History", "StopTraining", "TrainingDiverged", "predict_proba",
           "MAX_IMAGE_SIZE"]


# --- the record of a run -----------------------------------------------------------------------

class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (or exploded): training stopped; the last good
    checkpoint is kept."""


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


# An epoch whose mean training loss exceeds this many times ln(classes) (the loss of a
# uniform guess) has diverged: no run that learns comes near it.
EXPLODED_LOSS_FACTOR = 1000
# Steps between two reads of the running loss and accuracy for the progress bar: each read
# waits for the device, so it is not done every step.
_REPORT_EVERY = 25


def fit(net: TransferNet, train: ImageSet, val: Optional[ImageSet] = None, *,
        # what the optimiser does (the fields of TrainSettings; `settings.fit_kwargs()`)
        epochs: int, lr: float, batch_size: int = 64, optimizer: str = "sgd",
        momentum: float = 0.9, wd: float = 1e-4, schedule: Schedule = Schedule(),
        label_smoothing: float = 0.0, mix: Optional[Mix] = None, amp: Union[bool, str] = False,
        # what the net sees: augmentation, input size, the frozen prefix's feature cache
        augment: Augment = Augment(), image_size: Optional[int] = None,
        cache_features: Optional[bool] = None, cache_dir: Optional[str] = None,
        feature_views: Optional[int] = None, feature_dtype: str = "float32",
        prefix_features: Optional[Tuple[Features, Optional[Features]]] = None,
        # where and how the loop runs, and what it leaves behind
        ctx=None, kvstore: Optional[str] = None, seed: int = 0, hybridize: bool = True,
        callbacks: Sequence[Callable] = (), checkpoint: Optional[str] = None,
        progress: bool = True) -> History:
    """Train ``net`` (as set up by `apply_regime`) on ``train``; evaluate on ``val`` each epoch.

    Args:
        net: a `TransferNet`; its parameters with ``grad_req != 'null'`` are trained.
        train, val: `ImageSet`s (uint8 images; resized, augmented and normalised on the device).

    What the optimiser does (`TrainSettings.fit_kwargs()` gives these from one object):
        epochs, batch_size, lr: the usual; ``batch_size`` (default 64) is split over the
            contexts.
        optimizer: ``sgd`` (with ``momentum``), ``nag`` or ``adam``; ``wd``: weight decay.
        schedule: a `Schedule` (cosine by default; step, constant, onecycle; warm-up).
        label_smoothing: in [0, 1).
        mix: mixup or cutmix of training batches (`gluonft.mixing.Mix`), or None.
        amp: mixed precision with MXNet AMP: ``True`` or ``"float16"`` on GPU contexts only
            (on CPU training stays float32: a clear error), ``"bfloat16"`` on CPUs with
            AVX512-BF16 or AMX (`gluonft.cpu`: refused on x86 CPUs without AVX-512, a warning
            on AVX-512 CPUs that only emulate it). MXNet's AMP patches its operators for the
            whole process, so once on it stays on, and a second fit cannot ask for the other type.

    What the net sees:
        augment: training augmentation: an `Augment` (on the device; ``Augment.none()``
            disables it) or a `gluonft.pipelines.Albumentations` pipeline (on the host).
        image_size: input side (default: the backbone's pretrained size).
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
        feature_dtype: ``"int8"`` computes the cached features through an int8 copy of the
            frozen prefix calibrated on training images (`gluonft.quantize`; one CPU
            context, needs the cache); ``"float32"`` (default) through the float net.
        prefix_features: ``(train, val)`` features of the first d backbone steps, d at most
            the frozen prefix, computed with the weights those steps have now
            (`extract_features`): the cache then runs only the steps past d over them
            (`fine_tune`'s stages share one pass over the photos so). Unused if uncached.

    Where and how the loop runs, and what it leaves behind:
        ctx: a context or a list (each batch is split across them); default `devices()`.
        kvstore: how gradients are combined: None (MXNet's choice for the contexts of this
            process), ``"device"``, ``"local"``, or a distributed kvstore (``"dist_sync"``,
            ``"dist_device_sync"``, ``"dist_async"``) when this process is one worker of a job
            started by `python -m gluonft.launch` (`gluonft.distributed`): ``batch_size`` is
            then per worker, each global batch of ``batch_size x workers`` images is shared
            out, every worker logs the same numbers, and only worker 0 writes checkpoints.
        seed: seeds shuffling, augmentation and MXNet's generator.
        hybridize: compile the net (static memory) for speed.
        callbacks: `gluonft.callbacks.Callback` objects (hooks before and after each step and
            after each epoch, given the Trainer) or functions ``(epoch, logs)`` run after each
            epoch; raise `StopTraining` to end (see `gluonft.callbacks`).
        checkpoint: a file path; after each epoch the parameters, optimizer state and history
            are saved there (atomically), and a run started with an existing checkpoint of the
            same settings resumes after its last epoch.
        progress: show a tqdm bar per epoch (images/s); either way the run says how long it
            will take once its first steps are timed (`gluonft.pace`: beside the bars, else
            in the ``gluonft`` log, with a line per epoch).

    Returns:
        A `History`; ``settings["timings"]`` holds the seconds of this process's feature
        caching, training steps and validation.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (or exploded); the message names the
            learning rate, and the checkpoint keeps the last good epoch.

    Example:
        >>> plan = gluonft.apply_regime(net, "head")
        >>> history = gluonft.fit(net, train, val, epochs=3, batch_size=64, lr=0.05,
        ...                       augment=gluonft.Augment.none())  # features computed once
        >>> history["val_acc"][-1], history.settings["cache_features"]
        (0.81, True)
    """
    run = _Run.start(net, train, val, dict(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
        wd=wd, schedule=schedule, label_smoothing=label_smoothing, augment=augment,
        image_size=image_size, ctx=ctx, seed=seed, callbacks=callbacks, checkpoint=checkpoint,
        progress=progress, hybridize=hybridize, cache_features=cache_features,
        cache_dir=cache_dir, feature_views=feature_views, amp=amp, mix=mix,
        feature_dtype=feature_dtype, prefix_features=prefix_features, kvstore=kvstore))
    try:
        for epoch in range(run.start_epoch, epochs):
            logs = run.train_epoch(epoch)
            run.end_epoch(epoch, logs)
    except StopTraining:
        run.history.stopped_early = True
    return run.history


def _check_data(net, train, val) -> None:
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


def _check_args(a: dict) -> None:
    check_training(**{k: a[k] for k in ("epochs", "batch_size", "optimizer", "lr", "momentum",
                                        "wd", "label_smoothing")})
    if not isinstance(a["schedule"], Schedule):
        raise ValueError(f"schedule must be a gluonft.Schedule, got {a['schedule']!r}")
    if not isinstance(a["augment"], (Augment, Albumentations)):
        raise ValueError(f"augment must be a gluonft.Augment or a gluonft.pipelines."
                         f"Albumentations, got {a['augment']!r}")
    if a["mix"] is not None and not isinstance(a["mix"], Mix):
        raise ValueError(f"mix must be a gluonft.mixing.Mix or None, got {a['mix']!r}")
    check_feature_dtype(a["feature_dtype"])
    check_kvstore(a["kvstore"])
    if a["kvstore"] == "dist_async" and a["schedule"].name != "constant":
        # async updates run on the servers with the optimiser as it was sent to them once
        raise ValueError(f"kvstore='dist_async' updates on the servers, which never see a "
                         f"schedule's learning rates; use schedule=Schedule('constant') or "
                         f"kvstore='dist_sync' (got schedule {a['schedule'].name!r})")


class _Run:
    """Everything one `fit` call holds while it trains: the named parts of its loop."""

    @classmethod
    def start(cls, net, train, val, a: dict) -> "_Run":
        _check_data(net, train, val)
        _check_args(a)
        run = cls()
        run.net, run.train, run.val, run.a = net, train, val, a
        run.contexts = as_contexts(a["ctx"])
        run.image_size = check_image_size(
            net.backbone, net.family.input_size if a["image_size"] is None else a["image_size"],
            family=net.family)
        run.callbacks = [as_callback(cb) for cb in a["callbacks"]]
        net.collect_params().reset_ctx(run.contexts)
        mx.random.seed(a["seed"])
        trainable = [p for p in net.collect_params().values() if p.grad_req != "null"]
        if not trainable:
            raise ValueError("nothing to train: every parameter is frozen; call apply_regime "
                             "first")
        check_bfloat16(a["amp"], run.contexts)
        run.amp_dtype = start_amp(a["amp"], run.contexts)  # before tracing: the graph casts
        params = optimizer_params(a["optimizer"], a["lr"], a["momentum"], a["wd"])
        run.cluster = (Cluster.join(a["kvstore"]) if a["kvstore"] in DIST_KVSTORES else None)
        run.workers = run.cluster.workers if run.cluster else 1
        run.global_batch = a["batch_size"] * run.workers
        check_shares(len(train), run.global_batch, run.workers, a["batch_size"])
        if run.cluster:  # workers update alike from the summed gradients (async: on servers)
            run.trainer = gluon.Trainer(trainable, a["optimizer"], params,
                                        kvstore=run.cluster.trainer_kvstore(len(trainable)),
                                        update_on_kvstore=a["kvstore"] == "dist_async")
            # Gluon initialises the kvstore lazily, in the first step: every worker then pulls
            # the initial weights from the servers under the key its first gradients are
            # pushed to, and a pull that arrives after the summed gradients comes back with
            # gradients for weights (seen: 2 of 5 runs diverged). Initialise and wait first.
            run.trainer._init_kvstore()
            run.trainer._init_params()
            mx.nd.waitall()
        elif a["kvstore"] is not None:
            run.trainer = gluon.Trainer(trainable, a["optimizer"], params, kvstore=a["kvstore"])
        else:
            run.trainer = gluon.Trainer(trainable, a["optimizer"], params)
        if run.amp_dtype:
            from mxnet.contrib import amp as mx_amp
            mx_amp.init_trainer(run.trainer)  # dynamic loss scaling; overflows are skipped
        run.views = check_views(a["feature_views"], a["augment"])
        run.history = History(settings=run._settings(params, trainable))
        run.parts = split_net(net, hybridize=a["hybridize"], images=len(train))
        run.transform = BatchTransform(run.image_size, net.family.mean, net.family.std)
        run.history.epochs[:] = resume_checkpoint(a["checkpoint"], net, run.trainer,
                                                  run.history.settings)
        run.start_epoch = len(run.history.epochs)
        run.per_epoch = -(-len(train) // run.global_batch)
        run.drop_last = drops_last_batch(len(train), run.global_batch,
                                          run.workers * len(run.contexts), net)
        if run.drop_last:
            run.history.settings["dropped_last_batch"] = run.drop_last
        run._prepare_features()
        run.pace = Pace(steps_per_epoch=run.per_epoch - int(bool(run.drop_last)),
                        epochs=a["epochs"], start_epoch=run.start_epoch,
                        val_images=len(val) if val is not None else 0,
                        say=speaker(a["progress"], run.cluster is None or run.cluster.is_chief),
                        what=f"fit ({net.backbone}, {a['epochs']} epochs)")
        return run

    def _settings(self, params: dict, trainable) -> dict:
        a, train, val = self.a, self.train, self.val
        settings = {
            "backbone": self.net.backbone, "classes": self.net.classes, "epochs": a["epochs"],
            "batch_size": a["batch_size"], "lr": a["lr"], "optimizer": a["optimizer"],
            "optimizer_params": params, "schedule": a["schedule"].to_dict(),
            "label_smoothing": a["label_smoothing"], "augment": describe_augment(a["augment"]),
            "image_size": self.image_size, "seed": a["seed"],
            "contexts": [str(c) for c in self.contexts], "train_images": len(train),
            "val_images": len(val) if val is not None else 0,
            "trainable_params": int(sum(p.data(self.contexts[0]).size for p in trainable)),
        }
        # Settings that change results are absent when off, as in earlier versions, so that
        # their checkpoints still resume.
        if self.amp_dtype:
            settings["amp"] = self.amp_dtype
        if self.views:
            settings["feature_views"] = self.views
        if a["mix"] is not None:
            settings["mix"] = a["mix"].to_dict()
        if self.net.head_spec.kind != "linear":
            settings.update(self.net.head_spec.to_dict())
        if a["kvstore"] in DIST_KVSTORES:
            settings.update(kvstore=a["kvstore"], workers=self.workers)
        if a["feature_dtype"] != "float32":
            settings["feature_dtype"] = a["feature_dtype"]
        return settings

    def _prepare_features(self) -> None:
        """The frozen prefix's features, computed once, when the cache applies."""
        a, train, val = self.a, self.train, self.val
        use, why = cache_plan(a["cache_features"], self.parts, a["augment"], self.views,
                               self.image_size, len(train) * max(self.views, 1)
                               + (len(val) if val is not None else 0), mix=a["mix"])
        # Each view draws one augmentation per image, from its own seeded generator.
        self.view_rows = [sample_augment(len(train), a["augment"],
                                         np.random.RandomState([a["seed"] % 2 ** 32, v]))
                          for v in range(self.views)]
        self.train_features: List[Features] = []
        self.val_features = None
        prefix = self._feature_prefix(use, why)
        begin = time.perf_counter()
        source = a["prefix_features"]
        if use and self.start_epoch < a["epochs"] and source is not None:
            if self.views or self.cluster or a["feature_dtype"] != "float32":
                raise ValueError("prefix_features go with plain cached features: not with "
                                 "feature_views, a distributed job or feature_dtype='int8'")
            train_features, self.val_features = features_from_prefix(
                source, self.parts, self.net, train, val, contexts=self.contexts,
                batch_size=a["batch_size"])
            self.train_features = [train_features]
        elif use and self.start_epoch < a["epochs"]:
            weights = weights_digest(self.parts.frozen)
            if prefix is not self.parts.frozen:  # int8: other features, another key
                weights += f":int8:naive:{CALIBRATION_IMAGES}:{a['seed']}"
            make = lambda data, rows=None: frozen_features(  # noqa: E731
                self.parts, data, self.net, self.image_size, self.transform, self.contexts,
                a["batch_size"], a["cache_dir"], weights, rows, prefix=prefix,
                cluster=self.cluster)
            self.train_features = [make(train, r) for r in self.view_rows] or [make(train)]
            self.val_features = make(val) if val is not None else None
        # Not compared on resume: caching changes how, not what, is computed; timings vary.
        settings = self.history.settings
        settings["timings"] = {"features_s": time.perf_counter() - begin,
                               "steps_s": 0.0, "validation_s": 0.0}
        settings["cache_features"] = use
        settings["feature_cache"] = {
            "reason": why, "cache_dir": a["cache_dir"],
            "train": self.train_features[0].info() if self.train_features else None,
            "val": self.val_features.info() if self.val_features is not None else None}
        if self.views and self.train_features:
            settings["feature_cache"]["train_views"] = [f.info() for f in self.train_features]
        if source is not None:
            settings["feature_cache"]["from_prefix"] = (
                {"steps": source[0].steps, "key": source[0].key} if use
                else f"not used: the cache is off ({why})")
        self.val_share = (val_share(self.cluster, val, self.val_features)
                          if self.cluster and val is not None else None)

    def _feature_prefix(self, use: bool, why: str):
        """The block that computes the cached features: the frozen prefix, or its int8 copy
        calibrated on training images (``feature_dtype="int8"``)."""
        a = self.a
        if a["feature_dtype"] == "float32":
            return self.parts.frozen
        if not use:
            raise ValueError(f"feature_dtype={a['feature_dtype']!r} quantizes the cached "
                             f"features, but the feature cache is off: {why}")
        problem = int8_unavailable(self.contexts)
        if problem:
            raise ValueError(f"feature_dtype='int8': {problem}")
        if self.start_epoch >= a["epochs"]:  # resumed after its last epoch: nothing to compute
            return self.parts.frozen
        idx = calibration_indices(len(self.train), a["seed"])
        x = self.transform(to_device(self.train.images[idx], self.contexts[0], "uint8"), None)
        return int8_block(self.parts.frozen, x, batch_size=a["batch_size"],
                          ctx=self.contexts[0])

    def _inputs(self, epoch: int, idx: np.ndarray, rng):
        """[(prefix output, labels)] per device for this worker's share of the training
        images at ``idx`` (all of them in one process)."""
        a = self.a
        share = self.cluster.share(np.arange(len(idx))) if self.cluster else slice(None)
        if self.train_features:
            return cached_inputs(self.train_features[epoch % len(self.train_features)],
                                  idx[share], self.contexts)
        if self.views:
            images = self.train.images[idx[share]]
            affine = self.view_rows[epoch % self.views][idx[share]]
        else:
            images, affine = augmented_batch(self.train.images[idx], a["augment"], rng, share)
        return image_inputs(self.parts, self.transform, images, self.train.labels[idx[share]],
                             affine, self.contexts, mix=a["mix"], rng=rng)

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        """One epoch of steps; the logged training numbers."""
        a, trainer = self.a, self.trainer
        begin = time.perf_counter()
        epoch_seed = a["seed"] * 100003 + epoch
        rng = np.random.RandomState(epoch_seed % (2 ** 32))
        # MXNet's generator (dropout) too, so that a resumed run equals an uninterrupted one
        mx.random.seed(epoch_seed % (2 ** 31), ctx="all")
        meter = LossMeter()
        bar = progress_bar(a["progress"], len(self.train), f"epoch {epoch + 1}/{a['epochs']}")
        pending = []
        # The order iterate_batches gives (tests/test_features.py checks it).
        for step, idx in enumerate(batch_indices(len(self.train), self.global_batch,
                                                 shuffle=True, seed=a["seed"], epoch=epoch)):
            if self.drop_last and step == self.per_epoch - 1:
                break  # too few images for BatchNorm (drops_last_batch); drawn anew each epoch
            iteration = epoch * self.per_epoch + step
            trainer.set_learning_rate(a["schedule"].lr(
                a["lr"], iteration=iteration, per_epoch=self.per_epoch, epochs=a["epochs"]))
            for callback in self.callbacks:
                callback.on_step_begin(trainer, iteration)
            losses = train_step(self.parts, trainer, self._inputs(epoch, idx, rng),
                                 a["label_smoothing"], self.net.classes, meter,
                                 scale_loss=bool(self.amp_dtype), step_size=len(idx))
            for callback in self.callbacks:
                callback.on_step_end(trainer, iteration, losses)
            # Wait for the previous batch only: the host prepares the next batch while the
            # device computes, and at most two batches are queued. Its losses are read then
            # (a few floats), so a diverging run stops one step after its loss is non-finite.
            self._check_finite(pending, epoch, step)
            pending = losses
            self.pace.step_done(len(idx))
            if bar is not None:
                bar.update(len(idx))
                if (step + 1) % _REPORT_EVERY == 0 or step + 1 == self.per_epoch:
                    totals = meter.read()
                    bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}",
                                    acc=f"{totals[1] / totals[2]:.3f}", refresh=False)
        self._check_finite(pending, epoch, self.per_epoch)
        totals = meter.read()
        if self.cluster:  # every worker logs the job's numbers
            totals = self.cluster.allreduce("train", totals)
        seconds = time.perf_counter() - begin
        self.pace.epoch_done(seconds, totals[2])
        self.history.settings["timings"]["steps_s"] += seconds
        if bar is not None:
            bar.close()
        return {"epoch": epoch + 1, "train_loss": totals[0] / totals[2],
                "train_acc": totals[1] / totals[2], "lr": trainer.learning_rate,
                "seconds": seconds, "images_per_s": totals[2] / seconds}

    def end_epoch(self, epoch: int, logs: Dict[str, float]) -> None:
        """Check, validate, record and checkpoint the epoch; run the epoch hooks."""
        # A loss can explode without reaching inf (1e17 with BatchNorm at lr 1e4): far above
        # a uniform guess's ln(classes) it means the weights are wrecked all the same.
        if logs["train_loss"] > EXPLODED_LOSS_FACTOR * math.log(self.net.classes):
            raise self._diverged(f"the mean training loss of epoch {epoch + 1} is "
                                 f"{logs['train_loss']:.3g}, over {EXPLODED_LOSS_FACTOR} times "
                                 f"that of a uniform guess")
        if self.cluster:
            self.cluster.average_running_stats(self.net)
        if self.val is not None:
            begin = time.perf_counter()
            result = self._validate()
            self.history.settings["timings"]["validation_s"] += time.perf_counter() - begin
            logs.update(val_loss=result["loss"], val_acc=result["accuracy"])
            if not math.isfinite(result["loss"]):
                raise self._diverged(f"the validation loss of epoch {epoch + 1} is "
                                     f"{result['loss']}")
        self.history.epochs.append({k: float(v) for k, v in logs.items()})
        if not self.a["progress"] and (self.cluster is None or self.cluster.is_chief):
            LOG.info(epoch_line(logs, self.a["epochs"]))
        if self.a["checkpoint"] and (self.cluster is None or self.cluster.is_chief):
            save_checkpoint(self.a["checkpoint"], self.net, self.trainer, self.history)
        for callback in self.callbacks:
            callback.on_epoch_end(epoch + 1, dict(logs))

    def _validate(self) -> Dict[str, float]:
        """Scores on ``val``; under a distributed kvstore each worker scores its share and
        the sums are combined, so every worker logs the whole set's."""
        if not self.cluster:
            return evaluate_parts(self.parts, self.val, self.val_features, self.transform,
                                   self.contexts, self.a["batch_size"])
        data, features = self.val_share
        part = (evaluate_parts(self.parts, data, features, self.transform, self.contexts,
                                self.a["batch_size"]) if len(data) else None)
        return self.cluster.combined_scores(part)

    def _diverged(self, what: str) -> TrainingDiverged:
        checkpoint, done, lr = self.a["checkpoint"], len(self.history.epochs), self.a["lr"]
        kept = (f"; the checkpoint of epoch {done} ({checkpoint}.json) is the last good state"
                if checkpoint and done else "")
        return TrainingDiverged(
            f"training diverged: {what}. The learning rate is the likely cause (lr={lr:g}, "
            f"{self.trainer.learning_rate:.3g} at that step): try a 10x smaller lr (e.g. "
            f"{lr / 10:g}) or a warm-up{kept}")

    def _check_finite(self, losses, epoch: int, step: int) -> None:
        """Raise `TrainingDiverged` when a batch's per-image losses hold a NaN or infinity."""
        for loss in losses:
            values = loss.asnumpy()  # waits for the batch; a few floats
            if not np.isfinite(values).all():
                bad = values[~np.isfinite(values)][0]
                raise self._diverged(f"the training loss became {bad} in epoch {epoch + 1} "
                                     f"(step {step} of the epoch)")
