"""`python -m bench.speed --peer torch`: gluonft against PyTorch on the same nets, side by side.

For each net and input size, every repetition times, back to back (interleaved, so that both
frameworks see the same machine load), images/s of:

* training (regime ``full``, SGD with momentum, batch ``--batch-size``): gluonft's `fit` (one
  epoch over preloaded uint8 images at the input size, after a compiling one), a bare Gluon
  loop (hybridized block, ``autograd.record``, ``backward``, ``trainer.step`` over
  pre-normalised NDArrays), PyTorch eager (`bench.torch_peer`);
* forward (inference): gluonft's inference path (`gluonft.inference`: the fused oneDNN twin, as
  `predict_proba` and the feature cache run it, on pre-normalised batches), the bare Gluon block
  (hybridized, static memory), PyTorch eager (``eval()``, ``inference_mode``).

Random weights (speed does not depend on them) and random inputs; each figure runs for
``--seconds``; the table gives the median over ``--repeats`` and the ratios gluonft / PyTorch.
PyTorch runs in a process of its own (``--peer-python``; default: this Python, which has torch
after ``make torch`` now that gluonft.compat lets the two share a venv), so that each
framework's thread pool has the cores to itself while it is timed. Both use every core (2
threads here). The architectures' parameter counts are checked equal before timing.

    make torch
    python -m bench.speed --peer torch
    python -m bench.speed --peer torch --models mobilenet0.75 --sizes 64 --repeats 1
"""
from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

import gluonft
from gluonft.backbones import count_params
from gluonft.datasets import ImageSet
from gluonft.inference import fusion_available, inference_forward
from gluonft.results import environment
from gluonft.transforms import Augment

__all__ = ["PEER_MODELS", "PEER_SIZES", "PEER_PYTHON", "TorchPeer", "run_peer", "render_peer"]

ROOT = Path(__file__).resolve().parents[1]
PEER_MODELS = ("resnet18_v1", "mobilenet0.75", "efficientnet_lite0")
PEER_SIZES = (64, 160)
PEER_PYTHON = Path(sys.executable)
# (goal name, what, figure, threshold): ratios gluonft / PyTorch the issue asks for
GOALS = (("forward", "gluonft forward / PyTorch eager forward", "forward_vs_torch", 1.0),
         ("train_lite0", "efficientnet_lite0: gluonft fit / PyTorch train", "fit_vs_torch", 0.8))


class PeerUnavailable(RuntimeError):
    """The PyTorch side cannot run (no peer Python, or torch missing from it)."""


