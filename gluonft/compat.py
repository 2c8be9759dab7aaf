"""MXNet 1.9.1 and GluonCV 0.10.5 on today's Python, numpy and PyTorch: what gluonft changes
before they load, and why.

MXNet is retired (1.9.1 is its last release) and GluonCV's last release is 0.10.5, so nobody
upstream will make them work on the interpreters and numpy releases users have now (Colab:
Python 3.12 with numpy 2 and PyTorch; Ubuntu 24.04: 3.12; Debian 13: 3.13). Their C libraries
reach numpy through ctypes only, so there is no binary obstacle: what breaks is Python code
that names things numpy has since removed, GluonCV's refusal to load beside PyTorch >= 2, and
``distutils`` leaving the standard library in 3.12 (setuptools, a dependency there, brings it
back). `apply` (run by ``gluonft/__init__`` before MXNet loads) repairs the rest:

- each removed numpy name MXNet or GluonCV uses is put back (`NUMPY_SHIMS`: what it was, the
  numpy release that removed it, who uses it), only where numpy lacks it: nothing numpy has is
  replaced, so on numpy 1.23 nothing changes at all;
- ``mxnet.recordio`` packs images with ``ndarray.tobytes`` where numpy has no ``tostring``;
- MXNet's ONNX exporter gets ``onnx.mapping`` back (`onnx_for_mxnet`: onnx 1.19 removed it);
- GluonCV's import-time version checks (``gluoncv/check.py``) are replaced by ones that check
  MXNet and ignore PyTorch: gluonft uses GluonCV's MXNet half only, and GluonCV's own check
  raises ``RuntimeError: Legacy torch==2.x detected`` whenever torch >= 2 is installed;
- the interpreter and numpy are checked against the range this release supports (one line
  below it, one warning above the range CI tests);
- MXNet's optional imports that gluonft never uses cost nothing (`MXNET_OPTIONAL_IMPORTS`,
  `QuietMXNetImports`): ``mxnet.model`` imports scikit-learn only to make its legacy
  ``FeedForward`` an sklearn estimator, ``mxnet.contrib.quantization`` imports scipy.stats
  only to check that it exists, MXNet's ONNX exporter imports onnx for when it exports.
  Where they are installed (scipy always: GluonCV needs it; scikit-learn on Colab) they took
  more than half of ``import gluonft``'s 12 seconds here, in every process that loads MXNet
  (each kvstore worker and server, each CLI call). Now that scikit-learn import fails as if
  it were absent (``FeedForward`` derives from ``object``), and scipy.stats and onnx load on
  their first use; a program that imported one of them before keeps it as it is, and
  importing them anywhere else works as usual;
- OpenCV's decoder limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, 1 gigapixel by default: 3 GB of RGB)
  is lowered to `DECODE_MAX_PIXELS` unless the user set it: OpenCV reads it once, when it
  loads (GluonCV loads it), so it must be set before.

This module, `threads` and `cuda` import nothing from gluonft and nothing heavy: the startup
hook (``startup/gluonft_mxnet_hook.py``, installed as a ``.pth`` file) loads them on their own
when a program imports mxnet or gluoncv before gluonft, and runs `prepare` first, so that
``import mxnet`` works anywhere in an environment where gluonft is installed (MXNet's own
tools too: the kvstore scheduler is ``python -c "import mxnet"``).

``tests/test_compat.py`` scans MXNet's and GluonCV's sources for every numpy name they use and
fails on one the installed numpy lacks even after `apply`: a future numpy that removes another
name fails a test instead of a user's run.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["APPLIED", "DECODE_MAX_PIXELS", "NUMPY_SHIMS", "Shim", "UntestedVersionWarning",
           "SUPPORTED_PYTHON", "TESTED_PYTHON", "SUPPORTED_NUMPY", "TESTED_NUMPY", "apply",
           "QuietMXNetImports", "MXNET_OPTIONAL_IMPORTS", "prepare", "check_versions",
           "missing_numpy_names", "numpy_has", "onnx_for_mxnet"]

# The oldest release supported, and the newest one CI runs (major, minor). Older: an error;
# newer: a warning (it may well work, but nothing here has checked it).
SUPPORTED_PYTHON = (3, 11)
TESTED_PYTHON = (3, 13)
SUPPORTED_NUMPY = (1, 23)
TESTED_NUMPY = (2, 5)

# Where upstream tracks it: MXNet's issue about removed numpy names is open and MXNet is
# retired; GluonCV has had no release since 0.10.5, so its uses stay as they are.
MXNET_NUMPY_ISSUE = "apache/mxnet#21165"
GLUONCV_LAST_RELEASE = "GluonCV 0.10.5 (its last release)"


# The most pixels gluonft lets OpenCV decode (the service's default limit too): past a 48 MP
# phone photo with room to spare; OpenCV's own default (2**30) lets a 30 KB PNG take 3 GB.
DECODE_MAX_PIXELS = 100_000_000
OPENCV_LIMIT_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"


class UntestedVersionWarning(UserWarning):
    """The interpreter or numpy is newer than the newest release gluonft's CI runs."""


