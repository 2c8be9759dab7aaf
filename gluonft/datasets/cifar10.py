"""CIFAR-10 from local files: both official layouts, a JPEG class-folder layout, and download.

Local files are the normal case: a loader that insists on the official file sizes or sha1 sums
re-downloads a perfectly good subset, so sizes are checked only for consistency (whole records,
matching label counts), never against the official 10000 per batch.
"""
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from .imageset import ImageSet
from .store import files_key, pieces_to_disk, wants_disk

__all__ = ["cifar10", "cifar10_folder", "download_cifar10", "default_root", "DatasetNotFound",
           "CIFAR10_CLASSES", "CIFAR10_URL"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PY_DIR, BIN_DIR = "cifar-10-batches-py", "cifar-10-batches-bin"
_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE        # 3072: R plane, G plane, B plane, each 32x32 row-major
_RECORD = 1 + _PIXELS              # binary layout: 1 label byte + the pixels
_PY_BATCH = re.compile(r"^data_batch_(\d+)$")
_BIN_BATCH = re.compile(r"^data_batch_(\d+)\.bin$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

PathLike = Union[str, "os.PathLike[str]"]


class DatasetNotFound(FileNotFoundError):
    """The dataset files are not where they were looked for (and could not be downloaded).

    A FileNotFoundError, so ``except FileNotFoundError`` catches it; the message says which
    folder was searched, which layout was expected and how to get the files by hand.
    """


def default_root() -> Path:
    """The folder CIFAR-10 is looked for in when no root is given.

    ``$MXNET_HOME/datasets/cifar10`` if MXNET_HOME is set, else ``~/.mxnet/datasets/cifar10``:
    the same place as ``mxnet.gluon.data.vision.CIFAR10``, so files it downloaded are reused.

    Returns:
        the folder (it may not exist).

    Example:
        >>> default_root()  # doctest: +SKIP
        PosixPath('/home/me/.mxnet/datasets/cifar10')
    """
    home = os.environ.get("MXNET_HOME") or os.path.join("~", ".mxnet")
    return Path(home).expanduser() / "datasets" / "cifar10"


def _not_found_message(root: Path, reason: str) -> str:
    return (f"CIFAR-10 not found in {root}: {reason}.\n"
            "Expected one of these layouts there (or root pointing directly at one of these "
            "folders):\n"
            f"  {root / PY_DIR}/   data_batch_1 .. data_batch_5, test_batch (python pickles)\n"
            f"  {root / BIN_DIR}/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin "
            "(binary)\n"
            f"To get it by hand: download {CIFAR10_URL} and extract it into {root} "
            f"(tar xzf cifar-10-python.tar.gz -C {root}); or call cifar10(root, download=True) "
            "on a machine with internet access.")


def _layout_of(folder: Path) -> Optional[str]:
    """'py' or 'bin' if ``folder`` holds batch files of that layout, else None."""
    if not folder.is_dir():
        return None
    names = {p.name for p in folder.iterdir() if p.is_file()}
    if "test_batch" in names or any(_PY_BATCH.match(n) for n in names):
        return "py"
    if "test_batch.bin" in names or any(_BIN_BATCH.match(n) for n in names):
        return "bin"
    return None


def _locate(root: Path) -> Optional[Tuple[Path, str]]:
    # The root itself first, so that root may name a layout folder directly; then python before
    # binary, because the official archive we download is the python one.
    for folder in (root, root / PY_DIR, root / BIN_DIR):
        layout = _layout_of(folder)
        if layout is not None:
            return folder, layout
    return None


def _why_nothing_usable(root: Path) -> str:
    if not root.exists():
        return "the folder does not exist"
    if not root.is_dir():
        return "it is not a folder"
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return "the folder is empty"
    shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
    return f"no known layout in it (it holds: {shown})"


def cifar10(root: Optional[PathLike] = None, *, train: bool = True,
            download: bool = True, on_disk: Optional[bool] = None, store=None) -> ImageSet:
    """Load CIFAR-10 (train or test split) into memory (or onto disk).

    ``root`` may be a folder containing ``cifar-10-batches-py/`` or ``cifar-10-batches-bin/``,
    or one of those folders itself. Batch files may hold fewer than the official 10000 images;
    the training split is every ``data_batch_*`` present.

    Args:
        root: where to look; None means ``default_root()``.
        train: the training batches (True) or ``test_batch`` (False).
        download: when no usable files are there, download the official python archive into
            root (creating it) and extract it.
        on_disk: ``True``: the images in a decoded store on disk (a read-only memmap,
            `gluonft.datasets.store`), written one batch file at a time; None (default) or
            False: in memory (all of CIFAR-10 is 184 MB, below the automatic limit).
        store: the store folder (as in `gluonft.datasets.image_folder`).

    Returns:
        ImageSet of uint8 (N, 32, 32, 3) RGB images with the 10 CIFAR-10 class names.

    Raises:
        DatasetNotFound: nothing usable in root and download is False or failed.
        ValueError: a batch file is truncated or not in the expected format.

    Example:
        >>> test = cifar10("../shared/data/cifar-10-subset", train=False)  # doctest: +SKIP
        >>> test.images.shape  # doctest: +SKIP
        (1017, 32, 32, 3)
    """
    root = default_root() if root is None else Path(root).expanduser()
    found = _locate(root)
    if found is None:
        if not download:
            raise DatasetNotFound(_not_found_message(root, _why_nothing_usable(root))
                                  + "\n(download=False, so nothing was downloaded.)")
        download_cifar10(root)
        found = _locate(root)
        if found is None:  # the archive extracted to something unexpected
            raise DatasetNotFound(_not_found_message(
                root, "the downloaded archive did not contain the expected folders"))
    folder, layout = found
    files = _split_files(folder, layout, train=train)
    read = _read_py_batch if layout == "py" else _read_bin_batch
    classes = _read_py_meta(folder) if layout == "py" else _read_bin_meta(folder)
    source = (f"{folder} (CIFAR-10 {'python pickle' if layout == 'py' else 'binary'} layout: "
              f"{', '.join(p.name for p in files)})")
    if wants_disk(on_disk, 0, 32):  # 0: never chosen by size
        index = {"source": source, "labels": []}

        def pieces():  # the labels go into the index: a reused store reads no batch file
            for path in files:
                images, batch_labels = read(path)
                index["labels"] += batch_labels.tolist()
                yield images

        images, index = pieces_to_disk(files_key(files, layout=layout, labels=True),
                                       (32, 32, 3), pieces(), folder=store, index=index)
        return ImageSet(images, np.asarray(index["labels"], np.int32), classes,
                        f"{source}, on disk {images.filename}")
    parts = [read(p) for p in files]
    images = np.concatenate([im for im, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([lb for _, lb in parts]) if len(parts) > 1 else parts[0][1]
    return ImageSet(images, labels, classes, source)


def _split_files(folder: Path, layout: str, *, train: bool) -> List[Path]:
    pattern, test_name = (_PY_BATCH, "test_batch") if layout == "py" \
        else (_BIN_BATCH, "test_batch.bin")
    if train:
        numbered = sorted((int(m.group(1)), p) for p in folder.iterdir()
                          if p.is_file() and (m := pattern.match(p.name)))
        files = [p for _, p in numbered]
        expected = "data_batch_1 .. data_batch_5" + ("" if layout == "py" else " (.bin)")
    else:
        files = [folder / test_name] if (folder / test_name).is_file() else []
        expected = test_name
    if not files:
        raise DatasetNotFound(f"CIFAR-10 {'train' if train else 'test'} split not found in "
                              f"{folder}: expected {expected} there ({layout} layout).")
    return files


def _planes_to_hwc(pixels: np.ndarray) -> np.ndarray:
    # Each row is the R plane, then G, then B, each 32x32 row-major.
    return np.ascontiguousarray(pixels.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1))


def _check_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"{path}: labels range over [{labels.min()}, {labels.max()}]; expected "
                         f"CIFAR-10 labels in [0, {len(CIFAR10_CLASSES) - 1}]")
    return labels.astype(np.int32)


# What the official CIFAR-10 pickles hold besides dicts, lists and strings: numpy arrays (and
# numpy scalars in pickles re-written by numpy code). Found from numpy itself, whichever of
# numpy.core / numpy._core the file names.
_NUMPY_PICKLE_NAMES = {
    "_reconstruct": np.ndarray.__reduce__(np.zeros(1))[0],
    "scalar": np.float64(0).__reduce__()[0],
    "ndarray": np.ndarray,
    "dtype": np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain data only: a data set someone else made is input, and
    a pickle that names any other function (how a pickle runs code) is refused unrun."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in _NUMPY_PICKLE_NAMES:
            return _NUMPY_PICKLE_NAMES[name]
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch does "
                                     f"not hold (only numpy arrays): refused, not run")


def _load_pickle(f):
    # latin1 reads the official Python 2 pickles (numpy arrays inside) on Python 3.
    return _NumpyOnlyUnpickler(f, encoding="latin1").load()


def _read_py_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    expected = "a pickled dict with 'data' (N, 3072) uint8 and 'labels' (N)"
    try:
        with open(path, "rb") as f:
            batch = _load_pickle(f)
    except Exception as e:  # pickle raises many types on garbage: UnpicklingError, EOF, ...
        raise ValueError(f"{path}: cannot read it as a CIFAR-10 python batch ({expected}): "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: holds a {type(batch).__name__}; expected {expected}")
    # Pickles written by Python 3 code may use bytes keys.
    data = batch.get("data", batch.get(b"data"))
    labels = batch.get("labels", batch.get(b"labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: keys {sorted(map(str, batch))}; expected {expected}")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise ValueError(f"{path}: 'data' is {data.dtype} of shape {data.shape}; "
                         f"expected uint8 of shape (N, {_PIXELS})")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but 'labels' has shape {labels.shape}; "
                         f"expected ({len(data)},)")
    return _planes_to_hwc(data), _check_labels(labels, path)


def _read_bin_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    size = path.stat().st_size
    if size == 0 or size % _RECORD:
        raise ValueError(f"{path}: {size} bytes is not a positive multiple of {_RECORD} "
                         f"(records of 1 label byte + {_PIXELS} pixel bytes); the file is "
                         "truncated or not a CIFAR-10 binary batch")
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, _RECORD)
    return _planes_to_hwc(records[:, 1:]), _check_labels(records[:, 0], path)


def _read_py_meta(folder: Path) -> Tuple[str, ...]:
    path = folder / "batches.meta"
    if not path.is_file():
        return CIFAR10_CLASSES
    try:
        with open(path, "rb") as f:
            meta = _load_pickle(f)
        names = meta.get("label_names", meta.get(b"label_names"))
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception as e:
        raise ValueError(f"{path}: cannot read label names (expected a pickled dict with "
                         f"'label_names'): {type(e).__name__}: {e}") from e
    return _check_names(names, path)


def _read_bin_meta(folder: Path) -> Tuple[str, ...]:
    path = folder / "batches.meta.txt"
    if not path.is_file():
        return CIFAR10_CLASSES
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    return _check_names(names, path)


def _check_names(names: Tuple[str, ...], path: Path) -> Tuple[str, ...]:
    if len(names) != len(CIFAR10_CLASSES):
        raise ValueError(f"{path}: {len(names)} label names {names}; expected "
                         f"{len(CIFAR10_CLASSES)}")
    return names


def download_cifar10(root: Optional[PathLike] = None, *, url: Optional[str] = None,
                     timeout: float = 60.0) -> Path:
    """Download the CIFAR-10 archive into ``root`` and extract it there.

    The archive is written to a temporary file and renamed when complete, and extracted into a
    temporary folder that is renamed into place, so an interrupted run leaves no half files
    that would later look like a dataset. An archive already in root (the URL's file name,
    ``cifar-10-python.tar.gz`` or ``cifar-10-binary.tar.gz``) is extracted instead.

    Args:
        root: destination folder (created); None means ``default_root()``.
        url: archive URL; None means ``CIFAR10_URL`` (the official python version).
        timeout: seconds to wait for the server.

    Returns:
        the folder root.

    Raises:
        DatasetNotFound: the download or the extraction failed; the message says how to get
            the files by hand.

    Example:
        >>> download_cifar10("~/data/cifar10")  # doctest: +SKIP
    """
    root = default_root() if root is None else Path(root).expanduser()
    url = CIFAR10_URL if url is None else url
    url_name = os.path.basename(urllib.parse.urlparse(url).path) or "cifar-10-python.tar.gz"
    # An archive already there (downloaded by hand, or mxnet's binary one) saves the download.
    archives = [root / n for n in (url_name, "cifar-10-python.tar.gz", "cifar-10-binary.tar.gz")]
    archive = next((a for a in archives if a.is_file()), archives[0])
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not archive.is_file():
            _fetch(url, archive, timeout=timeout)
    except (OSError, urllib.error.URLError, ValueError) as e:
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # a failed attempt should not leave an empty folder behind
        raise DatasetNotFound(_not_found_message(
            root, f"downloading {url} into it failed ({type(e).__name__}: {e})")) from e
    try:
        _extract(archive, root)
    except (OSError, tarfile.TarError, ValueError) as e:
        raise DatasetNotFound(_not_found_message(
            root, f"extracting {archive} failed ({type(e).__name__}: {e}); if the archive is "
                  "damaged, delete it and retry")) from e
    return root


def _fetch(url: str, dest: Path, *, timeout: float) -> None:
    from tqdm import tqdm  # only needed here; keeps import of the module light

    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        if total is not None and done != total:
            raise OSError(f"connection closed after {done} of {total} bytes")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _extract(archive: Path, root: Path) -> None:
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse ../ and links out
                tar.extractall(tmp, filter="data")
            else:
                for member in tar.getmembers():
                    if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts:
                        raise ValueError(f"{archive}: unsafe member path {member.name!r}")
                tar.extractall(tmp)
        for entry in tmp.iterdir():
            target = root / entry.name
            if target.exists():
                raise OSError(f"{target} already exists; move it away and retry")
            os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cifar10_folder(root: PathLike, *, train: bool = True,
                   limit_per_class: Optional[int] = None) -> ImageSet:
    """Load the JPEG class-folder layout ``train/<class>/*.jpg``, ``test/<class>/*.jpg``.

    This is the layout of ``cifar10-jpg.tar.gz`` once extracted. Classes are the sub-folders in
    sorted order (for CIFAR-10 that is the official label order). Files are read in sorted name
    order with OpenCV (converted BGR -> RGB); files OpenCV cannot decode are listed in
    ``skipped``. All images must have the same size.

    Args:
        root: folder holding ``train/`` and ``test/``.
        train: read ``train/`` (True) or ``test/`` (False).
        limit_per_class: read at most this many files per class (the first in name order).

    Returns:
        ImageSet of uint8 (N, H, W, 3) RGB images.

    Raises:
        DatasetNotFound: root, the split folder or any image is missing.
        ValueError: an image differs in size from the first one.

    Example:
        >>> test = cifar10_folder("/tmp/cifar10-jpg", train=False)  # doctest: +SKIP
    """
    import cv2  # heavy; only this loader needs it

    if limit_per_class is not None and (isinstance(limit_per_class, bool) or
                                        not isinstance(limit_per_class, (int, np.integer))
                                        or limit_per_class < 1):
        raise ValueError(f"limit_per_class must be an integer >= 1 or None, "
                         f"got {limit_per_class!r}")
    root = Path(root).expanduser()
    split = "train" if train else "test"
    layout = f"{root}/{split}/<class>/*.jpg (e.g. cifar10-jpg.tar.gz extracted into {root})"
    if not root.is_dir():
        raise DatasetNotFound(f"image folder {root} does not exist; expected {layout}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetNotFound(f"{split_dir} does not exist; expected {layout}")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetNotFound(f"{split_dir} has no class folders; expected {layout}")
    images: List[np.ndarray] = []
    labels: List[int] = []
    skipped: List[str] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).iterdir()
                       if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        for path in files[:limit_per_class]:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                skipped.append(str(path))
                continue
            if images and bgr.shape != images[0].shape:
                raise ValueError(f"{path}: image of shape {bgr.shape[:2]}, expected "
                                 f"{images[0].shape[:2]} like the other images")
            images.append(bgr[:, :, ::-1])
            labels.append(label)
    if not images:
        raise DatasetNotFound(f"no readable images under {split_dir} "
                              f"({len(skipped)} unreadable); expected {layout}")
    limit = "" if limit_per_class is None else f", at most {limit_per_class} per class"
    return ImageSet(np.stack(images), np.asarray(labels, np.int32), tuple(classes),
                    f"{split_dir} (class folders <class>/*.jpg{limit})", tuple(skipped))
