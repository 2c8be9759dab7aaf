"""`python -m bench.distributed`: one process against two workers of a kvstore job on this
machine, and the bytes each worker pushes per step, per regime.

For each regime (``head``, ``last_k:2``, ``full``) of ``mobilenet0.75`` (its real ImageNet
weights from ``../shared``) on real CIFAR-10 images at ``--size`` px, side by side in one run:

* one process, ``batch_size`` 64, one CPU context;
* ``python -m gluonft.launch --workers 2 --servers 1``: two workers of 32 images each per step
  (the same global batch of 64), ``kvstore="dist_sync"``.

Each trains ``--epochs`` epochs (the figure is the median epoch after the first, which
compiles) and reports the
images/s of the job (the workers' share of each global batch together); each worker counts the
bytes its Trainer pushed (`gluonft.distributed.Cluster.pushed_bytes`), per step. Only trainable
parameters have gradients, so head pushes the head's weights' size, full the whole net's. The
two workers share the 2 cores here: expect no speed-up, only the cost of the exchange.

From the measured bytes per step B, the time an exchange would take on 8 GPU nodes (one worker
and one server each, 25 Gb/s links): each node sends its B and, as a server, 1/8 of every
node's pulls: about 2B each way per step, ``2B / (25e9 / 8)`` seconds when nothing overlaps.

    python -m bench.distributed                 # about 6 minutes on 2 cores
    python -m bench.distributed --size 32 --images 512 --out runs/distributed-quick
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import mxnet as mx

import gluonft
from gluonft.fileio import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
REGIMES = ("head", "last_k:2", "full")
GLOBAL_BATCH = 64
LINK_BITS_PER_S = 25e9
NODES = 8


def measure(regime: str, kvstore: str, batch: int, size: int, images: int,
            epochs: int) -> Dict[str, float]:
    """One process's (or worker's) figures; run as its own process (under the launcher for a
    distributed kvstore)."""
    train = gluonft.datasets.cifar10(SHARED / "data" / "cifar-10-subset", train=True,
                                     download=False)
    train = train.take(range(images))
    net = gluonft.load_backbone("mobilenet0.75", classes=10, ctx=mx.cpu(),
                                weights=str(SHARED / "weights" /
                                            "mobilenet0.75-imagenet.params"))
    gluonft.apply_regime(net, regime)
    kv = None if kvstore == "none" else kvstore
    history = gluonft.fit(net, train, epochs=epochs, batch_size=batch, lr=0.01,
                          image_size=size, ctx=mx.cpu(), progress=False, kvstore=kv,
                          augment=gluonft.Augment(flip=True), cache_features=False)
    out = {"regime": regime, "kvstore": kvstore, "batch_size": batch,
           # the median epoch after the first (which compiles)
           "images_per_s": statistics.median(history["images_per_s"][1:]),
           "epoch_seconds": [round(s, 3) for s in history["seconds"]],
           "trainable_params": history.settings["trainable_params"],
           "total_params": sum(p.data().size for p in net.collect_params().values())}
    if kv:
        cluster = gluonft.distributed.Cluster.join(kv)
        steps = epochs * -(-images // (batch * cluster.workers))
        out.update(rank=cluster.rank, workers=cluster.workers,
                   pushed_bytes_per_step=cluster.pushed_bytes / steps)
    return out


def _results(stdout: str) -> List[dict]:
    found = []
    for line in stdout.splitlines():
        text = line.split("] ", 1)[1] if line.startswith("[worker") else line
        if text.startswith("{") and '"images_per_s"' in text:
            found.append(json.loads(text))
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.distributed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="input side (default 64)")
    p.add_argument("--images", type=int, default=1024, help="training images (default 1024)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run; the figure is the "
                   "median of all but the first (default 4)")
    p.add_argument("--gpu-step-ms", type=float, default=50.0,
                   help="the compute time of one step on a GPU node, for the projection "
                        "(default 50 ms: mobilenet at 224 px, batch 64, on a V100-class GPU)")
    p.add_argument("--out", default="runs/distributed")
    p.add_argument("--measure", nargs=2, metavar=("REGIME", "KVSTORE"), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=GLOBAL_BATCH, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure, args.batch, args.size, args.images,
                                 args.epochs)), flush=True)
        return 0
    from tqdm.auto import tqdm

    common = ["--size", str(args.size), "--images", str(args.images), "--epochs",
              str(args.epochs)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
    rows = []
    for regime in tqdm(REGIMES, desc="bench.distributed", unit="regime"):
        one = subprocess.run([sys.executable, "-m", "bench.distributed", "--measure", regime,
                              "none", "--batch", str(GLOBAL_BATCH), *common], cwd=ROOT,
                             env=env, capture_output=True, text=True)
        two = subprocess.run([sys.executable, "-m", "gluonft.launch", "--workers", "2",
                              "--servers", "1", "--", sys.executable, "-m",
                              "bench.distributed", "--measure", regime, "dist_sync", "--batch",
                              str(GLOBAL_BATCH // 2), *common], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        if one.returncode or two.returncode:
            raise SystemExit(f"bench.distributed: {regime} failed:\n{one.stderr[-2000:]}"
                             f"\n{two.stdout[-3000:]}")
        (single,), workers = _results(one.stdout), _results(two.stdout)
        pushed = max(w["pushed_bytes_per_step"] for w in workers)
        exchange_s = 2 * pushed / (LINK_BITS_PER_S / 8)
        rows.append({
            "regime": regime, "one_process_images_per_s": round(single["images_per_s"], 1),
            # fit logs the job's images (summed over the workers) per second of the worker
            "two_workers_images_per_s": round(min(w["images_per_s"] for w in workers), 1),
            "trainable_params": single["trainable_params"],
            "total_params": single["total_params"],
            "pushed_bytes_per_step": pushed,
            "trainable_bytes": 4 * single["trainable_params"],
            "exchange_ms_8_nodes_25gbps": round(1000 * exchange_s, 2),
            "scaling_efficiency_8_nodes": round(args.gpu_step_ms
                                                / (args.gpu_step_ms + 1000 * exchange_s), 3)})
        tqdm.write(json.dumps(rows[-1]))
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "distributed.json"), {
        "settings": {"size": args.size, "images": args.images, "epochs": args.epochs,
                     "global_batch": GLOBAL_BATCH, "gpu_step_ms": args.gpu_step_ms,
                     "link_bits_per_s": LINK_BITS_PER_S, "nodes": NODES},
        "rows": rows})
    print(f"{'regime':9} {'1 proc img/s':>12} {'2 workers':>9} {'trainable':>10} "
          f"{'pushed B/step':>13} {'8x25Gb/s ms':>11} {'efficiency':>10}")
    for r in rows:
        print(f"{r['regime']:9} {r['one_process_images_per_s']:12.0f} "
              f"{r['two_workers_images_per_s']:9.0f} {r['trainable_params']:10,d} "
              f"{r['pushed_bytes_per_step']:13,.0f} {r['exchange_ms_8_nodes_25gbps']:11.2f} "
              f"{r['scaling_efficiency_8_nodes']:10.3f}")
    print(f"written: {os.path.abspath(args.out)}/distributed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
