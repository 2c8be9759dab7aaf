"""`python -m bench.heads`: which head to put on a pretrained backbone, measured on real photos.

Every row is one `gluonft.train_classifier` call on the same folder, backbone, weights and seed;
only the head and the recipe (``fast``: head only on cached features; ``default``: the staged
fine-tune) differ. Per row: validation and test accuracy, test loss (the mean cross-entropy,
which shows over-confident heads that accuracy hides) and wall time. Results go to
``<out>/heads.json`` and ``heads.csv``, rewritten atomically after each row; a rerun skips the
rows already measured, so a killed run resumes.

    python -m bench.heads --data ../shared/data/clothing-small \\
        --weights ../shared/weights/mobilenet0.75-imagenet.params \\
        --head linear --head mlp:512 --head mlp:1024,256 --recipes fast,default --out runs/heads
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import List, Optional, Sequence

from gluonft.argtypes import seed as _seed
from gluonft.fileio import atomic_write_text, finite_json

__all__ = ["main", "COLUMNS"]

COLUMNS = ("head", "recipe", "seed", "val_accuracy", "test_accuracy", "test_loss",
           "train_seconds", "params")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.heads", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="an image folder with a test split")
    p.add_argument("--model", default="mobilenet0.75")
    p.add_argument("--weights", default="default", help="weights file (or 'default')")
    p.add_argument("--head", action="append", help="a head (repeatable); default: linear, "
                                                   "mlp:512, mlp:1024,256")
    p.add_argument("--dropout", type=float, help="dropout of the mlp heads (default 0.5)")
    p.add_argument("--recipes", default="fast,default", help="comma-separated: fast, default")
    p.add_argument("--image-size", type=int, help="input side (default: the recipe's)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--out", default="runs/heads")
    return p


def _rows_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from gluonft.heads import parse_head
    from gluonft.predict import evaluate_folder
    from gluonft.recipes import RECIPES, train_classifier

    heads = args.head or ["linear", "mlp:512", "mlp:1024,256"]
    for head in heads:
        parse_head(head, dropout=None if head == "linear" else args.dropout)
    recipes = [r.strip() for r in args.recipes.split(",")]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        print(f"bench.heads: unknown recipe(s) {unknown}: expected {sorted(RECIPES)}",
              file=sys.stderr)
        return 2
    seeds = [_seed(s) for s in args.seeds.split(",")]
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "heads.json")
    rows = json.load(open(path)) if os.path.exists(path) else []
    done = {(r["head"], r["recipe"], r["seed"]) for r in rows}
    for recipe in recipes:
        for head in heads:
            for seed in seeds:
                if (head, recipe, seed) in done:
                    continue
                dropout = None if head == "linear" else args.dropout
                clf = train_classifier(args.data, model=args.model, weights=args.weights,
                                       fast_train=recipe == "fast", image_size=args.image_size,
                                       seed=seed, head=head, dropout=dropout, progress=True)
                test = evaluate_folder(clf, args.data, split="test")
                row = {"head": head, "recipe": recipe, "seed": seed,
                       "dropout": clf.meta.get("dropout"),
                       "val_accuracy": clf.meta.get("val_accuracy"),
                       "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                       "train_seconds": clf.meta["train_seconds"], "params": clf.params,
                       "image_size": clf.image_size, "recipe_stages": clf.meta["recipe"],
                       "model": args.model, "data": os.path.abspath(args.data)}
                rows.append(row)
                print(f"{recipe:8s} {head:14s} seed {seed}: test {test['accuracy']:.4f} "
                      f"loss {test['loss']:.3f}  val {row['val_accuracy']:.4f}  "
                      f"{row['train_seconds']:.0f} s", flush=True)
                atomic_write_text(path, json.dumps(finite_json(rows), indent=1))
                atomic_write_text(os.path.join(args.out, "heads.csv"), _rows_csv(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
