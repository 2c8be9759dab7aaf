"""gluonft.results: records round-trip, files are written atomically, the grid is read right."""
import csv
import json
import os

import mxnet as mx
import pytest

from gluonft.errors import one_line
from gluonft.fileio import atomic_write, atomic_write_json, library_versions
from gluonft.intervals import mean_interval, wilson_interval
from gluonft.plots import overlap_note
from gluonft.regimes import regime_title
from gluonft.results import (
    CSV_COLUMNS,
    SELECTION_NOTES,
    ExperimentRecord,
    accuracy_bars,
    best_record,
    environment,
    indistinguishable,
    model_card,
    read_results,
    records_to_csv,
    results_table,
    selection_basis,
    write_results,
)


def _ok(id_, acc, *, model="m", regime="head", seed=0, kind="transfer", **extra):
    return ExperimentRecord(
        id=id_, model=model, regime=regime, seed=seed, kind=kind, test_accuracy=acc,
        test_loss=1.0 - acc, test_count=100, params_total=1000, params_trainable=10,
        modified_layers=("output (new Dense(10))",),
        initialisation={"kind": "file", "path": "/w/m.params", "sha1": "ab" * 20,
                        "dataset": None, "description": "weights from /w/m.params"},
        training={"optimizer": "sgd", "optimizer_params": {"learning_rate": 0.05,
                                                           "momentum": 0.9, "wd": 1e-4},
                  "epochs": 2, "batch_size": 32, "classes": 10,
                  "schedule": {"name": "cosine", "warmup_epochs": 0.0}},
        history=({"epoch": 1.0, "train_acc": 0.5, "val_acc": 0.4},
                 {"epoch": 2.0, "train_acc": 0.6, "val_acc": 0.5}),
        plan={"description": "head: the new head only"},
        image_size=32, train_seconds=3.0, images_per_s=100.0,
        environment={"devices": ["cpu(0)"]}, **extra)


def _failed(id_, *, model="m", regime="head", seed=0):
    return ExperimentRecord(id=id_, model=model, regime=regime, seed=seed, status="failed",
                            error="WeightsUnavailable: not on this machine")


def _recorded(acc=0.72):
    return ExperimentRecord(id="baseline-recorded", model="baseline", regime="recorded", seed=0,
                            kind="baseline", status="recorded", label="Lab 1 CNN",
                            test_accuracy=acc)


# ---------------------------------------------------------------- records

def test_record_round_trips_through_json_and_csv_agrees(tmp_path):
    records = [_ok("m-head-s0", 0.8), _failed("r-head-s0", model="r"), _recorded()]
    write_results(records, json_path=str(tmp_path / "results.json"),
                  csv_path=str(tmp_path / "results.csv"))

    back = read_results(str(tmp_path / "results.json"))
    assert back == records
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    assert [r["id"] for r in rows] == [r.id for r in records]
    assert [r["status"] for r in rows] == ["ok", "failed", "recorded"]
    assert float(rows[0]["test_accuracy"]) == 0.8 and rows[1]["test_accuracy"] == ""
    assert rows[1]["error"] == "WeightsUnavailable: not on this machine"
    assert json.loads(rows[0]["optimizer_params"])["learning_rate"] == 0.05
    assert rows[0]["weights_sha1"] == "ab" * 20 and rows[0]["device"] == "cpu(0)"


def test_group_is_the_id_without_the_seed_and_label_defaults_to_model():
    record = _ok("mobilenet0.75-last_k2-s3", 0.5, model="mobilenet0.75", seed=3)
    assert record.group == "mobilenet0.75-last_k2"
    assert record.label == "mobilenet0.75"
    assert _recorded().group == "baseline-recorded"


@pytest.mark.parametrize("kwargs, message", [
    (dict(status="done", test_accuracy=0.5), "status must be one of"),
    (dict(kind="other", test_accuracy=0.5), "kind must be one of"),
    (dict(status="failed"), "needs its reason"),
    (dict(status="ok"), "needs test_accuracy"),
])
def test_record_rejects_inconsistent_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExperimentRecord(id="x-head-s0", model="x", regime="head", seed=0, **kwargs)


def test_read_results_names_a_file_that_is_not_a_results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="no 'records' list"):
        read_results(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        read_results(str(path))


def test_from_dict_ignores_keys_of_newer_versions():
    data = _ok("m-head-s0", 0.5).to_dict()
    data["something_new"] = 1
    assert ExperimentRecord.from_dict(data) == _ok("m-head-s0", 0.5)


# ---------------------------------------------------------------- atomic writes

def test_atomic_write_replaces_whole_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "config.json"
    atomic_write_json(str(path), {"a": 1})
    atomic_write_json(str(path), {"a": 2, "t": (1, 2)})
    assert json.loads(path.read_text()) == {"a": 2, "t": [1, 2]}
    assert os.listdir(path.parent) == ["config.json"]


def test_atomic_write_gives_the_permissions_of_any_new_file(tmp_path):
    # mkstemp's private 0600 must not leak into results a user shares (0666 minus the umask).
    old = os.umask(0o022)
    try:
        path = atomic_write_json(str(tmp_path / "results.json"), {"records": []})
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(str(path), {"records": []})

    def half_then_crash(tmp):
        with open(tmp, "w") as f:
            f.write('{"records": [')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), half_then_crash)
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic_write_json(str(path), {"x": object()})
    assert json.loads(path.read_text()) == {"records": []}
    assert os.listdir(tmp_path) == ["results.json"]


