"""Data-parallel training over several processes and machines: MXNet's parameter-server kvstore.

`fit(..., kvstore="dist_sync")` (or ``"dist_device_sync"``, ``"dist_async"``) runs one worker
of a job that `python -m gluonft.launch` (or a cluster scheduler) started: ps-lite's
scheduler, servers and workers find each other through the ``DMLC_*`` environment variables,
MXNet's kvstore sums the gradients of all workers (only trainable parameters travel: frozen
ones have no gradient), and every worker applies the same update to the same weights.

What a worker does (`Cluster`):
- batches: every epoch's seeded permutation is cut into global batches of ``batch_size x
  workers`` images, as one process with that batch would; worker r trains on the r-th
  contiguous share of each (`Cluster.share`), so the workers together see exactly those
  batches, and the optimiser steps by the global batch;
- logged numbers (training loss and accuracy, validation over each worker's share of the
  set) are sums combined through the kvstore (`Cluster.allreduce`): every worker logs the
  same figures;
- BatchNorm's running statistics (each worker's follow its share) are averaged over the
  workers after every epoch, as saving a multi-device net averages the devices' copies;
- only worker 0 (`Cluster.is_chief`) writes checkpoints; every worker reads them to resume.

    >>> cluster = Cluster.join("dist_sync")  # doctest: +SKIP  (under gluonft.launch)
    >>> cluster.rank, cluster.workers
    (0, 2)
"""
from __future__ import annotations

import atexit
import os
import sys
from typing import Optional

import mxnet as mx
import numpy as np

from .backbones import is_running_stat

__all__ = ["KVSTORES", "DIST_KVSTORES", "DMLC_VARIABLES", "DistributedSetupError", "Cluster",
           "check_kvstore"]

# None: MXNet's choice for the contexts of one process (as before kvstores were an option)
KVSTORES = (None, "device", "local", "dist_sync", "dist_device_sync", "dist_async")
DIST_KVSTORES = ("dist_sync", "dist_device_sync", "dist_async")
DMLC_VARIABLES = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER",
                  "DMLC_NUM_WORKER")
# Keys of the kvstore that gluonft's own sums use: far above the Trainer's (0, 1, 2, ... one
# per trainable parameter).
_FIRST_KEY = 1 << 30


# The largest piece `Cluster.gather` sends through the kvstore at once.
GATHER_CHUNK_BYTES = 64 * 1024 ** 2

_JOINED: dict = {}  # kvstore name -> Cluster: the one job of this process


class DistributedSetupError(RuntimeError):
    """A distributed kvstore was asked for where no job was set up for it."""


def check_kvstore(name) -> Optional[str]:
    """``name`` if it is one of `KVSTORES`, else a ValueError naming the choices."""
    if name not in KVSTORES:
        raise ValueError(f"unknown kvstore {name!r}: expected None or one of "
                         f"{', '.join(k for k in KVSTORES if k)}")
    return name


def _require_environment(name: str) -> None:
    missing = [v for v in DMLC_VARIABLES if not os.environ.get(v)]
    if missing:
        raise DistributedSetupError(
            f"kvstore={name!r} runs as one worker of a job, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: start the job with "
            f"`python -m gluonft.launch --workers N --servers M -- python your_script.py`, or "
            f"set the DMLC_* variables as README's 'Several machines' describes")
    if os.environ["DMLC_ROLE"] != "worker":
        raise DistributedSetupError(f"DMLC_ROLE={os.environ['DMLC_ROLE']!r}: fit runs on "
                                    f"workers; servers and schedulers only import mxnet")


def _leave_without_teardown() -> None:
    """End this worker with ``os._exit`` once its Python code is done, keeping its exit code.

    MXNet 1.9.1's distributed kvstore tears down badly at interpreter exit: a failed worker
    hangs in the destructor's barrier (its peers then hang in their next push), and a worker
    that succeeded sometimes aborts ("terminate called without an active exception", exit
    134, seen in 1 of 4 runs here) while ps-lite's threads stop. So an uncaught exception
    prints its traceback and exits 1 at once, and a normal end (or ``sys.exit(code)``) waits
    for MXNet's pending work and exits with its code, skipping the teardown; the launcher
    then stops the servers and the scheduler.
    """
    state = {"code": 0}
    previous_hook, real_exit = sys.excepthook, sys.exit

    def hook(kind, value, tb):
        previous_hook(kind, value, tb)
        _leave(1)

    def exit_(code=0):
        state["code"] = code
        real_exit(code)

    def at_exit():
        code = state["code"]
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        if not code:  # a failure does not wait: a push to a dead peer never completes
            mx.nd.waitall()
        _leave(code or 0)

    sys.excepthook, sys.exit = hook, exit_
    atexit.register(at_exit)  # runs before MXNet's own exit handlers (registered earlier)


