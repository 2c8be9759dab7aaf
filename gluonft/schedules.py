"""Learning-rate schedules as plain functions of the iteration: easy to plot, test and record."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Tuple

__all__ = ["Schedule", "SCHEDULES"]

SCHEDULES = ("cosine", "step", "constant", "onecycle")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule.

    Attributes:
        name: ``cosine`` (to 0 at the end), ``step`` (times ``factor`` at each epoch in
            ``steps``), ``constant``, or ``onecycle`` (up to ``lr`` over the first 30% of
            training, then cosine down to ``lr / 1e4``).
        warmup_epochs: linear warm-up from ``lr / 10`` to ``lr`` before the schedule (not used
            by ``onecycle``, which has its own ramp).
        steps, factor: for ``step``.

    Example:
        >>> Schedule("cosine", warmup_epochs=1).lr(0.1, iteration=50, per_epoch=100, epochs=5)
        0.055
    """
    name: str = "cosine"
    warmup_epochs: float = 0.0
    steps: Tuple[int, ...] = ()
    factor: float = 0.1

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}: expected one of "
                             f"{', '.join(SCHEDULES)}")
        if not self.warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.name == "step" and not (0 < self.factor < 1):
            raise ValueError(f"step schedule factor must be in (0, 1), got {self.factor!r}")

    def lr(self, base_lr: float, *, iteration: int, per_epoch: int, epochs: int) -> float:
        """The learning rate at ``iteration`` (0-based, counted over the whole run)."""
        total = max(1, per_epoch * epochs)
        if self.name == "onecycle":
            peak = max(1, int(0.3 * total))
            if iteration < peak:
                return base_lr / 25 + (base_lr - base_lr / 25) * iteration / peak
            t = (iteration - peak) / max(1, total - peak)
            low = base_lr / 1e4
            return low + (base_lr - low) * 0.5 * (1 + math.cos(math.pi * t))
        warmup = int(round(self.warmup_epochs * per_epoch))
        if iteration < warmup:
            return base_lr / 10 + (base_lr - base_lr / 10) * iteration / warmup
        if self.name == "constant":
            return base_lr
        if self.name == "step":
            epoch = iteration / per_epoch
            return base_lr * self.factor ** sum(epoch >= s for s in self.steps)
        t = (iteration - warmup) / max(1, total - warmup)
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    def to_dict(self) -> dict:
        return asdict(self)
