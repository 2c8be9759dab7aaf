"""Grad-CAM: where the network looked for a class (Selvaraju et al., 2017).

For a photo and a target class: the gradient of the class's score (the logit, before softmax)
with respect to one convolutional feature map A (K channels, h x w) is averaged over the map
into one weight per channel; the map is ``ReLU(sum_k weight_k * A_k)``, upsampled to the
photo, divided by its maximum (so it is in [0, 1]). Keras' example and pytorch-grad-cam compute
it the same way.

The layer is per family, in the per-model table (`gluonft.backbones.Family.cam_step`): by default
the last backbone step whose output is still a spatial map (before the global pooling). The
backbone's own blocks run as they are, hybridized or not, on every context the net lives on;
the frozen part runs outside ``autograd.record()`` and only the rest is recorded (inference mode:
BatchNorm's running statistics, no dropout).

    >>> result = grad_cam(load_classifier("model"), ["photos/hat1.jpg"])  # doctest: +SKIP
    >>> result.heatmaps[0].shape, result.target_names  # doctest: +SKIP
    ((600, 450), ['hat'])
    >>> overlay(result.photos[0], result.heatmaps[0])  # uint8 RGB  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet import autograd

from .backbones import TransferNet
from .datasets.decode import read_photo, square, unsquare
from .datasets.folder import list_images
from .devices import contexts_of, split_batch
from .model_io import Classifier, load_classifier
from .regimes import batchnorm_layers
from .transforms import BatchTransform, to_device

__all__ = ["grad_cam", "CamResult", "cam_step", "cam_maps", "overlay"]

PathLike = Union[str, "os.PathLike[str]"]
# Images per forward/backward: the recorded part keeps its activations for the backward pass.
CAM_BATCH = 16


def _step_shapes(net: TransferNet, image_size: int) -> List[Tuple[int, ...]]:
    """The output shape of every backbone step for one image of ``image_size``."""
    x = mx.nd.zeros((1, 3, image_size, image_size), ctx=contexts_of(net)[0])
    shapes = []
    for step in net.features:
        x = step(x)
        shapes.append(tuple(x.shape))
    return shapes


def cam_step(net: TransferNet, image_size: int) -> int:
    """The index of the backbone step whose output Grad-CAM weighs: ``family.cam_step`` counted
    among the steps whose output is still a spatial map (-1: the last before pooling)."""
    spatial = [i for i, shape in enumerate(_step_shapes(net, image_size))
               if len(shape) == 4 and shape[2] > 1 and shape[3] > 1]
    if not spatial:
        raise ValueError(f"{net.backbone} at {image_size} px has no spatial feature map left "
                         f"for Grad-CAM; use a larger image_size")
    offset = net.family.cam_step
    return spatial[max(offset, -len(spatial))]


@contextlib.contextmanager
def _global_statistics(blocks):
    """BatchNorm normalising with its running statistics in the backward pass too.

    In inference mode MXNet's BatchNorm normalises with its running statistics, but its
    backward pass differentiates as if the batch's own statistics had been used unless
    ``use_global_stats`` is set: the gradients, and so the maps, were then those of another
    function (seen: maps of a loaded model differing from the same weights' frozen-BN copy by
    up to 1.0 while the probabilities agreed exactly). Set for the recorded blocks, compiled
    graphs dropped, and put back as it was."""
    norms = [n for block in blocks for n in batchnorm_layers(block)]
    before = [n._kwargs.get("use_global_stats", False) for n in norms]
    changed = [n for n, b in zip(norms, before) if not b]

    def recompile():
        for block in blocks:
            block.apply(lambda b: b._clear_cached_op() if hasattr(b, "_clear_cached_op")
                        else None)
    for norm in changed:
        norm._kwargs["use_global_stats"] = True
    if changed:
        recompile()
    try:
        yield
    finally:
        for norm in changed:
            norm._kwargs["use_global_stats"] = False
        if changed:
            recompile()


def cam_maps(net: TransferNet, x: mx.nd.NDArray, targets: Optional[Sequence[int]] = None, *,
             step: int, contexts=None) -> Tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps at the feature map's resolution for a normalised batch.

    Args:
        net: a `TransferNet`.
        x: (N, 3, S, S) float input, normalised as the net expects.
        targets: a class index per image, or None for the predicted class.
        step: the backbone step whose output is weighed (`cam_step`).
        contexts: where to compute (default: the net's contexts; the batch is split over them).

    Returns:
        (maps (N, h, w) float32 >= 0, not yet scaled; probabilities (N, classes)).
    """
    contexts = contexts or contexts_of(net)
    steps = list(net.features)
    prefix, rest = steps[:step + 1], steps[step + 1:]
    with _global_statistics(rest + [net.output]):
        return _cam_maps(net, x, targets, prefix, rest, contexts)


