"""`python -m bench.report RUN_DIR`: one self-contained HTML page from a grid's saved files.

The page is rendered from what `python -m bench.cifar` wrote (``config.json``,
``results.json``, ``best.json``, ``accuracy.png``/``.svg``, ``curves/<id>.png``) and nothing
else: no model is loaded and nothing is trained again, so the report shows exactly the numbers
the run saved. Everything it needs is inside the one file (images as base64 ``data:`` URIs, CSS
in a ``<style>`` element, no script, no web font, no external URL), so it opens from disk, from
an e-mail attachment or a submission system without network access.

    >>> write_report("runs/cifar10-20261123-1841")
    'runs/cifar10-20261123-1841/report.html'

From the shell::

    python -m bench.report runs/cifar10-20261123-1841
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import sys
from datetime import datetime
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from gluonft.results import (ExperimentRecord, accuracy_bars, atomic_write_text, best_record,
                             pretraining_title, read_results, regime_title)

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
    """

    root: str
    records: List[ExperimentRecord]
    config: dict
    best: Optional[dict]
    chart: Optional[Tuple[str, bytes]]
    curves: Dict[str, bytes]
    augmentation: Optional[bytes] = None


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
                    augmentation=_read_bytes(os.path.join(run_dir, "augmentation.png")))


# --- small formatting helpers: every value goes through _e before it reaches the page ------

def _e(value) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


def _int(value) -> str:
    return "-" if value is None else f"{int(value):,}"


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else \
        f"{minutes // 60} h {minutes % 60:02d} min"


