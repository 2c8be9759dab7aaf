"""Lets a program import mxnet or gluoncv before gluonft (installed with gluonft as the startup
file ``gluonft-mxnet.pth``, which Python runs when it starts).

On numpy >= 1.24 MXNet 1.9.1 cannot load until `gluonft.compat` has put back the numpy names
it reads, and GluonCV refuses to load beside torch >= 2; users write ``import mxnet as mx``
first, and MXNet's own tools start ``python -c "import mxnet"`` (the kvstore scheduler). At
start this only adds a finder to ``sys.meta_path``: nothing is imported. The first time a
program loads ``mxnet`` or ``gluoncv`` (a look-up with ``importlib.util.find_spec`` does
nothing), it runs what ``import gluonft`` runs before MXNet loads -- `gluonft.threads` (every
core), `gluonft.cuda` (the CUDA build's libraries) and `gluonft.compat.prepare` -- loaded from
gluonft's folder on their own (they import nothing from the package), registered under their
own names so that a later ``import gluonft`` uses the same modules, then removes itself and
lets the module load as usual.

``GLUONFT_NO_HOOK=1`` turns it off.
"""
import importlib.util
import os
import sys

_BOOT = ("threads", "cuda", "compat")  # the modules that run before MXNet loads, in order


class _BeforeMXNet:
    """A meta-path finder for mxnet and gluoncv that finds them where the other finders do and
    only wraps their loader: looking a module up (``importlib.util.find_spec``) changes
    nothing; loading it runs gluonft's preparation first."""

    def __init__(self):
        self.searching = False

    def find_spec(self, name, path=None, target=None):
        if name not in ("mxnet", "gluoncv") or self.searching:
            return None
        self.searching = True  # the other finders' answer, without asking this one again
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.searching = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PrepareFirst(spec.loader)
        return spec


class _PrepareFirst:
    """The module's own loader, with gluonft's preparation before the module runs."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        _remove()
        _prepare()
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: the loader's own
        return getattr(self.loader, name)


def _prepare():
    if "mxnet" in sys.modules and getattr(sys.modules["mxnet"], "__version__", None):
        return  # MXNet is already loaded (gluoncv imported after it)
    package = importlib.util.find_spec("gluonft")
    if package is None or not package.submodule_search_locations:
        return  # gluonft was uninstalled, this file left behind
    folder = list(package.submodule_search_locations)[0]
    boot = {part: _load(f"gluonft.{part}", os.path.join(folder, f"{part}.py"))
            for part in _BOOT}
    boot["threads"].use_every_core()
    boot["cuda"].preload()
    boot["compat"].prepare()


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
