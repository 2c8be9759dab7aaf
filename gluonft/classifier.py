"""The practitioner's verbs: train a classifier on a folder of photos, classify new photos,
ensemble models, fine-tune with gradual unfreezing, and find a learning rate.

    >>> clf = gluonft.train_classifier("photos/", fast_train=True,
    ...                                weights="mobilenet0.75-imagenet.params")  # doctest: +SKIP
    >>> gluonft.classify(clf, "new_photos/")  # doctest: +SKIP
    {'IMG_0001.jpg': 3, 'IMG_0002.jpg': 0}

Each verb is a few lines over the core (`load_backbone`, `apply_regime`, `fit`,
`predict_proba`); none has a training loop of its own except `lr_find`, whose learning rate
changes every step (a sweep, not a schedule `fit` knows).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np

from .backbones import MAX_IMAGE_SIZE
from .devices import contexts_of
from .fileio import FolderLock, check_writable_folder
from .model_io import Classifier, count_params, save_classifier

__all__ = ["train_classifier", "classify", "predict_files", "predict_images", "ensemble",
           "Ensemble", "fine_tune", "lr_find", "CANDIDATES", "Candidate", "model_params",
           "pick_backbone", "FAST_IMAGE_SIZE", "DEFAULT_IMAGE_SIZE"]

PathLike = Union[str, "os.PathLike[str]"]

FAST_IMAGE_SIZE = 160
DEFAULT_IMAGE_SIZE = 160


# --- backbones under a parameter budget -------------------------------------------------------

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

    def params(self, classes: int) -> int:
        """Total weights with a ``Dense(classes)`` head."""
        return self.backbone_params + self.feature_dim * classes + classes


# Counted once by building each net (the test checks a few against a real build): building
# every backbone just to compare sizes would cost seconds each. Ranked best first by ImageNet
# top-1 as published in GluonCV's model zoo.
CANDIDATES: Tuple[Candidate, ...] = (
    Candidate("resnet50_v1d", 23527264, 2048, 79.15),
    Candidate("inceptionv3", 21785568, 2048, 78.77),
    Candidate("resnet50_v1", 23526912, 2048, 77.36),
    Candidate("mobilenetv3_large", 4200752, 1280, 75.32),
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


def model_params(name: str, *, classes: int) -> int:
    """Weights of backbone ``name`` with a ``Dense(classes)`` head (table, else a real build)."""
    if name in _BY_NAME:
        return _BY_NAME[name].params(classes)
    from .backbones import load_backbone
    return count_params(load_backbone(name, classes=classes, weights=None, ctx=mx.cpu()))


def pick_backbone(*, model: str = "mobilenet0.75", max_params: Optional[int] = None,
                  classes: int) -> str:
    """The backbone to train: ``model`` checked against ``max_params``, or the best candidate.

    Args:
        model: a name from `gluonft.list_backbones()`, or ``"auto"``: the candidate with the
            best ImageNet top-1 (`CANDIDATES`) whose parameter count is within ``max_params``.
        max_params: parameter budget (with the new head), or None for no limit.
        classes: number of classes of the head.

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
    fitting = [c.name for c in CANDIDATES
               if max_params is None or c.params(classes) <= max_params]
    if model == "auto":
        if not fitting:
            smallest = min(CANDIDATES, key=lambda c: c.params(classes))
            raise ValueError(f"no backbone fits max_params={max_params:,}: the smallest, "
                             f"{smallest.name}, has {smallest.params(classes):,} parameters "
                             f"with {classes} classes")
        return fitting[0]
    from .backbones import family_of
    family_of(model)  # an unknown name fails here, with the list of valid names
    if max_params is not None:
        count = model_params(model, classes=classes)
        if count > max_params:
            raise ValueError(f"{model} has {count:,} parameters with {classes} classes, over "
                             f"max_params={max_params:,}; backbones within it, best first: "
                             f"{', '.join(fitting) or 'none'} (or pass model='auto')")
    return model


# --- training ---------------------------------------------------------------------------------

