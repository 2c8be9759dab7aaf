"""`lr_find`: the learning-rate range test, as one `fit` with a step hook that sweeps the
learning rate (`gluonft.callbacks.Callback`); the net is left exactly as it was."""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np

from .callbacks import Callback, StopTraining
from .datasets.imageset import ImageSet, check_int
from .schedules import Schedule
from .settings import check_optimizer
from .train import TrainingDiverged, fit
from .transforms import Augment

__all__ = ["lr_find"]


class _LrSweep(Callback):
    """Sets each step's learning rate along the sweep and records the loss it gave."""

    def __init__(self, start, ratio, steps, smoothing, diverge):
        self.start, self.ratio, self.steps = start, ratio, steps
        self.smoothing, self.diverge = smoothing, diverge
        self.lrs: List[float] = []
        self.raw: List[float] = []
        self.smooth: List[float] = []
        self.average, self.best = 0.0, math.inf

    def on_step_begin(self, trainer, step):
        trainer.set_learning_rate(self.start * self.ratio ** step)

    def on_step_end(self, trainer, step, losses):
        value = float(np.mean(np.concatenate([loss.asnumpy() for loss in losses])))
        self.average = self.smoothing * self.average + (1 - self.smoothing) * value
        smoothed = self.average / (1 - self.smoothing ** (step + 1))  # bias-corrected, as Adam
        self.lrs.append(trainer.learning_rate)
        self.raw.append(value)
        self.smooth.append(smoothed)
        if step + 1 >= self.steps or not math.isfinite(smoothed) \
                or smoothed > self.diverge * self.best:
            raise StopTraining("the sweep is done")
        self.best = min(self.best, smoothed)


def lr_find(net, train, *, start: float = 1e-5, end: float = 1.0, steps: int = 50,
            batch_size: int = 64, image_size: Optional[int] = None, optimizer: str = "sgd",
            momentum: float = 0.9, wd: float = 1e-4, ctx=None, seed: int = 0,
            smoothing: float = 0.9, diverge: float = 4.0) -> Dict[str, object]:
    """Learning-rate range test: train with an exponentially growing learning rate.

    A short sweep over `fit`: a step hook (`gluonft.callbacks.Callback`) sets each step's
    learning rate and records its loss. What trains is what `apply_regime` left trainable;
    the frozen prefix runs outside ``autograd.record()`` as in every `fit`. Every parameter and
    running statistic is restored afterwards, so the sweep leaves ``net`` exactly as it was.
    The sweep stops early when the smoothed loss exceeds ``diverge`` times its minimum (or
    becomes NaN).

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
    if not isinstance(train, ImageSet) or len(train) == 0:
        raise ValueError(f"train must be a non-empty gluonft ImageSet, got {train!r}")
    if not (isinstance(start, (int, float)) and isinstance(end, (int, float))
            and 0 < start < end):
        raise ValueError(f"need 0 < start < end, got start={start!r}, end={end!r}")
    steps = check_int("steps (at least 5 to draw a curve)", steps, 5)
    check_optimizer(optimizer, start, momentum, wd)
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    # Copies of everything, running statistics included: trained steps change them too.
    saved = {name: p.data(p.list_ctx()[0]).copy() for name, p in net.collect_params().items()}
    sweep = _LrSweep(start, (end / start) ** (1 / (steps - 1)), steps, smoothing, diverge)
    per_epoch = -(-len(train) // batch_size)
    try:
        fit(net, train, epochs=-(-steps // per_epoch), batch_size=batch_size, lr=start,
            optimizer=optimizer, momentum=momentum, wd=wd, schedule=Schedule("constant"),
            augment=Augment.none(), image_size=image_size, ctx=ctx, seed=seed,
            callbacks=[sweep], progress=False, cache_features=False)
    except TrainingDiverged:  # the loss reached NaN: the sweep's end, not an error here
        pass
    finally:
        for name, p in net.collect_params().items():
            p.set_data(saved[name])
    return {"lrs": sweep.lrs, "losses": sweep.smooth, "raw_losses": sweep.raw,
            "suggestion": _suggest(sweep.lrs, sweep.smooth)}


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
