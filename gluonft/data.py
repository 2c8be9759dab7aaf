"""`gluonft.data`: the first name of the `gluonft.datasets` package, kept so that code written
against it (``from gluonft.data import ImageSet``, ``gluonft.data.folder``) keeps working."""
import sys as _sys

from . import datasets as _datasets
from .datasets import *  # noqa: F401,F403
from .datasets import __all__  # noqa: F401
from .datasets import cifar10 as _cifar10_module  # noqa: F401  (the submodules, loaded)
from .datasets import folder, imageset  # noqa: F401

# The submodules under their first names too: `import gluonft.data.folder` finds them here.
for _name in ("cifar10", "folder", "imageset"):
    _sys.modules[f"{__name__}.{_name}"] = _sys.modules[f"{_datasets.__name__}.{_name}"]
__path__ = []  # a package for the import system, whose submodules are those above
