"""`python -m bench.report`: the HTML report of a real run, rendered from its saved files.

One real grid (smoke preset, real CIFAR-10 images and real weights from ../shared) is run once
through the shell command, as a user runs it; one experiment fails on purpose (no weights
offline) and the seeds repeat, so the page shows a failure, repeats and a baseline. The report
is the one `bench.cifar` wrote at the end of that run.
"""
import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import markupsafe
import pytest

from bench import report
from gluonft.results import read_results, write_results

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = "mobilenet0.75"
RESNET20 = "cifar_resnet20_v1"
OFFLINE = "resnet18_v1"  # no weights on this machine and none downloadable: fails, recorded


@pytest.fixture(scope="module")
def run(shared, tmp_path_factory):
    data = shared / "data" / "cifar-10-subset"
    weights = {MOBILENET: shared / "weights" / "mobilenet0.75-imagenet.params",
               RESNET20: shared / "weights" / "cifar_resnet20_v1-cifar10.params"}
    for path in [data, *weights.values()]:
        if not path.exists():
            pytest.skip(f"{path} not found in ../shared")
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "run"
    # An empty weight store and a repository that refuses at once: offline, for sure.
    env = dict(os.environ, MXNET_HOME=str(tmp / "mxnet_home"),
               MXNET_GLUON_REPO="http://127.0.0.1:9/")
    argv = [sys.executable, "-m", "bench.cifar", "--preset", "smoke", "--data-root", str(data),
            "--models", f"{MOBILENET},{RESNET20},{OFFLINE}", "--regimes", "head,full",
            "--seeds", "0,1", "--weights", ",".join(f"{k}={v}" for k, v in weights.items()),
            "--out", str(out), "--no-progress"]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    page = (out / "report.html").read_text(encoding="utf-8") \
        if (out / "report.html").exists() else ""
    return types.SimpleNamespace(out=out, result=result, page=page,
                                 records=read_results(out / "results.json"))


def _escaped(text):
    """``text`` as the page escapes it (Jinja2's autoescape: markupsafe, ' as &#39;)."""
    return str(markupsafe.escape(text))


def _rows(page):
    """experiment id -> the HTML of its row in the experiments table."""
    return dict(re.findall(r'<tr class="\w+" id="row-([^"]+)">(.*?)</tr>', page, re.S))


class _Checker(HTMLParser):
    """Collects what a browser would complain about: unbalanced tags, titles, ids, URLs."""
    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.ids, self.urls = [], [], [], []
        self.titles = self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.titles += tag == "title"
        self.scripts += tag == "script"
        if "id" in attrs:
            self.ids.append(attrs["id"])
        self.urls += [attrs[k] for k in ("src", "href", "action", "srcset", "poster")
                      if k in attrs]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def _check(page):
    checker = _Checker()
    checker.feed(page)
    checker.close()
    return checker


# ---------------------------------------------------------------- the report of a real run

def test_the_run_writes_its_report(run):
    assert run.result.returncode == 1, run.result.stderr[-2000:]  # the offline model failed
    assert f"report: {run.out}/report.html" in run.result.stdout
    assert "warning: the HTML report failed" not in run.result.stdout
    statuses = [r.status for r in run.records]
    assert statuses.count("failed") == 4 and statuses.count("ok") == 10


def test_every_experiment_is_in_the_table_with_its_accuracy(run):
    rows = _rows(run.page)
    assert list(rows) == [r.id for r in run.records]  # grid order, nothing missing
    for record in run.records:
        row = rows[record.id]
        assert f">{_escaped(record.model)}<" in row
        assert f'<td class="status {record.status}">{record.status}</td>' in row
        if record.status == "failed":
            assert record.test_accuracy is None and 'data-accuracy="-"' in row
            assert _escaped(record.error) in run.page
            continue
        # The exact number of results.json in an attribute, and as a percentage on screen.
        shown = re.search(r'data-accuracy="([^"]+)"[^>]*>([^<]+)</td>', row)
        assert float(shown.group(1)) == record.test_accuracy
        assert shown.group(2) == f"{100 * record.test_accuracy:.2f}%"
        assert f"{record.params_trainable:,} / {record.params_total:,}" in row


def test_failed_experiments_show_their_reason_and_traceback(run):
    for record in (r for r in run.records if r.status == "failed"):
        reason = re.search(rf'id="row-{re.escape(record.id)}">.*?</tr>\s*'
                           rf'<tr class="failed reason">(.*?)</tr>', run.page, re.S)
        assert reason, record.id
        assert record.error.startswith("WeightsUnavailable: ")
        assert _escaped(record.error) in reason.group(1)
        assert "<summary>traceback</summary>" in reason.group(1)


