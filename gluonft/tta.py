"""Test-time augmentation: average the softmax of a few fixed views of each image.

A view is a fixed affine (see `gluonft.transforms`) applied on the device like a training
augmentation, but deterministic: the whole image (``identity``), its mirror (``flip``), or a
square crop of side ``crop`` (a fraction of the image side) at the centre or a corner, mirrored
or not (``flip_center`` ...). The identity view runs exactly what `gluonft.predict_proba` runs,
so ``views=("identity",)`` reproduces `gluonft.evaluate` bit for bit.

Images loaded by `gluonft.datasets.image_folder` are stored ``margin`` (1.15) times larger
than the training size; ``crop=1 / margin`` then makes ``center`` the classic centre crop.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .backbones import TransferNet
from .data.imageset import ImageSet
from .devices import as_contexts, contexts_of
from .train import predict_view

__all__ = ["predict_proba_tta", "evaluate_tta", "tta_views", "VIEW_NAMES", "VIEW_SETS"]

_CORNERS = {"center": (0, 0), "top_left": (-1, -1), "top_right": (1, -1),
            "bottom_left": (-1, 1), "bottom_right": (1, 1)}
VIEW_NAMES = ("identity", "flip") + tuple(_CORNERS) + tuple(f"flip_{c}" for c in _CORNERS)
# Named sets of views; an int n picks the set with n views.
VIEW_SETS = {
    "identity": ("identity",),
    "flip": ("identity", "flip"),
    "five_crop": ("center", "top_left", "top_right", "bottom_left", "bottom_right"),
    "ten_crop": tuple(_CORNERS) + tuple(f"flip_{c}" for c in _CORNERS),
}
_BY_COUNT = {len(v): v for v in VIEW_SETS.values()}


def tta_views(views: Union[str, int, Sequence[str]] = "flip") -> Tuple[str, ...]:
    """The view names meant by ``views``.

    Args:
        views: a sequence of names from `VIEW_NAMES`; or the name of a set in `VIEW_SETS`
            (``"identity"``, ``"flip"`` = identity + flip, ``"five_crop"``, ``"ten_crop"`` = the
            five crops and their mirrors); or a count 1, 2, 5 or 10 meaning those sets.

    Returns:
        tuple of view names (duplicates kept: a repeated view weighs more).

    Example:
        >>> tta_views(2)
        ('identity', 'flip')
    """
    if isinstance(views, str):
        if views in VIEW_SETS:
            return VIEW_SETS[views]
        if views in VIEW_NAMES:
            return (views,)
        raise ValueError(f"unknown views {views!r}: expected a set ({', '.join(VIEW_SETS)}), a "
                         f"view name ({', '.join(VIEW_NAMES)}) or a sequence of view names")
    if isinstance(views, (int, np.integer)) and not isinstance(views, bool):
        if int(views) in _BY_COUNT:
            return _BY_COUNT[int(views)]
        raise ValueError(f"views={views!r}: a count must be one of "
                         f"{', '.join(map(str, sorted(_BY_COUNT)))}")
    try:
        names = tuple(views)
    except TypeError:
        raise ValueError(f"views must be a name, a count or a sequence of view names, "
                         f"got {views!r}") from None
    unknown = [v for v in names if v not in VIEW_NAMES]
    if not names or unknown:
        raise ValueError(f"unknown view(s) {unknown or names!r}: expected names from "
                         f"{', '.join(VIEW_NAMES)}")
    return names


def _affine(view: str, crop: float) -> Optional[np.ndarray]:
    """The affine row of a view (None for the identity, which then skips the sampler)."""
    if view == "identity":
        return None
    if view == "flip":
        return np.array([-1, 0, 0, 0, 1, 0], np.float32)
    flip = view.startswith("flip_")
    dx, dy = _CORNERS[view[5:] if flip else view]
    # A crop of side c (fraction of the side) spans c grid units each side of its centre; a
    # corner crop's centre sits 1 - c from the image centre so that its edge meets the border.
    return np.array([-crop if flip else crop, 0, dx * (1 - crop), 0, crop, dy * (1 - crop)],
                    np.float32)


def _check(net, data, crop):
    if not isinstance(net, TransferNet):
        raise ValueError(f"net must be a gluonft TransferNet (from load_backbone), "
                         f"got {type(net).__name__}")
    if not isinstance(data, ImageSet):
        raise ValueError(f"data must be a gluonft ImageSet, got {type(data).__name__}")
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        raise ValueError(f"crop must be in (0, 1] (a fraction of the image side), got {crop!r}")


def _check_contexts(net, contexts):
    # A forward pass on a device the parameters do not live on fails deep inside MXNet.
    have = contexts_of(net)
    missing = [c for c in contexts if c not in have]
    if missing:
        raise ValueError(f"the net's parameters live on {have} but ctx asks for {contexts}; "
                         f"load it with ctx={contexts} or call "
                         f"net.collect_params().reset_ctx({contexts})")


def predict_proba_tta(net: TransferNet, data: ImageSet, *,
                      views: Union[str, int, Sequence[str]] = "flip", crop: float = 0.875,
                      ctx=None, batch_size: int = 64, image_size: Optional[int] = None,
                      hybridize: bool = True) -> np.ndarray:
    """Class probabilities averaged over test-time views.

    Args:
        net: the trained net.
        data: the images (labels unused).
        views: which views (see `tta_views`): default identity + flip.
        crop: side of the crop views as a fraction of the image side, in (0, 1].
        ctx: a context or list of contexts (default `gluonft.devices()`).
        batch_size: images per forward pass.
        image_size: input side (default: the backbone's pretrained size).
        hybridize: compile the net.

    Returns:
        float32 array (N, classes): the mean over views of the softmax.

    Example:
        >>> p = predict_proba_tta(net, test, views="ten_crop", crop=1 / 1.15)  # doctest: +SKIP
        >>> p.shape  # doctest: +SKIP
        (372, 10)
    """
    _check(net, data, crop)
    names = tta_views(views)
    _check_contexts(net, as_contexts(ctx))
    total = None
    for name in names:
        # The identity view (affine None) is the very path evaluate() takes: identity-only
        # TTA equals evaluate exactly.
        proba = predict_view(net, data, _affine(name, float(crop)), ctx=ctx,
                             batch_size=batch_size, image_size=image_size, hybridize=hybridize)
        if len(names) == 1:
            return proba
        total = proba.astype(np.float64) if total is None else total + proba
    return (total / len(names)).astype(np.float32)


def evaluate_tta(net: TransferNet, data: ImageSet, *,
                 views: Union[str, int, Sequence[str]] = "flip", crop: float = 0.875,
                 ctx=None, batch_size: int = 64, image_size: Optional[int] = None,
                 hybridize: bool = True) -> Dict[str, float]:
    """Accuracy and cross-entropy of the view-averaged probabilities (see `predict_proba_tta`).

    Returns:
        ``{"accuracy": ..., "loss": ..., "count": N}``, like `gluonft.evaluate`.

    Example:
        >>> evaluate_tta(net, test, views="flip", ctx=mx.cpu())["accuracy"]  # doctest: +SKIP
        0.941
    """
    _check(net, data, crop)
    if len(data) == 0:
        raise ValueError("data holds no images")
    proba = predict_proba_tta(net, data, views=views, crop=crop, ctx=ctx,
                              batch_size=batch_size, image_size=image_size, hybridize=hybridize)
    # The same arithmetic as gluonft.evaluate, so one identity view gives identical numbers.
    labels = data.labels.astype(np.int64)
    picked = proba[np.arange(len(labels)), labels]
    return {"accuracy": float((proba.argmax(axis=1) == labels).mean()),
            "loss": float(-np.log(np.maximum(picked, 1e-12)).mean()),
            "count": int(len(labels))}
