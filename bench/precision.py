"""`python -m bench.precision`: training speed in float32 against bfloat16 (MXNet AMP), per net
and input size, side by side.

`fit(amp="bfloat16")` pays only where the CPU computes bfloat16 (AVX512-BF16, AMX); this says
by how much, per net. MXNet AMP patches the process for good, so every run is a child process
of its own: per repetition, for each net and size, a float32 child then a bfloat16 child
(interleaved, so both see the same machine load); each child runs `fit` (regime ``full`` by
default, no augmentation, random weights and random images: speed depends on neither) for
three epochs and reports the median images/s of the last two (the first builds and compiles).
The figure is the median over the repetitions, and the ratio bfloat16 / float32 is printed per
net and size. Every row records the precision its child computed in (`environment`'s
``precision``, from MXNet AMP itself) and the last epoch's training loss (finite: it trained).

On a CPU where oneDNN has no bfloat16 kernels (x86 without AVX-512) only float32 runs, and the
result says why (`gluonft.cpu.check_bfloat16`'s message).

    python -m bench.precision
    python -m bench.precision --models mobilenet0.75 --sizes 160 --repeats 3 --out runs/bf16
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import mxnet as mx
import numpy as np

import gluonft
from gluonft.amp import active_dtype
from gluonft.cpu import check_bfloat16
from gluonft.datasets import ImageSet
from gluonft.fileio import atomic_write_text
from gluonft.results import environment

__all__ = ["main", "PRECISIONS", "bfloat16_unavailable"]

PRECISIONS = ("float32", "bfloat16")
_RESULT = "bench.precision result: "
_ROOT = Path(__file__).resolve().parents[1]


def _child(model: str, size: int, precision: str, images: int, batch_size: int,
           regime: str) -> dict:
    """One `fit` in this process (a child: AMP stays on once started); its figures."""
    rng = np.random.RandomState(0)
    data = ImageSet(rng.randint(0, 256, (images, size, size, 3)).astype("uint8"),
                    rng.randint(0, 10, images).astype("int32"), tuple("abcdefghij"), "random")
    net = gluonft.load_backbone(model, classes=10, weights=None, ctx=mx.cpu(), seed=0)
    gluonft.apply_regime(net, regime)
    history = gluonft.fit(net, data, epochs=3, batch_size=batch_size, lr=0.01, ctx=mx.cpu(),
                          progress=False, augment=gluonft.Augment.none(),
                          image_size=size, amp=False if precision == "float32" else precision)
    return {"images_per_s": statistics.median(e["images_per_s"] for e in history.epochs[1:]),
            "train_loss": history.epochs[-1]["train_loss"],
            "precision": active_dtype() or "float32",  # MXNet AMP's own state
            "image_size": history.settings["image_size"]}


def _run_child(args, model: str, size: int, precision: str) -> dict:
    command = [sys.executable, "-m", "bench.precision", "--child", model, str(size), precision,
               "--images", str(args.images), "--batch-size", str(args.batch_size),
               "--regime", args.regime]
    done = subprocess.run(command, capture_output=True, text=True, cwd=_ROOT)
    lines = [x for x in done.stdout.splitlines() if x.startswith(_RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench.precision: {model} at {size} px in {precision} failed:\n"
                         f"{done.stderr[-2000:]}")
    return json.loads(lines[-1][len(_RESULT):])


def bfloat16_unavailable() -> Optional[str]:
    """None when this CPU can train in bfloat16, else why not (fit's own refusal)."""
    try:
        check_bfloat16("bfloat16", [mx.cpu()])
    except ValueError as e:
        return str(e)
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.precision",
                                description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet18_v1,mobilenet0.75,efficientnet_lite0")
    p.add_argument("--sizes", default="64,160", help="comma-separated input sides")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions")
    p.add_argument("--images", type=int, default=512, help="training images per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--regime", default="full")
    p.add_argument("--out", default=None, help="folder for precision.json")
    p.add_argument("--child", nargs=3, metavar=("MODEL", "SIZE", "PRECISION"),
                   help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parser().parse_args(argv)
    if args.child:
        model, size, precision = args.child
        result = _child(model, int(size), precision, args.images, args.batch_size, args.regime)
        print(_RESULT + json.dumps(result), flush=True)
        return result
    why_not = bfloat16_unavailable()
    precisions = PRECISIONS if why_not is None else PRECISIONS[:1]
    if why_not:
        print(f"bfloat16 is not measured here: {why_not}")
    models, sizes = args.models.split(","), [int(s) for s in args.sizes.split(",")]
    runs: dict = {}
    started = time.time()
    for repeat in range(args.repeats):
        for model in models:
            for size in sizes:
                for precision in precisions:
                    run = _run_child(args, model, size, precision)
                    runs.setdefault((model, size, precision), []).append(run)
                    print(f"[{repeat + 1}/{args.repeats}] {model} {size} px {precision}: "
                          f"{run['images_per_s']:.1f} images/s ({time.time() - started:.0f} s)",
                          flush=True)
    rows: List[dict] = []
    for model in models:
        for size in sizes:
            row = {"model": model, "size": size, "trained_at": sorted(
                {r["image_size"] for p in precisions for r in runs[(model, size, p)]})}
            for precision in precisions:
                done = runs[(model, size, precision)]
                row[precision] = statistics.median(r["images_per_s"] for r in done)
                row[f"{precision}_computed_in"] = sorted({r["precision"] for r in done})
                row[f"{precision}_train_loss"] = done[-1]["train_loss"]
            if why_not is None:
                row["bfloat16_vs_float32"] = row["bfloat16"] / row["float32"]
            rows.append(row)
    print(f"\ntraining images/s ({args.regime}, batch {args.batch_size}, median of "
          f"{args.repeats}):")
    for row in rows:
        bf16 = (f"  bfloat16 {row['bfloat16']:7.1f}  ratio {row['bfloat16_vs_float32']:.2f}"
                if why_not is None else "")
        print(f"  {row['model']:<20} {row['size']:>4} px  float32 {row['float32']:7.1f}{bf16}")
    result = {"regime": args.regime, "batch_size": args.batch_size, "images": args.images,
              "repeats": args.repeats, "bfloat16_unavailable": why_not, "rows": rows,
              "environment": environment()}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(str(Path(args.out) / "precision.json"), json.dumps(result, indent=1))
        print(f"written: {Path(args.out) / 'precision.json'}")
    return result


if __name__ == "__main__":
    main()