def _points(std: Optional[float]) -> str:
    return "-" if std is None else f"{100 * float(std):.2f}"


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _value(value) -> str:
    """A saved value in words for a key/value table: ``{"head": 0.05}`` -> ``head 0.05``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def _plural(n, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _kv_table(rows: Sequence[tuple], *, css: str = "kv") -> str:
    """Rows of (key, html-ready value) as a two-column table."""
    body = "".join(f"<tr><th scope=\"row\">{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class=\"{css}\"><tbody>{body}</tbody></table>"


def _optimizer_text(training: dict) -> str:
    params = training.get("optimizer_params") or {}
    words = {"learning_rate": "lr", "wd": "wd", "momentum": "momentum"}
    inner = ", ".join(f"{words.get(k, k)} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                      for k, v in params.items())
    name = training.get("optimizer") or "-"
    return f"{name} ({inner})" if inner else str(name)


def _schedule_text(schedule) -> str:
    if not isinstance(schedule, dict):
        return _value(schedule)
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


# --- the sections -----------------------------------------------------------------------------

def _environment(run: RunFiles) -> dict:
    env = run.config.get("environment")
    if env:
        return env
    # No config.json: the machine that finished the first experiment speaks for the run.
    return next((r.environment for r in run.records if r.environment), {})


def _setup_section(run: RunFiles) -> str:
    env = _environment(run)
    versions = env.get("versions") or {}
    machine = [
        ("devices", _e(", ".join(env.get("devices") or []) or "-")),
        ("CPU", _e(f"{env.get('cpu', '-')} ({env.get('cpu_count', '?')} cores)")),
        ("host", _e(env.get("host"))),
        ("platform", _e(env.get("platform"))),
    ] + [(name, f"<code>{_e(version)}</code>") for name, version in versions.items()]

    data = run.config.get("data") or {}
    if not data:  # results without config.json: the first record's config knows its data
        data = next(((r.config or {}).get("data") for r in run.records
                     if (r.config or {}).get("data")), {}) or {}
    data_rows = [("root", f"<code>{_e(data.get('root'))}</code>")]
    data_rows += [(k.replace("_", " "), _e(v)) for k, v in data.items() if k != "root"]

    parts = ["<section id=\"setup\"><h2>Setup</h2><div class=\"cols\">",
             "<div><h3>Machine</h3>", _kv_table(machine), "</div>",
             "<div><h3>Data</h3>", _kv_table(data_rows), "</div></div>"]

    preset = run.config.get("preset")
    if preset:
        values = run.config.get("preset_values") or {}
        config = run.config.get("config") or {}
        overrides = set(run.config.get("overrides") or [])
        rows = []
        # The values the run used: the preset's, or the flag that replaced it (marked).
        for key, preset_value in values.items():
            if key in ("name", "description"):
                continue
            used = config.get(key, preset_value)
            if key in overrides and used != preset_value:
                cell = (f"{_e(_value(used))} <span class=\"note\">(flag; preset: "
                        f"{_e(_value(preset_value))})</span>")
            else:
                cell = _e(_value(used))
            rows.append((key, cell))
        grid = [("models", _e(", ".join(config.get("models") or []) or "-")),
                ("regimes", _e(", ".join(regime_title(r) for r in config.get("regimes") or [])
                               or "-")),
                ("seeds", _e(", ".join(str(s) for s in config.get("seeds") or []) or "-")),
                ("baseline", _e(config.get("baseline_name") if config.get("baseline") != "none"
                                else "none"))]
        parts += [f"<h3>Preset <code>{_e(preset)}</code></h3>",
                  f"<p class=\"note\">{_e(values.get('description', ''))}</p>",
                  "<div class=\"cols\"><div>", _kv_table(rows), "</div><div>",
                  _kv_table(grid), "</div></div>"]
    command = run.config.get("command")
    if command:
        parts.append(f"<h3>Command</h3><pre class=\"cmd\">{_e(' '.join(command))}</pre>")
    if run.config.get("started"):
        parts.append(f"<p class=\"note\">started {_e(run.config['started'])}</p>")
    parts.append("</section>")
    return "".join(parts)


def _experiment_row(record: ExperimentRecord, best_id: Optional[str]) -> str:
    training = record.training or {}
    status_class = {"ok": "ok", "failed": "failed", "recorded": "recorded"}[record.status]
    name = _e(record.id)
    if record.kind == "baseline":
        name += f" <span class=\"tag\" title=\"{_e(record.label)}\">baseline</span>"
    if record.id == best_id:
        name += " <span class=\"tag best\">best</span>"
    accuracy = _pct(record.test_accuracy)
    # The number of test images goes in the tooltip: the column stays narrow enough for the
    # whole table to fit the page without scrolling.
    count = f" title=\"{record.test_count} test images\"" if record.test_count else ""
    params = ("-" if record.params_total is None
              else f"{_int(record.params_trainable)} / {_int(record.params_total)}")
    cells = [
        f"<td class=\"id\"><a href=\"#exp-{_e(record.id)}\">{name}</a></td>"
        if record.status == "ok" else f"<td class=\"id\">{name}</td>",
        f"<td>{_e(record.model)}</td>",
        f"<td>{_e(regime_title(record.regime))}</td>",
        f"<td class=\"num\">{_e(record.seed)}</td>",
        f"<td class=\"status {status_class}\">{_e(record.status)}</td>",
        f"<td class=\"num acc\" data-accuracy=\"{_e(record.test_accuracy)}\"{count}>"
        f"{accuracy}</td>",
        f"<td class=\"num ci\">{_interval(record)}</td>",
        f"<td class=\"pre {_e(record.pretrained_on or '')}\">"
        f"{_e(pretraining_title(record.pretrained_on))}</td>",
        f"<td class=\"num\">{params}</td>",
        f"<td class=\"num\">{_e(training.get('epochs'))}</td>",
        f"<td class=\"num\">{_e(record.image_size)}</td>",
        f"<td class=\"num\">{_seconds(record.train_seconds)}"
        + (f" <span class=\"note\">({record.resumed_from_epoch} ep resumed)</span>"
           if record.resumed_from_epoch else "") + "</td>",
        f"<td class=\"num\">{'-' if record.images_per_s is None else f'{record.images_per_s:,.0f}'}"
        f"</td>",
    ]
    row = f"<tr class=\"{status_class}\" id=\"row-{_e(record.id)}\">{''.join(cells)}</tr>"
    if record.status == "failed":
        trace = (f"<details><summary>traceback</summary><pre>{_e(record.traceback)}</pre>"
                 f"</details>" if record.traceback else "")
        row += (f"<tr class=\"failed reason\"><td colspan=\"13\"><b>why:</b> "
                f"{_e(record.error)}{trace}</td></tr>")
    return row


def _interval(record: ExperimentRecord) -> str:
    ci = record.interval
    if ci is None:
        return "-"
    return (f"<span title=\"Wilson 95 % interval on {record.test_count} test images\">"
            f"{100 * ci[0]:.1f}&ndash;{100 * ci[1]:.1f}%</span>")


def _experiments_section(run: RunFiles) -> str:
    best = best_record(run.records)
    best_id = (run.best or {}).get("id") or (best.id if best else None)
    header = ("experiment", "model", "regime", "seed", "status", "test accuracy",
              "95% interval", "pretrained on", "params trainable / total", "epochs", "px",
              "train time", "images /s")
    head = "".join(f"<th scope=\"col\">{_e(h)}</th>" for h in header)
    body = "".join(_experiment_row(r, best_id) for r in run.records)
    parts = ["<section id=\"experiments\"><h2>Experiments</h2>",
             "<div class=\"scroll\"><table class=\"grid\">",
             f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"]
    repeated = [b for b in accuracy_bars(run.records) if b["n"] > 1]
    if repeated:
        rows = "".join(
            f"<tr><td>{_e(b['group'])}</td><td class=\"num\">{b['n']}</td>"
            f"<td class=\"num\">{_pct(b['mean'])}</td>"
            f"<td class=\"num\">{_points(b['std'])}</td></tr>" for b in repeated)
        parts.append("<h3>Repeats</h3><table class=\"grid small\"><thead><tr>"
                     "<th>configuration</th><th>runs</th><th>mean</th><th>std (points)</th>"
                     f"</tr></thead><tbody>{rows}</tbody></table>")
    parts.append("</section>")
    return "".join(parts)


def _png_size(data: bytes) -> Optional[tuple]:
    """(width, height) from a PNG's header, or None for anything else."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# The chart's text is drawn for its natural size; shrunk to the page's width, a wide grid
