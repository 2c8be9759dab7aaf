"""Presets of `python -m bench.cifar`, as data: how much data, what size, how long.

``full``  the default on a GPU: all of CIFAR-10, each backbone at its pretrained input size
          (224 px for ImageNet backbones), fine-tuning epochs as in the literature (10-15).
``cpu``   the default without a GPU: a stratified subset (200 train + 100 test images per
          class), ImageNet backbones at 64 px, 6 epochs: the default grid (4 backbones x head,
          full + the lab-1 baseline) takes about 25-30 minutes on 2 CPU cores. Measured on a
          2-core AMD EPYC at 64 px, training images/s: resnet18_v1 head 310 / full 86,
          mobilenetv2_1.0 280 / 110, resnet50_v1 145 / 37, densenet121 190 / 53; lab-1 CNN
          at 32 px ~400; so one epoch of the 8 backbone experiments over 1800 images takes
          ~155 s, and 6 epochs plus evaluation and the baseline ~25 min. Checked: the
          default grid with stand-in weight files (same architectures, so the same cost)
          ran in 1548 s (25.8 min) on that machine.
          Learning rates: six epochs on 1800 images favour a larger fine-tuning step than
          the literature's 0.01 (mobilenet0.75 at 64 px, full fine-tune: 57.4% test at 0.03
          vs 52.4% at 0.01; head only: 51-55% for 0.01..0.2; lab-1 CNN, 20 epochs: 52% at
          0.05, 51.5% at 0.1).
``smoke`` the whole pipeline in well under 3 minutes: 10 train / 5 test images per class,
          32 px, one epoch. Numbers from it are meaningless; it checks that everything runs.

Every value a preset sets can be overridden by the command-line flag of the same name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional

__all__ = ["Preset", "PRESETS", "preset_for_devices", "DEFAULT_MODELS", "DEFAULT_REGIMES",
           "BASELINE_MODEL", "BASELINE_NAME"]

# The grid of issue 3: four ImageNet backbones, frozen feature extractor vs full fine-tune.
DEFAULT_MODELS = ("resnet18_v1", "resnet50_v1", "mobilenetv2_1.0", "densenet121")
DEFAULT_REGIMES = ("head", "full")
BASELINE_MODEL = "lab1_cnn"
BASELINE_NAME = "Lab 1 CNN"


def _lr(head: float, last_k: float, full: float, scratch: float) -> Dict[str, float]:
    return {"head": head, "last_k": last_k, "full": full, "scratch": scratch}


@dataclass(frozen=True)
class Preset:
    """The values a preset sets.

    Attributes:
        name: ``full``, ``cpu`` or ``smoke``. ``description``: one line for the log.
        train_per_class: training images per class (a stratified subset), None for all.
        test_per_class: test images per class, None for all.
        val_fraction: share of the training images held out for the per-epoch validation
            curves (stratified); the test images are only used for the final accuracy.
        image_size: input side for backbones pretrained at a larger size; None: each
            backbone's own pretrained size. A backbone never runs above its pretrained size,
            so CIFAR-pretrained models (and the baseline) stay at 32 px.
        epochs, batch_size: for the transfer experiments.
        lr: learning rate per regime (``head``, ``last_k``, ``full``, ``scratch``): a frozen
            backbone takes a larger step than a pretrained one being fine-tuned.
        optimizer, momentum, wd: the optimizer (``sgd``, ``nag``, ``adam``) and its settings.
        schedule, warmup_epochs: the learning-rate schedule (see `gluonft.Schedule`).
        baseline_epochs, baseline_lr: the lab-1 CNN trained from scratch at 32 px.
        data_seed: seed of the subsets and the validation split (the same for every
            experiment, so all see the same images).
    """
    name: str
    description: str
    train_per_class: Optional[int]
    test_per_class: Optional[int]
    val_fraction: float
    image_size: Optional[int]
    epochs: int
    batch_size: int
    lr: Dict[str, float] = field(default_factory=lambda: _lr(0.05, 0.02, 0.01, 0.05))
    optimizer: str = "sgd"
    momentum: float = 0.9
    wd: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    baseline_epochs: int = 30
    baseline_lr: float = 0.05
    data_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: Dict[str, Preset] = {
    "full": Preset(
        name="full",
        description="GPU default: all of CIFAR-10, each backbone at its pretrained size "
                    "(224 px for ImageNet), 12 epochs",
        train_per_class=None, test_per_class=None, val_fraction=0.1, image_size=None,
        epochs=12, batch_size=64, baseline_epochs=30),
    "cpu": Preset(
        name="cpu",
        description="CPU default: 200 train + 100 test images per class, 64 px, 6 epochs "
                    "(the default grid: ~30 min on 2 cores)",
        train_per_class=200, test_per_class=100, val_fraction=0.1, image_size=64,
        epochs=6, batch_size=64, lr=_lr(0.05, 0.03, 0.03, 0.05), baseline_epochs=20),
    "smoke": Preset(
        name="smoke",
        description="pipeline check (< 3 min): 10 train + 5 test images per class, 32 px, "
                    "1 epoch; the accuracies mean nothing",
        train_per_class=10, test_per_class=5, val_fraction=0.2, image_size=32,
        epochs=1, batch_size=32, warmup_epochs=0.0, baseline_epochs=1),
}


def preset_for_devices(devices) -> str:
    """``"full"`` when any of ``devices`` is a GPU, else ``"cpu"``.

    Example:
        >>> preset_for_devices(gluonft.devices())
        'cpu'
    """
    return "full" if any(getattr(d, "device_type", "cpu") == "gpu" for d in devices) else "cpu"