@dataclass(frozen=True)
class Shim:
    """A name numpy removed that MXNet or GluonCV still uses, and what it was."""
    name: str
    make: Callable[[Any], Any]  # numpy -> the value the name had
    removed_in: str  # the numpy release that removed it
    used_by: str  # where MXNet 1.9.1 / GluonCV 0.10.5 use it (first module of each)
    upstream: str = MXNET_NUMPY_ISSUE  # where upstream tracks (or would track) the fix


def _removed_function(name: str, replacement: str) -> Callable[[Any], Any]:
    def make(np):
        def removed(*args, **kwargs):
            raise RuntimeError(f"numpy.{name} was removed from numpy (NEP 32); "
                               f"use {replacement} instead")
        removed.__name__ = name
        return removed
    return make


def _in1d(np):
    def in1d(ar1, ar2, assume_unique=False, invert=False, *, kind=None):
        # numpy 2.4 removed in1d; it was isin on the flattened first argument
        return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique,
                       invert=invert, kind=kind)
    return in1d


def _msort(np):
    def msort(a):
        return np.sort(a, axis=0)  # numpy 2.0 removed msort; this is its documented equivalent
    return msort


def _compat_module(np):
    module = types.ModuleType("numpy.compat", "numpy 1.x's py2/py3 compatibility names")
    module.basestring, module.unicode, module.long = str, str, int
    module.integer_types = (int,)
    return module


_FINANCIAL = ("fv", "ipmt", "irr", "mirr", "nper", "npv", "pmt", "ppmt", "pv", "rate")

