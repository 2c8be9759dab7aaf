"""CIFAR-10 loaders on the real subset in ../shared: both layouts, JPEG folders, errors,
download (never over the network)."""
import importlib
import pickle
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from gluonft.datasets import DatasetNotFound, ImageSet, cifar10, cifar10_folder
from gluonft.datasets.cifar10 import CIFAR10_CLASSES, CIFAR10_URL, default_root, download_cifar10

# The module, not the function of the same name that gluonft.datasets exports.
cifar10_module = importlib.import_module("gluonft.datasets.cifar10")
UNREACHABLE = "http://127.0.0.1:9/x.tar.gz"  # discard port: connection refused at once


@pytest.fixture(scope="module")
def subset(shared) -> Path:
    return shared / "data" / "cifar-10-subset"


@pytest.fixture(scope="module")
def train_py(subset) -> ImageSet:
    return cifar10(subset / "cifar-10-batches-py", train=True, download=False)


@pytest.fixture(scope="module")
def test_py(subset) -> ImageSet:
    return cifar10(subset, train=False, download=False)


# --- the real subset, both layouts -------------------------------------------------------------

def test_train_py_and_bin_layouts_load_the_same_images(subset, train_py):
    train_bin = cifar10(subset / "cifar-10-batches-bin", train=True, download=False)
    for s in (train_py, train_bin):
        assert s.images.shape == (5085, 32, 32, 3) and s.images.dtype == np.uint8
        assert s.images.flags["C_CONTIGUOUS"]
        assert s.labels.shape == (5085,) and s.labels.dtype == np.int32
        assert s.classes == CIFAR10_CLASSES
        assert min(s.class_counts().values()) > 400  # every class present, roughly balanced
    np.testing.assert_array_equal(train_py.images[0], train_bin.images[0])
    np.testing.assert_array_equal(train_py.images, train_bin.images)
    np.testing.assert_array_equal(train_py.labels, train_bin.labels)
    assert "python" in train_py.source and "binary" in train_bin.source
    # The well-known start of data_batch_1: frog, truck, truck, deer.
    assert train_py.labels[:4].tolist() == [6, 9, 9, 4]
    # Natural photos: mid-range mean, full dynamic range, not constant per image.
    assert 100 < train_py.images.mean() < 140
    assert train_py.images.min() == 0 and train_py.images.max() == 255
    assert train_py.images[:50].reshape(50, -1).std(axis=1).min() > 5


def test_test_split_py_and_bin_identical(subset, test_py):
    test_bin = cifar10(subset / "cifar-10-batches-bin", train=False, download=False)
    assert len(test_py) == len(test_bin) == 1017
    np.testing.assert_array_equal(test_py.images, test_bin.images)
    np.testing.assert_array_equal(test_py.labels, test_bin.labels)
    assert test_py.labels[:4].tolist() == [3, 8, 8, 0]  # cat, ship, ship, airplane
    assert all(c > 50 for c in test_py.class_counts().values())


def test_parent_folder_prefers_python_layout(test_py):
    assert "cifar-10-batches-py" in test_py.source and "test_batch" in test_py.source


def test_blue_sky_channel_order(test_py):
    # Ships and airplanes sit in blue sky/sea: on average blue > red there, and the reverse
    # for frogs/deer (green-brown). A swapped channel order would flip both comparisons.
    imgs, labels = test_py.images.astype(np.float64), test_py.labels
    blue_scenes = imgs[np.isin(labels, [0, 8])].mean(axis=(0, 1, 2))
    earth_scenes = imgs[np.isin(labels, [4, 6])].mean(axis=(0, 1, 2))
    assert blue_scenes[2] > blue_scenes[0] + 5
    assert earth_scenes[0] > earth_scenes[2] + 5


