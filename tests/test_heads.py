"""Heads as a choice (gluonft.heads): linear, MLP with BatchNorm and dropout, a user block —
trained on real clothing photos, saved, loaded back and exported."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from gluonft import recipes
from gluonft.backbones import load_backbone
from gluonft.heads import parse_head
from gluonft.model_io import (
    MODEL_JSON,
    ModelFolderError,
    export_onnx,
    export_symbol,
    load_classifier,
    save_classifier,
)
from gluonft.predict import predict_proba
from gluonft.regimes import apply_regime
from gluonft.train import fit
from gluonft.transforms import Augment

from . import clothing

CPU = clothing.CPU
SIZE = clothing.SIZE


@pytest.mark.parametrize("head, dropout, match", [
    ("conv", None, "unknown head 'conv'"),
    ("mlp:", None, "hidden widths must be positive ints"),
    ("mlp:0", None, "got '0'"),
    ("mlp:abc", None, "got 'abc'"),
    ("mlp:512,", None, "got ''"),
    ("mlp:512", 1.0, r"dropout must be a number in \[0, 1\), got 1.0"),
    ("mlp:512", -0.1, "got -0.1"),
    ("linear", 0.3, "dropout= needs an mlp head"),
    (3, None, "got 3"),
])
def test_bad_head_arguments_are_clear_errors(head, dropout, match):
    with pytest.raises(ValueError, match=match):
        load_backbone("mobilenet0.75", classes=10, weights=None, ctx=CPU, head=head,
                      dropout=dropout)


def test_a_user_block_of_the_wrong_width_fails_before_any_photo_is_decoded(shared, monkeypatch):
    root, weights = clothing.paths(shared)

    def decoding(*args, **kwargs):
        raise AssertionError("photos were decoded before the head was checked")

    monkeypatch.setattr(recipes, "image_folder", decoding)
    with pytest.raises(ValueError, match=r"outputs shape \(1, 7\).*expected \(batch, 10\)"):
        recipes.train_classifier(root, model="mobilenet0.75", weights=str(weights),
                                 head=nn.Dense(7), fast_train=True)
    with pytest.raises(ValueError, match="unknown head 'mlp2'"):
        recipes.train_classifier(root / "no-such-folder", head="mlp2", fast_train=True)


def test_mlp_head_trains_on_cached_features_and_its_batchnorm_learns(shared):
    """Head only with an MLP head: the backbone (weights and BatchNorm statistics) stays
    bit-identical, the head's weights and its own BatchNorm statistics move, the feature cache
    serves the frozen backbone, and the net learns the real photos."""
    root, weights = clothing.paths(shared)
    data = clothing.data(shared)
    net = load_backbone("mobilenet0.75", classes=10, weights=str(weights), ctx=CPU,
                        head="mlp:256", dropout=0.2)
    assert [type(b).__name__ for b in net.output] == [
        "Dense", "FeatureBatchNorm", "Activation", "Dropout", "Dense"]
    plan = apply_regime(net, "head")
    assert plan.head_batchnorms == 1 and plan.frozen_batchnorms == plan.batchnorms == 27
    assert "the new head's 1 BatchNorm layer learns" in plan.describe()
    backbone = {k: p.data().copy() for k, p in net.features.collect_params().items()}
    head = {k: p.data().copy() for k, p in net.output.collect_params().items()}
    train = data.train.subset(n_per_class=60, seed=0)
    history = fit(net, train, data.validation, epochs=6, batch_size=64, lr=0.05,
                  augment=Augment.none(), image_size=SIZE, ctx=CPU, progress=False)
    assert history.settings["cache_features"] is True
    assert history.settings["head"] == "mlp:256" and history.settings["dropout"] == 0.2
    for k, p in net.features.collect_params().items():
        assert np.array_equal(p.data().asnumpy(), backbone[k].asnumpy()), k
    moved = {k for k, p in net.output.collect_params().items()
             if not np.array_equal(p.data().asnumpy(), head[k].asnumpy())}
    assert moved == set(head), f"head parameters that did not move: {set(head) - moved}"
    # running_mean/var are among them: the head's BatchNorm learned the new features' statistics
    assert any(k.endswith("running_mean") for k in moved)
    # 10 classes: chance is 0.1; 600 photos and 6 epochs give ~0.55 (seen 0.57).
    assert history["val_acc"][-1] > 0.4


def test_dropout_is_off_at_prediction(shared):
    """Two predictions of the same photos agree exactly (same process, same kernels), while in
    training mode the dropout of the MLP head makes two forward passes differ."""
    data = clothing.data(shared)
    net = load_backbone("mobilenet0.75", classes=10, weights=str(clothing.paths(shared)[1]),
                        ctx=CPU, head="mlp:128", dropout=0.5)
    photos = data.test.take(np.arange(8))
    first = predict_proba(net, photos, ctx=CPU, image_size=SIZE)
    second = predict_proba(net, photos, ctx=CPU, image_size=SIZE)
    assert np.array_equal(first, second)
    x = mx.nd.random.uniform(shape=(4, 3, SIZE, SIZE))
    with mx.autograd.record(train_mode=True):
        a, b = net(x).asnumpy(), net(x).asnumpy()
    assert not np.allclose(a, b)


def test_mlp_head_model_folder_loads_back_and_exports(shared, tmp_path):
    data = clothing.data(shared)
    net = load_backbone("mobilenet0.75", classes=10, weights=str(clothing.paths(shared)[1]),
                        ctx=CPU, head="mlp:1024,256", dropout=0.3, seed=1)
    apply_regime(net, "head")
    fit(net, data.train.subset(n_per_class=10, seed=0), epochs=1, batch_size=32, lr=0.05,
        augment=Augment.none(), image_size=SIZE, ctx=CPU, progress=False)
    folder = save_classifier(net, tmp_path / "model", classes=data.classes, image_size=SIZE,
                             data=data)
    meta = json.loads((folder / MODEL_JSON).read_text())
    assert meta["head"] == "mlp:1024,256" and meta["dropout"] == 0.3
    loaded = load_classifier(folder, ctx=CPU)
    assert loaded.net.head_spec == parse_head("mlp:1024,256", dropout=0.3)
    photos = data.test.take(np.arange(0, 372, 31))
    expected = predict_proba(net, photos, ctx=CPU, image_size=SIZE)
    # Same weights, same process and kernels: equal up to float32 rounding (seen: identical).
    np.testing.assert_allclose(predict_proba(loaded.net, photos, ctx=CPU, image_size=SIZE),
                               expected, atol=1e-6)
    files = export_symbol(loaded, tmp_path / "export")
    block = mx.gluon.SymbolBlock.imports(str(files["symbol"]), ["data"], str(files["params"]),
                                         ctx=CPU)
    x = loaded.prepare(photos.images, ctx=CPU)
    np.testing.assert_allclose(mx.nd.softmax(block(x)).asnumpy(), expected, atol=1e-5)
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    session = ort.InferenceSession(str(export_onnx(loaded, tmp_path / "model.onnx")),
                                   providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.asnumpy()})[0]
    # Two runtimes' float32 kernels: probabilities within 1e-4 (seen: ~1e-6); dropout and
    # BatchNorm export in inference form.
    np.testing.assert_allclose(mx.nd.softmax(mx.nd.array(logits)).asnumpy(), expected,
                               atol=1e-4)


class TwoLayerHead(nn.HybridBlock):
    """A user's own head: dropout, a hidden layer with a different activation, the output."""

    def __init__(self, classes, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.hidden = nn.Dense(64, activation="tanh")
            self.out = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.out(self.hidden(F.flatten(x)))


def test_a_user_block_trains_and_loads_back_with_head_given(shared, tmp_path):
    data = clothing.data(shared)
    net = load_backbone("mobilenet0.75", classes=10, weights=str(clothing.paths(shared)[1]),
                        ctx=CPU, head=TwoLayerHead(10))
    frozen = net.features.collect_params()
    before = {k: p.data().copy() for k, p in frozen.items()}
    apply_regime(net, "head")
    fit(net, data.train.subset(n_per_class=10, seed=0), epochs=1, batch_size=32, lr=0.05,
        augment=Augment.none(), image_size=SIZE, ctx=CPU, progress=False)
    assert all(np.array_equal(p.data().asnumpy(), before[k].asnumpy())
               for k, p in frozen.items())
    folder = save_classifier(net, tmp_path / "model", classes=data.classes, image_size=SIZE,
                             data=data)
    assert json.loads((folder / MODEL_JSON).read_text())["head"] == "custom:TwoLayerHead"
    with pytest.raises(ModelFolderError, match="head block of your own.*TwoLayerHead"):
        load_classifier(folder, ctx=CPU)
    loaded = load_classifier(folder, ctx=CPU, head=TwoLayerHead(10))
    photos = data.test.take(np.arange(6))
    np.testing.assert_allclose(predict_proba(loaded.net, photos, ctx=CPU, image_size=SIZE),
                               predict_proba(net, photos, ctx=CPU, image_size=SIZE), atol=1e-6)


def test_imagenet_head_is_carried_over_only_by_the_linear_head(shared):
    weights = str(clothing.paths(shared)[1])
    linear = load_backbone("mobilenet0.75", classes=1000, weights=weights, ctx=CPU)
    again = load_backbone("mobilenet0.75", classes=1000, weights=weights, ctx=CPU, seed=5)
    # The carried-over ImageNet classifier does not depend on the seed; a fresh one would.
    assert np.array_equal(linear.output.weight.data().asnumpy(),
                          again.output.weight.data().asnumpy())
    mlp = load_backbone("mobilenet0.75", classes=1000, weights=weights, ctx=CPU, head="mlp:64")
    assert mlp.output[0].weight.shape == (64, 768)
    # Only the head is new: the backbone is the same ImageNet one in both nets.
    for (k, a), b in zip(linear.features.collect_params().items(),
                         mlp.features.collect_params().values()):
        assert np.array_equal(a.data().asnumpy(), b.data().asnumpy()), k
