"""The forward pass outside training, as fast as MXNet runs it on this machine.

Every inference pass (prediction, evaluation, TTA, feature extraction for the cache, the
frozen prefix of `fit`) calls its block through `inference_forward`. On CPU contexts of an
MXNet built with oneDNN, a pass over enough images runs the block's *fused twin*: a
`SymbolBlock` of the block's own graph and `Parameter` objects (no copy), partitioned by
oneDNN's subgraph backend (``optimize_for(backend="MKLDNN")``: convolution + BatchNorm +
activation (ReLU, ReLU6 as ``clip``) + residual sum fused into one kernel, the blocked memory
layout kept from layer to layer).

One twin per pass, never kept: with static memory and shapes (the fast form) oneDNN folds
BatchNorm into the convolution weights when the twin first runs and never again, so a twin
kept across an optimiser step computes with the old weights (measured: logits 0.72 of their
scale off after 3 SGD steps); without static shapes it folds again on every call, which costs
a copy of all weights per batch (resnet18 at 64 px: 134 instead of 186 images/s). Weights do
not change during a pass, so a twin built at its start is exact, and costs its build: 0.15 s
(mobilenet0.75) to 1.1 s (resnet18_v1) on 2 cores. Passes over fewer than
`FUSION_MIN_IMAGES` images (one photo sent to the service) keep the plain hybridized block.

Measured on a 2-core Xeon (AVX-512), batch 32, images/s plain hybridized -> fused:
mobilenet0.75 101 -> 212 at 160 px, efficientnet_lite0 24 -> 92, resnet18_v1 45 -> 47
(``python -m bench.speed --peer torch`` prints today's figures side by side).

The twin is a different order of float operations (folded weights, fused kernels), not a
different computation: logits agree with the plain block to ~4e-6 of their scale
(tests/test_inference.py gives the tolerance and why).

Falls back to the block itself (hybridized as the caller asked) where the backend does not
apply: GPU contexts, an MXNet without oneDNN, nets whose parameters are not float32 (AMP
casts), a process where MXNet's AMP has patched the operators, or ``GLUONFT_FUSION=0`` in the
environment (to rule the backend out when debugging).

    >>> forward = inference_forward(net, [mx.cpu()], images=len(test))  # doctest: +SKIP
    >>> logits = forward(x)  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon

from .amp import active_dtype

__all__ = ["inference_forward", "fusion_available", "fused_twin", "FUSION_ENV",
           "FUSION_MIN_IMAGES"]

FUSION_ENV = "GLUONFT_FUSION"
# Below this many images a pass keeps the plain block: the twin's build (0.15-1.1 s) buys
# less than it costs (mobilenet0.75 at 160 px gains 4.5 ms per image: 55 images to break even).
FUSION_MIN_IMAGES = 256


def fusion_available(contexts: Sequence[mx.Context]) -> Optional[str]:
    """None when the fused oneDNN path applies on ``contexts``, else the reason it does not."""
    if os.environ.get(FUSION_ENV, "1").strip() in ("0", "false", "no", "off"):
        return f"{FUSION_ENV}={os.environ[FUSION_ENV]}"
    if any(ctx.device_type != "cpu" for ctx in contexts):
        return "oneDNN fusion is a CPU backend; the contexts include a GPU"
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        return "this MXNet build has no oneDNN (MKLDNN)"
    if active_dtype():
        return f"MXNet AMP ({active_dtype()}) patched the operators in this process"
    return None


def _float32(block: gluon.HybridBlock) -> bool:
    return all(np.dtype(p.dtype) == np.float32 for p in block.collect_params().values())


def fused_twin(block: gluon.HybridBlock, example: mx.nd.NDArray) -> gluon.SymbolBlock:
    """A new oneDNN-partitioned twin of ``block`` (the same Parameter objects), folded with
    the weights as they are now: use it for one pass, while the weights do not change."""
    data = mx.sym.var("data")
    twin = gluon.SymbolBlock(block(data), data, params=block.collect_params())
    # static memory and shapes: a smaller last batch re-plans once, as for the plain block
    twin.optimize_for(example, backend="MKLDNN", static_alloc=True, static_shape=True)
    return twin


def inference_forward(block: gluon.HybridBlock, contexts: Sequence[mx.Context], *,
                      hybridize: bool = True, images: Optional[int] = None
                      ) -> Callable[[mx.nd.NDArray], mx.nd.NDArray]:
    """A function computing ``block(x)`` in inference mode for one pass over data, by the
    fastest exact path here.

    Args:
        block: a HybridBlock (a `TransferNet`, its frozen prefix, ...), initialised.
        contexts: where it will run.
        hybridize: False runs the block imperatively, as written (no fusion either).
        images: how many images the pass covers (None: many); below `FUSION_MIN_IMAGES` the
            plain hybridized block runs.

    Returns:
        ``forward(x) -> NDArray``; call it outside ``autograd.record()``, and only while the
        block's weights stay as they are (one pass; a new pass asks again).
    """
    small = images is not None and images < FUSION_MIN_IMAGES
    if not hybridize or small or fusion_available(contexts) or not _float32(block):
        if hybridize:
            block.hybridize(static_alloc=True, static_shape=True)
        return block
    twin = []

    def forward(x):
        if not twin:  # built at the first batch: optimize_for needs an example input
            twin.append(fused_twin(block, x))
        return twin[0](x)
    return forward
