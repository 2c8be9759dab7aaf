"""How fast a training run goes, said as it goes: an estimate of its length once its first steps
are timed, and a line per epoch for logs (the progress bars say images/s themselves).

The first steps of a run build and compile graphs and allocate memory: their time says nothing
of the pace, so they are skipped and the next few timed. The estimate covers the training
steps; validation, scored after each epoch, comes on top and is named."""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Dict, Optional

__all__ = ["Pace", "LOG", "format_duration", "epoch_line", "progress_bar", "speaker"]

LOG = logging.getLogger("gluonft")
SKIPPED_STEPS = 2  # compiling and allocating
TIMED_STEPS = 4


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


class Pace:
    """Times a run's first steps and says, once, how long its steps will take.

    Args:
        steps_per_epoch, epochs, start_epoch: the run's shape (a resumed run starts later).
        val_images: images scored after each epoch (named in the estimate, not timed).
        say: where the line goes (tqdm.write beside progress bars, else the ``gluonft`` log).
        what: the run's name in the line (e.g. the stage of a recipe).
    """

    def __init__(self, *, steps_per_epoch: int, epochs: int, start_epoch: int = 0,
                 val_images: int = 0, say: Callable[[str], None] = LOG.info,
                 what: str = "training"):
        self.steps_left = steps_per_epoch * (epochs - start_epoch)
        self.val_images, self.say, self.what = val_images, say, what
        self.done = 0
        self.images = 0
        self.begin: Optional[float] = None
        self.estimate: Optional[Dict[str, float]] = None  # once said

    def step_done(self, images: int) -> None:
        """Called after each step; says the estimate after the timed steps."""
        if self.estimate is not None:
            return
        self.done += 1
        if self.done == SKIPPED_STEPS:
            self.begin = time.perf_counter()
        elif self.done > SKIPPED_STEPS:
            self.images += images
            if self.done == SKIPPED_STEPS + TIMED_STEPS:
                self._say(time.perf_counter() - self.begin, self.done - SKIPPED_STEPS)

    def epoch_done(self, seconds: float, images: int) -> None:
        """A run too short for the timed steps is estimated from its first epoch."""
        if self.estimate is None and self.done:
            self.images = images
            self._say(seconds, self.done, timed="the first epoch")

    def _say(self, seconds: float, steps: int, timed: Optional[str] = None) -> None:
        per_step = seconds / max(steps, 1)
        remaining = max(self.steps_left - self.done, 0) * per_step
        rate = self.images / seconds if seconds > 0 else float("inf")
        self.estimate = {"seconds": remaining, "images_per_s": rate}
        timed = timed or f"steps {SKIPPED_STEPS + 1}-{SKIPPED_STEPS + steps}"
        validation = (f"; scoring {self.val_images} validation images each epoch comes on top"
                      if self.val_images else "")
        self.say(f"{self.what}: about {format_duration(remaining)} left for "
                 f"{max(self.steps_left - self.done, 0)} steps at {rate:.1f} images/s "
                 f"(timed on {timed}){validation}")


def epoch_line(logs: Dict[str, float], epochs: int) -> str:
    """One epoch's numbers as a log line."""
    val = (f", val loss {logs['val_loss']:.3f}, val acc {logs['val_acc']:.3f}"
           if "val_acc" in logs else "")
    return (f"epoch {int(logs['epoch'])}/{epochs}: loss {logs['train_loss']:.3f}, "
            f"acc {logs['train_acc']:.3f}{val}, {logs['images_per_s']:.1f} images/s, "
            f"{format_duration(logs['seconds'])}")


def progress_bar(enabled: bool, images: int, description: str):
    """A bar over an epoch's images (tqdm shows images/s and the time left), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=images, desc=description, leave=False, unit="img")


def speaker(progress: bool, chief: bool = True) -> Callable[[str], None]:
    """Where a run's lines go: beside its progress bars, else the ``gluonft`` log; workers
    other than the chief say nothing (the chief speaks for the job)."""
    if not chief:
        return lambda line: None
    if not progress:
        return LOG.info

    def beside_bars(line: str) -> None:
        from tqdm.auto import tqdm
        tqdm.write(line, file=sys.stderr)
    return beside_bars