def test_atomic_write_saves_net_parameters(tmp_path):
    net = mx.gluon.nn.Dense(3, in_units=2)
    net.initialize()
    path = atomic_write(str(tmp_path / "best.params"), net.save_parameters)
    other = mx.gluon.nn.Dense(3, in_units=2)
    other.load_parameters(path)
    assert (other.weight.data() == net.weight.data()).asnumpy().all()


# ---------------------------------------------------------------- the grid

def _val(record, accuracy):
    import dataclasses
    return dataclasses.replace(record, history=record.history[:-1]
                               + ({**record.history[-1], "val_acc": accuracy},))


def test_best_record_is_chosen_on_validation_never_on_the_test_set():
    """The audit's case: choosing on test accuracy reports a biased 'best'."""
    records = [_val(_ok("a-head-s0", 0.9), 0.6), _failed("b-head-s0"), _recorded(0.99),
               _val(_ok("c-full-s0", 0.7), 0.8), _val(_ok("d-full-s0", 0.95), 0.8)]
    assert selection_basis(records) == "validation"
    assert best_record(records).id == "c-full-s0"  # highest validation, first of a tie
    assert best_record([_failed("b-head-s0"), _recorded()]) is None
    card = model_card(best_record(records))
    assert card["val_accuracy"] == 0.8 and card["test_accuracy"] == 0.7


def test_without_validation_the_best_is_chosen_on_test_and_says_so():
    import dataclasses
    records = [dataclasses.replace(r, history=tuple({k: v for k, v in h.items() if k != "val_acc"}
                                                    for h in r.history))
               for r in (_ok("a-head-s0", 0.6), _ok("c-full-s0", 0.7), _ok("d-full-s0", 0.7))]
    assert selection_basis(records) == "test"
    assert best_record(records).id == "c-full-s0"  # recorded never wins; first of a tie
    assert "optimistic" in SELECTION_NOTES["test"]


def test_accuracy_bars_group_repeats_with_mean_and_sample_std():
    records = [_recorded(0.72),
               _ok("a-head-s0", 0.5, seed=0), _ok("a-head-s1", 0.6, seed=1),
               _ok("a-head-s2", 0.7, seed=2),
               _ok("a-full-s0", 0.8, regime="full"),
               _failed("b-head-s0", model="b"),
               _ok("c-head-s0", 0.4, model="c"), _failed("c-head-s1", model="c", seed=1)]
    bars = accuracy_bars(records)
    assert [b["group"] for b in bars] == ["baseline-recorded", "a-head", "a-full", "b-head",
                                         "c-head"]
    base, head, full, failed, partial = bars
    assert base["status"] == "recorded" and base["kind"] == "baseline" and base["mean"] == 0.72
    assert head["n"] == 3 and head["seeds"] == [0, 1, 2]
    assert head["mean"] == pytest.approx(0.6) and head["std"] == pytest.approx(0.1)
    assert full["std"] is None and full["n"] == 1 and full["epochs"] == 2
    assert failed["status"] == "failed" and failed["mean"] is None
    assert failed["errors"] == ["WeightsUnavailable: not on this machine"]
    assert partial["status"] == "ok" and partial["n"] == 1 and partial["failed"] == 1


def test_model_card_has_what_the_issue_asks_and_repeats():
    records = [_ok("a-head-s0", 0.5), _ok("a-head-s1", 0.7, seed=1)]
    card = model_card(records[1], repeats=records)
    for key in ("source_model", "modified_layers", "regime", "optimizer", "optimizer_params",
                "initialisation", "test_accuracy"):
        assert card[key] is not None, key
    assert card["source_model"] == "m" and card["test_accuracy"] == 0.7
    assert card["optimizer_params"]["momentum"] == 0.9
    assert card["repeats"]["n"] == 2 and card["repeats"]["mean"] == pytest.approx(0.6)
    json.dumps(card)
    with pytest.raises(ValueError, match="needs a trained experiment"):
        model_card(_failed("b-head-s0"))


def test_results_table_lists_every_experiment_and_failure_reasons():
    table = results_table([_ok("a-head-s0", 0.5), _failed("b-head-s0"), _recorded()])
    assert "a-head-s0" in table and "50.0%" in table
    assert "WeightsUnavailable" in table
    assert "[Lab 1 CNN]" in table and "72.0%" in table
    assert "m.params (sha1 abababababab)" in table


def test_regime_titles():
    assert regime_title("head") == "head only"
    assert regime_title("last_k:1") == "last 1 block"
    assert regime_title("last_k:3") == "last 3 blocks"
    assert regime_title("scratch") == "from scratch"


# ---------------------------------------------------------------- environment