def test_default_root_respects_mxnet_home(tmp_path, monkeypatch, subset):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    assert default_root() == tmp_path / "datasets" / "cifar10"
    # root=None loads from there (a symlink to the shared files, nothing copied).
    default_root().mkdir(parents=True)
    (default_root() / "cifar-10-batches-bin").symlink_to(subset / "cifar-10-batches-bin")
    assert len(cifar10(train=False, download=False)) == 1017
    monkeypatch.delenv("MXNET_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".mxnet" / "datasets" / "cifar10"


# --- short files are fine, broken files are loud -----------------------------------------------

def _bin_dir(tmp_path, subset, *, records, name="test_batch.bin"):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir(exist_ok=True)
    data = (subset / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()[:records * 3073]
    (folder / name).write_bytes(data)
    return folder


def test_fewer_records_than_official_and_no_meta(tmp_path, subset, test_py):
    _bin_dir(tmp_path, subset, records=3)
    _bin_dir(tmp_path, subset, records=5, name="data_batch_2.bin")
    _bin_dir(tmp_path, subset, records=2, name="data_batch_10.bin")
    small = cifar10(tmp_path, train=False, download=False)
    assert len(small) == 3 and small.classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(small.images, test_py.images[:3])
    train = cifar10(tmp_path, train=True, download=False)  # every data_batch_* there, in order
    assert len(train) == 7 and "data_batch_2.bin, data_batch_10.bin" in train.source


def test_nonexistent_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFound) as err:
        cifar10(root, download=False)
    msg = str(err.value)
    assert str(root) in msg and "does not exist" in msg
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and "test_batch" in msg
    assert "cifar-10-batches-bin" in msg and "data_batch_1.bin" in msg
    assert CIFAR10_URL in msg and f"-C {root}" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetNotFound, match="is empty") as err:
        cifar10(tmp_path, download=False)
    assert str(tmp_path) in str(err.value)


def test_folder_without_known_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "cifar-10-batches-py").mkdir()  # the folder alone, no batches in it
    with pytest.raises(DatasetNotFound, match="no known layout") as err:
        cifar10(tmp_path, download=False)
    assert "notes.txt" in str(err.value) and str(tmp_path) in str(err.value)


def test_missing_split(tmp_path, subset):
    folder = _bin_dir(tmp_path, subset, records=2)  # test_batch.bin only
    with pytest.raises(DatasetNotFound, match="data_batch_1") as err:
        cifar10(tmp_path, train=True, download=False)
    assert str(folder) in str(err.value)


def test_truncated_bin_file(tmp_path, subset):
    folder = _bin_dir(tmp_path, subset, records=2)
    path = folder / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="3073") as err:
        cifar10(tmp_path, train=False, download=False)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def test_bin_labels_out_of_range(tmp_path, subset):
    path = _bin_dir(tmp_path, subset, records=2) / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[3073] = 12
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"\[0, 9\]") as err:
        cifar10(tmp_path, train=False, download=False)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content, match", [
    (b"this is not a pickle", "cannot read it"),
    (pickle.dumps([1, 2, 3]), "holds a list"),
    (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), r"\(N, 3072\)"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "labels"),
])
def test_corrupt_pickle(tmp_path, content, match):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        cifar10(tmp_path, train=False, download=False)
    assert str(folder / "test_batch") in str(err.value)


