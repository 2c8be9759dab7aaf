"""Photos labelled by a table: a CSV file (or a dict ``{file name: label}``) and an image folder.

The layouts graders and competitions hand out:

    train/gt.csv  + train/images/*.jpg      filename,class_id       (integer ids)
    train.csv     + train/<class>/*.jpg     Id,Category             (ids without extension)

Columns are found by their usual names (file: ``filename``, ``file``, ``image``, ``id``,
``image_id`` ...; label: ``class_id``, ``class``, ``label``, ``category`` ..., any case) or
given. A file is matched by its path relative to the folder, else by its name, else by its
name without extension. Labels are integers when every label reads as one (then classes are in
numeric order), else strings (sorted). The original labels are kept (`FolderData.labels`), so a
model trained from a table answers in them.

What is checked, and how it is reported:
    a row naming a file the folder lacks       one warning listing them; those rows are left out
                                               (an error when no row matches a file)
    an image file without a row                one warning listing them; not used
    one file given two different labels        an error listing the files (also when the rows
                                               name it differently: "cat1.jpg" and "cat1")
    the same row twice                         used once
    one file named by two rows, one label      used once, with one warning listing them
    a class with a single image                one warning; it stays in training (a validation
                                               split needs two images of a class)
    a file that does not decode                skipped with one warning, as in `image_folder`
Image order is (class, file path), whatever the order of the rows, so that the same photos give
the same ImageSet as class folders would.
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import short_list
from .cifar10 import DatasetNotFound
from .folder import (
    FolderData,
    UnreadableImagesWarning,
    carve_split,
    check_decoding,
    decode,
    list_images,
    take_rows,
)
from .imageset import ImageSet, check_fraction, check_int, split_indices
from .store import where_stored

__all__ = ["labelled_images", "read_labels", "LabelTable", "FILE_COLUMNS", "LABEL_COLUMNS",
           "TableWarning", "match_files", "find_column"]

PathLike = Union[str, "os.PathLike[str]"]
Label = Union[int, str]

# Accepted spellings, compared case-insensitively, in order of preference.
FILE_COLUMNS = ("filename", "file_name", "file", "image", "image_name", "img", "path", "id",
                "image_id", "img_id")
LABEL_COLUMNS = ("class_id", "class", "label", "category", "category_id", "target", "y")


class TableWarning(UserWarning):
    """Rows and files of a labels table that do not match, listed by name."""


class LabelTable:
    """``{file name: label}`` with the class order it implies.

    Attributes:
        rows: file name -> original label (int or str), duplicates removed.
        labels: the distinct original labels in class order (numeric for integers).
        classes: their names as strings (``str(label)``), the names a model folder stores.
        source: where the table came from.
    """

    def __init__(self, rows: Mapping[str, Label], source: str):
        if not rows:
            raise ValueError(f"the labels table {source} has no rows")
        self.rows = dict(rows)
        self.labels: Tuple[Label, ...] = tuple(sorted(set(self.rows.values())))
        if len(self.labels) < 2:
            raise ValueError(f"the labels table {source} has a single label "
                             f"({self.labels[0]!r}); a classifier needs at least two classes")
        self.classes = tuple(str(label) for label in self.labels)
        self.source = source

    def index_of(self) -> Dict[Label, int]:
        return {label: i for i, label in enumerate(self.labels)}


def find_column(header: Sequence[str], accepted: Sequence[str]) -> Optional[int]:
    """The index of the first of ``accepted`` (lower case) among ``header``, any case."""
    lowered = [h.strip().lower() for h in header]
    for name in accepted:
        if name in lowered:
            return lowered.index(name)
    return None


def _pick_column(header: Sequence[str], given: Optional[str], accepted: Sequence[str],
                 what: str, path: str) -> int:
    if given is not None:
        found = find_column(header, [given.strip().lower()])
        if found is None:
            raise ValueError(f"{path} has no column {given!r}; its columns are {list(header)}")
        return found
    found = find_column(header, accepted)
    if found is not None:
        return found
    raise ValueError(f"{path}: cannot tell which column holds the {what}; its columns are "
                     f"{list(header)}, expected one of {', '.join(accepted)} (or pass "
                     f"{'file_column' if what == 'file names' else 'label_column'}=)")


def _typed(labels: Sequence[str]) -> List[Label]:
    """Integers when every label reads as one (ids), else the strings as written."""
    try:
        return [int(v) for v in labels]
    except ValueError:
        return list(labels)


def read_labels(labels: Union[PathLike, Mapping[str, Label]], *,
                file_column: Optional[str] = None,
                label_column: Optional[str] = None) -> LabelTable:
    """Read a labels table from a CSV file (with a header row) or a dict.

    Raises ValueError for a missing or headerless file, an unknown column, an empty label, or
    one file given two different labels (all of them listed). A `LabelTable` is returned as
    it is (read once, passed on).

    Example:
        >>> table = read_labels({"a.jpg": 3, "b.jpg": 1, "c.jpg": 3})
        >>> table.labels, table.classes
        ((1, 3), ('1', '3'))
    """
    if isinstance(labels, LabelTable):
        return labels
    if isinstance(labels, Mapping):
        values = [str(v).strip() if not isinstance(v, (int, np.integer)) else int(v)
                  for v in labels.values()]
        if any(isinstance(v, str) for v in values):
            values = _typed([str(v) for v in values])
        pairs = [(str(k), v) for k, v in zip(labels.keys(), values)]
        source = f"the labels dict ({len(pairs)} rows)"
    else:
        path = Path(labels).expanduser()
        if not path.is_file():
            raise DatasetNotFound(f"labels file {path} does not exist; expected a CSV file "
                                  f"with a header row such as 'filename,class_id'")
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path} is empty; expected a header row such as "
                                 f"'filename,class_id' and one row per image")
            file_at = _pick_column(header, file_column, FILE_COLUMNS, "file names", str(path))
            label_at = _pick_column(header, label_column, LABEL_COLUMNS, "labels", str(path))
            raw = []
            for line, row in enumerate(reader, start=2):
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) <= max(file_at, label_at) or not row[label_at].strip() \
                        or not row[file_at].strip():
                    raise ValueError(f"{path}, line {line}: {row!r} lacks a file name or a "
                                     f"label (columns {header[file_at]!r}, {header[label_at]!r})")
                raw.append((row[file_at].strip(), row[label_at].strip()))
        pairs = list(zip([r[0] for r in raw], _typed([r[1] for r in raw])))
        source = str(path)
    rows: Dict[str, Label] = {}
    conflicts: Dict[str, set] = {}
    for name, label in pairs:
        if name in rows and rows[name] != label:
            conflicts.setdefault(name, {rows[name]}).add(label)
        rows.setdefault(name, label)
    if conflicts:
        described = [f"{n} ({' vs '.join(map(repr, sorted(v, key=str)))})"
                     for n, v in conflicts.items()]
        raise ValueError(f"{source} gives {len(conflicts)} file(s) two different labels: "
                         f"{short_list(described)}; keep one row per file")
    return LabelTable(rows, source)


def match_files(names: Sequence[str], folder: Path) -> Tuple[Dict[str, Path], List[str],
                                                              List[Path]]:
    """Find each table name among the image files below ``folder``.

    A name matches a file by its path relative to ``folder``, else by file name, else by file
    name without extension (Kaggle ids); a name that matches two files is an error.

    Returns:
        (found: name -> path, missing names, files no name matched)
    """
    files = list_images(folder)
    by_relative = {p.relative_to(folder).as_posix(): p for p in files}
    by_name: Dict[str, List[Path]] = {}
    by_stem: Dict[str, List[Path]] = {}
    for p in files:
        by_name.setdefault(p.name, []).append(p)
        by_stem.setdefault(p.stem, []).append(p)
    found, missing, ambiguous = {}, [], []
    for name in names:
        key = name.replace("\\", "/")
        key = key[2:] if key.startswith("./") else key
        hit = by_relative.get(key)
        if hit is None:
            for table in (by_name, by_stem):
                candidates = table.get(key.rsplit("/", 1)[-1])
                if candidates:
                    if len(candidates) > 1:
                        ambiguous.append(f"{name} ({', '.join(str(c) for c in candidates[:3])})")
                    hit = candidates[0]
                    break
        if hit is None:
            missing.append(name)
        else:
            found[name] = hit
    if ambiguous:
        raise ValueError(f"{len(ambiguous)} name(s) of the labels table match several files "
                         f"under {folder}: {short_list(ambiguous)}; give paths relative to "
                         f"{folder} in the table")
    used = set(found.values())
    return found, missing, [p for p in files if p not in used]


def labelled_images(labels: Union[PathLike, Mapping[str, Label]], images: PathLike, *,
                    image_size: int = 224, margin: float = 1.15, fit: str = "crop",
                    val_fraction: Optional[float] = 0.2, test_fraction: Optional[float] = None,
                    seed: int = 0, workers: Optional[int] = None,
                    file_column: Optional[str] = None,
                    label_column: Optional[str] = None, on_disk: Optional[bool] = None,
                    store=None) -> FolderData:
    """Photos labelled by a CSV file or a dict, decoded as `image_folder` decodes them.

    Args:
        labels: a CSV path (header row; columns found by name, see the module docstring) or a
            dict ``{file name: label}``.
        images: the folder holding the images (flat or in sub-folders).
        image_size, margin, fit, workers: as in `image_folder`.
        val_fraction, test_fraction: stratified shares held out for validation / test
            (default 0.2 / none), seeded by ``seed``.
        file_column, label_column: column names, when they are not among the usual ones.
        on_disk, store: decoded images on disk, as in `image_folder`.

    Returns:
        a `FolderData` (layout ``"labels table"``) whose ``labels`` are the original labels
        in class order (``classes`` are their string forms).

    Example:
        >>> data = labelled_images("train/gt.csv", "train/images", image_size=160)  # doctest: +SKIP
        >>> data.labels[:3], len(data.train)  # doctest: +SKIP
        ((0, 1, 2), 2400)
    """
    image_size, side = check_decoding(image_size, margin, fit)
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    check_int("seed", seed, 0)
    table = read_labels(labels, file_column=file_column, label_column=label_column)
    folder = Path(images).expanduser()
    if not folder.is_dir():
        raise DatasetNotFound(f"image folder {folder} does not exist or is not a folder; "
                              f"expected the folder the names of {table.source} refer to")
    found, missing, unlabelled = match_files(list(table.rows), folder)
    found = _one_row_per_file(found, table, folder)
    if not found:
        raise ValueError(f"none of the {len(table.rows)} file names of {table.source} is an "
                         f"image under {folder} (e.g. {short_list(list(table.rows)[:3])}); is "
                         f"it the right folder?")
    if missing:
        warnings.warn(f"{len(missing)} row(s) of {table.source} name files that are not under "
                      f"{folder}; left out: {short_list(missing)}", TableWarning, stacklevel=2)
    if unlabelled:
        names = [p.relative_to(folder).as_posix() for p in unlabelled]
        warnings.warn(f"{len(unlabelled)} image(s) under {folder} have no row in "
                      f"{table.source}; not used: {short_list(names)}", TableWarning, stacklevel=2)
    index = table.index_of()
    ordered = sorted(found.items(), key=lambda item: (index[table.rows[item[0]]],
                                                       item[1].relative_to(folder).as_posix()))
    pixels, kept, skipped = decode([p for _, p in ordered], side=side, fit=fit,
                                   workers=workers, on_disk=on_disk, store=store)
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image file(s) skipped under {folder}: "
                      + ", ".join(skipped), UnreadableImagesWarning, stacklevel=2)
    targets = np.asarray([index[table.rows[name]] for name, _ in ordered], np.int32)[kept]
    absent = [table.classes[i] for i in np.flatnonzero(np.bincount(
        targets, minlength=len(table.labels)) == 0)]
    if absent:
        raise ValueError(f"no readable image of label(s) {', '.join(absent)} under {folder}: "
                         f"their rows name missing or unreadable files")
    everything = ImageSet(pixels, targets, table.classes,
                          f"{folder} labelled by {table.source} ({len(table.labels)} classes, "
                          f"stored {side}x{side} {fit}{where_stored(pixels)})", tuple(skipped))
    train, test = _carve_keeping_singletons(everything, test_fraction, seed, "test", store)
    train, validation = _carve_keeping_singletons(train, val_fraction, seed, "validation",
                                                  store)
    return FolderData(train=train, validation=validation, test=test, classes=table.classes,
                      root=str(folder), layout="labels table", image_size=image_size,
                      stored_size=side, fit=fit, labels=table.labels)


def _one_row_per_file(found: Dict[str, Path], table: "LabelTable",
                      folder: Path) -> Dict[str, Path]:
    """One row per photo: names that resolve to the same file ("cat1.jpg" and "cat1",
    "./dog2.jpg" and "dog2.jpg") are one photo, used once (a warning lists them) when their
    labels agree, an error when they do not. Otherwise it would count twice, and could land
    in both the training and the validation split."""
    by_path: Dict[Path, List[str]] = {}
    for name, path in found.items():
        by_path.setdefault(path, []).append(name)
    conflicts, repeats = [], []
    for path, names in by_path.items():
        if len(names) > 1:
            rows = ", ".join(f"{n!r}: {table.rows[n]!r}" for n in names)
            described = f"{path.relative_to(folder).as_posix()} ({rows})"
            labels = {table.rows[n] for n in names}
            (conflicts if len(labels) > 1 else repeats).append(described)
    if conflicts:
        raise ValueError(f"{table.source} gives {len(conflicts)} file(s) two different labels "
                         f"under different names: {short_list(conflicts)}; keep one row per file")
    if repeats:
        warnings.warn(f"{len(repeats)} image(s) under {folder} are named by several rows of "
                      f"{table.source} with the same label; each is used once: "
                      f"{short_list(repeats)}", TableWarning, stacklevel=3)
    return {names[0]: path for path, names in by_path.items()}


def _carve_keeping_singletons(source: ImageSet, fraction: Optional[float], seed: int,
                              name: str, store=None) -> Tuple[ImageSet, Optional[ImageSet]]:
    """`_carve`, except that a class with one image stays whole in ``source`` (with a warning)
    instead of failing: a table of real labels often has such a class, a folder layout not."""
    if not fraction:
        return source, None
    counts = np.bincount(source.labels, minlength=len(source.classes))
    single = np.flatnonzero(counts == 1)
    if not len(single):
        return carve_split(source, None, fraction, seed, name, store)
    warnings.warn(f"class(es) {', '.join(source.classes[i] for i in single)} have a single "
                  f"image: kept in training, none of it in the {name} split", TableWarning,
                  stacklevel=3)
    alone = np.isin(source.labels, single)
    others = np.flatnonzero(~alone)
    part_first, part_rest = split_indices(source.labels[others], len(source.classes),
                                          fraction, seed=seed)
    carved_rows = others[part_first]
    rest_rows = np.concatenate([others[part_rest], np.flatnonzero(alone)])
    rest_rows = rest_rows[np.argsort(source.labels[rest_rows], kind="stable")]  # (class, file)
    carved = take_rows(source, carved_rows, name=f"{name} {fraction} {seed} carved", store=store)
    carved.source = f"{source.source} [{name} split {fraction}, seed={seed}]"
    rest = take_rows(source, rest_rows, name=f"{name} {fraction} {seed} rest", store=store)
    rest.source = f"{source.source} [{name} split {fraction} removed, seed={seed}]"
    return rest, carved
