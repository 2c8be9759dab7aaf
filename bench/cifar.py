"""`python -m bench.cifar`: the CIFAR-10 transfer-learning grid.

Trains every (model x regime x seed) of the grid and the lab-1 baseline, prints per
experiment the architecture summary, the initialisation, the training settings and the test
accuracy, and writes results, the accuracy chart, training curves and the best model's card
and parameters into ``--out``. Rerunning with the same ``--out`` skips finished experiments
and resumes an interrupted one from its last epoch checkpoint.

Examples:
    python -m bench.cifar                                  # the default grid, preset by device
    python -m bench.cifar --preset smoke --models mobilenet0.75 --regimes head \\
        --weights mobilenet0.75=../shared/weights/mobilenet0.75-imagenet.params \\
        --data-root ../shared/data/cifar-10-subset --out runs/smoke
    python -m bench.cifar --regimes head,last_k:2,full,scratch --seeds 0,1,2
    python -m bench.cifar --baseline-acc 0.72 --baseline-name "Lab 1 CNN"

Exit codes: 0 every experiment finished; 1 some failed (listed at the end, recorded in
results.json with the reason); 2 bad input (one line on stderr, nothing trained).
"""
from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Dict, List, Optional, Sequence, Tuple

try:  # importing MXNet takes seconds; Ctrl-C then is an answer, not a traceback
    import gluonft
    import mxnet as mx
    from gluonft import UnknownBackbone, list_backbones
    from gluonft.argtypes import non_negative_float as _non_negative_float
    from gluonft.argtypes import positive_int as _positive_int
    from gluonft.backbones import MAX_IMAGE_SIZE, check_image_size, family_of
    from gluonft.datasets import DatasetNotFound, cifar10
    from gluonft.datasets.cifar10 import default_root
    from gluonft.distributed import DIST_KVSTORES, KVSTORES, Cluster, DistributedSetupError
    from gluonft.fileio import (FolderBusy, FolderLock, atomic_write_json,
                                check_writable_folder, remove_stale_temporaries)
    from gluonft.heads import parse_head
    from gluonft.regimes import REGIMES, parse_regime
    from gluonft.results import environment, one_line, read_results, results_table
    from gluonft.train import TrainSettings

    from .grid import (Data, Experiment, OutputPaths, effective_image_size, experiment_id,
                       run_grid)
    from .presets import (BASELINE_MODEL, BASELINE_NAME, CPU_MODELS, DEFAULT_MODELS,
                          DEFAULT_REGIMES, PRESETS, Preset, TrainingFields, preset_for_devices)
    from .report import write_report
except KeyboardInterrupt:
    print("bench.cifar: interrupted while starting; nothing was run", file=sys.stderr)
    sys.exit(130)

__all__ = ["CifarConfig", "UsageError", "parse_config", "check_config", "load_data",
           "plan_experiments", "main", "PROG"]

PROG = "bench.cifar"


