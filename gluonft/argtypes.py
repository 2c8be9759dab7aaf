"""Argument types shared by the command lines (`python -m gluonft`, `python -m bench.*`):
each turns a word into a value or says, in one line, what it expected."""
from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "non_negative_float", "seed"]


def positive_int(text: str) -> int:
    """``"64"`` or ``"1_000_000"`` -> int >= 1."""
    try:
        value = int(text)  # int() reads "1_000_000" too
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def seed(text: str) -> int:
    """A seed: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer >= 0, got {text!r}")
    return value
