"""Features of a frozen backbone prefix, computed once and cached in memory or on disk.

When a regime leaves a frozen prefix (``head``: the whole backbone; ``last_k``: all but the last
k blocks) and training sees every image without augmentation, the prefix maps each image to the
same features in every epoch. `fit` then computes them once (`cached_features`) and trains the
trainable rest on them, batch by batch in the order `iterate_batches` would give. With a fixed
number of augmented views (``fit(feature_views=K)``), each view is one more cached set.

A cache entry is named by `feature_key`: a sha1 over everything the features depend on (the
frozen parameters' bytes and architecture, the images and labels, the image size and the
normalisation, the number of frozen steps, the MXNet version and this module's format). On disk
an entry is one ``<key>.npz`` holding a small JSON header and the features, written atomically;
a file that does not load, whose header names another key or count, or whose features do not
match the header's sha1 is reported with a `FeatureCacheWarning` and rebuilt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from . import fileio
from .backbones import TransferNet, check_image_size
from .datasets.imageset import ImageSet
from .devices import as_contexts, read_in_flight, split_batch
from .inference import inference_forward
from .regimes import frozen_prefix, split_net
from .transforms import BatchTransform, to_device

__all__ = ["Features", "FeatureCacheWarning", "feature_key", "weights_digest", "cached_features",
           "extract_features", "deepen_features", "batch_indices", "prefix_block",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1


class FeatureCacheWarning(UserWarning):
    """A cache file on disk was unreadable or stale and has been rebuilt."""


@dataclass
class Features:
    """Features of every image of a set, in the set's order.

    Attributes:
        values: float32 array (N, ...) : the frozen prefix's output per image.
        labels: int32 array (N,), the set's labels.
        key: the `feature_key` of the entry.
        source: ``"computed"`` or ``"disk"`` (loaded from ``path``).
        seconds: time spent computing or loading.
        path: the cache file, or None when kept in memory only.
        computed_here: for a worker of a distributed job, the rows it computed itself (its
            share; the others came through the kvstore).
        steps: how many leading ``net.features`` steps computed them, when known
            (`extract_features` and `fit` say; `deepen_features` starts from it).
    """
    values: np.ndarray
    labels: np.ndarray
    key: str
    source: str
    seconds: float
    path: Optional[str] = None
    computed_here: Optional[int] = None
    steps: Optional[int] = None

    def __len__(self) -> int:
        return len(self.labels)

    def info(self) -> dict:
        """A JSON-friendly summary (no arrays), as `fit` records it."""
        info = {"key": self.key, "source": self.source, "seconds": round(self.seconds, 4),
                "shape": list(self.values.shape), "path": self.path}
        if self.computed_here is not None:
            info["computed_here"] = self.computed_here
        if self.steps is not None:
            info["steps"] = self.steps
        return info


def prefix_block(net, steps: int) -> nn.HybridSequential:
    """The first ``steps`` steps of ``net.features`` as one block (same objects, same weights):
    the frozen part of `gluonft.regimes.split_net`."""
    count = len(net.features._children)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 < steps <= count:
        raise ValueError(f"steps must be an int in [1, {count}] (the number of leading "
                         f"net.features steps), got {steps!r}")
    return split_net(net, steps).frozen


def weights_digest(prefix: nn.HybridBlock) -> str:
    """sha1 hex digest of a block's architecture and every parameter's bytes (running
    statistics included), by structural name: the part of `feature_key` that depends on the
    model. Computing it once serves the keys of several data sets."""
    h = hashlib.sha1()
    # repr lists every layer with its settings (kernel, stride, use_global_stats ...)
    h.update(repr(prefix).encode())
    for name, param in sorted(prefix._collect_params_with_prefix().items()):
        value = np.ascontiguousarray(param.data(param.list_ctx()[0]).asnumpy())
        h.update(json.dumps([name, list(value.shape), str(value.dtype)]).encode())
        h.update(value.data)
    return h.hexdigest()


def feature_key(prefix: nn.HybridBlock, data: ImageSet, *, backbone: str, steps: int,
                image_size: int, mean: Sequence[float], std: Sequence[float],
                weights: Optional[str] = None,
                augment_rows: Optional[np.ndarray] = None) -> str:
    """sha1 hex digest naming the features of ``prefix`` on ``data``.

    Args:
        prefix: the frozen prefix (e.g. `prefix_block(net, steps)`); its architecture and every
            parameter's bytes (running statistics included) enter the key.
        data: the images and labels (their bytes and shapes enter the key).
        backbone, steps: the model-zoo name and the number of frozen steps.
        image_size, mean, std: the input transform.
        weights: `weights_digest(prefix)` when already computed (it is the costly part).
        augment_rows: the per-image augmentation rows of an augmented view, if any.

    Returns:
        40 hex characters.

    Example:
        >>> feature_key(prefix_block(net, 8), train, backbone=net.backbone, steps=8,
        ...             image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD)  # doctest: +SKIP
        '3f0c...'
    """
    h = hashlib.sha1()

    def text(value) -> None:
        h.update(json.dumps(value, sort_keys=True).encode())

    text({"format": FORMAT_VERSION, "mxnet": mx.__version__, "backbone": backbone,
          "steps": int(steps), "image_size": int(image_size),
          "mean": [float(m) for m in mean], "std": [float(s) for s in std],
          "weights": weights or weights_digest(prefix)})
    text(["images", list(data.images.shape), str(data.images.dtype)])
    h.update(np.ascontiguousarray(data.images).data)
    text(["labels", list(data.labels.shape), str(data.labels.dtype)])
    h.update(np.ascontiguousarray(data.labels).data)
    if augment_rows is not None:
        rows = np.ascontiguousarray(augment_rows, dtype=np.float32)
        text(["augment_rows", list(rows.shape)])
        h.update(rows.data)
    return h.hexdigest()


def batch_indices(count: int, batch_size: int, *, shuffle: bool, seed: Optional[int] = None,
                  epoch: int = 0) -> Iterator[np.ndarray]:
    """The image indices of each batch, in exactly the order `iterate_batches` yields them.

    Example:
        >>> [b.tolist() for b in batch_indices(5, 2, shuffle=False)]
        [[0, 1], [2, 3], [4]]
    """
    order = (np.random.RandomState(seed + epoch).permutation(count) if shuffle
             else np.arange(count))
    for start in range(0, count, batch_size):
        yield order[start:start + batch_size]


def compute_features(prefix: nn.HybridBlock, data: ImageSet, *, transform, contexts,
                     batch_size: int, augment_rows: Optional[np.ndarray] = None,
                     hybridize: bool = True, pass_images: Optional[int] = None) -> np.ndarray:
    """Run ``prefix`` (inference mode, `gluonft.inference`) over ``data`` in stored order;
    float32 (N, ...).

    ``augment_rows``: one row of `sample_augment` per image (an augmented view), or None.
    ``pass_images``: the image count that chooses the inference path (default ``len(data)``;
    `fit` gives its training set's, as its uncached batches use).
    """
    forward = inference_forward(prefix, contexts, hybridize=hybridize,
                                images=len(data) if pass_images is None else pass_images)

    def place(images, ctx, batch, part):
        rows = None if augment_rows is None else split_batch(augment_rows[batch],
                                                             len(contexts))[part]
        return transform(to_device(images, ctx, "uint8"), rows)

    return _forward_in_order(forward, data.images, contexts=contexts, batch_size=batch_size,
                             place=place)


def _forward_in_order(forward, inputs, *, contexts, batch_size: int, place) -> np.ndarray:
    """``forward`` over ``inputs`` in stored order, each batch split over ``contexts``, with
    batches kept in flight (`read_in_flight`); float32 (N, ...).

    ``place(part_inputs, ctx, batch_slice, part_index)`` puts one context's part of a batch on
    its device, ready for ``forward``.
    """
    def outputs():
        for idx in batch_indices(len(inputs), batch_size, shuffle=False):
            batch = slice(idx[0], idx[-1] + 1)
            parts = split_batch(inputs[batch], len(contexts))
            for part, (ctx, x) in enumerate(zip(contexts, parts)):
                if len(x):
                    # float32 on the device: under AMP the net may compute in bfloat16, whose
                    # asnumpy() bytes numpy cannot read as numbers.
                    yield forward(place(x, ctx, batch, part)).astype("float32", copy=False)

    values = list(read_in_flight([out] for out in outputs()))
    return np.concatenate(values).astype(np.float32, copy=False)


def cached_features(prefix: nn.HybridBlock, data: ImageSet, *, key: str, transform, contexts,
                    batch_size: int, cache_dir: Optional[str] = None,
                    augment_rows: Optional[np.ndarray] = None,
                    hybridize: bool = True, pass_images: Optional[int] = None,
                    cluster=None) -> Features:
    """The features named ``key``: loaded from ``cache_dir`` when a valid entry exists there,
    else computed (and then written to ``cache_dir``, when given). ``augment_rows``: see
    `compute_features` (the key must then cover them: `feature_key`'s ``augment_rows``).

    ``cluster``: a `gluonft.distributed.Cluster`: each worker computes the features of its
    share of ``data`` and the shares are exchanged through the kvstore (every worker needs
    all of them: its share of each epoch's batches is any image); the workers load from
    ``cache_dir`` only when every one of them finds the entry valid, and worker 0 writes it.

    A file that fails to load or to validate triggers a `FeatureCacheWarning` and is rebuilt.
    """
    begin = time.perf_counter()
    path = os.path.join(cache_dir, f"{key}.npz") if cache_dir else None
    values, problem = (_load(path, key, len(data)) if path and os.path.exists(path)
                       else (None, None))
    loaded = values is not None
    if cluster is not None:  # all load or all compute: the computing ones wait for the rest
        loaded = cluster.allreduce("features-loaded", [loaded])[0] == cluster.workers
    if loaded:
        return Features(values, data.labels, key, "disk", time.perf_counter() - begin, path)
    if problem:
        warnings.warn(f"feature cache {path} is unusable ({problem}); rebuilding it",
                      FeatureCacheWarning, stacklevel=2)
    common = dict(transform=transform, contexts=contexts, batch_size=batch_size,
                  hybridize=hybridize,
                  pass_images=len(data) if pass_images is None else pass_images)
    if cluster is None:
        values = compute_features(prefix, data, augment_rows=augment_rows, **common)
    else:
        share = cluster.share(np.arange(len(data)))
        part = compute_features(prefix, data.take(share), augment_rows=None if augment_rows
                                is None else augment_rows[share], **common)
        values = cluster.gather(part, len(data))
    if path and (cluster is None or cluster.is_chief):
        _save(path, key, values)
    return Features(values, data.labels, key, "computed", time.perf_counter() - begin, path,
                    computed_here=None if cluster is None else len(part))


def _header(key: str, values: np.ndarray) -> dict:
    return {"format": FORMAT_VERSION, "key": key, "count": int(values.shape[0]),
            "shape": list(values.shape), "dtype": str(values.dtype),
            "sha1": hashlib.sha1(np.ascontiguousarray(values).data).hexdigest()}


def _save(path: str, key: str, values: np.ndarray) -> None:
    """Write ``<key>.npz`` atomically (`gluonft.fileio.atomic_write`)."""
    header = np.frombuffer(json.dumps(_header(key, values)).encode(), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a name
            np.savez(f, header=header, features=values)
    fileio.atomic_write(path, write)


def _load(path: str, key: str, count: int):
    """(values, None) for a valid entry, else (None, what is wrong)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(archive["header"].tobytes().decode())
            values = archive["features"]
    except Exception as error:  # truncated, not a zip, CRC mismatch, bad JSON ...
        return None, f"{type(error).__name__}: {error}"
    if not isinstance(header, dict):
        return None, "the header is not a JSON object"
    expected = {"format": FORMAT_VERSION, "key": key, "count": count}
    for field, want in expected.items():
        if header.get(field) != want:
            return None, f"header {field}={header.get(field)!r}, expected {want!r}"
    if list(values.shape) != header.get("shape") or str(values.dtype) != header.get("dtype"):
        return None, (f"features of shape {values.shape} {values.dtype}, the header says "
                      f"{header.get('shape')} {header.get('dtype')}")
    if hashlib.sha1(np.ascontiguousarray(values).data).hexdigest() != header.get("sha1"):
        return None, "the features do not match the header's sha1"
    return values, None


def extract_features(net, data: ImageSet, *, steps: Optional[int] = None,
                     image_size: Optional[int] = None, ctx=None, batch_size: int = 128,
                     cache_dir: Optional[str] = None, hybridize: bool = True) -> Features:
    """Features of ``data`` after the first ``steps`` steps of ``net.features``.

    Args:
        net: a `TransferNet`.
        data: an `ImageSet` (uint8, resized and normalised on the device as in `fit`).
        steps: leading steps to run; default: the frozen prefix (`frozen_prefix`), or every
            step when nothing is frozen.
        image_size: input side (default: the backbone's pretrained size).
        ctx: a context or list of contexts.
        batch_size: images per forward pass.
        cache_dir: a folder for ``<key>.npz`` files; reused when valid, rebuilt when not.
        hybridize: compile the prefix.

    Returns:
        `Features`.

    Example:
        >>> feats = gluonft.features.extract_features(net, train, image_size=96)  # doctest: +SKIP
        >>> feats.values.shape
        (5085, 768)
    """
    if not isinstance(net, TransferNet):
        raise ValueError(f"extract_features needs a net from gluonft.load_backbone, got "
                         f"{type(net).__name__}")
    if not isinstance(data, ImageSet):
        raise ValueError(f"data must be a gluonft ImageSet, got {type(data).__name__}")
    contexts = as_contexts(ctx)
    image_size = check_image_size(net.backbone, net.family.input_size if image_size is None
                                  else image_size,
                                  family=net.family)
    if steps is None:
        steps = frozen_prefix(net) or len(net.features._children)
    prefix = prefix_block(net, steps)
    transform = BatchTransform(image_size, net.family.mean, net.family.std)
    key = feature_key(prefix, data, backbone=net.backbone, steps=steps, image_size=image_size,
                      mean=net.family.mean, std=net.family.std)
    features = cached_features(prefix, data, key=key, transform=transform, contexts=contexts,
                               batch_size=batch_size, cache_dir=cache_dir, hybridize=hybridize)
    return dataclasses.replace(features, steps=steps)


def deepen_features(features: Features, net, steps: int, *, ctx=None, batch_size: int = 128,
                    hybridize: bool = True, images: Optional[int] = None) -> Features:
    """The features after the first ``steps`` steps of ``net.features``, computed from
    ``features`` (those after fewer steps, ``features.steps``) by running only the steps in
    between: what `fine_tune` does so that its stages share one pass over the photos.

    The steps in between run in inference mode (as the frozen prefix does in `fit`), so the
    result is `extract_features(net, data, steps=steps)` up to float rounding (the two
    passes fuse different graphs); it is only right while the steps before ``steps`` keep the
    weights they had when ``features`` were computed.

    Args:
        features: `Features` with ``steps`` set (from `extract_features`).
        net: the `TransferNet` that computed them.
        steps: the deeper cut, ``features.steps <= steps <= len(net.features)``.
        ctx, batch_size, hybridize: as in `extract_features`; ``images``: the image count
            that chooses the inference path (`gluonft.inference`), default ``len(features)``.

    Returns:
        `Features` (in memory, ``source="deepened"``), keyed by ``features.key`` and the
        in-between steps' weights.
    """
    count = len(net.features._children)
    start = features.steps
    if start is None:
        raise ValueError("features.steps is unknown: deepen_features needs features from "
                         "extract_features (which records how many steps computed them)")
    if isinstance(steps, bool) or not isinstance(steps, int) or not start <= steps <= count:
        raise ValueError(f"steps must be an int in [{start}, {count}] (at least the "
                         f"{start} steps that computed the features), got {steps!r}")
    if steps == start:
        return features
    begin = time.perf_counter()
    between = nn.HybridSequential(prefix="")
    for step in list(net.features._children.values())[start:steps]:
        between.add(step)
    key = hashlib.sha1(json.dumps([features.key, start, steps, weights_digest(between)])
                       .encode()).hexdigest()
    contexts = as_contexts(ctx)
    forward = inference_forward(between, contexts, hybridize=hybridize,
                                images=len(features) if images is None else images)
    values = _forward_in_order(forward, features.values, contexts=contexts,
                               batch_size=batch_size,
                               place=lambda x, ctx, batch, part: to_device(x, ctx))
    return Features(values, features.labels, key, "deepened", time.perf_counter() - begin,
                    steps=steps)
