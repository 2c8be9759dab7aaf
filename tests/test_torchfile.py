"""The numpy-only reader of torch .pth files (gluonft.torchfile) on a real file, the
EfficientNet-Lite0 wheel's, and on crafted copies of it: no pickle in the file can run code."""
import io
import os
import pickle
import struct

import numpy as np
import pytest

from gluonft.torchfile import LEGACY_MAGIC, TorchFileError, read_state_dict

efficientnet = pytest.importorskip("gluonft.efficientnet")


@pytest.fixture(scope="module")
def real_pth():
    try:
        return efficientnet.wheel_file("efficientnet_lite0")
    except Exception as error:  # the efficientnet extra is not installed
        pytest.skip(f"no EfficientNet-Lite0 wheel: {error}")


def _pickle_spans(path):
    """[(start, end)] of the file's five pickles (magic, protocol, info, state dict, keys),
    found by reading it as torch does, with a reader that never builds a foreign object."""
    class Anything(dict):  # takes items (an OrderedDict) and state (BUILD)
        def __setstate__(self, state):
            pass

    class Skim(pickle.Unpickler):
        def find_class(self, module, name):
            return lambda *args, **kwargs: Anything()

        def persistent_load(self, pid):
            return None

    spans = []
    with open(path, "rb") as f:
        for _ in range(5):
            start = f.tell()
            Skim(f).load()
            spans.append((start, f.tell()))
    return spans


class Payload:
    """What a crafted pickle does: call a function of the attacker's choice while loading."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_the_real_wheel_file_reads_as_tensors(real_pth):
    weights = read_state_dict(real_pth)
    head = weights["_fc.weight"]
    assert head.shape == (1000, 1280) and head.dtype == np.float32
    assert len(weights) > 100 and all(np.isfinite(w).all() for w in weights.values()
                                      if w.dtype.kind == "f")


@pytest.mark.parametrize("position", range(5), ids=["magic", "protocol", "system-info",
                                                    "state-dict", "key-list"])
def test_a_code_running_pickle_in_any_position_is_refused_before_it_runs(real_pth, tmp_path,
                                                                         position):
    spans = _pickle_spans(real_pth)
    data = open(real_pth, "rb").read()
    marker = tmp_path / "the-payload-ran"
    start, end = spans[position]
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(data[:start] + pickle.dumps(Payload(str(marker)), protocol=2) + data[end:])
    with pytest.raises(TorchFileError, match=r"unexpected object (posix|os)\.mkdir"):
        read_state_dict(str(crafted))
    assert not marker.exists()  # nothing ran


def test_crafted_sizes_and_strides_are_refused_before_memory_is_read(real_pth, tmp_path):
    spans = _pickle_spans(real_pth)
    data = open(real_pth, "rb").read()
    # the first storage's element count (8 bytes after the key list) claims 2**40 elements
    after_keys = spans[4][1]
    huge = data[:after_keys] + struct.pack("<q", 2 ** 40) + data[after_keys + 8:]
    (tmp_path / "huge.pth").write_bytes(huge)
    with pytest.raises(TorchFileError, match="more than the file holds"):
        read_state_dict(str(tmp_path / "huge.pth"))
    # a truncated copy
    (tmp_path / "short.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(TorchFileError):
        read_state_dict(str(tmp_path / "short.pth"))


def _u(text):  # pickle protocol 2's BINUNICODE
    return b"X" + struct.pack("<I", len(text)) + text.encode()


def test_a_negative_stride_cannot_read_before_its_storage(tmp_path):
    """A hand-made legacy file (opcodes written out: no torch here) whose one tensor has a
    negative stride: as_strided would read memory before its storage."""
    state = (b"\x80\x02}" + _u("w")
             + b"ctorch._utils\n_rebuild_tensor_v2\n"
             + b"(" + b"(" + _u("storage") + b"ctorch\nFloatStorage\n" + _u("0") + _u("cpu")
             + b"K\x04tQ"                              # persistent id -> the storage
             + b"K\x03"                                 # offset 3
             + b"K\x04\x85"                             # size (4,)
             + b"J" + struct.pack("<i", -1) + b"\x85"    # stride (-1,)
             + b"tRs.")
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    buf.write(state)
    pickle.dump(["0"], buf, protocol=2)
    buf.write(struct.pack("<q", 4) + np.arange(4, dtype="<f4").tobytes())
    path = tmp_path / "negative.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(TorchFileError, match="expected non-negative"):
        read_state_dict(str(path))
    # the same file with stride (1,) and offset 0 is a valid tensor: the test file is well made
    path.write_bytes(buf.getvalue().replace(b"K\x03K\x04\x85J" + struct.pack("<i", -1),
                                            b"K\x00K\x04\x85J" + struct.pack("<i", 1)))
    np.testing.assert_array_equal(read_state_dict(str(path))["w"], np.arange(4, dtype=np.float32))
