"""Gradual unfreezing: `fine_tune` runs one `fit` per stage, with a lower learning rate for
the backbone (discriminative learning rates).

    >>> history = fine_tune(net, data.train, data.validation,
    ...                     stages=(("head", 4), ("last_k:4", 4)), lr=0.05)  # doctest: +SKIP

The stages that cache their frozen prefix's features (unaugmented, unmixed) share one pass
over the photos, cut at the shallowest of their prefixes (`deepen_features` runs each
stage's steps past the cut): the default recipe's head stage on clothing-small then takes
29 s where it took a 203 s pass of the whole backbone (docs/speed.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .backbones import check_image_size
from .batches import cache_plan
from .devices import as_contexts
from .distributed import DIST_KVSTORES
from .features import Features, extract_features
from .regimes import apply_regime, split_net
from .schedules import Schedule
from .train import History, fit
from .transforms import Augment

__all__ = ["fine_tune", "check_stage"]


def check_stage(stage) -> Tuple[str, int]:
    """One ``(regime, epochs)`` stage, checked: ``epochs`` a positive int."""
    if not (isinstance(stage, (tuple, list)) and len(stage) == 2):
        raise ValueError(f"each stage must be (regime, epochs), e.g. ('last_k:2', 3), "
                         f"got {stage!r}")
    regime, epochs = stage
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"stage epochs must be a positive int, got {epochs!r}")
    return regime, int(epochs)


def fine_tune(net, train, val=None, *,
              stages: Sequence[Tuple[str, int]] = (("head", 2), ("last_k:1", 2),
                                                   ("last_k:2", 2)),
              backbone_lr_mult: float = 0.1, lr: float = 0.01, batch_size: int = 64,
              augment=None, head_augment=None, mix=None, schedule=None,
              image_size: Optional[int] = None,
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
        mix: mixup/cutmix (`gluonft.mixing.Mix`) of the stages that train backbone blocks
            (head-only stages stay unmixed, on cached features).
        schedule: a `Schedule` per stage (default cosine).
        image_size, ctx, seed, callbacks, progress: passed to each `fit`.
        **fit_kwargs: more `fit` arguments (``optimizer``, ``wd``, ``label_smoothing``,
            ``kvstore`` for a distributed job: every stage's fit uses it ...). A
            ``checkpoint=PATH`` gives each stage its own (``PATH.stage0``, ``PATH.stage1``,
            ...): an interrupted run resumes in its stage, and a rerun passes the finished
            stages by loading their last epoch.

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
    if isinstance(stages, (str, bytes)) or not stages:
        raise ValueError(f"stages must be a non-empty sequence of (regime, epochs), "
                         f"got {stages!r}")
    plan = [check_stage(s) for s in stages]
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
        shared = _shared_prefix(net, train, val, plan, augment=augment,
                                head_augment=head_augment, mix=mix, image_size=image_size,
                                ctx=ctx, batch_size=batch_size, fit_kwargs=fit_kwargs)
        if shared is not None:
            history.settings["shared_features"] = shared.info()
        for index, (regime, epochs) in enumerate(plan):
            applied = apply_regime(net, regime)
            if shared is not None and applied.frozen_steps < shared.steps:
                shared = None  # steps under the cut train from here on: the features go stale
            for p in backbone:
                p.lr_mult = backbone_lr_mult
            head_only = not applied.trainable_blocks
            stage_kwargs = dict(fit_kwargs)
            if shared is not None:
                stage_kwargs["prefix_features"] = (shared.train, shared.val)
            if stage_kwargs.get("checkpoint"):  # one per stage: each stage has its settings
                stage_kwargs["checkpoint"] = f"{stage_kwargs['checkpoint']}.stage{index}"
            part = fit(net, train, val, epochs=epochs, batch_size=batch_size, lr=lr,
                       augment=head_augment if head_only else augment,
                       mix=None if head_only else mix, schedule=schedule,
                       image_size=image_size, ctx=ctx, seed=seed + index, callbacks=callbacks,
                       progress=progress, **stage_kwargs)
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


@dataclass
class _SharedPrefix:
    """The photos' features after the first ``steps`` backbone steps, computed once for the
    stages of a `fine_tune` that cache theirs."""
    steps: int
    train: Features
    val: Optional[Features]
    seconds: float

    def info(self) -> dict:
        return {"steps": self.steps, "seconds": self.seconds, "train": self.train.info(),
                "val": None if self.val is None else self.val.info()}


def _shared_prefix(net, train, val, plan, *, augment, head_augment, mix, image_size, ctx,
                   batch_size, fit_kwargs) -> Optional[_SharedPrefix]:
    """One pass over the photos for the leading stages that cache their frozen prefix's
    features (as `fit` decides: `cache_plan`), cut at the shallowest of their prefixes: each
    of those stages then runs only its steps past the cut (`deepen_features`) instead of its
    whole prefix over the photos (the default recipe's head stage on clothing-small: 29 s
    instead of 203).
    None when fewer than two stages would share it, or when a stage's features are not plain
    ones of the photos (views, int8, a distributed job), or on a checkpointed run (a rerun
    may pass stages already done, whose features it never needs)."""
    if any(fit_kwargs.get(k) for k in ("feature_views", "checkpoint")) \
            or fit_kwargs.get("feature_dtype", "float32") != "float32" \
            or fit_kwargs.get("kvstore") in DIST_KVSTORES:
        return None
    size = check_image_size(net.backbone, net.family.input_size if image_size is None
                            else image_size, family=net.family)
    images = len(train) + (len(val) if val is not None else 0)
    cuts = []
    for regime, _ in plan:
        if str(getattr(regime, "name", regime)).startswith("scratch"):
            break  # re-initialised: nothing before it to share
        # Applied here only to read its cut (the stage loop applies each stage again).
        applied = apply_regime(net, regime)
        head_only = not applied.trainable_blocks
        use, _ = cache_plan(fit_kwargs.get("cache_features"), split_net(net),
                            head_augment if head_only else augment, 0, size, images,
                            mix=None if head_only else mix)
        if not use:
            break
        cuts.append(applied.frozen_steps)
    if len(cuts) < 2:
        return None
    begin = time.perf_counter()
    net.collect_params().reset_ctx(as_contexts(ctx))  # where fit will put them
    extract = lambda data: extract_features(  # noqa: E731
        net, data, steps=min(cuts), image_size=size, ctx=ctx, batch_size=batch_size,
        cache_dir=fit_kwargs.get("cache_dir"), hybridize=fit_kwargs.get("hybridize", True))
    shared_train = extract(train)
    shared_val = extract(val) if val is not None else None
    return _SharedPrefix(min(cuts), shared_train, shared_val, time.perf_counter() - begin)
