"""What this CPU computes natively, and which kernels MXNet runs on it: read once, recorded in
every result (`gluonft.results.environment`), and asked before bfloat16 is used.

bfloat16 is fast only where the CPU has it (AVX512-BF16: AMD Zen 4, Intel Cooper Lake; AMX:
Intel Sapphire Rapids and later); elsewhere oneDNN emulates it with float32 instructions plus
conversions, which is slower than float32 itself; on x86 CPUs without AVX-512 oneDNN has no
bfloat16 kernels at all.
"""
from __future__ import annotations

import functools
import os
import platform
import warnings
from typing import Dict, FrozenSet, List

__all__ = ["cpu_flags", "cpu_model", "native_bfloat16", "kernels", "check_bfloat16", "ISA_FLAGS"]

# The instruction-set extensions that decide oneDNN's kernels, in the order they came.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
_SETTINGS_PREFIXES = ("MXNET_ONEDNN", "MXNET_MKLDNN", "ONEDNN_", "DNNL_", "MKLDNN_",
                      "OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS", "MXNET_ENGINE_TYPE")


@functools.lru_cache(maxsize=None)
def _cpuinfo(field: str) -> str:
    """The value of the first ``field`` line of Linux's ``/proc/cpuinfo``; "" elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags as Linux reports them (``/proc/cpuinfo``); empty elsewhere."""
    return frozenset(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform says."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def native_bfloat16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def check_bfloat16(amp, contexts) -> None:
    """Refuse ``amp="bfloat16"`` on CPU contexts where oneDNN has no bfloat16 kernels at all
    (x86 without AVX-512: MXNet would fail deep inside with "could not create a primitive
    descriptor iterator"), and warn where it only emulates them (AVX-512 without BF16)."""
    if amp != "bfloat16" or not any(c.device_type == "cpu" for c in contexts):
        return
    flags = cpu_flags()
    if not flags or platform.machine() not in ("x86_64", "AMD64"):
        return  # unknown: let MXNet try
    if "avx512f" not in flags:
        have = ", ".join(f for f in ISA_FLAGS if f in flags) or "none of " + ", ".join(ISA_FLAGS)
        raise ValueError(f"amp='bfloat16' needs a CPU with AVX-512 (oneDNN's bfloat16 "
                         f"kernels), ideally with AVX512-BF16 or AMX; this CPU has {have}: "
                         f"train in float32 (amp=False)")
    if not native_bfloat16():
        warnings.warn("amp='bfloat16' on a CPU without AVX512-BF16 or AMX: oneDNN emulates "
                      "bfloat16 there, slower than float32; train in float32 (amp=False) on "
                      "this CPU", stacklevel=4)


def kernels() -> Dict[str, object]:
    """Which kernels MXNet runs here: whether its oneDNN (MKLDNN) backend is built in, the
    CPU's instruction-set extensions that pick oneDNN's kernels, and the settings that change
    them (environment variables)."""
    try:
        from mxnet.runtime import Features
        onednn = bool(Features().is_enabled("MKLDNN"))
    except Exception:  # pragma: no cover - an MXNet build without its feature table
        onednn = None
    isa: List[str] = [f for f in ISA_FLAGS if f in cpu_flags()]
    return {"onednn": onednn, "cpu_isa": isa, "machine": platform.machine(),
            "native_bfloat16": native_bfloat16(),
            "settings": {k: v for k, v in sorted(os.environ.items())
                         if k.startswith(_SETTINGS_PREFIXES)}}
