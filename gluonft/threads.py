"""How many threads MXNet's operators use on a CPU: every physical core, set before MXNet loads.

MXNet 1.9 reads ``OMP_NUM_THREADS`` once, when it loads; unset, it takes half the logical CPUs
on x86 (it assumes two hyper-threads per core). On a machine without hyper-threading (2 vCPUs
that are 2 cores, as on this project's CI and many cloud machines) that leaves half the cores
idle: resnet18_v1's forward pass at 160 px, batch 32, ran at 55 images/s with MXNet's choice
and at 80 with ``OMP_NUM_THREADS=2`` (2-core Xeon). So `gluonft` (imported before MXNet)
sets ``OMP_NUM_THREADS`` to the number of physical cores this process may run on, unless the
user set it. Imported after MXNet, it can only say so (`ThreadsWarning`).
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Optional

__all__ = ["physical_cores", "use_every_core", "user_set_threads", "ThreadsWarning"]

_SET_HERE = []  # the value gluonft put in OMP_NUM_THREADS, if it did
# Where gluonft notes the value it set, for the processes this one starts: they inherit
# OMP_NUM_THREADS and must not take it for the user's (the launcher shares the cores out
# among workers only when the user did not choose).
_MARK = "GLUONFT_SET_OMP_NUM_THREADS"


class ThreadsWarning(UserWarning):
    """MXNet was loaded with fewer operator threads than this machine has cores."""


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyper-threads counted once)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "core_id") as core, open(base + "physical_package_id") as pkg:
                cores.add((pkg.read().strip(), core.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def use_every_core() -> Optional[int]:
    """Set ``OMP_NUM_THREADS`` for MXNet (before it loads); returns the value set, or None
    when the user's setting stands or MXNet is already loaded (then a warning if it got
    fewer threads than there are cores)."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = physical_cores()
    # loaded, not merely being loaded (the startup hook runs this as MXNet starts to load)
    if getattr(sys.modules.get("mxnet"), "__version__", None) is not None:
        mxnet_default = max(1, (os.cpu_count() or 1) // 2)
        if cores > mxnet_default:
            warnings.warn(f"MXNet was imported before gluonft without OMP_NUM_THREADS: it uses "
                          f"{mxnet_default} thread(s) on this machine's {cores} cores. Import "
                          f"gluonft first, or set OMP_NUM_THREADS={cores} before Python "
                          f"starts", ThreadsWarning, stacklevel=3)
        return None
    os.environ["OMP_NUM_THREADS"] = os.environ[_MARK] = str(cores)
    _SET_HERE.append(str(cores))
    return cores


def user_set_threads() -> bool:
    """Whether OMP_NUM_THREADS holds the user's choice (not the one gluonft made)."""
    value = os.environ.get("OMP_NUM_THREADS")
    return value is not None and value not in _SET_HERE and value != os.environ.get(_MARK)

