"""Callbacks on scripted logs and in real short fits on real CIFAR-10 images."""
import csv
import json
import math

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft import StopTraining
from gluonft.callbacks import BestCheckpoint, CSVLogger, EarlyStopping, Monitor, ReduceLROnPlateau
from gluonft.datasets import cifar10

CPU = mx.cpu()


def _replay(callback, values, key="val_acc"):
    """Feed ``values`` as consecutive epochs; the epoch at which StopTraining came, or None."""
    for epoch, value in enumerate(values, start=1):
        try:
            callback(epoch, {key: value, "train_loss": 1.0})
        except StopTraining:
            return epoch
    return None


# --- scripted logs -----------------------------------------------------------------------------

def test_early_stopping_stops_at_the_right_epoch_on_scripted_logs():
    accs = [0.1, 0.3, 0.3, 0.25, 0.31, 0.2, 0.2, 0.2, 0.9]
    stop = EarlyStopping(monitor="val_acc", patience=2, min_delta=0.005)
    assert _replay(stop, accs) == 4  # best 0.3 at epoch 2, then two epochs without
    assert (stop.best, stop.best_epoch, stop.stopped_epoch) == (0.3, 2, 4)
    stop = EarlyStopping(monitor="val_acc", patience=3, min_delta=0.005)
    assert _replay(stop, accs) == 8  # 0.31 beats 0.3 by more than min_delta at epoch 5
    assert stop.best_epoch == 5
    # 0.31 is not an improvement with min_delta 0.02: stops 3 epochs after epoch 2.
    assert _replay(EarlyStopping(patience=3, min_delta=0.02), accs) == 5
    loss = EarlyStopping(monitor="val_loss", patience=1)
    assert loss.mode == "min" and _replay(loss, [1.0, 0.8, 0.9], key="val_loss") == 3
    # NaN never improves; reusing the callback for a new run (epoch 1 again) starts afresh.
    nan = EarlyStopping(monitor="val_loss", patience=2)
    assert _replay(nan, [1.0, math.nan, math.nan], key="val_loss") == 3
    assert _replay(nan, [5.0, 4.0], key="val_loss") is None and nan.best_epoch == 2


def test_monitor_errors_are_clear():
    stop = EarlyStopping(monitor="val_acc")
    with pytest.raises(ValueError, match=r"monitor 'val_acc' is not in the logs \(fit logs "
                                         r"val_\* only when given a validation set\); logged: "
                                         r"lr, train_acc"):
        stop(1, {"train_acc": 0.5, "lr": 0.1})
    with pytest.raises(ValueError, match=r"mode='auto' cannot tell whether 'lr'"):
        EarlyStopping(monitor="lr")
    assert Monitor(monitor="lr", mode="min").mode == "min"
    with pytest.raises(ValueError, match="unknown mode 'up': expected one of auto, min, max"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience must be an integer >= 1, got 0"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta must be a number >= 0, got -1"):
        EarlyStopping(min_delta=-1)


def test_reduce_lr_on_plateau_scales_at_the_right_epochs():
    plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
    losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.8, 0.85, 0.86]
    scales = []
    for epoch, loss in enumerate(losses, start=1):
        plateau(epoch, {"val_loss": loss})
        scales.append(plateau.lr_scale)
    assert plateau.reductions == [4, 6, 9]  # two epochs without beating 0.9, then 0.8
    assert scales == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    cooled = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, cooldown=2,
                               min_scale=0.2)
    for epoch in range(1, 9):
        cooled(epoch, {"val_loss": 1.0})  # never improves after epoch 1
    # Reduce at 2, cool 3-4, reduce at 5, cool 6-7, then 0.125 would pass min_scale 0.2.
    assert cooled.reductions == [2, 5, 8] and cooled.lr_scale == 0.2
    cooled(1, {"val_loss": 1.0})  # a new run
    assert cooled.lr_scale == 1.0 and cooled.reductions == []
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\), got 1.5"):
        ReduceLROnPlateau(factor=1.5)


# --- real fits ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(shared):
    root = shared / "data" / "cifar-10-subset"
    train = cifar10(root, train=True).subset(n_per_class=4, seed=0)
    val = cifar10(root, train=False).subset(n_per_class=3, seed=0)
    return train, val


def _fit(tiny, callbacks, epochs, **kw):
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=CPU, seed=0)
    gluonft.apply_regime(net, "scratch", seed=0)
    args = dict(epochs=epochs, batch_size=20, lr=0.1, ctx=CPU, seed=0, progress=False,
                callbacks=callbacks)
    args.update(kw)
    return net, gluonft.fit(net, tiny[0], tiny[1], **args)


