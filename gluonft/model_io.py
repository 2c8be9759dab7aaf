"""A trained classifier as one folder, and exports for other runtimes.

A model folder holds two files:

    model.params   the net's parameters (``save_parameters``: gluonft's layout)
    model.json     what is needed to rebuild and use them: backbone name, class names in label
                   order, input size and how images are prepared (square fit, stored size,
                   mean/std), the family, where the starting weights came from, versions and
                   the parameter count

`save_classifier` writes both into a temporary folder beside the target and renames it into
place, so a model folder is either complete or absent, never half written; it refuses to
replace an existing, different model unless asked to (``overwrite=True``), and never deletes a
folder that is not a model folder.

Exports (`export_symbol`, `export_onnx`) take NORMALISED float32 input of shape
(N, 3, S, S): RGB, ``(pixel / 255 - mean) / std`` with the mean/std of model.json, S its
``image_size``; they return logits (apply softmax for probabilities). `Classifier.prepare`
does that preprocessing from image files, exactly as prediction in gluonft does.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np

from . import compat
from .backbones import TransferNet, UnknownBackbone, check_image_size, count_params, load_backbone
from .devices import contexts_of
from .fileio import library_versions, make_shared_temp_dir
from .heads import parse_head
from .transforms import BatchTransform, to_device
from .weights import WeightsMismatch, read_params, sha1_of

__all__ = ["Classifier", "classifier_of", "save_classifier", "load_classifier", "export_symbol",
           "export_onnx",
           "ModelFolderError", "MODEL_PARAMS", "MODEL_JSON", "FORMAT", "count_params"]

MODEL_PARAMS = "model.params"
MODEL_JSON = "model.json"
FORMAT = "gluonft-classifier/1"
# MXNet 1.9.1 translates operators to opset 12 or 13 (its newest), but stamps the file with the
# newest opset of the installed onnx, which a released onnxruntime may refuse (onnx 1.17
# stamps 22, onnxruntime 1.20 runs up to 21): exports are stamped with the opset they follow.
ONNX_OPSET = 13
INPUT_DOC = ("float32 (N, 3, {s}, {s}) RGB, normalised: (pixel / 255 - mean) / std with "
             "mean={mean}, std={std}; output: logits (N, {n}), softmax gives probabilities")

PathLike = Union[str, "os.PathLike[str]"]


class ModelFolderError(ValueError):
    """A model folder is missing a file, holds a corrupt one, or cannot be written."""


@dataclass(eq=False)
class Classifier:
    """A trained net with what is needed to use it on image files.

    Attributes:
        net: the `gluonft.TransferNet`.
        classes: class names in label order (output ``i`` is ``classes[i]``).
        image_size: the input side S the net was trained at.
        mean, std: per-channel normalisation of the input (RGB, on pixel / 255).
        meta: everything else of model.json (backbone, family, ``stored_size`` and ``fit`` of
            the images, weights source, versions, ``params``, training settings ...).

    Example:
        >>> clf = load_classifier("models/clothes")  # doctest: +SKIP
        >>> clf.classes[:2], clf.params  # doctest: +SKIP
        (('dress', 'hat'), 1848586)
    """
    net: object
    classes: Tuple[str, ...]
    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    meta: Dict[str, object] = field(default_factory=dict)

    @property
    def backbone(self) -> str:
        return self.net.backbone

    @property
    def labels(self) -> Optional[Tuple[object, ...]]:
        """The original labels in class order when trained from a labels table (ints or
        strings, as the table wrote them); None for class folders."""
        labels = self.meta.get("labels")
        return tuple(labels) if labels else None

    @property
    def params(self) -> int:
        """Parameter count (weights, running statistics excluded)."""
        return int(self.meta.get("params") or count_params(self.net))

    @property
    def stored_size(self) -> int:
        """Side of the square images before the resize to ``image_size`` (as in training)."""
        return int(self.meta.get("stored_size") or round(self.image_size * 1.15))

    @property
    def fit(self) -> str:
        """How non-square photos become square (``crop``, ``pad``, ``stretch``)."""
        return str(self.meta.get("fit") or "crop")

    def prepare(self, images: np.ndarray, *, ctx=None) -> mx.nd.NDArray:
        """uint8 (N, H, W, 3) square RGB images -> the normalised float input of the exports.

        The same resize and normalisation as `gluonft.predict_proba` (`BatchTransform`).
        """
        ctx = ctx or contexts_of(self.net)[0]
        transform = BatchTransform(self.image_size, self.mean, self.std)
        return transform(to_device(images, ctx, "uint8"), None)

    def __repr__(self) -> str:
        return (f"Classifier({self.backbone}, {len(self.classes)} classes, "
                f"image_size={self.image_size}, params={self.params:,})")


def _check_classes(classes, net) -> Tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(f"classes must be a list of class names, got {classes!r}")
    names = tuple(str(c) for c in classes)
    if len(names) != net.classes:
        raise ValueError(f"classes lists {len(names)} names but the net has {net.classes} "
                         f"outputs; expected one name per output")
    if len(set(names)) != len(names):
        raise ValueError(f"classes has duplicate names: {list(names)}")
    return names


def _metadata(net, classes, image_size, extra) -> dict:
    source = getattr(net, "weights_source", None)
    meta = {
        "format": FORMAT,
        "backbone": net.backbone,
        "family": net.family.name,
        "classes": list(classes),
        "image_size": int(image_size),
        "mean": list(net.family.mean),
        "std": list(net.family.std),
        "input": INPUT_DOC.format(s=image_size, mean=list(net.family.mean),
                                  std=list(net.family.std), n=len(classes)),
        "weights_source": source.to_dict() if hasattr(source, "to_dict") else None,
        "params": count_params(net),
        **net.head_spec.to_dict(),
        "versions": library_versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if extra:
        if not isinstance(extra, dict):
            raise ValueError(f"extra must be a dict of JSON values, got {type(extra).__name__}")
        clash = sorted(set(extra) & {"format", "backbone", "classes", "image_size", "mean",
                                     "std", "params", "family", "head", "dropout"})
        if clash:
            raise ValueError(f"extra may not redefine {', '.join(clash)}")
        meta.update(extra)
    try:  # fail here, before anything is written, on a value JSON cannot hold
        json.dumps(meta)
    except (TypeError, ValueError) as error:
        raise ValueError(f"extra must hold JSON values only: {error}") from None
    return meta


def classifier_of(net, classes: Sequence[str], image_size: int,
                  extra: Optional[dict] = None) -> Classifier:
    """The `Classifier` of a trained net, with the metadata a model folder would hold."""
    names = _check_classes(classes, net)
    return Classifier(net=net, classes=names, image_size=int(image_size), mean=net.family.mean,
                      std=net.family.std, meta=_metadata(net, names, image_size, extra))


def save_classifier(net, folder: PathLike, *, classes: Sequence[str], image_size: int,
                    data=None, overwrite: bool = False, extra: Optional[dict] = None) -> Path:
    """Save a trained net as a model folder (model.params + model.json), atomically.

    Args:
        net: a trained `gluonft.TransferNet`.
        folder: the model folder to create.
        classes: class names in label order (``data.classes`` of `image_folder`).
        image_size: the input side the net was trained at.
        data: what the net was trained on (the `FolderData` of `image_folder`, or an
            `ImageSet`): prediction prepares photos as its images were (their stored square
            side and how they were made square). Needed unless ``extra`` gives ``stored_size``
            and ``fit``: without either, how to prepare photos is unknown, and a guess (a
            margin over ``image_size``) is wrong for, e.g., CIFAR-10 at its native 32 px.
        overwrite: replace an existing model folder. Without it an existing different model
            is an error and an existing copy of the same model (same parameters, classes,
            backbone and size) is left as it is; with it the folder is always rewritten (new
            metadata too). A folder that is not a model folder (it has files but no
            model.json) is never replaced.
        extra: more JSON values for model.json (e.g. ``{"history": ...}``).

    Returns:
        the folder's path.

    Raises:
        FileExistsError: the folder holds another model (without ``overwrite``), or is not a
            model folder.

    Example:
        >>> save_classifier(net, "models/clothes", classes=data.classes,
        ...                 image_size=96)  # doctest: +SKIP
        PosixPath('models/clothes')
    """
    if not isinstance(net, TransferNet):
        raise ValueError(f"save_classifier needs a net from gluonft.load_backbone, "
                         f"got {type(net).__name__}")
    image_size = check_image_size(net.backbone, image_size, family=net.family)
    names = _check_classes(classes, net)
    meta = _metadata(net, names, image_size, {**_preparation(data, extra), **(extra or {})})
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is a file, not a model folder; choose "
                              f"another path")
    existing = folder.is_dir() and any(folder.iterdir())
    if existing and not (folder / MODEL_JSON).is_file():
        raise FileExistsError(f"{folder} exists and is not a gluonft model folder (no "
                              f"{MODEL_JSON}); refusing to replace it, choose another path")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(make_shared_temp_dir(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        net.save_parameters(str(tmp / MODEL_PARAMS))
        meta["params_sha1"] = sha1_of(tmp / MODEL_PARAMS)
        with open(tmp / MODEL_JSON, "w") as f:
            json.dump(meta, f, indent=1)
        if existing:
            if not overwrite and _same_model(folder, meta):
                shutil.rmtree(tmp)
                return folder
            if not overwrite:
                raise FileExistsError(f"{folder} already holds a different model; pass "
                                      f"overwrite=True (--overwrite) to replace it, or choose "
                                      f"another folder")
            # Swap by two renames so that a crash leaves either model, never a mix.
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.rmdir(old)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if folder.is_dir():
                folder.rmdir()  # empty: os.replace onto a non-empty folder fails anyway
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _preparation(data, extra: Optional[dict]) -> dict:
    """{"stored_size", "fit"}: how the training images were made (from ``data``), checked
    against ``extra``'s; an error when neither says."""
    given = {k: (extra or {})[k] for k in ("stored_size", "fit") if k in (extra or {})}
    if data is None:
        if len(given) < 2:
            raise ValueError("save_classifier needs to know how the training images were "
                             "prepared: pass data= (the FolderData or ImageSet the net trained "
                             "on) or extra={'stored_size': side, 'fit': 'crop'|'pad'|"
                             "'stretch'}")
        return given
    images = getattr(data, "train", data).images  # FolderData: its training split
    found = {"stored_size": int(getattr(data, "stored_size", images.shape[1])),
             "fit": getattr(data, "fit", "crop")}
    clash = [f"{k}={given[k]!r} (the training data: {found[k]!r})" for k in given
             if given[k] != found[k]]
    if clash:
        raise ValueError(f"extra says {', '.join(clash)}: drop it, or pass the data the net "
                         f"was really trained on")
    return found


