"""An evaluation written to a folder, data first and pictures second: what
``python -m gluonft evaluate MODEL DATA --report DIR`` writes.

    metrics.json         the figures (strict JSON): accuracy and its interval, macro/weighted
                         F1, per class, the confusion matrix, the most-confused pairs,
                         calibration
    per_class.csv        precision, recall, F1, support per class
    predictions.csv      one row per photo: file, true, predicted, probabilities, loss
    confusion.png/.svg   the confusion matrix (row shares coloured, counts written)
    reliability.png/.svg the reliability diagram (ECE)
    top_losses.png/.svg  the highest-loss photos with their Grad-CAM overlays (for the true
                         and the predicted class)
    report.html          one self-contained page of all of it

Every file is written atomically; the page is rendered from the same data as the files.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, List, Optional

from .figures import confusion_figure, gallery_figure, reliability_figure
from .fileio import atomic_write_csv, atomic_write_json, atomic_write_text
from .gradcam import grad_cam, overlay
from .interpretation import Interpretation
from .model_io import load_classifier
from .pages import data_uri, render
from .plots import save_figure

__all__ = ["write_evaluation_report", "REPORT_FILES"]

REPORT_FILES = ("metrics.json", "per_class.csv", "predictions.csv", "confusion.png",
                "confusion.svg", "reliability.png", "reliability.svg", "top_losses.png",
                "top_losses.svg", "report.html")
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support", "predicted", "note")
PREDICTION_COLUMNS = ("file", "true", "predicted", "probability", "true_probability", "loss")
# The top-loss photos shown in the gallery, each with two overlays (true, predicted class).
TOP_LOSSES = 6


def _png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _top_loss_items(result: Interpretation, model, k: int) -> List[tuple]:
    """(image, caption) pairs of the gallery: each top-loss photo with the CAM of its true
    class and of the predicted one (none without a model, or for images without files)."""
    rows = [r for r in result.top_losses(k)
            if model is not None and result.root and (Path(result.root) / r["file"]).is_file()]
    if not rows:
        return []
    paths = [Path(result.root) / r["file"] for r in rows]
    cams = {key: grad_cam(model, paths, target=[r[key] for r in rows])
            for key in ("true", "predicted")}
    items = []
    for i, row in enumerate(rows):
        name = Path(row["file"]).name
        name = name if len(name) <= 24 else name[:10] + "..." + name[-10:]
        caption = (f"{name}\ntrue {row['true']} ({row['true_probability']:.2f}), "
                   f"predicted {row['predicted']} ({row['probability']:.2f})")
        for key in ("true", "predicted"):
            picture = overlay(cams[key].photos[i], cams[key].heatmaps[i])
            items.append((picture, f"{caption}\nwhere it sees {row[key]}"))
    return items


def write_evaluation_report(result: Interpretation, folder, *, model=None,
                            top_losses: int = TOP_LOSSES,
                            title: Optional[str] = None) -> Dict[str, str]:
    """Write the evaluation of ``result`` into ``folder`` (created); returns {file: path}.

    Args:
        result: an `Interpretation` (`gluonft.interpret`).
        folder: where to write (existing files of the report are replaced).
        model: the model that made the predictions (a `Classifier` or model folder), for the
            Grad-CAM overlays of the top-loss photos; None: the gallery has no overlays.
        top_losses: how many of the highest-loss photos the gallery shows.
        title: the page's title; default "Evaluation of <model> on <split>".
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, (str, os.PathLike)):
        model = load_classifier(model)
    written: Dict[str, str] = {}
    data = result.to_dict()
    written["metrics.json"] = atomic_write_json(folder / "metrics.json", data)
    written["per_class.csv"] = atomic_write_csv(folder / "per_class.csv", result.per_class,
                                                PER_CLASS_COLUMNS)
    rows = result.predictions()
    for row, p in zip(rows, result.probabilities):
        row.update({f"p_{c}": float(v) for c, v in zip(result.classes, p)})
    written["predictions.csv"] = atomic_write_csv(
        folder / "predictions.csv", rows,
        PREDICTION_COLUMNS + tuple(f"p_{c}" for c in result.classes))
    title = title or f"Evaluation of {result.model or 'the model'} on {result.split}"
    figures = {"confusion": confusion_figure(result.confusion_matrix, result.classes),
               "reliability": reliability_figure(result.calibration())}
    items = _top_loss_items(result, model, top_losses)
    if items:
        figures["top_losses"] = gallery_figure(
            items, columns=2 if len(items) <= 4 else 4,
            title="The highest-loss photos: where the model sees the true class, and the class "
                  "it predicted")
    pictures = {}
    for name, fig in figures.items():
        for ext in ("png", "svg"):
            written[f"{name}.{ext}"] = save_figure(fig, str(folder / f"{name}.{ext}"))
        pictures[name] = data_uri("image/png", _png_bytes(fig))
    page = render("evaluation.html", title=title, metrics=data, pictures=pictures,
                  top=result.top_losses(max(top_losses, 12)),
                  confused=result.most_confused(min_count=2)[:15],
                  ece=result.calibration().ece, count=len(result.labels),
                  files=[name for name in written])
    written["report.html"] = atomic_write_text(folder / "report.html", page)
    return {name: os.fspath(path) for name, path in written.items()}
