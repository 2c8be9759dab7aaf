"""gluonft: transfer learning on MXNet Gluon and GluonCV model-zoo backbones."""
import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("gluonft").joinpath("__init__.py").read_text()).group(1)

# Pinned so that the set co-installs and imports together on Python 3.11: mxnet 1.9.1 still
# uses np.bool, removed in numpy 1.24, and gluoncv's own unpinned requirements pull numpy 2.
CORE = [
    "numpy>=1.21,<1.24",
    "gluoncv==0.10.5.post0",
    "matplotlib>=3.5,<3.11",
    "opencv-python-headless>=4.5,<4.12",
    "tqdm>=4.60",
    "Pillow>=9",
]
MXNET_CPU = "mxnet==1.9.1"
MXNET_GPU = "mxnet-cu112==1.9.1"

setup(
    name="gluonft",
    version=VERSION,
    description="Fine-tune GluonCV model-zoo backbones: head-only, last-k, full, scratch",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8,<3.12",
    packages=find_packages(include=["gluonft", "gluonft.*", "bench", "bench.*"]),
    install_requires=CORE + [MXNET_CPU],
    extras_require={
        # pip cannot swap one requirement for another through an extra, so the GPU install is
        # `pip install --no-deps mxnet-cu112==1.9.1` after this package; README shows it.
        "gpu": [MXNET_GPU],
        "test": ["pytest>=7", "nbformat>=5", "nbclient>=0.7", "ipykernel>=6"],
        "notebook": ["jupyter", "nbconvert>=7", "nbformat>=5", "nbclient>=0.7", "ipykernel>=6"],
    },
)