def _cam_maps(net, x, targets, prefix, rest, contexts):
    maps, probs = [], []
    rows = np.arange(x.shape[0])
    for ctx, part in zip(contexts, split_batch(rows, len(contexts))):
        if len(part) == 0:
            continue
        a = x[int(part[0]):int(part[-1]) + 1].as_in_context(ctx)
        for block in prefix:
            a = block(a)
        a.attach_grad()
        with autograd.record(train_mode=False):
            out = a
            for block in rest:
                out = block(out)
            logits = net.output(out)
            chosen = (logits.argmax(axis=1) if targets is None
                      else mx.nd.array([targets[i] for i in part], ctx=ctx))
            score = mx.nd.pick(logits, chosen, axis=1).sum()
        score.backward()
        weights = a.grad.mean(axis=(2, 3), keepdims=True)
        maps.append(mx.nd.relu((weights * a).sum(axis=1)).asnumpy())
        probs.append(mx.nd.softmax(logits, axis=-1).asnumpy())
    return np.concatenate(maps).astype(np.float32), np.concatenate(probs)


@dataclass
class CamResult:
    """What `grad_cam` computed, one entry per photo.

    Attributes:
        heatmaps: float32 maps in [0, 1], each the size of its photo (H x W).
        photos: the photos as uint8 RGB (H x W x 3), as read.
        targets: the class index each map explains; target_names: its name.
        probabilities: (N, classes) the model's probabilities for each photo.
        names: the file of each photo (or ``image i`` for arrays).
        layer: which backbone step was weighed, and its feature map's size.
    """
    heatmaps: List[np.ndarray]
    photos: List[np.ndarray]
    targets: List[int]
    target_names: List[str]
    probabilities: np.ndarray
    names: List[str]
    layer: str

    def overlays(self, alpha: float = 0.5) -> List[np.ndarray]:
        """Each photo with its heat map laid over it (`overlay`)."""
        return [overlay(p, h, alpha=alpha) for p, h in zip(self.photos, self.heatmaps)]


def _model_parts(model, image_size: Optional[int]):
    """(net, classes, image_size, mean, std, stored size, fit) of what the user passed."""
    if isinstance(model, (str, os.PathLike)):
        model = load_classifier(model)
    if isinstance(model, Classifier):
        return (model.net, list(model.classes), model.image_size, model.mean, model.std,
                model.stored_size, model.fit)
    if isinstance(model, TransferNet):
        size = image_size or model.family.input_size
        return (model, [str(i) for i in range(model.classes)], size, model.family.mean,
                model.family.std, size, "crop")
    raise ValueError(f"expected a gluonft Classifier, a model folder or a TransferNet, got "
                     f"{type(model).__name__}")


