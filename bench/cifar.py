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

import os
import sys
import time
from dataclasses import replace
from datetime import datetime
from typing import List, Optional, Sequence

try:  # importing MXNet takes seconds; Ctrl-C then is an answer, not a traceback
    from gluonft.backbones import family_of
    from gluonft.datasets import DatasetNotFound, cifar10
    from gluonft.datasets.cifar10 import default_root
    from gluonft.distributed import DIST_KVSTORES, Cluster, DistributedSetupError
    from gluonft.errors import one_line
    from gluonft.fileio import (
        FolderBusy,
        FolderLock,
        atomic_write_json,
        check_writable_folder,
        remove_stale_temporaries,
    )
    from gluonft.regimes import parse_regime
    from gluonft.results import environment, read_results, results_table

    from .cifar_config import (
        PROG,
        CifarConfig,
        UsageError,
        check_config,
        config_contexts,
        parse_config,
    )
    from .grid import Data, Experiment, effective_image_size, experiment_id, run_grid
    from .outputs import OutputPaths
    from .presets import BASELINE_MODEL, PRESETS
    from .report import write_report
except KeyboardInterrupt:
    print("bench.cifar: interrupted while starting; nothing was run", file=sys.stderr)
    sys.exit(130)

__all__ = ["load_data", "plan_experiments", "preset_lines", "main"]

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
        metric = card.get("chosen_metric", "accuracy").replace("_", "-")
        lines.append(f"  chosen on        {card['chosen_on']} {metric}: "
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
                          writer=False, metric=config.metric, log=log)
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
                       keep_checkpoints=config.keep_checkpoints, metric=config.metric,
                       log=log,
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
                                 "accuracy.svg", "curves", "best.json", "best.params",
                                 "best_confusion.png", "best_cam.png")
               if os.path.exists(os.path.join(config.out, name))]
    log(f"written: {os.path.abspath(config.out)} ({', '.join(written)})")
    _write_report(config.out, log)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
