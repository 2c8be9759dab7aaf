"""`python -m bench.precision`: float32 against bfloat16 training, each in its own process."""
import json
import math

from bench import precision
from gluonft.cpu import cpu_flags


def test_each_precision_trains_in_its_own_process_and_says_what_it_computed_in(tmp_path):
    result = precision.main(["--models", "cifar_resnet20_v1", "--sizes", "40", "--repeats", "1",
                             "--images", "64", "--out", str(tmp_path)])
    row, = result["rows"]
    assert row["trained_at"] == [40]  # the size asked for, not the net's default (32)
    assert row["float32_computed_in"] == ["float32"]  # the float32 child never started AMP
    assert math.isfinite(row["float32_train_loss"]) and row["float32"] > 0
    if "avx512f" in cpu_flags():  # oneDNN has bfloat16 kernels: measured beside float32
        assert result["bfloat16_unavailable"] is None
        # MXNet AMP itself says the child computed in bfloat16, and it trained
        assert row["bfloat16_computed_in"] == ["bfloat16"]
        assert math.isfinite(row["bfloat16_train_loss"])
        assert row["bfloat16_vs_float32"] == row["bfloat16"] / row["float32"]
    else:  # fit's own refusal, naming what this CPU has
        assert "amp='bfloat16' needs a CPU with AVX-512" in result["bfloat16_unavailable"]
        assert "bfloat16" not in row
    assert json.loads((tmp_path / "precision.json").read_text())["rows"] == result["rows"]
