"""Helpers for the tests of train_classifier, model folders, the CLI and the service: a small
classifier trained on the real clothing-small photos, built once per test session."""
import functools
import shutil
from pathlib import Path

import mxnet as mx
import numpy as np

CPU = mx.cpu()
SIZE = 64  # small inputs keep the tests within the CI budget on a 2-core CPU


def paths(shared: Path):
    return (shared / "data" / "clothing-small",
            shared / "weights" / "mobilenet0.75-imagenet.params")


@functools.lru_cache(maxsize=None)
def _data(root: str):
    from gluonft.datasets.folder import image_folder
    return image_folder(root, image_size=SIZE)


def data(shared: Path):
    """clothing-small at SIZE px (all three splits)."""
    return _data(str(paths(shared)[0]))


@functools.lru_cache(maxsize=None)
def _classifier(root: str, weights: str, seed: int):
    from gluonft.backbones import load_backbone
    from gluonft.model_io import Classifier
    from gluonft.regimes import apply_regime
    from gluonft.train import fit
    from gluonft.transforms import Augment
    folder = _data(root)
    net = load_backbone("mobilenet0.75", classes=len(folder.classes), weights=weights, ctx=CPU,
                        seed=seed)
    apply_regime(net, "head")
    train = folder.train.subset(n_per_class=100, seed=seed)
    fit(net, train, epochs=10, batch_size=64, lr=0.05, augment=Augment.none(),
        image_size=SIZE, ctx=CPU, progress=False, seed=seed)
    return Classifier(net=net, classes=folder.classes, image_size=SIZE, mean=net.family.mean,
                      std=net.family.std,
                      meta={"stored_size": folder.stored_size, "fit": folder.fit})


def classifier(shared: Path, *, seed: int = 0):
    """A head-only mobilenet0.75 classifier (ImageNet weights) trained on 1000 photos at 64 px
    (0.61 accuracy on the test split)."""
    root, weights = paths(shared)
    return _classifier(str(root), str(weights), seed)


def copy_photos(shared: Path, dest: Path, *, per_class: int = 2, split: str = "test",
                classes=None) -> Path:
    """A few real photos of each class in dest/<class>/ (copies in a temporary folder)."""
    src = paths(shared)[0] / split
    for folder in sorted(src.iterdir()):
        if classes is not None and folder.name not in classes:
            continue
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.iterdir())[:per_class]:
            shutil.copy(photo, dest / folder.name / photo.name)
    return dest


def sample_images(shared: Path, n: int = 12) -> np.ndarray:
    """uint8 stored-size images of the first n test photos."""
    return data(shared).test.images[:n]
