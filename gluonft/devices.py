"""Which devices to train on, how a batch is split over them, and how results come back
without making the device wait."""
from __future__ import annotations

import os
from typing import Iterable, Iterator, List, Sequence

import mxnet as mx
import numpy as np

__all__ = ["devices", "as_contexts", "contexts_of", "split_batch", "read_in_flight"]


def devices() -> List[mx.Context]:
    """Every GPU MXNet can see, else ``[mx.cpu()]``.

    Example:
        >>> gluonft.devices()
        [cpu(0)]
    """
    return [mx.gpu(i) for i in range(_gpu_count())] or [mx.cpu()]


def as_contexts(ctx) -> List[mx.Context]:
    """Normalise ``None`` / a context / a list of contexts into a non-empty list.

    Raises:
        ValueError: anything else, echoing the value.
    """
    if ctx is None:
        return devices()
    if isinstance(ctx, mx.Context):
        ctx = [ctx]
    if isinstance(ctx, (list, tuple)) and ctx and all(isinstance(c, mx.Context) for c in ctx):
        if len(set(map(str, ctx))) != len(ctx):
            raise ValueError(f"ctx lists a device twice: {list(ctx)}")
        for c in ctx:
            _check_exists(c)
        return list(ctx)
    raise ValueError(f"ctx must be an mx.Context or a non-empty list of them, got {ctx!r}")


def _gpu_count() -> int:
    try:
        return mx.context.num_gpus()
    except mx.MXNetError:  # a CPU build of MXNet, or no driver
        return 0


def _check_exists(ctx: mx.Context) -> None:
    """A device MXNet would accept but that is not there fails deep inside an operator."""
    if ctx.device_type == "gpu":
        count = _gpu_count()
        if ctx.device_id >= count:
            there = f"gpu(0)..gpu({count - 1})" if count else "no GPU (use mx.cpu())"
            raise ValueError(f"ctx {ctx}: this machine has {there}")
    elif ctx.device_type == "cpu":
        # Several CPU contexts split a batch like several GPUs; one per core at most. Each
        # runs on an engine thread of its own, at the same time as the others: an operator
        # that calls MXNet's bundled OpenBLAS (GridGenerator, for one) can deadlock there
        # (see transforms.BatchTransform._affine_grid).
        cores = os.cpu_count() or 1
        if ctx.device_id >= cores:
            raise ValueError(f"ctx {ctx}: expected cpu(0)..cpu({cores - 1}), one context per "
                             f"core of this machine's {cores}")


def contexts_of(net) -> List[mx.Context]:
    """The contexts a (initialised) net's parameters live on, in the order they were given."""
    return next(iter(net.collect_params().values())).list_ctx()


def split_batch(batch: np.ndarray, n: int) -> List[np.ndarray]:
    """Split a batch over ``n`` devices the way `gluon.utils.split_and_load` does."""
    return np.array_split(batch, n) if n > 1 else [batch]


def read_in_flight(batches: Iterable[Sequence[mx.nd.NDArray]]) -> Iterator[np.ndarray]:
    """The arrays of each batch as numpy, in order, each read only once the next batch is
    queued: the device never waits for the host, and at most two batches are in flight.

    Args:
        batches: per batch, the device arrays it produced (one per device).

    Example:
        >>> outputs = np.concatenate(list(read_in_flight(
        ...     [net(x) for x in xs] for xs in batches)))  # doctest: +SKIP
    """
    pending: Sequence[mx.nd.NDArray] = ()
    for batch in batches:
        batch = list(batch)  # queued now; the previous batch is read below
        for array in pending:
            yield array.asnumpy()
        pending = batch
    for array in pending:
        yield array.asnumpy()
