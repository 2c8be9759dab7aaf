"""Recipes: the practitioner's verb over `fit` — train a classifier on a folder of photos
(`gluonft.fine_tuning` fine-tunes in stages; `gluonft.lr_finder` finds a learning rate).

    >>> clf = gluonft.train_classifier("photos/", fast_train=True)  # doctest: +SKIP

Each verb is a few lines over the core (`load_backbone`, `apply_regime`, `fit`); none has a
training loop of its own: `fine_tune` runs one `fit` per stage (`lr_find` is one `fit` with
a step hook that sweeps the learning rate). The recipes `train_classifier` uses are data
(`RECIPES`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .amp import active_dtype
from .backbones import MAX_IMAGE_SIZE, check_image_size, family_of, load_backbone
from .candidates import pick_backbone
from .cpu import kernels
from .datasets.folder import folder_classes, image_folder
from .datasets.table import labelled_images, read_labels
from .distributed import DIST_KVSTORES, Cluster, check_kvstore
from .fileio import FolderLock, check_writable_folder
from .fine_tuning import check_stage, fine_tune
from .heads import parse_head
from .mixing import Mix
from .model_io import MODEL_JSON, Classifier, classifier_of, save_classifier
from .pipelines import Albumentations
from .predict import evaluate
from .quantize import check_feature_dtype
from .regimes import apply_regime, parse_regime
from .train import History, fit
from .transforms import Augment

__all__ = ["train_classifier", "Recipe", "RECIPES",
           "FAST_IMAGE_SIZE", "DEFAULT_IMAGE_SIZE"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Recipe:
    """How `train_classifier` trains, as data.

    Attributes:
        name: ``"fast"``, ``"default"`` or ``"staged"`` (or a `bench.recipes` candidate's).
            ``image_size``: input side.
        stages: ``(regime, epochs)`` pairs (`fine_tune`); a single head-only stage with
            ``cached=True`` trains on features computed once.
        lr: the head's learning rate; ``backbone_lr_mult``: the backbone's multiplier.
        augment: `Augment.preset` name of the stages that train backbone blocks.
        mix: ``"mixup"`` or ``"cutmix"`` for those stages, or None.
        head: the new head (`gluonft.heads`).
        cached: head only on cached features (no augmentation).
        model: the backbone (`train_classifier`'s ``model=`` overrides it).
    """
    name: str
    image_size: int
    stages: Tuple[Tuple[str, int], ...]
    lr: float
    backbone_lr_mult: float = 0.1
    augment: str = "standard"
    cached: bool = False
    mix: Optional[str] = None
    # On clothing-small (bench.variants, 2 seeds) mlp:1024,256 beat the linear head on
    # validation (0.864 vs 0.840 fast, 0.864 vs 0.858 default) and test (0.848 vs 0.824 fast,
    # 0.863 vs 0.850 default), with a lower test loss (0.46 vs 0.56, 0.42 vs 0.50).
    head: str = "mlp:1024,256"
    model: str = "mobilenet0.75"
# The default recipe's augmentation, by validation accuracy on clothing-small (bench.variants,
# mobilenet0.75, the default stages, seed 0): none 0.868 (test 0.863, 181 s), standard 0.848
# (0.852, 364 s), an albumentations pipeline 0.883 (0.879, 309 s; an optional extra, so not the
# default), standard + mixup 0.848 (0.841), standard + cutmix 0.812 (0.825). Unaugmented, the
# last-k stages also train on cached features: twice as fast.

    def describe(self, stages: Sequence[Tuple[str, int]]) -> str:
        if self.cached:
            return "head only on cached features"
        return "fine_tune " + ", ".join(f"{r} x{e}" for r, e in stages)


# Chosen by `python -m bench.recipes` (2-core CPU; clothing-small and a CIFAR-10 JPEG sample;
# by validation accuracy, the mean over both datasets, within each time budget; README has the
# table): "fast" is the best within 1 minute per 3,000 photos, "default" within 10.
RECIPES: Dict[str, Recipe] = {
    # lr 0.01, not higher: on clothing-small 0.1 reached the same test accuracy (mobilenet0.75:
    # 0.825 vs 0.823) but a test loss of 2.6 against 0.58, its wrong answers ~95 % "sure".
    "fast": Recipe("fast", 160, (("head", 10),), lr=0.01, augment="none", cached=True,
                   model="efficientnet_lite0"),
    # The last 4 blocks at x0.3, not the last 2 at x0.1: +1.5 / +2.9 points of validation
    # accuracy (clothing / CIFAR) for 1.6x the minutes; test +4.3 / +3.4 points over "fast".
    "default": Recipe("default", 260, (("head", 4), ("last_k:4", 4)), lr=0.05,
                      backbone_lr_mult=0.3, augment="none", model="efficientnet_lite2"),
    # The default before the benchmark: what stages=, augment= and mix= fine-tune when no
    # recipe is named (they need a fine-tuning recipe; the mobilenet keeps them quick).
    "staged": Recipe("staged", 160, (("head", 4), ("last_k:2", 3), ("last_k:4", 3)),
                     lr=0.05, backbone_lr_mult=0.1, augment="none"),
}
# The batch every recipe trains with (shared out over the workers of a distributed job).
RECIPE_BATCH_SIZE = 64
# The recipes' input sides under their first names.
FAST_IMAGE_SIZE = RECIPES["fast"].image_size
DEFAULT_IMAGE_SIZE = RECIPES["default"].image_size


def _check_positive_int(name, value, *, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return int(value)


def _check_stages(stages, *, fast_train: bool, epochs,
                  recipe: str = "fast") -> Optional[Tuple[Tuple[str, int], ...]]:
    if stages is None:
        return None
    if fast_train:
        raise ValueError(f"stages are for fine-tuning; the {recipe!r} recipe trains the head "
                         f"only, on cached features (recipe='staged' fine-tunes)")
    if epochs is not None:
        raise ValueError("pass the epochs inside stages, not epochs=, when giving stages")
    stages = tuple(check_stage(s) for s in stages) if stages else ()
    if not stages:
        raise ValueError("stages must list at least one (regime, epochs) pair")
    for regime, _ in stages:
        parse_regime(regime)  # a typo fails now, not after the first stages trained
    return stages


def _check_size(model: str, size) -> int:
    if model != "auto":
        return check_image_size(model, size)
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int number of pixels in [8, "
                         f"{MAX_IMAGE_SIZE}], got {size!r}")
    return size


def train_classifier(train_dir, images: Optional[PathLike] = None, *,
                     model: Optional[str] = None,
                     weights="default", fast_train: bool = False,
                     recipe: Union[str, Recipe, None] = None,
                     max_params: Optional[int] = None, image_size: Optional[int] = None,
                     epochs: Optional[int] = None, ctx=None, seed: int = 0,
                     out: Optional[PathLike] = None, overwrite: bool = False,
                     stages: Optional[Sequence[Tuple[str, int]]] = None,
                     head=None, dropout: Optional[float] = None,
                     augment=None, mix=None, feature_dtype: str = "float32",
                     kvstore: Optional[str] = None, progress: bool = False) -> Classifier:
    """Train a classifier on a folder of photos (one sub-folder per class), or on photos
    labelled by a table: ``train_classifier(train_gt, train_img_dir, fast_train=True)`` with
    ``train_gt`` a dict ``{file name: class_id}`` or a CSV path (`labelled_images`).

    The recipes (`RECIPES`, chosen by ``python -m bench.recipes``; README has their figures):
    ``fast_train=True`` (``recipe="fast"``): EfficientNet-Lite0 stays frozen and only the new
    head trains, on features computed once (no augmentation), at 160 px for 10 epochs: about a
    minute for clothing-small's 3781 photos on a 2-core CPU, loading included (1.0 min). The
    default: EfficientNet-Lite2 at 260 px, the head on cached features (4 epochs), then the last 4
    blocks with a 0.3x learning rate for the backbone (4 epochs): about 9 minutes there (8.7).
    ``stages=``, ``augment=`` or ``mix=`` without a recipe fine-tune ``"staged"`` (mobilenet0.75
    at 160 px: the head, then the last 2 and the last 4 blocks, the default before).

    Args:
        train_dir: a folder in the layout of `gluonft.datasets.image_folder`: ``train/``
            (``validation/``, ``test/``) of class folders, or class folders only (then 20 % of
            each class is held out for validation); or, with ``images``, the labels: a dict
            ``{file name: label}`` or a CSV file (`gluonft.datasets.labelled_images`; 20 %
            held out for validation). The model then answers in those labels (`classify`).
        images: the image folder the labels name; only with labels.
        model: a backbone name, or ``"auto"``: the best candidate within ``max_params``
            (`pick_backbone`, the head's parameters counted); default the recipe's:
            ``efficientnet_lite2`` (``"default"``), ``efficientnet_lite0`` (``"fast"``),
            ``mobilenet0.75`` (``"staged"``).
        weights: starting weights, as `load_backbone` takes them (``"default"``, a file, None).
        fast_train: head only on cached features (see above): ``recipe="fast"``.
        recipe: a name of `RECIPES` (``"fast"``, ``"default"``, ``"staged"``) or a `Recipe`;
            default ``"fast"`` with ``fast_train``, else ``"default"``.
        max_params: parameter budget, or None.
        image_size: input side (default: the recipe's).
        epochs: epochs (a head-only recipe: total; else per stage); default the recipe's.
        stages: `fine_tune` stages ``((regime, epochs), ...)`` replacing the default recipe,
            e.g. ``(("head", 4), ("last_k:4", 4), ("full", 6))``; not with ``fast_train``.
        augment: the augmentation of the fine-tuning stages instead of the recipe's: an
            `Augment.preset` name (``"none"``, ``"light"``, ``"standard"``, ``"strong"``),
            an `Augment`, or a `gluonft.pipelines.Albumentations` pipeline.
        mix: ``"mixup"``, ``"cutmix"``, a `gluonft.mixing.Mix`, or ``"none"``, instead of the
            recipe's (not with ``fast_train``: it trains on cached features).
        head: the new head, as `load_backbone` takes it: ``"linear"``, ``"mlp:512"`` ...
            or a gluon HybridBlock; default the recipe's, ``"mlp:1024,256"``; ``dropout``: an
            MLP head's dropout (0.5).
        feature_dtype: ``"int8"``: with ``fast_train``, the cached features come from an int8
            copy of the backbone calibrated on training photos (`gluonft.quantize`).
        ctx: a context or list of contexts.
        kvstore: a distributed kvstore (``"dist_sync"`` ...) when this process is one worker
            of a job started by `python -m gluonft.launch` (`gluonft.distributed`): the
            recipe's batch of 64 is shared out over the workers (the same batches, so the same
            recipe), and only the worker of rank 0 writes ``out``.
        seed: seeds the head's initialisation, shuffling and augmentation.
        out: a model folder to save to (`save_classifier`); None: not saved.
        overwrite: replace an existing different model at ``out``.
        progress: show progress bars.

    Returns:
        a `Classifier`; ``clf.params`` is its parameter count, ``clf.meta`` holds the history,
        the wall time, where it went (``timings``: building the net, decoding the photos,
        each stage's feature caching, steps and validation, the test scoring, writing), the
        ``precision`` and ``kernels`` it ran with (`gluonft.cpu.kernels`) and, when the folder
        has a test split, ``test_accuracy``.

    Example:
        >>> clf = train_classifier("../shared/data/clothing-small",
        ...                        fast_train=True)  # doctest: +SKIP
        >>> clf.backbone, round(clf.meta["test_accuracy"], 3)  # doctest: +SKIP
        ('efficientnet_lite0', 0.866)
    """
    begin = time.perf_counter()
    _check_layout(train_dir, images)
    recipe = _recipe_of(recipe, fast_train, fine_tuning=stages is not None
                        or augment is not None or mix is not None)
    fast_train = recipe.cached  # head only on cached features: what the checks below ask
    model = recipe.model if model is None else model
    stages = _check_stages(stages, fast_train=fast_train, epochs=epochs, recipe=recipe.name)
    epochs = _check_positive_int("epochs", epochs)
    if model != "auto":
        family_of(model)  # fail on a bad name before decoding thousands of photos
    head = recipe.head if head is None else head
    parse_head(head, dropout=dropout)
    augment, mix = _augment_of(recipe, augment, fast_train), _mix_of(recipe, mix, fast_train)
    check_feature_dtype(feature_dtype)
    if feature_dtype != "float32" and not fast_train:
        raise ValueError(f"feature_dtype={feature_dtype!r} quantizes cached features: it goes "
                         f"with fast_train=True or another recipe on cached features, not "
                         f"{recipe.name!r}")
    size = _check_size(model, recipe.image_size if image_size is None else image_size)
    cluster = Cluster.join(kvstore) if check_kvstore(kvstore) in DIST_KVSTORES else None
    batch_size = _per_worker(RECIPE_BATCH_SIZE, cluster)
    writer = cluster is None or cluster.is_chief
    # before the work, so that nothing is lost
    lock = _lock_model_folder(out, overwrite) if writer else None
    try:
        # The net first, from the class names alone: a bad weights file or head fails in
        # seconds, not after minutes of decoding photos.
        table = None if images is None else read_labels(train_dir)
        classes = folder_classes(train_dir) if table is None else table.classes
        name = pick_backbone(model=model, max_params=max_params, classes=len(classes),
                             head=head)
        size = check_image_size(name, size)
        net = load_backbone(name, classes=len(classes), weights=weights, ctx=ctx, seed=seed,
                            head=head, dropout=dropout)
        clock = _PhaseClock(begin, "net")
        data = (image_folder(train_dir, image_size=size) if table is None
                else labelled_images(table, images, image_size=size))
        clock.lap("decode")
        stages = stages or tuple((r, epochs or e) for r, e in recipe.stages)
        extra = {} if feature_dtype == "float32" else {"feature_dtype": feature_dtype}
        history = _train_by_recipe(net, data, recipe, stages, augment=augment, mix=mix,
                                   batch_size=batch_size, image_size=size, ctx=ctx, seed=seed,
                                   progress=progress, kvstore=kvstore, **extra)
        clock.lap("training")
        meta = {"stored_size": data.stored_size, "fit": data.fit,
                "recipe": recipe.describe(stages),
                "train_dir": str(train_dir if table is None else images),
                "train_images": len(data.train), "history": history.to_dict(),
                "skipped_files": list(data.skipped)}
        if table is not None:
            meta["labels"] = list(table.labels)
            meta["labels_table"] = table.source
        if data.validation is not None:
            meta["val_accuracy"] = history["val_acc"][-1]
        if data.test is not None:
            meta["test_accuracy"] = evaluate(net, data.test, ctx=ctx, image_size=size,
                                             kvstore=kvstore)["accuracy"]
            clock.lap("test")
        meta["train_seconds"] = round(time.perf_counter() - begin, 2)
        meta["timings"] = clock.breakdown(history)
        meta.update(precision=active_dtype() or "float32", kernels=kernels())
        if out is not None and writer:
            save_classifier(net, out, classes=data.classes, image_size=size,
                            overwrite=overwrite, extra=meta)
            clock.lap("write")  # known after the file is written: in the returned meta only
            meta["timings"] = clock.breakdown(history)
        return classifier_of(net, data.classes, size, meta)
    finally:
        if lock is not None:
            lock.release()


class _PhaseClock:
    """Where a training's seconds went: its phases in order, and each fit's own timings."""

    def __init__(self, begin: float, first: str):
        self.last = time.perf_counter()
        self.seconds = {first: self.last - begin}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self.last
        self.last = now

    def breakdown(self, history: History) -> dict:
        """``{"net_s", "decode_s", "training_s", "test_s", "write_s"`` (those run)``,
        "stages": [{"regime", "features_s", "steps_s", "validation_s"}, ...]}``, and
        ``"shared_features_s"`` when `fine_tune`'s stages shared one pass over the photos:
        these parts add up to less than ``training_s``, which also builds and compiles each
        stage's graphs."""
        parts = history.settings.get("stages") or [history.settings]
        stages = [dict(regime=p.get("regime", "head"), **p["timings"]) for p in parts
                  if "timings" in p]
        # Unrounded: the parts then add up to no more than the whole; the printed line rounds.
        breakdown = dict({f"{k}_s": v for k, v in self.seconds.items()}, stages=stages)
        shared = history.settings.get("shared_features")
        if shared:  # fine_tune's one pass over the photos for its caching stages
            breakdown["shared_features_s"] = shared["seconds"]
        return breakdown


def _recipe_of(recipe, fast_train, *, fine_tuning: bool) -> Recipe:
    """The recipe asked for; with none named, ``fast``, or ``staged`` when stages,
    augmentation or mixing are given (they are for fine-tuning), else ``default``."""
    if not isinstance(fast_train, bool):
        raise ValueError(f"fast_train must be True or False, got {fast_train!r}")
    if recipe is None:
        return RECIPES["fast" if fast_train else "staged" if fine_tuning else "default"]
    if fast_train:
        raise ValueError(f"fast_train=True is recipe='fast'; give one of them, not both "
                         f"(recipe={recipe!r})")
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}: expected one of "
                             f"{', '.join(RECIPES)} or a gluonft.recipes.Recipe")
        return RECIPES[recipe]
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a name of gluonft.RECIPES or a "
                         f"gluonft.recipes.Recipe, got {recipe!r}")
    return recipe


def _per_worker(batch_size: int, cluster) -> int:
    """Each worker's part of the recipe's batch: the workers together take the recipe's."""
    if cluster is None:
        return batch_size
    if batch_size % cluster.workers:
        raise ValueError(f"the recipe's batch of {batch_size} images cannot be shared out "
                         f"evenly over {cluster.workers} workers; use a number of workers that "
                         f"divides {batch_size}")
    return batch_size // cluster.workers


def _check_layout(train_dir, images) -> None:
    is_table = isinstance(train_dir, Mapping) or str(train_dir).lower().endswith(".csv")
    if is_table and images is None:
        raise ValueError(f"labels ({'a dict' if isinstance(train_dir, Mapping) else train_dir})"
                         f" need the image folder they name: train_classifier(labels, "
                         f"images_dir, ...)")
    if images is not None and not is_table:
        raise ValueError(f"train_classifier(train_dir, images): with an image folder the first "
                         f"argument must be the labels, a dict {{file name: label}} or a .csv "
                         f"file, got {train_dir!r}")


def _augment_of(recipe: Recipe, augment, fast_train: bool):
    if augment is None:
        return Augment.preset(recipe.augment)
    if fast_train:
        raise ValueError(f"augment= is for fine-tuning; the {recipe.name!r} recipe trains the "
                         f"head on cached features of the unaugmented photos")
    if isinstance(augment, str):
        return Augment.preset(augment)
    if not isinstance(augment, (Augment, Albumentations)):
        raise ValueError(f"augment must be an Augment preset name, an Augment or a gluonft."
                         f"pipelines.Albumentations, got {augment!r}")
    return augment


def _mix_of(recipe: Recipe, mix, fast_train: bool) -> Optional[Mix]:
    if mix is None:
        return Mix.of(recipe.mix) if recipe.mix else None
    if fast_train:
        raise ValueError(f"mix= is for fine-tuning; the {recipe.name!r} recipe trains the head "
                         f"on cached features of the unmixed photos")
    if isinstance(mix, str):
        return Mix.of(mix)  # an unknown name fails in Mix, naming it
    if not isinstance(mix, Mix):
        raise ValueError(f"mix must be 'mixup', 'cutmix', 'none' or a gluonft.mixing.Mix, "
                         f"got {mix!r}")
    return mix


def _train_by_recipe(net, data, recipe: Recipe, stages, *, augment, mix, **common) -> History:
    if recipe.cached:
        apply_regime(net, "head")
        (_, epochs), = stages
        return fit(net, data.train, data.validation, epochs=epochs, lr=recipe.lr,
                   augment=Augment.none(), cache_features=True, **common)
    return fine_tune(net, data.train, data.validation, stages=stages, lr=recipe.lr,
                     backbone_lr_mult=recipe.backbone_lr_mult, augment=augment, mix=mix,
                     **common)


def _lock_model_folder(out, overwrite: bool) -> Optional[FolderLock]:
    """Check ``out`` and lock it: two trainings into one model folder would each replace the
    other's result. The lock file sits beside the folder, which is replaced by a rename."""
    if out is None:
        return None
    out = Path(out).expanduser()
    _check_out(out, overwrite)
    return FolderLock(out, lock_file=str(out.parent / f".{out.name}.lock")).acquire()


def _check_out(out: Path, overwrite: bool) -> None:
    """Fail before training (minutes) rather than after, when ``out`` cannot be written."""
    check_writable_folder(out, what="model folder")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file, not a model folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MODEL_JSON).is_file():
            raise FileExistsError(f"{out} exists and is not a gluonft model folder; refusing "
                                  f"to replace it, choose another path")
        if not overwrite:
            raise FileExistsError(f"{out} already holds a model; pass overwrite=True "
                                  f"(--overwrite) to replace it, or choose another folder")