NUMPY_SHIMS: Tuple[Shim, ...] = (
    # numpy 1.24 removed the aliases of the builtin types (np.bool is back in numpy 2 as
    # np.bool_, so there it is left alone)
    Shim("bool", lambda np: bool, "1.24", "mxnet.numpy.utils, mxnet.ndarray.numpy._op"),
    Shim("int", lambda np: int, "1.24", "mxnet.test_utils, gluoncv.model_zoo.hrnet"),
    Shim("float", lambda np: float, "1.24", "gluoncv.model_zoo.rcnn.rpn.anchor",
         GLUONCV_LAST_RELEASE),
    Shim("complex", lambda np: complex, "1.24", "(the same family)"),
    Shim("object", lambda np: object, "1.24", "(the same family)"),
    Shim("str", lambda np: str, "1.24", "(the same family)"),
    # numpy 2.0 removed duplicate constants and functions
    Shim("PZERO", lambda np: 0.0, "2.0", "mxnet.numpy.utils (import time)"),
    Shim("NZERO", lambda np: -0.0, "2.0", "mxnet.numpy.utils (import time)"),
    Shim("PINF", lambda np: float("inf"), "2.0", "mxnet.numpy.utils (import time)"),
    Shim("NINF", lambda np: float("-inf"), "2.0", "mxnet.numpy.utils (import time)"),
    Shim("NAN", lambda np: float("nan"), "2.0", "mxnet.numpy.utils (import time)"),
    Shim("NaN", lambda np: float("nan"), "2.0", "mxnet.numpy.utils (import time)"),
    Shim("Inf", lambda np: float("inf"), "2.0", "mxnet.gluon.contrib.estimator"),
    Shim("Infinity", lambda np: float("inf"), "2.0", "(the same family)"),
    Shim("alltrue", lambda np: np.all, "2.0", "mxnet.numpy.fallback (import time)"),
    Shim("sometrue", lambda np: np.any, "2.0", "(the same family)"),
    Shim("product", lambda np: np.prod, "2.0", "(the same family)"),
    Shim("cumproduct", lambda np: np.cumprod, "2.0", "(the same family)"),
    Shim("round_", lambda np: np.round, "2.0", "(the same family)"),
    Shim("msort", _msort, "2.0", "mxnet.numpy.fallback (import time)"),
    Shim("compat", _compat_module, "2.0", "mxnet.ndarray.numpy._op (pad)"),
    # NEP 32 moved the financial functions to numpy-financial; numpy 1.20-1.26 kept stubs that
    # raise when called, numpy 2.0 removed even those; mxnet.numpy.fallback reads them at import
    *(Shim(name, _removed_function(name, f"numpy_financial.{name}"), "2.0",
           "mxnet.numpy.fallback (import time)") for name in _FINANCIAL),
    # numpy 2.4
    Shim("in1d", _in1d, "2.4", "mxnet.numpy.fallback (import time)"),
    Shim("trapz", lambda np: np.trapezoid, "2.4", "mxnet.numpy.fallback (import time)"),
)


