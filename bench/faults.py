"""`python -m bench.faults`: attack gluonft as a careless world would, and check what held.

Every attack is real: child processes killed with SIGKILL in the middle of a write, two runs
started on one output folder, learning rates that blow training up, and 2,000 HTTP requests
against the prediction service. Each line of the report says what was tried and whether the
promise held; the figures go to ``<out>/faults.json``.

* **kill at every write of fit**: a child trains (lab-1 CNN, real CIFAR-10 images, 3 epochs,
  checkpoint every epoch) and is SIGKILLed while its n-th file write is half done, for every
  n; a rerun must resume and end with the uninterrupted run's weights, leaving no temporary
  file behind.
* **kill at every write of a grid**: the same for ``python -m bench.cifar`` (smoke preset, one
  experiment): after the rerun, results.json is strict JSON with the uninterrupted test
  accuracy, and no temporary file, checkpoint or missing curve is left.
* **two runs on one folder**: two grids started 0.3 s apart on the same ``--out``: one runs,
  the other exits 2 naming the first; the results are intact.
* **divergence**: ``--lr 1000`` and ``fit(lr=1e4)``: recorded as failed with the cause, strict
  JSON, no best model saved from broken weights.
* **the service under load**: ``python -m gluonft serve`` answers 2,000 requests (8 client
  threads, 56 % real JPEG photos, the rest empty, text, truncated JPEGs); its resident memory
  must stay flat (growth after the first 400 requests under 50 MB); p50/p95 latency and
  requests/s. For contrast, the cause of the leak it had: predictions each on a new thread.

Needs ``../shared`` (real CIFAR-10 images, clothing photos, mobilenet0.75 weights). About 10
minutes on 2 cores; ``--only service`` (or kill-fit, kill-grid, concurrent, divergence) runs
one attack.

    python -m bench.faults
    python -m bench.faults --only kill-fit,service --requests 500
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import mxnet as mx

import gluonft
from bench import cifar
from gluonft import fileio
from gluonft.baseline import lab1_cnn
from gluonft.datasets import cifar10
from gluonft.fileio import TMP_SUFFIX, atomic_write_json, library_versions

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
ATTACKS = ("kill-fit", "kill-grid", "concurrent", "divergence", "service")
KILL_AT = "GLUONFT_FAULTS_KILL_AT"      # the child kills itself during this write (1-based)
COUNT_TO = "GLUONFT_FAULTS_COUNT_FILE"  # the child appends one line per write here
GROWTH_LIMIT_MB = 50.0


# --- inside a child process --------------------------------------------------------------------

def _install_killer() -> None:
    """Wrap gluonft's one file writer: count the writes, and die half way through the n-th."""
    real = fileio.atomic_write
    kill_at = int(os.environ.get(KILL_AT, "0"))
    count_file = os.environ.get(COUNT_TO)
    seen = [0]

    def writer(path, write):
        seen[0] += 1
        if count_file:
            with open(count_file, "a") as f:
                f.write(f"{path}\n")
        if seen[0] != kill_at:
            return real(path, write)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.killed{fileio.TMP_SUFFIX}")
        write(tmp)
        with open(tmp, "r+b") as f:  # half the bytes reached the disk
            f.truncate(os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    # Every module that imported the writer by name gets the wrapper too.
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("gluonft", "bench"):
            for attr, value in list(vars(module).items()):
                if value is real:
                    setattr(module, attr, writer)


def _child_fit(checkpoint: str, weights_out: str) -> None:
    import numpy as np


    data = cifar10(str(SHARED / "data" / "cifar-10-subset"), train=True).subset(
        n_per_class=6, seed=1)
    net = lab1_cnn(classes=10, widths=(8, 16, 16), ctx=mx.cpu(), seed=3)
    gluonft.apply_regime(net, "scratch", seed=3)
    gluonft.fit(net, data, epochs=3, batch_size=20, lr=0.05, ctx=mx.cpu(), seed=4,
                augment=gluonft.Augment.none(), progress=False, checkpoint=checkpoint)
    np.savez(weights_out, **{k: p.data().asnumpy()
                             for k, p in net._collect_params_with_prefix().items()})


def _child(argv: Sequence[str]) -> int:
    _install_killer()
    if argv[0] == "fit":
        _child_fit(argv[1], argv[2])
        return 0
    return cifar.main(list(argv[1:]))


# --- the attacks ---------------------------------------------------------------------------------

def _run_child(args: Sequence[str], *, kill_at: int = 0, count_file: Optional[str] = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{KILL_AT: str(kill_at)})
    if count_file:
        env[COUNT_TO] = count_file
    return subprocess.run([sys.executable, "-m", "bench.faults", "--child", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _temporaries(folder: Path) -> List[str]:
    return [str(p) for p in folder.rglob(f".*{TMP_SUFFIX}")]


def _count_writes(args: Sequence[str], work: Path) -> int:
    count_file = work / "writes.txt"
    done = _run_child(args, count_file=str(count_file))
    if done.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed: {done.stderr[-2000:]}")
    return len(count_file.read_text().splitlines())


def attack_kill_fit(work: Path, log) -> dict:
    import numpy as np

    reference = work / "reference"
    reference.mkdir()
    writes = _count_writes(["fit", str(reference / "run"), str(reference / "weights.npz")],
                           reference)
    expected = dict(np.load(reference / "weights.npz"))
    tries = []
    for n in range(1, writes + 1):
        folder = work / f"kill{n}"
        folder.mkdir()
        args = ["fit", str(folder / "run"), str(folder / "weights.npz")]
        killed = _run_child(args, kill_at=n)
        rerun = _run_child(args)
        held, why = rerun.returncode == 0, ""
        if held:
            got = dict(np.load(folder / "weights.npz"))
            # Same machine, same kernels: resumed and whole runs agree to float rounding.
            worst = max(float(np.abs(got[k] - expected[k]).max()) for k in expected)
            held = worst <= 1e-5 and not _temporaries(folder)
            why = f"max |weight difference| {worst:.2g}; leftovers {_temporaries(folder)}"
        else:
            why = rerun.stderr.strip().splitlines()[-1:]
        tries.append({"write": n, "killed_signal": -killed.returncode, "held": held,
                      "detail": why})
        log(f"  kill fit at write {n}/{writes}: {'held' if held else 'BROKE'} ({why})")
    return {"writes": writes, "tries": tries, "held": all(t["held"] for t in tries)}


def _grid_args(out: Path, *extra: str) -> List[str]:
    return ["grid", "--preset", "smoke", "--data-root",
            str(SHARED / "data" / "cifar-10-subset"), "--models", "mobilenet0.75",
            "--regimes", "head", "--weights",
            f"mobilenet0.75={SHARED / 'weights' / 'mobilenet0.75-imagenet.params'}",
            "--no-baseline", "--no-progress", "--out", str(out), *extra]


def _strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _grid_state(out: Path) -> dict:
    records = _strict_json(out / "results.json")["records"]
    return {"records": [(r["id"], r["status"], r["test_accuracy"]) for r in records],
            "best": _strict_json(out / "best.json").get("id") if (out / "best.json").exists()
            else None,
            "best_params": (out / "best.params").exists(),
            "curves": sorted(p.name for p in (out / "curves").glob("*.png")),
            "temporaries": _temporaries(out),
            "checkpoints": (out / "checkpoints").exists()}


def attack_kill_grid(work: Path, log, *, stride: int = 1) -> dict:
    reference = work / "reference"
    writes = _count_writes(_grid_args(reference), work)
    expected = _grid_state(reference)
    tries = []
    for n in range(1, writes + 1, stride):
        out = work / f"kill{n}"
        killed = _run_child(_grid_args(out), kill_at=n)
        rerun = _run_child(_grid_args(out))
        try:
            state = _grid_state(out)
            held = rerun.returncode == 0 and state == expected
            why = "same results, no leftovers" if held else f"got {state}"
        except (OSError, ValueError) as error:
            held, why = False, f"{type(error).__name__}: {error}"
        tries.append({"write": n, "killed_signal": -killed.returncode, "held": held,
                      "rerun_exit": rerun.returncode, "detail": why})
        log(f"  kill grid at write {n}/{writes}: {'held' if held else 'BROKE'} ({why})")
    return {"writes": writes, "stride": stride, "expected": expected, "tries": tries,
            "held": all(t["held"] for t in tries)}


def attack_concurrent(work: Path, log) -> dict:
    out = work / "shared-out"
    env = dict(os.environ, **{KILL_AT: "0"})
    command = [sys.executable, "-m", "bench.faults", "--child", *_grid_args(out)]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    refused = [err for code, _, err in results if code == 2]
    state = _grid_state(out)
    held = (codes == [0, 2] and bool(refused) and "is in use by another run" in refused[0]
            and [s for _, s, _ in state["records"]] == ["ok"] and not state["temporaries"])
    detail = refused[0].strip() if refused else f"exit codes {codes}"
    log(f"  two runs on one folder: {'held' if held else 'BROKE'} ({detail[:160]})")
    return {"exit_codes": codes, "refusal": detail, "state": state, "held": held}


def attack_divergence(work: Path, log) -> dict:
    out = work / "lr1000"
    grid = _run_child(_grid_args(out, "--lr", "1000"))
    records = _strict_json(out / "results.json")["records"]
    grid_held = (grid.returncode == 1 and records[0]["status"] == "failed"
                 and "diverged" in records[0]["error"] and not (out / "best.params").exists())
    log(f"  --lr 1000: {'held' if grid_held else 'BROKE'} (exit {grid.returncode}; "
        f"{records[0].get('error')})")
    code = ("import gluonft, mxnet as mx\nfrom gluonft.baseline import lab1_cnn\n"
            "from gluonft.datasets import cifar10\n"
            f"d = cifar10({str(SHARED / 'data' / 'cifar-10-subset')!r}).subset(n_per_class=6,"
            " seed=1)\nnet = lab1_cnn(classes=10, widths=(8, 16, 16), ctx=mx.cpu())\n"
            "try:\n    gluonft.fit(net, d, epochs=2, batch_size=10, lr=1e4, ctx=mx.cpu(), "
            "progress=False, augment=gluonft.Augment.none())\n    print('NO ERROR')\n"
            "except gluonft.TrainingDiverged as e:\n    print(e)\n")
    fit = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    fit_held = "training diverged" in fit.stdout and "lr=10000" in fit.stdout
    log(f"  fit(lr=1e4): {'held' if fit_held else 'BROKE'} ({fit.stdout.strip()[:160]})")
    return {"grid": {"exit": grid.returncode, "error": records[0].get("error"),
                     "held": grid_held},
            "fit": {"message": fit.stdout.strip(), "held": fit_held},
            "held": grid_held and fit_held}


# --- the service -------------------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _payloads(photos: List[Path]) -> List[bytes]:
    """A request mix: 56 of every 100 real photos, the rest the bad uploads users send."""
    good = [p.read_bytes() for p in photos]
    bad = [b"", b"hello, I am not an image", good[0][:300], b"\xff\xd8\xff" + b"\0" * 2000]
    mix = []
    for i in range(100):
        mix.append(good[i % len(good)] if i % 25 < 14 else bad[i % len(bad)])
    return mix


def _model_folder(work: Path, log) -> Path:
    folder = work / "model"
    begin = time.perf_counter()
    gluonft.train_classifier(str(SHARED / "data" / "clothing-small"), fast_train=True,
                             image_size=96, epochs=3, out=str(folder),
                             weights=str(SHARED / "weights" / "mobilenet0.75-imagenet.params"))
    log(f"  model folder for the service: head-only mobilenet0.75 at 96 px "
        f"({time.perf_counter() - begin:.0f} s)")
    return folder


def attack_service(work: Path, log, *, requests: int = 2000, clients: int = 8) -> dict:
    model = _model_folder(work, log)
    photos = sorted((SHARED / "data" / "clothing-small" / "test").rglob("*.jpg"))[:40]
    mix = _payloads(photos)
    server = subprocess.Popen([sys.executable, "-m", "gluonft", "serve", str(model), "--port",
                               "0", "--threads", str(clients)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if " on http://" not in line:
            raise RuntimeError(f"the server did not start: {line} {server.stderr.read()}")
        url = line.split(" on ")[1].split()[0] + "/predict"
        latencies: List[float] = []
        statuses: Dict[int, int] = {}
        memory = [{"requests": 0, "rss_mb": round(_rss_mb(server.pid), 1)}]
        lock = threading.Lock()
        counter = [0]

        def client():
            while True:
                with lock:
                    i = counter[0]
                    if i >= requests:
                        return
                    counter[0] += 1
                body = mix[i % len(mix)]
                request = urllib.request.Request(url, data=body, method="POST",
                                                 headers={"Content-Type": "image/jpeg"})
                begin = time.perf_counter()
                try:
                    with urllib.request.urlopen(request, timeout=120) as answer:
                        status = answer.status
                        answer.read()
                except urllib.error.HTTPError as error:
                    status = error.code
                    error.read()
                seconds = time.perf_counter() - begin
                with lock:
                    latencies.append(seconds)
                    statuses[status] = statuses.get(status, 0) + 1
                    if len(latencies) % 200 == 0:
                        memory.append({"requests": len(latencies),
                                       "rss_mb": round(_rss_mb(server.pid), 1)})

        begin = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - begin
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    after_warmup = [m["rss_mb"] for m in memory if m["requests"] >= 400]
    growth = max(after_warmup) - after_warmup[0] if after_warmup else float("nan")
    ordered = sorted(latencies)
    figures = {"requests": len(latencies), "clients": clients, "statuses": statuses,
               "seconds": round(wall, 1), "requests_per_s": round(len(latencies) / wall, 1),
               "p50_ms": round(1000 * statistics.median(ordered), 1),
               "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
               "memory": memory, "growth_after_400_mb": round(growth, 1)}
    held = growth < GROWTH_LIMIT_MB and statuses.get(500, 0) == 0
    log(f"  service: {figures['requests']} requests in {figures['seconds']} s "
        f"({figures['requests_per_s']} req/s), p50 {figures['p50_ms']} ms, p95 "
        f"{figures['p95_ms']} ms, statuses {statuses}")
    log(f"  resident memory (MB) every 200 requests: "
        f"{', '.join(str(m['rss_mb']) for m in memory)}; growth after 400: {growth:.1f} MB: "
        f"{'held' if held else 'BROKE'} (limit {GROWTH_LIMIT_MB:.0f} MB)")
    figures["thread_per_prediction"] = _thread_per_prediction(model, photos[0], log)
    figures["held"] = held
    return figures


def _thread_per_prediction(model: Path, photo: Path, log) -> dict:
    """The old server's pattern, for contrast: each prediction on a thread of its own."""
    code = ("import sys, threading\nimport gluonft\nfrom gluonft.predict import "
            "predict_bytes\nclf = gluonft.load_classifier(sys.argv[1])\n"
            "data = open(sys.argv[2], 'rb').read()\n"
            "def rss():\n    return int([l for l in open('/proc/self/status') "
            "if l.startswith('VmRSS')][0].split()[1]) / 1024\n"
            "predict_bytes(clf, data)\nfor where in ('same thread', 'new threads'):\n"
            "    before = rss()\n    for _ in range(100):\n"
            "        if where == 'same thread':\n            predict_bytes(clf, data)\n"
            "        else:\n            t = threading.Thread(target=predict_bytes, "
            "args=(clf, data))\n            t.start(); t.join()\n"
            "    print(where, round(rss() - before, 1))\n")
    done = subprocess.run([sys.executable, "-c", code, str(model), str(photo)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    growth = {}
    for line in done.stdout.splitlines():
        where, _, mb = line.rpartition(" ")
        growth[where] = float(mb)
    log(f"  cause, for contrast: 100 predictions in one thread add "
        f"{growth.get('same thread')} MB, each in a new thread {growth.get('new threads')} MB")
    return {"growth_mb_per_100": growth}


# --- the command ---------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.faults",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(ATTACKS),
                        help=f"comma-separated attacks (default: all of {', '.join(ATTACKS)})")
    parser.add_argument("--requests", type=int, default=2000, help="service requests")
    parser.add_argument("--grid-stride", type=int, default=1,
                        help="kill the grid at every N-th write (default 1: every write)")
    parser.add_argument("--out", default=None, help="folder for faults.json (default "
                                                    "runs/faults-<timestamp>)")
    args = parser.parse_args(argv)
    chosen = [a.strip() for a in args.only.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(unknown)}: expected {', '.join(ATTACKS)}")
    if not SHARED.is_dir():
        print(f"bench.faults: error: {SHARED} not found: the attacks use its real data",
              file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "runs" / f"faults-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)

    def log(line=""):
        print(line, flush=True)

    report = {}
    for name in chosen:
        work = Path(tempfile.mkdtemp(prefix=f"gluonft-faults-{name}-"))
        begin = time.perf_counter()
        log(f"{name}:")
        try:
            if name == "kill-fit":
                report[name] = attack_kill_fit(work, log)
            elif name == "kill-grid":
                report[name] = attack_kill_grid(work, log, stride=max(1, args.grid_stride))
            elif name == "concurrent":
                report[name] = attack_concurrent(work, log)
            elif name == "divergence":
                report[name] = attack_divergence(work, log)
            else:
                report[name] = attack_service(work, log, requests=args.requests)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report[name]["seconds"] = round(time.perf_counter() - begin, 1)
    atomic_write_json(out / "faults.json", {"attacks": report, "versions": library_versions()})
    log("")
    for name, result in report.items():
        log(f"{name:12s} {'held' if result['held'] else 'BROKE'} ({result['seconds']} s)")
    log(f"written: {out / 'faults.json'}")
    return 0 if all(r["held"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