def _same_model(folder: Path, meta: dict) -> bool:
    try:
        with open(folder / MODEL_JSON) as f:
            old = json.load(f)
        return (old.get("params_sha1") == meta["params_sha1"]
                and old.get("classes") == meta["classes"]
                and old.get("backbone") == meta["backbone"]
                and old.get("image_size") == meta["image_size"]
                and (folder / MODEL_PARAMS).is_file()
                and sha1_of(folder / MODEL_PARAMS) == meta["params_sha1"])
    except (OSError, ValueError):
        return False


def read_meta(folder: PathLike) -> dict:
    """model.json of a model folder, checked; raises `ModelFolderError` naming the bad file."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist (expected a folder "
                               f"written by save_classifier / 'python -m gluonft train')")
    path = folder / MODEL_JSON
    if not path.is_file():
        raise ModelFolderError(f"model folder {folder} has no {MODEL_JSON}: {path} is missing; "
                               f"is it a folder written by save_classifier?")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"{path} is corrupt: not readable JSON ({error})") from None
    if not isinstance(meta, dict):
        raise ModelFolderError(f"{path} is corrupt: expected a JSON object")
    missing = [k for k in ("backbone", "classes", "image_size", "mean", "std") if k not in meta]
    if missing:
        raise ModelFolderError(f"{path} is corrupt: it lacks {', '.join(missing)}")
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(
            isinstance(c, str) for c in classes):
        raise ModelFolderError(f"{path} is corrupt: 'classes' must list at least two class "
                               f"names, got {classes!r}")
    labels = meta.get("labels")
    if labels is not None and not (isinstance(labels, list) and len(labels) == len(classes)
                                   and [str(v) for v in labels] == classes):
        raise ModelFolderError(f"{path} is corrupt: 'labels' must give the original label of "
                               f"each of the {len(classes)} classes, got {labels!r}")
    return meta


def load_classifier(folder: PathLike, *, ctx=None, head=None) -> Classifier:
    """Load a model folder written by `save_classifier`.

    Args:
        folder: the model folder.
        ctx: a context or list of contexts (default `gluonft.devices()`).
        head: for a model trained with a head block of your own (model.json says
            ``"head": "custom:<class name>"``): a fresh instance of that block; the linear and
            MLP heads are rebuilt from model.json.

    Returns:
        a `Classifier`.

    Raises:
        ModelFolderError: the folder, model.json or model.params is missing or corrupt (the
            message names the file).

    Example:
        >>> clf = load_classifier("models/clothes")  # doctest: +SKIP
        >>> classify(clf, "new_photos/")  # doctest: +SKIP
        {'IMG_0001.jpg': 3, ...}
    """

    folder = Path(folder).expanduser()
    meta = read_meta(folder)
    params = folder / MODEL_PARAMS
    if not params.is_file():
        raise ModelFolderError(f"model folder {folder} has no {MODEL_PARAMS}: {params} is "
                               f"missing (the parameters; model.json alone cannot predict)")
    head = _head_of(meta, folder, head)
    try:
        net = load_backbone(meta["backbone"], classes=len(meta["classes"]), weights=str(params),
                            ctx=ctx, **head)
    except UnknownBackbone as error:
        raise ModelFolderError(f"{folder / MODEL_JSON} names a backbone this gluonft does not "
                               f"know: {error}") from None
    except WeightsMismatch as error:
        raise ModelFolderError(f"{params} is corrupt or does not match {MODEL_JSON}: "
                               f"{error}") from None
    if not any(key.startswith("output") for key in _loaded_head_keys(net, params)):
        raise ModelFolderError(f"{params} holds no trained head for {len(meta['classes'])} "
                               f"classes; it does not match {folder / MODEL_JSON}")
    meta = dict(meta)
    return Classifier(net=net, classes=tuple(meta["classes"]), image_size=int(meta["image_size"]),
                      mean=tuple(meta["mean"]), std=tuple(meta["std"]), meta=meta)


def _head_of(meta: dict, folder: Path, block) -> dict:
    """The `load_backbone` head arguments of a model folder (no "head" key: the linear one,
    as folders from before heads were a choice)."""
    recorded = meta.get("head", "linear")
    if not isinstance(recorded, str):
        raise ModelFolderError(f"{folder / MODEL_JSON} is corrupt: 'head' must be a string, "
                               f"got {recorded!r}")
    if recorded.startswith("custom:"):
        if block is None:
            raise ModelFolderError(f"{folder} was trained with a head block of your own "
                                   f"({recorded[7:]}); pass load_classifier(..., head=<a new "
                                   f"{recorded[7:]}>) to load it")
        return {"head": block}
    if block is not None:
        raise ValueError(f"head= is for models trained with a block of your own; {folder} "
                         f"has the {recorded!r} head, rebuilt from {MODEL_JSON}")
    try:
        parse_head(recorded, dropout=meta.get("dropout"))
    except ValueError as error:
        raise ModelFolderError(f"{folder / MODEL_JSON} is corrupt: {error}") from None
    return {"head": recorded, "dropout": meta.get("dropout")}


def _loaded_head_keys(net, params: Path) -> List[str]:
    # load_backbone silently keeps a fresh head when the file's head has another shape: that
    # would be a model predicting at random, so check the head really came from the file.
    stored = read_params(str(params))
    own = net._collect_params_with_prefix()
    return [k for k in own if k.startswith("output") and k in stored
            and tuple(stored[k].shape) == tuple(own[k].shape)]


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    there = [str(p) for p in paths if p.exists()]
    if there and not overwrite:
        raise FileExistsError(f"{', '.join(there)} already exist(s); pass overwrite=True "
                              f"(--overwrite) to replace, or choose another folder")


def _export_graph(clf: Classifier, folder: Path, name: str) -> Tuple[Path, Path]:
    """HybridBlock.export of the net after one forward pass at the model's input size."""
    net = clf.net
    net.hybridize()
    with mx.autograd.predict_mode():
        net(mx.nd.zeros((1, 3, clf.image_size, clf.image_size), ctx=contexts_of(net)[0]))
    net.export(str(folder / name), epoch=0)
    return folder / f"{name}-symbol.json", folder / f"{name}-0000.params"


