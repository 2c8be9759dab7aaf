"""ImageSet validation, stratified subsets and splits, and the batch iterator."""
import numpy as np
import pytest

from gluonft.datasets import ImageSet, cifar10, iterate_batches


def _toy(counts=(5, 3, 8), size=4) -> ImageSet:
    labels = np.repeat(np.arange(len(counts)), counts)
    # Each image is filled with its own index, so images can be traced through operations.
    images = np.broadcast_to(np.arange(len(labels), dtype=np.uint8)[:, None, None, None],
                             (len(labels), size, size, 3)).copy()
    return ImageSet(images, labels, tuple(f"c{i}" for i in range(len(counts))), "toy")


def _ids_of(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(np.int64)


def _ids(s: ImageSet) -> np.ndarray:
    return _ids_of(s.images)


@pytest.fixture(scope="module")
def real_test(shared) -> ImageSet:
    return cifar10(shared / "data" / "cifar-10-subset", train=False, download=False)


# --- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("images, labels, classes, match", [
    (np.zeros((2, 4, 4, 3), np.float32), [0, 1], ("a", "b"), "uint8, got float32"),
    (np.zeros((2, 4, 4), np.uint8), [0, 1], ("a", "b"), r"\(N, H, W, 3\).*\(2, 4, 4\)"),
    (np.zeros((2, 4, 4, 4), np.uint8), [0, 1], ("a", "b"), r"\(2, 4, 4, 4\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 1, 1], ("a", "b"), "2 images but 3 labels"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 2], ("a", "b"), r"\[0, 2\].*2 classes.*\[0, 1\]"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, -1], ("a", "b"), r"\[-1, 0\]"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0.0, 1.0], ("a", "b"), "integers, got dtype float64"),
    (np.zeros((2, 4, 4, 3), np.uint8), [[0, 1]], ("a", "b"), r"\(N,\), got shape \(1, 2\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 0], (), "classes is empty"),
    ([[0]], [0], ("a",), "numpy array, got list"),
])
def test_validation_names_the_bad_value(images, labels, classes, match):
    with pytest.raises(ValueError, match=match):
        ImageSet(images, np.asarray(labels), classes, "test")


def test_normalises_dtypes_and_layout():
    images = np.zeros((3, 3, 4, 4), np.uint8).transpose(0, 2, 3, 1)  # not C-contiguous
    s = ImageSet(images, np.array([0, 1, 1], np.int64), ["a", "b"], "src")
    assert s.images.flags["C_CONTIGUOUS"] and s.labels.dtype == np.int32
    assert s.classes == ("a", "b") and len(s) == 3 and s.skipped == ()
    assert "3 images" in repr(s) and "src" in repr(s)


def test_class_counts_include_empty_classes():
    assert _toy((2, 0, 1)).class_counts() == {"c0": 2, "c1": 0, "c2": 1}


# --- subset / split ----------------------------------------------------------------------------

def test_subset_n_per_class_is_stratified_and_deterministic():
    s = _toy()
    a = s.subset(n_per_class=2, seed=7)
    assert a.class_counts() == {"c0": 2, "c1": 2, "c2": 2}
    np.testing.assert_array_equal(_ids(a), _ids(s.subset(n_per_class=2, seed=7)))
    assert np.all(np.diff(_ids(a)) > 0)  # original order kept
    np.testing.assert_array_equal(a.labels, s.labels[_ids(a)])  # images and labels stay paired
    # Nested for one seed; a class with fewer images keeps them all.
    b = s.subset(n_per_class=4, seed=7)
    assert set(_ids(a)) <= set(_ids(b)) and b.class_counts()["c1"] == 3
    assert "subset" in a.source and "seed=7" in a.source


def test_subset_seeds_differ_on_real_data(real_test):
    a = real_test.subset(n_per_class=10, seed=0)
    b = real_test.subset(n_per_class=10, seed=1)
    assert set(a.class_counts().values()) == {10} and len(a) == 100
    assert not np.array_equal(a.images, b.images)


def test_subset_fraction():
    s = _toy((10, 3, 1))
    counts = s.subset(fraction=0.5, seed=0).class_counts()
    assert counts == {"c0": 5, "c1": 2, "c2": 1}  # rounded, at least one per class
    assert len(s.subset(fraction=1.0, seed=0)) == len(s)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"),
    ({"n_per_class": 2, "fraction": 0.5}, "exactly one"),
    ({"n_per_class": 0}, "n_per_class must be an integer >= 1, got 0"),
    ({"n_per_class": 2.5}, "got 2.5"),
    ({"fraction": 1.5}, r"\(0, 1\], got 1.5"),
    ({"fraction": 0}, "got 0"),
])
def test_subset_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _toy().subset(seed=0, **kwargs)


