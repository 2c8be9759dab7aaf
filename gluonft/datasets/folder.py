"""Your own photos: a folder of class folders, decoded once into square uint8 images, in memory
or, for sets larger than memory, in a file on disk (`gluonft.datasets.store`).

Two layouts are recognised (class folders are sorted by name; that order is the label order):

    root/train/<class>/*.jpg          pre-split: train/ plus optionally validation/ (or val/)
    root/validation/<class>/*.jpg     and test/, each with the same class folders as train/
    root/test/<class>/*.jpg

    root/<class>/*.jpg                one folder: split into train/validation(/test) per class,
                                      by seeded fractions (stratified)

Every image is decoded once with OpenCV, converted to 8-bit RGB and resized to one square
*stored* size ``round(image_size * margin)`` (the margin leaves room for random crops: the
training batch is resampled from the stored image on the device, see `gluonft.transforms`).
How an image that is not square becomes square is ``fit``:

* ``"crop"`` (default): the central square (side = the shorter side) is kept. This is the
  convention of ImageNet evaluation (resize the shorter side, centre crop), which the pretrained
  weights were measured with; it loses the ends of the longer side (a quarter of a 3:4 photo).
* ``"pad"``: the whole image is kept, centred, and the rest filled with black (0), the same fill
  the augmentation uses outside the image. Nothing is lost; part of the input is empty.
* ``"stretch"``: the whole image is resized to the square, distorting its aspect ratio.

Shrinking uses ``cv2.INTER_AREA`` (the area average that does not alias), enlarging
``cv2.INTER_LINEAR``. Storing small squares keeps memory low: 3068 photos at 224 px
(stored at 258) take 0.6 GB, at 96 px (stored at 110) 0.1 GB.

What is read: files whose extension OpenCV decodes (`IMAGE_EXTENSIONS`, any case), found
recursively below each class folder (sorted), except hidden files and folders (names starting
with ``.``, e.g. macOS ``._photo.jpg``, and ``__MACOSX``). Other files (``.txt``, ``.csv``,
``Thumbs.db``) are ignored silently. A file with an image extension that does not decode
(corrupt, truncated, mislabelled) is skipped: one `UnreadableImagesWarning` lists all of them,
and each split's ``ImageSet.skipped`` keeps its own. Grayscale images are repeated over RGB;
RGBA / grey-alpha images are composited over white (transparent product-photo backgrounds are
meant to be white; the colour under alpha 0 is undefined); 16-bit images are scaled to 8 bits;
JPEG EXIF orientation is applied (phone photos). A JPEG much larger than the stored size is
decoded at 1/2, 1/4 or 1/8 scale by libjpeg (never below twice the stored side), which makes
loading large photos several times faster.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .cifar10 import DatasetNotFound
from .decode import FITS, load_images
from .imageset import ImageSet, check_fraction, check_int
from .store import decode_to_disk, is_on_disk, take_to_disk, wants_disk, where_stored

__all__ = ["image_folder", "folder_classes", "FolderData", "load_images", "list_images",
           "decode", "take_rows", "carve_split", "split_folders", "check_decoding",
           "UnreadableImagesWarning", "UnlabelledImagesWarning", "IMAGE_EXTENSIONS", "FITS",
           "SPLIT_NAMES"]

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm")
SPLIT_NAMES = ("train", "validation", "test")
# Accepted folder names of each split in the pre-split layout, first one preferred.
_SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val", "valid"),
                  "test": ("test",)}
_IGNORED_FOLDERS = ("__MACOSX",)


class UnlabelledImagesWarning(UserWarning):
    """A split folder (e.g. a competition's test/) holds images without class folders."""


class UnreadableImagesWarning(UserWarning):
    """Some files with an image extension could not be decoded and were skipped."""


@dataclass(eq=False)
class FolderData:
    """The splits of an image folder, sharing one class order.

    Index it like a dict: ``data["train"]``, ``data["validation"]`` (also ``data["val"]``),
    ``data["test"]``; a split that does not exist is None.

    Attributes:
        train: the training images.
        validation: validation images, or None.
        test: test images, or None.
        classes: class names in label order (the sorted class-folder names); save them with
            the model.
        root: the folder that was read.
        layout: ``"split folders"`` (``train/`` ...) or ``"class folders"`` (split by fraction).
        image_size: the training input size the images were stored for.
        stored_size: side of the stored square images (``round(image_size * margin)``).
        fit: how non-square images were made square (``"crop"``, ``"pad"``, ``"stretch"``).
        labels: for a labels table (`gluonft.datasets.labelled_images`), the original labels
            in class order (ints or strings); None for class folders, whose names are labels.

    Example:
        >>> data = image_folder("../shared/data/clothing-small", image_size=96)  # doctest: +SKIP
        >>> data.classes[:3], len(data["train"]), data.validation.images.shape[1:]  # doctest: +SKIP
        (('dress', 'hat', 'longsleeve'), 3068, (110, 110, 3))
    """

    train: ImageSet
    validation: Optional[ImageSet]
    test: Optional[ImageSet]
    classes: Tuple[str, ...]
    root: str
    layout: str
    image_size: int
    stored_size: int
    fit: str
    labels: Optional[Tuple[object, ...]] = None

    def __getitem__(self, split: str) -> Optional[ImageSet]:
        name = _split_name(split)
        return getattr(self, name)

    def items(self) -> Iterator[Tuple[str, ImageSet]]:
        """(split name, ImageSet) for each split that exists, in train/validation/test order."""
        for name in SPLIT_NAMES:
            if getattr(self, name) is not None:
                yield name, getattr(self, name)

    @property
    def skipped(self) -> Tuple[str, ...]:
        """Every unreadable file of every split."""
        # Splits carved from one folder share its list: each file once.
        return tuple(dict.fromkeys(s for _, part in self.items() for s in part.skipped))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(part)}" for name, part in self.items())
        return (f"FolderData({sizes}, {len(self.classes)} classes, "
                f"{self.stored_size}x{self.stored_size} {self.fit}, root={self.root!r}, "
                f"skipped={len(self.skipped)})")