def numpy_has(np, name: str) -> bool:
    """Whether numpy answers ``np.<name>`` (numpy 1.2x answers some removed names with a
    deprecation warning: they are still there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            getattr(np, name)
        except AttributeError:
            return False
    return True


def missing_numpy_names(np=None) -> List[str]:
    """The names of `NUMPY_SHIMS` this numpy lacks (those `apply` puts back)."""
    np = np or _numpy()
    return [shim.name for shim in NUMPY_SHIMS if not numpy_has(np, shim.name)]


def _numpy():
    import numpy
    return numpy


def _version(text: str) -> Tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def check_versions(python: Tuple[int, int] = None, numpy_version: str = None) -> List[str]:
    """Raise ImportError (one line) below the supported Python/numpy; warn above the tested
    range. Returns the warnings given, as text."""
    python = tuple(python or sys.version_info[:2])
    numpy = _version(numpy_version or _numpy().__version__)
    if python < SUPPORTED_PYTHON:
        raise ImportError(f"gluonft needs Python >= {_dotted(SUPPORTED_PYTHON)} (tested "
                          f"{_dotted(SUPPORTED_PYTHON)} to {_dotted(TESTED_PYTHON)}); this is "
                          f"Python {_dotted(python)}")
    if numpy < SUPPORTED_NUMPY:
        raise ImportError(f"gluonft needs numpy >= {_dotted(SUPPORTED_NUMPY)} (tested "
                          f"{_dotted(SUPPORTED_NUMPY)} to {_dotted(TESTED_NUMPY)}); this is "
                          f"numpy {_dotted(numpy)}: pip install -U numpy")
    said = []
    for what, have, newest in (("Python", python, TESTED_PYTHON), ("numpy", numpy, TESTED_NUMPY)):
        if have > newest:
            said.append(f"{what} {_dotted(have)} is newer than the newest gluonft's CI tests "
                        f"({_dotted(newest)}): it may work, but nothing has checked it")
            warnings.warn(said[-1], UntestedVersionWarning, stacklevel=3)
    return said


def _dotted(version) -> str:
    return ".".join(str(part) for part in version)


def _shim_numpy(np) -> List[str]:
    added = []
    for shim in NUMPY_SHIMS:
        if not numpy_has(np, shim.name):
            setattr(np, shim.name, shim.make(np))
            added.append(shim.name)
    return added


def _pack(header, s):
    """``mxnet.recordio.pack`` with ``tobytes`` (numpy 2.3 removed ``ndarray.tostring``)."""
    import numpy as np
    from mxnet import recordio
    header = recordio.IRHeader(*header)
    if isinstance(header.label, (int, float)):
        header = header._replace(flag=0)
    else:
        label = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=label.size, label=0)
        s = label.tobytes() + s
    return recordio.struct.pack(recordio._IR_FORMAT, *header) + s


def _pack_img(header, img, quality=95, img_fmt=".jpg"):
    """``mxnet.recordio.pack_img`` with ``tobytes``: the same encoding parameters."""
    import cv2
    jpg_formats, png_formats = [".JPG", ".JPEG"], [".PNG"]
    encode_params = None
    if img_fmt.upper() in jpg_formats:
        encode_params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif img_fmt.upper() in png_formats:
        encode_params = [cv2.IMWRITE_PNG_COMPRESSION, quality]
    ret, buf = cv2.imencode(img_fmt, img, encode_params)
    assert ret, "failed to encode image"
    return _pack(header, buf.tobytes())


def _patch_recordio(np) -> List[str]:
    if hasattr(np.ndarray, "tostring"):
        return []
    from mxnet import recordio
    recordio.pack, recordio.pack_img = _pack, _pack_img
    return ["mxnet.recordio.pack", "mxnet.recordio.pack_img"]


def _gluoncv_checks() -> types.ModuleType:
    """A stand-in for ``gluoncv/check.py``: the same three functions; MXNet's version is
    checked without distutils, and PyTorch is reported absent so that GluonCV loads only its
    MXNet half (its own check raises RuntimeError for any torch >= 2)."""
    module = types.ModuleType("gluoncv.check", "GluonCV's import checks, as gluonft runs them")

    def _deprecate_python2():
        return None

    def _require_mxnet_version(mx_version, max_mx_version="2.0.0"):
        import mxnet
        if not (_version(mx_version) <= _version(mxnet.__version__) < _version(max_mx_version)):
            raise RuntimeError(f"GluonCV needs mxnet>={mx_version},<{max_mx_version}; "
                               f"this is mxnet {mxnet.__version__}")

    def _require_pytorch_version(torch_version, max_torch_version="2.0.0"):
        raise ImportError("gluonft uses GluonCV's MXNet models only")

    module._deprecate_python2 = _deprecate_python2
    module._require_mxnet_version = _require_mxnet_version
    module._require_pytorch_version = _require_pytorch_version
    return module


def _check_distutils():
    # MXNet (numpy_op_fallback) and GluonCV import distutils, which left the standard library
    # in Python 3.12; setuptools provides it again (a dependency of gluonft there).
    if importlib.util.find_spec("distutils") is None:
        raise ImportError("MXNet and GluonCV import distutils, which Python "
                          f"{_dotted(sys.version_info[:2])} no longer has: pip install setuptools")


def _onnx_mapping(onnx) -> types.ModuleType:
    """``onnx.mapping`` as onnx 1.18 had it, from ``onnx.helper``'s dtype functions: MXNet's
    exporter reads its two tables (NP_TYPE_TO_TENSOR_TYPE, TENSOR_TYPE_TO_NP_TYPE)."""
    import numpy as np
    from onnx import TensorProto, helper
    to_np = {}
    for _, tensor_type in sorted(TensorProto.DataType.items(), key=lambda item: item[1]):
        try:
            to_np[tensor_type] = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type))
        except (KeyError, TypeError, ValueError):  # UNDEFINED, types numpy cannot name
            continue
    to_tensor = {}
    for tensor_type, dtype in to_np.items():
        to_tensor.setdefault(dtype, tensor_type)  # the first: FLOAT for float32, as 1.18 did
    module = types.ModuleType("onnx.mapping", "onnx 1.18's dtype tables (gluonft.compat)")
    module.TENSOR_TYPE_TO_NP_TYPE, module.NP_TYPE_TO_TENSOR_TYPE = to_np, to_tensor
    return module


def onnx_for_mxnet():
    """The onnx module, with ``onnx.mapping`` put back where onnx (>= 1.19) removed it, for
    ``mx.onnx.export_model``. Raises ImportError when onnx is not installed."""
    import onnx
    onnx.IR_VERSION  # a use: loads onnx now if MXNet's import deferred it (QuietMXNetImports)
    real = sys.modules["onnx"]
    if not hasattr(real, "mapping") and "onnx.mapping" not in sys.modules:
        sys.modules["onnx.mapping"] = _onnx_mapping(real)
    for module in (onnx, real):  # MXNet's translations hold the deferred one
        if not hasattr(module, "mapping"):
            module.mapping = sys.modules["onnx.mapping"]
    return real


# Optional imports MXNet makes at import time that cost seconds and that gluonft never needs
# loaded then: {module: (the MXNet modules importing it, what to do)}. "fail": the import
# fails as if the library were absent (mxnet.model's legacy FeedForward then derives from
# object instead of scikit-learn's estimator base); "lazy": the module is there but runs on
# first use (mxnet.contrib.quantization only checks that scipy.stats is not None;
# mxnet.test_utils uses it inside two of its functions; MXNet's ONNX translations use onnx
# when they export).
MXNET_OPTIONAL_IMPORTS = {
    "sklearn": (("mxnet.model",), "fail"),
    "scipy.stats": (("mxnet.test_utils", "mxnet.contrib.quantization"), "lazy"),
    "onnx": (tuple(f"mxnet.onnx.mx2onnx._op_translations._op_translations_opset{v}"
                   for v in (12, 13)), "lazy")}


class QuietMXNetImports:
    """A meta-path finder for `MXNET_OPTIONAL_IMPORTS`: while the named MXNet module runs
    (found on the call stack), its import of the library fails or is deferred. Imports from
    anywhere else are not its business, but for one: a submodule of a deferred package loads
    that package for real first, so that the submodule is imported once, by its package."""

    def __init__(self):
        self.searching = False
        self.left = dict(MXNET_OPTIONAL_IMPORTS)

    def find_spec(self, name, path=None, target=None):
        parent = sys.modules.get(name.rpartition(".")[0])
        if isinstance(parent, _Deferred) and not parent._gluonft_loaded:
            parent._gluonft_load()
            # the package imported it: that module is the one (importing it again would run
            # its code twice); else it loads as usual, and its package gets it (_Deferred)
            return (importlib.util.spec_from_loader(name, _Loaded()) if name in sys.modules
                    else None)
        top = name if name in self.left else name.partition(".")[0]
        if top not in self.left or self.searching:
            return None
        importers, action = self.left[top]
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") not in importers:
            frame = frame.f_back
        if frame is None:
            return None
        if action == "fail":
            del self.left[top]
            raise ImportError(f"gluonft.compat: {frame.f_globals['__name__']} goes without "
                              f"{top}", name=name)
        self.searching = True  # where the other finders find it
        try:
            real = importlib.util.find_spec(name)
        finally:
            self.searching = False
        del self.left[top]
        if real is None:
            return None
        # importlib.util.LazyLoader would not do: CPython's import reads the new module's
        # __spec__ at once, which makes a LazyLoader module load there and then. The real
        # spec's location and package path stay: its submodules import as usual.
        spec = importlib.util.spec_from_loader(
            name, _DeferredLoader(), origin=real.origin,
            is_package=real.submodule_search_locations is not None)
        spec.has_location = real.has_location
        if real.submodule_search_locations is not None:
            spec.submodule_search_locations = list(real.submodule_search_locations)
        return spec


class _Deferred(types.ModuleType):
    """A module that is loaded for real when one of its names is first asked for: its names
    are then this object's too (for whoever holds it), and what is set on it is set on the
    real module as well."""

    # Names no module has: the real module's names are copied into this object's.
    @property
    def _gluonft_loaded(self) -> bool:
        return "_gluonft_real" in vars(self)

    def _gluonft_load(self) -> types.ModuleType:
        if not self._gluonft_loaded:
            name = self.__name__
            if sys.modules.get(name) is self:
                del sys.modules[name]
            real = importlib.import_module(name)
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, real)
            vars(self).update(vars(real))
            vars(self)["_gluonft_real"] = real
        return vars(self)["_gluonft_real"]

    def __getattr__(self, attr):
        return getattr(self._gluonft_load(), attr)

    def __setattr__(self, attr, value):
        super().__setattr__(attr, value)
        if self._gluonft_loaded:
            setattr(vars(self)["_gluonft_real"], attr, value)


class _DeferredLoader:
    """Creates a `_Deferred` module: nothing of the real one runs at import."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__class__ = _Deferred


