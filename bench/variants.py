"""`python -m bench.variants`: `train_classifier` variants side by side on one photo folder.

Every row is one `gluonft.train_classifier` call on the same folder with the same seed; the
rows differ in what the flags list (every combination is run): backbone (``--model``), head
(``--head``), augmentation of the fine-tuning stages (``--augment``: an `Augment` preset or
``albumentations`` for the practitioner's pipeline below), mixing (``--mix``) and recipe
(``--recipes``: names of `gluonft.RECIPES`: ``fast``, head only on cached features;
``default`` and ``staged``, fine-tuning; augmentation and mixing apply to fine-tuning recipes
only). ``--model`` replaces each recipe's backbone. Per row: validation and test accuracy,
test loss (the mean cross-entropy, which shows over-confident models that accuracy hides),
wall time and the training images/s of the fine-tuning stages. Results go to
``<out>/variants.json`` and ``variants.csv``, rewritten atomically after each row; a rerun
skips the rows already measured, so a killed run resumes.

    python -m bench.variants --data ../shared/data/clothing-small --model mobilenet0.75 \\
        --weights mobilenet0.75=../shared/weights/mobilenet0.75-imagenet.params \\
        --head linear --head mlp:512 --head mlp:1024,256 --recipes fast,staged --out runs/heads
    python -m bench.variants --data ../shared/data/clothing-small --model mobilenet0.75 \\
        --weights mobilenet0.75=... --recipes staged --augment none --augment standard \\
        --augment albumentations --mix none --mix mixup --mix cutmix --out runs/augment
    python -m bench.variants --data ../shared/data/clothing-small --model mobilenet0.75 \
        --weights mobilenet0.75=... --recipes fast --feature-dtype float32 --feature-dtype int8 \
        --seeds 0,1 --out runs/int8
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from typing import List, Optional

from gluonft.argtypes import seed as _seed
from gluonft.fileio import atomic_write_csv, atomic_write_text, finite_json
from gluonft.heads import parse_head
from gluonft.pipelines import Albumentations
from gluonft.predict import evaluate_folder
from gluonft.recipes import RECIPES, train_classifier

__all__ = ["main", "COLUMNS", "practitioner_pipeline"]

COLUMNS = ("model", "head", "augment", "mix", "recipe", "feature_dtype", "seed", "val_accuracy",
           "test_accuracy", "test_loss", "train_seconds", "feature_seconds",
           "train_images_per_s", "params")


def practitioner_pipeline():
    """What a practitioner writes for photos: flips, a small affine, colour, holes (keeping the
    size: gluonft resizes on the device)."""
    import albumentations as A
    return A.Compose([A.HorizontalFlip(), A.Affine(rotate=(-15, 15)),
                      A.RandomBrightnessContrast(), A.HueSaturationValue(),
                      A.CoarseDropout(num_holes_range=(1, 4))])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="an image folder with a test split")
    p.add_argument("--model", action="append",
                   help="backbones (repeatable; default: each recipe's own)")
    p.add_argument("--weights", action="append", metavar="NAME=PATH",
                   help="a local weights file for a backbone (repeatable); the others use "
                        "their pretrained weights")
    p.add_argument("--head", action="append",
                   help="heads (repeatable; default: the recipe's, mlp:1024,256)")
    p.add_argument("--max-params", type=int, help="parameter budget, for --model auto")
    p.add_argument("--dropout", type=float, help="dropout of the mlp heads (default 0.5)")
    p.add_argument("--augment", action="append",
                   help="none|light|standard|strong|albumentations (repeatable; default: the "
                        "recipe's)")
    p.add_argument("--mix", action="append", help="none|mixup|cutmix (repeatable; default none)")
    p.add_argument("--recipes", default="fast,default",
                   help="comma-separated names of gluonft.RECIPES: fast, default, staged")
    p.add_argument("--feature-dtype", action="append", choices=("float32", "int8"),
                   help="cached features' type, fast recipe only (repeatable; float32)")
    p.add_argument("--image-size", type=int, help="input side (default: the recipe's)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--out", default="runs/variants")
    return p


def _fine_tune_speed(history: dict) -> Optional[float]:
    """Mean training images/s over the epochs that train backbone blocks."""
    rows = [r for r in history["epochs"] if r.get("regime", "head") != "head"]
    return (sum(r["images_per_s"] for r in rows) / len(rows)) if rows else None


def _feature_seconds(history: dict) -> Optional[float]:
    """Seconds of the feature pass (train + validation) of a cached head-only run."""
    cache = history["settings"].get("feature_cache") or {}
    parts = [cache.get(k) for k in ("train", "val")]
    return sum(p["seconds"] for p in parts if p) if any(parts) else None


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)

    models = args.model or [None]  # None: each recipe's backbone
    heads = args.head or [RECIPES["default"].head]
    augments, mixes = args.augment or [None], args.mix or ["none"]
    dtypes = args.feature_dtype or ["float32"]
    for head in heads:
        parse_head(head, dropout=None if head == "linear" else args.dropout)
    recipes = [r.strip() for r in args.recipes.split(",")]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        print(f"bench.variants: unknown recipe(s) {unknown}: expected {sorted(RECIPES)}",
              file=sys.stderr)
        return 2
    seeds = [_seed(s) for s in args.seeds.split(",")]
    weights = dict(w.split("=", 1) for w in args.weights or [])
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "variants.json")
    rows = json.load(open(path)) if os.path.exists(path) else []
    key = ("model", "head", "augment", "mix", "recipe", "feature_dtype", "seed")
    done = {tuple(r.get(k, "float32") for k in key) for r in rows}
    for recipe, model, head, augment, mix, dtype, seed in itertools.product(
            recipes, models, heads, augments, mixes, dtypes, seeds):
        fast = RECIPES[recipe].cached
        model = model or RECIPES[recipe].model
        if fast and (augment is not None or mix != "none"):
            continue  # the fast recipe trains on cached, unaugmented features
        if not fast and dtype != "float32":
            continue  # int8 applies to cached features
        shown = augment or RECIPES[recipe].augment
        if (model, head, shown, mix, recipe, dtype, seed) in done:
            continue
        dropout = None if head == "linear" else args.dropout
        chosen = (Albumentations(practitioner_pipeline()) if augment == "albumentations"
                  else augment)
        clf = train_classifier(args.data, model=model, weights=weights.get(model, "default"),
                               max_params=args.max_params, recipe=recipe,
                               image_size=args.image_size, seed=seed,
                               head=head, dropout=dropout, augment=None if fast else chosen,
                               mix=None if fast else mix, feature_dtype=dtype, progress=True)
        test = evaluate_folder(clf, args.data, split="test")
        row = {"model": model, "picked": clf.backbone, "head": head, "augment": shown,
               "mix": mix, "recipe": recipe, "feature_dtype": dtype,
               "seed": seed, "dropout": clf.meta.get("dropout"),
               "val_accuracy": clf.meta.get("val_accuracy"),
               "test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "train_seconds": clf.meta["train_seconds"],
               "feature_seconds": _feature_seconds(clf.meta["history"]),
               "train_images_per_s": _fine_tune_speed(clf.meta["history"]),
               "params": clf.params, "image_size": clf.image_size,
               "recipe_stages": clf.meta["recipe"], "data": os.path.abspath(args.data)}
        rows.append(row)
        print(f"{recipe:8s} {model:18s} {head:14s} {shown:14s} {mix:7s} {dtype:7s} seed {seed}: "
              f"test "
              f"{test['accuracy']:.4f} loss {test['loss']:.3f}  val {row['val_accuracy']:.4f}"
              f"  {row['train_seconds']:.0f} s", flush=True)
        atomic_write_text(path, json.dumps(finite_json(rows), indent=1))
        atomic_write_csv(os.path.join(args.out, "variants.csv"), rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
