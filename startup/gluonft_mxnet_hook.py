"""Lets a program import mxnet or gluoncv before gluonft (installed with gluonft as the startup
file ``gluonft-mxnet.pth``, which Python runs when it starts).

On numpy >= 1.24 MXNet 1.9.1 cannot load until `gluonft.compat` has put back the numpy names
it reads, and GluonCV refuses to load beside torch >= 2; users write ``import mxnet as mx``
first, and MXNet's own tools start ``python -c "import mxnet"`` (the kvstore scheduler). At
start this only adds a finder to ``sys.meta_path``: nothing is imported. The first time a
program imports ``mxnet`` or ``gluoncv``, the finder runs what ``import gluonft`` runs before
MXNet loads -- `gluonft.threads` (every core), `gluonft.cuda` (the CUDA build's libraries) and
`gluonft.compat.prepare` -- loaded from gluonft's folder on their own (they import nothing from
the package), registered under their own names so that a later ``import gluonft`` uses the same
modules, then removes itself and lets the import go on as usual.

``GLUONFT_NO_HOOK=1`` turns it off.
"""
import importlib.util
import os
import sys

_BOOT = ("threads", "cuda", "compat")  # the modules that run before MXNet loads, in order


class _BeforeMXNet:
    """A meta-path finder that never finds anything: it prepares, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name not in ("mxnet", "gluoncv") or "mxnet" in sys.modules:
            return None
        _remove()
        package = importlib.util.find_spec("gluonft")
        if package is None or not package.submodule_search_locations:
            return None  # gluonft was uninstalled, this file left behind
        folder = list(package.submodule_search_locations)[0]
        boot = {part: _load(f"gluonft.{part}", os.path.join(folder, f"{part}.py"))
                for part in _BOOT}
        boot["threads"].use_every_core()
        boot["cuda"].preload()
        boot["compat"].prepare()
        return None


def _load(name, path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _remove():
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _BeforeMXNet)]


def install():
    """Called by gluonft-mxnet.pth at interpreter start."""
    if os.environ.get("GLUONFT_NO_HOOK") != "1" and "mxnet" not in sys.modules:
        _remove()
        sys.meta_path.insert(0, _BeforeMXNet())
