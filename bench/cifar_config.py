"""The command line of `python -m bench.cifar`: its flags (a preset's values, then the flags
over them), parsed into one `CifarConfig` and checked before anything is trained."""
from __future__ import annotations

import argparse
import difflib
import math
import os
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx

from gluonft import UnknownBackbone, feature_blocks, list_backbones, load_backbone
from gluonft.argtypes import non_negative_float as _non_negative_float
from gluonft.argtypes import positive_int as _positive_int
from gluonft.backbones import MAX_IMAGE_SIZE, check_image_size, family_of
from gluonft.distributed import DIST_KVSTORES, KVSTORES
from gluonft.heads import parse_head
from gluonft.regimes import REGIMES, parse_regime
from gluonft.selection import METRICS
from gluonft.settings import TrainSettings

from .grid import effective_image_size
from .presets import (
    BASELINE_MODEL,
    BASELINE_NAME,
    CPU_MODELS,
    DEFAULT_MODELS,
    DEFAULT_REGIMES,
    PRESETS,
    Preset,
    TrainingFields,
    preset_for_devices,
)

__all__ = ["PROG", "CifarConfig", "UsageError", "build_parser", "parse_config", "check_config",
           "config_contexts"]

DESCRIPTION = "`python -m bench.cifar`: the CIFAR-10 transfer-learning grid."

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
    metric: str = "accuracy"


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
    p = _Parser(prog=f"python -m {PROG}", description=DESCRIPTION,
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
    run.add_argument("--metric", choices=METRICS, default="accuracy",
                     help="what the best model is chosen on, on the validation images: "
                          "accuracy (default), macro_f1 (every class counts alike), or f1 "
                          "(binary F1 of class 1: two-class data only); the chart plots test "
                          "accuracy whatever is chosen")
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
        kvstore=args.kvstore, metric=args.metric)


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
    if config.metric == "f1":
        raise UsageError("--metric f1 is the binary F1 of two-class data; CIFAR-10 has 10 "
                         "classes: use --metric macro_f1 (or accuracy)")
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
        blocks = len(feature_blocks(load_backbone(name, classes=10, weights=None, ctx=mx.cpu())))
        for regime in deepest:
            k = int(regime.split(":")[1])
            if k > blocks:
                family = family_of(name)
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