class UsageError(ValueError):
    """Bad command-line input: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage block and exits; the CLI reports one line instead.
    def error(self, message):
        raise UsageError(message)


@dataclass(frozen=True)
class CifarConfig(TrainingFields):
    """Everything a grid run needs, after the preset is applied and the flags override it.

    Attributes:
        preset: the preset's name; ``explicit``: the settings given as flags (they override
            the preset's values). Other attributes: see ``python -m bench.cifar --help``.
        training: the `gluonft.TrainSettings` of the transfer experiments, readable as
            attributes of the config (``config.epochs``).
        lr: learning rate per regime name (``head``, ``last_k``, ``full``, ``scratch``).
        baseline: ``"train"`` (the lab-1 CNN runs in the grid), ``"recorded"`` (a given
            accuracy) or ``"none"``.
        weights: model name -> local weights file.
        head, dropout: the new head of the transfer experiments (`gluonft.heads`).
    """
    preset: str
    models: Tuple[str, ...]
    regimes: Tuple[str, ...]
    seeds: Tuple[int, ...]
    training: TrainSettings
    lr: Dict[str, float]
    image_size: Optional[int]
    train_per_class: Optional[int]
    test_per_class: Optional[int]
    val_fraction: float
    data_seed: int
    baseline: str
    baseline_name: str
    baseline_acc: Optional[float]
    baseline_epochs: int
    baseline_lr: float
    weights: Dict[str, str] = field(default_factory=dict)
    data_root: Optional[str] = None
    download: bool = False
    ctx: Tuple[str, ...] = ("cpu(0)",)
    out: str = ""
    keep_checkpoints: bool = False
    summary_rows: int = 12
    progress: bool = True
    explicit: Tuple[str, ...] = ()
    head: str = "linear"
    dropout: Optional[float] = None
    kvstore: Optional[str] = None


# --- argv -> config ---------------------------------------------------------------------------

# "all" and "native" stay words here (None would read as "flag not given"); the config
# turns them into None.
def _count_or_all(text: str):
    return "all" if text.strip().lower() == "all" else _positive_int(text)


def _size_or_native(text: str):
    if text.strip().lower() == "native":
        return "native"

    value = _positive_int(text)
    if value > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_IMAGE_SIZE} px (or native), "
                                         f"got {text!r}")
    return value


def _none_for_word(value):
    return None if value in ("all", "native") else value


def _comma_list(text: str, what: str) -> List[str]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise UsageError(f"{what} {text!r}: expected a comma-separated list without empty items")
    if len(set(items)) != len(items):
        raise UsageError(f"{what} {text!r} lists an item twice")
    return items


def _add_setting_flag(group, setting) -> None:
    """``--<name>`` for a `TrainSettings` field: its help, its type's parser, its choices."""
    flag = "--" + setting.name.replace("_", "-")
    meta = dict(setting.metadata)
    if setting.type in (bool, "bool"):
        group.add_argument(flag, action="store_true", default=None, help=meta["help"])
        return
    parse = {int: _positive_int, "int": _positive_int, float: _non_negative_float,
             "float": _non_negative_float}.get(setting.type, str)
    group.add_argument(flag, type=parse, choices=meta.get("choices"), help=meta["help"])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every default None: unset flags take the preset's value)."""
    p = _Parser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Presets:\n" + "\n".join(f"  {n:6s} {p.description}"
                                                for n, p in PRESETS.items()))
    grid = p.add_argument_group("grid")
    grid.add_argument("--preset", choices=sorted(PRESETS), help="full (default with a GPU), "
                      "cpu (default without), smoke (pipeline check)")
    grid.add_argument("--models", help=f"comma-separated backbones (default: "
                      f"{','.join(CPU_MODELS)} on a CPU, {','.join(DEFAULT_MODELS)} with the "
                      f"full preset); see gluonft.list_backbones()")
    grid.add_argument("--regimes", help=f"comma-separated of head, last_k:K, full, scratch "
                      f"(default: {','.join(DEFAULT_REGIMES)})")
    grid.add_argument("--seeds", help="comma-separated seeds; several repeat every experiment "
                      "(mean and error bars in the chart) (default: 0)")
    grid.add_argument("--weights", action="append", metavar="NAME=PATH",
                      help="local weights file for a model (repeatable or comma-separated), "
                           "for machines that cannot download GluonCV's")
    train = p.add_argument_group("training (defaults from the preset)")
    for setting in fields(TrainSettings):  # one flag per field: a new setting needs no edit here
        _add_setting_flag(train, setting)
    train.add_argument("--lr", help="learning rate for every regime (0.01), or per regime "
                       "(head=0.05,full=0.01)")
    train.add_argument("--head", metavar="linear|mlp:W[,W...]",
                       help="the new head of the transfer experiments (default linear), e.g. "
                            "mlp:512 (Dense, BatchNorm, ReLU, dropout, Dense)")
    train.add_argument("--dropout", type=float, help="dropout of an mlp head (default 0.5)")
    train.add_argument("--image-size", type=_size_or_native, metavar="PX|native",
                       help="input side for backbones pretrained larger (CIFAR models and "
                            "the baseline stay at 32); native: each backbone's own size")
    data = p.add_argument_group("data")
    data.add_argument("--data-root", help="folder with CIFAR-10 (cifar-10-batches-py/ or "
                      "-bin/); default ~/.mxnet/datasets/cifar10, downloaded when absent")
    data.add_argument("--download", action="store_true", default=None,
                      help="download CIFAR-10 into --data-root when it is not there")
    data.add_argument("--train-per-class", type=_count_or_all, metavar="N|all")
    data.add_argument("--test-per-class", type=_count_or_all, metavar="N|all")
    data.add_argument("--val-fraction", type=_non_negative_float,
                      help="share of the training images held out for validation curves")
    base = p.add_argument_group("baseline")
    base.add_argument("--baseline-acc", type=float, metavar="ACC",
                      help="use this recorded test accuracy (e.g. 0.72) instead of training "
                           "the lab-1 CNN")
    base.add_argument("--baseline-name", help=f"the baseline's name (default {BASELINE_NAME!r})")
    base.add_argument("--no-baseline", action="store_true", default=None)
    base.add_argument("--baseline-epochs", type=_positive_int)
    base.add_argument("--baseline-lr", type=float)
    run = p.add_argument_group("run")
    run.add_argument("--ctx", help="cpu, gpu (all GPUs), gpu0,gpu1 or cpu0,cpu1 (default: every "
                     "GPU, else cpu)")
    run.add_argument("--kvstore", choices=[k for k in KVSTORES if k],
                     help="how gradients are combined; dist_sync (dist_device_sync, "
                          "dist_async): this process is one worker of a job started by "
                          "python -m gluonft.launch, --batch-size is per worker, and worker 0 "
                          "writes --out")
    run.add_argument("--out", help="output folder (default runs/cifar10-<timestamp>); rerun "
                     "with the same folder to resume")
    run.add_argument("--keep-checkpoints", action="store_true", default=None,
                     help="keep every finished experiment's parameters in checkpoints/")
    run.add_argument("--summary-rows", type=int, metavar="N",
                     help="rows of each architecture table (default 12)")
    run.add_argument("--no-progress", action="store_true", default=None,
                     help="no progress bars")
    return p


