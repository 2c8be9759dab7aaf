"""The CUDA build of MXNet on a machine that has only an NVIDIA driver (any CUDA 12 machine,
Colab's GPU runtime): where its CUDA 11 libraries come from.

``libmxnet.so`` of mxnet-cu112 1.9.1 needs CUDA 11 runtime libraries (`CUDA_LIBRARIES`) and
the driver's ``libcuda.so.1``, and bundles none of them (apache/mxnet#20279). The ``gpu``
extra installs them as NVIDIA's own wheels (``nvidia-*-cu11``, as PyTorch's CUDA 11 wheels
shipped them) into ``site-packages/nvidia/<part>/lib``; `preload` loads them by full path, in
dependency order, before MXNet loads, so that the dynamic linker finds each one already loaded
when ``libmxnet.so`` asks for it by name: no ``LD_LIBRARY_PATH`` from the user. A CUDA 12
driver runs CUDA 11 runtime code (the driver is backward compatible).

Nothing here imports another gluonft module: the tests load this file on its own in an
environment where MXNet cannot load yet.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ["CUDA_LIBRARIES", "DRIVER", "MissingDriver", "mxnet_is_cuda_build", "library_paths",
           "preload"]

# (folder under site-packages/nvidia, soname) in load order: a library after those it needs.
# libmxnet.so names all but cublasLt, cusparse and cudnn's parts (needed by what it names).
CUDA_LIBRARIES: Tuple[Tuple[str, str], ...] = (
    ("cuda_runtime", "libcudart.so.11.0"),
    ("cuda_nvrtc", "libnvrtc.so.11.2"),
    ("nvtx", "libnvToolsExt.so.1"),
    ("cublas", "libcublasLt.so.11"),
    ("cublas", "libcublas.so.11"),
    ("cufft", "libcufft.so.10"),
    ("curand", "libcurand.so.10"),
    ("cusparse", "libcusparse.so.11"),
    ("cusolver", "libcusolver.so.11"),
    # cuDNN 8 opens its parts by name when first used: loaded here, they are found
    ("cudnn", "libcudnn.so.8"),
    ("cudnn", "libcudnn_ops_infer.so.8"),
    ("cudnn", "libcudnn_ops_train.so.8"),
    ("cudnn", "libcudnn_cnn_infer.so.8"),
    ("cudnn", "libcudnn_cnn_train.so.8"),
    ("cudnn", "libcudnn_adv_infer.so.8"),
    ("cudnn", "libcudnn_adv_train.so.8"),
    ("nccl", "libnccl.so.2"),
)
DRIVER = "libcuda.so.1"  # the NVIDIA driver's library: never from a wheel


class MissingDriver(ImportError):
    """The CUDA build of MXNet is installed but this machine has no NVIDIA driver."""


@functools.lru_cache(maxsize=None)
def mxnet_is_cuda_build() -> bool:
    """Whether the installed ``mxnet`` module comes from a CUDA build (mxnet-cuNNN). Read once
    per process: it scans every installed distribution (~0.2 s), and `preload` runs twice
    when gluonft is imported (by the package, then by the startup hook as MXNet loads)."""
    providers = importlib.metadata.packages_distributions().get("mxnet", [])
    return any(name.lower().replace("_", "-").startswith("mxnet-cu") for name in providers)


def _nvidia_root() -> Optional[Path]:
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def library_paths() -> Dict[str, Optional[str]]:
    """{soname: the file in the installed nvidia-*-cu11 wheels, or None where none has it}."""
    root = _nvidia_root()
    paths = {}
    for part, soname in CUDA_LIBRARIES:
        candidate = root / part / "lib" / soname if root else None
        paths[soname] = str(candidate) if candidate and candidate.is_file() else None
    return paths


_LOADED: List[str] = []  # what preload loaded in this process (a second call loads nothing)


def preload() -> List[str]:
    """Before MXNet loads: when it is a CUDA build, check for the driver (`MissingDriver`, one
    line) and load the CUDA libraries the ``gpu`` extra installed. Returns the files loaded
    (none for the CPU build, or when the libraries come from a system CUDA instead)."""
    loaded_already = getattr(sys.modules.get("mxnet"), "__version__", None) is not None
    if _LOADED or loaded_already or not mxnet_is_cuda_build():
        return list(_LOADED)
    try:
        ctypes.CDLL(DRIVER)
    except OSError:
        raise MissingDriver(f"the CUDA build of MXNet (gluonft[gpu]) needs the NVIDIA driver "
                            f"({DRIVER}), which this machine does not have: install a driver, "
                            f"or the CPU build instead: pip uninstall mxnet-cu112 && pip "
                            f"install --no-deps mxnet==1.9.1") from None
    loaded = []
    for soname, path in library_paths().items():
        if path is None:
            continue  # a system CUDA 11 (LD_LIBRARY_PATH, ldconfig) may provide it
        ctypes.CDLL(path, mode=os.RTLD_GLOBAL if hasattr(os, "RTLD_GLOBAL") else 0)
        loaded.append(path)
    _LOADED.extend(loaded)
    return loaded
