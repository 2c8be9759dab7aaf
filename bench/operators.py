"""`python -m bench.operators`: where a training step's time goes, per MXNet operator and per
oneDNN kernel.

One net (random weights: time does not depend on them), trained on random images in the bare
Gluon loop (hybridized with static memory, SGD with momentum): a few steps to compile, then
timed steps, then profiled steps. Printed and saved (``operators.json``):

* per MXNet operator (MXNet's profiler, aggregate, with bulk execution off so that operators
  are timed one by one): milliseconds per step, share, calls per step. Operators MXNet runs
  with its own kernels (not oneDNN's), such as ``clip`` (EfficientNet-Lite's ReLU6), convert
  oneDNN's blocked tensors to the plain layout and back around them: that time is theirs;
* with ``--onednn``, in a child process with ``DNNL_VERBOSE=1``: per oneDNN primitive and
  implementation (``convolution:jit_dw:avx2:backward_weights``...), ms per step. A primitive
  on ``gemm`` where others of its kind run ``jit`` is a shape oneDNN's fast kernels refuse.

``--cut N`` trains only the steps of ``net.features`` from N on (and the head) on the
features after the first N, as `fit` does in a ``last_k`` regime with its frozen prefix cached:
``--model efficientnet_lite2 --size 260 --cut 22`` is the default recipe's second stage
(``last_k:4``: 22 frozen steps).

    python -m bench.operators --model efficientnet_lite0 --size 160 --onednn
    python -m bench.operators --model efficientnet_lite2 --size 260 --cut 22 --onednn
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import mxnet as mx
from mxnet import autograd, gluon, profiler

import gluonft
from gluonft.fileio import atomic_write_text
from gluonft.regimes import split_net
from gluonft.results import environment

__all__ = ["main", "profile_operators", "onednn_primitives"]

_MARK = "bench.operators: timed steps start"
BULK_VARIABLE = "MXNET_EXEC_BULK_EXEC_TRAIN"


def _training_step(model: str, size: int, batch: int, cut: int, classes: int = 10):
    """A closure running one training step of ``model`` (from step ``cut`` of its features)."""
    net = gluonft.load_backbone(model, classes=classes, weights=None, ctx=mx.cpu(), seed=0)
    count = len(net.features._children)
    if not 0 <= cut < count:
        raise SystemExit(f"--cut must be in [0, {count - 1}] for {model} "
                         f"({count} steps in net.features), got {cut}")
    # The cut as `fit` makes it: the prefix's output computed once (its cached features), the
    # rest of the backbone and the head trained.
    parts = split_net(net, cut, hybridize=True)
    x = parts.prefix(mx.nd.random.normal(shape=(batch, 3, size, size)))
    trained = parts.trainable
    trainer = gluon.Trainer(trained.collect_params(), "sgd",
                            {"learning_rate": 0.01, "momentum": 0.9})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    y = mx.nd.array([i % classes for i in range(batch)])

    def run():
        with autograd.record():
            loss = loss_fn(trained(x), y)
        loss.backward()
        trainer.step(batch)
        loss.wait_to_read()
    return run


def _timed(run, steps: int) -> float:
    mx.nd.waitall()
    start = time.perf_counter()
    for _ in range(steps):
        run()
    mx.nd.waitall()
    return (time.perf_counter() - start) / steps


def profile_operators(model: str, size: int, *, batch: int = 32, cut: int = 0,
                      steps: int = 3) -> dict:
    """Seconds per step unprofiled, and per-operator ms per step under MXNet's profiler."""
    run = _training_step(model, size, batch, cut)
    _timed(run, 3)  # compile, allocate
    step_s = _timed(run, steps)
    with tempfile.TemporaryDirectory() as tmp:
        profiler.set_config(profile_all=True, aggregate_stats=True,
                            filename=os.path.join(tmp, "trace.json"))
        profiler.set_state("run")
        _timed(run, steps)
        profiler.set_state("stop")
        stats = json.loads(profiler.dumps(format="json", reset=True))
    rows = [{"operator": name, "ms_per_step": s["Total"] / steps, "calls_per_step":
             s["Count"] / steps}
            for domain, ops in stats["Time"].items() if domain.startswith("operator")
            for name, s in ops.items()]
    total = sum(r["ms_per_step"] for r in rows) or 1.0
    for row in rows:
        row["share"] = row["ms_per_step"] / total
    rows.sort(key=lambda r: -r["ms_per_step"])
    return {"step_ms": 1000 * step_s, "operators_ms": total, "operators": rows}