def test_split_is_disjoint_complete_and_stratified(real_test):
    a, b = real_test.split(0.8, seed=3)
    assert len(a) + len(b) == len(real_test)
    for name, n in real_test.class_counts().items():
        assert a.class_counts()[name] == round(0.8 * n)
        assert a.class_counts()[name] + b.class_counts()[name] == n
    a2, _ = real_test.split(0.8, seed=3)
    np.testing.assert_array_equal(a.images, a2.images)
    toy = _toy((5, 3, 8))
    ta, tb = toy.split(0.5, seed=0)
    assert set(_ids(ta)).isdisjoint(_ids(tb)) and len(ta) + len(tb) == len(toy)


def test_split_keeps_one_each_side_for_small_classes():
    a, b = _toy((2, 9)).split(0.9, seed=0)
    assert a.class_counts()["c0"] == 1 and b.class_counts()["c0"] == 1


@pytest.mark.parametrize("fraction", [0, 1, 1.2, -0.1])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=f"got {fraction}"):
        _toy().split(fraction, seed=0)


def test_take():
    s = _toy()
    t = s.take([3, 0])
    assert _ids(t).tolist() == [3, 0] and t.labels.tolist() == [0, 0]


# --- iterate_batches ---------------------------------------------------------------------------

def test_iterate_in_order_covers_everything():
    s = _toy()  # 16 images
    batches = list(iterate_batches(s, 5, shuffle=False))
    assert [len(y) for _, y in batches] == [5, 5, 5, 1]
    assert np.concatenate([_ids_of(x) for x, _ in batches]).tolist() == list(range(16))
    x, y = batches[0]
    assert x.dtype == np.uint8 and x.shape == (5, 4, 4, 3) and y.dtype == np.int32
    assert [len(y) for _, y in iterate_batches(s, 5, shuffle=False, drop_last=True)] == [5, 5, 5]
    assert list(iterate_batches(s, 32, shuffle=False, drop_last=True)) == []


def test_shuffle_is_reproducible_per_seed_and_epoch():
    s = _toy()

    def order(**kw):
        return np.concatenate([_ids_of(x) for x, _ in iterate_batches(s, 4, shuffle=True, **kw)])

    first = order(seed=1, epoch=0)
    assert sorted(first.tolist()) == list(range(16))
    np.testing.assert_array_equal(first, order(seed=1, epoch=0))
    np.testing.assert_array_equal(first, np.random.RandomState(1).permutation(16))
    assert not np.array_equal(first, order(seed=1, epoch=1))
    np.testing.assert_array_equal(order(seed=1, epoch=1), order(seed=2, epoch=0))
    # Labels travel with their images.
    for x, y in iterate_batches(s, 4, shuffle=True, seed=5):
        np.testing.assert_array_equal(y, s.labels[_ids_of(x)])


@pytest.mark.parametrize("batch_size", [0, -3, 2.0, True])
def test_batch_size_is_validated(batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {batch_size}"):
        iterate_batches(_toy(), batch_size, shuffle=False)  # fails at the call, not later


def test_shuffle_needs_a_seed():
    with pytest.raises(ValueError, match="needs a seed"):
        iterate_batches(_toy(), 4, shuffle=True)
