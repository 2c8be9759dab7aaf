"""The experiments of a CIFAR-10 grid, their names, and the loop that runs them.

An `Experiment` is one (model, regime, seed) with every setting that affects its result; its
`config` is what a rerun compares to decide that a finished experiment need not run again.
`run_grid` trains each experiment with `gluonft.fit` (checkpointing every epoch), tests it,
records it, and rewrites the output files after each one, so a run can be killed at any point
and resumed by running the same command again.

Output files, relative to the output folder (see `bench.outputs.OutputPaths`):
    results.json, results.csv        one record per experiment (gluonft.results)
    accuracy.png, accuracy.svg       the bar chart; accuracy.json: the data of its bars
    curves/<id>.png                  train/val accuracy and loss per epoch
    best.json, best.params           the best model's card and parameters
    checkpoints/<id>.*               epoch checkpoints of unfinished experiments
    superseded.json                  earlier records replaced by a rerun (nothing is lost)
"""
from __future__ import annotations

import gc
import json
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import gluonft
from gluonft import plots
from gluonft.baseline import lab1_cnn
from gluonft.batches import training_batch
from gluonft.checkpoint import remove_checkpoint
from gluonft.distributed import DIST_KVSTORES, Cluster
from gluonft.errors import one_line
from gluonft.figures import confusion_figure, gallery_figure
from gluonft.fileio import atomic_write_json
from gluonft.gradcam import grad_cam, overlay
from gluonft.interpretation import Interpretation
from gluonft.predict import scores
from gluonft.regimes import regime_title
from gluonft.results import ExperimentRecord, environment, pretraining_title
from gluonft.settings import MOMENTUM_OPTIMIZERS, TrainSettings

from .outputs import (
    OutputPaths,
    finish_experiment,
    read_previous,
    restore_best,
    supersede,
    update_best,
    write_outputs,
)
from .presets import BASELINE_MODEL, TrainingFields

__all__ = ["Experiment", "Data", "GridResult", "experiment_id",
           "effective_image_size", "run_grid", "run_experiment", "build_net"]

Log = Callable[[str], None]


def experiment_id(model: str, regime: str, seed: int) -> str:
    """A stable, readable, file-name-safe id: ``mobilenet0.75-last_k2-s0``.

    Example:
        >>> experiment_id("mobilenet0.75", "last_k:2", 0)
        'mobilenet0.75-last_k2-s0'
    """
    return f"{model}-{regime.replace(':', '')}-s{seed}"


def effective_image_size(family, requested: Optional[int]) -> int:
    """The input side an experiment uses: ``requested``, never above the backbone's
    pretrained size (so CIFAR models stay at 32 px), the pretrained size when None, and always
    the pretrained size for fixed-size backbones (VGG, AlexNet)."""
    if family.fixed_size or requested is None:
        return family.input_size
    return min(int(requested), family.input_size)


