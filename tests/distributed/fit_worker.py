"""One process of tests/test_distributed.py: fit on real CIFAR-10 images, save what it learned.

    python tests/distributed/fit_worker.py OUT REGIME KVSTORE BATCH [EPOCHS]

KVSTORE "none" trains in one process on two CPU contexts (each batch split in two halves, as
two workers split it: BatchNorm's batch statistics are per half in both); a dist_* kvstore
expects the DMLC_* variables that `python -m gluonft.launch` sets and trains on one context.
Writes OUT/<rank>.params and OUT/<rank>.json (history)."""
import json
import sys
from pathlib import Path

import mxnet as mx
import numpy as np

import gluonft  # noqa: I001  (first: OMP_NUM_THREADS before MXNet loads)

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / ".." / "shared"


def main(out, regime, kvstore, batch, epochs="2"):
    out = Path(out)
    train = gluonft.datasets.cifar10(str((SHARED / "data" / "cifar-10-subset").resolve()),
                                     train=True)
    val = gluonft.datasets.cifar10(str((SHARED / "data" / "cifar-10-subset").resolve()),
                                   train=False)
    rng = np.random.RandomState(0)
    train = train.take(np.sort(rng.permutation(len(train))[:96]))  # 96: 3 global batches of 32
    val = val.take(np.arange(40))
    net = gluonft.load_backbone(
        "cifar_resnet20_v1", classes=10, ctx=mx.cpu(),
        weights=str(SHARED / "weights" / "cifar_resnet20_v1-cifar10.params"))
    gluonft.apply_regime(net, regime)
    # head: no augmentation, so the frozen backbone's features are cached (each worker
    # computes its share and the kvstore brings the rest)
    augment = (gluonft.Augment.none() if regime == "head"
               else gluonft.Augment(flip=True, translate=0.125))
    ctx = [mx.cpu(0), mx.cpu(1)] if kvstore == "none" else mx.cpu()
    net.collect_params().reset_ctx(ctx)
    history = gluonft.fit(net, train, val, epochs=int(epochs), batch_size=int(batch), lr=0.05,
                          augment=augment, ctx=ctx,
                          seed=7, progress=False,
                          kvstore=None if kvstore == "none" else kvstore,
                          checkpoint=str(out / "checkpoint") if len(sys.argv) > 6 else None)
    cluster = None if kvstore == "none" else gluonft.distributed.Cluster.join(kvstore)
    rank = 0 if cluster is None else cluster.rank
    out.mkdir(parents=True, exist_ok=True)
    net.collect_params().reset_ctx(mx.cpu())
    net.save_parameters(str(out / f"{rank}.params"))
    record = dict(history.to_dict(), pushed_bytes=cluster.pushed_bytes if cluster else None)
    (out / f"{rank}.json").write_text(json.dumps(record))
    print(f"rank {rank}: val_acc {history['val_acc'][-1]:.4f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