def test_early_stopping_in_a_real_fit(tiny):
    # min_delta 100 on a loss: only epoch 1 ever counts as best, so fit must stop at epoch 3.
    stop = EarlyStopping(monitor="val_loss", patience=2, min_delta=100)
    _, history = _fit(tiny, [stop], epochs=8)
    assert history.stopped_early and len(history.epochs) == 3
    assert (stop.best_epoch, stop.stopped_epoch) == (1, 3)
    # On the logged numbers, the same rule with no min_delta stops where replaying says.
    stop = EarlyStopping(monitor="val_acc", patience=1)
    _, history = _fit(tiny, [stop], epochs=5)
    expected = _replay(EarlyStopping(monitor="val_acc", patience=1), history["val_acc"])
    assert len(history.epochs) == (expected or 5) and history.stopped_early == bool(expected)


def test_best_checkpoint_holds_the_best_epochs_weights(tiny, tmp_path):
    snapshots = {}

    def snapshot(epoch, logs):  # runs before BestCheckpoint: the weights of each epoch
        snapshots[epoch] = [p.data(CPU).asnumpy().copy()
                            for p in net_holder[0].collect_params().values()]

    net_holder = []
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=CPU, seed=0)
    gluonft.apply_regime(net, "scratch", seed=0)
    net_holder.append(net)
    path = tmp_path / "run" / "best.params"
    best = BestCheckpoint(net, path, monitor="val_loss")
    history = gluonft.fit(net, tiny[0], tiny[1], epochs=4, batch_size=20, lr=0.1, ctx=CPU,
                          seed=0, progress=False, callbacks=[snapshot, best])
    losses = history["val_loss"]
    assert best.best_epoch == int(np.argmin(losses)) + 1 and best.best == min(losses)
    info = json.loads((tmp_path / "run" / "best.params.json").read_text())
    assert info["epoch"] == best.best_epoch and info["value"] == min(losses)
    assert info["logs"]["val_loss"] == min(losses)
    loaded = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=str(path), ctx=CPU)
    for saved, param in zip(snapshots[best.best_epoch], loaded.collect_params().values()):
        np.testing.assert_array_equal(param.data(CPU).asnumpy(), saved)
    assert not list((tmp_path / "run").glob("*.tmp-*"))  # no temporary files left
    with pytest.raises(FileExistsError, match=r"would overwrite .*best.params.*overwrite=True"):
        BestCheckpoint(net, path)
    BestCheckpoint(net, path, overwrite=True)


def test_csv_logger_writes_one_row_per_epoch(tiny, tmp_path):
    path = tmp_path / "log.csv"
    _, history = _fit(tiny, [CSVLogger(path)], epochs=3)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert list(rows[0])[:2] == ["epoch", "train_loss"] and "val_acc" in rows[0]
    for row, logged in zip(rows, history.epochs):
        assert float(row["val_loss"]) == logged["val_loss"]  # full precision
    with pytest.raises(FileExistsError, match=r"would overwrite .*log.csv; pass append=True"):
        CSVLogger(path)
    more = CSVLogger(path, append=True)
    more(4, {"train_loss": 0.5, "val_acc": 0.25, "new_metric": 1.0})
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch,train_loss")
    assert "new_metric" not in lines[0]  # columns fixed by the header
    fresh = CSVLogger(path, overwrite=True)
    fresh(1, {"train_loss": 0.5})
    assert path.read_text().splitlines() == ["epoch,train_loss", "1,0.5"]


def test_reduce_lr_on_plateau_in_a_real_fit(tiny):
    plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=100)
    _, history = _fit(tiny, [plateau], epochs=4, schedule=gluonft.Schedule("constant"))
    # Never improves after epoch 1: halved after epochs 2, 3 (and 4, after the last epoch).
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_nan_losses_neither_crash_early_stopping_nor_become_the_best(tmp_path):
    nan = float("nan")
    stop = EarlyStopping(monitor="val_loss", patience=2)
    stop(1, {"val_loss": nan, "train_loss": nan})
    with pytest.raises(StopTraining, match="no valid value yet"):
        stop(2, {"val_loss": nan, "train_loss": nan})
    net = gluonft.baseline.lab1_cnn(classes=10, widths=(4, 4, 4), ctx=CPU)
    best = BestCheckpoint(net, tmp_path / "best.params", monitor="val_acc")
    best(1, {"val_acc": 0.1, "val_loss": nan, "train_loss": nan})  # chance, broken weights
    assert best.best is None and not (tmp_path / "best.params").exists()
    best(2, {"val_acc": 0.3, "val_loss": 1.9, "train_loss": 2.0})
    assert best.best_epoch == 2 and (tmp_path / "best.params").exists()
