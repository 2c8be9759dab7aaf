"""`python -m bench.recipes`: candidate `train_classifier` recipes on several real photo sets:
test accuracy for the minutes they take, and the Pareto front of accuracy against minutes.

Each candidate is a `gluonft.recipes.Recipe` (backbone, regime stages, learning rate and the
backbone's multiplier, input size, augmentation, mixing, head) run by `train_classifier` on
each dataset, for each seed. Per row: validation accuracy (what recipes are chosen by), test
accuracy and loss (reported, never used to choose), wall minutes (loading included) and
minutes per 1,000 photos of the folder (every split: they are all decoded, and the
validation and test photos scored, within the minutes). Per dataset
``<out>/<name>/recipes.json`` and ``.csv`` (rewritten atomically after each row; a rerun
skips the rows already measured) and ``front.png``/``.svg``: validation and test accuracy
against minutes, the mean over seeds, the validation front marked. ``<out>/summary.json``:
the mean and spread over seeds per dataset and candidate, and per time budget (``--fast``: 1
minute per 3,000 photos; the default: 10) the candidate with the best mean validation
accuracy over the datasets among those within it on every dataset.

Datasets: ``clothing`` (``../shared/data/clothing-small``: train 3068 / validation 341 / test
372 photos, 10 classes) and ``cifar`` (the real CIFAR-10 JPEGs of ``cifar10-jpg.tar.gz``: 240
train + 60 validation per class from its train/, 100 test per class from its test/, extracted
to a temporary folder). ``../shared`` holds no third real photo set large enough (dogcat
has 8 photos), and none was taken from a registry: ``--datasets ...,NAME=FOLDER`` adds one
(class folders under train/, validation/, test/).

    python -m bench.recipes                                   # every candidate, 2 seeds
    python -m bench.recipes --candidates mobilenet-fast,lite0-fast --datasets clothing --seeds 0
    python -m bench.recipes --datasets clothing,cifar,birds=~/photos/birds   # a set of yours
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import gluonft  # noqa: F401  (first: OMP_NUM_THREADS before MXNet loads)
from gluonft import plots
from gluonft.datasets import list_images
from gluonft.datasets.folder import split_folders
from gluonft.fileio import atomic_write_csv, atomic_write_json, finite_json
from gluonft.interpretation import interpret
from gluonft.predict import evaluate_folder
from gluonft.recipes import Recipe, train_classifier
from gluonft.results import environment

from .photos import SHARED, cifar10_jpg, link_photos

MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet0.75-imagenet.params"
STAGED = (("head", 4), ("last_k:2", 3), ("last_k:4", 3))
CANDIDATES: Dict[str, Recipe] = {
    # the recipes behind --fast and the default before this benchmark
    "mobilenet-fast": Recipe("mobilenet-fast", 160, (("head", 10),), lr=0.01, augment="none",
                             cached=True),
    "mobilenet-staged": Recipe("mobilenet-staged", 160, STAGED, lr=0.05, backbone_lr_mult=0.1,
                               augment="none"),
    "mobilenet-deep": Recipe("mobilenet-deep", 160, (("head", 4), ("last_k:4", 3), ("full", 3)),
                             lr=0.05, augment="none"),
    "lite0-fast": Recipe("lite0-fast", 160, (("head", 10),), lr=0.01, augment="none",
                         cached=True, model="efficientnet_lite0"),
    "lite0-fast-224": Recipe("lite0-fast-224", 224, (("head", 10),), lr=0.01, augment="none",
                             cached=True, model="efficientnet_lite0"),
    "lite0-staged": Recipe("lite0-staged", 160, (("head", 4), ("last_k:2", 3)), lr=0.05,
                           augment="none", model="efficientnet_lite0"),
    "lite1-fast-240": Recipe("lite1-fast-240", 240, (("head", 10),), lr=0.01, augment="none",
                             cached=True, model="efficientnet_lite1"),
    "lite2-fast-260": Recipe("lite2-fast-260", 260, (("head", 10),), lr=0.01, augment="none",
                             cached=True, model="efficientnet_lite2"),
    "lite1-staged-240": Recipe("lite1-staged-240", 240, (("head", 4), ("last_k:2", 3)),
                               lr=0.05, augment="none", model="efficientnet_lite1"),
    "lite2-staged-260": Recipe("lite2-staged-260", 260, (("head", 4), ("last_k:2", 3)),
                               lr=0.05, augment="none", model="efficientnet_lite2"),
    "lite2-deep-260": Recipe("lite2-deep-260", 260, (("head", 4), ("last_k:4", 4)), lr=0.05,
                             backbone_lr_mult=0.3, augment="none", model="efficientnet_lite2"),
    # The default with half its last_k epochs, and also at 224 px: time-to-accuracy (issue 32).
    "lite2-deep2-260": Recipe("lite2-deep2-260", 260, (("head", 4), ("last_k:4", 2)), lr=0.05,
                              backbone_lr_mult=0.3, augment="none", model="efficientnet_lite2"),
    "lite2-deep2-260-lr0.6": Recipe("lite2-deep2-260-lr0.6", 260, (("head", 4), ("last_k:4", 2)),
                                    lr=0.05, backbone_lr_mult=0.6, augment="none",
                                    model="efficientnet_lite2"),
    "lite2-deep2-224": Recipe("lite2-deep2-224", 224, (("head", 4), ("last_k:4", 2)), lr=0.05,
                              backbone_lr_mult=0.3, augment="none", model="efficientnet_lite2"),
    "lite0-staged-224": Recipe("lite0-staged-224", 224, (("head", 4), ("last_k:2", 3)),
                               lr=0.05, augment="none", model="efficientnet_lite0"),
}
FAST_MINUTES_PER_3000 = 1.0
DEFAULT_MINUTES_PER_3000 = 10.0
COLUMNS = ("dataset", "candidate", "seed", "model", "val_accuracy", "test_accuracy",
           "val_macro_f1", "test_macro_f1", "val_f1", "test_f1", "test_loss", "minutes",
           "minutes_per_1000", "photos", "train_images")
# --metric: what "best" is chosen on (on validation photos), as in bench.cifar; f1 is the
# binary F1 of class 1 (scikit-learn's pos_label=1), two-class data sets only.
METRIC_KEYS = {"accuracy": "val_accuracy", "macro_f1": "val_macro_f1", "f1": "val_f1"}


def _cifar_sample(work: Path) -> Path:
    """work/cifar-sample/{train,validation,test}/<class>/: real CIFAR-10 JPEGs (linked)."""
    out = work / "cifar-sample"
    if (out / ".made").exists():
        return out
    root = cifar10_jpg(work, who="bench.recipes")
    for cls in sorted(p.name for p in (root / "train").iterdir() if p.is_dir()):
        train = sorted((root / "train" / cls).iterdir())
        test = sorted((root / "test" / cls).iterdir())
        for split, photos in (("train", train[:240]), ("validation", train[240:300]),
                              ("test", test[:100])):
            link_photos(photos, out / split / cls)
    (out / ".made").touch()
    return out


def _describe(recipe: Recipe) -> dict:
    from dataclasses import asdict
    return json.loads(json.dumps(asdict(recipe)))


def pareto_front(points: List[dict], *, x: str, y: str) -> List[dict]:
    """The points no other point beats on both: fewer ``x`` (minutes) and more ``y``."""
    ordered = sorted(points, key=lambda p: (p[x], -p[y]))
    front, best = [], -1.0
    for p in ordered:
        if p[y] > best:
            front.append(p)
            best = p[y]
    return front


def summarise(rows: List[dict]) -> List[dict]:
    """Mean and spread over seeds per (dataset, candidate)."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["candidate"]), []).append(r)
    out = []
    for (dataset, candidate), members in groups.items():
        def stat(key):
            values = [m[key] for m in members]
            return (statistics.mean(values),
                    statistics.stdev(values) if len(values) > 1 else 0.0)
        val, val_sd = stat("val_accuracy")
        test, test_sd = stat("test_accuracy")
        minutes, _ = stat("minutes")
        per_1000, _ = stat("minutes_per_1000")
        summary = {"dataset": dataset, "candidate": candidate, "seeds": len(members),
                   "val_accuracy": val, "val_sd": val_sd, "test_accuracy": test,
                   "test_sd": test_sd, "test_loss": stat("test_loss")[0], "minutes": minutes,
                   "minutes_per_1000": per_1000}
        for key in ("val_macro_f1", "test_macro_f1", "val_f1", "test_f1"):
            if all(m.get(key) is not None for m in members):
                summary[key] = stat(key)[0]
        out.append(summary)
    return out


