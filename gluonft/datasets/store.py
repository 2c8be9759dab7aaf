"""Decoded images on disk: a memory-mapped uint8 file in place of the in-memory array.

`image_folder` and `labelled_images` decode every photo once into one uint8 (N, S, S, 3)
array. 100,000 photos stored at 184 px are 10 GB, past what a laptop holds next to a model,
and every worker of a distributed job would hold its own copy. Above `ON_DISK_ABOVE_BYTES`
(or with ``on_disk=True``) they decode, in pieces, into a file instead and return a read-only
`numpy.memmap` of it: batches read their rows from the file (a distributed worker only the
rows of its shares), and the process keeps only the batches in its own memory; the rest is
the kernel's page cache, which it gives back when memory is short.

A store is two files in the store folder (`store_dir`, default ``$GLUONFT_STORE`` or
``~/.cache/gluonft/decoded``), named by a key that covers the decoding (stored side, fit) and
every source file's path, size and modification time, so that changed photos give a new
store:

    <key>.u8     the rows, raw uint8
    <key>.json   the index: shape, which files decoded (and which did not)  (the commit)

Both are written under temporary names and renamed, the index last: a killed build leaves no
store that looks complete, and two processes building the same store write the same bytes.
A validation or test split carved out of class folders is written as a store of its own
(`take_to_disk`), rows in split order, so that each split is one contiguous memmap too.

    >>> images, kept, skipped = decode_to_disk(paths, side=110, fit="crop")  # doctest: +SKIP
    >>> type(images).__name__, images.shape  # doctest: +SKIP
    ('memmap', (3068, 110, 110, 3))
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .. import fileio
from .decode import load_images

__all__ = ["ON_DISK_ABOVE_BYTES", "store_dir", "wants_disk", "decode_to_disk", "take_to_disk",
           "pieces_to_disk", "files_key", "is_on_disk", "where_stored"]

FORMAT = 1
# Decoded sets larger than this go to disk when on_disk is None (the default): on a 24 GB
# machine 4 GiB of photos still leave room for the model, the features and a second run.
ON_DISK_ABOVE_BYTES = 4 * 1024 ** 3
# Files decoded per piece while building a store: the memory a build needs beyond the file.
_PIECE = 256


def store_dir(given=None) -> Path:
    """The folder stores are kept in: ``given``, else ``$GLUONFT_STORE``, else
    ``~/.cache/gluonft/decoded``."""
    if given is not None:
        return Path(given).expanduser()
    if os.environ.get("GLUONFT_STORE"):
        return Path(os.environ["GLUONFT_STORE"]).expanduser()
    return Path.home() / ".cache" / "gluonft" / "decoded"


def wants_disk(on_disk: Optional[bool], count: int, side: int) -> bool:
    """Whether ``count`` images of ``side`` px go to disk: ``on_disk``, or when None whether
    they exceed `ON_DISK_ABOVE_BYTES`."""
    if on_disk is not None and not isinstance(on_disk, bool):
        raise ValueError(f"on_disk must be None (automatic), True or False, got {on_disk!r}")
    if on_disk is not None:
        return on_disk
    return count * side * side * 3 > ON_DISK_ABOVE_BYTES


def is_on_disk(images: np.ndarray) -> bool:
    """Whether ``images`` is a store's memmap (`decode_to_disk`, `take_to_disk`)."""
    return isinstance(images, np.memmap) and str(getattr(images, "filename", "")).endswith(".u8")