def _split_name(split) -> str:
    for name, folders in _SPLIT_FOLDERS.items():
        if split == name or split in folders:
            return name
    raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLIT_NAMES)} "
                     "(or 'val')")


def _visible_dirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in _IGNORED_FOLDERS)


def list_images(folder: PathLike) -> List[Path]:
    """Image files below ``folder`` (recursively, sorted), by extension.

    Hidden files and folders (leading ``.``) and ``__MACOSX`` are left out; whether a file
    really decodes is checked when it is read (`load_images`).

    Args:
        folder: a folder.

    Returns:
        sorted list of paths whose lower-cased extension is in `IMAGE_EXTENSIONS`.

    Example:
        >>> len(list_images("../shared/data/dogcat"))  # doctest: +SKIP
        8
    """
    folder = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        # Pruning in place keeps os.walk out of hidden folders; sorting makes the order stable.
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and d not in _IGNORED_FOLDERS)
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


def _class_folders(folder: Path, what: str) -> List[str]:
    classes = [p.name for p in _visible_dirs(folder)]
    if not classes:
        files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        hint = (f"; it holds files ({', '.join(files[:5])}{' ...' if len(files) > 5 else ''}) "
                "but each class needs its own folder") if files else " (it is empty)"
        raise DatasetNotFound(f"{what} {folder} has no class folders{hint}; expected "
                              f"{folder}/<class>/<image files>, at least two classes")
    if len(classes) == 1:
        raise ValueError(f"{what} {folder} has only one class folder, {classes[0]!r}; a "
                         "classifier needs at least two classes (one folder per class)")
    return classes


def _load_split(folder: Path, classes: Sequence[str], *, what: str, side: int, fit: str,
                workers: Optional[int], on_disk: Optional[bool] = False,
                store=None) -> ImageSet:
    paths: List[Path] = []
    labels: List[int] = []
    empty = []
    for label, name in enumerate(classes):
        files = list_images(folder / name)
        if not files:
            empty.append(name)
        paths += files
        labels += [label] * len(files)
    if empty:
        raise ValueError(f"{what} {folder}: class folder(s) {', '.join(map(repr, empty))} hold "
                         f"no image files ({', '.join(IMAGE_EXTENSIONS)}); add images or remove "
                         "the folder(s)")
    images, kept, skipped = decode(paths, side=side, fit=fit, workers=workers,
                                   on_disk=on_disk, store=store)
    labels_kept = np.asarray(labels, np.int32)[kept]
    counts = np.bincount(labels_kept, minlength=len(classes))
    unreadable = [classes[i] for i in np.flatnonzero(counts == 0)]
    if unreadable:
        raise ValueError(f"{what} {folder}: no readable image in class folder(s) "
                         f"{', '.join(map(repr, unreadable))} ({len(skipped)} files did not "
                         f"decode, e.g. {skipped[:3]})")
    return ImageSet(images, labels_kept, tuple(classes),
                    f"{folder} (class folders, {len(classes)} classes, stored "
                    f"{side}x{side} {fit}{where_stored(images)})", tuple(skipped))