def _check_positive_int(name, value, *, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return int(value)


def train_classifier(train_dir: PathLike, *, model: str = "mobilenet0.75",
                     weights="default", fast_train: bool = False,
                     max_params: Optional[int] = None, image_size: Optional[int] = None,
                     epochs: Optional[int] = None, ctx=None, seed: int = 0,
                     out: Optional[PathLike] = None, overwrite: bool = False,
                     stages: Optional[Sequence[Tuple[str, int]]] = None,
                     progress: bool = False) -> Classifier:
    """Train a classifier on a folder of photos (one sub-folder per class).

    ``fast_train=True``: the backbone stays frozen and only the new head trains, on features
    computed once (no augmentation), at ``FAST_IMAGE_SIZE`` px for 10 epochs: 30 s on
    clothing-small (3781 photos) on a 2-core CPU, loading included. Otherwise `fine_tune`:
    the head on cached features (4 epochs), then the last 2 and the last 4 backbone blocks with
    augmentation (``Augment.preset("standard")``) and a 10x lower learning rate for the backbone
    than for the head, at ``DEFAULT_IMAGE_SIZE`` px.

    Args:
        train_dir: a folder in the layout of `gluonft.datasets.image_folder`: ``train/``
            (``validation/``, ``test/``) of class folders, or class folders only (then 20 % of
            each class is held out for validation).
        model: a backbone name, or ``"auto"``: the best candidate within ``max_params``
            (`pick_backbone`).
        weights: starting weights, as `load_backbone` takes them (``"default"``, a file, None).
        fast_train: head only on cached features (see above).
        max_params: parameter budget, or None.
        image_size: input side (default `FAST_IMAGE_SIZE` / `DEFAULT_IMAGE_SIZE`).
        epochs: epochs (fast: total; else per stage); default 10 (fast) / (4, 3, 3).
        stages: `fine_tune` stages ``((regime, epochs), ...)`` replacing the default recipe,
            e.g. ``(("head", 4), ("last_k:4", 4), ("full", 6))``; not with ``fast_train``.
        ctx: a context or list of contexts.
        seed: seeds the head's initialisation, shuffling and augmentation.
        out: a model folder to save to (`save_classifier`); None: not saved.
        overwrite: replace an existing different model at ``out``.
        progress: show progress bars.

    Returns:
        a `Classifier`; ``clf.params`` is its parameter count, ``clf.meta`` holds the history,
        the wall time and, when the folder has a test split, ``test_accuracy``.

    Example:
        >>> clf = train_classifier("../shared/data/clothing-small", fast_train=True,
        ...     weights="../shared/weights/mobilenet0.75-imagenet.params")  # doctest: +SKIP
        >>> clf.params, clf.meta["test_accuracy"]  # doctest: +SKIP
        (1824250, 0.79)
    """
    from .backbones import check_image_size, family_of, load_backbone
    from .data.folder import image_folder
    from .regimes import apply_regime
    from .train import evaluate, fit
    from .transforms import Augment

    begin = time.perf_counter()
    if not isinstance(fast_train, bool):
        raise ValueError(f"fast_train must be True or False, got {fast_train!r}")
    if stages is not None:
        if fast_train:
            raise ValueError("stages are for fine-tuning; fast_train=True trains the head only")
        if epochs is not None:
            raise ValueError("pass the epochs inside stages, not epochs=, when giving stages")
        stages = tuple(_stage_regime(s) for s in stages) if stages else ()
        if not stages:
            raise ValueError("stages must list at least one (regime, epochs) pair")
        from .regimes import parse_regime
        for regime, _ in stages:
            parse_regime(regime)  # a typo fails now, not after the first stages trained
    epochs = _check_positive_int("epochs", epochs)
    lock = None
    if out is not None:
        _check_out(Path(out), overwrite)
        # Two trainings into one model folder would each replace the other's result.
        out_path = Path(out).expanduser()
        lock = FolderLock(out_path, lock_file=str(out_path.parent / f".{out_path.name}.lock"))
        lock.acquire()
    try:
        if model != "auto":
            family_of(model)  # fail on a bad name before decoding thousands of photos
        size = image_size if image_size is not None else (
            FAST_IMAGE_SIZE if fast_train else DEFAULT_IMAGE_SIZE)
        if model != "auto":
            size = check_image_size(model, size)
        elif isinstance(size, bool) or not isinstance(size, int) \
                or not 8 <= size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be an int number of pixels in [8, "
                             f"{MAX_IMAGE_SIZE}], got {size!r}")
        data = image_folder(train_dir, image_size=size)
        classes = data.classes
        name = pick_backbone(model=model, max_params=max_params, classes=len(classes))
        size = check_image_size(name, size)
        net = load_backbone(name, classes=len(classes), weights=weights, ctx=ctx, seed=seed)
        common = dict(batch_size=64, image_size=size, ctx=ctx, seed=seed, progress=progress)
        if fast_train:
            apply_regime(net, "head")
            # lr 0.01, not higher: on clothing-small 0.1 reached the same test accuracy (0.825 vs
            # 0.823) but a test loss of 2.6 against 0.58, its wrong answers ~95 % "sure".
            history = fit(net, data.train, data.validation, epochs=epochs or 10, lr=0.01,
                          augment=Augment.none(), cache_features=True, **common)
            recipe = "head only on cached features"
        else:
            per_stage = epochs or None
            stages = stages or (("head", per_stage or 4), ("last_k:2", per_stage or 3),
                                ("last_k:4", per_stage or 3))
            history = fine_tune(net, data.train, data.validation, stages=stages, lr=0.05,
                                backbone_lr_mult=0.1, augment=Augment.preset("standard"),
                                **common)
            recipe = "fine_tune " + ", ".join(f"{r} x{e}" for r, e in stages)
        meta = {"stored_size": data.stored_size, "fit": data.fit, "recipe": recipe,
                "train_dir": str(train_dir), "train_images": len(data.train),
                "history": history.to_dict(), "skipped_files": list(data.skipped)}
        if data.validation is not None:
            meta["val_accuracy"] = history["val_acc"][-1]
        if data.test is not None:
            meta["test_accuracy"] = evaluate(net, data.test, ctx=ctx, image_size=size)["accuracy"]
        meta["train_seconds"] = round(time.perf_counter() - begin, 2)
        if out is not None:
            save_classifier(net, out, classes=classes, image_size=size, overwrite=overwrite,
                            extra=meta)
        from .model_io import _metadata
        full = _metadata(net, classes, size, meta)
        return Classifier(net=net, classes=tuple(classes), image_size=size, mean=net.family.mean,
                          std=net.family.std, meta=full)
    finally:
        if lock is not None:
            lock.release()


def _check_out(out: Path, overwrite: bool) -> None:
    """Fail before training (minutes) rather than after, when ``out`` cannot be written."""
    from .model_io import MODEL_JSON
    check_writable_folder(out, what="model folder")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file, not a model folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MODEL_JSON).is_file():
            raise FileExistsError(f"{out} exists and is not a gluonft model folder; refusing "
                                  f"to replace it, choose another path")
        if not overwrite:
            raise FileExistsError(f"{out} already holds a model; pass overwrite=True "
                                  f"(--overwrite) to replace it, or choose another folder")