def _parse_lr(text: Optional[str], preset: Preset) -> Dict[str, float]:
    lr = dict(preset.lr)
    if text is None:
        return lr
    if "=" not in text:
        value = _float_value(text, "--lr")
        return {name: value for name in REGIMES}
    for item in _comma_list(text, "--lr"):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in REGIMES:
            raise UsageError(f"--lr {text!r}: unknown regime {name!r}; expected "
                             f"{', '.join(REGIMES)}")
        lr[name] = _float_value(value, "--lr")
    return lr


def _float_value(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a positive number") from None
    if not 0 < value < math.inf:
        raise UsageError(f"{flag} {text!r}: expected a positive finite number")
    return value


def _parse_weights(values: Optional[Sequence[str]]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for value in values or ():
        for item in value.split(","):
            name, sep, path = item.partition("=")
            name, path = name.strip(), path.strip()
            if not sep or not name or not path:
                raise UsageError(f"--weights {item!r}: expected NAME=PATH, e.g. "
                                 f"mobilenet0.75=weights/mobilenet0.75-imagenet.params")
            if name in out:
                raise UsageError(f"--weights gives {name!r} twice")
            out[name] = os.path.abspath(os.path.expanduser(path))
    return out


def _parse_ctx(text: Optional[str]) -> Tuple[str, ...]:
    try:
        gpus = mx.context.num_gpus()
    except mx.MXNetError:
        gpus = 0
    if text is None:
        return tuple(str(c) for c in ([mx.gpu(i) for i in range(gpus)] or [mx.cpu()]))
    out = []
    for item in _comma_list(text, "--ctx"):
        item = item.lower()
        if item == "cpu":
            out.append("cpu(0)")
        elif item.startswith("cpu") and item[3:].isdigit():
            # several CPU contexts: the multi-device code path (one CPU computes them all)
            out.append(f"cpu({int(item[3:])})")
        elif item == "gpu":
            if not gpus:
                raise UsageError("--ctx gpu: MXNet sees no GPU here; use --ctx cpu")
            out += [f"gpu({i})" for i in range(gpus)]
        elif item.startswith("gpu") and item[3:].isdigit():
            index = int(item[3:])
            if index >= gpus:
                raise UsageError(f"--ctx {item}: MXNet sees {gpus} GPU(s)"
                                 + (f" (gpu0..gpu{gpus - 1})" if gpus else "; use --ctx cpu"))
            out.append(f"gpu({index})")
        else:
            raise UsageError(f"--ctx {item!r}: expected cpu, cpuN, gpu, or gpuN "
                             f"(e.g. gpu0,gpu1)")
    if len(set(out)) != len(out):
        raise UsageError(f"--ctx {text!r} names a device twice")
    return tuple(out)


def _contexts(names: Sequence[str]) -> list:
    return [mx.cpu(int(c[4:-1])) if c.startswith("cpu") else mx.gpu(int(c[4:-1]))
            for c in names]


def config_contexts(config: CifarConfig) -> list:
    """The config's devices as MXNet contexts."""
    return _contexts(config.ctx)


def parse_config(argv: Optional[Sequence[str]] = None) -> CifarConfig:
    """Parse the command line into a `CifarConfig` (preset values, overridden by flags).

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The config; nothing is checked against the file system or the model zoo yet (see
        `check_config`).

    Raises:
        UsageError: malformed input (the message echoes it).

    Example:
        >>> parse_config(["--preset", "smoke", "--epochs", "2"]).epochs
        2
    """
    args = build_parser().parse_args(argv)
    explicit = tuple(sorted(k for k, v in vars(args).items() if v is not None))
    ctx = _parse_ctx(args.ctx)
    if args.amp and any(not c.startswith("gpu") for c in ctx):
        raise UsageError(f"--amp: float16 training needs GPUs, but --ctx is "
                         f"{','.join(ctx)}; on a CPU leave --amp out (float32)")
    # No --preset: the devices decide (ctx defaults to gluonft.devices()).
    preset = PRESETS[args.preset or preset_for_devices(_contexts(ctx))]
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None \
        else getattr(preset, name)  # noqa: E731

    models = tuple(_comma_list(args.models, "--models")) if args.models else preset.models
    regimes = _parse_regimes(args.regimes)
    seeds = _parse_seeds(args.seeds)
    if args.no_baseline and (args.baseline_acc is not None or args.baseline_name is not None):
        raise UsageError("--no-baseline contradicts --baseline-acc/--baseline-name")
    if args.baseline_acc is not None and not 0 <= args.baseline_acc <= 1:
        hint = f" (did you mean {args.baseline_acc / 100:g}?)" if 1 < args.baseline_acc <= 100 \
            else ""
        raise UsageError(f"--baseline-acc {args.baseline_acc:g}: expected a fraction in [0, 1]"
                         f"{hint}")
    if args.val_fraction is not None and not args.val_fraction < 1:
        raise UsageError(f"--val-fraction {args.val_fraction:g}: expected a share in [0, 1)")
    if args.summary_rows is not None and args.summary_rows < 0:
        raise UsageError(f"--summary-rows {args.summary_rows}: expected a count >= 0")
    if args.baseline_lr is not None and not 0 < args.baseline_lr < math.inf:
        raise UsageError(f"--baseline-lr {args.baseline_lr:g}: expected a positive number")
    weights = _parse_weights(args.weights)
    head = args.head or "linear"
    try:
        parse_head(head, dropout=args.dropout)
    except ValueError as error:
        raise UsageError(f"--head/--dropout: {error}") from None
    baseline = ("none" if args.no_baseline else
                "recorded" if args.baseline_acc is not None else "train")
    if args.kvstore in DIST_KVSTORES and not args.out:
        # a default folder is named by the time, which differs between the workers
        raise UsageError(f"--kvstore {args.kvstore}: give --out, the one folder the job "
                         f"writes (worker 0) and resumes from (every worker)")
    out = args.out or os.path.join("runs", f"cifar10-{datetime.now():%Y%m%d-%H%M%S}")
    return CifarConfig(
        preset=preset.name, models=models, regimes=regimes, seeds=seeds,
        training=_training(args, preset.training), lr=_parse_lr(args.lr, preset),
        image_size=_none_for_word(pick("image_size")),
        train_per_class=_none_for_word(pick("train_per_class")),
        test_per_class=_none_for_word(pick("test_per_class")),
        val_fraction=pick("val_fraction"), data_seed=preset.data_seed, baseline=baseline,
        baseline_name=args.baseline_name or BASELINE_NAME, baseline_acc=args.baseline_acc,
        baseline_epochs=pick("baseline_epochs"), baseline_lr=pick("baseline_lr"),
        weights=weights,
        data_root=os.path.abspath(os.path.expanduser(args.data_root)) if args.data_root
        else None,
        download=bool(args.download), ctx=ctx, out=out,
        keep_checkpoints=bool(args.keep_checkpoints),
        summary_rows=12 if args.summary_rows is None else args.summary_rows,
        progress=not args.no_progress, explicit=explicit, head=head, dropout=args.dropout,
        kvstore=args.kvstore)


def _training(args, preset: TrainSettings) -> TrainSettings:
    """The preset's settings with each given flag applied, checked flag by flag."""
    training = preset
    for setting in fields(TrainSettings):
        value = getattr(args, setting.name)
        if value is None:
            continue
        try:
            training = replace(training, **{setting.name: value})
        except ValueError as error:
            flag = "--" + setting.name.replace("_", "-")
            raise UsageError(f"{flag} {value!r}: {error}") from None
    return training


def _parse_regimes(text: Optional[str]) -> Tuple[str, ...]:
    if text is None:
        return DEFAULT_REGIMES
    labels = []
    for item in _comma_list(text, "--regimes"):
        try:
            labels.append(parse_regime(item).label)
        except ValueError as error:
            raise UsageError(f"--regimes: {error}") from None
    if len(set(labels)) != len(labels):
        raise UsageError(f"--regimes {text!r} lists a regime twice")
    return tuple(labels)


def _parse_seeds(text: Optional[str]) -> Tuple[int, ...]:
    if text is None:
        return (0,)
    seeds = []
    for item in _comma_list(text, "--seeds"):
        if not item.isdigit():
            raise UsageError(f"--seeds {text!r}: {item!r} is not a non-negative integer")
        seeds.append(int(item))
    return tuple(seeds)


# --- config -> checked against the zoo and the file system ------------------------------------

def _check_model(name: str) -> None:
    if name == BASELINE_MODEL:
        raise UsageError(f"--models {name}: {name} is the lab-1 baseline; it runs in every grid "
                         f"unless --no-baseline or --baseline-acc is given")
    try:
        family_of(name)
    except UnknownBackbone:
        close = difflib.get_close_matches(name, list_backbones(), n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UsageError(f"--models: unknown model {name!r}; {hint}"
                         f"python -c 'import gluonft; print(gluonft.list_backbones())' lists "
                         f"the {len(list_backbones())} supported names") from None


def check_config(config: CifarConfig) -> None:
    """Check the config against the model zoo and the file system before anything trains.

    Checks: every model is a supported backbone; every ``last_k:K`` fits every model (on a
    randomly initialised copy of its architecture, cheap for small nets); image sizes; every
    ``--weights`` entry names a model of the grid and an existing file; ``--out`` is not a
    file.

    Raises:
        UsageError: the first problem found, in one line.
    """
    for name in config.models:
        _check_model(name)
    for name, path in config.weights.items():
        if name not in config.models:
            raise UsageError(f"--weights {name}=...: {name!r} is not in --models "
                             f"({','.join(config.models)})")
        if not os.path.isfile(path):
            raise UsageError(f"--weights {name}={path}: no such file")
    for name in config.models:
        family = family_of(name)
        try:
            check_image_size(name, effective_image_size(family, config.image_size),
                             family=family)
        except ValueError as error:
            raise UsageError(f"--image-size: {error}") from None
    deepest = [r for r in config.regimes if r.startswith("last_k:")]
    for name in config.models if deepest else ():
        # The architecture once per model (random weights: only its blocks are counted).
        blocks = len(gluonft.feature_blocks(
            gluonft.load_backbone(name, classes=10, weights=None, ctx=mx.cpu())))
        for regime in deepest:
            k = int(regime.split(":")[1])
            if k > blocks:
                family = gluonft.backbones.family_of(name)
                raise UsageError(f"--regimes {regime}: last_k with k={k} is out of range for "
                                 f"{name}: it has {blocks} blocks ({family.blocks_doc}); "
                                 f"expected 1 <= k <= {blocks}")
    if os.path.exists(config.out) and not os.path.isdir(config.out):
        raise UsageError(f"--out {config.out}: it is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(config.out))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise UsageError(f"--out {config.out}: {parent} is a file, not a folder")


def load_data(config: CifarConfig):
    """The train / validation / test images of the config (seeded stratified subsets).

    Returns:
        `bench.grid.Data`.

    Raises:
        UsageError: no CIFAR-10 where it was looked for (one line saying where and what).
    """
    root = config.data_root
    # An explicit folder must hold the files unless --download; the default one is filled.
    download = config.download or root is None
    try:
        train = cifar10(root, train=True, download=download)
        test = cifar10(root, train=False, download=False)
    except (DatasetNotFound, ValueError) as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        if root is not None and not config.download:
            message += " (pass --download to download it there)"
        raise UsageError(f"--data-root: {message}") from None
    if config.train_per_class is not None:
        train = train.subset(n_per_class=config.train_per_class, seed=config.data_seed)
    if config.test_per_class is not None:
        test = test.subset(n_per_class=config.test_per_class, seed=config.data_seed)
    val = None
    if config.val_fraction > 0:
        train, val = train.split(1 - config.val_fraction, seed=config.data_seed)
    description = {
        "root": str(root if root is not None else default_root()),
        "train_per_class": config.train_per_class, "test_per_class": config.test_per_class,
        "val_fraction": config.val_fraction, "data_seed": config.data_seed,
        "train_images": len(train), "val_images": len(val) if val is not None else 0,
        "test_images": len(test),
    }
    return Data(train=train, val=val, test=test, description=description)


def _workers(config: CifarConfig) -> int:
    """The workers of the job (1 without a distributed kvstore)."""
    if config.kvstore not in DIST_KVSTORES:
        return 1
    return Cluster.join(config.kvstore).workers


def _rank(config: CifarConfig) -> int:
    return Cluster.join(config.kvstore).rank


def plan_experiments(config: CifarConfig, data) -> list:
    """The grid's `bench.grid.Experiment` list: the baseline first, then model x regime x seed.

    Example:
        >>> [e.id for e in plan_experiments(config, data)]
        ['lab1_cnn-scratch-s0', 'mobilenet0.75-head-s0', 'mobilenet0.75-full-s0']
    """
    common = dict(classes=len(data.test.classes), data=data.description,
                  kvstore=config.kvstore, workers=_workers(config))
    out = []
    if config.baseline == "recorded":
        out.append(Experiment(id="baseline-recorded", model="baseline", regime="recorded",
                              seed=0, kind="baseline", label=config.baseline_name,
                              weights=None, recorded_accuracy=config.baseline_acc))
    elif config.baseline == "train":
        for seed in config.seeds:
            out.append(Experiment(
                id=experiment_id(BASELINE_MODEL, "scratch", seed), model=BASELINE_MODEL,
                regime="scratch", seed=seed, kind="baseline", label=config.baseline_name,
                weights=None, training=replace(config.training, epochs=config.baseline_epochs),
                lr=config.baseline_lr, image_size=32, **common))
    for model in config.models:
        family = family_of(model)
        for regime in config.regimes:
            for seed in config.seeds:
                out.append(Experiment(
                    id=experiment_id(model, regime, seed), model=model, regime=regime,
                    seed=seed, label=model,
                    weights=None if regime == "scratch" else config.weights.get(model,
                                                                                "default"),
                    training=config.training, lr=config.lr[parse_regime(regime).name],
                    image_size=effective_image_size(family, config.image_size),
                    head=config.head, dropout=config.dropout, **common))
    return out


# --- printing ---------------------------------------------------------------------------------

def _preset_keys() -> List[str]:
    """The values a preset sets, in the order its dataclass lists them (training inline)."""
    skip = ("name", "description")
    return [k for k in PRESETS["smoke"].to_dict() if k not in skip]


def preset_lines(config: CifarConfig) -> List[str]:
    """The preset and every value it sets, each marked with where the used value came from."""
    preset = PRESETS[config.preset]
    lines = [f"preset {preset.name}: {preset.description}"]
    for key in _preset_keys():
        used = getattr(config, key)
        if key == "lr":
            given = "lr" in config.explicit
        else:
            given = key in config.explicit
        note = f"(--{key.replace('_', '-')}; preset: {getattr(preset, key)})" if given \
            else "(preset)"
        shown = "all" if used is None and key.endswith("per_class") else \
            "native" if used is None and key == "image_size" else used
        lines.append(f"  {key:16s} {str(shown):44s} {note}")
    return lines


def _card_lines(card: dict) -> List[str]:
    init = (card.get("initialisation") or {}).get("description")
    opt = card.get("optimizer_params") or {}
    schedule = card.get("schedule") or {}
    layers = card.get("modified_layers") or []
    shown = layers if len(layers) <= 6 else layers[:3] + [f"... ({len(layers)} in all)"]
    lines = [
        f"Best model: {card['id']}  ({card['label']})",
        f"  source model     {card['source_model']} with a new Dense({card.get('classes')}) head",
        f"  pretrained on    {card.get('pretraining', '-')}"
        + (f" -- {card['note_pretraining']}" if card.get("note_pretraining") else ""),
        f"  initialisation   {init}",
        f"  regime           {card['regime']} ({card['regime_title']}): "
        f"{card.get('regime_description')}",
        f"  modified layers  {'; '.join(shown)}",
        f"  optimizer        {card.get('optimizer')} "
        + ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                    for k, v in opt.items())
        + f"; schedule {schedule.get('name')} (warm-up {schedule.get('warmup_epochs', 0):g}); "
          f"{card.get('epochs')} epochs, batch {card.get('batch_size')}, "
          f"{card.get('image_size')} px",
        f"  test accuracy    {100 * card['test_accuracy']:.2f}% ({card.get('test_count')} "
        f"test images" + (f"; 95 % interval {100 * card['test_interval'][0]:.1f}-"
                          f"{100 * card['test_interval'][1]:.1f}%" if card.get("test_interval")
                          else "") + ")",
    ]
    if card.get("chosen_on"):
        lines.append(f"  chosen on        {card['chosen_on']} accuracy: "
                     f"{card.get('chosen_note', '')}")
    if card.get("repeats"):
        r = card["repeats"]
        spread = f" ± {100 * r['std']:.2f}" if r.get("std") is not None else ""
        lines.append(f"  over seeds       {100 * r['mean']:.2f}%{spread} (n={r['n']})")
    if card.get("params_file"):
        lines.append(f"  parameters       {card['params_file']}: {card.get('load_with')}")
    return lines


def _write_report(out_dir: str, log) -> None:
    try:
        log(f"report: {write_report(out_dir)}")
    except Exception as error:  # results are written already; a report must not lose them
        log(f"warning: the HTML report failed: {one_line(error)}")


def _error(message: str) -> int:
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the grid described by ``argv``; returns the exit code (0 ok, 1 failures, 2 input,
    130 interrupted).

    Example:
        >>> main(["--preset", "smoke", "--models", "mobilenet0.75", "--regimes", "head"])
        0
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Whatever finished is on disk and a running experiment has its epoch checkpoint.
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr,
              flush=True)
        return 130


def _main(argv: Optional[Sequence[str]]) -> int:
    try:
        config = parse_config(argv)
        check_config(config)
        cluster = (Cluster.join(config.kvstore) if config.kvstore in DIST_KVSTORES else None)
        data = load_data(config)
        check_writable_folder(config.out, what="--out")
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except (UsageError, OSError, DistributedSetupError) as error:
        return _error(str(error))
    if cluster is not None and not cluster.is_chief:
        # Worker 0 locks and writes --out; the others read it (to resume) and write nothing.
        return _run_locked(config, data, argv, None)
    try:
        os.makedirs(config.out, exist_ok=True)
        lock = FolderLock(config.out).acquire()
    except FolderBusy as error:
        return _error(f"--out: {error}")
    except OSError as error:
        return _error(f"--out {config.out}: cannot create it ({error.strerror})")
    try:
        return _run_locked(config, data, argv, lock)
    finally:
        lock.release()


def _run_locked(config: CifarConfig, data, argv, lock) -> int:
    """The grid, with ``config.out`` locked by this process (``lock`` None: a worker of a
    distributed job other than worker 0, which writes nothing)."""
    def log(line: str = "") -> None:
        print(line, flush=True)

    paths = OutputPaths(config.out)
    if os.path.exists(paths.results_json):
        try:  # before anything trains: a broken results file is the user's to look at
            read_results(paths.results_json)
        except ValueError as error:
            return _error(f"--out: {error}; move it away or choose another --out")
    writer = lock is not None
    if writer and lock.describe_stale():
        log(lock.describe_stale())
    removed = remove_stale_temporaries(config.out) if writer else []
    if removed:
        log(f"removed {len(removed)} half-written temporary file(s) left by a killed run")
    ctx = config_contexts(config)
    experiments = plan_experiments(config, data)
    begin = time.perf_counter()
    for line in preset_lines(config):
        log(line)
    log(f"grid: {len(experiments)} experiments: {', '.join(e.id for e in experiments)}")
    log(f"data: {data.description['train_images']} train, {data.description['val_images']} "
        f"validation, {data.description['test_images']} test images from "
        f"{data.description['root']}")
    log(f"devices: {', '.join(config.ctx)}; output: {os.path.abspath(config.out)}"
        + (f"; kvstore {config.kvstore}: rank {_rank(config)} of {_workers(config)} workers "
           f"(rank 0 writes)" if config.kvstore in DIST_KVSTORES else ""))
    if not writer:
        result = run_grid(experiments, data=data, out_dir=config.out, ctx=ctx,
                          summary_rows=config.summary_rows, progress=config.progress,
                          writer=False, log=log)
        failed = [r for r in result.records if r.status == "failed"]
        return 1 if failed else 0
    atomic_write_json(paths.config, {
        "command": ["python", "-m", PROG] + list(sys.argv[1:] if argv is None else argv),
        "preset": config.preset, "preset_values": PRESETS[config.preset].to_dict(),
        "overrides": [k for k in config.explicit], "config": config.to_dict(),
        "data": data.description, "experiments": [e.id for e in experiments],
        "environment": environment(devices=ctx),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    result = run_grid(experiments, data=data, out_dir=config.out, ctx=ctx,
                       summary_rows=config.summary_rows, progress=config.progress,
                       keep_checkpoints=config.keep_checkpoints, log=log,
                       title=f"CIFAR-10 transfer learning ({config.preset} preset: "
                             f"{data.description['train_images']} train images)")
    records = result.records
    log("")
    log(f"=== all experiments ({time.perf_counter() - begin:.0f} s) ===")
    log(results_table(records))
    failed = [r for r in records if r.status == "failed"]
    if failed:
        log("")
        log(f"{len(failed)} failed:")
        for r in failed:
            log(f"  {r.id}: {r.error}")
    if result.best_card is not None:
        log("")
        for line in _card_lines(result.best_card):
            log(line)
    log("")
    written = [name for name in ("config.json", "results.json", "results.csv", "accuracy.png",
                                 "accuracy.svg", "curves", "best.json", "best.params")
               if os.path.exists(os.path.join(config.out, name))]
    log(f"written: {os.path.abspath(config.out)} ({', '.join(written)})")
    _write_report(config.out, log)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