def _photos(images) -> Tuple[List[np.ndarray], List[str]]:
    """(uint8 RGB photos, their names) from files, folders or arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = [images]
        elif images.ndim != 4:
            raise ValueError(f"expected an image (H, W, 3) or images (N, H, W, 3), got shape "
                             f"{images.shape}")
        images = list(images)
    elif isinstance(images, (str, os.PathLike)):
        images = [images]
    photos, names = [], []
    for i, item in enumerate(images):
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise ValueError(f"image {i}: expected uint8 (H, W, 3) RGB, got {item.dtype} "
                                 f"{item.shape}")
            photos.append(item)
            names.append(f"image {i}")
            continue
        path = Path(item).expanduser()
        files = list_images(path) if path.is_dir() else [path]
        for file in files:
            photo = read_photo(file) if file.is_file() else None
            if photo is None:
                raise ValueError(f"{file}: not an image file that decodes (expected JPEG, PNG, "
                                 f"BMP, TIFF or WebP)")
            photos.append(photo)
            names.append(str(file))
    if not photos:
        raise ValueError("no images given")
    return photos, names


def _targets(target, n: int, classes: Sequence[str]) -> Optional[List[int]]:
    if target is None:
        return None
    items = [target] * n if isinstance(target, (int, np.integer, str)) else list(target)
    if len(items) != n:
        raise ValueError(f"target: one per image expected ({n}), got {len(items)}")
    out = []
    for t in items:
        if isinstance(t, str):
            if t not in classes:
                raise ValueError(f"target {t!r} is not a class of the model: {list(classes)}")
            t = classes.index(t)
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) \
                or not 0 <= t < len(classes):
            raise ValueError(f"target {t!r}: expected a class name or an index in "
                             f"[0, {len(classes)})")
        out.append(int(t))
    return out


def grad_cam(model, images, target=None, *, image_size: Optional[int] = None,
             step: Optional[int] = None) -> CamResult:
    """Grad-CAM heat maps of photos for a class.

    Args:
        model: a `Classifier`, a model folder, or a `TransferNet` (then ``image_size``, default
            the family's).
        images: image files, a folder of them, a uint8 RGB array (H, W, 3) or (N, H, W, 3), or
            a list of files / arrays (any sizes).
        target: None (each photo's predicted class), a class name or index for all, or one
            per photo.
        step: the backbone step to weigh (default: `cam_step`, from the per-model table).

    Returns:
        A `CamResult`: heat maps in [0, 1] the size of each photo, the photos, the targets,
        the probabilities.

    Raises:
        ValueError: an unreadable file, an unknown class, a model of another kind.
    """
    net, classes, size, mean, std, stored, fit = _model_parts(model, image_size)
    photos, names = _photos(images)
    targets = _targets(target, len(photos), classes)
    step = cam_step(net, size) if step is None else int(step)
    transform = BatchTransform(size, mean, std)
    ctx = contexts_of(net)[0]
    maps, probs = [], []
    for begin in range(0, len(photos), CAM_BATCH):
        chunk = photos[begin:begin + CAM_BATCH]
        stored_images = np.stack([square(p, stored, fit) for p in chunk])
        x = transform(to_device(stored_images, ctx, "uint8"), None)
        m, p = cam_maps(net, x, None if targets is None else targets[begin:begin + CAM_BATCH],
                        step=step)
        maps.append(m)
        probs.append(p)
    maps, probs = np.concatenate(maps), np.concatenate(probs)
    chosen = targets if targets is not None else [int(i) for i in probs.argmax(axis=1)]
    heatmaps = []
    for photo, m in zip(photos, maps):
        full = unsquare(m, photo.shape[:2], fit)
        top = float(full.max())
        heatmaps.append(full / top if top > 0 else full)
    h, w = maps.shape[1:]
    return CamResult(heatmaps=heatmaps, photos=photos, targets=chosen,
                     target_names=[classes[i] for i in chosen], probabilities=probs,
                     names=names, layer=f"step {step} of {net.backbone}'s backbone ({h} x {w})")


def overlay(photo: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The photo with the heat map over it in matplotlib's "jet" colours (red: where the class
    is seen), weighted by ``alpha`` where the map is high: uint8 RGB, the photo's size."""
    from matplotlib import colormaps

    heat = np.clip(np.asarray(heatmap, np.float32), 0, 1)
    if heat.shape != photo.shape[:2]:
        raise ValueError(f"heat map {heat.shape} and photo {photo.shape[:2]} differ in size")
    colours = colormaps["jet"](heat)[..., :3] * 255
    weight = alpha * heat[..., None] ** 0.5  # faint where the map is low: the photo shows
    mixed = (1 - weight) * photo.astype(np.float32) + weight * colours
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)
