"""Prediction: probabilities of a net on images, test-time augmentation, ensembles, and the
practitioner's verbs on files (`classify`, `predict_files`, `predict_bytes`,
`evaluate_folder`).

    >>> proba = predict_proba(net, test, image_size=96)  # doctest: +SKIP
    >>> classify(load_classifier("model"), "new_photos/")  # doctest: +SKIP
    {'IMG_0001.jpg': 3, 'IMG_0002.jpg': 0}

One path computes probabilities: `predict_view` (every image through one fixed view on the
device, two batches in flight); `predict_proba` is its identity view, TTA averages several
views, and an ensemble averages its members, each through `_average`.

Test-time views are fixed affines (see `gluonft.transforms`): the whole image
(``identity``), its mirror (``flip``), or a square crop of side ``crop`` (a fraction of the
image side) at the centre or a corner, mirrored or not (``flip_center`` ...). The identity
view runs exactly what `predict_proba` runs, so ``views=("identity",)`` reproduces `evaluate`
bit for bit. Images loaded by `gluonft.datasets.image_folder` are stored ``margin`` (1.15)
times larger than the training size; ``crop=1 / margin`` then makes ``center`` the classic
centre crop.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np

from .backbones import TransferNet, check_image_size
from .datasets.folder import UnreadableImagesWarning, image_folder, list_images, load_images
from .datasets.imageset import ImageSet, iterate_batches
from .devices import as_contexts, contexts_of, read_in_flight, split_batch
from .distributed import DIST_KVSTORES, Cluster, check_kvstore
from .inference import inference_forward
from .model_io import Classifier
from .transforms import BatchTransform, to_device

__all__ = ["predict_proba", "predict_view", "evaluate", "scores", "predict_proba_tta",
           "evaluate_tta", "tta_views", "VIEW_NAMES", "VIEW_SETS", "Ensemble", "ensemble",
           "classify", "predict_files", "predict_images", "predict_bytes", "evaluate_folder",
           "members_of", "image_paths"]

PathLike = Union[str, "os.PathLike[str]"]


# --- probabilities of one net -------------------------------------------------------------------

def predict_view(net: TransferNet, data: ImageSet, affine: Optional[np.ndarray], *, ctx=None,
                 batch_size: int = 64, image_size: Optional[int] = None,
                 hybridize: bool = True) -> np.ndarray:
    """Class probabilities (N, classes) of every image resampled by the same ``affine`` row
    (the rows `gluonft.transforms.sample_augment` makes; None: the image itself)."""
    contexts = as_contexts(ctx)
    image_size = check_image_size(net.backbone, net.family.input_size if image_size is None
                                  else image_size, family=net.family)
    forward = inference_forward(net, contexts, hybridize=hybridize, images=len(data))
    transform = BatchTransform(image_size, net.family.mean, net.family.std)

    def batches():
        for images, _ in iterate_batches(data, batch_size, shuffle=False):
            batch = []
            for device, x in zip(contexts, split_batch(images, len(contexts))):
                if len(x) == 0:
                    continue
                rows = None if affine is None else to_device(
                    np.tile(np.asarray(affine, np.float32), (len(x), 1)), device)
                batch.append(mx.nd.softmax(forward(transform(to_device(x, device, "uint8"), rows)),
                                           axis=-1))
            yield batch

    out = list(read_in_flight(batches()))
    return np.concatenate(out) if out else np.zeros((0, net.classes), np.float32)


def predict_proba(net: TransferNet, data: ImageSet, *, ctx=None, batch_size: int = 64,
                  image_size: Optional[int] = None, hybridize: bool = True) -> np.ndarray:
    """Class probabilities (N, classes) for every image of ``data``, in order."""
    return predict_view(net, data, None, ctx=ctx, batch_size=batch_size,
                        image_size=image_size, hybridize=hybridize)


def scores(proba: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """``{"accuracy", "loss" (mean cross-entropy), "count"}`` of probabilities against labels."""
    labels = labels.astype(np.int64)
    picked = proba[np.arange(len(labels)), labels]
    return {"accuracy": float((proba.argmax(axis=1) == labels).mean()),
            "loss": float(-np.log(np.maximum(picked, 1e-12)).mean()),
            "count": int(len(labels))}


def _check_data(data) -> None:
    if not isinstance(data, ImageSet):
        raise ValueError(f"data must be a gluonft ImageSet, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("data holds no images")


def evaluate(net: TransferNet, data: ImageSet, *, ctx=None, batch_size: int = 64,
             image_size: Optional[int] = None, hybridize: bool = True,
             kvstore: Optional[str] = None) -> Dict[str, float]:
    """Accuracy and mean cross-entropy of ``net`` on ``data`` (inference mode).

    ``kvstore``: a distributed kvstore (``"dist_sync"`` ...) when this process is one worker
    of a job (`gluonft.distributed`): each worker scores its share of ``data`` and every
    worker gets the whole set's figures; None (default): this process scores all of it.

    Returns:
        ``{"accuracy": ..., "loss": ..., "count": N}``.

    Example:
        >>> gluonft.evaluate(net, test, ctx=mx.cpu(), batch_size=128)["accuracy"]
        0.938
    """
    _check_data(data)
    if check_kvstore(kvstore) not in DIST_KVSTORES:
        return scores(predict_proba(net, data, ctx=ctx, batch_size=batch_size,
                                    image_size=image_size, hybridize=hybridize), data.labels)
    cluster = Cluster.join(kvstore)
    share = data.take(cluster.share(np.arange(len(data))))
    part = scores(predict_proba(net, share, ctx=ctx, batch_size=batch_size,
                                image_size=image_size, hybridize=hybridize),
                  share.labels) if len(share) else None
    return cluster.combined_scores(part)


def _average(parts: Sequence, probabilities: Callable[[object], np.ndarray]) -> np.ndarray:
    """The mean of ``probabilities(part)`` over ``parts`` (views or ensemble members), summed
    in float64; one part is returned as it is, so that one view equals `predict_proba`."""
    if len(parts) == 1:
        return probabilities(parts[0])
    total = None
    for part in parts:
        p = probabilities(part).astype(np.float64)
        total = p if total is None else total + p
    return (total / len(parts)).astype(np.float32)


# --- test-time augmentation ---------------------------------------------------------------------

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


def _view_affine(view: str, crop: float) -> Optional[np.ndarray]:
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


def _check_tta(net, data, crop):
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
    _check_tta(net, data, crop)
    names = tta_views(views)
    _check_contexts(net, as_contexts(ctx))
    # The identity view (affine None) is the very path evaluate() takes: identity-only TTA
    # equals evaluate exactly.
    return _average(names, lambda name: predict_view(
        net, data, _view_affine(name, float(crop)), ctx=ctx, batch_size=batch_size,
        image_size=image_size, hybridize=hybridize))


def evaluate_tta(net: TransferNet, data: ImageSet, *,
                 views: Union[str, int, Sequence[str]] = "flip", crop: float = 0.875,
                 ctx=None, batch_size: int = 64, image_size: Optional[int] = None,
                 hybridize: bool = True) -> Dict[str, float]:
    """Accuracy and cross-entropy of the view-averaged probabilities (see `predict_proba_tta`).

    Returns:
        ``{"accuracy": ..., "loss": ..., "count": N}``, like `evaluate`.

    Example:
        >>> evaluate_tta(net, test, views="flip", ctx=mx.cpu())["accuracy"]  # doctest: +SKIP
        0.941
    """
    _check_tta(net, data, crop)
    _check_data(data)
    return scores(predict_proba_tta(net, data, views=views, crop=crop, ctx=ctx,
                                    batch_size=batch_size, image_size=image_size,
                                    hybridize=hybridize), data.labels)


# --- classifiers and ensembles on image files ----------------------------------------------------

@dataclass(eq=False)
class Ensemble:
    """Several classifiers of the same classes whose probabilities are averaged.

    Each member prepares images its own way (size, normalisation), so members may differ in
    backbone and input size.
    """
    members: Tuple[Classifier, ...]
    classes: Tuple[str, ...]

    def __repr__(self) -> str:
        return f"Ensemble({len(self.members)} members, {len(self.classes)} classes)"


def ensemble(classifiers: Sequence[Classifier]) -> Ensemble:
    """Average the probabilities of several classifiers trained on the same classes.

    Args:
        classifiers: `Classifier`s (or `Ensemble`s, flattened) with identical class lists in
            the same order.

    Returns:
        an `Ensemble`, usable wherever `classify` and `predict_files` take a classifier.

    Raises:
        ValueError: fewer than one member, or class lists that differ (the message shows
            both).

    Example:
        >>> both = ensemble([load_classifier("m1"), load_classifier("m2")])  # doctest: +SKIP
        >>> classify(both, "new_photos/")  # doctest: +SKIP
    """
    members: List[Classifier] = []
    for c in classifiers:
        if isinstance(c, Ensemble):
            members += c.members
        elif isinstance(c, Classifier):
            members.append(c)
        else:
            raise ValueError(f"ensemble members must be gluonft Classifiers, got "
                             f"{type(c).__name__}")
    if not members:
        raise ValueError("ensemble needs at least one classifier")
    classes = members[0].classes
    for i, m in enumerate(members[1:], 1):
        if tuple(m.classes) != tuple(classes):
            raise ValueError(f"ensemble members must have the same classes in the same order: "
                             f"member 0 has {list(classes)}, member {i} has {list(m.classes)}")
    return Ensemble(tuple(members), tuple(classes))


def members_of(model) -> Tuple[Classifier, ...]:
    """The classifiers of a `Classifier` (itself) or an `Ensemble` (its members); a
    ValueError for anything else."""
    if isinstance(model, Ensemble):
        return model.members
    if isinstance(model, Classifier):
        return (model,)
    raise ValueError(f"expected a gluonft Classifier or Ensemble, got {type(model).__name__}")


def _member_proba(clf: Classifier, images: np.ndarray, tta: bool) -> np.ndarray:
    ctx = contexts_of(clf.net)
    data = ImageSet(images, np.zeros(len(images), np.int32), clf.classes, "prediction")
    if tta:
        return predict_proba_tta(clf.net, data, views="flip", ctx=ctx,
                                 image_size=clf.image_size)
    return predict_proba(clf.net, data, ctx=ctx, image_size=clf.image_size)


def image_paths(images) -> List[Tuple[str, Path]]:
    """[(name to report, path)] for a folder, a file, or a list of both."""
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if not items:
        raise ValueError("no images given: expected a folder or image files")
    out: List[Tuple[str, Path]] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            out += [(str(p.relative_to(path)), p) for p in list_images(path)]
        elif path.is_file():
            out.append((str(item), path))
        else:
            raise FileNotFoundError(f"{item} does not exist (expected an image file or a "
                                    f"folder of images)")
    if not out:
        raise ValueError(f"no image files in {', '.join(map(str, items))}")
    return out


def _proba_for_paths(model, paths: Sequence[Path], tta: bool, *, workers=None):
    """(probabilities (n_kept, classes), kept indices, skipped paths): each member decodes the
    files at its own stored size (shared between members that store alike)."""
    decoded: Dict[tuple, tuple] = {}

    def decode(clf):
        key = (clf.stored_size, clf.fit)
        if key not in decoded:
            decoded[key] = load_images(paths, size=clf.stored_size, fit=clf.fit,
                                       workers=workers)
        return decoded[key]

    members = members_of(model)
    images, kept, skipped = decode(members[0])
    if not kept:
        return np.zeros((0, len(members[0].classes)), np.float32), [], skipped
    return _average(members, lambda clf: _member_proba(clf, decode(clf)[0], tta)), kept, skipped


def _rows(model, names, proba) -> List[Dict[str, object]]:
    classes = members_of(model)[0].classes
    labels = members_of(model)[0].labels or classes
    rows = []
    for name, p in zip(names, proba):
        index = int(p.argmax())
        rows.append({"file": name, "class": classes[index], "index": index,
                     "label": labels[index],
                     "probability": float(p[index]),
                     "probabilities": {c: float(v) for c, v in zip(classes, p)}})
    return rows


def predict_files(model, images, *, tta: bool = False) -> List[Dict[str, object]]:
    """Predict every image file of a folder (recursively) or of a list of files/folders.

    Files that do not decode are skipped with one `UnreadableImagesWarning` listing them.

    Args:
        model: a `Classifier` or an `Ensemble`.
        images: a folder, an image file, or a list of them.
        tta: average over the image and its mirror.

    Returns:
        one dict per readable file, in order: ``{"file", "class", "index", "label",
        "probability", "probabilities": {class name: p}}``; ``file`` is the path relative to
        the folder given, or the file path as given; ``label`` is the label as the training
        table gave it (e.g. the integer ``class_id`` of a gt.csv), else the class name.

    Example:
        >>> predict_files(clf, "new_photos")[0]["class"]  # doctest: +SKIP
        'dress'
    """
    items = image_paths(images)
    proba, kept, skipped = _proba_for_paths(model, [p for _, p in items], tta)
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image file(s) skipped: {', '.join(skipped)}",
                      UnreadableImagesWarning, stacklevel=2)
    return _rows(model, [items[i][0] for i in kept], proba)


def classify(model, images, *, tta: bool = False) -> Dict[str, object]:
    """``{file name: class}`` for a folder of images (or image files): the label of the
    training table for a model trained from one (`labelled_images`, e.g. gt.csv's integer
    ``class_id``), else the class index.

    Args:
        model: a `Classifier` or an `Ensemble`.
        images: a folder (searched recursively; names are relative to it), an image file, or
            a list of them.
        tta: average over the image and its mirror.

    Returns:
        dict file name -> label (table-trained model) or index into ``model.classes``;
        unreadable files are left out (with a warning).

    Example:
        >>> classify(clf, "../shared/data/dogcat")  # doctest: +SKIP
        {'cat/cat1.jpg': 0, ...}
    """
    key = "label" if members_of(model)[0].labels else "index"
    return {row["file"]: row[key] for row in predict_files(model, images, tta=tta)}


def predict_images(model, images: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Probabilities (N, classes) for uint8 RGB images already made square at the model's
    stored size (what `gluonft.datasets.load_images` returns)."""
    return _average(members_of(model), lambda clf: _member_proba(clf, images, tta))


