"""An in-memory image dataset (uint8 arrays) and a deterministic batch iterator.

Datasets are small enough for transfer learning (CIFAR-10 is 150 MB as uint8), so they live in
memory as one array; augmentation happens per batch on the device (`gluonft.transforms`), which
avoids per-sample Python transforms and DataLoader workers.
"""
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

__all__ = ["ImageSet", "iterate_batches", "split_indices", "check_int", "check_fraction"]


@dataclass(eq=False)  # eq=False: comparing numpy arrays with == has no single truth value
class ImageSet:
    """Images and labels held in memory.

    Attributes:
        images: uint8 array of shape (N, H, W, 3), RGB, C-contiguous.
        labels: int32 array of shape (N,), each in [0, len(classes)).
        classes: class names; ``classes[label]`` names a label.
        source: human description of where the data came from (path and layout).
        skipped: files that could not be read while building the set.

    Example:
        >>> s = ImageSet(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), ("a", "b"), "demo")
        >>> len(s), s.class_counts()
        (2, {'a': 1, 'b': 1})
    """

    images: np.ndarray
    labels: np.ndarray
    classes: Tuple[str, ...]
    source: str
    skipped: Tuple[str, ...] = ()

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray):
            raise ValueError(f"ImageSet images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise ValueError(f"ImageSet images must have dtype uint8, got {images.dtype}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError("ImageSet images must have shape (N, H, W, 3) (RGB), "
                             f"got shape {images.shape}")
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"ImageSet labels must have shape (N,), got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"ImageSet labels must be integers, got dtype {labels.dtype}")
        if len(labels) != len(images):
            raise ValueError(f"ImageSet has {len(images)} images but {len(labels)} labels; "
                             "expected one label per image")
        classes = tuple(str(c) for c in self.classes)
        if not classes:
            raise ValueError("ImageSet classes is empty; expected at least one class name")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"ImageSet labels range over [{labels.min()}, {labels.max()}] but "
                             f"there are {len(classes)} classes; expected labels in "
                             f"[0, {len(classes) - 1}]")
        # Contiguity makes mx.nd.array(...) a single memcpy per batch.
        # A store's memmap (gluonft.datasets.store) stays one: it is C-contiguous already.
        self.images = images if images.flags.c_contiguous else np.ascontiguousarray(images)
        self.labels = labels.astype(np.int32, copy=False)
        self.classes = classes
        self.source = str(self.source)
        self.skipped = tuple(str(s) for s in self.skipped)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        # The default dataclass repr would print every pixel.
        return (f"ImageSet({len(self)} images of {self.images.shape[1:]}, "
                f"{len(self.classes)} classes, source={self.source!r}, "
                f"skipped={len(self.skipped)})")

    def class_counts(self) -> Dict[str, int]:
        """Number of images per class, every class included (zero counts too).

        Returns:
            dict class name -> count, in label order.

        Example:
            >>> cifar10(train=False).class_counts()['cat']  # doctest: +SKIP
            1000
        """
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts)}

    def take(self, indices, *, source: Optional[str] = None) -> "ImageSet":
        """The images at ``indices`` (a new ImageSet with copied arrays).

        Args:
            indices: integer index array or list.
            source: description of the result; defaults to this set's source plus a note.

        Returns:
            ImageSet with the same classes.

        Example:
            >>> first10 = train.take(np.arange(10))  # doctest: +SKIP
        """
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(self.images[indices], self.labels[indices], self.classes,
                        source if source is not None else f"{self.source} [{len(indices)} taken]",
                        self.skipped)

    def _per_class_permutations(self, seed):
        return _per_class_permutations(self.labels, len(self.classes), seed)

    def subset(self, n_per_class: Optional[int] = None, fraction: Optional[float] = None, *,
               seed: int) -> "ImageSet":
        """A stratified random subset, deterministic for ``seed``.

        Give exactly one of ``n_per_class`` (at most that many images of each class; a class
        with fewer keeps all it has) or ``fraction`` (that share of each class, rounded, at
        least one image per non-empty class). The result keeps the original image order.

        Args:
            n_per_class: images to keep per class, >= 1.
            fraction: share of each class to keep, in (0, 1].
            seed: seed of the random choice.

        Returns:
            ImageSet with the same classes.

        Example:
            >>> small = train.subset(n_per_class=100, seed=0)  # doctest: +SKIP
            >>> small.class_counts()['cat']  # doctest: +SKIP
            100
        """
        if (n_per_class is None) == (fraction is None):
            raise ValueError("subset() needs exactly one of n_per_class or fraction, got "
                             f"n_per_class={n_per_class!r}, fraction={fraction!r}")
        if n_per_class is not None and (isinstance(n_per_class, bool)
                                        or not isinstance(n_per_class, (int, np.integer))
                                        or n_per_class < 1):
            raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        chosen = []
        for members in self._per_class_permutations(seed):
            if n_per_class is not None:
                k = min(n_per_class, len(members))
            else:
                k = min(len(members), max(1, int(round(fraction * len(members)))))
            chosen.append(members[:k])
        indices = np.sort(np.concatenate(chosen))
        what = f"n_per_class={n_per_class}" if n_per_class is not None else f"fraction={fraction}"
        return self.take(indices, source=f"{self.source} [subset {what}, seed={seed}]")

    def split_indices(self, fraction: float, *, seed: int) -> Tuple[np.ndarray, np.ndarray]:
        """The sorted indices of `split`'s two parts."""
        return split_indices(self.labels, len(self.classes), fraction, seed=seed)

    def split(self, fraction: float, *, seed: int) -> Tuple["ImageSet", "ImageSet"]:
        """Split into two disjoint stratified parts, deterministic for ``seed``.

        The first part holds ``round(fraction * count)`` images of each class; a class with at
        least two images puts at least one in each part. Both parts keep the original order.

        Args:
            fraction: share of each class in the first part, in (0, 1).
            seed: seed of the random choice.

        Returns:
            (first, rest) ImageSets with the same classes.

        Example:
            >>> train, val = cifar10(train=True).split(0.9, seed=0)  # doctest: +SKIP
        """
        first, rest = self.split_indices(fraction, seed=seed)
        return (self.take(first, source=f"{self.source} [split {fraction} part 1, seed={seed}]"),
                self.take(rest, source=f"{self.source} [split {fraction} part 2, seed={seed}]"))