def decode(paths: Sequence[Path], *, side: int, fit: str, workers: Optional[int],
           on_disk: Optional[bool], store=None) -> Tuple[np.ndarray, List[int], List[str]]:
    """`load_images` in memory, or into a decoded store on disk (`gluonft.datasets.store`)
    when ``on_disk`` says so (None: above `store.ON_DISK_ABOVE_BYTES`)."""
    if wants_disk(on_disk, len(paths), side):
        return decode_to_disk(paths, side=side, fit=fit, workers=workers, folder=store)
    return load_images(paths, size=side, fit=fit, workers=workers)


def _is_unlabelled(folder: Path) -> bool:
    return not _visible_dirs(folder) and bool(list_images(folder))


def split_folders(root: Path) -> Optional[Dict[str, Path]]:
    """{split: folder} of the pre-split layout (``train/``, ``validation/`` also as ``val/`` or
    ``valid/``, ``test/``), None for a plain folder of class folders; a conflicting layout
    (both ``val/`` and ``validation/``) is a ValueError naming them."""
    names = {p.name: p for p in _visible_dirs(root)}
    if "train" not in names:
        return None
    found: Dict[str, Path] = {}
    for split, accepted in _SPLIT_FOLDERS.items():
        present = [a for a in accepted if a in names]
        if len(present) > 1:
            raise ValueError(f"{root} has both {' and '.join(p + '/' for p in present)}; "
                             f"expected one {split} folder")
        if present:
            found[split] = names[present[0]]
    known = {a for accepted in _SPLIT_FOLDERS.values() for a in accepted}
    others = sorted(set(names) - known)
    if others:
        listed = ", ".join(o + "/" for o in others)
        raise ValueError(f"{root} has a train/ folder and also {listed}; expected only "
                         "train/, validation/ (or val/) and test/ there, each holding class "
                         "folders (or no train/ folder and class folders only)")
    return found


def check_decoding(image_size, margin, fit: str) -> Tuple[int, int]:
    """Validate how photos are decoded; returns (image_size, stored side)."""
    image_size = check_int("image_size", image_size, 8)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 1:
        raise ValueError(f"margin must be a number >= 1 (stored side / image_size), "
                         f"got {margin!r}")
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}: expected one of {', '.join(FITS)}")
    return image_size, int(round(image_size * margin))