def test_the_chart_and_the_curves_are_embedded_byte_for_byte(run):
    chart = re.search(r'<img class="chart"[^>]* src="data:image/png;base64,([^"]+)"', run.page)
    assert chart and base64.b64decode(chart.group(1)) == (run.out / "accuracy.png").read_bytes()
    strip = re.search(r'<section id="augmentation">.*?src="data:image/png;base64,([^"]+)"',
                      run.page, re.S)
    assert strip and base64.b64decode(strip.group(1)) == (
        run.out / "augmentation.png").read_bytes()
    curves = dict(re.findall(r'<figure id="exp-([^"]+)"><img class="curve"[^>]* '
                             r'src="data:image/png;base64,([^"]+)"', run.page))
    ok = [r.id for r in run.records if r.status == "ok"]
    assert sorted(curves) == sorted(ok)
    for experiment, data in curves.items():
        assert base64.b64decode(data) == (run.out / "curves" / f"{experiment}.png").read_bytes()


def test_a_wide_chart_is_fitted_and_shown_again_at_a_readable_size(run, tmp_path):
    from gluonft import plots
    from gluonft.results import accuracy_bars

    assert 'class="wide"' not in run.page  # 7 bars fit the page
    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    bars = accuracy_bars(run.records) * 3  # 21 bars: a 4-model x 5-regime grid is this wide
    plots.save_figure(plots.accuracy_chart(bars), str(out / "accuracy.png"))
    width = report._png_size((out / "accuracy.png").read_bytes())[0]
    page = report.render_report(str(out))
    images = re.findall(r'<img class="chart[^"]*"[^>]*>', page)
    assert len(images) == 2  # the overview, then the readable one in a collapsed box
    assert "max-width" not in images[0]
    assert f'style="width: {round(width * report._MIN_CHART_SCALE)}px; max-width: none"' in \
        images[1]
    assert '<details class="wide"><summary>the chart at a readable size' in page
    assert _check(page).errors == []


def test_the_best_card_is_best_json(run):
    card = json.loads((run.out / "best.json").read_text())
    section = re.search(r'<section id="best">(.*?)</section>', run.page, re.S).group(1)
    assert f"<b>{card['id']}</b>" in section
    assert f"<code>{card['source_model']}</code>" in section
    assert f"<b>{100 * card['test_accuracy']:.2f}%</b>" in section
    assert card["initialisation"]["sha1"] in section
    assert card["repeats"]["n"] == 2 and "over 2 seeds" in section  # seeds 0,1
    for layer in card["modified_layers"]:
        assert _escaped(layer) in section
    best = max((r for r in run.records if r.status == "ok"),
               key=lambda r: r.history[-1]["val_acc"])  # chosen on validation, not on test
    assert card["id"] == best.id and card["test_accuracy"] == best.test_accuracy
    assert "chosen on</th>" in section and "validation accuracy" in section
    assert f'id="row-{card["id"]}">' in run.page and '<span class="tag best">best</span>' in \
        _rows(run.page)[card["id"]]


def test_setup_shows_device_versions_data_and_preset(run):
    config = json.loads((run.out / "config.json").read_text())
    section = re.search(r'<section id="setup">(.*?)</section>', run.page, re.S).group(1)
    assert ">cpu(0)<" in section
    for name, version in config["environment"]["versions"].items():
        assert f"<th scope=\"row\">{name}</th><td><code>{version}</code>" in section
    assert config["data"]["root"] in section
    assert "<h3>Preset <code>smoke</code></h3>" in section
    for key in ("epochs", "batch_size", "train_per_class", "optimizer", "lr"):
        assert f"<th scope=\"row\">{key}</th>" in section
    assert "head 0.05, last_k 0.02, full 0.01, scratch 0.05" in section
    assert _escaped(" ".join(config["command"])) in section


def test_architecture_summaries_are_collapsible_and_hold_every_layer(run):
    for record in run.records:
        block = re.search(rf'<details id="arch-{re.escape(record.id)}">(.*?)</details>',
                          run.page, re.S)
        if record.status == "failed":
            assert block is None
            continue
        assert f"{record.params_trainable:,} trainable of {record.params_total:,}" in \
            block.group(1)
        rows = record.summary["rows"]
        layers = re.search(r'<table class="grid small layers">(.*?)</table>', block.group(1),
                           re.S).group(1)
        assert layers.count("<tr") == 1 + len(rows)  # the header and one row per layer
        assert f"<td>{rows[-1]['name']}</td><td>{rows[-1]['type']}</td>" in layers
        assert f"{len(rows)} layers" in block.group(1)
        trainable = sum(1 for r in rows if r["trainable"])
        assert block.group(1).count('<tr class="trainable">') == trainable