def _per_class_permutations(labels: np.ndarray, classes: int, seed):
    # One permutation per class drawn in label order from a single RandomState, so the
    # same seed yields nested subsets: subset(n_per_class=10) is within n_per_class=20.
    rng = np.random.RandomState(seed)
    for label in range(classes):
        members = np.flatnonzero(labels == label)
        yield members[rng.permutation(len(members))]


def split_indices(labels: np.ndarray, classes: int, fraction: float, *,
                  seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The sorted indices of a stratified split of ``labels`` (see `ImageSet.split`)."""
    if not 0 < fraction < 1:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction!r}")
    first, rest = [], []
    for members in _per_class_permutations(labels, classes, seed):
        k = int(round(fraction * len(members)))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        first.append(members[:k])
        rest.append(members[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


def iterate_batches(imageset: ImageSet, batch_size: int, *, shuffle: bool,
                    seed: Optional[int] = None, epoch: int = 0,
                    drop_last: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(images, labels) numpy batches, in a reproducible order.

    When ``shuffle`` the order is drawn from ``np.random.RandomState(seed + epoch)``: the same
    seed and epoch give the same order, and each epoch gets a different one.

    Args:
        imageset: the data.
        batch_size: images per batch, >= 1.
        shuffle: shuffle the order (needs ``seed``) or keep the stored order.
        seed: base seed of the shuffle.
        epoch: added to the seed so that epochs differ.
        drop_last: skip a last batch smaller than ``batch_size``.

    Returns:
        iterator of (uint8 (B, H, W, 3), int32 (B,)) numpy arrays.

    Example:
        >>> for x, y in iterate_batches(train, 256, shuffle=True, seed=0):  # doctest: +SKIP
        ...     x = mx.nd.array(x, ctx=ctx, dtype='uint8')
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if shuffle and seed is None:
        raise ValueError("iterate_batches(shuffle=True) needs a seed so that the order is "
                         "reproducible, got seed=None")
    # Validated above, iterated below: a generator alone would defer these errors to the
    # first next(), far from the call that caused them.
    return _batches(imageset, int(batch_size),
                    np.random.RandomState(seed + epoch).permutation(len(imageset))
                    if shuffle else None, drop_last)


def _batches(imageset, batch_size, order, drop_last):
    n = len(imageset)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        if order is None:
            yield imageset.images[start:end], imageset.labels[start:end]
        else:
            idx = order[start:end]
            yield imageset.images[idx], imageset.labels[idx]


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming ``name``, the value and the minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(name: str, value) -> Optional[float]:
    """A split fraction in [0, 1) as a float (None stays None), or a ValueError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) or None, got {value!r}")
    return float(value)