def export_symbol(clf: Classifier, folder: PathLike, *, name: str = "model",
                  overwrite: bool = False) -> Dict[str, Path]:
    """Export the net as MXNet symbol JSON + params (what Netron and ``SymbolBlock`` read).

    Writes ``<name>-symbol.json``, ``<name>-0000.params`` and ``<name>-README.txt`` (one line:
    the input the graph takes and the classes) into ``folder``.

    Args:
        clf: a `Classifier`.
        folder: output folder (created).
        name: file name stem.
        overwrite: replace existing files of that name.

    Returns:
        ``{"symbol": path, "params": path, "readme": path}``.

    Example:
        >>> files = export_symbol(clf, "export")  # doctest: +SKIP
        >>> net = mx.gluon.SymbolBlock.imports(str(files["symbol"]), ["data"],
        ...                                    str(files["params"]))  # doctest: +SKIP
    """
    folder = Path(folder).expanduser()
    targets = [folder / f"{name}-symbol.json", folder / f"{name}-0000.params",
               folder / f"{name}-README.txt"]
    _refuse_existing(targets, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as tmp:
        symbol, params = _export_graph(clf, Path(tmp), name)
        readme = Path(tmp) / f"{name}-README.txt"
        readme.write_text(_readme_line(clf, f"{name}-symbol.json + {name}-0000.params "
                                            f"(mx.gluon.SymbolBlock.imports, input name 'data')"))
        for src, dst in zip((symbol, params, readme), targets):
            os.replace(src, dst)
    return {"symbol": targets[0], "params": targets[1], "readme": targets[2]}


def _readme_line(clf: Classifier, what: str) -> str:
    return (f"{what}: {clf.backbone} classifier; input "
            + INPUT_DOC.format(s=clf.image_size, mean=list(clf.mean), std=list(clf.std),
                               n=len(clf.classes))
            + f"; classes in output order: {', '.join(clf.classes)}\n")


def _tidy_onnx(path: Path, opset: int) -> None:
    """Stamp the default-domain opset MXNet's translations were written for (see export_onnx)
    and the oldest file format that holds it; keep the weights out of the graph inputs."""
    import onnx
    from onnx.defs import onnx_opset_version

    model = onnx.load(str(path))
    if onnx_opset_version() < opset:
        raise ValueError(f"the installed onnx {onnx.__version__} knows opsets up to "
                         f"{onnx_opset_version()}, not {opset}")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > opset:
            # MXNet picks, per operator, its newest translation at or below the stamped
            # opset: at most 13 (it has opset-12 and opset-13 translations only).
            entry.version = opset
    # The file format (IR) version the installed onnx writes can be newer than runtimes read
    # (onnx 1.18 writes IR 11, onnxruntime 1.20 reads up to 10); the graph needs only the IR
    # version of its opsets, so stamp that: any runtime for those opsets loads it.
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    # MXNet lists every weight as a graph input too. Runtimes then treat the weights as inputs
    # a caller may override: no constant folding, and onnxruntime writes one warning per weight
    # to stderr (64 KB for a MobileNet, enough to fill a notebook kernel's stderr pipe and
    # block it). Since IR 4 weights need not be inputs, so only the image input stays.
    weights = {w.name for w in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(clf: Classifier, path: PathLike, *, overwrite: bool = False) -> Path:
    """Export the net as an ONNX model (needs the ``onnx`` extra: onnx, onnxruntime).

    The graph takes the normalised float32 input (N, 3, S, S) with a dynamic batch size and
    returns logits; a ``<path>.README.txt`` line beside it says so.

    Args:
        clf: a `Classifier`.
        path: the ``.onnx`` file to write.
        overwrite: replace an existing file.

    Returns:
        the path.

    Raises:
        ImportError: onnx is not installed (the message says which extra to install).

    Example:
        >>> export_onnx(clf, "export/model.onnx")  # doctest: +SKIP
    """
    try:
        compat.onnx_for_mxnet()
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install -e '.[onnx]' in "
                          "gluonft's source folder") from None
    path = Path(path).expanduser()
    readme = path.with_name(path.name + ".README.txt")
    _refuse_existing([path, readme], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as tmp:
        symbol, params = _export_graph(clf, Path(tmp), "model")
        s = clf.image_size
        out = Path(tmp) / "model.onnx"
        mx.onnx.export_model(str(symbol), str(params), [(1, 3, s, s)], [np.float32], str(out),
                             dynamic=True, dynamic_input_shapes=[(None, 3, s, s)])
        _tidy_onnx(out, ONNX_OPSET)
        (Path(tmp) / "readme").write_text(_readme_line(clf, f"{path.name} (ONNX)"))
        os.replace(out, path)
        os.replace(Path(tmp) / "readme", readme)
    return path