def predict_bytes(model, data: bytes, *, tta: bool = False) -> Dict[str, object]:
    """Predict one encoded image (JPEG, PNG, ... bytes) exactly as a file would be.

    Raises:
        ValueError: the bytes are empty or not a decodable image.
    """
    if not data:
        raise ValueError("the image is empty (0 bytes)")
    # The decoder picks its flags by extension (EXIF orientation for JPEG, alpha and 16 bits
    # for the rest): name the temporary file after the content, not after the client's name.
    suffix = ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"
    with tempfile.TemporaryDirectory(prefix="gluonft-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        proba, kept, _ = _proba_for_paths(model, [path], tta, workers=1)
    if not kept:
        raise ValueError("the upload is not an image this server can decode (expected "
                         "JPEG, PNG, BMP, TIFF or WebP)")
    return _rows(model, ["upload"], proba)[0]


def evaluate_folder(clf: Classifier, data_dir: PathLike, *, split: str = "test",
                    tta: bool = False) -> Dict[str, object]:
    """Accuracy and loss of a trained classifier on a labelled folder of photos.

    The photos are stored as in training (the model's stored size and fit), so the figures
    equal those of training's own evaluation.

    Args:
        clf: a `Classifier`.
        data_dir: the layout `train_classifier` takes (class folders, or ``train/``,
            ``validation/``, ``test/`` of class folders).
        split: ``"test"``, ``"validation"``, ``"train"``, or ``"all"`` for plain class folders
            taken whole.
        tta: average over the image and its mirror.

    Returns:
        ``{"accuracy", "loss", "count", "split", "tta", "skipped"}``.

    Raises:
        ValueError: the folder's classes differ from the model's (both listed).

    Example:
        >>> evaluate_folder(load_classifier("model"), "../shared/data/clothing-small")
        {'accuracy': 0.8844, ...}  # doctest: +SKIP
    """
    if not isinstance(clf, Classifier):
        raise ValueError(f"expected a gluonft Classifier, got {type(clf).__name__}")
    read = dict(image_size=clf.image_size, margin=clf.stored_size / clf.image_size, fit=clf.fit)
    if split == "all":
        data = image_folder(data_dir, val_fraction=0, split="train", **read)
    else:
        data = image_folder(data_dir, split=split, **read)
    if tuple(data.classes) != tuple(clf.classes):
        raise ValueError(f"{data_dir} has the classes {list(data.classes)} but the model was "
                         f"trained on {list(clf.classes)}")
    ctx = contexts_of(clf.net)
    score = (evaluate_tta(clf.net, data, views="flip", ctx=ctx, image_size=clf.image_size)
             if tta else evaluate(clf.net, data, ctx=ctx, image_size=clf.image_size))
    return {"accuracy": float(score["accuracy"]), "loss": float(score["loss"]),
            "count": int(score["count"]), "split": split, "tta": bool(tta),
            "skipped": list(data.skipped)}
