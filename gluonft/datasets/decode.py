"""Image files decoded into square uint8 RGB arrays: the one decoder of photo folders, labels
tables, decoded stores and prediction (`load_images`).

Any OpenCV decode result (grey, grey + alpha, BGR, BGRA; 8 or 16 bits, float) becomes uint8
RGB; EXIF orientation is applied; a large JPEG is decoded at a reduced size when the stored
side allows it; non-square images are made square by ``fit`` (``"crop"``: the centre square,
``"pad"``: the whole image on a black square, ``"stretch"``: resized). A file that does not
decode is skipped, never an error: the caller decides how to report it. Below the folder
layouts (`folder`, `table`), the decoded store (`store`) and CIFAR-10's JPEG layout, which all
use it.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .imageset import check_int

__all__ = ["load_images", "read_photo", "square", "unsquare", "FITS"]

PathLike = Union[str, "os.PathLike[str]"]

FITS = ("crop", "pad", "stretch")
# Containers that may carry an alpha channel or 16 bits: decoded unchanged and converted here.
# JPEG is decoded as colour so that OpenCV applies its EXIF orientation (IMREAD_UNCHANGED
# ignores it, and JPEG has neither alpha nor 16 bits).
_MAYBE_ALPHA_OR_16BIT = (".png", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any OpenCV decode result (gray, gray+alpha, BGR, BGRA; 8/16-bit, float) -> uint8 RGB."""
    import cv2

    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535  # round, not truncate
        image = image.astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):  # e.g. float TIFF, assumed in [0, 1]
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 2:  # gray + alpha
        bgr, alpha = cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR), \
            image[:, :, 1]
    elif channels == 4:
        bgr, alpha = image[:, :, :3], image[:, :, 3]
    else:
        raise ValueError(f"unsupported number of channels {channels}")
    # Composite over white: out = a * colour + (1 - a) * 255, in integers with rounding.
    a = alpha.astype(np.uint32)[:, :, None]
    out = (bgr.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_BGR2RGB)


def square(image: np.ndarray, side: int, fit: str) -> np.ndarray:
    """An (H, W, ...) image made square by ``fit`` and resized to ``side`` x ``side``: what the
    stored images of a photo folder are."""
    import cv2

    h, w = image.shape[:2]
    if fit == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        image = image[top:top + s, left:left + s]
    elif fit == "pad":
        s = max(h, w)
        top, left = (s - h) // 2, (s - w) // 2
        image = cv2.copyMakeBorder(image, top, s - h - top, left, s - w - left,
                                   cv2.BORDER_CONSTANT, value=(0, 0, 0))
    h, w = image.shape[:2]
    if (h, w) == (side, side):
        return np.ascontiguousarray(image)
    shrink = h * w >= side * side
    return cv2.resize(image, (side, side),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers, not tables


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) from a JPEG's frame header without decoding it; None if not found."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            return (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def _jpeg_flags(data: bytes, side: int, fit: str) -> int:
    """IMREAD_COLOR, or a reduced decode when the photo is much larger than needed.

    libjpeg can decode at 1/2, 1/4 or 1/8 scale from the DCT coefficients, several times
    faster than a full decode of a 12-megapixel phone photo. The reduction stops at twice the
    stored side, so the final INTER_AREA resize still averages over enough pixels.
    """
    import cv2

    size = _jpeg_size(data)
    if size is None:
        return cv2.IMREAD_COLOR
    # The side that must keep its pixels: the shorter one when cropping or stretching, the
    # longer one when padding (it becomes the side of the square).
    needed = max(size) if fit == "pad" else min(size)
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if needed // factor >= 2 * side:
            return flag
    return cv2.IMREAD_COLOR


