"""gluonft: fine-tune GluonCV model-zoo backbones with a new output layer.

    >>> import gluonft, mxnet as mx
    >>> train = gluonft.datasets.cifar10("data", train=True)
    >>> net = gluonft.load_backbone("mobilenet0.75", classes=10, weights="imagenet")
    >>> plan = gluonft.apply_regime(net, "head")
    >>> history = gluonft.fit(net, train, epochs=3, batch_size=64, lr=0.01, image_size=96)

Your own photos (a folder per class), then predictions and a saved, exportable model:

    >>> clf = gluonft.train_classifier("photos", out="model", fast_train=True)
    >>> gluonft.classify(clf, "new_photos")            # {file name: class index}
    >>> gluonft.export_onnx(gluonft.load_classifier("model"), "model.onnx")
"""
__version__ = "0.1.0"

try:
    import mxnet as _mxnet  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the install
    raise ImportError("gluonft needs MXNet 1.9.1: pip install 'gluonft[cpu]' (CPU build) or "
                      "'gluonft[gpu]' (mxnet-cu112, CUDA 11.2)") from _error

from . import baseline, callbacks, datasets, tta
from .callbacks import BestCheckpoint, CSVLogger, EarlyStopping, ReduceLROnPlateau
from .classifier import Ensemble, classify, ensemble, evaluate_folder, fine_tune, lr_find, \
    predict_files, train_classifier
from .model_io import Classifier, ModelFolderError, export_onnx, export_symbol, \
    load_classifier, save_classifier
from .backbones import FAMILIES, TransferNet, UnknownBackbone, feature_blocks, list_backbones, \
    load_backbone
from .devices import devices
from .regimes import Plan, Regime, apply_regime, parse_regime
from .schedules import Schedule
from .summary import Summary, summary
from .fileio import FolderBusy, FolderLock
from .train import History, StopTraining, TrainingDiverged, evaluate, fit, predict_proba
from .transforms import Augment
from .weights import WeightsMismatch, WeightsUnavailable

__all__ = [
    "__version__", "baseline", "datasets", "list_backbones", "load_backbone", "feature_blocks",
    "FAMILIES",
    "TransferNet", "UnknownBackbone", "WeightsUnavailable", "WeightsMismatch", "devices",
    "Regime", "Plan", "apply_regime", "parse_regime", "Schedule", "Augment", "summary", "Summary",
    "fit", "evaluate", "predict_proba", "History", "StopTraining", "TrainingDiverged",
    "FolderLock", "FolderBusy",
    "callbacks", "tta", "EarlyStopping", "BestCheckpoint", "ReduceLROnPlateau", "CSVLogger",
    "train_classifier", "fine_tune", "lr_find", "classify", "predict_files", "evaluate_folder",
    "ensemble", "Ensemble", "Classifier", "save_classifier", "load_classifier", "export_symbol",
    "export_onnx", "ModelFolderError",
]
# `gluonft.serve` (Flask) is imported on demand: `from gluonft import serve`.