@dataclass(frozen=True)
class Data:
    """The images of a grid: train (minus the validation split), validation, test."""
    train: "gluonft.datasets.ImageSet"
    val: Optional["gluonft.datasets.ImageSet"]
    test: "gluonft.datasets.ImageSet"
    description: Dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment(TrainingFields):
    """One cell of the grid with everything that affects its result.

    Attributes:
        id: see `experiment_id`. ``kind``: ``"transfer"`` or ``"baseline"``.
        label: display name (the baseline's name).
        weights: ``"default"`` (GluonCV's pretrained file), a path, or None (random init).
        training: the `gluonft.TrainSettings` (epochs, batch, optimizer, schedule ...),
            readable as attributes of the experiment (``experiment.epochs``).
        lr, image_size: this experiment's learning rate and input side.
        recorded_accuracy: for a recorded baseline: the given result; nothing is trained.
        data: `Data.description` (root, subset sizes, seed, image counts).
        kvstore, workers: `fit`'s kvstore and, for a distributed one, the job's workers
            (``batch_size`` is then per worker).
    """
    id: str
    model: str
    regime: str
    seed: int
    kind: str = "transfer"
    label: str = ""
    weights: Optional[str] = "default"
    training: TrainSettings = TrainSettings()
    lr: float = 0.01
    image_size: int = 32
    classes: int = 10
    recorded_accuracy: Optional[float] = None
    data: Dict[str, object] = field(default_factory=dict)
    head: str = "linear"
    dropout: Optional[float] = None
    kvstore: Optional[str] = None
    workers: int = 1

    @property
    def config(self) -> Dict[str, object]:
        """What identifies the experiment's result: equal configs, equal experiments."""
        if self.recorded_accuracy is not None:
            return {"kind": self.kind, "label": self.label,
                    "recorded_accuracy": self.recorded_accuracy}
        t = self.training
        config = {
            "model": self.model, "regime": self.regime, "seed": self.seed, "kind": self.kind,
            "weights": self.weights, "epochs": t.epochs, "batch_size": t.batch_size,
            "lr": self.lr, "optimizer": t.optimizer, "momentum": t.momentum, "wd": t.wd,
            "schedule": t.schedule_obj.to_dict(), "image_size": self.image_size,
            "classes": self.classes, "augment": asdict(gluonft.Augment()),
            "data": dict(self.data)}
        # Settings added after the first results, only when on: the results of runs from
        # before they existed keep their configs, and are not trained again.
        defaults = TrainSettings()
        for name in ("label_smoothing", "mix", "mix_alpha", "mix_prob"):
            if getattr(t, name) != getattr(defaults, name):
                config[name] = getattr(t, name)
        if self.head != "linear" and self.kind == "transfer":
            config.update(gluonft.heads.parse_head(self.head, dropout=self.dropout).to_dict())
        if t.amp:
            config["amp"] = "float16"
        if self.kvstore in DIST_KVSTORES:  # batch_size is per worker
            config.update(kvstore=self.kvstore, workers=self.workers)
        return config


# --- one experiment ---------------------------------------------------------------------------

def build_net(experiment: Experiment, *, ctx):
    """The net of an experiment, initialised as its ``weights`` say, seeded by its seed."""
    if experiment.model == BASELINE_MODEL:
        return lab1_cnn(classes=experiment.classes, ctx=ctx, seed=experiment.seed)
    # The experiment's seed initialises the new head (and everything for random init), so
    # repeats over seeds start from different heads and the spread they show is real.
    return gluonft.load_backbone(experiment.model, classes=experiment.classes,
                                 weights=experiment.weights, ctx=ctx, seed=experiment.seed,
                                 head=experiment.head, dropout=experiment.dropout)


def _pretrained_on(net, plan) -> str:
    """Where the starting weights were trained: the family's dataset, or "random"."""
    if plan.reinitialised or net.weights_source.kind == "random":
        return "random"
    return net.family.pretrained_on


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _modified_layers(plan, net) -> Tuple[str, ...]:
    head = f"output (new {net.head_spec.describe(net.classes)})"
    blocks = tuple(plan.trainable_blocks)
    if plan.reinitialised:
        blocks = tuple(f"{b} [re-initialised]" for b in blocks)
    return blocks + (head,)


