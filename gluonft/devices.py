"""Which devices to train on."""
from __future__ import annotations

from typing import List

import mxnet as mx

__all__ = ["devices", "as_contexts", "contexts_of"]


def devices() -> List[mx.Context]:
    """Every GPU MXNet can see, else ``[mx.cpu()]``.

    Example:
        >>> gluonft.devices()
        [cpu(0)]
    """
    try:
        count = mx.context.num_gpus()
    except mx.MXNetError:  # a CPU build of MXNet, or no driver
        count = 0
    return [mx.gpu(i) for i in range(count)] or [mx.cpu()]


def as_contexts(ctx) -> List[mx.Context]:
    """Normalise ``None`` / a context / a list of contexts into a non-empty list.

    Raises:
        ValueError: anything else, echoing the value.
    """
    if ctx is None:
        return devices()
    if isinstance(ctx, mx.Context):
        return [ctx]
    if isinstance(ctx, (list, tuple)) and ctx and all(isinstance(c, mx.Context) for c in ctx):
        if len(set(map(str, ctx))) != len(ctx):
            raise ValueError(f"ctx lists a device twice: {list(ctx)}")
        return list(ctx)
    raise ValueError(f"ctx must be an mx.Context or a non-empty list of them, got {ctx!r}")


def contexts_of(net) -> List[mx.Context]:
    """The contexts a (initialised) net's parameters live on, in the order they were given."""
    return next(iter(net.collect_params().values())).list_ctx()
