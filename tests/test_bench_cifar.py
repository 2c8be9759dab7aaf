"""`python -m bench.cifar` end to end on real CIFAR-10 images and real weights from ../shared.

The smoke preset keeps every run to seconds; the grids are real (real images, real weights,
real training), only small.
"""
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import mxnet as mx
import numpy as np
import pytest

import gluonft
from bench import cifar, cifar_config
from bench.grid import Data, experiment_id
from bench.presets import CPU_MODELS, DEFAULT_MODELS, PRESETS
from gluonft.baseline import lab1_cnn
from gluonft.checkpoint import checkpoint_files
from gluonft.results import read_results

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = "mobilenet0.75"
RESNET20 = "cifar_resnet20_v1"


def _paths(shared):
    data = shared / "data" / "cifar-10-subset"
    weights = {MOBILENET: shared / "weights" / "mobilenet0.75-imagenet.params",
               RESNET20: shared / "weights" / "cifar_resnet20_v1-cifar10.params"}
    for path in [data, *weights.values()]:
        if not path.exists():
            pytest.skip(f"{path} not found in ../shared")
    return data, weights


def _run(argv):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cifar.main(argv)
    return code, out.getvalue(), err.getvalue()


def _load(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- the smoke grid, end to end

@pytest.fixture(scope="module")
def smoke(shared, tmp_path_factory):
    data, weights = _paths(shared)
    out = tmp_path_factory.mktemp("bench") / "smoke"
    argv = ["--preset", "smoke", "--data-root", str(data),
            "--models", f"{MOBILENET},{RESNET20}", "--regimes", "head",
            "--weights", ",".join(f"{k}={v}" for k, v in weights.items()),
            "--out", str(out), "--no-progress"]
    begin = time.perf_counter()
    code, stdout, stderr = _run(argv)
    return types.SimpleNamespace(argv=argv, out=out, code=code, stdout=stdout, stderr=stderr,
                                 seconds=time.perf_counter() - begin, data=data)


def test_smoke_grid_finishes_quickly_and_writes_every_file(smoke):
    assert smoke.code == 0, smoke.stderr
    assert smoke.seconds < 180
    ids = ["lab1_cnn-scratch-s0", f"{MOBILENET}-head-s0", f"{RESNET20}-head-s0"]
    for name in ["config.json", "results.json", "results.csv", "accuracy.png", "accuracy.svg",
                 "accuracy.json", "best.json", "best.params", "augmentation.png"]\
            + [f"curves/{i}.png" for i in ids]:
        assert (smoke.out / name).is_file(), name
    assert not (smoke.out / "checkpoints").exists()  # finished experiments leave none
    assert [r.id for r in read_results(smoke.out / "results.json")] == ids
    for png in ["accuracy.png", "augmentation.png"] + [f"curves/{i}.png" for i in ids]:
        assert matplotlib.image.imread(smoke.out / png).shape[2] in (3, 4)
    assert "augmentation: Augment(" in smoke.stdout
    assert ET.parse(smoke.out / "accuracy.svg").getroot().tag.endswith("svg")
    assert not [p for p in smoke.out.rglob("*") if p.name.endswith(".tmp")]


def test_results_json_and_csv_agree_and_records_are_complete(smoke):
    records = read_results(smoke.out / "results.json")
    with open(smoke.out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [r.id for r in records]
    for row, record in zip(rows, records):
        assert row["status"] == record.status == "ok"
        assert float(row["test_accuracy"]) == pytest.approx(record.test_accuracy)
        assert int(row["params_trainable"]) == record.params_trainable
        assert int(row["seed"]) == record.seed == 0
        assert 0 <= record.test_accuracy <= 1 and record.test_count == 50
        assert record.environment["versions"]["mxnet"] == "1.9.1"
        assert record.environment["devices"] == ["cpu(0)"]
        assert len(record.history) == 1 and record.history[0]["epoch"] == 1
        assert record.train_seconds > 0 and record.images_per_s > 0
        assert record.training["optimizer_params"]["learning_rate"] == record.config["lr"]
        assert record.summary["total_params"] == record.params_total
        assert record.resumed_from_epoch == 0
    mobilenet = records[1]
    assert mobilenet.image_size == 32 and mobilenet.initialisation["kind"] == "file"
    assert mobilenet.initialisation["sha1"] == gluonft.weights.sha1_of(
        mobilenet.initialisation["path"])
    assert mobilenet.modified_layers == ("output (new Dense(10))",)
    assert mobilenet.params_trainable == 768 * 10 + 10


def test_the_baseline_is_trained_from_scratch_and_its_bar_is_marked(smoke):
    baseline = read_results(smoke.out / "results.json")[0]
    assert baseline.kind == "baseline" and baseline.model == "lab1_cnn"
    assert baseline.label == "Lab 1 CNN" and baseline.regime == "scratch"
    assert baseline.image_size == 32 and baseline.initialisation["kind"] == "random"
    assert baseline.training["epochs"] == PRESETS["smoke"].baseline_epochs
    bars = _load(smoke.out / "accuracy.json")["bars"]
    assert len(bars) == 3  # two experiments + the baseline
    assert [b["kind"] for b in bars] == ["baseline", "transfer", "transfer"]
    assert bars[0]["mean"] == baseline.test_accuracy


def test_best_card_is_the_most_accurate_record_and_its_parameters_reproduce_it(smoke):
    records = read_results(smoke.out / "results.json")
    # chosen on validation (every preset holds a validation split), never on the test set
    best = max(records, key=lambda r: r.history[-1]["val_acc"])
    card = _load(smoke.out / "best.json")
    assert card["id"] == best.id and card["test_accuracy"] == best.test_accuracy
    assert card["chosen_on"] == "validation" and card["val_accuracy"] == \
        best.history[-1]["val_acc"]
    for key in ("source_model", "modified_layers", "regime", "optimizer", "optimizer_params",
                "initialisation"):
        assert card[key], key
    assert card["params_sha1"] == gluonft.weights.sha1_of(str(smoke.out / "best.params"))

    config = _load(smoke.out / "config.json")["config"]
    test = gluonft.datasets.cifar10(smoke.data, train=False, download=False).subset(
        n_per_class=config["test_per_class"], seed=config["data_seed"])
    if best.model == "lab1_cnn":
        net = lab1_cnn(classes=10, ctx=mx.cpu())
        net.load_parameters(str(smoke.out / "best.params"), ctx=mx.cpu())
    else:
        net = gluonft.load_backbone(best.model, classes=10,
                                    weights=str(smoke.out / "best.params"), ctx=mx.cpu())
    again = gluonft.evaluate(net, test, ctx=mx.cpu(), image_size=best.image_size)
    assert again["count"] == best.test_count
    assert abs(again["accuracy"] - best.test_accuracy) <= 1 / best.test_count


def test_config_json_and_the_log_show_the_preset_and_each_experiment(smoke):
    saved = _load(smoke.out / "config.json")
    assert saved["preset"] == "smoke" and saved["preset_values"] == PRESETS["smoke"].to_dict()
    assert saved["config"]["epochs"] == PRESETS["smoke"].epochs
    assert set(saved["overrides"]) >= {"preset", "models", "regimes", "weights", "out"}
    assert saved["data"]["test_images"] == 50 and saved["data"]["train_images"] == 80
    log = smoke.stdout
    assert log.startswith("preset smoke:")
    assert "  epochs           1" in log
    assert log.count("Total params:") == 3 and log.count("more rows ...") == 3
    assert "initialisation: weights from" in log and "initialisation: random init" in log
    assert "training: optimizer sgd (lr 0.05, momentum 0.9, wd 0.0001)" in log
    assert "modified layers: output (new Dense(10))" in log
    assert log.count("test accuracy: ") == 3
    assert "=== all experiments" in log and "Best model: " in log
    assert "source model" in log and "parameters       best.params" in log


def test_rerun_skips_finished_experiments(smoke, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke.out, out)
    argv = [a if a != str(smoke.out) else str(out) for a in smoke.argv]
    before = read_results(out / "results.json")
    code, stdout, _ = _run(argv)
    assert code == 0
    assert stdout.count("skipped: already finished") == 3
    assert "epoch 1/1" not in stdout
    assert read_results(out / "results.json") == before


def test_changed_settings_rerun_and_the_old_records_are_kept_aside(smoke, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke.out, out)
    argv = [a if a != str(smoke.out) else str(out) for a in smoke.argv]
    argv[argv.index("--models") + 1] = RESNET20
    weights = argv.index("--weights") + 1
    argv[weights] = next(w for w in argv[weights].split(",") if w.startswith(RESNET20))
    argv += ["--epochs", "2"]
    code, stdout, _ = _run(argv)
    assert code == 0
    assert stdout.count("skipped: already finished") == 1  # the baseline: unchanged
    records = read_results(out / "results.json")
    assert [r.id for r in records] == ["lab1_cnn-scratch-s0", f"{RESNET20}-head-s0"]
    assert len(records[1].history) == 2
    superseded = [r["id"] for r in _load(out / "superseded.json")["records"]]
    assert sorted(superseded) == [f"{RESNET20}-head-s0", f"{MOBILENET}-head-s0"]
    assert len(_load(out / "accuracy.json")["bars"]) == 2


# ---------------------------------------------------------------- failures

def test_an_experiment_without_weights_fails_alone_and_is_recorded(shared, tmp_path,
                                                                   monkeypatch):
    data, weights = _paths(shared)
    # An empty weight store and a repository that refuses at once: offline, for sure.
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://127.0.0.1:9/")
    out = tmp_path / "run"
    code, stdout, _ = _run([
        "--preset", "smoke", "--data-root", str(data), "--models", f"resnet18_v1,{RESNET20}",
        "--regimes", "head", "--weights", f"{RESNET20}={weights[RESNET20]}",
        "--baseline-acc", "0.72", "--baseline-name", "Lab 1 CNN", "--out", str(out),
        "--no-progress", "--summary-rows", "0"])
    assert code == 1
    records = {r.id: r for r in read_results(out / "results.json")}
    failed = records["resnet18_v1-head-s0"]
    assert failed.status == "failed" and failed.test_accuracy is None
    assert failed.error.startswith("WeightsUnavailable: ") and "\n" not in failed.error
    assert "Traceback" in failed.traceback
    assert records[f"{RESNET20}-head-s0"].status == "ok"
    recorded = records["baseline-recorded"]
    assert recorded.status == "recorded" and recorded.test_accuracy == 0.72
    assert recorded.label == "Lab 1 CNN" and recorded.kind == "baseline"
    assert recorded.training == {} and recorded.history == ()
    bars = _load(out / "accuracy.json")["bars"]
    assert [(b["kind"], b["status"]) for b in bars] == [
        ("baseline", "recorded"), ("transfer", "failed"), ("transfer", "ok")]
    assert "1 failed:" in stdout and "resnet18_v1-head-s0: WeightsUnavailable" in stdout
    assert _load(out / "best.json")["id"] == f"{RESNET20}-head-s0"
    assert not (out / "curves" / "resnet18_v1-head-s0.png").exists()
    assert "... 53 more rows ..." in stdout and "features.0 (Conv2D)" not in stdout


def test_a_killed_run_resumes_from_its_last_checkpoint(shared, tmp_path):
    data, weights = _paths(shared)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "bench.cifar", "--preset", "smoke", "--data-root", str(data),
            "--models", RESNET20, "--regimes", "head,full",
            "--weights", f"{RESNET20}={weights[RESNET20]}", "--train-per-class", "60",
            "--epochs", "3", "--no-baseline", "--no-progress", "--out", str(out)]
    checkpoint = out / "checkpoints" / f"{RESNET20}-full-s0.json"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 150
        while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert checkpoint.exists(), (tmp_path / "first.log").read_text()[-2000:]
    saved = _load(checkpoint)["epochs"]
    done = len(saved)
    assert 1 <= done < 3, "killed too late to test resuming"
    head_before = read_results(out / "results.json")
    assert [r.id for r in head_before] == [f"{RESNET20}-head-s0"]

    rerun = subprocess.run(argv + ["--keep-checkpoints"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "skipped: already finished" in rerun.stdout
    assert (f"resumed from the checkpoint of epoch {done}: epochs 1..{done} were not trained "
            f"again") in rerun.stdout
    assert f"epoch {done}/3" not in rerun.stdout and "epoch 3/3" in rerun.stdout
    head, full = read_results(out / "results.json")
    assert head == head_before[0]
    assert full.status == "ok" and full.resumed_from_epoch == done
    assert [row["epoch"] for row in full.history] == [1, 2, 3]
    assert list(full.history[:done]) == saved  # the epochs before the kill, not retrained
    # --keep-checkpoints: the finished experiment's last epoch stays, and it is the tested net.
    assert len(_load(checkpoint)["epochs"]) == 3
    net = gluonft.load_backbone(RESNET20, classes=10, ctx=mx.cpu(),
                                weights=checkpoint_files(str(checkpoint.with_suffix("")))[
                                    "params"])
    test = gluonft.datasets.cifar10(data, train=False, download=False).subset(
        n_per_class=PRESETS["smoke"].test_per_class, seed=0)
    assert gluonft.evaluate(net, test, ctx=mx.cpu(), image_size=32)["accuracy"] == \
        pytest.approx(full.test_accuracy, abs=1 / full.test_count)


# ---------------------------------------------------------------- bad input

@pytest.fixture
def data_root(shared):
    return str(_paths(shared)[0])


@pytest.mark.parametrize("argv, expected", [
    (["--models", "resnet18"], "unknown model 'resnet18'; did you mean"),
    (["--models", "lab1_cnn"], "lab1_cnn is the lab-1 baseline"),
    (["--regimes", "half"], "unknown regime 'half'"),
    (["--regimes", "last_k:x"], "last_k needs a block count"),
    (["--models", RESNET20, "--regimes", "last_k:99"], "last_k with k=99 is out of range for "
                                                      "cifar_resnet20_v1"),
    (["--weights", "mobilenet0.75"], "--weights 'mobilenet0.75': expected NAME=PATH"),
    (["--models", RESNET20, "--weights", "mobilenet0.75=/x.params"], "is not in --models"),
    (["--models", RESNET20, "--weights", f"{RESNET20}=/no/such.params"], "no such file"),
    (["--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--baseline-acc", "72"], "expected a fraction in [0, 1] (did you mean 0.72?)"),
    (["--ctx", "gpu3"], "--ctx gpu3: MXNet sees 0 GPU(s)"),
    (["--lr", "head=fast"], "--lr 'fast': expected a positive number"),
    (["--seeds", "0,-1"], "is not a non-negative integer"),
    (["--ctx", "cpu", "--amp"], "--amp: float16 training needs GPUs, but --ctx is cpu(0)"),
    (["--lr", "inf"], "--lr 'inf': expected a positive finite number"),
    (["--momentum", "inf"], "argument --momentum: expected a finite number >= 0, got 'inf'"),
    (["--momentum", "1.5"], "--momentum 1.5: momentum must be a number in [0, 1), got 1.5"),
    (["--wd", "nan"], "argument --wd: expected a finite number >= 0, got 'nan'"),
    (["--image-size", "100000"], "argument --image-size: expected at most 1024 px (or "
                                 "native), got '100000'"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, expected, data_root, tmp_path):
    code, stdout, stderr = _run(["--preset", "smoke", "--data-root", data_root,
                                 "--out", str(tmp_path / "out")] + argv)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("bench.cifar: error: ")
    assert expected in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "out").exists()  # nothing started


def test_data_root_without_cifar_and_out_that_is_a_file(data_root, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = _run(["--preset", "smoke", "--data-root", str(empty),
                            "--out", str(tmp_path / "out")])
    assert code == 2 and stderr.count("\n") == 1
    assert f"CIFAR-10 not found in {empty}: the folder is empty" in stderr
    assert "--download" in stderr
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below"):
        code, _, stderr = _run(["--preset", "smoke", "--data-root", data_root,
                                "--out", str(out)])
        assert code == 2 and stderr.count("\n") == 1 and "is a file, not a folder" in stderr


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.cifar", "--models", "resnet18",
                             "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("bench.cifar: error: --models: unknown model 'resnet18'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# ---------------------------------------------------------------- config and plan

def _tiny_data():
    images = np.zeros((4, 32, 32, 3), np.uint8)
    test = gluonft.datasets.ImageSet(images, np.array([0, 1, 2, 3]), tuple("abcdefghij"), "t")
    return Data(train=test, val=None, test=test, description={"root": "/d"})


def test_flags_override_the_preset_and_are_marked(tmp_path):
    config = cifar_config.parse_config(["--preset", "cpu", "--epochs", "2", "--lr", "head=0.1",
                                 "--image-size", "native", "--train-per-class", "all",
                                 "--out", str(tmp_path)])
    cpu = PRESETS["cpu"]
    assert config.epochs == 2 and config.batch_size == cpu.batch_size
    assert config.lr == {**cpu.lr, "head": 0.1}
    assert config.image_size is None and config.train_per_class is None
    assert config.test_per_class == cpu.test_per_class
    assert config.models == CPU_MODELS and config.regimes == ("head", "full")
    assert cifar_config.parse_config(["--preset", "full"]).models == DEFAULT_MODELS
    assert config.baseline == "train" and config.seeds == (0,)
    lines = "\n".join(cifar.preset_lines(config))
    assert "epochs           2" in lines and "(--epochs; preset: 6)" in lines
    assert "batch_size       64" in lines and "image_size       native" in lines
    assert cifar_config.parse_config(["--lr", "0.3"]).lr == {
        "head": 0.3, "last_k": 0.3, "full": 0.3, "scratch": 0.3}
    # No GPU here: the default preset is cpu.
    assert cifar_config.parse_config([]).preset == "cpu"
    assert cifar_config.parse_config([]).out.startswith(os.path.join("runs", "cifar10-"))


def test_every_training_and_data_flag_reaches_the_config(tmp_path):
    config = cifar_config.parse_config([
        "--preset", "smoke", "--batch-size", "16", "--optimizer", "adam", "--momentum", "0.5",
        "--wd", "0.001", "--schedule", "onecycle", "--warmup-epochs", "2",
        "--image-size", "48", "--train-per-class", "7", "--test-per-class", "all",
        "--val-fraction", "0", "--baseline-epochs", "3", "--baseline-lr", "0.2",
        "--ctx", "cpu", "--download", "--keep-checkpoints", "--summary-rows", "4",
        "--no-progress", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert (config.batch_size, config.optimizer, config.momentum, config.wd) == (
        16, "adam", 0.5, 0.001)
    assert (config.schedule, config.warmup_epochs, config.image_size) == ("onecycle", 2.0, 48)
    assert (config.train_per_class, config.test_per_class, config.val_fraction) == (7, None, 0)
    assert (config.baseline_epochs, config.baseline_lr) == (3, 0.2)
    assert config.ctx == ("cpu(0)",) and config.download and config.keep_checkpoints
    assert config.summary_rows == 4 and not config.progress
    assert config.data_root == str(tmp_path) and config.out == str(tmp_path / "o")
    plan = cifar.plan_experiments(config, _tiny_data())
    mobilenet = [e for e in plan if e.model == "mobilenet0.75"][0]
    assert mobilenet.schedule_obj == gluonft.Schedule("onecycle", warmup_epochs=2.0)
    assert mobilenet.image_size == 48 and mobilenet.optimizer == "adam"


def test_plan_is_baseline_then_models_x_regimes_x_seeds():
    config = cifar_config.parse_config([
        "--preset", "cpu", "--models", f"{MOBILENET},{RESNET20}",
        "--regimes", "head,last_k:2,scratch", "--seeds", "0,1",
        "--weights", f"{MOBILENET}=/w/m.params"])
    plan = cifar.plan_experiments(config, _tiny_data())
    assert [e.id for e in plan[:2]] == ["lab1_cnn-scratch-s0", "lab1_cnn-scratch-s1"]
    assert len(plan) == 2 + 2 * 3 * 2
    by_id = {e.id: e for e in plan}
    assert by_id[f"{MOBILENET}-last_k2-s1"].regime == "last_k:2"
    assert by_id[f"{MOBILENET}-head-s0"].weights == "/w/m.params"
    assert by_id[f"{MOBILENET}-scratch-s0"].weights is None
    assert by_id[f"{RESNET20}-head-s0"].weights == "default"
    assert by_id[f"{MOBILENET}-head-s0"].image_size == 64
    assert by_id[f"{RESNET20}-head-s0"].image_size == 32  # never above its pretrained size
    assert by_id[f"{MOBILENET}-last_k2-s0"].lr == PRESETS["cpu"].lr["last_k"]
    baseline = by_id["lab1_cnn-scratch-s1"]
    assert baseline.epochs == PRESETS["cpu"].baseline_epochs and baseline.image_size == 32
    assert baseline.label == "Lab 1 CNN" and baseline.kind == "baseline"
    assert by_id[f"{MOBILENET}-head-s0"].config != by_id[f"{MOBILENET}-head-s1"].config
    recorded = cifar.plan_experiments(cifar_config.parse_config(
        ["--models", RESNET20, "--baseline-acc", "0.7", "--baseline-name", "Mine"]),
        _tiny_data())
    assert recorded[0].recorded_accuracy == 0.7 and recorded[0].label == "Mine"
    assert [e.kind for e in cifar.plan_experiments(cifar_config.parse_config(
        ["--models", RESNET20, "--no-baseline"]), _tiny_data())] == ["transfer", "transfer"]
    assert experiment_id("a", "last_k:10", 2) == "a-last_k10-s2"


def test_the_report_is_written_and_a_broken_one_costs_only_a_warning(tmp_path, monkeypatch):
    lines, calls = [], []
    monkeypatch.setattr(cifar, "write_report",  # the report writer bench.cifar calls
                        lambda out_dir: calls.append(out_dir) or f"{out_dir}/report.html")
    cifar._write_report(str(tmp_path), lines.append)
    assert calls == [str(tmp_path)] and lines == [f"report: {tmp_path}/report.html"]

    def broken(out_dir):
        raise RuntimeError("template missing")

    monkeypatch.setattr(cifar, "write_report", broken)
    cifar._write_report(str(tmp_path), lines.append)
    assert lines[-1] == "warning: the HTML report failed: RuntimeError: template missing"


# ---------------------------------------------------------------- faults (issue 10)

def _smoke_argv(shared, out, *extra):
    data, weights = _paths(shared)
    return ["--preset", "smoke", "--data-root", str(data), "--models", MOBILENET,
            "--regimes", "head", "--weights", f"{MOBILENET}={weights[MOBILENET]}",
            "--no-baseline", "--out", str(out), "--no-progress", *extra]


def _reject_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def test_the_experiment_seed_initialises_the_new_head():
    from bench.grid import Experiment, build_net

    def head(seed):
        experiment = Experiment(id=f"x-s{seed}", model=RESNET20, regime="head", seed=seed,
                                weights=None)
        return build_net(experiment, ctx=[mx.cpu()]).output.weight.data().asnumpy()

    assert not np.array_equal(head(0), head(1))
    np.testing.assert_array_equal(head(1), head(1))


def test_a_diverging_experiment_is_failed_with_its_cause_and_never_best(shared, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = _run(_smoke_argv(shared, out, "--lr", "1000"))
    assert code == 1
    (record,) = read_results(out / "results.json")
    assert record.status == "failed" and "diverged" in record.error
    assert "learning rate is the likely cause (lr=1000" in record.error
    assert not (out / "best.params").exists() and not (out / "best.json").exists()
    for name in ("results.json", "accuracy.json", "config.json"):
        json.loads((out / name).read_text(), parse_constant=_reject_constant)
    written = [line for line in stdout.splitlines() if line.startswith("written:")]
    assert "best.json" not in written[0] and "results.json" in written[0]


def test_a_second_run_on_the_same_folder_is_refused_and_names_the_first(shared, tmp_path):
    out = tmp_path / "out"
    hold = ("import sys, time\nfrom gluonft.fileio import FolderLock\n"
            "FolderLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")
    first = subprocess.Popen([sys.executable, "-c", hold, str(out)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        code, stdout, stderr = _run(_smoke_argv(shared, out))
        assert code == 2 and stderr.count("\n") == 1
        assert f"is in use by another run (pid {first.pid} on" in stderr
        assert not (out / "results.json").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # The holder was killed: its lock is stale, and the next run says so and proceeds.
    code, stdout, _ = _run(_smoke_argv(shared, out))
    assert code == 0 and f"took over the lock of {out}" in stdout and str(first.pid) in stdout


def test_a_rerun_tidies_what_a_kill_left_and_refuses_a_broken_results_file(shared, tmp_path):
    out = tmp_path / "out"
    assert _run(_smoke_argv(shared, out))[0] == 0
    exp = experiment_id(MOBILENET, "head", 0)
    # What a run killed after recording the experiment leaves: a temporary file, no curves,
    # the finished experiment's checkpoint.
    (out / ".results.json.k1ll.tmp").write_text("{half")
    (out / "curves" / f"{exp}.png").unlink()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / f"{exp}.json").write_text("{}")
    code, stdout, _ = _run(_smoke_argv(shared, out))
    assert code == 0 and "skipped: already finished" in stdout
    assert "removed 1 half-written temporary file(s)" in stdout
    assert not (out / ".results.json.k1ll.tmp").exists()
    assert (out / "curves" / f"{exp}.png").exists() and not (out / "checkpoints").exists()

    (out / "results.json").write_text('{"records": [{"id": 3}]}')
    code, stdout, stderr = _run(_smoke_argv(shared, out))
    assert code == 2 and stderr.count("\n") == 1
    assert f"{out / 'results.json'}: record 0 is not a valid experiment record" in stderr


def test_interrupted_start_up_is_one_line_and_exit_130(monkeypatch, tmp_path):
    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(cifar, "parse_config", interrupted)
    code, stdout, stderr = _run(["--out", str(tmp_path / "o")])
    assert code == 130 and stderr == "bench.cifar: interrupted; run the same command again to " \
                                     "resume\n"
