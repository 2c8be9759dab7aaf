"""`python -m bench.speed`: how fast `gluonft.fit` trains, against a bare Gluon loop and per regime.

For each backbone and input size, every repetition runs these side by side (interleaved), and
each figure is the median over the repetitions:

* ``fit`` (regime ``full``, no augmentation, images already at the input size) against a bare
  Gluon loop over preloaded, pre-normalised NDArrays (same net, batch, device, optimiser:
  hybridized, ``autograd.record``, ``backward``, ``trainer.step``). Each fit epoch is followed
  by a bare epoch, so both see the same machine load: per repetition, the median of fit's
  timed epochs (after the compiling first one) against the median of the bare epochs; short
  epochs are timed more often (2-8 per figure, ~4 s). Images/s and their ratio;
* epoch time per regime: ``full``, ``last_k:1`` (its frozen prefix run every epoch, and cached),
  ``head`` uncached and cached;
* wall time of 10 head-only epochs with validation every epoch, uncached vs cached: features
  computed in the run (included in its time), and read from a ``cache_dir`` an earlier run
  wrote;
* the data loader alone: `iterate_batches` + random augmentation + `BatchTransform` from the
  stored images to the input size.

Random backbone weights (speed does not depend on them) and the real CIFAR-10 subset from
``../shared`` when present, else random images. Targets, as ratios: fit >= 0.95 of the bare
loop; 10 cached head epochs >= 10x faster than uncached; a ``last_k:1`` epoch <= 0.6 of a full
one. The default run takes about 9 minutes on 2 CPU cores (15 when other jobs keep them
busy).

    python -m bench.speed
    python -m bench.speed --models resnet18_v1 --sizes 32 --repeats 2 --out runs/speed-quick
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

import gluonft
from gluonft.datasets import ImageSet, cifar10
from gluonft.datasets.imageset import iterate_batches
from gluonft.fileio import atomic_write_text
from gluonft.results import environment
from gluonft.transforms import Augment, BatchTransform, sample_augment

from .peer import PEER_MODELS, PEER_PYTHON, PEER_SIZES, PeerUnavailable, render_peer, run_peer

__all__ = ["SpeedConfig", "main", "run", "TARGETS"]

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
NONE = Augment.none()
HEAD_EPOCHS = 10
SECONDS_PER_FIGURE = 4.0  # timed epochs per figure: enough to span this, at least 2 ...
MAX_TIMED_EPOCHS = 8      # ... and at most this many
# (name, what it compares, threshold, "min" = the figure must be at least the threshold)
TARGETS = (("fit_vs_bare", "fit images/s / bare loop images/s", 0.95, "min"),
           ("cached_speedup", "10 head epochs: uncached wall time / cached (features computed "
                              "in the run)", 10.0, "min"),
           ("cached_speedup_warm", "10 head epochs: uncached wall time / cached (features on "
                                   "disk from an earlier run)", 10.0, "min"),
           ("last_k_vs_full", "last_k:1 epoch / full epoch", 0.6, "max"))


@dataclass(frozen=True)
class SpeedConfig:
    """What `python -m bench.speed` measures (every field is a command-line flag)."""
    models: Tuple[str, ...] = ("resnet18_v1", "mobilenet0.5")
    sizes: Tuple[int, ...] = (32, 96)
    repeats: int = 3
    batch_size: int = 64
    images: int = 512
    val_images: int = 128
    lr: float = 0.01
    out: Optional[str] = None
    data: str = "auto"  # "auto": ../shared CIFAR-10 subset if present, else random; "random"
    peer: Optional[str] = None  # "torch": the side-by-side comparison of bench.peer instead
    peer_python: Optional[str] = None
    seconds: float = 3.0  # per figure, with --peer


def _parse(argv: Optional[Sequence[str]]) -> SpeedConfig:
    d = SpeedConfig()
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n")[0])
    p.add_argument("--models", default=None,
                   help=f"comma-separated backbones (default: {','.join(d.models)}; with "
                        f"--peer: {','.join(PEER_MODELS)})")
    p.add_argument("--sizes", default=None,
                   help=f"comma-separated input sides in pixels (default: "
                        f"{','.join(map(str, d.sizes))}; with --peer: "
                        f"{','.join(map(str, PEER_SIZES))})")
    p.add_argument("--repeats", type=int, default=d.repeats, help="repetitions per figure")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default: {d.batch_size}; with --peer: 32")
    p.add_argument("--images", type=int, default=d.images, help="training images")
    p.add_argument("--val-images", type=int, default=d.val_images,
                   help="validation images of the 10-epoch head runs")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--data", choices=("auto", "random"), default=d.data)
    p.add_argument("--out", default=None,
                   help="output folder (default: runs/speed-<UTC timestamp>)")
    p.add_argument("--peer", choices=("torch",), default=None,
                   help="compare with PyTorch on the same nets instead (bench.peer): train "
                        "and forward images/s side by side")
    p.add_argument("--peer-python", default=None,
                   help="the Python that has torch (default: this one; `make torch` "
                        "installs torch beside gluonft)")
    p.add_argument("--seconds", type=float, default=d.seconds,
                   help="seconds per figure with --peer (default: %(default)s)")
    a = p.parse_args(argv)
    if a.batch_size is None:
        a.batch_size = 32 if a.peer else d.batch_size
    if a.models is None:
        a.models = ",".join(PEER_MODELS if a.peer else d.models)
    if a.sizes is None:
        a.sizes = ",".join(map(str, PEER_SIZES if a.peer else d.sizes))
    try:
        sizes = tuple(int(s) for s in a.sizes.split(",") if s.strip())
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {a.sizes!r}")
    models = tuple(m.strip() for m in a.models.split(",") if m.strip())
    for name in models:
        try:
            gluonft.backbones.family_of(name)
        except gluonft.UnknownBackbone as error:
            p.error(str(error))
    for flag, value, low in (("--repeats", a.repeats, 1), ("--batch-size", a.batch_size, 1),
                             ("--images", a.images, 2), ("--val-images", a.val_images, 1),
                             ("--seconds", a.seconds, 0.1)):
        if value < low:
            p.error(f"{flag} must be at least {low}, got {value}")
    if not models or not sizes:
        p.error("--models and --sizes need at least one value each")
    return SpeedConfig(models=models, sizes=sizes, repeats=a.repeats, batch_size=a.batch_size,
                       images=a.images, val_images=a.val_images, lr=a.lr, out=a.out,
                       data=a.data, peer=a.peer, peer_python=a.peer_python,
                       seconds=a.seconds)


# --- data ------------------------------------------------------------------------------------

def _load_data(config: SpeedConfig) -> Tuple[ImageSet, ImageSet, str]:
    root = SHARED / "data" / "cifar-10-subset"
    if config.data == "auto" and root.is_dir():
        train = cifar10(str(root.resolve()), train=True)
        test = cifar10(str(root.resolve()), train=False)
        pick = lambda s, n: s.take(np.random.RandomState(0).permutation(len(s))[:n])  # noqa
        return (pick(train, config.images), pick(test, config.val_images),
                "real CIFAR-10 subset (../shared)")
    rng = np.random.RandomState(0)
    make = lambda n: ImageSet(rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8),  # noqa
                              np.arange(n) % 10, tuple(f"c{i}" for i in range(10)), "random")
    return make(config.images), make(config.val_images), "random 32x32 images"


def _resized(data: ImageSet, size: int) -> ImageSet:
    """The images resampled once to ``size`` (uint8), so the timed loops need no resizing."""
    if data.images.shape[1:3] == (size, size):
        return data
    x = mx.nd.array(data.images, dtype="uint8").astype("float32").transpose((0, 3, 1, 2))
    x = mx.nd.contrib.BilinearResize2D(x, height=size, width=size)
    images = x.transpose((0, 2, 3, 1)).round().clip(0, 255).asnumpy().astype(np.uint8)
    return ImageSet(images, data.labels, data.classes, f"{data.source} at {size} px")


# --- the measured things ---------------------------------------------------------------------

def _net(model: str, regime: str, ctx) -> gluonft.TransferNet:
    net = gluonft.load_backbone(model, classes=10, weights=None, ctx=ctx, seed=0)
    gluonft.apply_regime(net, regime)
    return net


class BareLoop:
    """The reference: a hybridized net trained over preloaded, pre-normalised NDArrays."""

    def __init__(self, model: str, data: ImageSet, *, size: int, batch_size: int, lr: float,
                 ctx):
        self.net = _net(model, "full", ctx)
        self.net.hybridize(static_alloc=True, static_shape=True)
        params = [p for p in self.net.collect_params().values() if p.grad_req != "null"]
        self.trainer = gluon.Trainer(params, "sgd", {"learning_rate": lr, "momentum": 0.9,
                                                     "wd": 1e-4})
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        tf = BatchTransform(size, self.net.family.mean, self.net.family.std)
        self.batches = []
        for images, labels in iterate_batches(data, batch_size, shuffle=False):
            self.batches.append((tf(mx.nd.array(images, ctx=ctx, dtype="uint8")),
                                 mx.nd.array(labels, ctx=ctx, dtype="int32")))
        mx.nd.waitall()
        self.images = len(data)
        self.epoch()  # compile and warm up
        self.estimate = self.epoch()  # seconds per epoch, to size the measurements

    def epoch(self) -> float:
        """Seconds for one epoch."""
        mx.nd.waitall()
        begin = time.perf_counter()
        for x, y in self.batches:
            with autograd.record():
                loss = self.loss(self.net(x), y)
            loss.backward()
            self.trainer.step(x.shape[0])
        mx.nd.waitall()
        return time.perf_counter() - begin


def _fit(model, regime, train, val=None, *, epochs, config, ctx, size, callbacks=(), **kw):
    net = _net(model, regime, ctx)
    begin = time.perf_counter()
    history = gluonft.fit(net, train, val, epochs=epochs, batch_size=config.batch_size,
                          lr=config.lr, augment=NONE, image_size=size, ctx=ctx, seed=0,
                          progress=False, callbacks=callbacks, **kw)
    mx.nd.waitall()
    return history, time.perf_counter() - begin


def _loader_images_per_s(data: ImageSet, size: int, batch_size: int, ctx, seed: int) -> float:
    """iterate_batches + random affine augmentation + BatchTransform alone."""
    tf = BatchTransform(size, gluonft.transforms.IMAGENET_MEAN, gluonft.transforms.IMAGENET_STD)
    rng = np.random.RandomState(seed)
    mx.nd.waitall()
    begin = time.perf_counter()
    out = []
    for images, _ in iterate_batches(data, batch_size, shuffle=True, seed=seed):
        affine = sample_augment(len(images), Augment(), rng)
        out.append(tf(mx.nd.array(images, ctx=ctx, dtype="uint8"), affine))
    mx.nd.waitall()
    return len(data) / (time.perf_counter() - begin)


def _one_repetition(model, size, train_s, val_s, train_raw, bare, warm_dir, config, ctx,
                    r) -> dict:
    """One of each measurement, back to back."""
    # Short epochs are measured more often, so that each figure spans a few seconds of a
    # machine whose load changes from second to second.
    timed = int(min(MAX_TIMED_EPOCHS, max(2, math.ceil(SECONDS_PER_FIGURE / bare.estimate))))
    sample = {"timed_epochs": timed}
    bare_seconds = []
    # A bare epoch after each fit epoch: fit 1 (compiles), bare, fit 2, bare, fit 3, bare ...
    full, _ = _fit(model, "full", train_s, epochs=1 + timed, config=config, ctx=ctx,
                   size=size, cache_features=False,
                   callbacks=[lambda epoch, logs: bare_seconds.append(bare.epoch())])
    sample["full_epoch_s"] = statistics.median(e["seconds"] for e in full.epochs[1:])
    sample["fit_images_per_s"] = len(train_s) / sample["full_epoch_s"]
    sample["bare_images_per_s"] = bare.images / statistics.median(bare_seconds)
    sample["fit_vs_bare"] = sample["fit_images_per_s"] / sample["bare_images_per_s"]

    last, _ = _fit(model, "last_k:1", train_s, epochs=1 + timed, config=config, ctx=ctx,
                   size=size, cache_features=False)
    sample["last_k_epoch_s"] = statistics.median(e["seconds"] for e in last.epochs[1:])
    sample["last_k_vs_full"] = sample["last_k_epoch_s"] / sample["full_epoch_s"]
    last_cached, _ = _fit(model, "last_k:1", train_s, epochs=1 + timed, config=config,
                          ctx=ctx, size=size, cache_features=True)
    sample["last_k_cached_epoch_s"] = statistics.median(
        e["seconds"] for e in last_cached.epochs[1:])

    sample["loader_images_per_s"] = _loader_images_per_s(train_raw, size, config.batch_size,
                                                         ctx, seed=r)
    for name, cache, folder in (("head_uncached", False, None), ("head_cached", True, None),
                                ("head_cached_warm", True, warm_dir)):
        history, wall = _fit(model, "head", train_s, val_s, epochs=HEAD_EPOCHS, config=config,
                             ctx=ctx, size=size, cache_features=cache, cache_dir=folder)
        sample[f"{name}_epoch_s"] = statistics.median(e["seconds"] for e in history.epochs[1:])
        sample[f"{name}_10_epochs_s"] = wall
        if cache:
            cached = history.settings["feature_cache"]
            assert cached["train"]["source"] == ("disk" if folder else "computed"), cached
            sample[f"{name}_feature_s"] = cached["train"]["seconds"] + cached["val"]["seconds"]
    uncached = sample["head_uncached_10_epochs_s"]
    sample["cached_speedup"] = uncached / sample["head_cached_10_epochs_s"]
    sample["cached_speedup_warm"] = uncached / sample["head_cached_warm_10_epochs_s"]
    return sample


def run(config: SpeedConfig, *, log=print) -> dict:
    """Measure everything; returns the record that `main` saves."""
    ctx = mx.cpu() if gluonft.devices()[0].device_type == "cpu" else gluonft.devices()[0]
    train_raw, val_raw, data_source = _load_data(config)
    rows = []
    started = time.time()
    for model in config.models:
        for size in config.sizes:
            train_s, val_s = _resized(train_raw, size), _resized(val_raw, size)
            bare = BareLoop(model, train_s, size=size, batch_size=config.batch_size,
                            lr=config.lr, ctx=ctx)
            # An earlier run's features on disk, for the warm-cache figure.
            warm_dir = tempfile.mkdtemp(prefix="gluonft-speed-features-")
            _fit(model, "head", train_s, val_s, epochs=1, config=config, ctx=ctx, size=size,
                 cache_features=True, cache_dir=warm_dir)
            samples: List[Dict[str, float]] = []
            try:
                for r in range(config.repeats):
                    samples.append(_one_repetition(model, size, train_s, val_s, train_raw, bare,
                                                   warm_dir, config, ctx, r))
                    log(f"  {model} @ {size}px repetition {r + 1}/{config.repeats}: "
                        f"fit/bare {samples[-1]['fit_vs_bare']:.3f}, cached speed-up "
                        f"{samples[-1]['cached_speedup']:.1f}x (warm "
                        f"{samples[-1]['cached_speedup_warm']:.1f}x), last_k:1/full "
                        f"{samples[-1]['last_k_vs_full']:.2f} ({time.time() - started:.0f} s)",
                        flush=True)
            finally:
                shutil.rmtree(warm_dir, ignore_errors=True)
            medians = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            rows.append({"model": model, "size": size, "median": medians, "samples": samples,
                         "targets": _check(medians)})
    return {"config": asdict(config), "data": data_source, "rows": rows,
            "targets": [dict(zip(("name", "what", "threshold", "kind"), t)) for t in TARGETS],
            "all_targets_met": all(t["met"] for row in rows for t in row["targets"].values()),
            "environment": _environment(ctx), "seconds": time.time() - started,
            "command": "python -m bench.speed " + " ".join(sys.argv[1:])}


def _check(medians: Dict[str, float]) -> Dict[str, dict]:
    out = {}
    for name, _, threshold, kind in TARGETS:
        value = medians[name]
        out[name] = {"value": value, "threshold": threshold,
                     "met": value >= threshold if kind == "min" else value <= threshold}
    return out


def _environment(ctx) -> dict:
    return {**environment(devices=[ctx]),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# --- output ----------------------------------------------------------------------------------

COLUMNS = (("bare img/s", "bare_images_per_s", "{:.0f}"),
           ("fit img/s", "fit_images_per_s", "{:.0f}"),
           ("fit/bare", "fit_vs_bare", "{:.3f}"),
           ("loader img/s", "loader_images_per_s", "{:.0f}"),
           ("full s/ep", "full_epoch_s", "{:.2f}"),
           ("last_k:1 s/ep", "last_k_epoch_s", "{:.2f}"),
           ("last_k:1/full", "last_k_vs_full", "{:.2f}"),
           ("last_k:1 cached s/ep", "last_k_cached_epoch_s", "{:.3f}"),
           ("head s/ep", "head_uncached_epoch_s", "{:.3f}"),
           ("head cached s/ep", "head_cached_epoch_s", "{:.3f}"),
           ("10 head ep s", "head_uncached_10_epochs_s", "{:.1f}"),
           ("10 cached ep s", "head_cached_10_epochs_s", "{:.2f}"),
           ("speed-up", "cached_speedup", "{:.1f}x"),
           ("10 warm-cache ep s", "head_cached_warm_10_epochs_s", "{:.2f}"),
           ("warm speed-up", "cached_speedup_warm", "{:.1f}x"))


def render(record: dict) -> str:
    """The markdown table and the target verdicts."""
    c = record["config"]
    lines = [f"# bench.speed: {record['environment']['utc']}", "",
             f"`{record['command']}`  ", f"{record['environment']['cpu_count']} CPUs "
             f"({record['environment']['cpu']}), {', '.join(record['environment']['devices'])}, "
             f"MXNet {record['environment']['versions']['mxnet']}; {c['images']} training images "
             f"({record['data']}), batch {c['batch_size']}, random backbone weights; median of "
             f"{c['repeats']} interleaved repetitions; {record['seconds']:.0f} s in all.", "",
             "| model | px | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for row in record["rows"]:
        cells = [fmt.format(row["median"][key]) for _, key, fmt in COLUMNS]
        lines.append(f"| {row['model']} | {row['size']} | " + " | ".join(cells) + " |")
    lines += ["", "s/ep: seconds of the training loop of one epoch (median of the timed "
              "epochs after a compiling first one); 10 head ep: wall time of `fit` for 10 "
              "head-only epochs with "
              f"{c['val_images']} validation images evaluated every epoch (cached: features of "
              "train and val computed once in the run, included; warm cache: features read "
              "from the `cache_dir` an earlier run wrote).", "", "Targets:"]
    for name, what, threshold, kind in TARGETS:
        sign = ">=" if kind == "min" else "<="
        verdicts = [f"{row['model']}@{row['size']}: {row['targets'][name]['value']:.3f} "
                    f"{'met' if row['targets'][name]['met'] else 'MISSED'}"
                    for row in record["rows"]]
        lines.append(f"- {what} {sign} {threshold}: " + "; ".join(verdicts))
    lines.append(f"\nAll targets met: {'yes' if record['all_targets_met'] else 'no'}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark, print the table and save ``speed.json`` and ``speed.md``."""
    config = _parse(argv)
    out = Path(config.out or f"runs/speed-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    if config.peer:
        return _main_peer(config, out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench.speed: {', '.join(config.models)} at {', '.join(map(str, config.sizes))} px, "
          f"{config.repeats} repetitions -> {out}", flush=True)
    record = run(config)
    return _save(record, render(record), out, "speed")


def _save(record: dict, text: str, out: Path, name: str) -> dict:
    """``<name>.json`` and ``<name>.md`` in ``out``, atomically; the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(record, indent=1))
    atomic_write_text(out / f"{name}.md", text)
    print(text)
    print(f"saved {out / f'{name}.json'} and {out / f'{name}.md'}")
    return record


def _main_peer(config: SpeedConfig, out: Path) -> dict:
    """``--peer torch``: bench.peer's table, saved as ``peer.json`` and ``peer.md``."""
    print(f"bench.speed --peer {config.peer}: {', '.join(config.models)} at "
          f"{', '.join(map(str, config.sizes))} px, {config.repeats} repetitions -> {out}",
          flush=True)
    try:
        record = run_peer(models=config.models, sizes=config.sizes, repeats=config.repeats,
                          batch_size=config.batch_size, seconds=config.seconds,
                          peer_python=Path(config.peer_python or PEER_PYTHON))
    except PeerUnavailable as error:
        raise SystemExit(f"bench.speed --peer torch: {error}") from None
    return _save(record, render_peer(record), out, "peer")


if __name__ == "__main__":
    main()
