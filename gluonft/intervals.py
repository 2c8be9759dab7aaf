"""How sure a measured figure is: the Wilson interval of an accuracy on N images, and the
interval of a mean over seeds that also counts the test set's sampling noise."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

__all__ = ["Z95", "wilson_interval", "mean_std", "mean_interval"]


Z95 = 1.959964  # the two-sided 95 % quantile of the normal distribution


def wilson_interval(accuracy: float, count: int, *, z: float = Z95) -> Tuple[float, float]:
    """The Wilson score interval (95 % by default) of an accuracy measured on ``count`` images.

    A test accuracy is a binomial proportion: on 50 images a 2-point difference is one image.
    Wilson's interval stays inside [0, 1] and is right near 0 and 1, where the normal
    approximation is not.

    Example:
        >>> [round(x, 3) for x in wilson_interval(0.8, 50)]
        [0.670, 0.888]
    """
    if count <= 0:
        raise ValueError(f"count must be a positive number of test images, got {count!r}")
    p, n = float(accuracy), float(count)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, sample standard deviation) of ``values``; (None, None) for none, no std for one."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    # Sample standard deviation: the repeats estimate the spread of one configuration.
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# Student's t, 97.5 % quantile, by degrees of freedom (seeds - 1): with a few seeds their
# spread is itself uncertain, and the normal 1.96 would claim more than they show.
_T975 = ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365),
         (8, 2.306), (9, 2.262), (10, 2.228), (15, 2.131), (20, 2.086), (30, 2.042))


def _t975(dof: int) -> float:
    return next((t for d, t in _T975 if dof <= d), Z95)


def mean_interval(accuracies: Sequence[float], test_count: Optional[int]
                  ) -> Tuple[float, float]:
    """A 95 % interval of the mean test accuracy of several seeds that combines both sources
    of uncertainty: the spread over seeds (a t interval of their mean) and the test set's
    sampling noise (binomial on ``test_count`` images, which the seeds share: more seeds do
    not shrink it). The two half-widths add in quadrature.

    Example:
        >>> [round(x, 3) for x in mean_interval([0.700, 0.701, 0.702], 300)]
        [0.649, 0.753]
    """
    n = len(accuracies)
    mean, std = mean_std(accuracies)
    seeds = _t975(n - 1) * std / math.sqrt(n) if std is not None else 0.0
    test = Z95 * math.sqrt(mean * (1 - mean) / test_count) if test_count else 0.0
    half = math.hypot(seeds, test)
    return max(0.0, mean - half), min(1.0, mean + half)
