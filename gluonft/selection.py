"""The figures "best" may be chosen on, read from an experiment record: `METRICS` and
`record_score` (on validation or test images), for `gluonft.results.best_record`."""
from __future__ import annotations

from typing import Optional

__all__ = ["METRICS", "record_score", "validation_accuracy", "check_metric"]


# What "best" may be chosen on (`best_record`): the same figure on validation images when every
# trained experiment has it, else on the test images. "f1" is the binary F1 of class 1
# (scikit-learn's pos_label=1) of two-class data.
METRICS = ("accuracy", "macro_f1", "f1")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")


def _figure(metrics: dict, metric: str) -> Optional[float]:
    if metric == "macro_f1":
        value = metrics.get("macro_f1")
    else:
        binary = metrics.get("binary_f1") or {}
        classes = metrics.get("classes") or []
        value = binary.get(classes[1]) if len(classes) == 2 else None
    return None if value is None else float(value)


def record_score(record, metric: str = "accuracy", *,
                 on: str = "validation") -> Optional[float]:
    """The record's ``metric`` on its ``"validation"`` or ``"test"`` images (the final
    model's), or None when it was not measured."""
    check_metric(metric)
    if on not in ("validation", "test"):
        raise ValueError(f"on must be 'validation' or 'test', got {on!r}")
    if metric == "accuracy":
        return validation_accuracy(record) if on == "validation" else record.test_accuracy
    return _figure((record.val_metrics if on == "validation" else record.test_metrics) or {},
                   metric)


def validation_accuracy(record) -> Optional[float]:
    """The validation accuracy of the model the record tested (fit tests its final model: the
    last epoch's), or None when that epoch was not validated."""
    last = record.history[-1] if record.history else {}
    value = last.get("val_acc")
    return None if value is None else float(value)