def folder_classes(root: PathLike) -> Tuple[str, ...]:
    """The class names of an `image_folder` layout, read off its folder names (nothing decoded),
    so that a net can be built and checked before minutes of decoding.

    Example:
        >>> folder_classes("../shared/data/clothing-small")[:2]  # doctest: +SKIP
        ('dress', 'hat')
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFound(f"image folder {root} does not exist or is not a folder; expected "
                              f"{root}/<class>/<images> or {root}/train/<class>/<images>")
    folders = split_folders(root)
    if folders is not None:
        return tuple(_class_folders(folders["train"], "train folder"))
    return tuple(_class_folders(root, "image folder"))


def image_folder(root: PathLike, *, image_size: int = 224, margin: float = 1.15,
                 fit: str = "crop", split: Optional[str] = None,
                 val_fraction: Optional[float] = None, test_fraction: Optional[float] = None,
                 seed: int = 0, workers: Optional[int] = None,
                 on_disk: Optional[bool] = None, store=None) -> Union[FolderData, ImageSet]:
    """Load a folder of class folders (your own photos) into memory.

    See the module docstring for the layouts, the files read, and how images are made square.
    With ``train/`` inside ``root`` the splits are the folders; ``val_fraction`` /
    ``test_fraction`` then only carve a validation / test split out of ``train/`` when that
    folder does not exist. Without ``train/`` the class folders are split per class by the
    fractions (default ``val_fraction=0.2``, ``test_fraction=0``): deterministic for ``seed``,
    and each class with at least two images gets at least one in each part.

    Args:
        root: the folder.
        image_size: the training input side the images are stored for, >= 8.
        margin: stored side = ``round(image_size * margin)``, >= 1: room for random crops
            (each batch is resampled to ``image_size`` on the device, so the stored images may
            be a little larger than the input).
        fit: ``"crop"``, ``"pad"`` or ``"stretch"``: how non-square images become square.
        split: None for all splits (a `FolderData`), or ``"train"``, ``"validation"`` (``"val"``)
            or ``"test"`` for that one `ImageSet` (in the split-folder layout only that folder
            is decoded).
        val_fraction: share of each class for validation, in [0, 1) (see above).
        test_fraction: share of each class for test, in [0, 1) (see above).
        seed: seed of the fraction split.
        workers: decoding threads (default: min(8, CPU count)).
        on_disk: keep the decoded images in a file on disk (a read-only memmap, see
            `gluonft.datasets.store`) instead of memory; None (default): when a split's
            images would take more than `store.ON_DISK_ABOVE_BYTES` (4 GiB).
        store: the folder of the decoded files (default ``$GLUONFT_STORE`` or
            ``~/.cache/gluonft/decoded``); reused while the photos are unchanged.

    Returns:
        `FolderData` (``split=None``), else the `ImageSet` of ``split``. Each ImageSet lists
        its unreadable files in ``skipped``.

    Raises:
        DatasetNotFound: ``root`` (or a split folder) does not exist or has no class folders.
        ValueError: one class only; a class folder without images (named); a split whose
            class folders differ from train's (named); a requested split that does not exist.

    Warns:
        UnreadableImagesWarning: once, listing every file with an image extension that did
            not decode (they are skipped).

    Example:
        >>> data = gluonft.datasets.image_folder("../shared/data/clothing-small",
        ...                                      image_size=96)  # doctest: +SKIP
        >>> data  # doctest: +SKIP
        FolderData(train=3068, validation=341, test=372, 10 classes, 110x110 crop, ...)
        >>> net = gluonft.load_backbone("mobilenet0.75", classes=len(data.classes),
        ...                             weights="imagenet")  # doctest: +SKIP
        >>> gluonft.fit(net, data.train, data.validation, epochs=3, batch_size=64, lr=0.01,
        ...             image_size=96)  # doctest: +SKIP
    """
    image_size, side = check_decoding(image_size, margin, fit)
    wanted = None if split is None else _split_name(split)
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    check_int("seed", seed, 0)
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetNotFound(f"image folder {root} does not exist; expected {root}/<class>/"
                              f"<images> or {root}/train/<class>/<images>")
    if not root.is_dir():
        raise DatasetNotFound(f"image folder {root} is not a folder")
    read = dict(side=side, fit=fit, workers=workers, on_disk=on_disk, store=store)

    folders = split_folders(root)
    if folders is not None:
        layout = "split folders"
        classes = _class_folders(folders["train"], "train folder")
        # A competition's unlabelled test/ (images, no class folders): not a split to score.
        unlabelled = [n for n, f in folders.items() if n != "train" and _is_unlabelled(f)]
        for name in unlabelled:
            warnings.warn(f"{folders[name]} holds images but no class folders: unlabelled, so "
                          f"not used as the {name} split (predict it with classify or "
                          f"'gluonft predict --submission')", UnlabelledImagesWarning,
                          stacklevel=2)
            del folders[name]
        for name, folder in folders.items():
            if name == "train":
                continue
            theirs = [p.name for p in _visible_dirs(folder)]
            missing, extra = sorted(set(classes) - set(theirs)), sorted(set(theirs) - set(classes))
            if missing or extra:
                raise ValueError(
                    f"{name} folder {folder} has other class folders than {folders['train']}: "
                    + "; ".join(part for part in (
                        f"missing {', '.join(map(repr, missing))}" if missing else "",
                        f"not in train {', '.join(map(repr, extra))}" if extra else "") if part)
                    + "; every split needs the same class folders (the labels follow train's)")
        for name, fraction in (("validation", val_fraction), ("test", test_fraction)):
            if fraction and name in folders:
                raise ValueError(f"{root} has its own {folders[name].name}/ folder, so "
                                 f"{'val' if name == 'validation' else 'test'}_fraction="
                                 f"{fraction} does not apply; pass None")
        # A split carved out of train/ needs train/ decoded even when only that split is asked.
        carved = {n for n, f in (("validation", val_fraction), ("test", test_fraction))
                  if f and n not in folders}
        need_train = wanted in (None, "train") or wanted in carved
        parts: Dict[str, Optional[ImageSet]] = {}
        for name in SPLIT_NAMES:
            if name in folders and (wanted is None or name == wanted
                                    or (name == "train" and need_train)):
                parts[name] = _load_split(folders[name], classes, what=f"{name} folder", **read)
        # Carve missing splits out of train when asked to.
        if "train" in parts:
            parts["train"], parts["test"] = carve_split(
                parts["train"], parts.get("test"), test_fraction, seed, "test", store)
            parts["train"], parts["validation"] = carve_split(
                parts["train"], parts.get("validation"), val_fraction, seed, "validation",
                store)
    else:
        layout = "class folders"
        classes = _class_folders(root, "image folder")
        everything = _load_split(root, classes, what="image folder", **read)
        val_fraction = 0.2 if val_fraction is None else val_fraction
        parts = {"train": everything}
        parts["train"], parts["test"] = carve_split(everything, None, test_fraction, seed, "test",
                                               store)
        parts["train"], parts["validation"] = carve_split(parts["train"], None, val_fraction, seed,
                                                     "validation", store)

    skipped = [s for name in SPLIT_NAMES if parts.get(name) is not None
               for s in parts[name].skipped]
    # Carved splits share their parent's skipped list; report each file once.
    skipped = list(dict.fromkeys(skipped))
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image file(s) skipped under {root}: "
                      + ", ".join(skipped), UnreadableImagesWarning, stacklevel=2)
    if wanted is not None:
        if parts.get(wanted) is None:
            have = ([f"{f.name}/" for f in folders.values()] if folders is not None
                    else [n for n in SPLIT_NAMES if parts.get(n) is not None])
            raise ValueError(f"{root} has no {wanted} split (layout: {layout}; found "
                             f"{', '.join(have)}); pass "
                             f"{'val' if wanted == 'validation' else 'test'}_fraction to carve "
                             "one out of train")
        return parts[wanted]
    return FolderData(train=parts["train"], validation=parts.get("validation"),
                      test=parts.get("test"), classes=tuple(classes), root=str(root),
                      layout=layout, image_size=image_size, stored_size=side, fit=fit)


def carve_split(source: ImageSet, existing: Optional[ImageSet], fraction: Optional[float],
                seed: int, name: str, store=None) -> Tuple[ImageSet, Optional[ImageSet]]:
    """(rest of source, the carved split) when a fraction is asked for, else unchanged. A
    source on disk gives parts on disk (stores of their own), not copies in memory."""
    if existing is not None or not fraction:
        return source, existing
    counts = source.class_counts()
    too_few = [c for c, n in counts.items() if n < 2]
    if too_few:
        raise ValueError(f"cannot split a {name} share of {fraction} out of {source.source}: "
                         f"class(es) {', '.join(map(repr, too_few))} have fewer than 2 images")
    first, others = source.split_indices(fraction, seed=seed)
    carved = take_rows(source, first, name=f"{name} {fraction} {seed} carved", store=store)
    rest = take_rows(source, others, name=f"{name} {fraction} {seed} rest", store=store)
    return (_renamed(rest, f"{source.source} [{name} split {fraction} removed, seed={seed}]"),
            _renamed(carved, f"{source.source} [{name} split {fraction}, seed={seed}]"))


def take_rows(source: ImageSet, rows, *, name: str, store=None) -> ImageSet:
    """``source.take(rows)``; for a source on disk, a store of its own named ``name`` (the
    part stays on disk instead of being copied into memory)."""
    if not is_on_disk(source.images):
        return source.take(rows, source=source.source)
    rows = np.asarray(rows, np.int64)
    return ImageSet(take_to_disk(source.images, rows, name=name, folder=store),
                    source.labels[rows], source.classes, source.source, source.skipped)


def _renamed(imageset: ImageSet, source: str) -> ImageSet:
    imageset.source = source
    return imageset