class _Loaded:
    """Gives the module already in ``sys.modules`` (imported by its package as it loaded)."""

    def create_module(self, spec):
        return sys.modules[spec.name]

    def exec_module(self, module):
        pass


def _quiet_mxnet_imports() -> List[str]:
    if "mxnet" in sys.modules and getattr(sys.modules["mxnet"], "__version__", None):
        return []  # MXNet has loaded already
    if any(isinstance(f, QuietMXNetImports) for f in sys.meta_path):
        return []
    finder = QuietMXNetImports()
    for name in list(finder.left):
        if name in sys.modules:  # loaded already by the program: nothing left to save
            finder.left.pop(name)
    if not finder.left:
        return []
    sys.meta_path.insert(0, finder)
    return [f"{action}: {name}" for name, (_, action) in finder.left.items()]


APPLIED: Dict[str, List[str]] = {}  # what `prepare` and `apply` changed in this process


def prepare() -> Dict[str, List[str]]:
    """Everything that must happen before MXNet or GluonCV loads, without loading them: the
    version checks, the numpy names, GluonCV's import checks. Run by the startup hook when a
    program imports mxnet or gluoncv first, and by `apply`; the second call changes nothing.
    Returns {"numpy": names added, "mxnet_imports": MXNet's optional imports skipped or
    deferred, "gluoncv": ["check"] when its checks were replaced, ...}."""
    if APPLIED:
        return APPLIED
    np = _numpy()
    check_versions()
    _check_distutils()
    changed = {"numpy": _shim_numpy(np), "mxnet_imports": _quiet_mxnet_imports(), "mxnet": [],
               "gluoncv": [], "opencv": []}
    if "cv2" not in sys.modules and OPENCV_LIMIT_VARIABLE not in os.environ:
        os.environ[OPENCV_LIMIT_VARIABLE] = str(DECODE_MAX_PIXELS)
        changed["opencv"].append(f"{OPENCV_LIMIT_VARIABLE}={DECODE_MAX_PIXELS}")
    gluoncv = sys.modules.get("gluoncv")
    # not loaded yet, or just starting to (the startup hook runs this before its first line)
    if getattr(gluoncv, "__version__", None) is None:
        sys.modules["gluoncv.check"] = _gluoncv_checks()
        changed["gluoncv"].append("check")
    elif not hasattr(gluoncv, "model_zoo"):
        raise ImportError("gluoncv was imported before gluonft and loaded without its MXNet "
                          "models (its checks failed): import gluonft first")
    APPLIED.update(changed)
    return APPLIED


def apply() -> Dict[str, List[str]]:
    """`prepare`, then load MXNet and repair what it does with numpy at call time (recordio).
    The package calls it before anything else; returns what changed (`APPLIED`)."""
    np = _numpy()
    prepare()
    import mxnet  # noqa: F401  (after the numpy names: MXNet reads some at import time)
    if not APPLIED["mxnet"]:
        APPLIED["mxnet"] = _patch_recordio(np)
    return APPLIED
