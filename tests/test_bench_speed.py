"""`python -m bench.speed` end to end on a tiny configuration: it runs, prints the table and
saves files that load back. Structure only: speed itself is never asserted in tests."""
import importlib.util
import json

import pytest

from bench import speed


def test_speed_bench_runs_and_saves_a_table_and_a_record(tmp_path, capsys):
    out = tmp_path / "speed"
    record = speed.main(["--models", "mobilenet0.25", "--sizes", "32", "--repeats", "1",
                         "--images", "64", "--val-images", "16", "--batch-size", "32",
                         "--data", "random", "--out", str(out)])
    saved = json.loads((out / "speed.json").read_text())
    assert saved["config"]["models"] == ["mobilenet0.25"] and saved["data"].startswith("random")
    row = saved["rows"][0]
    assert (row["model"], row["size"]) == ("mobilenet0.25", 32) and len(row["samples"]) == 1
    for key in ("fit_vs_bare", "cached_speedup", "cached_speedup_warm", "last_k_vs_full",
                "loader_images_per_s", "head_cached_epoch_s", "head_uncached_10_epochs_s"):
        assert row["median"][key] > 0
    assert set(row["targets"]) == {name for name, *_ in speed.TARGETS}
    assert saved["all_targets_met"] == record["all_targets_met"]
    table = (out / "speed.md").read_text()
    assert "| mobilenet0.25 | 32 |" in table and "Targets:" in table
    assert "| mobilenet0.25 | 32 |" in capsys.readouterr().out


def test_speed_bench_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        speed.main(["--models", "resnet18"])  # not a backbone name
    with pytest.raises(SystemExit):
        speed.main(["--sizes", "32,big"])


def test_peer_without_a_torch_python_names_the_way_to_make_one(tmp_path):
    from bench import speed
    with pytest.raises(SystemExit, match=r"no peer Python at .*nowhere.*make torch"):
        speed.main(["--peer", "torch", "--peer-python", str(tmp_path / "nowhere"),
                    "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written for a run that could not start


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed beside gluonft (make torch)")
def test_peer_times_both_frameworks_on_nets_of_equal_size(tmp_path):
    from bench import speed
    record = speed.main(["--peer", "torch", "--models", "mobilenet0.75", "--sizes", "32",
                         "--repeats", "1", "--seconds", "0.3", "--out", str(tmp_path)])
    row, = record["rows"]
    assert row["params"] == 1_824_250  # the PyTorch net was checked to have as many
    assert all(row["median"][k] > 0 for k in ("fit", "torch_train", "gluonft_forward",
                                              "torch_forward"))
    assert (tmp_path / "peer.json").is_file() and (tmp_path / "peer.md").is_file()
