"""Data-parallel fit over processes on 127.0.0.1 (gluonft.distributed, gluonft.launch): two
workers and a server train like one process with the combined batch; failures end the job."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.distributed import DistributedSetupError, check_kvstore

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed" / "fit_worker.py"
pytestmark = pytest.mark.skipif(not mx.runtime.Features().is_enabled("DIST_KVSTORE"),
                                reason="this MXNet build has no distributed kvstore")


def _env(**extra):
    # One operator thread in every process, the workers and the single-process reference
    # alike: oneDNN picks its kernels, and so the order of its float sums, by the thread
    # count (2 threads against the workers' 1 moved a full-regime weight by 6e-5 in 6 steps),
    # and these tests compare the same computation with only the gradient sum reordered.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _launch(out, *args, workers=2, timeout=600, extra=(), env=None):
    return subprocess.run(
        [sys.executable, "-m", "gluonft.launch", "--workers", str(workers), "--servers", "1",
         "--grace", "3", *extra, "--", sys.executable, str(WORKER), str(out), *args],
        cwd=ROOT, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _single(out, *args, env=None):
    done = subprocess.run([sys.executable, str(WORKER), str(out), *args], cwd=ROOT,
                          env=env or _env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


@pytest.mark.parametrize("regime", ["full", "last_k:1", "head"])
def test_two_workers_train_like_one_process_with_the_combined_batch(shared, tmp_path, regime):
    # The full regime with MXNet's bulk execution off, every operator scheduled on its own:
    # there a gradient pushed while the backward pass still ran left the workers' BatchNorm
    # statistics 0.06 off (a test that left the variable set failed this in CI).
    env = _env(MXNET_EXEC_BULK_EXEC_TRAIN="0") if regime == "full" else _env()
    job = _launch(tmp_path / "dist", regime, "dist_sync", "16", env=env)
    assert job.returncode == 0, job.stdout
    assert "[worker 0]" in job.stdout and "[worker 1]" in job.stdout
    _single(tmp_path / "one", regime, "none", "32", env=env)
    w0, w1 = _params(tmp_path / "dist" / "0.params"), _params(tmp_path / "dist" / "1.params")
    one = _params(tmp_path / "one" / "0.params")
    initial = gluonft.load_backbone(
        "cifar_resnet20_v1", classes=10, ctx=mx.cpu(),
        weights=str(shared / "weights" / "cifar_resnet20_v1-cifar10.params"))
    plan = gluonft.apply_regime(initial, regime)
    start = {k: p.data().asnumpy() for k, p in initial._collect_params_with_prefix().items()}
    frozen = {k for k, p in initial._collect_params_with_prefix().items()
              if p.grad_req == "null" and not gluonft.backbones.is_running_stat(p)}
    assert plan.regime == regime and (frozen or regime == "full")
    moved = 0
    running = {k for k, p in initial._collect_params_with_prefix().items()
               if gluonft.backbones.is_running_stat(p)}
    for name in one:
        # Both workers apply the same update to the same summed gradients, and average their
        # BatchNorm statistics after every epoch (one process averages its devices' copies
        # when it saves): identical bits.
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)
        # Against one process on two devices (the same halves of the same batches, so the
        # same BatchNorm statistics): only the gradient's sum differs in order (two partial
        # sums pushed through the server) over 6 steps of SGD with momentum, in float32.
        np.testing.assert_allclose(w0[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
        if name in frozen:
            np.testing.assert_array_equal(w0[name], start[name], err_msg=name)
        elif name not in running:
            moved += not np.array_equal(w0[name], start[name])
    assert moved > 0  # the trainable weights did train
    h0, h1, h_one = (json.loads((tmp_path / d / f"{r}.json").read_text())
                     for d, r in (("dist", 0), ("dist", 1), ("one", 0)))
    def logged(history):  # what the job learned, not how fast this worker was
        return [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")}
                for e in history["epochs"]]
    assert logged(h0) == logged(h1)  # every worker logs the job's numbers
    for a, b in zip(h0["epochs"], h_one["epochs"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1 / 40 + 1e-9)
    assert h0["settings"]["workers"] == 2 and h0["settings"]["kvstore"] == "dist_sync"
    # Only trainable parameters travel: 6 steps x 4 bytes x each trainable parameter, exactly.
    for h in (h0, h1):
        assert h["pushed_bytes"] == 6 * 4 * h["settings"]["trainable_params"]
    if regime == "head":  # features cached: each worker computed half, the kvstore the rest
        assert h0["settings"]["cache_features"] and h_one["settings"]["cache_features"]
        for h in (h0, h1):
            train = h["settings"]["feature_cache"]["train"]
            assert train["shape"][0] == 96 and train["computed_here"] == 48


@pytest.mark.parametrize("death", ["raise", "kill"])
def test_a_dead_worker_ends_the_job_and_leaves_nothing_running(tmp_path, death):
    """A worker that fails (an exception, or SIGKILL) ends the job at once: its peers would
    wait for it forever in the next push."""
    script = tmp_path / "die.py"
    die = ("raise RuntimeError('worker 1 fails')" if death == "raise"
           else "os.kill(os.getpid(), signal.SIGKILL)")
    script.write_text("import os, signal\nimport gluonft, mxnet as mx\n"
                      "kv = gluonft.distributed.Cluster.join('dist_sync')\n"
                      f"if kv.rank == 1:\n    {die}\n"
                      "print('waiting for my peer', flush=True)\n"
                      "kv.allreduce('x', [1.0])\n")  # never completes: the peer is gone
    begin = time.time()
    job = subprocess.run([sys.executable, "-m", "gluonft.launch", "--workers", "2", "--grace",
                          "2", "--", sys.executable, str(script)], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == (1 if death == "raise" else 128 + 9), job.stdout
    assert ("exited with code 1; stopping the others" if death == "raise"
            else "was killed by SIGKILL; stopping the others") in job.stdout
    if death == "raise":
        assert "RuntimeError: worker 1 fails" in job.stdout
    assert time.time() - begin < 60
    left = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_stopping_the_launcher_stops_its_job(tmp_path):
    """`kill` (SIGTERM) to the launcher: the scheduler, server and workers it started (each
    in its own session) go with it."""
    script = tmp_path / "wait.py"
    script.write_text("import time\nimport gluonft\n"
                      "gluonft.distributed.Cluster.join('dist_sync')\n"
                      "print('joined', flush=True)\ntime.sleep(600)\n")
    job = subprocess.Popen([sys.executable, "-m", "gluonft.launch", "--workers", "2", "--grace",
                            "2", "--", sys.executable, str(script)], cwd=ROOT, env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    joined = 0
    for line in job.stdout:
        joined += "joined" in line
        if joined == 2:
            break
    started = [int(p) for p in subprocess.run(["pgrep", "-P", str(job.pid)],
                                              capture_output=True, text=True).stdout.split()]
    assert len(started) == 4  # scheduler, server, 2 workers
    job.terminate()
    assert job.wait(timeout=60) == 130
    time.sleep(0.5)
    alive = [p for p in started if _running(p)]
    assert alive == [], alive


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_bad_input_gets_clear_messages(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown kvstore 'dist_snyc': expected None or one of "
                                         "device, local, dist_sync"):
        check_kvstore("dist_snyc")
    for name in list(os.environ):
        if name.startswith("DMLC_"):
            monkeypatch.delenv(name)
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=4, weights=None, ctx=mx.cpu())
    gluonft.apply_regime(net, "head")
    data = gluonft.datasets.ImageSet(np.zeros((8, 32, 32, 3), np.uint8), np.arange(8) % 4,
                                     ("a", "b", "c", "d"), "zeros")
    with pytest.raises(DistributedSetupError, match="python -m gluonft.launch"):
        gluonft.fit(net, data, epochs=1, batch_size=4, lr=0.1, kvstore="dist_sync",
                    progress=False)
    with pytest.raises(ValueError, match="kvstore='dist_async' .*Schedule\\('constant'\\)"):
        gluonft.fit(net, data, epochs=1, batch_size=4, lr=0.1, kvstore="dist_async",
                    progress=False)
    busy = subprocess.run([sys.executable, "-c", "import socket, subprocess, sys\n"
                           "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                           "port = s.getsockname()[1]\n"
                           "r = subprocess.run([sys.executable, '-m', 'gluonft.launch', "
                           "'--workers', '1', '--port', str(port), '--', 'true'], "
                           "capture_output=True, text=True)\n"
                           "print(port, r.returncode, r.stderr)"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    port, code, message = busy.stdout.split(" ", 2)
    assert code == "1" and f"port {port} on 127.0.0.1 is busy" in message


def test_a_last_batch_smaller_than_the_workers_is_refused():
    from gluonft.batches import check_shares
    with pytest.raises(ValueError, match=r"batch_size=16 per worker x 4 workers leaves a last "
                                         r"batch of 2 of the 66 training images"):
        check_shares(66, 64, 4, 16)
    check_shares(68, 64, 4, 16)  # a last batch of 4: one image each


# ------------------------------------------------- bench.cifar as a distributed job, end to end

def _grid_argv(shared, out, *more):
    weights = shared / "weights" / "cifar_resnet20_v1-cifar10.params"
    return ["-m", "bench.cifar", "--preset", "smoke", "--data-root",
            str(shared / "data" / "cifar-10-subset"), "--models", "cifar_resnet20_v1",
            "--no-baseline", "--weights", f"cifar_resnet20_v1={weights}", "--out", str(out),
            "--no-progress", *more]


def _launch_grid(argv):
    return [sys.executable, "-m", "gluonft.launch", "--workers", "2", "--servers", "1",
            "--grace", "3", "--", sys.executable, *argv]


def test_a_distributed_grid_writes_one_results_file_like_one_process(shared, tmp_path):
    """Two workers with 16 images each per step against one process with 32 on two CPU
    contexts: the same global batches, one results.json (worker 0's), the same accuracies."""
    from gluonft.results import read_results
    job = subprocess.run(_launch_grid(_grid_argv(
        shared, tmp_path / "dist", "--regimes", "head,full", "--epochs", "2", "--batch-size",
        "16", "--kvstore", "dist_sync")), cwd=ROOT, env=_env(), capture_output=True,
        text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:]
    assert job.stdout.count("(rank 0 writes)") == 2 and "rank 1 of 2 workers" in job.stdout
    one = subprocess.run([sys.executable, *_grid_argv(
        shared, tmp_path / "one", "--regimes", "head,full", "--epochs", "2", "--batch-size",
        "32", "--ctx", "cpu0,cpu1")], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=600)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    results = list((tmp_path / "dist").rglob("results.json"))
    assert results == [tmp_path / "dist" / "results.json"]  # not one per worker
    assert not list((tmp_path / "dist").rglob("*.tmp"))
    dist, single = (read_results(tmp_path / d / "results.json") for d in ("dist", "one"))
    assert [r.status for r in dist] == ["ok", "ok"]
    for d, s in zip(dist, single):
        assert d.config["workers"] == 2 and d.config["batch_size"] == 16
        assert d.training["workers"] == 2 and s.training["contexts"] == ["cpu(0)", "cpu(1)"]
        # 50 test images: one image whose logits differ in the last digits may flip.
        assert abs(d.test_accuracy - s.test_accuracy) <= 1 / 50 + 1e-9, d.id
        for a, b in zip(d.history, s.history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4), d.id
    # The head regime leaves BatchNorm frozen: the nets are equal up to the order of float
    # sums, so the test losses agree closely. (In full, one process scores each half of a
    # batch with its device's own BatchNorm statistics; the workers average theirs.)
    assert dist[0].test_loss == pytest.approx(single[0].test_loss, rel=1e-4)


def test_killing_a_worker_stops_the_job_and_a_rerun_resumes(shared, tmp_path):
    from gluonft.checkpoint import read_checkpoint
    from gluonft.results import read_results
    out = tmp_path / "grid"
    argv = _grid_argv(shared, out, "--regimes", "full", "--epochs", "12", "--batch-size", "16",
                      "--kvstore", "dist_sync")
    job = subprocess.Popen(_launch_grid(argv), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in job.stdout:  # both workers have logged epoch 3: its checkpoint is written
        lines.append(line)
        if sum("epoch 3/12" in seen for seen in lines) == 2:
            break
    workers = [int(p) for p in subprocess.run(
        ["pgrep", "-f", f"bench.cifar .*--out {out}"], capture_output=True,
        text=True).stdout.split() if int(p) != job.pid]
    assert len(workers) == 2, lines
    killed = time.time()
    os.kill(workers[1], 9)
    rest = job.stdout.read()
    code = job.wait(timeout=120)
    assert code != 0 and "was killed by SIGKILL; stopping the others" in rest
    assert time.time() - killed < 60
    assert subprocess.run(["pgrep", "-f", f"--out {out}"], capture_output=True,
                          text=True).stdout.strip() == ""
    done = len(read_checkpoint(str(out / "checkpoints" / "cifar_resnet20_v1-full-s0"))
               ["epochs"])
    assert done >= 3
    rerun = subprocess.run(_launch_grid(argv), cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    (record,) = read_results(out / "results.json")
    assert record.status == "ok" and record.resumed_from_epoch == done
    assert [e["epoch"] for e in record.history] == list(range(1, 13))


def test_gluonft_train_under_the_launcher_saves_one_model_like_one_process(shared, tmp_path):
    """`gluonft train --fast --kvstore dist_sync` with two workers: the recipe's batch of 64 is
    shared out, so the model equals one process's (a linear head: no BatchNorm statistics of
    its own, which would follow each worker's half-batch)."""
    from gluonft.model_io import load_classifier
    from tests import clothing
    photos = clothing.copy_photos(shared, tmp_path / "photos", per_class=20, split="train")
    weights = clothing.paths(shared)[1]
    common = ["-m", "gluonft", "train", str(photos), "--fast", "--model", "mobilenet0.75",
              "--weights", str(weights),
              "--image-size", "64", "--head", "linear"]
    job = subprocess.run(_launch_grid([*common, "--out", str(tmp_path / "dist"), "--kvstore",
                                       "dist_sync"]), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:]
    assert job.stdout.count("saved by the worker of rank 0") == 1
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    dist, single = (load_classifier(tmp_path / d) for d in ("dist", "one"))
    a = {k: p.data().asnumpy() for k, p in dist.net._collect_params_with_prefix().items()}
    b = {k: p.data().asnumpy() for k, p in single.net._collect_params_with_prefix().items()}
    for name in b:
        # 10 epochs of SGD on the same batches; the gradient sums differ in order only.
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert dist.meta["val_accuracy"] == pytest.approx(single.meta["val_accuracy"], abs=0.03)
