"""Why the model says what it says: `interpret` predicts a labelled set once and keeps the
predictions, from which every figure is computed (fastai's ``ClassificationInterpretation``).

    >>> result = gluonft.interpret("model", "../shared/data/clothing-small", split="test")
    >>> result.accuracy, result.macro_f1                              # doctest: +SKIP
    (0.884, 0.879)
    >>> result.most_confused(min_count=3)                             # doctest: +SKIP
    [('shirt', 't-shirt', 7), ...]
    >>> result.top_losses(4)[0]["file"]                               # doctest: +SKIP
    'test/shirt/0f1c...jpg'

The figures are scikit-learn's definitions (`gluonft.metrics`); `gluonft.evaluation_report`
writes them to a folder (JSON, CSV, figures, one HTML page).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import metrics
from .backbones import TransferNet
from .datasets.decode import load_images
from .datasets.folder import list_images, split_folders
from .datasets.imageset import ImageSet
from .datasets.table import match_files, read_labels
from .devices import contexts_of
from .intervals import wilson_interval
from .model_io import Classifier, load_classifier
from .predict import members_of, predict_images, predict_proba, predict_proba_tta

__all__ = ["interpret", "Interpretation", "SPLITS"]

PathLike = Union[str, "os.PathLike[str]"]
SPLITS = ("test", "validation", "train", "all")


@dataclass(frozen=True)
class Interpretation:
    """The predictions of one model on one labelled set, and what they show.

    Attributes:
        classes: the model's class names; ``labels`` index them (true class per image).
        probabilities: (N, classes) float64, the model's output for each image.
        files: each image's file (relative to the data folder), or ``image i`` for arrays.
        split, tta, source, model: what was predicted, how, from where, by what.
        skipped: files that did not decode (left out).
        root: the folder ``files`` are relative to ("" for arrays).
    """
    classes: Tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray
    files: Tuple[str, ...]
    split: str = "test"
    tta: bool = False
    source: str = ""
    model: str = ""
    skipped: Tuple[str, ...] = ()
    root: str = ""

    def __post_init__(self):
        labels, proba = metrics.check_predictions(self.labels, self.probabilities,
                                                  len(self.classes))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "probabilities", proba)
        present = np.unique(labels)
        if len(present) < 2:
            raise ValueError(f"the {self.split} split holds photos of one class only "
                             f"({self.classes[present[0]]!r}): precision, recall and the "
                             f"confusion between classes need photos of at least two")
        if len(self.files) != len(labels):
            raise ValueError(f"{len(self.files)} file names for {len(labels)} predictions")

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """Counts, rows = true class, columns = predicted class, in the model's class order."""
        return metrics.confusion_matrix(self.labels, self.predicted, classes=len(self.classes))

    @property
    def per_class(self) -> List[Dict[str, object]]:
        """Per class: precision, recall, F1, support, predicted count, and a note when a
        figure is 0 by convention (a class never predicted, or absent from the truth)."""
        return metrics.per_class(self.confusion_matrix).rows(self.classes)

    @property
    def accuracy(self) -> float:
        return metrics.accuracy(self.confusion_matrix)

    @property
    def macro_f1(self) -> float:
        return metrics.macro_f1(self.confusion_matrix)

    @property
    def weighted_f1(self) -> float:
        return metrics.weighted_f1(self.confusion_matrix)

    def f1(self, positive: Union[str, int]) -> float:
        """The binary F1 of class ``positive`` (a name or an index) of a two-class model, as a
        competition graded by F1 computes it (e.g. ``positive="hot_dog"``)."""
        if len(self.classes) != 2:
            raise ValueError(f"f1(positive) is the binary F1 of a two-class model; this one "
                             f"has {len(self.classes)} classes: see per_class or macro_f1")
        index = self._class_index(positive)
        return metrics.binary_f1(self.confusion_matrix, index)

    def _class_index(self, name: Union[str, int]) -> int:
        if isinstance(name, str):
            if name not in self.classes:
                raise ValueError(f"{name!r} is not a class: {list(self.classes)}")
            return self.classes.index(name)
        if isinstance(name, bool) or not isinstance(name, (int, np.integer)) \
                or not 0 <= name < len(self.classes):
            raise ValueError(f"expected a class name or an index in [0, {len(self.classes)}), "
                             f"got {name!r}")
        return int(name)

    def most_confused(self, min_count: int = 1) -> List[Tuple[str, str, int]]:
        """(true class, predicted as, count) for every confusion seen ``min_count`` times or
        more, most first."""
        return metrics.most_confused(self.confusion_matrix, self.classes, min_count=min_count)

    @property
    def losses(self) -> np.ndarray:
        """Each image's cross-entropy loss, -ln p(true class)."""
        p = self.probabilities[np.arange(len(self.labels)), self.labels]
        return -np.log(np.clip(p, 1e-12, 1.0))

    def top_losses(self, k: int = 9) -> List[Dict[str, object]]:
        """The ``k`` images with the highest loss (mislabelled photos are usually among them):
        file, true class, predicted class, its probability, the true class's, and the loss."""
        order = np.argsort(-self.losses, kind="stable")[:max(0, int(k))]
        return [self._row(int(i)) for i in order]

    def _row(self, i: int) -> Dict[str, object]:
        predicted = int(self.predicted[i])
        return {"file": self.files[i], "index": i, "true": self.classes[self.labels[i]],
                "predicted": self.classes[predicted],
                "probability": float(self.probabilities[i, predicted]),
                "true_probability": float(self.probabilities[i, self.labels[i]]),
                "loss": float(self.losses[i])}

    def predictions(self) -> List[Dict[str, object]]:
        """One row per image, in order (what predictions.csv holds)."""
        return [self._row(i) for i in range(len(self.labels))]

    def calibration(self, bins: int = 15) -> metrics.Calibration:
        """Expected calibration error and the reliability curve (`gluonft.metrics`)."""
        return metrics.calibration(self.labels, self.probabilities, bins=bins)

    def temperature(self) -> float:
        """The temperature scaling that makes these predictions best calibrated (minimum
        cross-entropy; `gluonft.metrics.fit_temperature`): fit it on validation photos and
        pass it to `with_temperature` of the test photos' interpretation."""
        return metrics.fit_temperature(self.labels, self.probabilities)

    def with_temperature(self, temperature: float) -> "Interpretation":
        """The same predictions with their logits divided by ``temperature``: the same
        classes, accuracy and confusion matrix; other confidences, losses and calibration."""
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        return dataclasses.replace(self, probabilities=metrics.with_temperature(
            self.probabilities, float(temperature)))

    def summary(self) -> Dict[str, object]:
        """The figures an experiment record keeps (strict JSON): classes, confusion matrix,
        per class, accuracy, macro/weighted F1, binary F1 for two classes, ECE, count."""
        data = {"count": int(len(self.labels)), "classes": list(self.classes),
                "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "weighted_f1": self.weighted_f1, "ece": self.calibration().ece,
                "confusion_matrix": self.confusion_matrix.tolist(),
                "per_class": self.per_class}
        if len(self.classes) == 2:
            data["binary_f1"] = {c: self.f1(c) for c in self.classes}
        return data

    def to_dict(self) -> Dict[str, object]:
        """The figures as strict-JSON data (what metrics.json holds): `summary` and what was
        predicted, the accuracy's Wilson interval, the loss, the most-confused pairs, the
        reliability curve."""
        low, high = wilson_interval(self.accuracy, len(self.labels))
        return {"model": self.model, "source": self.source, "root": self.root,
                "split": self.split, "tta": self.tta, **self.summary(),
                "accuracy_interval_95": [low, high], "loss": float(self.losses.mean()),
                "most_confused": [list(p) for p in self.most_confused()],
                "calibration": self.calibration().to_dict(), "skipped": list(self.skipped)}