class TorchPeer:
    """A `bench.torch_peer` process, asked for one figure at a time."""

    def __init__(self, python: Path):
        if not Path(python).is_file():
            raise PeerUnavailable(
                f"no peer Python at {python}: pass --peer-python PATH to a Python that has "
                f"torch, or install torch here (`make torch`)")
        self.process = subprocess.Popen(
            [str(python), str(ROOT / "bench" / "torch_peer.py")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        first = self.process.stdout.readline()
        if not first:
            problem = self.process.stderr.read().strip().splitlines()
            self.close()
            raise PeerUnavailable(f"the peer Python {python} could not start bench/torch_peer"
                                  f".py: {problem[-1] if problem else 'no output'} (does it "
                                  f"have torch? `make torch`)")
        self.info = json.loads(first)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        answer = json.loads(self.process.stdout.readline() or '{"error": "peer exited"}')
        if "error" in answer:
            raise PeerUnavailable(f"PyTorch side failed on {request}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def _rate(step, batch: int, seconds: float) -> float:
    """Images/s of ``step`` (which returns an NDArray of its batch) over ``seconds``; each
    step is waited for, so MXNet's asynchronous engine cannot queue work past the clock."""
    for _ in range(2):  # warm up: compile, oneDNN primitives
        step().wait_to_read()
    mx.nd.waitall()
    count, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        step().wait_to_read()
        count += 1
    mx.nd.waitall()
    return count * batch / (time.perf_counter() - begin)


class GluonSide:
    """The MXNet figures for one net and size."""

    def __init__(self, model: str, size: int, batch: int, ctx):
        self.model, self.size, self.batch, self.ctx = model, size, batch, ctx
        self.net = gluonft.load_backbone(model, classes=10, weights=None, ctx=ctx, seed=0)
        self.params = count_params(self.net)
        rng = np.random.RandomState(0)
        self.x = mx.nd.array(rng.normal(size=(batch, 3, size, size)).astype(np.float32),
                             ctx=ctx)
        self.y = mx.nd.array(rng.randint(0, 10, batch), ctx=ctx)
        # fit's data: 4 batches of uint8 images already at the input size (no resizing)
        n = 4 * batch
        self.images = ImageSet(rng.randint(0, 256, (n, size, size, 3)).astype(np.uint8),
                               np.arange(n) % 10, tuple(f"c{i}" for i in range(10)), "random")

    def bare_train(self, seconds: float) -> float:
        net = gluonft.load_backbone(self.model, classes=10, weights=None, ctx=self.ctx, seed=0)
        net.hybridize(static_alloc=True, static_shape=True)
        trainer = gluon.Trainer(net.collect_params(), "sgd",
                                {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
        loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

        def step():
            with autograd.record():
                loss = loss_fn(net(self.x), self.y)
            loss.backward()
            trainer.step(self.batch)
            return loss
        return _rate(step, self.batch, seconds)

    def fit(self, seconds: float) -> float:
        net = gluonft.load_backbone(self.model, classes=10, weights=None, ctx=self.ctx, seed=0)
        gluonft.apply_regime(net, "full")
        # one compiling epoch, then as many timed ones as fill ``seconds`` (at least 1)
        history = gluonft.fit(net, self.images, epochs=1, batch_size=self.batch, lr=0.01,
                              augment=Augment.none(), image_size=self.size, ctx=self.ctx,
                              seed=0, progress=False)
        per_epoch = history.epochs[0]["seconds"]
        epochs = 1 + max(1, int(seconds / per_epoch))
        history = gluonft.fit(net, self.images, epochs=epochs, batch_size=self.batch, lr=0.01,
                              augment=Augment.none(), image_size=self.size, ctx=self.ctx,
                              seed=0, progress=False)
        return len(self.images) / statistics.median(e["seconds"] for e in history.epochs[1:])

    def bare_forward(self, seconds: float) -> float:
        self.net.hybridize(static_alloc=True, static_shape=True)
        return _rate(lambda: self.net(self.x), self.batch, seconds)

    def gluonft_forward(self, seconds: float) -> float:
        forward = inference_forward(self.net, [self.ctx])  # one pass: the twin is built once
        return _rate(lambda: forward(self.x), self.batch, seconds)


def _freed(rate: float) -> float:
    """``rate``, once the net just measured has given back its memory: statically allocated
    graphs go when the collector reaches their cycles, and EfficientNet-B0 training at 224 px
    holds 9 GB (two of them beside PyTorch did not fit in 24 GB)."""
    gc.collect()
    return rate


def run_peer(*, models=PEER_MODELS, sizes=PEER_SIZES, repeats: int = 3, batch_size: int = 32,
             seconds: float = 3.0, peer_python: Path = PEER_PYTHON, log=print) -> dict:
    """Measure both frameworks; returns the record that `bench.speed` saves."""
    ctx = mx.cpu()
    peer = TorchPeer(peer_python)
    rows, started = [], time.time()
    try:
        for model in models:
            for size in sizes:
                side = GluonSide(model, size, batch_size, ctx)
                ask = dict(net=model, size=size, batch=batch_size, seconds=seconds)
                torch_params = peer.ask(mode="forward", seconds=0.0, **{
                    k: v for k, v in ask.items() if k != "seconds"})["params"]
                if torch_params != side.params:
                    raise RuntimeError(f"{model}: the PyTorch net has {torch_params:,} "
                                       f"parameters, gluonft's {side.params:,}: not the same "
                                       f"architecture")
                samples: List[Dict[str, float]] = []
                for r in range(repeats):
                    s = {"bare_train": _freed(side.bare_train(seconds)),
                         "torch_train": peer.ask(mode="train", **ask)["images_per_s"],
                         "fit": _freed(side.fit(seconds)),
                         "bare_forward": _freed(side.bare_forward(seconds)),
                         "torch_forward": peer.ask(mode="forward", **ask)["images_per_s"],
                         "gluonft_forward": _freed(side.gluonft_forward(seconds))}
                    s["fit_vs_torch"] = s["fit"] / s["torch_train"]
                    s["bare_train_vs_torch"] = s["bare_train"] / s["torch_train"]
                    s["forward_vs_torch"] = s["gluonft_forward"] / s["torch_forward"]
                    s["bare_forward_vs_torch"] = s["bare_forward"] / s["torch_forward"]
                    samples.append(s)
                    log(f"  {model} @ {size}px {r + 1}/{repeats}: train fit/torch "
                        f"{s['fit_vs_torch']:.2f}, forward gluonft/torch "
                        f"{s['forward_vs_torch']:.2f} ({time.time() - started:.0f} s)",
                        flush=True)
                median = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
                rows.append({"model": model, "size": size, "params": side.params,
                             "median": median, "samples": samples})
    finally:
        peer.close()
    return {"peer": "torch", "torch": peer.info, "rows": rows,
            "config": {"models": list(models), "sizes": list(sizes), "repeats": repeats,
                       "batch_size": batch_size, "seconds": seconds},
            "fusion": fusion_available([ctx]) or "on",
            "goals": _goals(rows), "environment": {
                **environment(devices=[ctx]), "omp_num_threads": os.environ.get(
                    "OMP_NUM_THREADS"), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())},
            "seconds": time.time() - started,
            "command": "python -m bench.speed " + " ".join(sys.argv[1:])}


def _goals(rows) -> List[dict]:
    out = []
    for name, what, key, threshold in GOALS:
        chosen = [r for r in rows if name != "train_lite0" or r["model"] == "efficientnet_lite0"]
        for r in chosen:
            value = r["median"][key]
            out.append({"goal": name, "what": what, "model": r["model"], "size": r["size"],
                        "value": value, "threshold": threshold, "met": value >= threshold})
    return out


COLUMNS = (("fit", "fit"), ("bare Gluon", "bare_train"), ("PyTorch", "torch_train"),
           ("fit / PyTorch", "fit_vs_torch"), ("gluonft", "gluonft_forward"),
           ("bare Gluon", "bare_forward"), ("PyTorch", "torch_forward"),
           ("gluonft / PyTorch", "forward_vs_torch"), ("bare / PyTorch", "bare_forward_vs_torch"))


def render_peer(record: dict) -> str:
    """The markdown table and the goals."""
    c, env = record["config"], record["environment"]
    lines = [f"# bench.speed --peer torch: {env['utc']}", "", f"`{record['command']}`  ",
             f"{env['cpu_count']} CPUs ({env['cpu']}); MXNet {env['versions']['mxnet']} "
             f"(oneDNN fusion: {record['fusion']}) against PyTorch {record['torch']['torch']} "
             f"({record['torch']['threads']} threads); batch {c['batch_size']}, random weights, "
             f"{c['seconds']} s per figure, median of {c['repeats']} interleaved repetitions; "
             f"{record['seconds']:.0f} s in all.", "",
             "| net | px | params | train img/s: " + " | ".join(h for h, _ in COLUMNS[:4])
             + " | forward img/s: " + " | ".join(h for h, _ in COLUMNS[4:]) + " |",
             "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for row in record["rows"]:
        cells = [(f"{row['median'][k]:.2f}" if "_vs_" in k else f"{row['median'][k]:.1f}")
                 for _, k in COLUMNS]
        lines.append(f"| {row['model']} | {row['size']} | {row['params']:,} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Goals:"]
    for g in record["goals"]:
        lines.append(f"- {g['what']} >= {g['threshold']}: {g['model']}@{g['size']} "
                     f"{g['value']:.2f} {'met' if g['met'] else 'MISSED'}")
    return "\n".join(lines) + "\n"
