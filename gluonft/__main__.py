"""``python -m gluonft``: train, predict, export and serve image classifiers.

    python -m gluonft train DATA_DIR --out MODEL_DIR [--model NAME|auto] [--weights W] [--fast]
                      [--epochs N] [--stages head=4,last_k:4=4,full=6] [--image-size S]
                      [--max-params N] [--overwrite]
    python -m gluonft predict MODEL_DIR IMAGE_OR_DIR... [--json] [--tta]
    python -m gluonft evaluate MODEL_DIR DATA_DIR [--split test] [--tta]
    python -m gluonft export MODEL_DIR [--out DIR] [--onnx] [--overwrite]
    python -m gluonft serve MODEL_DIR --port N [--host H] [--max-bytes N] [--max-pixels N]
                            [--max-decode-bytes N]

A bad input ends with one line ``gluonft: error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import cv2

from .argtypes import positive_int as _positive_int
from .argtypes import seed as _seed
from .backbones import UnknownBackbone
from .datasets.folder import UnreadableImagesWarning
from .distributed import Cluster, DistributedSetupError
from .evaluation_report import write_evaluation_report
from .fileio import FolderBusy, atomic_write, check_writable_folder
from .gradcam import grad_cam, overlay
from .interpretation import interpret
from .model_io import export_onnx, export_symbol, load_classifier
from .pipelines import load_pipeline
from .predict import evaluate_folder, image_paths, predict_files
from .recipes import train_classifier
from .serve import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    create_app,
    serve,
)
from .submission import write_submission
from .weights import WeightsMismatch, WeightsUnavailable

__all__ = ["main", "build_parser"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise _UsageError(message)


def _stages(text: str):
    """``head=4,last_k:4=4,full=6`` -> (("head", 4), ("last_k:4", 4), ("full", 6))."""
    stages = []
    for part in text.split(","):
        regime, sep, epochs = part.strip().rpartition("=")
        if not sep or not regime:
            raise argparse.ArgumentTypeError(f"expected REGIME=EPOCHS pairs separated by commas "
                                             f"(e.g. head=4,last_k:4=4,full=6), got {text!r}")
        stages.append((regime, _positive_int(epochs)))
    return tuple(stages)


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a classifier on a folder of class folders")
    train.add_argument("data_dir", metavar="DATA_DIR",
                       help="class folders, or train/ (validation/, test/) of class folders; "
                            "with --labels, the image folder the table names")
    train.add_argument("--labels", metavar="FILE.csv",
                       help="a CSV labelling the images of DATA_DIR (e.g. filename,class_id); "
                            "predictions then come back in its labels")
    train.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    train.add_argument("--model",
                       help="backbone name, or 'auto' (best within --max-params); default "
                            "the recipe's")
    train.add_argument("--weights", default="default",
                       help="'default' (GluonCV's pretrained), a .params file, or 'none' "
                            "(random init)")
    train.add_argument("--fast", action="store_true",
                       help="head only on cached features (about a minute on a laptop CPU): "
                            "--recipe fast")
    train.add_argument("--recipe", choices=("fast", "default", "staged"),
                       help="how to train (gluonft.RECIPES; README lists their accuracy and "
                            "minutes): fast = --fast; default; staged, the mobilenet0.75 "
                            "fine-tune that --stages/--augment/--mix use")
    train.add_argument("--epochs", type=_positive_int, help="epochs (per stage without --fast)")
    train.add_argument("--stages", type=_stages, metavar="REGIME=EPOCHS,...",
                       help="fine-tuning stages instead of the default recipe, e.g. "
                            "head=4,last_k:4=4,full=6")
    train.add_argument("--head", metavar="linear|mlp:W[,W...]",
                       help="the new head: linear, or an MLP with BatchNorm, ReLU and dropout "
                            "(default mlp:1024,256, the recipes')")
    train.add_argument("--dropout", type=float, help="dropout of an mlp head (default 0.5)")
    train.add_argument("--augment", choices=("none", "light", "standard", "strong"),
                       help="augmentation of the fine-tuning stages (default: the recipe's)")
    train.add_argument("--albumentations", metavar="PIPELINE.json",
                       help="an albumentations pipeline saved with A.save(..., 'pipeline.json') "
                            "instead of --augment (the albumentations extra)")
    train.add_argument("--mix", choices=("none", "mixup", "cutmix"),
                       help="mix pairs of training images in the fine-tuning stages")
    train.add_argument("--feature-dtype", choices=("float32", "int8"), default="float32",
                       help="with --fast: compute the cached features through an int8 copy "
                            "of the backbone calibrated on training photos (faster on CPUs "
                            "with VNNI; see README for what it costs)")
    train.add_argument("--kvstore", choices=("dist_sync", "dist_device_sync"),
                       help="train as one worker of a job started by python -m gluonft.launch "
                            "(the recipe's batch is shared out; rank 0 writes MODEL_DIR)")
    train.add_argument("--image-size", type=_positive_int, help="input side in pixels")
    train.add_argument("--max-params", type=_positive_int, help="parameter budget")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--overwrite", action="store_true",
                       help="replace an existing model in MODEL_DIR")


def _add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="classify image files or folders")
    predict.add_argument("model_dir", metavar="MODEL_DIR")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    predict.add_argument("--json", action="store_true", help="one JSON list with probabilities")
    predict.add_argument("--tta", action="store_true", help="average with the mirrored image")
    predict.add_argument("--submission", metavar="SAMPLE.csv",
                         help="a competition's sample submission: write --out in its row "
                              "order and columns (IMAGE_OR_DIR: the one test folder)")
    predict.add_argument("--out", metavar="SUBMISSION.csv",
                         help="the submission file to write (with --submission)")
    predict.add_argument("--cam", metavar="DIR",
                         help="also write each photo with its Grad-CAM overlay for the "
                              "predicted class into DIR (PNG)")


def _add_evaluate(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="accuracy on a labelled folder of photos")
    evaluate.add_argument("model_dir", metavar="MODEL_DIR")
    evaluate.add_argument("data_dir", metavar="DATA_DIR",
                          help="the layout train takes; class names must match the model's")
    evaluate.add_argument("--split", default="test",
                          choices=("train", "validation", "test", "all"),
                          help="split of DATA_DIR (default test; 'all' for plain class folders)")
    evaluate.add_argument("--tta", action="store_true", help="average with the mirrored image")
    evaluate.add_argument("--labels", metavar="FILE.csv",
                          help="a CSV labelling the images of DATA_DIR (as train --labels); "
                               "every row is evaluated")
    evaluate.add_argument("--report", metavar="DIR",
                          help="write metrics.json, per_class.csv, predictions.csv, the "
                               "confusion matrix, the reliability diagram, the top losses "
                               "with Grad-CAM and report.html into DIR")


def _add_export(sub) -> None:
    export = sub.add_parser("export", help="export symbol JSON + params (and ONNX)")
    export.add_argument("model_dir", metavar="MODEL_DIR")
    export.add_argument("--out", metavar="DIR", help="output folder (default MODEL_DIR/export)")
    export.add_argument("--onnx", action="store_true", help="also write model.onnx (needs the "
                                                            "onnx extra)")
    export.add_argument("--overwrite", action="store_true", help="replace existing exports")


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="serve predictions over HTTP (needs the serve extra)")
    serve.add_argument("model_dir", metavar="MODEL_DIR")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--max-bytes", type=_positive_int, default=None,
                       help="largest accepted upload (default 10 MiB)")
    serve.add_argument("--max-pixels", type=_positive_int, default=None,
                       help="largest accepted image of any kind, width x height (default "
                            "100,000,000)")
    serve.add_argument("--max-decode-bytes", type=_positive_int, default=None,
                       help="the memory one request's decoding may take, estimated from the "
                            "image header (default 1 GiB: 16-bit PNGs up to 19 MP)")
    serve.add_argument("--threads", type=_positive_int, default=4,
                       help="request threads (predictions run one at a time)")
    serve.add_argument("--tta", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gluonft", description="Train, use and deploy image classifiers "
                                                 "fine-tuned from GluonCV backbones.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_serve(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"gluonft: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def _log_to_stderr():
    """gluonft's log lines (a run's estimated length; without a terminal, a line per epoch
    instead of progress bars) to this command's stderr while it runs. Removed afterwards: a
    handler left behind would keep writing to the stderr of a first call (a closed capture in
    a notebook or test) for every later one in the same process."""
    log = logging.getLogger("gluonft")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input).

    Example:
        >>> main(["predict", "models/clothes", "photo.jpg"])  # doctest: +SKIP
        photo.jpg	dress	0.9132
        0
    """
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as error:
        print(f"gluonft: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return int(done.code or 0)
    with _log_to_stderr(), warnings.catch_warnings():
        # gluonft's own warnings (unreadable photos ...) as one line each; library chatter off.
        warnings.simplefilter("ignore")
        warnings.filterwarnings("always", module=r"gluonft(\.|$)")
        warnings.filterwarnings("always", category=_gluonft_warnings())
        warnings.showwarning = _show_warning
        try:
            return _COMMANDS[args.command](args)
        except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                PermissionError, ImportError, UnknownBackbone, WeightsMismatch,
                WeightsUnavailable, FolderBusy, DistributedSetupError) as error:
            text = " ".join(str(error).split()) or type(error).__name__
            print(f"gluonft: error: {text}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130


def _gluonft_warnings():
    return UnreadableImagesWarning


def _train(args) -> int:
    weights = None if args.weights.lower() == "none" else args.weights
    where = (args.data_dir,) if args.labels is None else (args.labels, args.data_dir)
    augment = args.augment
    if args.albumentations is not None:
        if augment is not None:
            raise ValueError("--augment and --albumentations exclude each other")
        augment = load_pipeline(args.albumentations)
    clf = train_classifier(*where, model=args.model, weights=weights,
                           fast_train=args.fast, recipe=args.recipe,
                           max_params=args.max_params,
                           image_size=args.image_size, epochs=args.epochs, seed=args.seed,
                           out=args.out, overwrite=args.overwrite, stages=args.stages,
                           head=args.head, dropout=args.dropout, augment=augment, mix=args.mix,
                           feature_dtype=args.feature_dtype, kvstore=args.kvstore,
                           progress=sys.stderr.isatty())
    meta = clf.meta
    print(f"model: {clf.backbone}, {clf.params:,} parameters, {len(clf.classes)} classes, "
          f"{clf.image_size} px, head {meta['head']} ({meta['recipe']})")
    for key, label in (("val_accuracy", "validation accuracy"), ("test_accuracy",
                                                                 "test accuracy")):
        if key in meta:
            print(f"{label}: {meta[key]:.4f}")
    print(f"time: {meta['train_seconds']:.1f} s")
    if args.kvstore and not Cluster.join(args.kvstore).is_chief:
        print(f"saved by the worker of rank 0: {args.out}")
    else:
        print(f"saved: {args.out}")
    return 0


def _predict(args) -> int:
    if (args.submission is None) != (args.out is None):
        raise ValueError("--submission SAMPLE.csv and --out SUBMISSION.csv go together")
    if args.submission is not None and len(args.images) != 1:
        raise ValueError(f"--submission takes one test folder, got {len(args.images)}: "
                         f"{', '.join(args.images)}")
    clf = load_classifier(args.model_dir)
    if args.submission is not None:
        written = write_submission(clf, args.images[0], args.submission, args.out,
                                   tta=args.tta)
        print(f"wrote {written['path']}: {written['rows']} rows in the order of "
              f"{args.submission}")
        return 0
    if args.cam is not None:
        check_writable_folder(args.cam, what="--cam")
    rows = predict_files(clf, args.images, tta=args.tta)
    if not rows:
        raise ValueError(f"no readable image among {', '.join(args.images)}: nothing was "
                         f"predicted (expected JPEG, PNG, BMP, TIFF or WebP files)")
    if args.cam is not None:
        _write_cams(clf, rows, args.images, args.cam)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(f"{row['file']}\t{row['label']}\t{row['probability']:.4f}")
    return 0


def _evaluate(args) -> int:
    clf = load_classifier(args.model_dir)
    if args.report is None and args.labels is None:
        score = evaluate_folder(clf, args.data_dir, split=args.split, tta=args.tta)
        print(f"accuracy: {score['accuracy']:.4f} on {score['count']} images "
              f"({args.split}{', flip TTA' if args.tta else ''}); loss {score['loss']:.4f}")
        return 0
    if args.report is not None:
        check_writable_folder(args.report, what="--report")
    result = interpret(clf, args.data_dir, split=args.split, labels=args.labels, tta=args.tta)
    print(f"accuracy: {result.accuracy:.4f} on {len(result.labels)} images "
          f"({result.split}{', flip TTA' if args.tta else ''}); loss "
          f"{float(result.losses.mean()):.4f}; macro F1 {result.macro_f1:.4f}, weighted F1 "
          f"{result.weighted_f1:.4f}")
    if args.report is not None:
        written = write_evaluation_report(result, args.report, model=clf)
        print(f"report: {written['report.html']} (and {len(written) - 1} files beside it)")
    return 0


def _write_cams(clf, rows, images, folder) -> None:
    """Each predicted photo with the Grad-CAM overlay of its predicted class, as PNG."""
    os.makedirs(folder, exist_ok=True)
    paths = dict(image_paths(images))
    for row in rows:
        cam = grad_cam(clf, [paths[row["file"]]], target=row["index"])
        picture = cv2.cvtColor(overlay(cam.photos[0], cam.heatmaps[0]), cv2.COLOR_RGB2BGR)
        name = "__".join(Path(row["file"]).with_suffix("").parts[-3:]) + ".cam.png"
        ok, encoded = cv2.imencode(".png", picture)
        atomic_write(os.path.join(folder, name), lambda tmp: encoded.tofile(tmp))
        print(f"cam: {os.path.join(folder, name)}", file=sys.stderr)


def _export(args) -> int:
    clf = load_classifier(args.model_dir)
    out = Path(args.out) if args.out else Path(args.model_dir) / "export"
    check_writable_folder(out, what="--out")
    files = export_symbol(clf, out, overwrite=args.overwrite)
    written = [files["symbol"], files["params"], files["readme"]]
    if args.onnx:
        written.append(export_onnx(clf, out / "model.onnx", overwrite=args.overwrite))
    for path in written:
        print(path)
    return 0


def _serve(args) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    clf = load_classifier(args.model_dir)
    app = create_app(clf, max_bytes=args.max_bytes or DEFAULT_MAX_BYTES,
                     max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                     max_decode_bytes=args.max_decode_bytes or DEFAULT_MAX_DECODE_BYTES,
                     tta=args.tta)

    def ready(port):
        print(f"serving {clf.backbone} ({len(clf.classes)} classes) on http://{args.host}:"
              f"{port} (POST /predict, GET /health; waitress, {args.threads} threads); "
              f"Ctrl-C stops", flush=True)

    try:
        serve(app, host=args.host, port=args.port, threads=args.threads, ready=ready)
    except OSError as error:
        app.inference.shutdown()
        raise ValueError(f"cannot listen on {args.host}:{args.port}: "
                         f"{error.strerror or error}") from None
    return 0


_COMMANDS = {"train": _train, "predict": _predict, "evaluate": _evaluate, "export": _export,
             "serve": _serve}

if __name__ == "__main__":
    sys.exit(main())