def _classifier_parts(model):
    """(members, the first member, a name) of a model folder, Classifier or Ensemble."""
    if isinstance(model, (str, os.PathLike)):
        model = load_classifier(model)
    members = members_of(model)
    first = members[0]
    name = first.backbone if isinstance(model, Classifier) else \
        "ensemble of " + ", ".join(m.backbone for m in members)
    return model, first, name


def _folder_files(root: Path, split: str, classes: Sequence[str]) -> Tuple[List[Path], List[int],
                                                                           str]:
    """(files, labels, source) of the class folders of ``split`` under ``root``."""
    splits = split_folders(root)
    if split == "all" or splits is None:
        if split != "all":
            raise ValueError(f"{root} has no train/ validation/ test/ folders; pass "
                             f"split='all' to take its class folders whole")
        folder = root
    elif split not in splits:
        raise ValueError(f"{root} has no {split} folder (it has "
                         f"{', '.join(s + '/' for s in splits)}); choose one of those")
    else:
        folder = splits[split]
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise ValueError(f"{folder} has class folders the model does not know: {unknown}; "
                         f"the model's classes are {list(classes)}")
    files, labels = [], []
    for name in found:
        photos = list_images(folder / name)
        files += photos
        labels += [classes.index(name)] * len(photos)
    return files, labels, str(folder)


