"""Experiment records as data: what ran, how, on what machine, and what it scored.

An `ExperimentRecord` holds everything needed to judge and reproduce one experiment (model,
regime, seed, the configuration that identifies it, initialisation, training settings, the
per-epoch history, test accuracy, parameter counts, time, device, library versions) and
round-trips through JSON. Files are written atomically (a temporary file in the same folder,
then ``os.replace``), so a run killed at any moment leaves either the old file or the new one,
never half of one.

    >>> record = ExperimentRecord(id="mobilenet0.75-head-s0", model="mobilenet0.75",
    ...                           regime="head", seed=0, test_accuracy=0.81)
    >>> write_results([record], json_path="results.json", csv_path="results.csv")
    >>> read_results("results.json")[0].test_accuracy
    0.81
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Optional, Sequence, Tuple

from .amp import active_dtype
from .cpu import cpu_model, kernels
from .fileio import atomic_write_json, atomic_write_text, library_versions
from .intervals import mean_interval, mean_std, wilson_interval
from .regimes import regime_title
from .selection import record_score, validation_accuracy

__all__ = ["ExperimentRecord", "STATUSES", "KINDS", "CSV_COLUMNS", "environment",
           "write_results", "read_results", "records_to_csv", "best_record", "model_card",
           "selection_basis", "SELECTION_NOTES", "selection_note",
           "accuracy_bars", "indistinguishable", "pretraining_title", "PRETRAINING_TITLES",
           "results_table"]

STATUSES = ("ok", "failed", "recorded")
KINDS = ("transfer", "baseline")


@dataclass(frozen=True)
class ExperimentRecord:
    """One experiment of a grid, as saved in ``results.json``.

    Attributes:
        id: stable readable name, e.g. ``"mobilenet0.75-head-s0"``; names files and resumes.
        model: backbone name (``"lab1_cnn"`` for the trained lab-1 baseline).
        regime: regime label (``"head"``, ``"last_k:2"``, ``"full"``, ``"scratch"``).
        seed: the experiment's seed (shuffling, augmentation, new layers).
        kind: ``"transfer"`` or ``"baseline"``.
        status: ``"ok"`` (trained and tested), ``"failed"`` (see ``error``) or ``"recorded"``
            (a result given by the user, nothing trained).
        label: display name (the baseline's name, e.g. ``"Lab 1 CNN"``); defaults to the model.
        group: the id without the seed: repeats of one configuration share it.
        error: one line saying why a failed experiment failed.
        traceback: the full traceback of a failure, for debugging.
        config: what identifies the experiment; a rerun with an equal config is skipped.
        test_accuracy, test_loss, test_count: the final model on the test images.
        params_total, params_trainable: parameter counts (BatchNorm statistics in the total).
        modified_layers: the layers training changed (new head, trained backbone blocks).
        plan: `Plan.to_dict()` of the regime. ``initialisation``: `WeightsSource.to_dict()`.
        training: `History.settings` (optimizer and its parameters, schedule, epochs, ...).
        history: per-epoch dicts (epoch, train/val loss and accuracy, lr, seconds, images/s).
        summary: `Summary.to_dict()`: the architecture rows and totals.
        image_size: input side used.
        train_seconds: time spent in training epochs (resumed epochs included).
        images_per_s: training throughput over all epochs.
        wall_seconds: wall time of the experiment in the run that finished it.
        resumed_from_epoch: epochs taken from a checkpoint instead of trained again (0: none).
        environment: `environment()` of the machine that finished the experiment.
        started, finished: ISO timestamps.
        test_metrics, val_metrics: the figures of `gluonft.Interpretation.summary` on the test
            and validation images (classes, confusion matrix, per class, macro/weighted F1,
            binary F1 for two classes, ECE); {} when not computed.
        pretrained_on: where the backbone's starting weights were trained: ``"imagenet"``,
            ``"cifar10"`` (the same task as CIFAR-10's grid: not transfer) or ``"random"``
            (random init, or re-initialised by ``scratch``); see `pretraining_title`.
    """
    id: str
    model: str
    regime: str
    seed: int
    kind: str = "transfer"
    status: str = "ok"
    label: str = ""
    group: str = ""
    error: Optional[str] = None
    traceback: Optional[str] = None
    config: Dict[str, object] = field(default_factory=dict)
    test_accuracy: Optional[float] = None
    test_loss: Optional[float] = None
    test_count: Optional[int] = None
    params_total: Optional[int] = None
    params_trainable: Optional[int] = None
    modified_layers: Tuple[str, ...] = ()
    plan: Dict[str, object] = field(default_factory=dict)
    initialisation: Dict[str, object] = field(default_factory=dict)
    training: Dict[str, object] = field(default_factory=dict)
    history: Tuple[Dict[str, float], ...] = ()
    summary: Dict[str, object] = field(default_factory=dict)
    image_size: Optional[int] = None
    train_seconds: Optional[float] = None
    images_per_s: Optional[float] = None
    wall_seconds: Optional[float] = None
    resumed_from_epoch: int = 0
    environment: Dict[str, object] = field(default_factory=dict)
    started: Optional[str] = None
    finished: Optional[str] = None
    pretrained_on: Optional[str] = None
    test_metrics: Dict[str, object] = field(default_factory=dict)
    val_metrics: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"record {self.id!r}: status must be one of {', '.join(STATUSES)}, "
                             f"got {self.status!r}")
        if self.kind not in KINDS:
            raise ValueError(f"record {self.id!r}: kind must be one of {', '.join(KINDS)}, got "
                             f"{self.kind!r}")
        if self.status == "failed" and not self.error:
            raise ValueError(f"record {self.id!r}: a failed record needs its reason in error=")
        if self.status != "failed" and self.test_accuracy is None:
            raise ValueError(f"record {self.id!r}: status {self.status!r} needs test_accuracy")
        # Lists from JSON become tuples, so that a record read back equals the one written.
        object.__setattr__(self, "modified_layers", tuple(self.modified_layers))
        object.__setattr__(self, "history", tuple(dict(row) for row in self.history))
        if not self.label:
            object.__setattr__(self, "label", self.model)
        if not self.group:
            suffix = f"-s{self.seed}"
            object.__setattr__(self, "group", self.id[:-len(suffix)]
                               if self.id.endswith(suffix) else self.id)

    @property
    def ok(self) -> bool:
        """True for a trained and tested experiment."""
        return self.status == "ok"

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        """The Wilson 95 % interval of the test accuracy on ``test_count`` images, or None."""
        if self.test_accuracy is None or not self.test_count:
            return None
        return wilson_interval(self.test_accuracy, self.test_count)

    def to_dict(self) -> dict:
        """JSON-ready dict of every field.

        Example:
            >>> ExperimentRecord(id="a-head-s0", model="a", regime="head", seed=0,
            ...                  test_accuracy=0.5).to_dict()["group"]
            'a-head'
        """
        out = asdict(self)
        out["modified_layers"] = list(self.modified_layers)
        out["history"] = [dict(row) for row in self.history]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentRecord":
        """The record of a `to_dict` result; unknown keys (from newer versions) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def csv_row(self) -> Dict[str, object]:
        """The flat columns of ``results.csv`` (see `CSV_COLUMNS`)."""
        training = self.training or {}
        return {
            "id": self.id, "label": self.label, "kind": self.kind, "model": self.model,
            "regime": self.regime, "pretrained_on": self.pretrained_on, "seed": self.seed,
            "status": self.status, "test_accuracy": self.test_accuracy,
            "test_ci_low": self.interval[0] if self.interval else None,
            "test_ci_high": self.interval[1] if self.interval else None,
            "test_loss": self.test_loss,
            "test_macro_f1": (self.test_metrics or {}).get("macro_f1"),
            "test_count": self.test_count, "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "modified_layers": "; ".join(self.modified_layers),
            "initialisation": (self.initialisation or {}).get("description"),
            "weights_sha1": (self.initialisation or {}).get("sha1"),
            "optimizer": training.get("optimizer"),
            "optimizer_params": json.dumps(training.get("optimizer_params"), sort_keys=True)
            if training.get("optimizer_params") is not None else None,
            "epochs": training.get("epochs"), "batch_size": training.get("batch_size"),
            "image_size": self.image_size, "train_seconds": self.train_seconds,
            "images_per_s": self.images_per_s, "resumed_from_epoch": self.resumed_from_epoch,
            "device": ",".join((self.environment or {}).get("devices", [])) or None,
            "error": self.error, "finished": self.finished,
        }


CSV_COLUMNS: Tuple[str, ...] = (
    "id", "label", "kind", "model", "regime", "pretrained_on", "seed", "status", "test_accuracy",
    "test_ci_low", "test_ci_high", "test_loss", "test_macro_f1",
    "test_count", "params_total", "params_trainable", "modified_layers", "initialisation",
    "weights_sha1", "optimizer", "optimizer_params", "epochs", "batch_size", "image_size",
    "train_seconds", "images_per_s", "resumed_from_epoch", "device", "error", "finished")


# --- the machine ---------------------------------------------------------------------------

def environment(*, devices: Optional[Sequence] = None) -> Dict[str, object]:
    """Where a result was produced: devices, host, CPU, OS, library versions and the kernels
    MXNet runs (`gluonft.cpu.kernels`: oneDNN, the CPU's instruction sets, their settings) and
    the precision it computes in (float32, or MXNet AMP's type).

    Args:
        devices: the contexts used (e.g. ``[mx.cpu()]``); stored as strings.

    Returns:
        A JSON-ready dict.

    Example:
        >>> environment(devices=[mx.cpu()])["devices"]
        ['cpu(0)']
    """
    return {
        "devices": [str(d) for d in devices] if devices is not None else [],
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": library_versions(),
        "kernels": kernels(),
        # MXNet AMP is process-wide: the type this process computes in
        "precision": active_dtype() or "float32",
    }


def records_to_csv(records: Sequence[ExperimentRecord]) -> str:
    """``results.csv`` as text: a header of `CSV_COLUMNS`, one row per record."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if v is None else v) for k, v in record.csv_row().items()})
    return buffer.getvalue()


def write_results(records: Sequence[ExperimentRecord], *, json_path: str,
                  csv_path: Optional[str] = None) -> None:
    """Write the records to ``json_path`` (complete) and ``csv_path`` (flat), atomically.

    Args:
        records: the experiments, in grid order.
        json_path: ``results.json``: ``{"records": [record dicts]}``.
        csv_path: ``results.csv``, or None for none.

    Example:
        >>> write_results(records, json_path="out/results.json", csv_path="out/results.csv")
    """
    atomic_write_json(json_path, {"records": [r.to_dict() for r in records]})
    if csv_path is not None:
        atomic_write_text(csv_path, records_to_csv(records))


def read_results(path: str) -> List[ExperimentRecord]:
    """The records of a ``results.json`` written by `write_results`.

    Raises:
        ValueError: the file is not a results file (the message names it).
    """
    expected = "expected a results.json written by gluonft.results.write_results"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not JSON ({error}); {expected}") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path} holds no 'records' list; {expected}")
    records = []
    for index, item in enumerate(data["records"]):
        try:
            if not isinstance(item, dict):
                raise TypeError(f"a {type(item).__name__}, not an object")
            records.append(ExperimentRecord.from_dict(item))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: record {index} is not a valid experiment record "
                             f"({error}); {expected}") from None
    return records


# --- reading a grid ---------------------------------------------------------------------------

def selection_basis(records: Sequence[ExperimentRecord], metric: str = "accuracy") -> str:
    """What `best_record` chooses on: ``"validation"`` when every trained experiment has the
    metric on validation images (the grid holds out a validation split), else ``"test"``."""
    trained = [r for r in records if r.ok]
    return "validation" if trained and all(record_score(r, metric) is not None
                                           for r in trained) else "test"


SELECTION_NOTES = {
    "validation": "chosen on validation {metric}; its test figures were not used to choose, "
                  "so they are unbiased estimates",
    "test": "chosen on test {metric} (no validation figure): that figure is optimistic, as "
            "the best of several measured on the same images",
}


def selection_note(basis: str, metric: str = "accuracy") -> str:
    """`SELECTION_NOTES` in words for ``metric``."""
    return SELECTION_NOTES[basis].format(metric=metric.replace("_", "-"))


def best_record(records: Sequence[ExperimentRecord], metric: str = "accuracy"
                ) -> Optional[ExperimentRecord]:
    """The trained experiment with the highest validation ``metric`` (first one on ties), or
    None; on the test figure only when some trained experiment has no validation figure
    (`selection_basis` says which). Choosing on the test set would make the reported test
    figures of "the best" biased upward.

    Recorded results (nothing trained, no model to keep) and failed experiments never win.

    Args:
        metric: ``"accuracy"`` (default), ``"macro_f1"`` or ``"f1"`` (`METRICS`).

    Example:
        >>> best_record(records).id
        'cifar_resnet20_v1-head-s0'
    """
    basis = selection_basis(records, metric)
    best, best_value = None, None
    for record in records:
        value = record_score(record, metric, on=basis) if record.ok else None
        if value is not None and (best is None or value > best_value):
            best, best_value = record, value
    return best


PRETRAINING_TITLES = {"imagenet": "ImageNet", "cifar10": "CIFAR-10 (same task, not transfer)",
                      "random": "random"}


def pretraining_title(pretrained_on: Optional[str]) -> str:
    """Words for where a backbone was pretrained: ``"ImageNet"``, ``"CIFAR-10 (same task, not
    transfer)"`` (a grid on CIFAR-10), ``"random"``; unknown: as given."""
    if not pretrained_on:
        return "-"
    return PRETRAINING_TITLES.get(pretrained_on, str(pretrained_on))


def accuracy_bars(records: Sequence[ExperimentRecord]) -> List[Dict[str, object]]:
    """One entry per configuration (repeats over seeds grouped): what the accuracy chart draws.

    Returns:
        Dicts in first-appearance order with ``group``, ``label`` (model / baseline name),
        ``model``, ``regime``, ``kind``, ``status`` (``"ok"``, ``"recorded"``, or ``"failed"``
        when no repeat succeeded), ``accuracies`` and ``seeds`` of the successful repeats,
        ``mean``, ``std`` (None below two repeats), ``n``, ``failed`` (count), ``errors``,
        ``image_size`` and ``epochs``.

    Example:
        >>> [b["n"] for b in accuracy_bars(records)]
        [3, 3, 1]
    """
    groups: Dict[str, List[ExperimentRecord]] = {}
    for record in records:
        groups.setdefault(record.group, []).append(record)
    out = []
    for group, members in groups.items():
        good = [r for r in members if r.status in ("ok", "recorded")]
        failed = [r for r in members if r.status == "failed"]
        first = (good or members)[0]
        accuracies = [float(r.test_accuracy) for r in good]
        mean, std = mean_std(accuracies)
        status = ("recorded" if good and all(r.status == "recorded" for r in good)
                  else "ok" if good else "failed")
        low = high = None
        if std is not None:  # several seeds: their spread and the test set's noise
            low, high = mean_interval(accuracies, first.test_count)
        elif good and good[0].interval is not None:  # one run: the binomial interval
            low, high = good[0].interval
        out.append({
            "group": group, "label": first.label, "model": first.model, "regime": first.regime,
            "kind": first.kind, "status": status, "accuracies": accuracies,
            "seeds": [r.seed for r in good], "mean": mean, "std": std, "n": len(good),
            "failed": len(failed), "errors": [r.error for r in failed],
            "image_size": first.image_size,
            "epochs": (first.training or {}).get("epochs", (first.config or {}).get("epochs")),
            "pretrained_on": first.pretrained_on, "test_count": first.test_count,
            "low": low, "high": high,
            "interval": ("95 % of the mean: seeds and test images" if std is not None else
                         "Wilson 95 %" if low is not None else None),
        })
    return out


def indistinguishable(bars: Sequence[Dict[str, object]]) -> List[Tuple[int, int]]:
    """Pairs ``(i, j)`` of `accuracy_bars` entries whose intervals overlap: the test images
    cannot tell those two configurations apart.

    Example:
        >>> indistinguishable(accuracy_bars(records))
        [(1, 2)]
    """
    pairs = []
    for i, a in enumerate(bars):
        for j in range(i + 1, len(bars)):
            b = bars[j]
            if None in (a.get("low"), b.get("low")):
                continue
            if a["low"] <= b["high"] and b["low"] <= a["high"]:
                pairs.append((i, j))
    return pairs


def model_card(record: ExperimentRecord, *,
               repeats: Optional[Sequence[ExperimentRecord]] = None) -> Dict[str, object]:
    """The card of a trained model: where it came from, what changed, how it trained, its score.

    Args:
        record: a trained (``status == "ok"``) experiment.
        repeats: the grid's records; repeats of the same configuration add their mean/std.

    Returns:
        A JSON-ready dict: ``source_model``, ``modified_layers``, ``regime`` (and its
        description), ``optimizer`` and ``optimizer_params``, ``schedule``, ``epochs``,
        ``batch_size``, ``image_size``, ``initialisation``, ``test_accuracy``, ...

    Example:
        >>> model_card(best_record(records))["test_accuracy"]
        0.93
    """
    if not record.ok:
        raise ValueError(f"a model card needs a trained experiment; {record.id!r} has status "
                         f"{record.status!r}")
    training = record.training or {}
    card = {
        "id": record.id, "label": record.label, "kind": record.kind,
        "source_model": record.model, "classes": training.get("classes"),
        "regime": record.regime, "regime_title": regime_title(record.regime),
        "regime_description": (record.plan or {}).get("description"),
        "modified_layers": list(record.modified_layers),
        "params_total": record.params_total, "params_trainable": record.params_trainable,
        "initialisation": record.initialisation,
        "optimizer": training.get("optimizer"),
        "optimizer_params": training.get("optimizer_params"),
        "schedule": training.get("schedule"), "epochs": training.get("epochs"),
        "batch_size": training.get("batch_size"), "image_size": record.image_size,
        "label_smoothing": training.get("label_smoothing"), "augment": training.get("augment"),
        "head": training.get("head", "linear"), "dropout": training.get("dropout"),
        "mix": training.get("mix"),
        "seed": record.seed, "train_images": training.get("train_images"),
        "test_accuracy": record.test_accuracy, "test_loss": record.test_loss,
        "test_count": record.test_count, "train_seconds": record.train_seconds,
        "val_accuracy": validation_accuracy(record),
        "test_interval": list(record.interval) if record.interval else None,
        "pretrained_on": record.pretrained_on,
        "pretraining": pretraining_title(record.pretrained_on),
        "environment": record.environment,
    }
    if record.pretrained_on == "cifar10":
        card["note_pretraining"] = (
            "this backbone was pretrained on CIFAR-10 itself, the task of this grid: its score "
            "is not transfer learning, and it is not comparable with the ImageNet backbones")
    same = [r for r in (repeats or ()) if r.group == record.group and r.ok]
    if len(same) > 1:
        mean, std = mean_std([r.test_accuracy for r in same])
        card["repeats"] = {"n": len(same), "mean": mean, "std": std,
                           "seeds": [r.seed for r in same]}
    return card


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _short_init(source: Dict[str, object]) -> str:
    # The table shows the file name; the record keeps the full path.
    if source.get("path"):
        sha1 = f" (sha1 {str(source['sha1'])[:12]})" if source.get("sha1") else ""
        return f"{source.get('dataset') or 'file'} {os.path.basename(str(source['path']))}{sha1}"
    return str(source.get("description") or "-")


def results_table(records: Sequence[ExperimentRecord]) -> str:
    """A fixed-width table of the grid for terminals: one row per experiment.

    Example:
        >>> print(results_table(records))
        experiment                 status  test acc  trainable / total ...
    """
    header = ("experiment", "status", "test acc", "95% interval", "pretrained on",
              "trainable / total params", "epochs", "px", "train s", "img/s", "initialisation")
    rows = []
    for r in records:
        training = r.training or {}
        params = ("-" if r.params_total is None
                  else f"{r.params_trainable:,} / {r.params_total:,}")
        init = _short_init(r.initialisation or {})
        ci = r.interval
        rows.append((r.id if r.kind != "baseline" else f"{r.id} [{r.label}]",
                     r.status, _pct(r.test_accuracy),
                     "-" if ci is None else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%",
                     pretraining_title(r.pretrained_on), params,
                     str(training.get("epochs", "-")), str(r.image_size or "-"),
                     "-" if r.train_seconds is None else f"{r.train_seconds:.0f}",
                     "-" if r.images_per_s is None else f"{r.images_per_s:.0f}",
                     init if r.status != "failed" else (r.error or "")[:90]))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    right = {2, 3, 5, 6, 7, 8, 9}

    def line(values):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    out = [line(header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [line(row) for row in rows]
    return "\n".join(out)
