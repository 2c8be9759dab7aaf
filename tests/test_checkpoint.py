"""fit's checkpoints are one atomic unit: a kill at any write resumes to the uninterrupted
result."""
import glob
import os

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft import fileio
from gluonft.baseline import lab1_cnn
from gluonft.checkpoint import checkpoint_files, read_checkpoint
from gluonft.datasets import cifar10

CPU = mx.cpu()
EPOCHS = 3


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in gluonft catches it."""


@pytest.fixture(scope="module")
def data(shared):
    return cifar10(str(shared / "data" / "cifar-10-subset"), train=True).subset(
        n_per_class=6, seed=1)


def _train(data, checkpoint):
    net = lab1_cnn(classes=10, widths=(8, 16, 16), ctx=CPU, seed=3)
    gluonft.apply_regime(net, "scratch", seed=3)
    history = gluonft.fit(net, data, epochs=EPOCHS, batch_size=20, lr=0.05, ctx=CPU, seed=4,
                          augment=gluonft.Augment.none(), progress=False, checkpoint=checkpoint)
    return net, history


def _weights(net):
    return {k: p.data().asnumpy() for k, p in net._collect_params_with_prefix().items()}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    net, history = _train(data, str(tmp_path_factory.mktemp("whole") / "run"))
    return _weights(net), history


def _kill_at(monkeypatch, n):
    """Make the n-th atomic write die half way: its temporary file holds half the bytes and is
    neither renamed nor removed, as after a real kill."""
    real = fileio.atomic_write
    calls = []

    def dying(path, write):
        calls.append(path)
        if len(calls) != n:
            return real(path, write)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.killed.tmp")
        write(tmp)
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        raise Killed(path)

    monkeypatch.setattr(fileio, "atomic_write", dying)
    return calls


@pytest.mark.parametrize("write", range(1, 3 * EPOCHS + 1))
def test_a_kill_at_any_checkpoint_write_resumes_to_the_uninterrupted_result(
        data, uninterrupted, tmp_path, monkeypatch, write):
    """Each epoch writes params, states, then the manifest; kill at each of the 9 writes."""
    checkpoint = str(tmp_path / "ckpt" / "run")
    calls = _kill_at(monkeypatch, write)
    with pytest.raises(Killed):
        _train(data, checkpoint)
    killed_in = calls[-1]
    monkeypatch.undo()

    manifest = read_checkpoint(checkpoint)
    committed = (write - 1) // 3  # epochs whose manifest was written before the kill
    assert (manifest is None) == (committed == 0)
    if manifest is not None:
        assert len(manifest["epochs"]) == committed, killed_in
        files = checkpoint_files(checkpoint, manifest)
        # The manifest names files of its own epoch, whatever the kill left half written.
        assert files["params"].endswith(f".e{committed:04d}.params")
        assert files["states"].endswith(f".e{committed:04d}.states")

    net, history = _train(data, checkpoint)
    expected, full = uninterrupted
    assert [row["epoch"] for row in history.epochs] == list(range(1, EPOCHS + 1))
    # The same process and kernels: resumed and uninterrupted runs compute the same floats
    # (rtol only for the order of oneDNN's threaded reductions, as in test_train's resume).
    assert history["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)
    for name, value in _weights(net).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # Only the last epoch's files remain; the killed write's temporary file is gone.
    left = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "ckpt" / "*")) +
                  glob.glob(str(tmp_path / "ckpt" / ".*")))
    assert left == ["run.e0003.params", "run.e0003.states", "run.json"], left


def test_a_checkpoint_whose_files_were_removed_is_a_clear_error(data, tmp_path):
    checkpoint = str(tmp_path / "run")
    _train(data, checkpoint)
    os.remove(checkpoint_files(checkpoint)["states"])
    with pytest.raises(ValueError, match=r"names files that are missing: .*run\.e0003\.states"):
        _train(data, checkpoint)
