"""`gluonft.datasets`: the public name for the datasets of `gluonft.data`."""
from .data import *  # noqa: F401,F403
from .data import __all__  # noqa: F401