# (one bar per configuration: 16 bars for 3 models x 5 regimes) has labels too small to read.
# Below this scale the page shows the whole chart fitted (the overview) and the chart again at a
# readable size in a box that scrolls sideways.
_MIN_CHART_SCALE = 0.65
_PAGE_WIDTH = 1124  # the width of <main>'s content, px (see _CSS)


def _chart_section(run: RunFiles) -> str:
    if run.chart is None:
        body = "<p class=\"missing\">accuracy.png / accuracy.svg not found in the run folder.</p>"
    else:
        mime, data = run.chart
        size = _png_size(data) if mime == "image/png" else None
        uri = _data_uri(mime, data)
        body = f"<img class=\"chart\" alt=\"test accuracy per experiment\" src=\"{uri}\">"
        # The chart carries the note on overlapping intervals under its bars.
        if size and size[0] * _MIN_CHART_SCALE > _PAGE_WIDTH:
            width = round(size[0] * _MIN_CHART_SCALE)
            body += (f"<figcaption>{len(accuracy_bars(run.records))} bars: the chart is shown "
                     f"at {100 * _PAGE_WIDTH / size[0]:.0f}% of its size.</figcaption>"
                     f"<details class=\"wide\"><summary>the chart at a readable size (scrolls "
                     f"sideways)</summary><div class=\"scroll\"><img class=\"chart wide\" "
                     f"alt=\"test accuracy per experiment, wide\" style=\"width: {width}px; "
                     f"max-width: none\" src=\"{uri}\"></div></details>")
    return f"<section id=\"accuracy\"><h2>Test accuracy</h2><figure>{body}</figure></section>"