def choose(summary: List[dict], metric: str = "accuracy") -> dict:
    """Per time budget, the candidate with the best mean validation ``metric`` over the
    datasets among those within the budget on every dataset (and measured on every one)."""
    key = METRIC_KEYS[metric]
    candidates = sorted({s["candidate"] for s in summary})
    datasets = sorted({s["dataset"] for s in summary})
    table = {(s["dataset"], s["candidate"]): s for s in summary}
    chosen = {}
    for name, per_3000 in (("fast", FAST_MINUTES_PER_3000),
                           ("default", DEFAULT_MINUTES_PER_3000)):
        fits = [c for c in candidates if all(
            (d, c) in table and table[d, c]["minutes_per_1000"] * 3 <= per_3000
            and table[d, c].get(key) is not None for d in datasets)]
        if fits:
            best = max(fits, key=lambda c: statistics.mean(table[d, c][key] for d in datasets))
            chosen[name] = {"candidate": best, "metric": metric, "per_dataset": {
                d: {k: table[d, best].get(k) for k in ("val_accuracy", "test_accuracy", key,
                                                       "test" + key[3:], "minutes",
                                                       "minutes_per_1000")}
                for d in datasets}}
    return chosen


def _chart(summary: List[dict], dataset: str, path_stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    points = [s for s in summary if s["dataset"] == dataset]
    front = {p["candidate"] for p in pareto_front(points, x="minutes", y="val_accuracy")}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, key, title in ((axes[0], "val_accuracy", "validation (chosen by)"),
                           (axes[1], "test_accuracy", "test (reported)")):
        for p in points:
            on = p["candidate"] in front
            ax.errorbar(p["minutes"], p[key], yerr=p["test_sd" if key == "test_accuracy"
                                                      else "val_sd"],
                        fmt="o" if on else "x", color="C3" if on else "C0", capsize=3)
            ax.annotate(p["candidate"], (p["minutes"], p[key]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        line = sorted((p for p in points if p["candidate"] in front), key=lambda p: p["minutes"])
        ax.plot([p["minutes"] for p in line], [p[key] for p in line], "--", color="C3",
                linewidth=1)
        ax.set_xscale("log")
        # plain minutes (not 6x10^0): the decades, and 2 and 5 between them
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xlabel("minutes on 2 CPU cores (log)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{dataset}: {title}")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    for ext in ("png", "svg"):
        plots.save_figure(figure, f"{path_stem}.{ext}")


class _Usage(ValueError):
    """Bad command-line input: one line on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.recipes",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help=f"comma-separated, of {', '.join(CANDIDATES)}")
    p.add_argument("--datasets", default="clothing,cifar", help="comma-separated: clothing, "
                   "cifar, or NAME=FOLDER (class folders under train/, validation/, test/)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--work", help="where the CIFAR-10 photos are extracted (default: the "
                   "system's temporary folder, kept for reruns)")
    p.add_argument("--out", default="runs/recipes")
    p.add_argument("--metric", choices=tuple(METRIC_KEYS), default="accuracy",
                   help="what the best candidate per budget is chosen on, on the validation "
                        "photos (f1: the binary F1 of class 1, two-class data sets only)")
    return p


def _dataset_folders(datasets: str, work: Path) -> Dict[str, Path]:
    """{dataset name: its folder} in the order asked, or `_Usage`."""
    known = {"clothing": SHARED / "data" / "clothing-small"}
    folders = {}
    for item in (d.strip() for d in datasets.split(",") if d.strip()):
        name, _, folder = item.partition("=")
        if folder:  # a photo set of one's own: NAME=FOLDER
            # the splits as image_folder finds them (validation/ also as val/ or valid/)
            root = Path(folder).expanduser()
            try:
                splits = split_folders(root) if root.is_dir() else None
            except ValueError as error:
                splits = None
                print(f"bench.recipes: {error}", file=sys.stderr)
            if not splits or set(splits) != {"train", "validation", "test"}:
                raise _Usage(f"dataset {item!r}: expected a folder holding train/, "
                             f"validation/ and test/ class folders")
            folders[name] = root
        elif name == "cifar":
            folders[name] = None  # extracted below, once every name is known to be valid
        elif name in known:
            folders[name] = known[name]
        else:
            raise _Usage(f"unknown dataset {name!r}: expected clothing, cifar or NAME=FOLDER")
    if "cifar" in folders:
        folders["cifar"] = _cifar_sample(work)
    return folders


def _run_dataset(dataset: str, folder: Path, names: Sequence[str], seeds: Sequence[int],
                 out: Path) -> List[dict]:
    """Train and test every (candidate, seed) not done yet on one dataset; its rows (results
    written after each run, so a killed run loses one)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recipes.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    # rows of an earlier version (no F1 figures) are kept aside and trained again
    rows = [r for r in saved.get("rows", []) if "val_macro_f1" in r]
    earlier = saved.get("earlier_rows", []) + [r for r in saved.get("rows", [])
                                               if "val_macro_f1" not in r]
    photos = len(list_images(folder))  # every split: all are decoded
    for r in rows:
        r.update(photos=photos, minutes_per_1000=r["minutes"] / photos * 1000)
    done = {(r["candidate"], r["seed"], json.dumps(r["recipe"], sort_keys=True)) for r in rows}
    for name in names:
        recipe = CANDIDATES[name]
        for seed in seeds:
            if (name, seed, json.dumps(_describe(recipe), sort_keys=True)) in done:
                continue
            weights = str(MOBILENET_WEIGHTS) if recipe.model == "mobilenet0.75" else "default"
            clf = train_classifier(folder, recipe=recipe, weights=weights, seed=seed,
                                   progress=True)
            test = evaluate_folder(clf, folder, split="test")
            figures = _f1_figures(clf, folder)
            minutes = clf.meta["train_seconds"] / 60
            row = {"dataset": dataset, "candidate": name, "seed": seed,
                   "model": recipe.model, "val_accuracy": clf.meta["val_accuracy"],
                   "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                   "minutes": minutes, "minutes_per_1000": minutes / photos * 1000,
                   "photos": photos, "train_images": clf.meta["train_images"],
                   "recipe": _describe(recipe), "stages": clf.meta["recipe"], **figures,
                   "timings": clf.meta["timings"]}
            rows.append(row)
            print(f"{dataset:9s} {name:17s} seed {seed}: val {row['val_accuracy']:.4f} "
                  f"test {row['test_accuracy']:.4f} loss {row['test_loss']:.3f} "
                  f"{minutes:.1f} min\n    {describe_timings(row['timings'])}", flush=True)
            atomic_write_json(path, finite_json({"rows": rows, "earlier_rows": earlier}))
            atomic_write_csv(out / "recipes.csv", rows, COLUMNS)
    return [r for r in rows if r["candidate"] in names]


def describe_timings(timings: dict) -> str:
    """Where a training's minutes went, in one line: ``decode 31 s | head: features 40 s,
    steps 4 s, validation 0 s | ... | test 2 s``; "other" is building and compiling."""
    parts = [f"net {timings['net_s']:.0f} s", f"decode {timings['decode_s']:.0f} s"]
    spent = timings.get("shared_features_s", 0.0)
    if spent:
        parts.append(f"shared features {spent:.0f} s")
    for stage in timings["stages"]:
        spent += stage["features_s"] + stage["steps_s"] + stage["validation_s"]
        parts.append(f"{stage['regime']}: features {stage['features_s']:.0f} s, steps "
                     f"{stage['steps_s']:.0f} s, validation {stage['validation_s']:.0f} s")
    parts.append(f"other {timings['training_s'] - spent:.0f} s")
    parts += [f"{phase} {timings[f'{phase}_s']:.0f} s" for phase in ("test", "write")
              if f"{phase}_s" in timings]
    return " | ".join(parts)


def _f1_figures(clf, folder: Path) -> Dict[str, Optional[float]]:
    """Validation and test macro-F1 (and the binary F1 of class 1 on two-class data)."""
    out: Dict[str, Optional[float]] = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        result = interpret(clf, folder, split=split)
        out[f"{prefix}_macro_f1"] = result.macro_f1
        out[f"{prefix}_f1"] = result.f1(1) if len(result.classes) == 2 else None
    return out


def _print_summary(summary: List[dict], chosen: dict) -> None:
    print(f"\n{'dataset':9s} {'candidate':17s} {'val':>6s} {'test':>6s} {'+-':>5s} "
          f"{'min':>5s} {'min/1k':>6s}")
    for s in sorted(summary, key=lambda s: (s["dataset"], s["minutes"])):
        print(f"{s['dataset']:9s} {s['candidate']:17s} {s['val_accuracy']:6.3f} "
              f"{s['test_accuracy']:6.3f} {s['test_sd']:5.3f} {s['minutes']:5.1f} "
              f"{s['minutes_per_1000']:6.2f}")
    for budget, pick in chosen.items():
        print(f"best within the {budget} budget (by validation {pick['metric']}): "
              f"{pick['candidate']}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in names if c not in CANDIDATES]
    try:
        if unknown:
            raise _Usage(f"unknown candidate(s) {unknown}: expected {list(CANDIDATES)}")
        folders = _dataset_folders(args.datasets, Path(args.work or Path(
            tempfile.gettempdir()) / "gluonft-bench-recipes"))
    except _Usage as error:
        print(f"bench.recipes: {error}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    all_rows: List[dict] = []
    for dataset, folder in folders.items():
        all_rows += _run_dataset(dataset, folder, names, seeds, Path(args.out) / dataset)
    summary = summarise(all_rows)
    for dataset in folders:
        _chart(summary, dataset, str(Path(args.out) / dataset / "front"))
    chosen = choose(summary, args.metric)
    atomic_write_json(Path(args.out) / "summary.json", finite_json(
        {"summary": summary, "chosen": chosen,
         "budgets_minutes_per_3000_photos": {"fast": FAST_MINUTES_PER_3000,
                                             "default": DEFAULT_MINUTES_PER_3000},
         "environment": environment()}))
    _print_summary(summary, chosen)
    print(f"written: {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