def _leave(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Cluster:
    """This worker's place in a distributed job: rank, worker count, the shared kvstore."""

    def __init__(self, kvstore: mx.kvstore.KVStore):
        self.kvstore = kvstore
        self.rank = kvstore.rank
        self.workers = kvstore.num_workers
        self._keys = {}
        self._trainer_keys = 0
        self._gathers = 0
        # What this worker's Trainers pushed (gradients; bench.distributed reports it)
        self.pushed_bytes = 0

    @classmethod
    def join(cls, name: str) -> "Cluster":
        """The job this process is a worker of, through kvstore ``name`` (`DIST_KVSTORES`):
        created once per process (ps-lite registers a process once), then the same."""
        if name not in _JOINED:
            if name not in DIST_KVSTORES:
                raise ValueError(f"{name!r} is not a distributed kvstore: expected one of "
                                 f"{', '.join(DIST_KVSTORES)}")
            _require_environment(name)
            if _JOINED:
                raise DistributedSetupError(f"this process already joined its job through "
                                            f"kvstore {next(iter(_JOINED))!r}, not {name!r}")
            _JOINED[name] = cls(mx.kv.create(name))
            _leave_without_teardown()
        return _JOINED[name]

    def trainer_kvstore(self, parameters: int) -> "_Keyspace":
        """The kvstore for one Trainer of ``parameters`` parameters.

        A Trainer pushes parameter i under key i, and ps-lite fixes a key's size when it is
        first initialised: a second `fit` in the process (the next experiment of a grid, the
        next stage of `fine_tune`) would meet the first one's sizes. Each Trainer gets keys of
        its own instead (every worker makes the same fits in the same order, so the same)."""
        offset = self._trainer_keys
        self._trainer_keys += parameters
        if self._trainer_keys >= _FIRST_KEY:
            raise DistributedSetupError("this job has used up the kvstore's keys")
        return _Keyspace(self.kvstore, offset, self)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def share(self, items: np.ndarray) -> np.ndarray:
        """This worker's contiguous share of a global batch (or of a data set)."""
        return np.array_split(items, self.workers)[self.rank]

    def average_running_stats(self, net) -> None:
        """Set BatchNorm's running statistics of ``net`` to their mean over the workers.

        Each worker's statistics follow its share of every batch, as each device's do in one
        process; saving a multi-device net averages the devices' copies, so averaging the
        workers' gives every worker, and the saved model, what one process would keep."""
        stats = [p for p in net.collect_params().values() if is_running_stat(p)]
        if not stats:
            return
        flat = np.concatenate([p.data().asnumpy().ravel() for p in stats])
        mean = (self.allreduce("running_stats", flat) / self.workers).astype(np.float32)
        offset = 0
        for p in stats:
            size = int(np.prod(p.shape))
            p.set_data(mx.nd.array(mean[offset:offset + size].reshape(p.shape)))
            offset += size

    def barrier(self) -> None:
        """Wait until every worker has come here (ps-lite's barrier, async kvstores too)."""
        mx.nd.waitall()
        self.kvstore._barrier()

    def combined_scores(self, part: Optional[dict]) -> dict:
        """The whole set's ``{"accuracy", "loss", "count"}`` from every worker's scores of its
        share (``part``; None for a worker whose share is empty)."""
        count = part["count"] if part else 0
        loss, correct, total = self.allreduce("scores", [
            part["loss"] * count if part else 0.0, part["accuracy"] * count if part else 0.0,
            count])
        return {"accuracy": correct / total, "loss": loss / total, "count": int(total)}

    def gather(self, part: np.ndarray, count: int) -> np.ndarray:
        """Every worker's ``part`` (the rows of its `share` of ``range(count)``), stacked in
        order: each worker gets all ``count`` rows, in float32.

        Each worker pushes its rows in place in zeros of the whole's shape and the kvstore
        sums them: adding zeros is exact, so the rows arrive bit for bit. The whole goes in
        pieces of at most `GATHER_CHUNK_BYTES`, under keys of their own."""
        part = np.asarray(part, np.float32)
        rows = self.share(np.arange(count))
        whole = np.zeros((count,) + part.shape[1:], np.float32)
        if len(rows):
            whole[rows[0]:rows[-1] + 1] = part
        row_bytes = max(1, whole[:1].nbytes)
        step = max(1, GATHER_CHUNK_BYTES // row_bytes)
        self._gathers += 1
        for start in range(0, count, step):
            piece = whole[start:start + step]
            piece[...] = self.allreduce(f"gather:{self._gathers}:{start}", piece)
        return whole

    def allreduce(self, name: str, values) -> np.ndarray:
        """The sum over all workers of ``values`` (numbers, the same count everywhere), in
        float32 as the gradients travel; every worker must call it, in the same order."""
        array = mx.nd.array(np.asarray(values, np.float32), dtype="float32")
        if name not in self._keys:
            self._keys[name] = _FIRST_KEY + len(self._keys)
            self.kvstore.init(self._keys[name], mx.nd.zeros_like(array))
        key = self._keys[name]
        self.kvstore.push(key, array)
        out = mx.nd.zeros_like(array)
        self.kvstore.pull(key, out=out)
        return out.asnumpy().astype(np.float64)


class _Keyspace(mx.kvstore.KVStoreBase):
    """The job's kvstore with every key moved up by ``offset``: what one Trainer sees. It
    counts the bytes pushed into ``cluster.pushed_bytes``."""

    def __init__(self, store: mx.kvstore.KVStore, offset: int, cluster: "Cluster"):
        self._store, self._offset, self._cluster = store, offset, cluster

    def _count(self, key, value) -> None:
        """Add what travels for ``key``: one array per key (a worker sums its devices' copies
        before it sends)."""
        values = value if isinstance(key, (list, tuple)) else [value]
        for v in values:
            v = v[0] if isinstance(v, (list, tuple)) else v
            self._cluster.pushed_bytes += v.size * np.dtype(v.dtype).itemsize

    def _key(self, key):
        if isinstance(key, (list, tuple)):
            return [self._key(k) for k in key]
        return int(key) + self._offset

    def broadcast(self, key, value, out, priority=0):
        self._store.broadcast(self._key(key), value, out, priority=priority)

    def init(self, key, value):
        self._store.init(self._key(key), value)

    @staticmethod
    def _settle(value) -> None:
        """Wait until the backward pass has written ``value`` before it travels.

        With MXNet's bulk execution off (``MXNET_EXEC_BULK_EXEC_TRAIN=0``) a push issued while
        the backward pass still runs left every worker's BatchNorm running statistics off by
        up to 0.06 after 6 steps (the gradients and weights were right; waiting for the
        gradients, not for the statistics, restores them: tests/test_distributed.py runs the
        full regime so). The push needs the whole gradient anyway: only its overlap with the
        rest of the backward pass is given up."""
        for v in value if isinstance(value, (list, tuple)) else [value]:
            for array in v if isinstance(v, (list, tuple)) else [v]:
                array.wait_to_read()

    def push(self, key, value, priority=0):
        self._count(key, value)
        self._settle(value)
        self._store.push(self._key(key), value, priority=priority)

    def pull(self, key, out=None, priority=0, ignore_sparse=True):
        self._store.pull(self._key(key), out=out, priority=priority, ignore_sparse=ignore_sparse)

    def pushpull(self, key, value, out=None, priority=0):
        self._count(key, value)
        self._settle(value)
        self._store.pushpull(self._key(key), value, out=out, priority=priority)

    def row_sparse_pull(self, key, out=None, priority=0, row_ids=None):
        self._store.row_sparse_pull(self._key(key), out=out, priority=priority, row_ids=row_ids)

    def set_optimizer(self, optimizer):
        self._store.set_optimizer(optimizer)

    def set_gradient_compression(self, compression_params):
        self._store.set_gradient_compression(compression_params)

    def is_capable(self, capability):
        return self._store.is_capable(capability)

    def save_optimizer_states(self, fname, dump_optimizer=False):
        self._store.save_optimizer_states(fname, dump_optimizer=dump_optimizer)

    def load_optimizer_states(self, fname):
        self._store.load_optimizer_states(fname)

    @property
    def _updater(self):
        return self._store._updater

    @property
    def type(self):
        return self._store.type

    @property
    def rank(self):
        return self._store.rank

    @property
    def num_workers(self):
        return self._store.num_workers