def _best_section(run: RunFiles) -> str:
    card = run.best
    if not card:
        best = best_record(run.records)
        note = ("no experiment finished" if best is None
                else f"best.json not found; the best record is {best.id}")
        return (f"<section id=\"best\"><h2>Best model</h2><p class=\"missing\">{_e(note)}</p>"
                f"</section>")
    init = card.get("initialisation") or {}
    rows = [
        ("experiment", f"<b>{_e(card.get('id'))}</b>"),
        ("source model", f"<code>{_e(card.get('source_model'))}</code>"),
        ("pretrained on", _e(card.get("pretraining") or "-")
         + (f"<br><b class=\"warn\">{_e(card['note_pretraining'])}</b>"
            if card.get("note_pretraining") else "")),
        ("test accuracy", f"<b>{_pct(card.get('test_accuracy'))}</b>"
         + (f" on {card['test_count']} images" if card.get("test_count") else "")
         + (f" (95 % interval {100 * card['test_interval'][0]:.1f}&ndash;"
            f"{100 * card['test_interval'][1]:.1f}%)" if card.get("test_interval") else "")
         + (f", loss {card['test_loss']:.3f}" if card.get("test_loss") is not None else "")),
    ]
    if card.get("chosen_on"):
        rows.append(("chosen on", _e(f"{card['chosen_on']} accuracy"
                                     + (f" ({_pct(card['val_accuracy'])})"
                                        if card.get("val_accuracy") is not None else "")
                                     + f": {card.get('chosen_note', '')}")))
    repeats = card.get("repeats")
    if repeats:
        std = repeats.get("std")
        rows.append(("over seeds", _e(f"mean {_pct(repeats.get('mean'))}"
                                      + (f" ± {100 * std:.2f} points" if std is not None else "")
                                      + f" over {repeats.get('n')} seeds "
                                      f"{repeats.get('seeds')}")))
    rows += [
        ("regime", _e(f"{card.get('regime')} ({card.get('regime_title')})")),
        ("what trained", _e(card.get("regime_description"))),
        ("modified layers", "<br>".join(_e(m) for m in card.get("modified_layers") or [])
         or "-"),
        ("parameters", _e(f"{_int(card.get('params_trainable'))} trainable of "
                          f"{_int(card.get('params_total'))}")),
        ("initialisation", _e(_init_text(init))
         + (f"<br><span class=\"note\">sha1 <code>{_e(init.get('sha1'))}</code></span>"
            if init.get("sha1") else "")),
        ("optimizer", _e(_optimizer_text(card))),
        ("schedule", _e(_schedule_text(card.get("schedule")))),
        ("epochs / batch / image", _e(f"{_plural(card.get('epochs'), 'epoch')}, batch "
                                      f"{card.get('batch_size')}, {card.get('image_size')} px")),
        ("train images", _e(card.get("train_images"))),
        ("seed", _e(card.get("seed"))),
        ("train time", _e(_seconds(card.get("train_seconds")))),
    ]
    if card.get("augment"):
        rows.append(("augmentation", _e(_value(card["augment"]))))
    if card.get("mix"):
        mix = card["mix"]
        rows.append(("mixing", _e(f"{mix['kind']} (alpha {mix['alpha']:g}, {mix['prob']:.0%} of "
                                  f"the batches)")))
    rows.append(("head", _e(card.get("head") or "linear") + (
        f" (dropout {card['dropout']:g})" if card.get("dropout") is not None else "")))
    if card.get("params_file"):
        rows.append(("parameters file", f"<code>{_e(card['params_file'])}</code>"
                     + (f" <span class=\"note\">sha1 {_e(card.get('params_sha1'))}</span>"
                        if card.get("params_sha1") else "")))
    if card.get("load_with"):
        rows.append(("load with", f"<code>{_e(card['load_with'])}</code>"))
    if card.get("note"):
        rows.append(("note", _e(card["note"])))
    return (f"<section id=\"best\"><h2>Best model</h2><div class=\"card\">{_kv_table(rows)}"
            f"</div></section>")


