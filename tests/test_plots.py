"""gluonft.plots: figures are returned (no pyplot state), bars and labels are as documented."""
import xml.etree.ElementTree as ET

import matplotlib
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from gluonft.plots import BASELINE_STYLE, accuracy_chart, curves_figure, save_figure


def _bar(group, mean, *, kind="transfer", regime="head", status="ok", std=None, n=1,
         label=None):
    return {"group": group, "label": label or group.split("-")[0], "model": group.split("-")[0],
            "regime": regime, "kind": kind, "status": status, "mean": mean, "std": std,
            "n": n, "accuracies": [], "seeds": [], "failed": 0, "errors": [],
            "image_size": 64, "epochs": 6}


BARS = [_bar("lab1_cnn-scratch", 0.52, kind="baseline", regime="scratch", label="Lab 1 CNN"),
        _bar("mobilenet0.75-head", 0.55), _bar("mobilenet0.75-full", 0.71, regime="full"),
        _bar("resnet18_v1-head", None, status="failed")]


def _bars_of(ax):
    return [p for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]


def test_one_bar_per_configuration_with_a_value_and_failed_ones_marked():
    fig = accuracy_chart(BARS, title="grid")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 3 == len(_bars_of(ax))
    heights = [round(p.get_height(), 4) for p in _bars_of(ax)]
    assert heights == [0.52, 0.55, 0.71]
    texts = [t.get_text() for t in ax.texts]
    assert {"52.0%", "55.0%", "71.0%", "failed"} <= set(texts)
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == [
        "Lab 1 CNN", "mobilenet0.75", "mobilenet0.75", "resnet18_v1"]
    assert "head only" in ax.get_xticklabels()[1].get_text()
    assert "64px · 6 ep" in ax.get_xticklabels()[1].get_text()
    assert ax.get_title() == "grid"


def test_the_baseline_bar_differs_in_colour_hatch_and_legend():
    ax = accuracy_chart(BARS).axes[0]
    baseline, head, full = _bars_of(ax)
    assert baseline.get_hatch() == BASELINE_STYLE["hatch"]
    assert not head.get_hatch() and not full.get_hatch()
    colour = to_hex(baseline.get_facecolor())
    assert colour == BASELINE_STYLE["color"]
    assert colour not in {to_hex(head.get_facecolor()), to_hex(full.get_facecolor())}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["baseline: Lab 1 CNN", "head only", "full fine-tune"]
    recorded = accuracy_chart([_bar("baseline-recorded", 0.72, kind="baseline",
                                    status="recorded", label="Lab 1 CNN")]).axes[0]
    assert [t.get_text() for t in recorded.get_legend().get_texts()] == [
        "baseline: Lab 1 CNN (recorded)"]
    assert "recorded result" in recorded.get_xticklabels()[0].get_text()


def test_each_regime_and_each_k_gets_its_own_colour():
    bars = [_bar("m-head", 0.5), _bar("m-last_k1", 0.6, regime="last_k:1"),
            _bar("m-last_k2", 0.62, regime="last_k:2"), _bar("m-full", 0.7, regime="full"),
            _bar("m-scratch", 0.3, regime="scratch")]
    ax = accuracy_chart(bars).axes[0]
    colours = [to_hex(p.get_facecolor()) for p in _bars_of(ax)]
    assert len(set(colours)) == 5
    legend = ax.get_legend()
    assert [to_hex(h.get_facecolor()) for h in legend.legend_handles] == colours


def test_repeats_get_mean_labels_and_error_bars():
    bars = [_bar("a-head", 0.6, std=0.05, n=3), _bar("b-head", 0.7)]
    ax = accuracy_chart(bars).axes[0]
    with_err = [c for c in ax.containers if isinstance(c, BarContainer) and c.errorbar]
    assert len(with_err) == 1
    assert "60.0±5.0%\nmean of 3" in [t.get_text() for t in ax.texts]
    assert "70.0%" in [t.get_text() for t in ax.texts]


def test_no_pyplot_figure_is_created():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    accuracy_chart(BARS)
    curves_figure([{"epoch": 1, "train_acc": 0.5, "train_loss": 1.0}])
    assert plt.get_fignums() == before
    assert matplotlib.get_backend()  # untouched and still usable


def test_curves_have_accuracy_and_loss_for_train_and_val():
    history = [{"epoch": e, "train_acc": 0.1 * e, "val_acc": 0.09 * e,
                "train_loss": 2.0 / e, "val_loss": 2.1 / e} for e in (1, 2, 3)]
    fig = curves_figure(history, title="m-head-s0", test_accuracy=0.3)
    acc, loss = fig.axes
    assert acc.get_ylabel() == "accuracy" and loss.get_ylabel() == "loss"
    acc_lines = {line.get_label(): list(line.get_ydata()) for line in acc.lines}
    assert acc_lines["train"] == pytest.approx([0.1, 0.2, 0.3])
    assert acc_lines["val"] == pytest.approx([0.09, 0.18, 0.27])
    assert acc_lines["test 30.0%"] == [0.3]
    assert [line.get_label() for line in loss.lines] == ["train", "val"]
    assert fig._suptitle.get_text() == "m-head-s0"
    train_only = curves_figure([{"epoch": 1, "train_acc": 0.5, "train_loss": 1.0}])
    assert [line.get_label() for line in train_only.axes[0].lines] == ["train"]
    with pytest.raises(ValueError, match="at least one epoch"):
        curves_figure([])
    with pytest.raises(ValueError, match="at least one entry"):
        accuracy_chart([])


def test_save_figure_writes_png_and_svg_atomically(tmp_path):
    fig = accuracy_chart(BARS)
    png = save_figure(fig, str(tmp_path / "accuracy.png"))
    svg = save_figure(fig, str(tmp_path / "accuracy.svg"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(svg).getroot().tag.endswith("svg")
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "accuracy.svg"]
    with pytest.raises(ValueError, match="cannot tell the format"):
        save_figure(fig, str(tmp_path / "accuracy.bmp"))
