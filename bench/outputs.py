"""What a grid writes into its output folder, and how: `OutputPaths` (every file's place),
the results and chart after each experiment, the best model's card and parameters (restored
from its checkpoint when a run was killed in between), curves, and superseded records (a rerun
loses nothing). Every file is written atomically."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from gluonft import plots
from gluonft.checkpoint import checkpoint_files, read_checkpoint, remove_checkpoint
from gluonft.errors import one_line
from gluonft.fileio import atomic_write, atomic_write_json
from gluonft.results import (
        ExperimentRecord,
    accuracy_bars,
    best_record,
    model_card,
    read_results,
    selection_basis,
    selection_note,
    write_results,
)
from gluonft.weights import sha1_of

from .presets import BASELINE_MODEL

__all__ = ["OutputPaths", "read_previous", "supersede", "write_outputs", "update_best",
           "restore_best", "finish_experiment", "head_args"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class OutputPaths:
    """Where a grid writes, under one folder."""
    root: str

    @property
    def config(self) -> str:
        return os.path.join(self.root, "config.json")

    @property
    def results_json(self) -> str:
        return os.path.join(self.root, "results.json")

    @property
    def results_csv(self) -> str:
        return os.path.join(self.root, "results.csv")

    @property
    def superseded(self) -> str:
        return os.path.join(self.root, "superseded.json")

    @property
    def best_json(self) -> str:
        return os.path.join(self.root, "best.json")

    @property
    def best_params(self) -> str:
        return os.path.join(self.root, "best.params")

    @property
    def best_confusion(self) -> str:
        return os.path.join(self.root, "best_confusion.png")

    @property
    def best_cam(self) -> str:
        return os.path.join(self.root, "best_cam.png")

    @property
    def augmentation(self) -> str:
        return os.path.join(self.root, "augmentation.png")

    def chart(self, ext: str) -> str:
        return os.path.join(self.root, f"accuracy.{ext}")

    def curves(self, experiment: str) -> str:
        return os.path.join(self.root, "curves", f"{experiment}.png")

    def checkpoint(self, experiment: str) -> str:
        return os.path.join(self.root, "checkpoints", experiment)


def head_args(card: dict) -> str:
    if card.get("head", "linear") == "linear":
        return ""
    return f", head={card['head']!r}, dropout={card['dropout']!r}"


def read_previous(paths: OutputPaths) -> List[ExperimentRecord]:
    if not os.path.exists(paths.results_json):
        return []
    return read_results(paths.results_json)


def supersede(paths: OutputPaths, records: Sequence[ExperimentRecord]) -> None:
    if not records:
        return
    old = []
    if os.path.exists(paths.superseded):
        with open(paths.superseded) as f:
            old = json.load(f).get("records", [])
    atomic_write_json(paths.superseded, {"records": old + [r.to_dict() for r in records]})


def write_outputs(paths: OutputPaths, records: Sequence[ExperimentRecord], *, title: str,
                   log: Log) -> None:

    write_results(records, json_path=paths.results_json, csv_path=paths.results_csv)
    if not records:
        return
    bars = accuracy_bars(records)
    atomic_write_json(os.path.join(paths.root, "accuracy.json"), {"bars": bars})
    try:
        figure = plots.accuracy_chart(bars, title=title)
        for ext in ("png", "svg"):
            plots.save_figure(figure, paths.chart(ext))
    except Exception as error:  # a chart must not cost the results: they are written already
        log(f"warning: the accuracy chart could not be drawn: {one_line(error)}")


def update_best(paths: OutputPaths, records: Sequence[ExperimentRecord],
                just_run: Optional[ExperimentRecord], save_params, *,
                log: Log, metric: str = "accuracy") -> Optional[dict]:
    """best.json (and best.params when ``just_run`` is the best and ``save_params`` writes its
    parameters to a path) for ``records``; returns the card written (None: no best)."""
    best = best_record(records, metric)
    current = None
    if os.path.exists(paths.best_json):
        with open(paths.best_json) as f:
            current = json.load(f)
    if best is None:
        return None
    basis = selection_basis(records, metric)
    chosen_on = {"chosen_on": basis, "chosen_metric": metric,
                 "chosen_note": selection_note(basis, metric)}
    if just_run is not None and save_params is not None and best.id == just_run.id:
        atomic_write(paths.best_params, save_params)
        card = {**model_card(best, repeats=records), **chosen_on}
        card["params_file"] = os.path.basename(paths.best_params)
        card["params_sha1"] = sha1_of(paths.best_params)
        card["load_with"] = (f"gluonft.baseline.lab1_cnn(classes={card['classes']})"
                             f".load_parameters('best.params')" if best.model == BASELINE_MODEL
                             else f"gluonft.load_backbone({best.model!r}, classes="
                                  f"{card['classes']}, weights='best.params'"
                                  + head_args(card) + ")")
        atomic_write_json(paths.best_json, card)
        log(f"new best model (on {card['chosen_on']}): {best.id} (test "
            f"{100 * best.test_accuracy:.2f}%): best.json, best.params")
        return card
    elif current is None or current.get("id") != best.id \
            or current.get("test_accuracy") != best.test_accuracy \
            or current.get("chosen_on") != chosen_on["chosen_on"] \
            or current.get("chosen_metric", "accuracy") != metric:
        # The best is an experiment of an earlier run whose parameters were not kept here.
        card = {**model_card(best, repeats=records), **chosen_on}
        card["params_file"] = None
        card["note"] = "parameters not kept: the experiment finished in an earlier run"
        if os.path.exists(paths.best_params):
            os.remove(paths.best_params)
        atomic_write_json(paths.best_json, card)
        return card
    else:  # same best as on disk; refresh its card (repeats may have changed)
        card = dict(current)
        card.update({k: v for k, v in model_card(best, repeats=records).items()
                     if k in ("repeats",)})
        card.update(chosen_on)
        atomic_write_json(paths.best_json, card)
        return card


def restore_best(paths: OutputPaths, records: Sequence[ExperimentRecord],
                 finished: ExperimentRecord, *, log: Log, metric: str = "accuracy") -> None:
    """best.json/best.params for a finished experiment whose run was killed before writing
    them: its last epoch checkpoint still holds the trained parameters."""
    best = best_record(records, metric)
    if best is None or best.id != finished.id:
        return
    if os.path.exists(paths.best_json):
        with open(paths.best_json) as f:
            if json.load(f).get("id") == best.id:
                return
    manifest = read_checkpoint(paths.checkpoint(best.id))
    if manifest is None or len(manifest.get("epochs", ())) != len(best.history):
        update_best(paths, records, None, None, log=log, metric=metric)
        return
    params = checkpoint_files(paths.checkpoint(best.id), manifest)["params"]
    update_best(paths, records, best, lambda tmp: shutil.copyfile(params, tmp), log=log,
                metric=metric)


def finish_experiment(paths: OutputPaths, record: ExperimentRecord, *, keep_checkpoints: bool,
            only_missing: bool = False) -> None:
    """After a finished experiment: its curves drawn, its checkpoint removed (unless kept)."""
    if not record.ok:
        return

    curves = paths.curves(record.id)
    if record.history and not (only_missing and os.path.exists(curves)):
        plots.save_figure(plots.curves_figure(record.history, title=record.id,
                                              test_accuracy=record.test_accuracy), curves)
    if not keep_checkpoints:
        remove_checkpoint(paths.checkpoint(record.id))
