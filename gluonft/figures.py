"""Figures of an `Interpretation`: the confusion matrix, the reliability diagram and a gallery
of photos (the top losses with their Grad-CAM overlays). Each function returns a matplotlib
`Figure` of its own (no pyplot state, as `gluonft.plots`); `gluonft.plots.save_figure` writes it.

    >>> fig = confusion_figure(result.confusion_matrix, result.classes)  # doctest: +SKIP
    >>> save_figure(fig, "confusion.png")                                  # doctest: +SKIP
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from .metrics import Calibration
from .plots import new_figure

__all__ = ["confusion_figure", "confused_block", "reliability_figure", "gallery_figure",
           "MAX_MATRIX_CLASSES"]

# Above this many classes the cells of a whole matrix are too small to read: the figure shows
# the block of the classes involved in the most confusions instead (and says so).
MAX_MATRIX_CLASSES = 30


def confused_block(cm: np.ndarray, limit: int = MAX_MATRIX_CLASSES) -> List[int]:
    """The indices of at most ``limit`` classes to show: those with the most errors, made or
    received, in class order."""
    cm = np.asarray(cm)
    if len(cm) <= limit:
        return list(range(len(cm)))
    off = cm - np.diag(np.diag(cm))
    involvement = off.sum(axis=0) + off.sum(axis=1)
    chosen = np.argsort(-involvement, kind="stable")[:limit]
    return sorted(int(i) for i in chosen)


def confusion_figure(cm: np.ndarray, classes: Sequence[str], *, title: Optional[str] = None,
                     limit: int = MAX_MATRIX_CLASSES) -> Figure:
    """The confusion matrix: colours are each row's share (recall on the diagonal), the cells
    say the counts; rows are true classes, columns predictions."""
    cm = np.asarray(cm, np.int64)
    shown = confused_block(cm, limit)
    block = cm[np.ix_(shown, shown)]
    names = [str(classes[i]) for i in shown]
    rows = cm[shown].sum(axis=1, keepdims=True)  # shares of the whole row, not of the block
    share = np.divide(block, rows, out=np.zeros(block.shape, np.float64), where=rows > 0)
    n = len(shown)
    side = min(22.0, max(4.5, 0.42 * n + 2.4))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the true class's photos")
    ax.set_xticks(range(n), names, rotation=60 if n > 6 else 0, ha="right" if n > 6 else "center",
                  fontsize=9 if n <= 20 else 7)
    ax.set_yticks(range(n), names, fontsize=9 if n <= 20 else 7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 40:
        for (t, p), count in np.ndenumerate(block):
            if count:
                ax.text(p, t, str(count), ha="center", va="center",
                        fontsize=9 if n <= 15 else 6,
                        color="white" if share[t, p] > 0.55 else "#1d2125")
    heading = title or "Confusion matrix"
    if n < len(cm):
        heading += f"\nthe {n} classes with the most confusions, of {len(cm)}"
    ax.set_title(heading, fontsize=11)
    fig.tight_layout()
    return fig


def reliability_figure(calibration: Calibration, *, title: Optional[str] = None) -> Figure:
    """Accuracy against confidence per bin (a calibrated model is on the diagonal), with the
    number of photos per bin below; the expected calibration error in the title."""
    fig = new_figure(5.2, 5.6)
    top = fig.add_axes((0.13, 0.36, 0.82, 0.56))
    bottom = fig.add_axes((0.13, 0.09, 0.82, 0.18), sharex=top)
    edges = np.concatenate([[0.0], calibration.bins])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    filled = calibration.count > 0
    top.plot([0, 1], [0, 1], ls="--", color="#7a7a7a", lw=1, label="perfect calibration")
    accuracy, confidence = calibration.accuracy[filled], calibration.confidence[filled]
    top.bar(centres[filled], accuracy, width=width[filled] * 0.92, color="#1f5fa8", alpha=0.85,
            label="accuracy of the bin")
    # Guo et al.'s picture: the gap from the bin's accuracy to its mean confidence (above the
    # bar: over-confident; inside it: under-confident)
    top.bar(centres[filled], confidence - accuracy, bottom=accuracy, width=width[filled] * 0.92,
            color="none", edgecolor="#b3261e", hatch="///", lw=0.8,
            label="gap to the mean confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8, frameon=False)
    top.set_title((title or "Reliability") + f"  (ECE {100 * calibration.ece:.1f} points)",
                  fontsize=11)
    bottom.bar(centres, calibration.count, width=width * 0.92, color="#9e9e9e")
    bottom.set_xlabel("confidence of the top class")
    bottom.set_ylabel("photos")
    for label in top.get_xticklabels():
        label.set_visible(False)
    return fig


def gallery_figure(items: Sequence[Tuple[np.ndarray, str]], *, title: Optional[str] = None,
                   columns: int = 4) -> Figure:
    """Photos (uint8 RGB) in a grid, each with its caption below."""
    if not items:
        raise ValueError("no photos to show")
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    fig = new_figure(3.0 * columns, 3.35 * rows + (0.4 if title else 0))
    for i, (image, caption) in enumerate(items):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(caption, fontsize=8, loc="center", wrap=True)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
