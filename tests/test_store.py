"""Decoded images on disk (gluonft.datasets.store): the same images as in memory, from a
memory-mapped file that is reused while the photos are unchanged and never left half-written."""
import os

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.datasets import image_folder, labelled_images, store
from gluonft.datasets.store import is_on_disk
from tests import clothing


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_on_disk_splits_equal_the_in_memory_ones_and_are_reused(shared, tmp_path):
    root = clothing.paths(shared)[0]
    memory = image_folder(root, image_size=32)
    disk = image_folder(root, image_size=32, on_disk=True, store=tmp_path)
    for split in ("train", "validation", "test"):
        a, b = getattr(memory, split), getattr(disk, split)
        assert not is_on_disk(a.images) and is_on_disk(b.images), split
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    written = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert len(written) == 6  # one store (rows + index) per split folder
    again = image_folder(root, image_size=32, on_disk=True, store=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == written  # reused
    np.testing.assert_array_equal(again.test.images, memory.test.images)


def test_carved_splits_stay_on_disk_and_a_changed_photo_gives_a_new_store(shared, tmp_path):
    photos = clothing.copy_photos(shared, tmp_path / "photos", per_class=6, split="train")
    memory = image_folder(photos, image_size=32, val_fraction=0.3, test_fraction=0.2)
    disk = image_folder(photos, image_size=32, val_fraction=0.3, test_fraction=0.2,
                        on_disk=True, store=tmp_path / "store")
    for split in ("train", "validation", "test"):
        a, b = getattr(memory, split), getattr(disk, split)
        assert is_on_disk(b.images), split  # a store of its own, not a copy in memory
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    before = set(_files(tmp_path / "store"))
    first = sorted((photos / "dress").iterdir())[0]
    first.write_bytes(sorted((photos / "hat").iterdir())[0].read_bytes())  # another photo
    changed = image_folder(photos, image_size=32, val_fraction=0.3, test_fraction=0.2,
                           on_disk=True, store=tmp_path / "store")
    assert set(_files(tmp_path / "store")) > before
    assert sum(not np.array_equal(a, b) for a, b in zip(changed.train.images,
                                                         disk.train.images)) <= 1


def test_the_csv_loader_decodes_to_disk_too(shared, tmp_path):
    photos = clothing.copy_photos(shared, tmp_path / "photos", per_class=4, split="test")
    table = {f"{p.parent.name}/{p.name}": p.parent.name for p in sorted(photos.rglob("*.jpg"))}
    memory = labelled_images(table, photos, image_size=32, val_fraction=0.25)
    disk = labelled_images(table, photos, image_size=32, val_fraction=0.25, on_disk=True,
                           store=tmp_path / "store")
    for split in ("train", "validation"):
        assert is_on_disk(getattr(disk, split).images)
        np.testing.assert_array_equal(getattr(memory, split).images,
                                      getattr(disk, split).images)


def test_above_the_size_limit_the_store_is_chosen_by_itself(shared, tmp_path, monkeypatch):
    photos = clothing.copy_photos(shared, tmp_path / "photos", per_class=2)
    assert not is_on_disk(image_folder(photos, image_size=32, val_fraction=0.5).train.images)
    monkeypatch.setattr(store, "ON_DISK_ABOVE_BYTES", 10 * 37 * 37 * 3)  # 10 stored images
    monkeypatch.setenv("GLUONFT_STORE", str(tmp_path / "auto"))
    data = image_folder(photos, image_size=32, val_fraction=0.5)
    assert is_on_disk(data.train.images) and (tmp_path / "auto").is_dir()
    with pytest.raises(ValueError, match="on_disk must be None .*True or False, got 'yes'"):
        image_folder(photos, image_size=32, on_disk="yes")


def test_a_build_that_fails_midway_leaves_no_store(shared, tmp_path, monkeypatch):
    photos = clothing.copy_photos(shared, tmp_path / "photos", per_class=30, split="train")
    monkeypatch.setattr(store, "_PIECE", 64)
    real = store.load_images  # the decoder the store calls, piece by piece
    calls = []

    def second_piece_fails(*args, **kwargs):  # as a kill or a full disk would, mid-build
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "load_images", second_piece_fails)
    with pytest.raises(OSError, match="No space left"):
        image_folder(photos, image_size=32, on_disk=True, store=tmp_path / "store")
    assert _files(tmp_path / "store") == []  # no index, no rows, no temporary file
    monkeypatch.setattr(store, "load_images", real)
    data = image_folder(photos, image_size=32, on_disk=True, store=tmp_path / "store")
    assert len(data.train) + len(data.validation) == 300


def test_fit_on_disk_trains_exactly_as_in_memory(shared, tmp_path):
    root, weights = clothing.paths(shared)
    memory = image_folder(root, image_size=32, split="validation")
    disk = image_folder(root, image_size=32, split="validation", on_disk=True, store=tmp_path)
    trained = []
    for data in (memory, disk):
        net = gluonft.load_backbone("mobilenet0.75", classes=10, weights=str(weights),
                                    ctx=mx.cpu(), seed=0)
        gluonft.apply_regime(net, "last_k:1")
        history = gluonft.fit(net, data, epochs=1, batch_size=32, lr=0.01, image_size=32,
                              ctx=mx.cpu(), progress=False)  # augmented: images read per batch
        trained.append((history, {k: p.data().asnumpy()
                                  for k, p in net._collect_params_with_prefix().items()}))
    (h_memory, p_memory), (h_disk, p_disk) = trained
    # The same bytes in the same seeded order through the same process: the same numbers.
    assert h_memory["train_loss"] == h_disk["train_loss"]
    for name in p_memory:
        np.testing.assert_array_equal(p_memory[name], p_disk[name], err_msg=name)
    assert os.path.getsize(next(tmp_path.glob("*.u8"))) == memory.images.nbytes


def test_cifar10_goes_to_disk_batch_by_batch(shared, tmp_path):
    root = shared / "data" / "cifar-10-subset"
    for layout in ("cifar-10-batches-py", "cifar-10-batches-bin"):
        memory = gluonft.datasets.cifar10(root / layout, train=True, download=False)
        disk = gluonft.datasets.cifar10(root / layout, train=True, download=False, on_disk=True,
                                        store=tmp_path)
        again = gluonft.datasets.cifar10(root / layout, train=True, download=False,
                                         on_disk=True, store=tmp_path)
        assert is_on_disk(disk.images) and len(disk) == 5085
        for loaded in (disk, again):
            np.testing.assert_array_equal(memory.images, loaded.images)
            np.testing.assert_array_equal(memory.labels, loaded.labels)
    assert len(list(tmp_path.glob("*.u8"))) == 2
