"""The hooks of `gluonft.fit`, and the callbacks built on them: early stopping, best
checkpoint, reduce-LR-on-plateau, CSV log.

A callback is a `Callback` (override the hooks you need) or a plain function
``(epoch, logs)``, which is its ``on_epoch_end``. `fit` calls, in order:

    on_step_begin(trainer, step)         before each optimiser step; the schedule has just set
                                         ``trainer.learning_rate``, which the hook may change
    on_step_end(trainer, step, losses)   after it; ``losses``: the per-image losses on each
                                         device (reading them waits for the device)
    on_epoch_end(epoch, logs)            after each epoch (epoch counts from 1; ``logs`` holds
                                         ``train_loss``, ``train_acc``, ``lr``, ``seconds``,
                                         ``images_per_s`` and, with a validation set,
                                         ``val_loss`` and ``val_acc``)

``step`` counts optimiser steps over the whole run from 0. A hook ends training by raising
`StopTraining`: from ``on_epoch_end`` after that epoch, from a step hook at once (the epoch in
progress is then not recorded); fit marks the `History` as stopped early. Hooks get the
Trainer explicitly (as Keras hooks get the model), so nothing is read off callbacks by name.

Each callback keeps its own small state (best value, epochs waited) as attributes you can read
after training. When the epoch number does not grow (a second ``fit`` with the same callback,
e.g. the next stage of a fine-tune schedule), that state starts afresh.
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Dict, List, Optional

from . import fileio

__all__ = ["Callback", "StopTraining", "as_callback", "EarlyStopping", "BestCheckpoint",
           "ReduceLROnPlateau", "CSVLogger", "Monitor", "MODES"]

MODES = ("auto", "min", "max")


class StopTraining(Exception):
    """Raise from a callback to end training (e.g. early stopping)."""


class Callback:
    """The hooks of `fit` (see the module docstring); each does nothing unless overridden.

    Example:
        >>> class Halve(Callback):
        ...     def on_step_begin(self, trainer, step):
        ...         trainer.set_learning_rate(trainer.learning_rate / 2)
    """

    def on_step_begin(self, trainer, step: int) -> None:
        """Before optimiser step ``step``; ``trainer.learning_rate`` is the scheduled rate."""

    def on_step_end(self, trainer, step: int, losses) -> None:
        """After optimiser step ``step``; ``losses`` are its per-device loss NDArrays."""

    def on_epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        """After epoch ``epoch`` (from 1) with its logged values."""

    def __call__(self, epoch: int, logs: Dict[str, float]) -> None:
        self.on_epoch_end(epoch, logs)


class _EpochFunction(Callback):
    def __init__(self, function):
        self.function = function

    def on_epoch_end(self, epoch, logs):
        self.function(epoch, logs)


def as_callback(callback) -> Callback:
    """A `Callback` as it is; a plain function ``(epoch, logs)`` as an epoch-end hook."""
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return _EpochFunction(callback)
    raise ValueError(f"a callback must be a gluonft Callback or a function (epoch, logs), got "
                     f"{callback!r}")


class Monitor:
    """Which logged number to watch and when it counts as better.

    Args:
        monitor: a key of ``logs``, e.g. ``"val_acc"`` or ``"val_loss"``.
        mode: ``"max"``, ``"min"``, or ``"auto"``: max for names ending in ``acc`` /
            ``accuracy``, min for names containing ``loss``.
        min_delta: an improvement must exceed this (>= 0) to count.

    Example:
        >>> m = Monitor(monitor="val_loss")
        >>> m.mode, m.is_better(0.5, 0.6), m.is_better(0.6, 0.5)
        ('min', True, False)
    """

    def __init__(self, *, monitor: str, mode: str = "auto", min_delta: float = 0.0):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be the name of a logged value such as 'val_acc', "
                             f"got {monitor!r}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        if mode == "auto":
            if monitor.endswith(("acc", "accuracy")):
                mode = "max"
            elif "loss" in monitor:
                mode = "min"
            else:
                raise ValueError(f"mode='auto' cannot tell whether {monitor!r} should go up or "
                                 "down; pass mode='max' or mode='min'")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) \
                or not min_delta >= 0:
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)

    def value(self, logs: Dict[str, float]) -> float:
        """The watched value of ``logs``; a clear error when it was not logged."""
        if self.monitor not in logs:
            hint = " (fit logs val_* only when given a validation set)" \
                if self.monitor.startswith("val_") else ""
            raise ValueError(f"monitor {self.monitor!r} is not in the logs{hint}; logged: "
                             f"{', '.join(sorted(logs))}")
        return float(logs[self.monitor])

    def is_better(self, value: float, best: Optional[float]) -> bool:
        """True when ``value`` improves on ``best`` by more than min_delta (NaN never does)."""
        if math.isnan(value):
            return False
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" \
            else value > best + self.min_delta


class _Watching(Callback):
    """Shared state: the best value so far and its epoch; restarts when epochs do not grow."""

    def __init__(self, monitor, mode, min_delta):
        self._monitor = Monitor(monitor=monitor, mode=mode, min_delta=min_delta)
        self.reset()

    @property
    def monitor(self) -> str:
        return self._monitor.monitor

    @property
    def mode(self) -> str:
        return self._monitor.mode

    def reset(self) -> None:
        """Forget the best value (called automatically when a new run starts)."""
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.wait = 0
        self._last_epoch = 0

    def _observe(self, epoch: int, logs: Dict[str, float]) -> bool:
        """Record this epoch; True when it is a new best."""
        if epoch <= self._last_epoch:  # a new run (or a resumed one) with the same callback
            self.reset()
        self._last_epoch = epoch
        value = self._monitor.value(logs)
        if self._monitor.is_better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class EarlyStopping(_Watching):
    """Stop when the monitored value has not improved for ``patience`` epochs.

    Training stops after epoch ``best_epoch + patience`` (that epoch still completes and is in
    the History). Pair it with `BestCheckpoint` to keep the best weights.

    Args:
        monitor: logged value to watch (default ``"val_acc"``).
        patience: epochs without improvement to tolerate, >= 1.
        min_delta: smallest change that counts as an improvement, >= 0.
        mode: ``"auto"``, ``"min"`` or ``"max"`` (see `Monitor`).

    Attributes:
        best, best_epoch: the best value and its epoch; wait: epochs since then;
        stopped_epoch: the epoch training stopped at, or None.

    Example:
        >>> stop = EarlyStopping(monitor="val_acc", patience=3)
        >>> history = gluonft.fit(net, train, val, epochs=50, batch_size=64, lr=0.01,
        ...                       callbacks=[stop])  # doctest: +SKIP
        >>> stop.stopped_epoch, stop.best_epoch  # doctest: +SKIP
        (14, 11)
    """

    def __init__(self, *, monitor: str = "val_acc", patience: int = 3, min_delta: float = 0.0,
                 mode: str = "auto"):
        self.patience = _check_count("patience", patience, 1)
        super().__init__(monitor, mode, min_delta)

    def reset(self) -> None:
        super().reset()
        self.stopped_epoch: Optional[int] = None

    def on_epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        self._observe(epoch, logs)
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            best = ("no valid value yet: every one was NaN" if self.best is None
                    else f"best {self.best:.6g} at epoch {self.best_epoch}")
            raise StopTraining(f"{self.monitor} has not improved for {self.wait} epochs "
                               f"({best})")

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self._monitor.min_delta}, mode={self.mode!r})")


class BestCheckpoint(_Watching):
    """Save the net's parameters whenever the monitored value reaches a new best.

    The parameters go to ``path`` with ``net.save_parameters`` (atomically: a crash mid-save
    leaves the previous best intact), loadable with ``net.load_parameters(path)`` or
    ``gluonft.load_backbone(name, classes=..., weights=path)``. A JSON file ``path + ".json"``
    records the epoch, the monitored value and that epoch's logs.

    Args:
        net: the net being trained.
        path: the parameter file.
        monitor, mode, min_delta: see `Monitor` (default ``"val_acc"``).
        overwrite: replace files already at ``path`` from an earlier run; by default an
            existing file is an error, so that nothing is overwritten without being asked.

    Attributes:
        best, best_epoch: the best value and its epoch (None before the first epoch).

    Example:
        >>> best = BestCheckpoint(net, "runs/best.params", monitor="val_acc")  # doctest: +SKIP
        >>> gluonft.fit(net, train, val, epochs=20, batch_size=64, lr=0.01,
        ...             callbacks=[best])  # doctest: +SKIP
        >>> net.load_parameters("runs/best.params")  # doctest: +SKIP
    """

    def __init__(self, net, path, *, monitor: str = "val_acc", mode: str = "auto",
                 min_delta: float = 0.0, overwrite: bool = False):
        if not hasattr(net, "save_parameters"):
            raise ValueError(f"net must be a Gluon block with save_parameters, "
                             f"got {type(net).__name__}")
        self.net, self.path = net, os.fspath(path)
        self.info_path = self.path + ".json"
        if not overwrite:
            existing = [p for p in (self.path, self.info_path) if os.path.exists(p)]
            if existing:
                raise FileExistsError(f"BestCheckpoint would overwrite {', '.join(existing)}; "
                                      "choose another path or pass overwrite=True")
        super().__init__(monitor, mode, min_delta)

    def on_epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        # Weights that produce a non-finite loss are broken whatever the monitored value says
        # (accuracy at chance level is not NaN): they are never kept as the best.
        broken = [k for k in ("train_loss", "val_loss")
                  if k in logs and not math.isfinite(float(logs[k]))]
        if broken:
            return
        if not self._observe(epoch, logs):
            return
        fileio.atomic_write(self.path, self.net.save_parameters)
        info = {"epoch": epoch, "monitor": self.monitor, "mode": self.mode, "value": self.best,
                "logs": {k: float(v) for k, v in logs.items()}}
        fileio.atomic_write_json(self.info_path, info)

    def __repr__(self) -> str:
        return f"BestCheckpoint(path={self.path!r}, monitor={self.monitor!r}, mode={self.mode!r})"


class ReduceLROnPlateau(_Watching):
    """Divide the learning rate by 1 / ``factor`` when the monitored value stops improving.

    After ``patience`` epochs without improvement, ``lr_scale`` is multiplied by ``factor``
    (never below ``min_scale``), then ``cooldown`` epochs pass before waiting starts again.

    Before every step (`Callback.on_step_begin`) it multiplies the learning rate the schedule
    has just set by ``lr_scale``; so the reduction composes with any schedule (warm-up,
    cosine...) and with other callbacks, and the logged ``lr`` shows it.

    Args:
        monitor: logged value to watch (default ``"val_loss"``).
        factor: multiplier of the learning rate, in (0, 1).
        patience: epochs without improvement before reducing, >= 1.
        min_delta, mode: see `Monitor`.
        cooldown: epochs after a reduction before counting again, >= 0.
        min_scale: lowest ``lr_scale``, >= 0.

    Attributes:
        lr_scale: the current multiplier (1.0 at the start); reductions: epochs at which it
            was reduced.

    Example:
        >>> plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
        >>> history = gluonft.fit(net, train, val, epochs=30, batch_size=64, lr=0.01,
        ...                       schedule=gluonft.Schedule("constant"),
        ...                       callbacks=[plateau])  # doctest: +SKIP
    """

    def __init__(self, *, monitor: str = "val_loss", factor: float = 0.1, patience: int = 2,
                 min_delta: float = 0.0, mode: str = "auto", cooldown: int = 0,
                 min_scale: float = 0.0):
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
                or not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if isinstance(min_scale, bool) or not isinstance(min_scale, (int, float)) \
                or not min_scale >= 0:
            raise ValueError(f"min_scale must be a number >= 0, got {min_scale!r}")
        self.factor, self.min_scale = float(factor), float(min_scale)
        self.patience = _check_count("patience", patience, 1)
        self.cooldown = _check_count("cooldown", cooldown, 0)
        super().__init__(monitor, mode, min_delta)

    def on_step_begin(self, trainer, step: int) -> None:
        if self.lr_scale != 1.0:
            trainer.set_learning_rate(trainer.learning_rate * self.lr_scale)

    def reset(self) -> None:
        super().reset()
        self.lr_scale = 1.0
        self.reductions: List[int] = []
        self._cooling = 0

    def on_epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        improved = self._observe(epoch, logs)
        if self._cooling > 0:
            self._cooling -= 1
            self.wait = 0  # epochs in cooldown do not count towards patience
            return
        if not improved and self.wait >= self.patience:
            new = max(self.min_scale, self.lr_scale * self.factor)
            if new < self.lr_scale:
                self.lr_scale = new
                self.reductions.append(epoch)
            self.wait = 0
            self._cooling = self.cooldown

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
                f"patience={self.patience}, lr_scale={self.lr_scale})")


class CSVLogger(Callback):
    """Append one CSV row per epoch: ``epoch`` then the logged values.

    The columns are fixed by the first row (or by the header of the file being appended to);
    a value logged later under a new name is left out. Each row is written with one call on a
    file opened for appending, flushed and synced, so a crash loses at most the row being
    written and never leaves a half file behind for the rows already there.

    Args:
        path: the CSV file.
        append: add rows to an existing file (its header is kept).
        overwrite: replace an existing file. With neither, an existing file is an error, so
            that nothing is overwritten without being asked.

    Attributes:
        columns: the column names once the first row is written.

    Example:
        >>> log = CSVLogger("runs/log.csv")  # doctest: +SKIP
        >>> gluonft.fit(net, train, val, epochs=5, batch_size=64, lr=0.01,
        ...             callbacks=[log])  # doctest: +SKIP
    """

    def __init__(self, path, *, append: bool = False, overwrite: bool = False):
        self.path = os.fspath(path)
        if append and overwrite:
            raise ValueError("CSVLogger: append=True and overwrite=True contradict each other; "
                             "pass one")
        exists = os.path.exists(self.path)
        if exists and not (append or overwrite):
            raise FileExistsError(f"CSVLogger would overwrite {self.path}; pass append=True to "
                                  "add rows, overwrite=True to replace it, or another path")
        self.columns: Optional[List[str]] = None
        self._truncate = exists and overwrite
        if exists and append:
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def on_epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        row = {"epoch": epoch, **{k: v for k, v in logs.items() if k != "epoch"}}
        lines = io.StringIO()
        writer = csv.writer(lines, lineterminator="\n")
        if self.columns is None:
            self.columns = list(row)
            writer.writerow(self.columns)
        writer.writerow([_cell(row.get(c)) for c in self.columns])
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        mode = "w" if self._truncate else "a"
        self._truncate = False
        with open(self.path, mode, newline="") as f:
            f.write(lines.getvalue())  # header and row in one write
            f.flush()
            os.fsync(f.fileno())

    def __repr__(self) -> str:
        return f"CSVLogger(path={self.path!r})"


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision, round-trips through float()
    return value
