"""Figures of a grid's results, returned as `matplotlib.figure.Figure` objects.

Nothing here touches pyplot's global state (no current figure, no backend switch): each
function builds its own `Figure` on the Agg canvas and returns it, so figures can be saved,
inspected in tests, or shown in a notebook (a `Figure` displays itself) without side effects.

    >>> fig = accuracy_chart(accuracy_bars(records))
    >>> save_figure(fig, "accuracy.png")
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from .fileio import atomic_write
from .regimes import REGIME_INFO, regime_colour, regime_title
from .results import indistinguishable

# The regimes' colours, by name (the table lives in gluonft.regimes).
REGIME_COLOURS: Dict[str, str] = {name: info.colour for name, info in REGIME_INFO.items()}

__all__ = ["accuracy_chart", "overlap_note", "curves_figure", "save_figure", "regime_colour",
           "BASELINE_STYLE", "REGIME_COLOURS", "new_figure", "image_strip"]

# Transfer bars are coloured by regime (`gluonft.regimes.regime_colour`); the baseline is grey
# and hatched so it stands apart in colour, in texture (also in greyscale print) and in the
# legend.
BASELINE_STYLE: Dict[str, object] = {"color": "#9e9e9e", "hatch": "//", "edgecolor": "#424242"}


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on a canvas of its own (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # a canvas of its own: savefig works without pyplot
    return fig


def _bar_label(bar: Mapping) -> str:
    if bar["kind"] == "baseline":
        what = "recorded result" if bar["status"] == "recorded" else "baseline, from scratch"
    else:
        what = regime_title(str(bar["regime"]))
    pretraining = None
    if bar["kind"] != "baseline" and bar.get("pretrained_on"):
        # Where the weights came from is part of what the bar is: CIFAR-10-pretrained nets on
        # CIFAR-10 are not transfer, and must not read as if they were.
        pretraining = {"imagenet": "ImageNet weights", "cifar10": "CIFAR-10: no transfer",
                       "random": "random init"}.get(bar["pretrained_on"], bar["pretrained_on"])
    details = [f"{bar['image_size']}px" if bar.get("image_size") else None,
               f"{bar['epochs']} ep" if bar.get("epochs") else None]
    details = " · ".join(d for d in details if d)
    return "\n".join(x for x in (str(bar["label"]), what, pretraining, details) if x)


def accuracy_chart(bars: Sequence[Mapping], *, title: Optional[str] = None,
                   ylabel: str = "test accuracy") -> Figure:
    """A bar per configuration: test accuracy, mean and error bar when seeds repeat.

    Args:
        bars: entries of `gluonft.results.accuracy_bars` (label, kind, regime, status, mean,
            std, n, ...). Baseline entries (``kind == "baseline"``) are drawn grey and hatched
            and named in the legend; a failed configuration keeps its place on the axis, with
            "failed" written there and no bar.
        title: the figure title.
        ylabel: the y-axis label.

    Returns:
        A `Figure` with one Axes; ``fig.axes[0].patches`` holds exactly one bar per
        configuration that has an accuracy.

    Example:
        >>> fig = accuracy_chart(accuracy_bars(read_results("results.json")))
        >>> len(fig.axes[0].patches)
        9
    """
    bars = list(bars)
    if not bars:
        raise ValueError("accuracy_chart needs at least one entry of accuracy_bars(records)")
    fig = new_figure(max(6.0, 1.5 * len(bars) + 2.0), 5.0)
    ax = fig.add_subplot(1, 1, 1)
    legend: Dict[str, Patch] = {}
    top = 0.0
    for x, bar in enumerate(bars):
        if bar["mean"] is None:
            ax.text(x, 0.02, "failed", ha="center", va="bottom", rotation=90, color="#c62828",
                    fontsize=9)
            continue
        mean, std = float(bar["mean"]), bar.get("std")
        low, high = bar.get("low"), bar.get("high")
        if low is None and std is not None:  # entries made without the interval fields
            low, high = mean - std, mean + std
        if bar["kind"] == "baseline":
            style = dict(BASELINE_STYLE)
            name = f"baseline: {bar['label']}" + (" (recorded)" if bar["status"] == "recorded"
                                                  else "")
        else:
            style = {"color": regime_colour(str(bar["regime"])), "edgecolor": "#212121"}
            name = regime_title(str(bar["regime"]))
        # The error bar: a 95 % interval (one run: Wilson's on the test images; several
        # seeds: of their mean, seeds' spread and the test images' noise combined).
        yerr = None if low is None else [[mean - low], [high - mean]]
        ax.bar(x, mean, width=0.7, linewidth=0.8, yerr=yerr, capsize=6 if yerr else 0,
               error_kw={"elinewidth": 1.2, "ecolor": "#212121"}, **style)
        legend.setdefault(name, Patch(facecolor=style["color"], edgecolor=style["edgecolor"],
                                      hatch=style.get("hatch"), label=name))
        text = f"{100 * mean:.1f}%"
        if std is not None:
            text = f"{100 * mean:.1f}±{100 * std:.1f}%\nmean of {bar['n']}"
        elif bar.get("n", 1) > 1:
            text += f"\nmean of {bar['n']}"
        elif low is not None:
            text += f"\n[{100 * low:.0f}-{100 * high:.0f}]"
        head = high if high is not None else mean
        ax.text(x, head + 0.01, text, ha="center", va="bottom", fontsize=8)
        top = max(top, head)
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([_bar_label(b) for b in bars], fontsize=8)
    ax.set_xlim(-0.6, len(bars) - 0.4)
    ax.set_ylim(0.0, min(1.12, max(0.1, top) + 0.12))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(handles=list(legend.values()), fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), frameon=False)
    note = overlap_note(bars)
    if note:
        fig.text(0.01, 0.005, note, fontsize=8, color="#5f6b76", ha="left", va="bottom",
                 wrap=True)
    fig.tight_layout(rect=(0, 0.06 if note else 0, 1, 1))
    return fig


def overlap_note(bars: Sequence[Mapping], *, limit: int = 6) -> Optional[str]:
    """The note under the chart: which bars' intervals overlap (None when none do).

    Example:
        >>> overlap_note(accuracy_bars(records))
        'Error bars: 95 % intervals of the test accuracy on 1017 test images ...'
    """
    pairs = indistinguishable(bars)
    if not pairs:
        return None
    counts = sorted({int(b["test_count"]) for b in bars if b.get("test_count")})
    on = f" on {counts[0]} test images" if len(counts) == 1 else ""
    names = [" ".join(_bar_label(b).split("\n")[:2]) for b in bars]
    shown = [f"{names[i]} ~ {names[j]}" for i, j in pairs[:limit]]
    more = f"; and {len(pairs) - limit} more pairs" if len(pairs) > limit else ""
    return (f"Error bars: 95 % intervals of the test accuracy{on} (one run: Wilson's; "
            f"several seeds: of their mean, the spread over seeds and the test images' "
            f"sampling noise combined). Overlapping, so not shown different by this "
            f"measurement: " + "; ".join(shown) + more)


def curves_figure(history: Sequence[Mapping[str, float]], *, title: Optional[str] = None,
                  test_accuracy: Optional[float] = None) -> Figure:
    """Accuracy and loss per epoch (train and, when present, validation) side by side.

    Args:
        history: `History.epochs` (dicts with ``epoch``, ``train_acc``, ``train_loss`` and
            optionally ``val_acc``, ``val_loss``).
        title: the figure title (e.g. the experiment id).
        test_accuracy: drawn as a star after the last epoch.

    Returns:
        A `Figure` with two Axes: accuracy, then loss.

    Example:
        >>> save_figure(curves_figure(history.epochs, title="mobilenet0.75-head-s0"), "c.png")
    """
    history = list(history)
    if not history:
        raise ValueError("curves_figure needs at least one epoch of history")
    epochs = [row["epoch"] for row in history]
    fig = new_figure(10.0, 4.0)
    for index, (metric, name) in enumerate((("acc", "accuracy"), ("loss", "loss"))):
        ax = fig.add_subplot(1, 2, index + 1)
        for split, style in (("train", "-o"), ("val", "--s")):
            values = [row.get(f"{split}_{metric}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=split, markersize=4)
        if metric == "acc":
            if test_accuracy is not None:
                # Just right of the last epoch, so it does not hide the last val point.
                ax.plot([epochs[-1] + 0.25], [test_accuracy], "*", markersize=12,
                        color="#d62728",
                        label=f"test {100 * test_accuracy:.1f}%")
            ax.set_ylim(0.0, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_strip(images, captions: Sequence[str], *, title: Optional[str] = None) -> Figure:
    """A row of images (uint8 N x H x W x 3) with a caption under each."""
    n = len(images)
    fig = new_figure(1.6 * n, 2.1)
    for i, (image, caption) in enumerate(zip(images, captions)):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str, *, dpi: int = 120) -> str:
    """Save ``fig`` to ``path`` atomically, in the format of its extension (png, svg, pdf).

    Returns:
        ``path``.

    Example:
        >>> save_figure(accuracy_chart(bars), "out/accuracy.svg")
        'out/accuracy.svg'
    """
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if ext not in ("png", "svg", "pdf"):
        raise ValueError(f"save_figure: cannot tell the format of {path!r}; expected a .png, "
                         f".svg or .pdf path")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext, dpi=dpi,
                                                      bbox_inches="tight"))
