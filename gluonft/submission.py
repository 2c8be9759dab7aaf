"""Competition submission files: predictions for an unlabelled folder, in a sample's row order.

A Kaggle-style competition hands out ``sample-submission.csv`` (``Id,Category``, one row per
test image, ids with or without the file extension) and scores a CSV in exactly that row order
and those columns. `write_submission` keeps the sample's header, row order, ids as written and
any other columns, and fills the label column with the model's answer: the label of the
training table for a model trained from one (`gluonft.datasets.labelled_images`), else the
class-folder name.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Dict, Union

from .datasets.table import FILE_COLUMNS, LABEL_COLUMNS, TableWarning, find_column, match_files
from .errors import short_list
from .fileio import atomic_write_text
from .predict import predict_files

__all__ = ["write_submission"]

PathLike = Union[str, "os.PathLike[str]"]


def write_submission(model, images: PathLike, sample: PathLike, out: PathLike, *,
                     tta: bool = False) -> Dict[str, object]:
    """Predict every image the sample submission names and write ``out`` in its row order.

    Args:
        model: a `Classifier` or `Ensemble`.
        images: the unlabelled test folder.
        sample: the sample submission CSV (a header row, then one row per test image); the
            id column is the first with a usual file/id name (``Id``, ``filename`` ...), else
            the first; the label column the first with a usual label name (``Category``,
            ``label`` ...), else the second.
        out: the submission CSV to write (atomically; the sample itself is never changed).
        tta: average over the image and its mirror.

    Returns:
        ``{"path", "rows", "unlisted_files"}``; ``unlisted_files``: images of the folder the
        sample does not name (also warned about; they are not predicted).

    Raises:
        ValueError: the sample names images the folder lacks, or images that do not decode
            (listed by name): a submission needs a row for each.

    Example:
        >>> write_submission(load_classifier("model"), "test_upload",
        ...                  "sample-submission.csv", "submission.csv")  # doctest: +SKIP
        {'path': 'submission.csv', 'rows': 1000, 'unlisted_files': []}
    """
    sample, images, out = Path(sample).expanduser(), Path(images).expanduser(), Path(out)
    if not sample.is_file():
        raise FileNotFoundError(f"sample submission {sample} does not exist; expected the "
                                f"competition's CSV (e.g. 'Id,Category' and one row per image)")
    if not images.is_dir():
        raise FileNotFoundError(f"test image folder {images} does not exist or is not a folder")
    if out.resolve() == sample.resolve():
        raise ValueError(f"--out {out} is the sample submission itself; write to another file")
    with open(sample, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ValueError(f"sample submission {sample} has no rows after its header")
    header, body = rows[0], rows[1:]
    if len(header) < 2:
        raise ValueError(f"sample submission {sample} has the columns {header}; expected an id "
                         f"column and a label column")
    id_at = find_column(header, FILE_COLUMNS)
    id_at = 0 if id_at is None else id_at
    label_at = find_column(header, LABEL_COLUMNS)
    label_at = (1 if id_at == 0 else 0) if label_at is None else label_at
    ids = [r[id_at].strip() for r in body]
    found, missing, unlisted = match_files(ids, images)
    if missing:
        raise ValueError(f"{len(missing)} image(s) the sample submission {sample} names are "
                         f"not in {images}: {short_list(missing)}")
    unlisted_names = [p.relative_to(images).as_posix() for p in unlisted]
    if unlisted_names:
        warnings.warn(f"{len(unlisted_names)} image(s) in {images} are not in {sample}; not "
                      f"predicted: {short_list(unlisted_names)}", TableWarning, stacklevel=2)
    unique = list(dict.fromkeys(found[i] for i in ids))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predicted = predict_files(model, [str(p) for p in unique], tta=tta)
    answers = {row["file"]: row["label"] for row in predicted}
    unreadable = [i for i in ids if str(found[i]) not in answers]
    if unreadable:
        raise ValueError(f"{len(unreadable)} image(s) of the sample submission do not decode: "
                         f"{short_list(unreadable)}; " + "; ".join(str(w.message) for w in caught))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for row, image_id in zip(body, ids):
        row = list(row) + [""] * (len(header) - len(row))
        row[label_at] = answers[str(found[image_id])]
        writer.writerow(row)
    atomic_write_text(str(out), text.getvalue())
    return {"path": str(out), "rows": len(body), "unlisted_files": unlisted_names}
