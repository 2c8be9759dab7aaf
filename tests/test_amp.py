"""Mixed precision (MXNet AMP) in `gluonft.fit`.

float16 AMP needs a GPU; on a CPU it is refused with a clear error. The same code path (AMP's
operator casts, dynamic loss scaling, the trainer hook) runs here in bfloat16 on CPUs with
AVX512-BF16. AMP patches MXNet for the whole process, so it runs in a child process.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.cpu import ISA_FLAGS, cpu_flags, native_bfloat16
from gluonft.datasets import ImageSet
from gluonft.results import environment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif("avx512f" in cpu_flags() or not cpu_flags(),
                    reason="this CPU has AVX-512: oneDNN has bfloat16 kernels for it")
def test_bfloat16_on_a_cpu_without_avx512_is_a_clear_error_before_anything_is_patched():
    """Without the check MXNet fails inside its first convolution: "MXNetError: could not
    create a primitive descriptor iterator" (seen on this AVX2 CPU)."""
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=mx.cpu())
    gluonft.apply_regime(net, "scratch")
    images = ImageSet(np.zeros((4, 32, 32, 3), dtype="uint8"), np.array([0, 1, 0, 1], "int32"),
                      ("a", "b"), "t")
    with pytest.raises(ValueError, match=r"amp='bfloat16' needs a CPU with AVX-512 .* this CPU "
                                         r"has .*avx2.*: train in float32 \(amp=False\)"):
        gluonft.fit(net, images, epochs=1, batch_size=2, lr=0.1, ctx=mx.cpu(), amp="bfloat16")
    from mxnet.contrib import amp
    assert not amp.amp._amp_initialized


def test_results_say_which_kernels_and_precision_ran():
    """The CPU's instruction sets as /proc/cpuinfo lists them, MXNet's oneDNN backend (the pip
    wheel has it), and float32 in a process without AMP."""
    env = environment(devices=[mx.cpu()])
    kernels = env["kernels"]
    assert kernels["onednn"] is True and env["precision"] == "float32"
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    assert kernels["cpu_isa"] == [f for f in ISA_FLAGS if f in flags]
    assert kernels["native_bfloat16"] == bool({"avx512_bf16", "amx_bf16"} & set(flags))
    assert kernels["settings"].get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")


def test_float16_amp_on_a_cpu_is_a_clear_error_and_bad_values_are_named():
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=mx.cpu())
    gluonft.apply_regime(net, "scratch")
    images = ImageSet(mx.nd.zeros((4, 32, 32, 3), dtype="uint8").asnumpy(),
                      mx.nd.array([0, 1, 0, 1]).asnumpy().astype("int32"), ("a", "b"), "t")
    with pytest.raises(ValueError, match=r"amp=True \(float16 training\) needs GPU contexts, "
                                         r"got cpu\(0\).*amp=False"):
        gluonft.fit(net, images, epochs=1, batch_size=2, lr=0.1, ctx=mx.cpu(), amp=True)
    with pytest.raises(ValueError, match="amp must be False, True, 'float16' or 'bfloat16', "
                                         "got 'fp16'"):
        gluonft.fit(net, images, epochs=1, batch_size=2, lr=0.1, ctx=mx.cpu(), amp="fp16")
    from mxnet.contrib import amp
    assert not amp.amp._amp_initialized  # refused before anything was patched


CHILD = r"""
import json, sys
import gluonft  # first: on numpy >= 1.24 MXNet cannot load before it (gluonft.compat)
import numpy as np, mxnet as mx
shared = sys.argv[1]
data = gluonft.datasets.cifar10(shared + "/data/cifar-10-subset", train=True)
train = data.subset(n_per_class=50, seed=0)
test = gluonft.datasets.cifar10(shared + "/data/cifar-10-subset", train=False).subset(
    n_per_class=30, seed=0)
out = {}
for amp in (False, "bfloat16"):  # float32 first: AMP cannot be switched off afterwards
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, ctx=mx.cpu(),
                                weights=shared + "/weights/cifar_resnet20_v1-cifar10.params")
    plan = gluonft.apply_regime(net, "last_k", k=1)
    frozen = {k: p.data().asnumpy().copy() for k, p in net.collect_params().items()}
    history = gluonft.fit(net, train, test, epochs=2, batch_size=50, lr=0.02, ctx=mx.cpu(),
                          progress=False, amp=amp, augment=gluonft.Augment.none())
    params = net.collect_params()
    moved = [k for k, p in params.items() if not np.array_equal(frozen[k], p.data().asnumpy())]
    out[str(amp)] = {"val_acc": history["val_acc"], "amp": history.settings.get("amp"),
                     "moved": moved, "trainable": [k for k, p in params.items()
                                                   if p.grad_req != "null"],
                     "dtypes": sorted({str(p.data().dtype) for p in params.values()})}
# AMP cannot be switched off in a process: a later fit(amp=False) says so and records it.
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, ctx=mx.cpu(), weights=None)
    gluonft.apply_regime(net, "head")
    later = gluonft.fit(net, train, epochs=1, batch_size=50, lr=0.02, ctx=mx.cpu(),
                        progress=False, amp=False)
out["later"] = {"amp": later.settings.get("amp"),
                "warned": any("cannot be turned off" in str(w.message) for w in caught)}
# Proof that AMP patched MXNet: a convolution now computes in bfloat16.
x = mx.nd.ones((1, 3, 8, 8))
w = mx.nd.ones((4, 3, 3, 3))
out["conv_dtype"] = str(mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True).dtype)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.skipif(not native_bfloat16(),
                    reason="this CPU has no AVX512-BF16 or AMX for MXNet's bfloat16 AMP")
def test_bfloat16_amp_trains_like_float32_on_real_images(shared):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(shared)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    fp32, bf16 = result["False"], result["bfloat16"]
    assert fp32["amp"] is None and bf16["amp"] == "bfloat16"
    assert "bfloat16" in result["conv_dtype"]
    assert result["later"] == {"amp": "bfloat16", "warned": True}
    # Master weights stay float32; in both precisions every trainable weight moved and,
    # apart from the running statistics of the trainable block's BatchNorms, nothing else.
    assert bf16["dtypes"] == ["<class 'numpy.float32'>"]
    for run in (fp32, bf16):
        others = set(run["moved"]) - set(run["trainable"])
        assert set(run["trainable"]) <= set(run["moved"])
        assert others and all(re.search(r"_stage3_batchnorm\d+_running_(mean|var)$", k)
                              for k in others), sorted(others)
    # The pretrained net stays accurate (0.94 before) in both precisions.
    assert min(fp32["val_acc"]) > 0.85 and min(bf16["val_acc"]) > 0.85
    assert abs(fp32["val_acc"][-1] - bf16["val_acc"][-1]) < 0.05
