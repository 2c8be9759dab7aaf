"""`python -m bench.operators`: a training step's time per MXNet operator and oneDNN kernel."""
import json
import os

import pytest
from mxnet.gluon import nn

import gluonft
from bench import operators


def test_the_profile_names_the_kernels_that_train_efficientnet_lite(tmp_path):
    bulking = os.environ.get(operators.BULK_VARIABLE)
    result = operators.main(["--model", "efficientnet_lite0", "--size", "64", "--steps", "1",
                             "--onednn", "--out", str(tmp_path)])
    # Bulking goes back as it was: left off, it reached the distributed tests' processes.
    assert os.environ.get(operators.BULK_VARIABLE) == bulking
    names = {row["operator"] for row in result["operators"]}
    # Every operator is timed on its own (bulking off), convolutions forward and backward.
    assert {"Convolution", "_backward_Convolution", "BatchNorm"} <= names
    # ReLU6 is MXNet's own `clip` kernel, not oneDNN's: what makes Lite train slowly.
    assert {"clip", "_backward_clip"} <= names
    assert sum(row["share"] for row in result["operators"]) == pytest.approx(1.0)
    primitives = {row["primitive"] for row in result["onednn"]}
    # oneDNN's depthwise kernels take the 3x3 weight gradients; the 5x5 ones (kw > 3, refused
    # by jit_uni_dw_conv_bwd_weights on every x86 ISA) fall back to its gemm convolution.
    assert any(p.startswith("convolution:jit_dw") and p.endswith("backward_weights")
               for p in primitives)
    assert "convolution:x64:gemm:jit:backward_weights" in primitives
    saved = json.loads((tmp_path / "operators.json").read_text())
    assert saved["operators"] == result["operators"] and saved["model"] == "efficientnet_lite0"


def test_a_cut_past_the_features_is_one_clear_line():
    expected = r"--cut must be in \[0, 24\] for efficientnet_lite0 \(25 steps"
    with pytest.raises(SystemExit, match=expected):
        operators.main(["--model", "efficientnet_lite0", "--size", "64", "--cut", "40"])


def test_a_cut_trains_only_the_steps_after_it():
    net = gluonft.load_backbone("efficientnet_lite0", classes=10, weights=None, seed=0)

    def convolutions(block):
        own = isinstance(block, nn.Conv2D)
        return own + sum(convolutions(child) for child in block._children.values())

    steps = list(net.features._children.values())
    result = operators.main(["--model", "efficientnet_lite0", "--size", "64", "--steps", "1",
                             "--cut", "20"])
    calls = {row["operator"]: row["calls_per_step"] for row in result["operators"]}
    trained = sum(convolutions(step) for step in steps[20:])
    assert 0 < trained < sum(convolutions(step) for step in steps)
    assert calls["Convolution"] == calls["_backward_Convolution"] == trained