# --- fine-tuning and the learning-rate finder -------------------------------------------------

def _stage_regime(stage) -> Tuple[str, int]:
    if not (isinstance(stage, (tuple, list)) and len(stage) == 2):
        raise ValueError(f"each stage must be (regime, epochs), e.g. ('last_k:2', 3), "
                         f"got {stage!r}")
    regime, epochs = stage
    return regime, _check_positive_int("stage epochs", epochs, allow_none=False)


def fine_tune(net, train, val=None, *,
              stages: Sequence[Tuple[str, int]] = (("head", 2), ("last_k:1", 2),
                                                   ("last_k:2", 2)),
              backbone_lr_mult: float = 0.1, lr: float = 0.01, batch_size: int = 64,
              augment=None, head_augment=None, schedule=None, image_size: Optional[int] = None,
              ctx=None, seed: int = 0, callbacks=(), progress: bool = False, **fit_kwargs):
    """Gradual unfreezing with a lower learning rate for the backbone (discriminative LR).

    Each stage applies its regime (`apply_regime`) and runs a fresh `fit` (hence a fresh
    Trainer over exactly the parameters that now train) with its own schedule. Trainable
    backbone parameters get ``param.lr_mult = backbone_lr_mult``; the head keeps 1. The
    multipliers the net had are restored at the end.

    Args:
        net: a `TransferNet` (pretrained backbone, new head).
        train, val: `ImageSet`s.
        stages: ``(regime, epochs)`` pairs, e.g. ``(("head", 2), ("last_k:2", 3))``.
        backbone_lr_mult: learning-rate multiplier of the backbone's trainable parameters, > 0.
        lr: base (head) learning rate of every stage.
        batch_size: images per step.
        augment: training augmentation of stages that train backbone blocks (default
            ``Augment()``).
        head_augment: augmentation of head-only stages; default ``Augment.none()`` so that
            the frozen backbone's features are computed once (cached) and the stage is cheap.
        schedule: a `Schedule` per stage (default cosine).
        image_size, ctx, seed, callbacks, progress: passed to each `fit`.
        **fit_kwargs: more `fit` arguments (``optimizer``, ``wd``, ``label_smoothing`` ...).

    Returns:
        a `History`: every stage's epochs in order (``epoch`` counts over the whole run,
        ``stage`` is the stage index, ``regime`` the stage's regime), ``settings["stages"]`` the
        settings of each stage's fit; ``stopped_early`` when a callback stopped a stage (the
        later stages are then skipped).

    Example:
        >>> history = fine_tune(net, data.train, data.validation,
        ...                     stages=(("head", 2), ("last_k:2", 3)), lr=0.05)  # doctest: +SKIP
        >>> history["regime"]  # doctest: +SKIP
        ['head', 'head', 'last_k:2', 'last_k:2', 'last_k:2']
    """
    from .regimes import apply_regime
    from .schedules import Schedule
    from .train import History, fit
    from .transforms import Augment

    if isinstance(stages, (str, bytes)) or not stages:
        raise ValueError(f"stages must be a non-empty sequence of (regime, epochs), "
                         f"got {stages!r}")
    plan = [_stage_regime(s) for s in stages]
    if isinstance(backbone_lr_mult, bool) or not isinstance(backbone_lr_mult, (int, float)) \
            or not backbone_lr_mult > 0:
        raise ValueError(f"backbone_lr_mult must be a number > 0, got {backbone_lr_mult!r}")
    augment = Augment() if augment is None else augment
    head_augment = Augment.none() if head_augment is None else head_augment
    schedule = Schedule() if schedule is None else schedule
    head_params = set(net.output.collect_params().values())
    backbone = [p for p in net.collect_params().values() if p not in head_params]
    saved_mults = {p: p.lr_mult for p in net.collect_params().values()}
    history = History(settings={"stages": [], "backbone_lr_mult": backbone_lr_mult})
    try:
        for index, (regime, epochs) in enumerate(plan):
            applied = apply_regime(net, regime)
            for p in backbone:
                p.lr_mult = backbone_lr_mult
            head_only = not applied.trainable_blocks
            part = fit(net, train, val, epochs=epochs, batch_size=batch_size, lr=lr,
                       augment=head_augment if head_only else augment, schedule=schedule,
                       image_size=image_size, ctx=ctx, seed=seed + index, callbacks=callbacks,
                       progress=progress, **fit_kwargs)
            offset = len(history.epochs)
            for row in part.epochs:
                history.epochs.append(dict(row, epoch=offset + row["epoch"], stage=index,
                                           regime=applied.regime))
            part.settings["regime"] = applied.regime
            part.settings["plan"] = applied.describe()
            history.settings["stages"].append(part.settings)
            if part.stopped_early:
                history.stopped_early = True
                break
    finally:
        for p, mult in saved_mults.items():
            p.lr_mult = mult
    return history