def _key(parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _open(folder: Path, key: str) -> Optional[Tuple[np.memmap, dict]]:
    """The store ``key`` when its index and rows are complete and agree, else None."""
    index_path, data_path = folder / f"{key}.json", folder / f"{key}.u8"
    try:
        index = json.loads(index_path.read_text())
        shape = tuple(index["shape"])
        if index.get("format") != FORMAT or data_path.stat().st_size != int(np.prod(shape)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if shape[0] == 0:
        return np.zeros(shape, np.uint8), index
    return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), index


def pieces_to_disk(key: str, shape: Tuple[int, ...], pieces: Iterable[np.ndarray], *,
                   index: Optional[dict] = None, folder=None) -> Tuple[np.ndarray, dict]:
    """The store ``key``: (a memmap of rows of ``shape``, its index). The one there when
    complete (``pieces`` is then not read), else built from ``pieces`` (uint8 arrays of rows,
    written one after the other, so that only one piece is in memory at a time), renamed
    into place, then its index committed: ``index`` as it stands once the pieces are read
    (a generator may fill it)."""
    folder = store_dir(folder)
    found = _open(folder, key)
    if found is not None:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.u8.{os.getpid()}.tmp"
    rows = 0
    try:
        with open(tmp, "wb") as f:
            for piece in pieces:
                piece = np.ascontiguousarray(piece, np.uint8)
                if piece.shape[1:] != tuple(shape):
                    raise ValueError(f"rows of shape {piece.shape[1:]}, expected {shape}")
                f.write(piece.data)
                rows += len(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / f"{key}.u8")
    finally:
        if tmp.exists():
            tmp.unlink()
    fileio.atomic_write_json(folder / f"{key}.json",
                             dict(index or {}, format=FORMAT, shape=[rows, *shape]))
    return _open(folder, key)


def files_key(paths: Sequence[Path], **decoding) -> str:
    """A store key for ``paths`` decoded as ``decoding`` says: each file's resolved path,
    size and modification time enter it, so that changed files give another key."""
    files = []
    for p in paths:
        st = os.stat(p)
        files.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return _key({"format": FORMAT, "decoding": decoding, "files": files})


def decode_to_disk(paths: Sequence[Path], *, side: int, fit: str,
                   workers: Optional[int] = None, folder=None,
                   progress: bool = False) -> Tuple[np.ndarray, List[int], List[str]]:
    """`load_images` into a store: (images memmap, kept indices, skipped paths), the same
    rows `load_images` returns in memory. An existing store of the same sources is reused."""
    paths = [Path(p) for p in paths]
    key = files_key(paths, side=side, fit=fit)
    kept: List[int] = []
    skipped: List[str] = []

    def pieces():
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(paths), desc="decoding to disk", unit="image", leave=False)
        try:
            for start in range(0, len(paths), _PIECE):
                piece = paths[start:start + _PIECE]
                images, piece_kept, piece_skipped = load_images(piece, size=side, fit=fit,
                                                                workers=workers)
                kept.extend(start + i for i in piece_kept)
                skipped.extend(piece_skipped)
                if bar is not None:
                    bar.update(len(piece))
                yield images
        finally:
            if bar is not None:
                bar.close()

    # kept and skipped fill while the pieces are written, before the index is
    images, index = pieces_to_disk(key, (side, side, 3), pieces(), folder=folder,
                                   index={"kept": kept, "skipped": skipped, "side": side,
                                          "fit": fit, "files": len(paths)})
    return images, list(index["kept"]), list(index["skipped"])


def take_to_disk(images: np.ndarray, indices: Sequence[int], *, name: str,
                 folder=None) -> np.ndarray:
    """The rows ``images[indices]`` as a store of their own (a memmap), copied in pieces;
    keyed by the source store and ``name`` (what the rows are, e.g. a seeded split)."""
    if not is_on_disk(images):
        raise ValueError("take_to_disk copies rows of a store (decode_to_disk)")
    indices = np.asarray(indices, np.int64)
    source = Path(str(images.filename)).stem
    key = _key({"format": FORMAT, "source": source, "name": name,
                "rows": hashlib.sha1(indices.tobytes()).hexdigest()})
    pieces = (images[indices[start:start + _PIECE]]
              for start in range(0, len(indices), _PIECE))
    return pieces_to_disk(key, tuple(images.shape[1:]), pieces, folder=folder,
                          index={"source": source, "name": name})[0]


def where_stored(images: np.ndarray) -> str:
    """``", on disk <file>"`` for images in a store, ``""`` in memory: for descriptions."""
    return f", on disk {images.filename}" if is_on_disk(images) else ""
