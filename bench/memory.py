"""`python -m bench.memory`: peak memory and images/s of a fit epoch, photos in memory against
photos in a decoded store on disk (`gluonft.datasets.store`), for folders of N photos.

The photos are the real CIFAR-10 JPEGs of ``../shared/data/cifar10-jpg.tar.gz``, extracted
once to ``--work`` (a temporary folder); a folder of N photos is N/10 per class of its
``train/``, linked, not copied. For every N and mode a fresh process loads the folder with
`image_folder` (``on_disk=False`` or ``True``) and trains one epoch of ``cifar_resnet20_v1``,
head only, with augmentation (so the frozen backbone runs on every batch, read from the
images each step), and reports:

* ``peak_anon_mb``: the most anonymous memory the process held (RssAnon, sampled every 20
  ms): what the machine must give it. The pages of a memmap are the kernel's file cache, which
  it reclaims under pressure; they count in the total RSS only while cached;
* ``peak_rss_mb``: the peak total resident set (VmHWM), file pages included;
* ``load_s`` (decoding; on disk a second load reuses the store: ``reload_s``), ``images_per_s``
  of the epoch.

    python -m bench.memory                       # N = 1000, 10000, 50000 (about 6 minutes)
    python -m bench.memory --sizes 1000 --out runs/memory-quick
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import mxnet as mx

import gluonft
from gluonft.datasets import image_folder
from gluonft.datasets.store import is_on_disk
from gluonft.fileio import atomic_write_csv, atomic_write_json

from .photos import SHARED, cifar10_jpg, link_photos

WEIGHTS = SHARED / "weights" / "cifar_resnet20_v1-cifar10.params"
MODES = ("memory", "disk")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _folder(root: Path, work: Path, n: int) -> Path:
    """work/n<N>/train/<class>/: the first N/10 photos of each class, as symbolic links."""
    out = work / f"n{n}"
    if not (out / ".made").exists():
        for cls in sorted(p.name for p in (root / "train").iterdir() if p.is_dir()):
            link_photos(sorted((root / "train" / cls).iterdir())[:n // 10],
                        out / "train" / cls)
        (out / ".made").touch()
    return out


def measure(folder: str, mode: str, store: str) -> Dict[str, float]:
    """One process's figures (see the module docstring); run in a fresh process."""
    peak = {"anon": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["anon"] = max(peak["anon"], _status_kb("RssAnon"))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    base = _status_kb("RssAnon")
    begin = time.perf_counter()
    train = image_folder(folder, image_size=32, split="train", on_disk=mode == "disk",
                         store=store)
    load_s = time.perf_counter() - begin
    reload_s = None
    if mode == "disk":
        begin = time.perf_counter()
        train = image_folder(folder, image_size=32, split="train", on_disk=True, store=store)
        reload_s = time.perf_counter() - begin
    assert is_on_disk(train.images) == (mode == "disk")
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=str(WEIGHTS),
                                ctx=mx.cpu())
    gluonft.apply_regime(net, "head")
    history = gluonft.fit(net, train, epochs=1, batch_size=128, lr=0.05, ctx=mx.cpu(),
                          augment=gluonft.Augment(flip=True, translate=0.125),
                          cache_features=False, progress=False)
    stop.set()
    sampler.join()
    return {"images": len(train), "mode": mode,
            "stored_mb": round(train.images.nbytes / 2 ** 20, 1),
            "peak_anon_mb": round(peak["anon"] / 1024, 1),
            "anon_before_load_mb": round(base / 1024, 1),
            "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
            "load_s": round(load_s, 2), "reload_s": None if reload_s is None
            else round(reload_s, 2), "images_per_s": round(history["images_per_s"][0], 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,50000", help="photo counts N (default "
                   "1000,10000,50000)")
    p.add_argument("--work", help="where the photos are extracted (default: a folder in the "
                   "system's temporary folder, kept for reruns)")
    p.add_argument("--out", default="runs/memory", help="results folder (memory.json, .csv)")
    p.add_argument("--measure", nargs=3, metavar=("FOLDER", "MODE", "STORE"),
                   help=argparse.SUPPRESS)  # one measuring process
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    from tqdm.auto import tqdm

    work = Path(args.work or Path(tempfile.gettempdir()) / "gluonft-bench-memory")
    sizes = [int(s) for s in args.sizes.split(",")]
    root = cifar10_jpg(work, who="bench.memory")
    rows: List[dict] = []
    runs = [(n, mode) for n in sizes for mode in MODES]
    for n, mode in tqdm(runs, desc="bench.memory", unit="run"):
        folder = _folder(root, work, n)
        store = tempfile.mkdtemp(prefix="store-", dir=work)  # a store built in the run
        done = subprocess.run([sys.executable, "-m", "bench.memory", "--measure", str(folder),
                               mode, store], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])
        if done.returncode:
            raise SystemExit(f"bench.memory: the {mode} run of N={n} failed:\n{done.stderr}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        subprocess.run(["rm", "-rf", store])
        tqdm.write(json.dumps(rows[-1]))
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "memory.json"), {"runs": rows})
    atomic_write_csv(os.path.join(args.out, "memory.csv"), rows, list(rows[0]))
    print(f"{'N':>6} {'mode':6} {'stored MB':>9} {'peak anon MB':>12} {'peak RSS MB':>11} "
          f"{'load s':>6} {'img/s':>6}")
    for r in rows:
        print(f"{r['images']:6d} {r['mode']:6} {r['stored_mb']:9.1f} {r['peak_anon_mb']:12.1f} "
              f"{r['peak_rss_mb']:11.1f} {r['load_s']:6.1f} {r['images_per_s']:6.0f}")
    print(f"written: {os.path.abspath(args.out)} (memory.json, memory.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