def lr_find(net, train, *, start: float = 1e-5, end: float = 1.0, steps: int = 50,
            batch_size: int = 64, image_size: Optional[int] = None, optimizer: str = "sgd",
            momentum: float = 0.9, wd: float = 1e-4, ctx=None, seed: int = 0,
            smoothing: float = 0.9, diverge: float = 4.0) -> Dict[str, object]:
    """Learning-rate range test: train with an exponentially growing learning rate.

    What trains is what `apply_regime` left trainable; the frozen prefix runs outside
    ``autograd.record()`` as in `fit`. Every parameter and running statistic is restored
    afterwards, so the sweep leaves ``net`` exactly as it was. The sweep stops early when the
    smoothed loss exceeds ``diverge`` times its minimum (or becomes NaN).

    Args:
        net: a `TransferNet`, after `apply_regime`.
        train: an `ImageSet` (no augmentation is applied).
        start, end: first and last learning rate, 0 < start < end.
        steps: number of steps (learning rates), >= 5.
        batch_size, image_size, optimizer, momentum, wd, ctx: as in `fit`.
        seed: seeds the batch order.
        smoothing: exponential smoothing of the loss curve, in [0, 1).
        diverge: stop factor.

    Returns:
        ``{"lrs": [...], "losses": [...] (smoothed), "raw_losses": [...],
        "suggestion": lr}``; the suggestion is the learning rate where the smoothed loss
        falls fastest (steepest slope against log lr) before its minimum.

    Example:
        >>> apply_regime(net, "head")  # doctest: +SKIP
        >>> found = lr_find(net, data.train, image_size=96)  # doctest: +SKIP
        >>> found["suggestion"]  # doctest: +SKIP
        0.12
    """
    from mxnet import autograd, gluon
    from mxnet.gluon import nn

    from .backbones import TransferNet, check_image_size
    from .data.imageset import ImageSet, iterate_batches
    from .devices import as_contexts
    from .regimes import frozen_prefix
    from .train import OPTIMIZERS
    from .transforms import BatchTransform, to_device

    if not isinstance(net, TransferNet):
        raise ValueError(f"lr_find needs a net from gluonft.load_backbone, got "
                         f"{type(net).__name__}")
    if not isinstance(train, ImageSet) or len(train) == 0:
        raise ValueError(f"train must be a non-empty gluonft ImageSet, got {train!r}")
    if not (isinstance(start, (int, float)) and isinstance(end, (int, float))
            and 0 < start < end):
        raise ValueError(f"need 0 < start < end, got start={start!r}, end={end!r}")
    steps = _check_positive_int("steps", steps, allow_none=False)
    if steps < 5:
        raise ValueError(f"steps must be >= 5 to draw a curve, got {steps}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: expected one of "
                         f"{', '.join(OPTIMIZERS)}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    contexts = as_contexts(ctx)
    ctx0 = contexts[0]
    image_size = check_image_size(net.backbone, net.family.input_size if image_size is None
                                  else image_size,
                                  family=net.family)
    trainable = [p for p in net.collect_params().values() if p.grad_req != "null"]
    if not trainable:
        raise ValueError("nothing to train: every parameter is frozen; call apply_regime first")
    net.collect_params().reset_ctx([ctx0])
    # Copies of everything, running statistics included: trained steps change them too.
    saved = {name: p.data(ctx0).copy() for name, p in net.collect_params().items()}
    cut = frozen_prefix(net)
    all_steps = list(net.features._children.values())
    frozen, rest = nn.HybridSequential(prefix=""), nn.HybridSequential(prefix="")
    for step in all_steps[:cut]:
        frozen.add(step)
    for step in all_steps[cut:]:
        rest.add(step)
    rest.add(net.output)
    params = {"learning_rate": start, "wd": wd}
    if optimizer in ("sgd", "nag"):
        params["momentum"] = momentum
    trainer = gluon.Trainer(trainable, optimizer, params)
    transform = BatchTransform(image_size, net.family.mean, net.family.std)
    ratio = (end / start) ** (1 / (steps - 1))
    lrs, raw, smooth = [], [], []
    average, best = 0.0, math.inf
    epoch = 0
    batches = iterate_batches(train, batch_size, shuffle=True, seed=seed, epoch=epoch)
    try:
        for i in range(steps):
            try:
                images, labels = next(batches)
            except StopIteration:  # a small set: go round again in a new order
                epoch += 1
                batches = iterate_batches(train, batch_size, shuffle=True, seed=seed,
                                          epoch=epoch)
                images, labels = next(batches)
            lr = start * ratio ** i
            trainer.set_learning_rate(lr)
            x = transform(to_device(images, ctx0, "uint8"), None)
            y = to_device(labels, ctx0)
            if cut:
                x = frozen(x)
            with autograd.record():
                out = rest(x)
                loss = -mx.nd.pick(mx.nd.log_softmax(out, axis=-1), y, axis=-1)
            loss.backward()
            trainer.step(len(labels))
            value = float(loss.mean().asscalar())
            average = smoothing * average + (1 - smoothing) * value
            smoothed = average / (1 - smoothing ** (i + 1))  # bias correction, as Adam's
            lrs.append(lr)
            raw.append(value)
            smooth.append(smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                break
            best = min(best, smoothed)
    finally:
        for name, p in net.collect_params().items():
            p.set_data(saved[name])
    net.collect_params().reset_ctx(contexts)
    return {"lrs": lrs, "losses": smooth, "raw_losses": raw,
            "suggestion": _suggest(lrs, smooth)}


def _suggest(lrs: List[float], losses: List[float]) -> float:
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    if len(finite) < 3:
        return finite[0][0] if finite else lrs[0]
    lr_values = np.array([f[0] for f in finite])
    values = np.array([f[1] for f in finite])
    lowest = int(values.argmin())
    if lowest < 2:
        return float(lr_values[lowest] / 10)
    slopes = np.gradient(values[:lowest + 1], np.log(lr_values[:lowest + 1]))
    return float(lr_values[int(slopes.argmin())])


# --- prediction -------------------------------------------------------------------------------

@dataclass(eq=False)
class Ensemble:
    """Several classifiers of the same classes whose probabilities are averaged.

    Each member prepares images its own way (size, normalisation), so members may differ in
    backbone and input size.
    """
    members: Tuple[Classifier, ...]
    classes: Tuple[str, ...]

    def __repr__(self) -> str:
        return f"Ensemble({len(self.members)} members, {len(self.classes)} classes)"


def ensemble(classifiers: Sequence[Classifier]) -> Ensemble:
    """Average the probabilities of several classifiers trained on the same classes.

    Args:
        classifiers: `Classifier`s (or `Ensemble`s, flattened) with identical class lists in
            the same order.

    Returns:
        an `Ensemble`, usable wherever `classify` and `predict_files` take a classifier.

    Raises:
        ValueError: fewer than one member, or class lists that differ (the message shows
            both).

    Example:
        >>> both = ensemble([load_classifier("m1"), load_classifier("m2")])  # doctest: +SKIP
        >>> classify(both, "new_photos/")  # doctest: +SKIP
    """
    members: List[Classifier] = []
    for c in classifiers:
        if isinstance(c, Ensemble):
            members += c.members
        elif isinstance(c, Classifier):
            members.append(c)
        else:
            raise ValueError(f"ensemble members must be gluonft Classifiers, got "
                             f"{type(c).__name__}")
    if not members:
        raise ValueError("ensemble needs at least one classifier")
    classes = members[0].classes
    for i, m in enumerate(members[1:], 1):
        if tuple(m.classes) != tuple(classes):
            raise ValueError(f"ensemble members must have the same classes in the same order: "
                             f"member 0 has {list(classes)}, member {i} has {list(m.classes)}")
    return Ensemble(tuple(members), tuple(classes))


def _image_paths(images) -> List[Tuple[str, Path]]:
    """[(name to report, path)] for a folder, a file, or a list of both."""
    from .data.folder import list_images
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if not items:
        raise ValueError("no images given: expected a folder or image files")
    out: List[Tuple[str, Path]] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = list_images(path)
            out += [(str(p.relative_to(path)), p) for p in found]
        elif path.is_file():
            out.append((str(item), path))
        else:
            raise FileNotFoundError(f"{item} does not exist (expected an image file or a "
                                    f"folder of images)")
    if not out:
        raise ValueError(f"no image files in {', '.join(map(str, items))}")
    return out


def _members(model) -> Tuple[Classifier, ...]:
    if isinstance(model, Ensemble):
        return model.members
    if isinstance(model, Classifier):
        return (model,)
    raise ValueError(f"expected a gluonft Classifier or Ensemble, got {type(model).__name__}")


def _member_proba(clf: Classifier, images: np.ndarray, tta: bool) -> np.ndarray:
    from .data.imageset import ImageSet
    from .train import predict_proba
    from .tta import predict_proba_tta
    ctx = contexts_of(clf.net)
    data = ImageSet(images, np.zeros(len(images), np.int32), clf.classes, "prediction")
    if tta:
        return predict_proba_tta(clf.net, data, views="flip", ctx=ctx,
                                 image_size=clf.image_size)
    return predict_proba(clf.net, data, ctx=ctx, image_size=clf.image_size)


def _proba_for_paths(model, paths: Sequence[Path], tta: bool):
    """(probabilities (n_kept, classes), kept indices, skipped paths)."""
    from .data.folder import load_images
    total, kept_all, skipped_all = None, None, []
    decoded = {}
    for clf in _members(model):
        key = (clf.stored_size, clf.fit)
        if key not in decoded:
            decoded[key] = load_images(paths, size=clf.stored_size, fit=clf.fit)
        images, kept, skipped = decoded[key]
        kept_all, skipped_all = kept, skipped
        if not len(images):
            break
        proba = _member_proba(clf, images, tta).astype(np.float64)
        total = proba if total is None else total + proba
    if total is None:
        return np.zeros((0, len(_members(model)[0].classes)), np.float32), [], skipped_all
    return (total / len(_members(model))).astype(np.float32), kept_all, skipped_all


def _rows(model, names, proba) -> List[Dict[str, object]]:
    classes = _members(model)[0].classes
    rows = []
    for name, p in zip(names, proba):
        index = int(p.argmax())
        rows.append({"file": name, "class": classes[index], "index": index,
                     "probability": float(p[index]),
                     "probabilities": {c: float(v) for c, v in zip(classes, p)}})
    return rows


def predict_files(model, images, *, tta: bool = False) -> List[Dict[str, object]]:
    """Predict every image file of a folder (recursively) or of a list of files/folders.

    Files that do not decode are skipped with one `UnreadableImagesWarning` listing them.

    Args:
        model: a `Classifier` or an `Ensemble`.
        images: a folder, an image file, or a list of them.
        tta: average over the image and its mirror (`gluonft.tta`).

    Returns:
        one dict per readable file, in order: ``{"file", "class", "index", "probability",
        "probabilities": {class name: p}}``; ``file`` is the path relative to the folder given,
        or the file path as given.

    Example:
        >>> predict_files(clf, "new_photos")[0]["class"]  # doctest: +SKIP
        'dress'
    """
    from .data.folder import UnreadableImagesWarning
    items = _image_paths(images)
    proba, kept, skipped = _proba_for_paths(model, [p for _, p in items], tta)
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image file(s) skipped: {', '.join(skipped)}",
                      UnreadableImagesWarning, stacklevel=2)
    return _rows(model, [items[i][0] for i in kept], proba)


def classify(model, images, *, tta: bool = False) -> Dict[str, int]:
    """``{file name: class index}`` for a folder of images (or image files).

    Args:
        model: a `Classifier` or an `Ensemble`.
        images: a folder (searched recursively; names are relative to it), an image file, or
            a list of them.
        tta: average over the image and its mirror.

    Returns:
        dict file name -> index into ``model.classes``; unreadable files are left out (with a
        warning).

    Example:
        >>> classify(clf, "../shared/data/dogcat")  # doctest: +SKIP
        {'cat/cat1.jpg': 0, ...}
    """
    return {row["file"]: row["index"] for row in predict_files(model, images, tta=tta)}


def evaluate_folder(clf: Classifier, data_dir: PathLike, *, split: str = "test",
                    tta: bool = False) -> Dict[str, object]:
    """Accuracy and loss of a trained classifier on a labelled folder of photos.

    The photos are stored as in training (the model's stored size and fit), so the figures
    equal those of training's own evaluation.

    Args:
        clf: a `Classifier`.
        data_dir: the layout `train_classifier` takes (class folders, or ``train/``,
            ``validation/``, ``test/`` of class folders).
        split: ``"test"``, ``"validation"``, ``"train"``, or ``"all"`` for plain class folders
            taken whole.
        tta: average over the image and its mirror.

    Returns:
        ``{"accuracy", "loss", "count", "split", "tta", "skipped"}``.

    Raises:
        ValueError: the folder's classes differ from the model's (both listed).

    Example:
        >>> evaluate_folder(load_classifier("model"), "../shared/data/clothing-small")
        {'accuracy': 0.8844, ...}  # doctest: +SKIP
    """
    from .data.folder import image_folder
    from .train import evaluate
    from .tta import evaluate_tta
    if not isinstance(clf, Classifier):
        raise ValueError(f"expected a gluonft Classifier, got {type(clf).__name__}")
    read = dict(image_size=clf.image_size, margin=clf.stored_size / clf.image_size, fit=clf.fit)
    if split == "all":
        data = image_folder(data_dir, val_fraction=0, split="train", **read)
    else:
        data = image_folder(data_dir, split=split, **read)
    if tuple(data.classes) != tuple(clf.classes):
        raise ValueError(f"{data_dir} has the classes {list(data.classes)} but the model was "
                         f"trained on {list(clf.classes)}")
    ctx = contexts_of(clf.net)
    score = (evaluate_tta(clf.net, data, views="flip", ctx=ctx, image_size=clf.image_size)
             if tta else evaluate(clf.net, data, ctx=ctx, image_size=clf.image_size))
    return {"accuracy": float(score["accuracy"]), "loss": float(score["loss"]),
            "count": int(score["count"]), "split": split, "tta": bool(tta),
            "skipped": list(data.skipped)}


def predict_images(model, images: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Probabilities (N, classes) for uint8 RGB images already made square at the model's
    stored size (what `gluonft.datasets.load_images` returns)."""
    total = None
    for clf in _members(model):
        p = _member_proba(clf, images, tta).astype(np.float64)
        total = p if total is None else total + p
    return (total / len(_members(model))).astype(np.float32)


def predict_bytes(model, data: bytes, *, tta: bool = False) -> Dict[str, object]:
    """Predict one encoded image (JPEG, PNG, ... bytes) exactly as a file would be.

    Raises:
        ValueError: the bytes are empty or not a decodable image.
    """
    from .data.folder import load_images
    if not data:
        raise ValueError("the image is empty (0 bytes)")
    # The decoder picks its flags by extension (EXIF orientation for JPEG, alpha and 16 bits
    # for the rest): name the temporary file after the content, not after the client's name.
    suffix = ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"
    with tempfile.TemporaryDirectory(prefix="gluonft-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        total = None
        for clf in _members(model):
            images, kept, _ = load_images([path], size=clf.stored_size, fit=clf.fit, workers=1)
            if not kept:
                raise ValueError("the upload is not an image this server can decode (expected "
                                 "JPEG, PNG, BMP, TIFF or WebP)")
            p = _member_proba(clf, images, tta).astype(np.float64)
            total = p if total is None else total + p
    proba = (total / len(_members(model)))[0]
    return _rows(model, ["upload"], proba[None])[0]