def _decode(path: Path, side: Optional[int], fit: str) -> Optional[np.ndarray]:
    """The file as uint8 RGB (reduced for a large JPEG when ``side`` allows it; whole for
    ``side=None``), or None when it does not decode."""
    import cv2

    try:
        # imdecode from bytes rather than imread: works for any path encoding on every OS.
        data = np.fromfile(str(path), dtype=np.uint8)
        if data.size == 0:
            return None
        if path.suffix.lower() in _MAYBE_ALPHA_OR_16BIT:
            flags = cv2.IMREAD_UNCHANGED
        elif path.suffix.lower() in (".jpg", ".jpeg", ".jpe") and side is not None:
            flags = _jpeg_flags(data[:65536].tobytes(), side, fit)  # headers come first
        else:
            flags = cv2.IMREAD_COLOR
        image = cv2.imdecode(data, flags)
        if image is None or image.size == 0 or min(image.shape[:2]) < 1:
            return None
        return _to_rgb8(image)
    except (OSError, ValueError, cv2.error):
        return None


def _read_one(path: Path, side: int, fit: str) -> Optional[np.ndarray]:
    """The stored square RGB image, or None when the file does not decode."""
    image = _decode(path, side, fit)
    return None if image is None else square(image, side, fit)


def read_photo(path: PathLike) -> Optional[np.ndarray]:
    """The whole photo as uint8 RGB (H, W, 3), EXIF orientation applied, decoded as the
    stored images are; None when the file does not decode."""
    return _decode(Path(path), None, "crop")


def unsquare(square_map: np.ndarray, shape: Tuple[int, int], fit: str) -> np.ndarray:
    """A map over a stored square image (S x S) laid back over the photo it came from
    (``shape`` = (H, W)): the inverse of `square`'s ``fit``. With ``"crop"`` the parts of the
    photo the square left out get 0 (the model never saw them)."""
    import cv2

    h, w = shape
    square_map = np.asarray(square_map, np.float32)
    if fit == "stretch":
        return cv2.resize(square_map, (w, h), interpolation=cv2.INTER_LINEAR)
    s = min(h, w) if fit == "crop" else max(h, w)
    big = cv2.resize(square_map, (s, s), interpolation=cv2.INTER_LINEAR)
    if fit == "pad":
        top, left = (s - h) // 2, (s - w) // 2
        return np.ascontiguousarray(big[top:top + h, left:left + w])
    out = np.zeros((h, w), np.float32)
    top, left = (h - s) // 2, (w - s) // 2
    out[top:top + s, left:left + s] = big
    return out


def _default_workers() -> int:
    # OpenCV's decoders release the GIL, so threads decode in parallel; beyond a few threads
    # the disk, not the CPU, is the limit.
    return max(1, min(8, os.cpu_count() or 1))


def load_images(paths: Sequence[PathLike], *, size: int, fit: str = "crop",
                workers: Optional[int] = None) -> Tuple[np.ndarray, List[int], List[str]]:
    """Decode image files into one uint8 (N, size, size, 3) RGB array, skipping unreadable ones.

    No warning is issued here; the caller decides how to report ``skipped``.

    Args:
        paths: image files.
        size: side of the square output images, >= 1.
        fit: ``"crop"``, ``"pad"`` or ``"stretch"`` (see the module docstring).
        workers: decoding threads (default: min(8, CPU count)).

    Returns:
        (images, kept, skipped): the images of the files that decoded, in the order given;
        ``kept`` their indices into ``paths``; ``skipped`` the paths (str) that did not decode.

    Example:
        >>> images, kept, skipped = load_images(list_images("photos"), size=110)  # doctest: +SKIP
    """
    size = check_int("size", size, 1)
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}: expected one of {', '.join(FITS)}")
    workers = _default_workers() if workers is None else check_int("workers", workers, 1)
    paths = [Path(p) for p in paths]
    if workers == 1 or len(paths) < 2:
        decoded = [_read_one(p, size, fit) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # map keeps the input order, so labels line up with images whatever finishes first.
            decoded = list(pool.map(lambda p: _read_one(p, size, fit), paths,
                                    chunksize=max(1, len(paths) // (workers * 8))))
    kept = [i for i, im in enumerate(decoded) if im is not None]
    skipped = [str(p) for p, im in zip(paths, decoded) if im is None]
    images = np.stack([decoded[i] for i in kept]) if kept \
        else np.zeros((0, size, size, 3), np.uint8)
    return images, kept, skipped