def test_python3_pickle_with_bytes_keys(tmp_path, test_py):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    planes = test_py.images[:4].transpose(0, 3, 1, 2).reshape(4, -1)
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": planes, b"labels": test_py.labels[:4].tolist()}))
    loaded = cifar10(folder, train=False, download=False)  # root is the layout folder itself
    np.testing.assert_array_equal(loaded.images, test_py.images[:4])


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("name", ["test_batch", "batches.meta"])
def test_a_crafted_batch_cannot_run_code(tmp_path, test_py, name):
    """A CIFAR-10 folder from someone else is input: its pickles may hold numpy arrays and
    plain data, and a pickle that would call a function is refused before it runs."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    planes = test_py.images[:4].transpose(0, 3, 1, 2).reshape(4, -1)
    batch = {"data": planes, "labels": test_py.labels[:4].tolist()}
    marker = tmp_path / "the-payload-ran"
    if name == "test_batch":
        batch["note"] = _Payload(str(marker))
    else:
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": _Payload(str(marker))}))
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"names posix\.mkdir|names os\.mkdir") as err:
        cifar10(folder, train=False, download=False)
    assert str(folder / name) in str(err.value)
    assert not marker.exists()


# --- download (never over the network) ---------------------------------------------------------

def test_download_failure_message(tmp_path):
    root = tmp_path / "dl"
    with pytest.raises(DatasetNotFound) as err:
        download_cifar10(root, url=UNREACHABLE, timeout=5)
    msg = str(err.value)
    assert UNREACHABLE in msg and str(root) in msg and CIFAR10_URL in msg
    assert "cifar-10-batches-py" in msg and "cifar-10-batches-bin" in msg
    assert not root.exists()  # no empty folder or partial file left behind


@pytest.fixture
def small_archive(tmp_path, subset) -> Path:
    """A cifar-10-python.tar.gz holding the real test batch only (as the official one would)."""
    path = tmp_path / "server" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name in ("test_batch", "batches.meta"):
            tar.add(subset / "cifar-10-batches-py" / name, arcname=f"cifar-10-batches-py/{name}")
    return path


def test_download_extracts_and_loads(tmp_path, small_archive, monkeypatch, test_py):
    monkeypatch.setattr(cifar10_module, "CIFAR10_URL", small_archive.as_uri())
    root = tmp_path / "cache" / "cifar10"
    loaded = cifar10(root, train=False, download=True)
    np.testing.assert_array_equal(loaded.images, test_py.images)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py",
                                                      "cifar-10-python.tar.gz"]
    # Second call: files are found, nothing is fetched.
    monkeypatch.setattr(cifar10_module, "CIFAR10_URL", UNREACHABLE)
    assert len(cifar10(root, train=False, download=True)) == 1017


def test_archive_put_in_root_by_hand_is_extracted(tmp_path, small_archive, monkeypatch):
    monkeypatch.setattr(cifar10_module, "CIFAR10_URL", UNREACHABLE)
    root = tmp_path / "byhand"
    root.mkdir()
    small_archive.rename(root / "cifar-10-python.tar.gz")
    assert len(cifar10(root, train=False, download=True)) == 1017


def test_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(DatasetNotFound) as err:
        download_cifar10(tmp_path, url=UNREACHABLE)
    msg = str(err.value)
    assert "extracting" in msg and "ReadError" in msg and "delete it" in msg
    assert str(tmp_path / "cifar-10-python.tar.gz") in msg


# --- JPEG class folders ------------------------------------------------------------------------

JPG_CLASSES = ("cat", "ship")
JPG_PER_CLASS = 20


@pytest.fixture(scope="module")
def jpg_root(shared, tmp_path_factory) -> Path:
    """A few members of cifar10-jpg.tar.gz extracted to a temporary folder (never the repo)."""
    root = tmp_path_factory.mktemp("cifar10-jpg")
    with tarfile.open(shared / "data" / "cifar10-jpg.tar.gz") as tar:
        for m in tar:
            parts = Path(m.name).parts
            if (m.isfile() and len(parts) == 3 and parts[1] in JPG_CLASSES
                    and int(Path(parts[2]).stem) < JPG_PER_CLASS):
                tar.extract(m, root, filter="data")
    return root


def test_jpg_folder_matches_official_images(jpg_root, test_py):
    s = cifar10_folder(jpg_root, train=False)
    assert s.classes == JPG_CLASSES and s.skipped == ()
    assert s.images.shape == (40, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.class_counts() == {"cat": 20, "ship": 20}
    # test/cat/NNNN.jpg is the NNNN-th cat of the official test set, re-encoded as JPEG: close
    # to the pickled pixels in RGB order, far in BGR order.
    official = test_py.images[test_py.labels == 3][:20].astype(np.int64)
    cats = s.images[s.labels == 0].astype(np.int64)
    assert np.abs(cats - official).mean() < 10
    assert np.abs(cats[..., ::-1] - official).mean() > 15


def test_jpg_folder_train_and_limit(jpg_root):
    train = cifar10_folder(jpg_root, train=True, limit_per_class=5)
    assert len(train) == 10 and train.class_counts() == {"cat": 5, "ship": 5}
    assert "train" in train.source
    with pytest.raises(ValueError, match="limit_per_class"):
        cifar10_folder(jpg_root, limit_per_class=0)


def test_jpg_folder_unreadable_and_odd_files(tmp_path, jpg_root):
    root = tmp_path / "jpg"
    shutil.copytree(jpg_root / "test", root / "test")
    (root / "test" / "cat" / "zz-broken.jpg").write_bytes(b"not a jpeg")
    (root / "test" / "cat" / "readme.txt").write_text("ignored: not an image suffix")
    s = cifar10_folder(root, train=False)
    assert len(s) == 40 and s.skipped == (str(root / "test" / "cat" / "zz-broken.jpg"),)
    cv2.imwrite(str(root / "test" / "ship" / "big.png"), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="big.png"):
        cifar10_folder(root, train=False)


def test_jpg_folder_missing_parts(tmp_path):
    with pytest.raises(DatasetNotFound, match="does not exist") as err:
        cifar10_folder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    with pytest.raises(DatasetNotFound, match="train") as err:
        cifar10_folder(tmp_path, train=True)
    assert str(tmp_path / "train") in str(err.value)
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetNotFound, match="no class folders"):
        cifar10_folder(tmp_path, train=False)
    (tmp_path / "test" / "cat").mkdir()
    with pytest.raises(DatasetNotFound, match="no readable images"):
        cifar10_folder(tmp_path, train=False)


@pytest.mark.network
def test_the_real_download_fetches_the_official_archive(tmp_path):
    """Users' machines have internet: the download path fetches and extracts the real files
    (deselected by default; `pytest -m network`)."""
    test = cifar10(tmp_path, train=False, download=True)
    assert len(test) == 10000 and test.class_counts()["cat"] == 1000
