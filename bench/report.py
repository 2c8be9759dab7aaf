"""`python -m bench.report RUN_DIR`: one self-contained HTML page from a grid's saved files.

The page is rendered from what `python -m bench.cifar` wrote (``config.json``,
``results.json``, ``best.json``, ``accuracy.png``/``.svg``, ``curves/<id>.png``) and nothing
else: no model is loaded and nothing is trained again, so the report shows exactly the numbers
the run saved. Everything it needs is inside the one file (images as base64 ``data:`` URIs, CSS
in a ``<style>`` element, no script, no web font, no external URL), so it opens from disk, from
an e-mail attachment or a submission system without network access.

The page's markup is one template, ``bench/templates/report.html`` (over gluonft's base page,
`gluonft.pages`); this module reads the files and hands the template plain data.

    >>> write_report("runs/cifar10-20261123-1841")
    'runs/cifar10-20261123-1841/report.html'

From the shell::

    python -m bench.report runs/cifar10-20261123-1841
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from gluonft.fileio import atomic_write_text
from gluonft.pages import data_uri, duration, pct, render, thousands, words
from gluonft.regimes import regime_title
from gluonft.results import (
    ExperimentRecord,
    accuracy_bars,
    best_record,
    pretraining_title,
    read_results,
)

__all__ = ["RunFiles", "load_run", "render_report", "write_report", "main"]

PROG = "bench.report"
REPORT_NAME = "report.html"


@dataclass(frozen=True)
class RunFiles:
    """What a run folder holds, read once: the data the page is rendered from.

    Attributes:
        root: the run folder.
        records: the experiments of ``results.json``, in grid order.
        config: ``config.json`` (preset, its values, data, environment, command), or {} when
            the folder has none (results written by other code).
        best: ``best.json`` (the best model's card), or None.
        chart: ``(mime type, bytes)`` of ``accuracy.png`` (or ``accuracy.svg``), or None.
        curves: experiment id -> PNG bytes of ``curves/<id>.png``.
        augmentation: PNG bytes of ``augmentation.png`` (training images as augmented), or None.
        best_figures: {"confusion", "cam"} -> PNG bytes of ``best_confusion.png`` and
            ``best_cam.png`` (the best model's test confusion matrix and Grad-CAM gallery).
    """

    root: str
    records: List[ExperimentRecord]
    config: dict
    best: Optional[dict]
    chart: Optional[Tuple[str, bytes]]
    curves: Dict[str, bytes]
    augmentation: Optional[bytes] = None
    best_figures: Dict[str, bytes] = field(default_factory=dict)


class ReportError(ValueError):
    """The folder is not a run folder: a message for the user, not a traceback."""


def _read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ReportError(f"{path} is not JSON ({error})") from None


def _read_bytes(path: str) -> Optional[bytes]:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def load_run(run_dir: str) -> RunFiles:
    """Read every file the report shows from a ``bench.cifar`` output folder.

    Args:
        run_dir: the ``--out`` folder of ``python -m bench.cifar``.

    Returns:
        A `RunFiles`.

    Raises:
        ReportError: ``run_dir`` is not a folder, or holds no readable ``results.json``.

    Example:
        >>> [r.id for r in load_run("runs/smoke").records]
        ['lab1_cnn-scratch-s0', 'mobilenet0.75-head-s0']
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: no such folder (expected the --out folder of "
                          f"python -m bench.cifar)")
    results = os.path.join(run_dir, "results.json")
    if not os.path.isfile(results):
        raise ReportError(f"{run_dir}: no results.json here (expected the --out folder of "
                          f"python -m bench.cifar)")
    try:
        records = read_results(results)
    except (ValueError, TypeError) as error:
        raise ReportError(str(error).splitlines()[0]) from None
    chart = None
    # PNG first: it is what the user saves or pastes elsewhere; the SVG is the fallback.
    for name, mime in (("accuracy.png", "image/png"), ("accuracy.svg", "image/svg+xml")):
        data = _read_bytes(os.path.join(run_dir, name))
        if data:
            chart = (mime, data)
            break
    curves = {}
    for record in records:
        data = _read_bytes(os.path.join(run_dir, "curves", f"{record.id}.png"))
        if data:
            curves[record.id] = data
    return RunFiles(root=run_dir, records=records,
                    config=_read_json(os.path.join(run_dir, "config.json")) or {},
                    best=_read_json(os.path.join(run_dir, "best.json")), chart=chart,
                    curves=curves,
                    augmentation=_read_bytes(os.path.join(run_dir, "augmentation.png")),
                    best_figures={key: data for key, data in (
                        (key, _read_bytes(os.path.join(run_dir, f"best_{key}.png")))
                        for key in ("confusion", "cam")) if data})


# --- the data of each section: plain values; the template holds the markup -------------------
# A table cell is a list of (style, text) segments (see gluonft/templates/macros.html).

TEMPLATES = str(Path(__file__).resolve().parent / "templates")
# The chart's text is drawn for its natural size; shrunk to the page's width, a wide grid
# (one bar per configuration: 16 bars for 3 models x 5 regimes) has labels too small to read.
# Below this scale the page shows the whole chart fitted (the overview) and the chart again at a
# readable size in a box that scrolls sideways.
_MIN_CHART_SCALE = 0.65
_PAGE_WIDTH = 1124  # the width of <main>'s content, px (see gluonft/templates/page.css)


def _plain(text) -> list:
    return [("", words(text))]


def _plural(n, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _optimizer_text(training: dict) -> str:
    params = training.get("optimizer_params") or {}
    names = {"learning_rate": "lr", "wd": "wd", "momentum": "momentum"}
    inner = ", ".join(f"{names.get(k, k)} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                      for k, v in params.items())
    name = training.get("optimizer") or "-"
    return f"{name} ({inner})" if inner else str(name)


def _schedule_text(schedule) -> str:
    if not isinstance(schedule, dict):
        return words(schedule)
    text = str(schedule.get("name", "-"))
    if schedule.get("warmup_epochs"):
        text += f", warm-up {schedule['warmup_epochs']:g} epochs"
    if schedule.get("steps"):
        text += f", steps {schedule['steps']} x{schedule.get('factor')}"
    return text


def _init_text(source: dict) -> str:
    if not source:
        return "-"
    return str(source.get("description") or source.get("kind") or "-")


def _lines(items) -> list:
    """Segments of one line per item, or ``-``."""
    segments = []
    for i, item in enumerate(items or []):
        segments += ([("br", "")] if i else []) + [("", item)]
    return segments or [("", "-")]


def _environment(run: RunFiles) -> dict:
    env = run.config.get("environment")
    if env:
        return env
    # No config.json: the machine that finished the first experiment speaks for the run.
    return next((r.environment for r in run.records if r.environment), {})


def _setup(run: RunFiles) -> dict:
    env = _environment(run)
    machine = [
        ("devices", _plain(", ".join(env.get("devices") or []) or "-")),
        ("CPU", _plain(f"{env.get('cpu', '-')} ({env.get('cpu_count', '?')} cores)")),
        ("host", _plain(env.get("host"))),
        ("platform", _plain(env.get("platform"))),
    ] + [(name, [("code", version)]) for name, version in (env.get("versions") or {}).items()]
    data = run.config.get("data") or {}
    if not data:  # results without config.json: the first record's config knows its data
        data = next(((r.config or {}).get("data") for r in run.records
                     if (r.config or {}).get("data")), {}) or {}
    data_rows = [("root", [("code", words(data.get("root")))])]
    data_rows += [(k.replace("_", " "), _plain(v)) for k, v in data.items() if k != "root"]
    return {"machine": machine, "data": data_rows, "preset": _preset(run),
            "command": " ".join(run.config.get("command") or []),
            "started": run.config.get("started")}


def _preset(run: RunFiles) -> Optional[dict]:
    name = run.config.get("preset")
    if not name:
        return None
    values = run.config.get("preset_values") or {}
    config = run.config.get("config") or {}
    overrides = set(run.config.get("overrides") or [])
    rows = []
    # The values the run used: the preset's, or the flag that replaced it (marked).
    for key, preset_value in values.items():
        if key in ("name", "description"):
            continue
        used = config.get(key, preset_value)
        cell = _plain(used)
        if key in overrides and used != preset_value:
            cell.append(("note", f" (flag; preset: {words(preset_value)})"))
        rows.append((key, cell))
    baseline = config.get("baseline_name") if config.get("baseline") != "none" else "none"
    grid = [("models", _plain(", ".join(config.get("models") or []) or "-")),
            ("regimes", _plain(", ".join(regime_title(r) for r in config.get("regimes") or [])
                               or "-")),
            ("seeds", _plain(", ".join(str(s) for s in config.get("seeds") or []) or "-")),
            ("baseline", _plain(baseline))]
    return {"name": name, "description": values.get("description", ""), "rows": rows,
            "grid": grid}


def _experiment(record: ExperimentRecord, best_id: Optional[str]) -> dict:
    training = record.training or {}
    return {
        "id": record.id, "model": record.model, "regime": regime_title(record.regime),
        "seed": record.seed, "status": record.status, "label": record.label,
        "baseline": record.kind == "baseline", "best": record.id == best_id,
        "accuracy": record.test_accuracy, "test_count": record.test_count,
        "interval": record.interval,
        "pretrained_on": record.pretrained_on or "",
        "pretraining": pretraining_title(record.pretrained_on),
        "params": ("-" if record.params_total is None else
                   f"{thousands(record.params_trainable)} / {thousands(record.params_total)}"),
        "epochs": training.get("epochs"), "image_size": record.image_size,
        "seconds": duration(record.train_seconds), "resumed": record.resumed_from_epoch,
        "images_per_s": ("-" if record.images_per_s is None
                         else f"{record.images_per_s:,.0f}"),
        "error": record.error, "traceback": record.traceback,
    }


def _repeats(run: RunFiles) -> List[dict]:
    return [{"group": b["group"], "n": b["n"], "mean": pct(b["mean"]),
             "std": "-" if b["std"] is None else f"{100 * float(b['std']):.2f}"}
            for b in accuracy_bars(run.records) if b["n"] > 1]


def _png_size(data: bytes) -> Optional[tuple]:
    """(width, height) from a PNG's header, or None for anything else."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _chart(run: RunFiles) -> Optional[dict]:
    if run.chart is None:
        return None
    mime, data = run.chart
    size = _png_size(data) if mime == "image/png" else None
    chart = {"uri": data_uri(mime, data), "wide": None}
    if size and size[0] * _MIN_CHART_SCALE > _PAGE_WIDTH:
        chart["wide"] = {"bars": len(accuracy_bars(run.records)),
                         "shown": f"{100 * _PAGE_WIDTH / size[0]:.0f}",
                         "width": round(size[0] * _MIN_CHART_SCALE)}
    return chart


def _best(run: RunFiles) -> dict:
    card = run.best
    if not card:
        best = best_record(run.records)
        return {"missing": "no experiment finished" if best is None
                else f"best.json not found; the best record is {best.id}"}
    init = card.get("initialisation") or {}
    accuracy = [("b", pct(card.get("test_accuracy")))]
    if card.get("test_count"):
        accuracy.append(("", f" on {card['test_count']} images"))
    if card.get("test_interval"):
        low, high = card["test_interval"]
        accuracy.append(("", f" (95 % interval {100 * low:.1f}\u2013{100 * high:.1f}%)"))
    if card.get("test_loss") is not None:
        accuracy.append(("", f", loss {card['test_loss']:.3f}"))
    pretraining = _plain(card.get("pretraining") or "-")
    if card.get("note_pretraining"):
        pretraining += [("br", ""), ("warn", card["note_pretraining"])]
    rows = [("experiment", [("b", card.get("id"))]),
            ("source model", [("code", card.get("source_model"))]),
            ("pretrained on", pretraining), ("test accuracy", accuracy)]
    if card.get("chosen_on"):
        metric = card.get("chosen_metric", "accuracy")
        val = (f" ({pct(card['val_accuracy'])})"
               if metric == "accuracy" and card.get("val_accuracy") is not None else "")
        rows.append(("chosen on", _plain(f"{card['chosen_on']} {metric.replace('_', '-')}"
                                         f"{val}: {card.get('chosen_note', '')}")))
    repeats = card.get("repeats")
    if repeats:
        std = repeats.get("std")
        rows.append(("over seeds", _plain(
            f"mean {pct(repeats.get('mean'))}"
            + (f" ± {100 * std:.2f} points" if std is not None else "")
            + f" over {repeats.get('n')} seeds {repeats.get('seeds')}")))
    initialisation = _plain(_init_text(init))
    if init.get("sha1"):
        initialisation += [("br", ""), ("note", "sha1 "), ("code", init["sha1"])]
    rows += [
        ("regime", _plain(f"{card.get('regime')} ({card.get('regime_title')})")),
        ("what trained", _plain(card.get("regime_description"))),
        ("modified layers", _lines(card.get("modified_layers"))),
        ("parameters", _plain(f"{thousands(card.get('params_trainable'))} trainable of "
                              f"{thousands(card.get('params_total'))}")),
        ("initialisation", initialisation),
        ("optimizer", _plain(_optimizer_text(card))),
        ("schedule", _plain(_schedule_text(card.get("schedule")))),
        ("epochs / batch / image", _plain(f"{_plural(card.get('epochs'), 'epoch')}, batch "
                                          f"{card.get('batch_size')}, "
                                          f"{card.get('image_size')} px")),
        ("train images", _plain(card.get("train_images"))),
        ("seed", _plain(card.get("seed"))),
        ("train time", _plain(duration(card.get("train_seconds")))),
    ]
    record = next((r for r in run.records if r.id == card.get("id")), None)
    metrics = (record.test_metrics if record is not None else None) or {}
    return {"rows": rows + _best_training_rows(card), "per_class": metrics.get("per_class"),
            "macro_f1": metrics.get("macro_f1"),
            "figures": {k: data_uri("image/png", v) for k, v in run.best_figures.items()}}


def _best_training_rows(card: dict) -> list:
    rows = []
    if card.get("augment"):
        rows.append(("augmentation", _plain(card["augment"])))
    if card.get("mix"):
        mix = card["mix"]
        rows.append(("mixing", _plain(f"{mix['kind']} (alpha {mix['alpha']:g}, "
                                      f"{mix['prob']:.0%} of the batches)")))
    head = str(card.get("head") or "linear")
    if card.get("dropout") is not None:
        head += f" (dropout {card['dropout']:g})"
    rows.append(("head", _plain(head)))
    if card.get("params_file"):
        rows.append(("parameters file", [("code", card["params_file"])] + (
            [("note", f" sha1 {card['params_sha1']}")] if card.get("params_sha1") else [])))
    if card.get("load_with"):
        rows.append(("load with", [("code", card["load_with"])]))
    if card.get("note"):
        rows.append(("note", _plain(card["note"])))
    return rows


def _architecture(record: ExperimentRecord) -> Optional[dict]:
    summary = record.summary or {}
    if record.status == "failed" or not (summary or record.params_total):
        return None
    shapes = (f"{tuple(summary.get('input_shape') or ())} -> "
              f"{tuple(summary.get('output_shape') or ())}")
    facts = [("input / output", _plain(shapes)),
             ("non-trainable", _plain(thousands(summary.get("non_trainable_params")))),
             ("regime", _plain((record.plan or {}).get("description") or record.regime)),
             ("modified layers", _lines(record.modified_layers)),
             ("initialisation", _plain(_init_text(record.initialisation or {})))]
    layers = [{"name": row.get("name") or "<root>", "type": row.get("type"),
               "shape": "(not run)" if row.get("output_shape") is None
               else str(tuple(row["output_shape"])),
               "params": thousands(row.get("params")),
               "trainable": thousands(row.get("trainable") or 0),
               "trains": bool(row.get("trainable"))} for row in summary.get("rows") or []]
    return {"id": record.id, "facts": facts, "layers": layers,
            "trainable": thousands(summary.get("trainable_params", record.params_trainable)),
            "total": thousands(summary.get("total_params", record.params_total))}


def _curve(run: RunFiles, record: ExperimentRecord) -> dict:
    data = run.curves.get(record.id)
    last = record.history[-1] if record.history else {}
    caption = (f"{record.id}: test {pct(record.test_accuracy)}"
               + (f", last val {pct(last['val_acc'])}" if last.get("val_acc") is not None
                  else "") + f", {_plural(len(record.history), 'epoch')}")
    return {"id": record.id, "uri": data_uri("image/png", data) if data else None,
            "caption": caption}


def _headline(run: RunFiles) -> List[Tuple[str, str]]:
    ok = [r for r in run.records if r.status == "ok"]
    failed = [r for r in run.records if r.status == "failed"]
    best = best_record(run.records)
    trained = sum(r.train_seconds or 0.0 for r in run.records)
    boxes = [(f"{len(run.records)}", f"experiments ({len(ok)} ok, {len(failed)} failed)")]
    if best is not None:
        boxes.insert(0, (pct(best.test_accuracy), f"best: {best.id}"))
    baselines = [r for r in run.records if r.kind == "baseline" and r.test_accuracy is not None]
    if baselines:
        boxes.append((pct(baselines[0].test_accuracy), f"baseline: {baselines[0].label}"))
    boxes.append((duration(trained), "training time, all experiments"))
    return boxes


def render_report(run_dir: str, *, title: Optional[str] = None,
                  generated: Optional[str] = None) -> str:
    """The report of a run folder as one self-contained HTML document.

    Args:
        run_dir: the ``--out`` folder of ``python -m bench.cifar``.
        title: the page title; default: "CIFAR-10 transfer learning: <folder name>".
        generated: the timestamp printed in the footer; default: now (pass one for a
            byte-identical page from the same files).

    Returns:
        The HTML text.

    Raises:
        ReportError: the folder holds no readable ``results.json``.

    Example:
        >>> page = render_report("runs/smoke")
        >>> page.count("<title>"), "http" in page.split("<body>")[0]
        (1, False)
    """
    run = load_run(run_dir)
    name = os.path.basename(os.path.normpath(os.path.abspath(run.root)))
    best = best_record(run.records)
    ok = [r for r in run.records if r.status == "ok"]
    return render(
        "report.html", folders=(TEMPLATES,),
        title=title or f"CIFAR-10 transfer learning: {name}",
        generated=generated or datetime.now().astimezone().isoformat(timespec="seconds"),
        preset=run.config.get("preset"), root=os.path.abspath(run.root),
        headline=_headline(run),
        experiments=[_experiment(r, (run.best or {}).get("id") or (best.id if best else None))
                     for r in run.records],
        repeats=_repeats(run), chart=_chart(run), best=_best(run), setup=_setup(run),
        augmentation=data_uri("image/png", run.augmentation) if run.augmentation else None,
        curves=[_curve(run, r) for r in ok], any_ok=bool(ok),
        architectures=[a for a in map(_architecture, run.records) if a],
        version=(_environment(run).get("versions") or {}).get("gluonft"), prog=PROG)


def write_report(run_dir: str, *, path: Optional[str] = None) -> str:
    """Render the report of ``run_dir`` and write it atomically to ``RUN_DIR/report.html``.

    Args:
        run_dir: the ``--out`` folder of ``python -m bench.cifar``.
        path: where to write instead of ``RUN_DIR/report.html``.

    Returns:
        The path written.

    Example:
        >>> write_report("runs/smoke")
        'runs/smoke/report.html'
    """
    text = render_report(run_dir)
    return atomic_write_text(path or os.path.join(os.fspath(run_dir), REPORT_NAME), text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m bench.report RUN_DIR [-o PATH]``: 0 written, 2 not a run folder."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Write RUN_DIR/report.html: one self-contained HTML page (images embedded, "
                    "no network access) from the files a python -m bench.cifar run saved.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of bench.cifar")
    parser.add_argument("-o", "--output", default=None,
                        help="where to write the page (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.run_dir, path=args.output)
    except ReportError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        return 2
    except OSError as error:
        print(f"{PROG}: error: cannot write the report: {error.strerror}: "
              f"{error.filename}", file=sys.stderr, flush=True)
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