def _summary_table(summary: dict) -> str:
    rows = summary.get("rows") or []
    body = []
    for row in rows:
        shape = row.get("output_shape")
        trainable = row.get("trainable") or 0
        css = " class=\"trainable\"" if trainable else ""
        body.append(f"<tr{css}><td>{_e(row.get('name') or '<root>')}</td>"
                    f"<td>{_e(row.get('type'))}</td>"
                    f"<td>{_e('(not run)' if shape is None else tuple(shape))}</td>"
                    f"<td class=\"num\">{_int(row.get('params'))}</td>"
                    f"<td class=\"num\">{_int(trainable)}</td></tr>")
    return ("<div class=\"scroll tall\"><table class=\"grid small layers\"><thead><tr>"
            "<th>layer</th><th>type</th><th>output shape</th><th>params</th><th>trainable</th>"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _architecture_section(run: RunFiles) -> str:
    parts = ["<section id=\"architectures\"><h2>Architectures</h2>",
             "<p class=\"note\">One summary per experiment (click to open); rows of layers "
             "that trained are highlighted.</p>"]
    shown = 0
    for record in run.records:
        summary = record.summary or {}
        if record.status == "failed" or not (summary or record.params_total):
            continue
        shown += 1
        total = summary.get("total_params", record.params_total)
        trainable = summary.get("trainable_params", record.params_trainable)
        rows = summary.get("rows") or []
        head = (f"<b>{_e(record.id)}</b> &mdash; {_int(trainable)} trainable of "
                f"{_int(total)} parameters" + (f", {len(rows)} layers" if rows else ""))
        facts = [("input / output", _e(f"{tuple(summary.get('input_shape') or ())} -> "
                                       f"{tuple(summary.get('output_shape') or ())}")),
                 ("non-trainable", _int(summary.get("non_trainable_params"))),
                 ("regime", _e((record.plan or {}).get("description") or record.regime)),
                 ("modified layers", "<br>".join(_e(m) for m in record.modified_layers) or "-"),
                 ("initialisation", _e(_init_text(record.initialisation or {})))]
        table = _summary_table(summary) if rows else ""
        parts.append(f"<details id=\"arch-{_e(record.id)}\"><summary>{head}</summary>"
                     f"{_kv_table(facts)}{table}</details>")
    if not shown:
        parts.append("<p class=\"missing\">no architecture summary in the records.</p>")
    parts.append("</section>")
    return "".join(parts)


def _augmentation_section(run: RunFiles) -> str:
    if not run.augmentation:
        return ""
    return ("<section id=\"augmentation\"><h2>What the nets trained on</h2>"
            "<p>Training images as the transfer experiments' nets receive them: "
            "augmented (and mixed, when mixing is on) and resized; the captions give each "
            "image's label (and its partner's share when mixed).</p>"
            f"<img class=\"curve\" alt=\"augmented training images\" "
            f"src=\"{_data_uri('image/png', run.augmentation)}\"></section>")


def _curves_section(run: RunFiles) -> str:
    parts = ["<section id=\"curves\"><h2>Training curves</h2>"]
    any_curve = False
    for record in run.records:
        if record.status != "ok":
            continue
        data = run.curves.get(record.id)
        last = record.history[-1] if record.history else {}
        caption = (f"{record.id}: test {_pct(record.test_accuracy)}"
                   + (f", last val {_pct(last['val_acc'])}" if last.get("val_acc") is not None
                      else "") + f", {_plural(len(record.history), 'epoch')}")
        if data is None:
            body = f"<p class=\"missing\">curves/{_e(record.id)}.png not found.</p>"
        else:
            any_curve = True
            body = (f"<img class=\"curve\" alt=\"training curves of {_e(record.id)}\" "
                    f"src=\"{_data_uri('image/png', data)}\">")
        parts.append(f"<figure id=\"exp-{_e(record.id)}\">{body}"
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    if not any_curve and not any(r.status == "ok" for r in run.records):
        parts.append("<p class=\"missing\">no finished experiment.</p>")
    parts.append("</section>")
    return "".join(parts)


# Inline, no web font: the page must look the same offline; system fonts only.
_CSS = """
:root { --fg:#1d2125; --muted:#5f6b76; --line:#d8dde2; --head:#f2f4f6; --ok:#1b7f3b;
        --bad:#b3261e; --rec:#6b5b00; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); margin: 0; background: #fafbfc; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
       min-height: 100vh; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; color: var(--muted); text-transform: uppercase;
     letter-spacing: .04em; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
            font-size: 13px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--head); padding: 8px 10px;
      border-radius: 4px; margin: 4px 0; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.lead { color: var(--muted); margin: 0 0 6px; }
.headline { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0 0; }
.headline div { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px;
                min-width: 150px; }
.headline b { display: block; font-size: 20px; }
.headline span { color: var(--muted); font-size: 13px; }
nav { margin: 14px 0 0; font-size: 14px; }
nav a { margin-right: 14px; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr));
        gap: 8px 28px; align-items: start; }
table { border-collapse: collapse; }
table.kv { width: 100%; }
table.kv th { text-align: left; font-weight: 600; color: var(--muted); white-space: nowrap;
              padding: 3px 14px 3px 0; vertical-align: top; width: 1%; }
table.kv td { padding: 3px 0; overflow-wrap: anywhere; }
table.kv tr + tr > * { border-top: 1px solid #eef0f2; }
.scroll { overflow-x: auto; max-width: 100%; }
.scroll.tall { max-height: 480px; overflow-y: auto; border: 1px solid var(--line);
               width: fit-content; }
table.grid { width: 100%; font-size: 14px; }
table.grid th { background: var(--head); text-align: left; padding: 6px 8px;
                border-bottom: 1px solid var(--line); vertical-align: bottom;
                position: sticky; top: 0; }
table.grid td { padding: 5px 8px; border-bottom: 1px solid #eef0f2; vertical-align: top;
                white-space: nowrap; }
table.small { font-size: 13px; width: auto; }
table.layers td { padding: 2px 8px; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
                  font-size: 12px; white-space: nowrap; }
tr.trainable td { background: #eef6ee; }
.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.acc { font-weight: 600; }
.status.ok { color: var(--ok); }
.status.failed, tr.failed td.acc { color: var(--bad); }
.status.recorded { color: var(--rec); }
tr.reason td { color: var(--bad); font-size: 13px; padding-top: 0; white-space: normal;
               overflow-wrap: anywhere; }
tr.failed td { background: #fdf3f2; }
.tag { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 8px;
       background: #e8ebee; color: var(--muted); white-space: nowrap; }
.tag.best { background: #fff2c2; color: #6b5200; font-weight: 600; }
.note { color: var(--muted); font-size: 13px; }
.missing { color: var(--bad); }
.warn { color: var(--bad); font-weight: 600; }
table.grid td.pre { white-space: normal; min-width: 6em; max-width: 11em; }
td.pre.cifar10 { color: var(--bad); }
figure { margin: 10px 0 18px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 2px; }
img.chart { display: block; max-width: 100%; height: auto; margin: 0 auto; }
img.curve { display: block; width: 100%; max-width: 960px; height: auto; }
.card { border: 1px solid var(--line); border-left: 4px solid #e0b400; border-radius: 6px;
        padding: 10px 16px; }
details { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; padding: 6px 12px; }
details > summary { cursor: pointer; }
details[open] > summary { margin-bottom: 8px; }
tr.reason details { border: 0; padding: 0; margin: 2px 0 0; }
tr.reason pre { color: var(--fg); max-height: 320px; overflow: auto; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
@media print { details { break-inside: avoid; } main { max-width: none; } }
"""


def _headline(run: RunFiles) -> str:
    ok = [r for r in run.records if r.status == "ok"]
    failed = [r for r in run.records if r.status == "failed"]
    best = best_record(run.records)
    trained = sum(r.train_seconds or 0.0 for r in run.records)
    boxes = [(f"{len(run.records)}", f"experiments ({len(ok)} ok, {len(failed)} failed)")]
    if best is not None:
        boxes.insert(0, (_pct(best.test_accuracy), f"best: {best.id}"))
    baselines = [r for r in run.records if r.kind == "baseline" and r.test_accuracy is not None]
    if baselines:
        boxes.append((_pct(baselines[0].test_accuracy), f"baseline: {baselines[0].label}"))
    boxes.append((_seconds(trained), "training time, all experiments"))
    return "<div class=\"headline\">" + "".join(
        f"<div><b>{_e(big)}</b><span>{_e(small)}</span></div>" for big, small in boxes) + "</div>"


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
    title = title or f"CIFAR-10 transfer learning: {name}"
    generated = generated or datetime.now().astimezone().isoformat(timespec="seconds")
    preset = run.config.get("preset")
    lead = (f"preset <b>{_e(preset)}</b> &middot; " if preset else "") + \
        f"run folder <code>{_e(os.path.abspath(run.root))}</code>"
    nav = "".join(f"<a href=\"#{anchor}\">{_e(text)}</a>" for anchor, text in (
        ("setup", "Setup"), ("experiments", "Experiments"), ("accuracy", "Accuracy chart"),
        ("best", "Best model"), ("augmentation", "Augmentation"),
        ("curves", "Training curves"), ("architectures", "Architectures"))
        if anchor != "augmentation" or run.augmentation)
    versions = (_environment(run).get("versions") or {})
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<header><h1>{_e(title)}</h1><p class=\"lead\">{lead}</p>{_headline(run)}",
        f"<nav>{nav}</nav></header>",
        _experiments_section(run),
        _chart_section(run),
        _best_section(run),
        _setup_section(run),
        _augmentation_section(run),
        _curves_section(run),
        _architecture_section(run),
        f"<footer>Generated {_e(generated)} by <code>python -m {PROG}</code> "
        f"(gluonft {_e(versions.get('gluonft'))}) from the files of the run folder; "
        f"self-contained: no script, no external resource.</footer>",
        "</main></body></html>\n",
    ])


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