def _table_files(table: PathLike, images: Path, classes: Sequence[str], labels_of_model
                 ) -> Tuple[List[Path], List[int], str]:
    """(files, labels, source) of a labels table over ``images``, matched to the model's classes
    (by the model's original labels when it was trained from a table, else by class name)."""
    rows = read_labels(table)
    known = [str(x) for x in (labels_of_model or classes)]
    found, missing, _ = match_files(list(rows.rows), images)
    if missing:
        raise ValueError(f"{len(missing)} file(s) of {table} are not in {images}: "
                         f"{', '.join(missing[:5])}")
    files, labels = [], []
    for name, path in found.items():
        label = str(rows.rows[name])
        if label not in known:
            raise ValueError(f"{table}: {name} has the label {label!r}, which is not one of the "
                             f"model's: {known}")
        files.append(path)
        labels.append(known.index(label))
    return files, labels, f"{table} over {images}"


def interpret(model, data, *, split: str = "test", labels: Optional[PathLike] = None,
              tta: bool = False, image_size: Optional[int] = None,
              batch_size: int = 64) -> Interpretation:
    """Predict a labelled set once and keep the predictions for the figures.

    Args:
        model: a model folder, a `Classifier`, an `Ensemble`, or a `TransferNet` (with an
            `ImageSet` as ``data``; ``image_size`` default the family's).
        data: a photo folder (class folders, or ``train/ validation/ test/`` of class folders),
            the image folder of a labels table (with ``labels``), or an `ImageSet`.
        split: ``"test"``, ``"validation"``, ``"train"``, or ``"all"`` (class folders taken
            whole; always so with ``labels``).
        labels: a CSV labelling the images of ``data`` (as `gluonft.datasets.labelled_images`
            reads it).
        tta: average each prediction with the mirrored image's.

    Returns:
        An `Interpretation`.

    Raises:
        ValueError: an unknown split, classes the model does not know, an empty split or one
            with a single class.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if isinstance(model, TransferNet):
        if not isinstance(data, ImageSet):
            raise ValueError("a TransferNet is interpreted on an ImageSet; for photo folders "
                             "pass a Classifier or a model folder")
        return _on_imageset(model, data, split=split, tta=tta, image_size=image_size,
                            batch_size=batch_size)
    model, first, name = _classifier_parts(model)
    if isinstance(data, ImageSet):
        if tuple(data.classes) != tuple(first.classes):
            raise ValueError(f"the data's classes {list(data.classes)} differ from the model's "
                             f"{list(first.classes)}")
        proba = predict_images(model, data.images, tta=tta)
        return Interpretation(first.classes, data.labels, proba,
                              tuple(f"image {i}" for i in range(len(data))), split, tta,
                              data.source, name)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ValueError(f"{data}: no such folder (expected class folders, train/ validation/ "
                         f"test/ folders, or the image folder of a labels table)")
    if labels is not None:
        files, truth, source = _table_files(labels, root, first.classes, first.labels)
        split = "all"
    else:
        files, truth, source = _folder_files(root, split, first.classes)
    if not files:
        raise ValueError(f"no image files in {source}")
    images, kept, skipped = load_images(files, size=first.stored_size, fit=first.fit)
    if not kept:
        raise ValueError(f"none of the {len(files)} files of {source} decodes")
    proba = predict_images(model, images, tta=tta)
    names = tuple(Path(files[i]).relative_to(root).as_posix() for i in kept)
    return Interpretation(first.classes, np.array([truth[i] for i in kept]), proba, names,
                          split, tta, source, name, tuple(skipped), str(root))


def _on_imageset(net: TransferNet, data: ImageSet, *, split, tta, image_size, batch_size):
    size = image_size or net.family.input_size
    ctx = contexts_of(net)
    proba = (predict_proba_tta(net, data, views="flip", ctx=ctx, image_size=size,
                               batch_size=batch_size) if tta
             else predict_proba(net, data, ctx=ctx, image_size=size, batch_size=batch_size))
    classes = tuple(data.classes) + tuple(str(i) for i in range(len(data.classes), net.classes))
    return Interpretation(classes, data.labels, proba,
                          tuple(f"image {i}" for i in range(len(data))), split, tta,
                          data.source, net.backbone)