def _settings_lines(experiment: Experiment, plan, modified: Sequence[str]) -> List[str]:
    opt = f"{experiment.optimizer} (lr {experiment.lr:g}, " + (
        f"momentum {experiment.momentum:g}, " if experiment.optimizer in MOMENTUM_OPTIMIZERS
        else "") + f"wd {experiment.wd:g})"
    shown = list(modified) if len(modified) <= 6 else (
        list(modified[:2]) + [f"... {len(modified) - 4} more ..."] + list(modified[-2:]))
    return [
        f"training: optimizer {opt}; schedule {experiment.schedule} (warm-up "
        f"{experiment.warmup_epochs:g} epochs); {_plural(experiment.epochs, 'epoch')}; batch "
        f"{experiment.batch_size}; image {experiment.image_size}x{experiment.image_size} px",
        f"regime: {plan.describe()}",
        "modified layers: " + ", ".join(shown),
        f"augmentation: {gluonft.Augment()}" + (
            f"; {experiment.training.mix_obj.kind} (alpha {experiment.training.mix_obj.alpha:g},"
            f" {experiment.training.mix_obj.prob:.0%} of the batches)"
            if experiment.training.mix_obj else "; no mixing"),
    ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _failed_record(experiment: Experiment, error: BaseException, *, started: str, begin: float,
                   ctx) -> ExperimentRecord:
    return ExperimentRecord(
        id=experiment.id, model=experiment.model, regime=experiment.regime,
        seed=experiment.seed, kind=experiment.kind, status="failed", label=experiment.label,
        error=one_line(error), traceback="".join(traceback.format_exception(
            type(error), error, error.__traceback__)),
        config=experiment.config, image_size=experiment.image_size,
        wall_seconds=time.perf_counter() - begin, environment=environment(devices=ctx),
        started=started, finished=_now())


def run_experiment(experiment: Experiment, *, data: Data, ctx, checkpoint: str,
                   summary_rows: int = 12, progress: bool = True, writer: bool = True,
                   log: Log = print) -> Tuple[ExperimentRecord, Optional[object]]:
    """Build, train, test and record one experiment; a failure is recorded, not raised.

    Args:
        experiment: what to run.
        data: the images.
        ctx: list of contexts.
        checkpoint: path prefix of the epoch checkpoints (``fit(checkpoint=...)``); an existing
            checkpoint of the same experiment is resumed, one of another configuration removed.
        summary_rows: rows of the architecture table shown (the rest elided).
        progress: tqdm bars per epoch.
        writer: False for the workers of a distributed job other than worker 0: they train
            and score alike, resume from worker 0's checkpoint, and write nothing.
        log: where the lines go.

    Returns:
        (record, net): the trained net for an ``ok`` record, else None.
    """
    started, begin = _now(), time.perf_counter()
    if experiment.recorded_accuracy is not None:
        return _recorded(experiment, ctx=ctx, started=started, log=log), None
    if writer:
        _drop_other_checkpoint(experiment, checkpoint, log=log)
    try:
        net = build_net(experiment, ctx=ctx)
        plan = gluonft.apply_regime(net, experiment.regime, seed=experiment.seed)
        arch = gluonft.summary(net, image_size=experiment.image_size, ctx=ctx[0])
        modified = _modified_layers(plan, net)
        _log_setup(experiment, net, plan, arch, modified, summary_rows=summary_rows, log=log)
        if writer:
            atomic_write_json(checkpoint + ".experiment.json", experiment.config)
        distributed = experiment.kvstore in DIST_KVSTORES
        if distributed:  # every worker reads the checkpoint as worker 0 left it
            Cluster.join(experiment.kvstore).barrier()
        epochs = _EpochLog(experiment.epochs, log)
        history = gluonft.fit(
            net, data.train, data.val, lr=experiment.lr, image_size=experiment.image_size,
            ctx=ctx, seed=experiment.seed, callbacks=[epochs], checkpoint=checkpoint,
            progress=progress, kvstore=experiment.kvstore, **experiment.training.fit_kwargs())
        resumed = len(history.epochs) - len(epochs.trained)
        if resumed and not epochs.trained:
            log(f"resumed from the checkpoint of epoch {resumed}: training was complete")
        test, test_proba = _test(net, experiment, data, ctx=ctx, log=log)
        metrics = {} if distributed else _split_metrics(net, experiment, data, test_proba,
                                                        ctx=ctx)
        record = ExperimentRecord(
            id=experiment.id, model=experiment.model, regime=experiment.regime,
            seed=experiment.seed, kind=experiment.kind, status="ok", label=experiment.label,
            config=experiment.config, test_accuracy=test["accuracy"], test_loss=test["loss"],
            test_count=test["count"], params_total=arch.total_params,
            params_trainable=arch.trainable_params, modified_layers=modified,
            plan=dict(plan.to_dict(), description=plan.describe()),
            initialisation=net.weights_source.to_dict(), training=history.settings,
            history=history.epochs, summary=arch.to_dict(), image_size=experiment.image_size,
            wall_seconds=time.perf_counter() - begin, resumed_from_epoch=resumed,
            environment=environment(devices=ctx), started=started, finished=_now(),
            pretrained_on=_pretrained_on(net, plan), **metrics, **_throughput(history))
        return record, net
    except Exception as error:  # the grid goes on; the record says why (traceback included)
        record = _failed_record(experiment, error, started=started, begin=begin, ctx=ctx)
        log(f"FAILED: {record.error}")
        return record, None


def _recorded(experiment: Experiment, *, ctx, started: str, log: Log) -> ExperimentRecord:
    """The record of a baseline result given by the user: nothing is trained."""
    log(f"recorded result {experiment.label!r}: test accuracy "
        f"{100 * experiment.recorded_accuracy:.1f}% (given with --baseline-acc; nothing "
        f"trained)")
    return ExperimentRecord(
        id=experiment.id, model=experiment.model, regime=experiment.regime,
        seed=experiment.seed, kind=experiment.kind, status="recorded",
        label=experiment.label, config=experiment.config,
        test_accuracy=experiment.recorded_accuracy, initialisation={
            "kind": "recorded", "description": "recorded result, not trained here"},
        environment=environment(devices=ctx), started=started, finished=_now())


def _drop_other_checkpoint(experiment: Experiment, checkpoint: str, *, log: Log) -> None:
    """A checkpoint of another configuration of this experiment id must not be resumed."""
    meta = checkpoint + ".experiment.json"
    if os.path.exists(meta):
        with open(meta) as f:
            saved = json.load(f)
        if saved != json.loads(json.dumps(experiment.config)):
            log("a checkpoint of another configuration of this experiment exists: removed")
            remove_checkpoint(checkpoint)


def _log_setup(experiment: Experiment, net, plan, arch, modified, *, summary_rows: int,
               log: Log) -> None:
    log(arch.to_table(max_rows=summary_rows))
    log(f"pretrained on: {pretraining_title(_pretrained_on(net, plan))}")
    log(f"initialisation: {net.weights_source.describe()}"
        + ("; backbone then re-initialised at random (regime scratch)"
           if plan.reinitialised and net.weights_source.kind != "random" else ""))
    for line in _settings_lines(experiment, plan, modified):
        log(line)


class _EpochLog(gluonft.Callback):
    """One line per trained epoch; says so when the first epochs came from a checkpoint."""

    def __init__(self, epochs: int, log: Log):
        self.epochs, self.log = epochs, log
        self.trained: List[int] = []

    def on_epoch_end(self, epoch, logs):
        if not self.trained and epoch > 1:
            self.log(f"resumed from the checkpoint of epoch {epoch - 1}: epochs 1..{epoch - 1} "
                     f"were not trained again")
        self.trained.append(epoch)
        val = (f", val loss {logs['val_loss']:.3f} acc {100 * logs['val_acc']:.1f}%"
               if "val_acc" in logs else "")
        self.log(f"epoch {epoch}/{self.epochs}: train loss {logs['train_loss']:.3f} acc "
                 f"{100 * logs['train_acc']:.1f}%{val}; lr {logs['lr']:.2g}; "
                 f"{logs['seconds']:.1f} s, {logs['images_per_s']:.0f} img/s")


def _test(net, experiment: Experiment, data: Data, *, ctx, log: Log):
    """(test scores, test probabilities): one prediction pass serves both the scores and the
    per-class figures (`_split_metrics`); a distributed worker scores its share (no
    probabilities: None)."""
    if experiment.kvstore in DIST_KVSTORES:
        proba = None
        test = gluonft.evaluate(net, data.test, ctx=ctx, batch_size=experiment.batch_size,
                                image_size=experiment.image_size, kvstore=experiment.kvstore)
    else:  # what evaluate computes, keeping the probabilities
        proba = gluonft.predict_proba(net, data.test, ctx=ctx, batch_size=experiment.batch_size,
                                      image_size=experiment.image_size)
        test = scores(proba, data.test.labels)
    if not math.isfinite(test["loss"]):
        raise gluonft.TrainingDiverged(
            f"the test loss is {test['loss']}: the trained weights are broken (non-finite "
            f"outputs); the learning rate ({experiment.lr:g}) is the likely cause")
    log(f"test accuracy: {100 * test['accuracy']:.2f}% ({test['count']} images), loss "
        f"{test['loss']:.3f}")
    return test, proba


def _split_metrics(net, experiment: Experiment, data: Data, test_proba, *,
                   ctx) -> Dict[str, dict]:
    """{"test_metrics", "val_metrics"}: confusion matrix, per-class and F1 figures of the final
    model (`gluonft.Interpretation.summary`): the test figures from the test pass's
    probabilities, the validation ones from one more pass."""
    out = {}
    for key, split in (("test_metrics", data.test), ("val_metrics", data.val)):
        if split is None or len(np.unique(split.labels)) < 2:
            continue
        proba = test_proba if key == "test_metrics" else gluonft.predict_proba(
            net, split, ctx=ctx, batch_size=experiment.batch_size,
            image_size=experiment.image_size)
        out[key] = Interpretation(tuple(split.classes), split.labels, proba,
                                  tuple(f"image {i}" for i in range(len(split))),
                                  split=key.split("_")[0]).summary()
    return out


def _throughput(history) -> Dict[str, Optional[float]]:
    """Time in training epochs (resumed ones included) and images/s over them."""
    seconds = sum(e["seconds"] for e in history.epochs)
    images = sum(e["images_per_s"] * e["seconds"] for e in history.epochs)
    return {"train_seconds": seconds, "images_per_s": images / seconds if seconds else None}


# --- the grid ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridResult:
    """What `run_grid` produced: the records in grid order and the best model's card."""
    records: List[ExperimentRecord]
    best_card: Optional[dict]


# Test photos in the best model's Grad-CAM gallery: the first of each class, up to this many.
CAM_GALLERY = 8


def _write_best_figures(paths: OutputPaths, net, experiment: Experiment, data: Data,
                        record: ExperimentRecord, *, log: Log) -> None:
    """best_confusion.png (the best model's test confusion matrix) and best_cam.png (Grad-CAM
    of test photos for their true class; transfer nets only). A figure that fails is a warning:
    the results are written already."""
    try:
        metrics = record.test_metrics or {}
        if metrics.get("confusion_matrix"):
            plots.save_figure(confusion_figure(
                np.array(metrics["confusion_matrix"]), metrics["classes"],
                title=f"{record.id}: test confusion matrix"), paths.best_confusion)
        if not isinstance(net, gluonft.TransferNet):
            return
        test = data.test
        rows = [int(np.flatnonzero(test.labels == c)[0]) for c in np.unique(test.labels)]
        rows = rows[:CAM_GALLERY]
        cams = grad_cam(net, test.images[rows], target=[int(test.labels[i]) for i in rows],
                        image_size=experiment.image_size)
        proba = cams.probabilities
        items = [(overlay(photo, heat), f"{test.classes[test.labels[i]]} "
                  f"(p {proba[k, test.labels[i]]:.2f})")
                 for k, (i, photo, heat) in enumerate(zip(rows, cams.photos, cams.heatmaps))]
        plots.save_figure(gallery_figure(items, title=f"{record.id}: where it sees each test "
                                                      f"photo's class (Grad-CAM)"),
                          paths.best_cam)
        log(f"wrote {os.path.basename(paths.best_confusion)}, "
            f"{os.path.basename(paths.best_cam)}")
    except Exception as error:  # figures must not cost the results
        log(f"warning: the best model's figures could not be drawn: {one_line(error)}")


def _write_training_strip(paths: OutputPaths, experiments: Sequence[Experiment], data: Data,
                          *, log: Log) -> None:
    """augmentation.png: eight training images as the transfer experiments' nets see them."""
    transfer = [e for e in experiments if e.kind == "transfer"]
    if not transfer or os.path.exists(paths.augmentation):
        return
    first = transfer[0]
    family = gluonft.backbones.family_of(first.model)
    images, captions = training_batch(
        data.train, augment=gluonft.Augment(), mix=first.training.mix_obj,
        image_size=first.image_size, mean=family.mean, std=family.std, seed=first.seed)
    mix = first.training.mix_obj
    title = (f"what the nets train on: {gluonft.Augment()}"
             + (f", {mix.kind} (alpha {mix.alpha:g})" if mix else "")
             + f", {first.image_size} px")
    plots.save_figure(plots.image_strip(images, captions, title=title), paths.augmentation)
    log(f"wrote {os.path.basename(paths.augmentation)}: 8 training images as augmented")


def run_grid(experiments: Sequence[Experiment], *, data: Data, out_dir: str, ctx,
             summary_rows: int = 12, progress: bool = True, keep_checkpoints: bool = False,
             title: str = "CIFAR-10 transfer learning", writer: bool = True,
             metric: str = "accuracy", log: Log = print) -> GridResult:
    """Run every experiment not already finished in ``out_dir``; write the files after each.

    A record in ``out_dir/results.json`` with the same id and an equal config and status ok or
    recorded is kept and its experiment skipped; an interrupted experiment resumes from its
    epoch checkpoint; records that a rerun replaces, or that the grid no longer holds, move to
    ``superseded.json``.

    Args:
        experiments: the grid, in order.
        data: the images.
        out_dir: the output folder (created).
        ctx: list of contexts.
        summary_rows: rows of each architecture table.
        progress: tqdm bars.
        keep_checkpoints: keep each finished experiment's last checkpoint (its parameters)
            instead of removing it.
        title: the chart's title.
        writer: False for the workers other than worker 0: they read ``out_dir`` to skip
            and resume what worker 0 finished, and write nothing.
        metric: what "best" is chosen on (`gluonft.results.METRICS`), on validation images.
        log: where the lines go.

    Returns:
        A `GridResult`: the records of the grid, in grid order, and best.json's card.
    """
    paths = OutputPaths(out_dir)
    if writer:
        os.makedirs(out_dir, exist_ok=True)
    ids = [e.id for e in experiments]
    if len(set(ids)) != len(ids):
        raise ValueError(f"experiment ids repeat: {ids}")
    previous = {r.id: r for r in read_previous(paths)}
    gone = [r for i, r in previous.items() if i not in ids]
    if gone and writer:
        log(f"{len(gone)} earlier records are not in this grid; moved to superseded.json: "
            + ", ".join(r.id for r in gone))
        supersede(paths, gone)
    current: Dict[str, ExperimentRecord] = {i: r for i, r in previous.items() if i in ids}

    def ordered():
        return [current[i] for i in ids if i in current]

    if writer:
        write_outputs(paths, ordered(), title=title, log=log)
        _write_training_strip(paths, experiments, data, log=log)
    for number, experiment in enumerate(experiments, 1):
        log("")
        what = (regime_title(experiment.regime) if experiment.kind == "transfer"
                else "baseline")
        log(f"=== [{number}/{len(experiments)}] {experiment.id}: {experiment.label} ({what}) ===")
        old = current.get(experiment.id)
        if old is not None and old.status in ("ok", "recorded") \
                and old.config == json.loads(json.dumps(experiment.config)):
            log(f"skipped: already finished in this folder with the same configuration "
                f"({old.finished}); test accuracy {100 * old.test_accuracy:.2f}%")
            # A run killed between recording an experiment and tidying up after it left
            # these undone: do them now (the best model's files from its last checkpoint).
            if writer:
                restore_best(paths, ordered(), old, log=log, metric=metric)
                finish_experiment(paths, old, keep_checkpoints=keep_checkpoints, only_missing=True)
            continue
        record, net = run_experiment(experiment, data=data, ctx=ctx,
                                     checkpoint=paths.checkpoint(experiment.id),
                                     summary_rows=summary_rows, progress=progress,
                                     writer=writer, log=log)
        current[experiment.id] = record
        if writer:
            if old is not None:
                supersede(paths, [old])
            write_outputs(paths, ordered(), title=title, log=log)
            # The best model's parameters are saved before its checkpoint is removed, so that
            # a kill in between leaves them recoverable (`restore_best`).
            card = update_best(paths, ordered(), record,
                               net.save_parameters if net is not None else None, log=log,
                               metric=metric)
            if net is not None and card is not None and card.get("id") == record.id:
                _write_best_figures(paths, net, experiment, data, record, log=log)
            finish_experiment(paths, record, keep_checkpoints=keep_checkpoints)
        del net
        gc.collect()
        if record.status == "failed" and experiment.kvstore in DIST_KVSTORES:
            # The other workers may be waiting for this one inside the failed experiment:
            # the grid ends (exit 1) and the launcher stops them; a rerun retries it.
            log("a failed experiment ends a distributed grid; run the job again to retry it")
            break
    return GridResult(ordered(), update_best(paths, ordered(), None, None, log=log,
                                             metric=metric) if writer else None)