def onednn_primitives(verbose_lines: Sequence[str], steps: int) -> List[dict]:
    """ms per step per oneDNN primitive:implementation:kind, from ``DNNL_VERBOSE=1`` lines
    of ``steps`` steps."""
    total: Dict[str, float] = collections.Counter()
    calls: Dict[str, int] = collections.Counter()
    for line in verbose_lines:
        fields = line.split(",")
        if len(fields) < 6 or fields[:2] != ["dnnl_verbose", "exec"]:
            continue
        key = ":".join(fields[3:6])
        total[key] += float(fields[-1])
        calls[key] += 1
    return [{"primitive": k, "ms_per_step": v / steps, "calls_per_step": calls[k] / steps}
            for k, v in sorted(total.items(), key=lambda kv: -kv[1])]


def _verbose_child(args) -> None:
    """Run in a child with DNNL_VERBOSE=1: steps after a marker line, for the parent to sum."""
    run = _training_step(args.model, args.size, args.batch_size, args.cut)
    _timed(run, 3)
    print(_MARK, flush=True)
    _timed(run, args.steps)


def _onednn_in_child(args) -> List[dict]:
    command = [sys.executable, "-m", "bench.operators", "--model", args.model, "--size",
               str(args.size), "--batch-size", str(args.batch_size), "--cut", str(args.cut),
               "--steps", str(args.steps), "--verbose-child"]
    env = dict(os.environ, DNNL_VERBOSE="1", **{BULK_VARIABLE: "0"})
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"the oneDNN-verbose child failed:\n{done.stderr[-2000:]}")
    lines = done.stdout.splitlines()
    return onednn_primitives(lines[lines.index(_MARK) + 1:], args.steps)


@contextlib.contextmanager
def _operators_one_by_one():
    """MXNet's bulk execution off while the profiled nets are built and run (a bulked segment
    of operators would be timed as one entry); MXNet reads the variable when a hybridized
    block first runs, so setting it here is in time. Restored afterwards: a caller's later
    training (and the processes it starts) keep MXNet's default."""
    saved = os.environ.get(BULK_VARIABLE)
    os.environ[BULK_VARIABLE] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[BULK_VARIABLE]
        else:
            os.environ[BULK_VARIABLE] = saved


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.operators",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=160, help="input side in pixels")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cut", type=int, default=0,
                   help="train net.features from this step on (its frozen prefix cached)")
    p.add_argument("--steps", type=int, default=3, help="timed and profiled steps")
    p.add_argument("--onednn", action="store_true",
                   help="also sum oneDNN's kernels (a child process with DNNL_VERBOSE=1)")
    p.add_argument("--top", type=int, default=12, help="rows printed per table")
    p.add_argument("--out", default=None, help="folder for operators.json")
    p.add_argument("--verbose-child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parser().parse_args(argv)
    with _operators_one_by_one():
        if args.verbose_child:
            _verbose_child(args)
            return {}
        result = {"model": args.model, "size": args.size, "batch_size": args.batch_size,
                  "cut": args.cut, "steps": args.steps, "environment": environment(),
                  **profile_operators(args.model, args.size, batch=args.batch_size,
                                      cut=args.cut, steps=args.steps)}
    print(f"{args.model} at {args.size} px, batch {args.batch_size}, training from step "
          f"{args.cut}: {result['step_ms']:.0f} ms per step "
          f"({args.batch_size / result['step_ms'] * 1000:.1f} images/s)")
    print(f"MXNet operators ({result['operators_ms']:.0f} ms per step under the profiler):")
    for row in result["operators"][:args.top]:
        print(f"  {row['ms_per_step']:8.1f} ms {row['share']:6.1%} {row['calls_per_step']:5.0f}"
              f" calls  {row['operator']}")
    if args.onednn:
        result["onednn"] = _onednn_in_child(args)
        total = sum(r["ms_per_step"] for r in result["onednn"])
        print(f"oneDNN primitives ({total:.0f} ms per step; the rest of a step is MXNet's own "
              f"kernels, its engine and the optimizer):")
        for row in result["onednn"][:args.top]:
            print(f"  {row['ms_per_step']:8.1f} ms {row['calls_per_step']:5.0f} calls  "
                  f"{row['primitive']}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(os.path.join(args.out, "operators.json"),
                          json.dumps(result, indent=1))
        print(f"written: {os.path.join(args.out, 'operators.json')}")
    return result


if __name__ == "__main__":
    main()
