"""MXNet's automatic mixed precision (AMP) for `fit`: started once per process, for good.

MXNet's AMP patches its operators process-wide and cannot be undone, so the type it was
started with is process state: `fit` starts it (`start_amp`), and the inference path asks
whether it runs (`active_dtype`: a fused oneDNN twin cannot take AMP's casts). A module of its
own, below both, so that neither reaches into the other.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional

__all__ = ["start_amp", "active_dtype"]

# MXNet's AMP is process-wide and cannot be undone: the type it was started with.
_STATE: Dict[str, Optional[str]] = {"dtype": None}
_TYPES = {True: "float16", "float16": "float16", "bfloat16": "bfloat16"}


def start_amp(amp, contexts) -> Optional[str]:
    """Validate ``amp`` for ``contexts`` and start MXNet AMP; the low-precision type or None."""
    if amp is False or amp is None:
        if _STATE["dtype"]:
            # MXNet's operators stay patched: training is mixed precision anyway, so it gets
            # the loss scaling that goes with it, and the settings say so.
            warnings.warn(f"MXNet AMP ({_STATE['dtype']}) was started by an earlier fit in "
                          f"this process and cannot be turned off: this fit trains in mixed "
                          f"precision too; restart Python for float32", stacklevel=3)
        return _STATE["dtype"]
    if isinstance(amp, (bool, str)) and amp in _TYPES:
        dtype = _TYPES[amp]
    else:
        raise ValueError(f"amp must be False, True, 'float16' or 'bfloat16', got {amp!r}")
    if dtype == "float16":
        cpus = [str(c) for c in contexts if c.device_type != "gpu"]
        if cpus:
            raise ValueError(f"amp={amp!r} (float16 training) needs GPU contexts, got "
                             f"{', '.join(cpus)}: on a CPU train in float32 (amp=False), or "
                             f"amp='bfloat16' on a CPU with AVX512-BF16")
    if _STATE["dtype"] not in (None, dtype):
        raise ValueError(f"MXNet AMP already runs in {_STATE['dtype']} in this process "
                         f"and cannot switch to {dtype}; restart Python to change it")
    from mxnet.contrib import amp as mx_amp
    mx_amp.init(target_dtype=dtype)  # patches MXNet's operators; a no-op the second time
    _STATE["dtype"] = dtype
    return dtype


def active_dtype() -> Optional[str]:
    """The low-precision type MXNet AMP runs in, in this process, or None."""
    return _STATE["dtype"]
