"""Classification figures from predictions, as numbers (numpy only): the confusion matrix,
per-class precision / recall / F1 / support, accuracy, macro- and weighted-F1, the binary F1 of
one class, the most-confused pairs, and calibration (expected calibration error and the
reliability curve).

The definitions are scikit-learn's (`confusion_matrix`, `precision_recall_fscore_support`,
`f1_score`) and the tests compare against it. A class that is never predicted has precision 0,
one that never occurs has recall 0 (scikit-learn's ``zero_division=0``), never NaN: such
classes are listed in `PerClass.undefined` so a report can say so.

    >>> cm = confusion_matrix([0, 1, 1], [0, 1, 0], classes=2)
    >>> cm.tolist(), round(macro_f1(cm), 3)
    ([[1, 0], [1, 1]], 0.667)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["confusion_matrix", "PerClass", "per_class", "accuracy", "macro_f1", "weighted_f1",
           "binary_f1", "most_confused", "Calibration", "calibration", "check_predictions",
           "fit_temperature", "with_temperature"]


def check_predictions(labels, proba, classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """(labels as int64 (N,), probabilities as float64 (N, classes)), or a ValueError that
    names what is wrong."""
    labels = np.asarray(labels)
    proba = np.asarray(proba, dtype=np.float64)
    if labels.ndim != 1 or proba.ndim != 2 or len(labels) != len(proba):
        raise ValueError(f"expected labels (N,) and probabilities (N, classes) for the same N, "
                         f"got shapes {labels.shape} and {proba.shape}")
    if len(labels) == 0:
        raise ValueError("no predictions: the split holds no images")
    if proba.shape[1] != classes:
        raise ValueError(f"probabilities have {proba.shape[1]} columns for {classes} classes")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must be in [0, {classes}), got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64), proba


def confusion_matrix(true, predicted, *, classes: int) -> np.ndarray:
    """Counts (classes x classes), int64: row = true class, column = predicted class."""
    true, predicted = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    return np.bincount(true * classes + predicted,
                       minlength=classes * classes).reshape(classes, classes)


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom, 0 where bottom is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(len(top), np.float64)
    np.divide(top, bottom, out=out, where=bottom > 0)
    return out


@dataclass(frozen=True)
class PerClass:
    """Per-class figures, each an array in class order.

    Attributes:
        precision, recall, f1: floats in [0, 1].
        support: images of each true class.
        predicted: images predicted as each class.
        undefined: {class index: why} for classes whose precision (never predicted) or recall
            (never in the truth) is 0 by convention rather than measured.
    """
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    predicted: np.ndarray
    undefined: Dict[int, str]

    def rows(self, names: Sequence[str]) -> List[Dict[str, object]]:
        """One dict per class: class, precision, recall, f1, support, predicted, note."""
        return [{"class": str(name), "precision": float(self.precision[i]),
                 "recall": float(self.recall[i]), "f1": float(self.f1[i]),
                 "support": int(self.support[i]), "predicted": int(self.predicted[i]),
                 "note": self.undefined.get(i, "")} for i, name in enumerate(names)]


def per_class(cm: np.ndarray) -> PerClass:
    """Precision, recall, F1 and support of every class from a confusion matrix."""
    cm = np.asarray(cm, np.int64)
    hits = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _ratio(hits, predicted), _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    undefined = {}
    for i in range(len(cm)):
        why = [w for w, empty in (("never in the truth: recall and F1 are 0 by convention",
                                   support[i] == 0),
                                  ("never predicted: precision is 0 by convention",
                                   predicted[i] == 0)) if empty]
        if why:
            undefined[i] = "; ".join(why)
    return PerClass(precision, recall, f1, support, predicted, undefined)


def accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(1, np.sum(cm)))


def macro_f1(cm: np.ndarray) -> float:
    """The unweighted mean of the per-class F1 over every class of the model (classes absent
    from both truth and predictions count as 0, as scikit-learn does with ``labels=``)."""
    return float(per_class(cm).f1.mean())


def weighted_f1(cm: np.ndarray) -> float:
    """Per-class F1 weighted by support."""
    figures = per_class(cm)
    total = figures.support.sum()
    return float((figures.f1 * figures.support).sum() / total) if total else 0.0


def binary_f1(cm: np.ndarray, positive: int) -> float:
    """The F1 of class ``positive`` (scikit-learn's ``average='binary'``, ``pos_label``)."""
    return float(per_class(cm).f1[positive])


def most_confused(cm: np.ndarray, names: Sequence[str], *, min_count: int = 1
                  ) -> List[Tuple[str, str, int]]:
    """(true class, predicted as, count) of every off-diagonal cell with at least
    ``min_count`` images, most first (fastai's ``most_confused(min_val)``)."""
    pairs = [(str(names[t]), str(names[p]), int(cm[t, p]))
             for t in range(len(cm)) for p in range(len(cm))
             if t != p and cm[t, p] >= min_count]
    return sorted(pairs, key=lambda x: (-x[2], x[0], x[1]))


@dataclass(frozen=True)
class Calibration:
    """How sure the model is against how often it is right.

    Attributes:
        ece: expected calibration error: the mean over images of |confidence - accuracy| of
            the bin they fall in (Guo et al. 2017), in [0, 1].
        bins: the upper edges of the equal-width confidence bins.
        confidence, accuracy: mean top-1 confidence and accuracy per bin (NaN: empty bin).
        count: images per bin.
    """
    ece: float
    bins: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    def to_dict(self) -> dict:
        """Strict-JSON data (empty bins as null)."""
        def listed(values):
            return [None if np.isnan(v) else float(v) for v in values]
        return {"ece": self.ece, "bin_upper_edges": [float(b) for b in self.bins],
                "confidence": listed(self.confidence), "accuracy": listed(self.accuracy),
                "count": [int(c) for c in self.count]}


def calibration(labels, proba, *, bins: int = 15) -> Calibration:
    """Expected calibration error and the reliability curve of top-1 predictions, over
    ``bins`` equal-width bins of confidence (15, as Guo et al.)."""
    labels, proba = np.asarray(labels), np.asarray(proba, np.float64)
    confidence = proba.max(axis=1)
    right = (proba.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    # bin i holds confidences in (edges[i], edges[i+1]]; a confidence of 0 goes to bin 0
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(which, confidence, minlength=bins) / count
        mean_acc = np.bincount(which, right, minlength=bins) / count
    gaps = np.where(count > 0, np.abs(np.nan_to_num(mean_conf) - np.nan_to_num(mean_acc)), 0)
    ece = float((gaps * count).sum() / max(1, len(labels)))
    return Calibration(ece, edges[1:], mean_conf, mean_acc, count)


def with_temperature(proba, temperature: float) -> np.ndarray:
    """Probabilities with their logits divided by ``temperature`` (> 1: less sure): the
    ranking, so every prediction and accuracy figure, stays the same."""
    logits = np.log(np.clip(np.asarray(proba, np.float64), 1e-300, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(labels, proba, *, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature that minimises the cross-entropy of ``proba`` on ``labels`` (Guo et
    al.'s temperature scaling; fit it on validation photos, apply it to new ones): golden
    section search over log T, to 1e-6 of log T."""
    labels = np.asarray(labels, np.int64)

    def nll(log_t):
        p = with_temperature(proba, float(np.exp(log_t)))[np.arange(len(labels)), labels]
        return -np.log(np.clip(p, 1e-300, 1.0)).mean()
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    while b - a > 1e-6:
        if nll(c) < nll(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return float(np.exp((a + b) / 2))
