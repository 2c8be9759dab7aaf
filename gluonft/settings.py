"""The vocabulary of training settings that `fit`, presets, the bench and the recipes share:
the optimizers, their checks, and `TrainSettings` (what a run trains with, apart from what
differs per experiment)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from .mixing import MIX_KINDS, Mix
from .schedules import SCHEDULES, Schedule

__all__ = ["OPTIMIZERS", "MOMENTUM_OPTIMIZERS", "optimizer_params", "check_optimizer",
           "check_training", "TrainSettings"]

OPTIMIZERS = ("sgd", "nag", "adam")
MOMENTUM_OPTIMIZERS = ("sgd", "nag")  # the optimizers that take ``momentum``


def optimizer_params(optimizer: str, lr: float, momentum: float, wd: float) -> dict:
    """The Trainer's ``optimizer_params`` (and what records show): momentum only where used."""
    params = {"learning_rate": lr, "wd": wd}
    if optimizer in MOMENTUM_OPTIMIZERS:
        params["momentum"] = momentum
    return params


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_optimizer(optimizer, lr, momentum, wd) -> None:
    """Raise ValueError naming the value when an optimizer setting is invalid."""
    if not (_is_number(lr) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive number (and finite), got {lr!r}")
    if not (_is_number(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if not (_is_number(wd) and 0 <= wd < math.inf):
        raise ValueError(f"wd (weight decay) must be a finite number >= 0, got {wd!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: expected one of "
                         f"{', '.join(OPTIMIZERS)}")


def check_training(*, epochs, batch_size, optimizer, lr, momentum, wd, label_smoothing) -> None:
    """Raise ValueError naming the value when a training setting is invalid (what `fit` and
    `TrainSettings` both accept)."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    check_optimizer(optimizer, lr, momentum, wd)
    if not (_is_number(label_smoothing) and 0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")


def _flag(help: str, **more) -> dict:
    return {"help": help, **more}


@dataclass(frozen=True)
class TrainSettings:
    """How a run trains, apart from what differs per experiment (learning rate, input size).

    The one vocabulary of training settings: bench presets hold one, the bench config and
    each experiment carry one, `fit_kwargs` passes it to `fit`, and `fit` records the same
    names in ``History.settings``. Each field's metadata holds its command-line help, so a
    new option is one field here (plus its use in `fit`), and ``python -m bench.cifar`` gains
    the flag ``--<field-name>``.

    Example:
        >>> s = TrainSettings(epochs=3, optimizer="adam")
        >>> s.fit_kwargs()["schedule"]
        Schedule(name='cosine', warmup_epochs=0.0, steps=(), factor=0.1)
    """
    epochs: int = field(default=1, metadata=_flag("epochs of every transfer experiment"))
    batch_size: int = field(default=64, metadata=_flag("images per step (split over devices)"))
    optimizer: str = field(default="sgd", metadata=_flag("optimizer", choices=OPTIMIZERS))
    momentum: float = field(default=0.9, metadata=_flag("momentum of sgd and nag, in [0, 1)"))
    wd: float = field(default=1e-4, metadata=_flag("weight decay"))
    schedule: str = field(default="cosine", metadata=_flag(
        "learning-rate schedule", choices=tuple(s for s in SCHEDULES if s != "step")))
    warmup_epochs: float = field(default=0.0, metadata=_flag("linear warm-up, in epochs"))
    label_smoothing: float = field(default=0.0, metadata=_flag("label smoothing, in [0, 1)"))
    mix: str = field(default="none", metadata=_flag(
        "mix pairs of training images (gluonft.mixing)", choices=MIX_KINDS))
    mix_alpha: float = field(default=0.0, metadata=_flag(
        "Beta(alpha, alpha) of --mix; 0: mixup 0.4, cutmix 1.0"))
    mix_prob: float = field(default=1.0, metadata=_flag(
        "share of the batches that --mix mixes, in (0, 1]"))
    amp: bool = field(default=False, metadata=_flag(
        "float16 mixed-precision training (MXNet AMP); GPUs only"))

    def __post_init__(self):
        # lr is per experiment, not a setting here: any valid one stands in for the check.
        check_training(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                       lr=1.0, momentum=self.momentum, wd=self.wd,
                       label_smoothing=self.label_smoothing)
        Schedule(self.schedule, warmup_epochs=self.warmup_epochs)  # validates both
        self.mix_obj  # Mix validates the kind, alpha and prob
        if not isinstance(self.amp, bool):
            raise ValueError(f"amp must be True or False, got {self.amp!r}")

    @property
    def schedule_obj(self) -> Schedule:
        return Schedule(self.schedule, warmup_epochs=self.warmup_epochs)

    @property
    def mix_obj(self) -> Optional[Mix]:
        if self.mix == "none":
            return None
        return Mix(self.mix, self.mix_alpha, self.mix_prob)

    def fit_kwargs(self) -> dict:
        """The `fit` arguments these settings stand for."""
        return {"epochs": self.epochs, "batch_size": self.batch_size,
                "optimizer": self.optimizer, "momentum": self.momentum, "wd": self.wd,
                "schedule": self.schedule_obj, "label_smoothing": self.label_smoothing,
                "amp": self.amp, "mix": self.mix_obj}

    def to_dict(self) -> dict:
        return asdict(self)