def test_environment_names_devices_host_and_versions():
    env = environment(devices=[mx.cpu()])
    assert env["devices"] == ["cpu(0)"]
    assert env["cpu_count"] == os.cpu_count() and env["host"] and env["platform"]
    versions = env["versions"]
    assert versions == library_versions()
    assert versions["mxnet"] == mx.__version__
    assert versions["gluoncv"].startswith("0.10.5")  # the distribution, not its __version__
    for key in ("numpy", "python", "matplotlib", "gluonft"):
        assert versions[key], key
    json.dumps(env)


def test_one_line_keeps_the_message_without_mxnet_stack_trace():
    error = mx.MXNetError("[12:00:00] src/storage.cc:42: Out of memory\nStack trace:\n"
                          "  [bt] (0) libmxnet.so(+0x1)")
    assert one_line(error) == "MXNetError: [12:00:00] src/storage.cc:42: Out of memory"
    assert one_line(ValueError("")) == "ValueError: (no message)"
    assert len(one_line(ValueError("x" * 1000))) < 420


def test_csv_of_no_records_is_the_header():
    assert records_to_csv([]) == ",".join(CSV_COLUMNS) + "\n"


# ---------------------------------------------------------------- how sure a comparison is

def test_wilson_interval_matches_the_textbook_values():
    # Wilson's interval for 8 of 10 (Newcombe 1998, table I: 0.490-0.943) and for 0 of 10.
    low, high = wilson_interval(0.8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0.0, 10)[0] == 0.0 and round(wilson_interval(0.0, 10)[1], 3) == 0.278
    # The half-width shrinks like 1/sqrt(n): 50 test images cannot tell 2 points apart.
    assert wilson_interval(0.5, 50)[1] - wilson_interval(0.5, 50)[0] > 0.25
    assert wilson_interval(0.5, 1017)[1] - wilson_interval(0.5, 1017)[0] < 0.065


def test_bars_carry_intervals_and_overlaps_are_found():
    records = [_ok("a-head-s0", 0.50), _ok("b-head-s0", 0.52), _ok("c-head-s0", 0.90)]
    bars = accuracy_bars(records)
    assert bars[0]["interval"] == "Wilson 95 %" and bars[0]["low"] < 0.5 < bars[0]["high"]
    assert indistinguishable(bars) == [(0, 1)]  # 2 points on 100 images: indistinguishable
    repeated = accuracy_bars([_ok("a-head-s0", 0.5), _ok("a-head-s1", 0.7, seed=1)])
    assert repeated[0]["interval"] == "95 % of the mean: seeds and test images"
    assert repeated[0]["low"] == pytest.approx(mean_interval([0.5, 0.7], 100)[0])


def test_with_several_seeds_the_interval_keeps_the_test_sets_noise():
    """The audit's case: A at 70.0/70.1/70.2 % and B at 70.7/70.8/70.9 % on 300 test images.
    Mean +- 1 SD over seeds (0.1 point) dropped the test set's binomial noise (about +-5
    points on 300 images, shared by every seed), so the two looked different."""
    a = [_ok(f"a-head-s{i}", acc, seed=i) for i, acc in enumerate((0.700, 0.701, 0.702))]
    b = [_ok(f"b-full-s{i}", acc, seed=i, regime="full")
         for i, acc in enumerate((0.707, 0.708, 0.709))]
    for record in a + b:
        object.__setattr__(record, "test_count", 300)
    bars = accuracy_bars(a + b)
    binomial_half = 1.96 * (0.701 * 0.299 / 300) ** 0.5
    assert bars[0]["high"] - bars[0]["mean"] >= binomial_half
    assert indistinguishable(bars) == [(0, 1)]
    note = overlap_note(bars)
    assert "on 300 test images" in note and "seeds and the test images' sampling noise" in note
    # many seeds of one configuration: the seed term shrinks, the test term stays
    many = mean_interval([0.70, 0.71] * 20, 300)
    assert many[1] - many[0] > 2 * binomial_half * 0.99
    # with a huge test set the seeds' own spread (t interval of 3) decides
    low, high = mean_interval([0.700, 0.701, 0.702], 10 ** 9)
    assert high - 0.701 == pytest.approx(4.303 * 0.001 / 3 ** 0.5, rel=1e-3)


def test_where_a_backbone_was_pretrained_is_shown_and_a_same_task_best_is_flagged():
    same_task = _ok("r-head-s0", 0.93, model="cifar_resnet20_v1", pretrained_on="cifar10")
    card = model_card(same_task)
    assert card["pretraining"] == "CIFAR-10 (same task, not transfer)"
    assert "not transfer learning" in card["note_pretraining"]
    assert "note_pretraining" not in model_card(_ok("m-head-s0", 0.6, pretrained_on="imagenet"))
    table = results_table([same_task, _ok("m-head-s0", 0.6, pretrained_on="imagenet")])
    assert "CIFAR-10 (same task, not transfer)" in table and "ImageNet" in table
    assert "86.3-96.6%" in table  # 93 of 100: the Wilson interval, in the table
