"""mixup and cutmix: training batches that mix pairs of images, and the loss that goes with them.

    mixup   (Zhang et al., 2018)  x = lam * x_i + (1 - lam) * x_j
    cutmix  (Yun et al., 2019)    a box of x_j pasted into x_i; lam = 1 - box area / image area

with lam ~ Beta(alpha, alpha) drawn once per batch and the partner j a random permutation of
the batch (of each device's share of it), both from the epoch's seeded generator, so a run is
repeatable. The loss is ``lam * CE(out, y_i) + (1 - lam) * CE(out, y_j)`` (label smoothing
applies to both). ``prob`` is the chance that a batch is mixed at all. Mixing happens on the
device after augmentation and normalisation, before the frozen prefix: features of mixed images
cannot be cached, so a fit with mixing runs its frozen prefix every step.

The training accuracy of a mixed batch is counted against each image's dominant label (y_i
when lam >= 0.5, else y_j); validation and test are never mixed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import mxnet as mx
import numpy as np

__all__ = ["Mix", "MIX_KINDS", "DEFAULT_ALPHA", "draw_mix", "mix_images", "cutmix_box"]

MIX_KINDS = ("none", "mixup", "cutmix")
# The papers' and fastai's usual strengths: mixup 0.4 (0.2-0.4 on ImageNet), cutmix 1.0.
DEFAULT_ALPHA = {"mixup": 0.4, "cutmix": 1.0}


@dataclass(frozen=True)
class Mix:
    """Which mixing, how strong, how often.

    Attributes:
        kind: ``"mixup"`` or ``"cutmix"``.
        alpha: the Beta(alpha, alpha) parameter, > 0; 0 takes the kind's default
            (`DEFAULT_ALPHA`).
        prob: the probability that a batch is mixed, in (0, 1].

    Example:
        >>> Mix("cutmix").alpha
        1.0
    """
    kind: str = "mixup"
    alpha: float = 0.0
    prob: float = 1.0

    def __post_init__(self):
        if self.kind not in DEFAULT_ALPHA:
            raise ValueError(f"unknown mix {self.kind!r}: expected 'mixup' or 'cutmix' (or "
                             f"mix=None / 'none' for no mixing)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not 0 <= self.alpha < float("inf"):
            raise ValueError(f"mix alpha must be a number > 0 (0: the default "
                             f"{DEFAULT_ALPHA[self.kind]} of {self.kind}), got {self.alpha!r}")
        if self.alpha == 0:
            object.__setattr__(self, "alpha", DEFAULT_ALPHA[self.kind])
        if isinstance(self.prob, bool) or not isinstance(self.prob, (int, float)) \
                or not 0 < self.prob <= 1:
            raise ValueError(f"mix prob must be in (0, 1] (the share of mixed batches), got "
                             f"{self.prob!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "prob", float(self.prob))

    @classmethod
    def of(cls, kind: str, alpha: float = 0.0, prob: float = 1.0) -> Optional["Mix"]:
        """A `Mix`, or None for ``kind="none"`` (how settings and flags spell "no mixing")."""
        if kind == "none":
            return None
        return cls(kind, alpha, prob)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MixDraw:
    """One batch's draw: the mixing weight, the partners, the box (cutmix)."""
    lam: float
    partner: np.ndarray
    box: Optional[Tuple[int, int, int, int]] = None   # top, left, height, width


def cutmix_box(side: int, lam: float, rng: np.random.RandomState) -> Tuple[int, int, int, int]:
    """A box of about ``(1 - lam)`` of the image area, centred uniformly, clipped to the image
    (the paper's rule); the caller takes the exact weight from the clipped box's area."""
    cut = int(round(side * np.sqrt(1 - lam)))
    cy, cx = rng.randint(side), rng.randint(side)
    top, bottom = np.clip([cy - cut // 2, cy + cut - cut // 2], 0, side)
    left, right = np.clip([cx - cut // 2, cx + cut - cut // 2], 0, side)
    return int(top), int(left), int(bottom - top), int(right - left)


def draw_mix(mix: Optional[Mix], n: int, side: int,
             rng: np.random.RandomState) -> Optional[MixDraw]:
    """The mixing of a batch of ``n`` images of ``side`` px, or None when it is not mixed."""
    if mix is None or n < 2 or rng.rand() >= mix.prob:
        return None
    lam = float(rng.beta(mix.alpha, mix.alpha))
    partner = rng.permutation(n)
    if mix.kind == "mixup":
        return MixDraw(lam, partner)
    box = cutmix_box(side, lam, rng)
    return MixDraw(1 - box[2] * box[3] / side ** 2, partner, box)


def mix_images(x: mx.nd.NDArray, draw: MixDraw) -> mx.nd.NDArray:
    """The mixed batch (NCHW, on its device)."""
    partner = mx.nd.array(draw.partner, ctx=x.context, dtype="int32")
    other = mx.nd.take(x, partner, axis=0)
    if draw.box is None:
        return draw.lam * x + (1 - draw.lam) * other
    top, left, height, width = draw.box
    mask = np.zeros((1, 1) + x.shape[2:], np.float32)
    mask[..., top:top + height, left:left + width] = 1
    mask = mx.nd.array(mask, ctx=x.context, dtype=x.dtype)
    return x * (1 - mask) + other * mask
