"""int8 features: the frozen prefix quantized by oneDNN, calibrated on training images.

``fit(..., feature_dtype="int8")`` computes the cached features of a frozen prefix through an
int8 copy of it: MXNet's `quantize_net_v2` (oneDNN's ``MKLDNN_QUANTIZE`` backend: int8
convolutions with fused BatchNorm and ReLU, uint8/int8 activations between them) with the
activation ranges calibrated ("naive": min/max) on `CALIBRATION_IMAGES` training images
chosen by the run's seed. The head then trains on those features; prediction afterwards runs
the float32 net (`gluonft.inference`), so what int8 costs shows in the test accuracy a user
gets from `evaluate` / `predict_proba`.

Off by default: it loses accuracy. Measured on clothing-small (mobilenet0.75, ImageNet
weights, the fast recipe: head only at 160 px; ``python -m bench.variants --recipes fast
--feature-dtype float32 --feature-dtype int8``, README gives the table): the feature pass runs
~2.3x faster on an AVX-512 VNNI Xeon, but test accuracy drops by ~1.3 points. The int8
features point where the float ones do only to a cosine of 0.945 on average (0.87 at worst),
whatever the calibration (naive min/max or entropy), with the first convolution, the
depthwise convolutions or the pooling kept in float32, or per-channel weight scales (which
MXNet 1.9.1 accepts and ignores on this path): MobileNet's folded depthwise weights spread
over ranges that one int8 scale per tensor cannot hold. int8 is fast only where the CPU has
int8 dot-product instructions (AVX-512 VNNI, AMX); on AVX2 oneDNN emulates them.

EfficientNet-Lite quantizes well (ReLU6, no squeeze-excitation): Lite0's int8 features point
where the float ones do to a cosine of 0.989 on average, and the fast recipe's accuracy on
clothing-small moved by 0.2-0.4 points (within the seeds' spread); the feature pass ran 1.8x
faster on an AMX Xeon, but calibration and graph building cost more than that on 3,409 photos
(docs/speed.md has the table). Off by default for every net.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon

__all__ = ["FEATURE_DTYPES", "CALIBRATION_IMAGES", "int8_unavailable", "check_feature_dtype",
           "int8_block"]

FEATURE_DTYPES = ("float32", "int8")
# Enough images for min/max ranges that change by < 1 % when doubled (naive calibration).
CALIBRATION_IMAGES = 256


def check_feature_dtype(value) -> str:
    if value not in FEATURE_DTYPES:
        raise ValueError(f"feature_dtype must be one of {', '.join(FEATURE_DTYPES)}, got "
                         f"{value!r}")
    return value


def int8_unavailable(contexts: Sequence[mx.Context]) -> Optional[str]:
    """None when int8 features can be computed on ``contexts``, else why not."""
    if len(contexts) != 1 or contexts[0].device_type != "cpu":
        return (f"int8 features run on one CPU context (oneDNN), got "
                f"{[str(c) for c in contexts]}")
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        return "this MXNet build has no oneDNN (MKLDNN), which int8 features need"
    return None


def int8_block(prefix: gluon.HybridBlock, calibration: mx.nd.NDArray, *, batch_size: int,
               ctx: mx.Context) -> gluon.SymbolBlock:
    """An int8 copy of ``prefix`` calibrated on ``calibration`` (normalised float inputs,
    N x 3 x H x W), whose outputs are float32 like the prefix's.

    Example:
        >>> q = int8_block(prefix, x_train[:256], batch_size=64, ctx=mx.cpu())  # doctest: +SKIP
    """
    from mxnet.contrib.quantization import quantize_net_v2
    batch = min(batch_size, len(calibration))
    prefix.hybridize(static_alloc=True, static_shape=True)
    prefix(calibration[:batch]).wait_to_read()  # quantize_net_v2 exports the traced graph
    batches = mx.io.NDArrayIter(data=calibration, batch_size=batch, last_batch_handle="discard")
    quantized = quantize_net_v2(
        prefix, quantized_dtype="auto", calib_mode="naive", calib_data=batches,
        data_shapes=[mx.io.DataDesc("data", (batch,) + tuple(calibration.shape[1:]))],
        num_calib_examples=len(calibration) // batch * batch, ctx=mx.cpu())
    quantized.hybridize(static_alloc=True, static_shape=True)
    return quantized


def calibration_indices(count: int, seed: int) -> np.ndarray:
    """Which training images calibrate: `CALIBRATION_IMAGES` of them (all when fewer), seeded,
    in stored order."""
    chosen = np.random.RandomState(seed).permutation(count)[:CALIBRATION_IMAGES]
    return np.sort(chosen)