def test_the_page_is_one_self_contained_valid_document(run):
    checker = _check(run.page)
    assert checker.errors == [] and checker.stack == []
    assert checker.titles == 1 and run.page.startswith("<!DOCTYPE html>")
    assert len(checker.ids) == len(set(checker.ids))
    assert checker.scripts == 0
    # Every src/href is an embedded image or a link inside the page: nothing to fetch.
    assert checker.urls and all(u.startswith(("data:", "#")) for u in checker.urls)
    assert not re.search(r'(?:src|href)\s*=\s*["\']?\s*(?:https?:)?//', run.page, re.I)
    assert "@import" not in run.page and "@font-face" not in run.page
    assert not re.search(r"url\(", run.page)
    for anchor in re.findall(r'href="#([^"]+)"', run.page):
        assert anchor in checker.ids, anchor
    assert os.stat(run.out / "report.html").st_mode & 0o044  # readable: made to be shared


# ---------------------------------------------------------------- rendering, from files only

def test_text_from_the_records_is_escaped(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    records = read_results(out / "results.json")
    evil = '<script>alert("x")</script> & <img src="http://example.com/x.png">'
    records[0] = dataclasses.replace(records[0], label=evil)
    failed = next(i for i, r in enumerate(records) if r.status == "failed")
    records[failed] = dataclasses.replace(records[failed], error=f"Boom: {evil}")
    write_results(records, json_path=str(out / "results.json"))
    page = report.render_report(str(out))
    assert "<script" not in page and 'src="http' not in page
    assert _escaped(evil) in page
    assert _check(page).errors == []


def test_a_recorded_baseline_shows_its_number_and_no_training(run, tmp_path):
    from gluonft.results import ExperimentRecord

    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    recorded = ExperimentRecord(id="baseline-recorded", model="baseline", regime="recorded",
                                seed=0, kind="baseline", status="recorded",
                                label="Lab 1 CNN (my notebook)", test_accuracy=0.72)
    records = [recorded] + [r for r in read_results(out / "results.json")
                            if r.kind != "baseline"]
    write_results(records, json_path=str(out / "results.json"))
    page = report.render_report(str(out))
    row = _rows(page)["baseline-recorded"]
    assert '<td class="status recorded">recorded</td>' in row
    assert 'data-accuracy="0.72">72.00%</td>' in row and 'href="#exp-' not in row
    assert "<b>72.00%</b><span>baseline: Lab 1 CNN (my notebook)</span>" in page
    assert 'id="exp-baseline-recorded"' not in page and 'id="arch-baseline-recorded"' not in page
    assert _check(page).errors == []


def test_a_folder_with_results_only_still_renders_and_says_what_is_missing(run, tmp_path):
    out = tmp_path / "bare"
    out.mkdir()
    shutil.copy(run.out / "results.json", out / "results.json")
    page = report.render_report(str(out), generated="2026-01-01T00:00:00+00:00")
    assert "accuracy.png / accuracy.svg not found" in page
    assert "best.json not found; the best record is" in page
    assert "curves/" in page and "not found" in page
    assert ">cpu(0)<" in page  # the machine comes from the records' environment
    assert set(_rows(page)) == {r.id for r in run.records}
    assert page == report.render_report(str(out), generated="2026-01-01T00:00:00+00:00")


def test_write_report_writes_atomically_and_returns_the_path(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    (out / "report.html").unlink()
    path = report.write_report(str(out))
    assert path == str(out / "report.html")
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- the command

def test_main_writes_the_report_and_prints_its_path(run, tmp_path, capsys):
    target = tmp_path / "elsewhere.html"
    assert report.main([str(run.out), "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert _check(target.read_text(encoding="utf-8")).titles == 1


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "missing", "no such folder"),
    (lambda tmp: tmp, "no results.json here"),
    (lambda tmp: (tmp / "results.json").write_text("{oops") and tmp, "is not JSON"),
    (lambda tmp: (tmp / "results.json").write_text("[]") and tmp, "holds no 'records' list"),
])
def test_bad_run_dir_is_one_line_and_exit_code_2(make, expected, tmp_path, capsys):
    code = report.main([str(make(tmp_path))])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("bench.report: error: ") and captured.err.count("\n") == 1
    assert expected in captured.err and "Traceback" not in captured.err


def test_bad_run_dir_from_the_shell(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.report", str(tmp_path / "nope")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"bench.report: error: {tmp_path / 'nope'}: no such folder "
                             f"(expected the --out folder of python -m bench.cifar)\n")


# ---------------------------------------------------------------- the screenshot script

SCRIPT = ROOT / "tools" / "screenshot_report.sh"


def test_screenshot_script_says_how_to_get_chromium_when_it_is_absent(run, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(["/bin/bash", str(SCRIPT), str(run.out / "report.html")],
                            env={"PATH": str(empty)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 3
    assert "no Chromium found" in result.stderr and "apt-get install chromium" in \
        result.stderr


def test_screenshot_script_renders_the_report(run, tmp_path):
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium on this machine (sudo apt-get install chromium)")
    png = tmp_path / "shot.png"
    result = subprocess.run([str(SCRIPT), str(run.out / "report.html"), str(png), "1280x1600"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1600)
