"""The fused oneDNN inference path (gluonft.inference): the plain block's numbers, on real
weights and photos, before and after training; the fallbacks."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import gluonft
from gluonft.inference import (
    FUSION_ENV,
    FUSION_MIN_IMAGES,
    fused_twin,
    fusion_available,
    inference_forward,
)
from gluonft.transforms import BatchTransform, to_device

from . import clothing

CPU = clothing.CPU
pytestmark = pytest.mark.skipif(fusion_available([CPU]) is not None,
                                reason=f"no fused path here: {fusion_available([CPU])}")


def _rel(a, b):
    """Largest difference relative to the largest logit: the scale a reader compares."""
    return float(np.abs(a - b).max() / np.abs(b).max())


# Fused and plain differ in the order of float32 operations only: BatchNorm folded into the
# convolution weights (w * gamma / sqrt(var + eps) rounded once), fused kernels. Measured on
# real weights and photos (AVX-512 Xeon; 3.3e-6 for mobilenet0.75 on an AVX2 EPYC): at most
# 3.8e-6 of the largest logit (mobilenet0.75 at 64/160 px, efficientnet_lite0 at 64/224,
# cifar_resnet20_v1), argmax identical. 1e-4 is 26x the worst seen; a wrong fold (a BatchNorm
# dropped or applied twice, stale weights) moves logits by 1e-2 of their scale or more.
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def photos(shared):
    data = clothing.data(shared)
    return data, data.test.images[:48]


def _inputs(net, images, size=clothing.SIZE):
    return BatchTransform(size, net.family.mean, net.family.std)(
        to_device(images, CPU, "uint8"), None)


def test_fused_logits_equal_the_plain_block_on_real_weights_and_photos(shared, photos):
    data, images = photos
    net = gluonft.load_backbone("mobilenet0.75", classes=len(data.classes), head="mlp:256",
                                weights=str(clothing.paths(shared)[1]), ctx=CPU)
    x = _inputs(net, images)
    with autograd.predict_mode():
        plain = net(x).asnumpy()
    forward = inference_forward(net, [CPU])
    assert forward is not net  # the twin, not the block
    fused = forward(x).asnumpy()
    assert _rel(fused, plain) < REL_TOL
    assert (fused.argmax(1) == plain.argmax(1)).all()
    # A smaller last batch re-plans the twin and still gives the same numbers.
    assert _rel(forward(x[:5]).asnumpy(), plain[:5]) < REL_TOL


def test_a_pass_after_training_steps_uses_the_new_weights(shared, photos):
    """A twin folds BatchNorm into the weights as they are when it first runs: each pass
    builds its own, so a pass after optimiser steps (which also moved the running statistics)
    gives the trained net's numbers, and shares its Parameter objects (no weight copied)."""
    data, images = photos
    net = gluonft.load_backbone("mobilenet0.75", classes=len(data.classes),
                                weights=str(clothing.paths(shared)[1]), ctx=CPU)
    gluonft.apply_regime(net, "full")
    x = _inputs(net, images[:32])
    y = mx.nd.array(data.test.labels[:32])
    before = inference_forward(net, [CPU])(x).asnumpy()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05})
    for _ in range(3):
        with autograd.record():  # training mode: the running statistics move too
            loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(x), y)
        loss.backward()
        trainer.step(len(y))
    with autograd.predict_mode():
        plain = net(x).asnumpy()
    assert _rel(plain, before) > 1e-2  # the steps changed the net
    assert _rel(inference_forward(net, [CPU])(x).asnumpy(), plain) < REL_TOL
    twin = fused_twin(net, x)
    assert {id(p) for p in twin.collect_params().values()} \
        <= {id(p) for p in net.collect_params().values()}


def test_small_passes_keep_the_plain_block(shared):
    net = gluonft.load_backbone("mobilenet0.75", classes=3, weights=None, ctx=CPU)
    assert inference_forward(net, [CPU], images=FUSION_MIN_IMAGES - 1) is net
    assert inference_forward(net, [CPU], images=FUSION_MIN_IMAGES) is not net
    assert inference_forward(net, [CPU], hybridize=False) is net


def test_predict_proba_on_two_devices_and_without_fusion(shared, photos, monkeypatch,
                                                         tmp_path):
    clf = clothing.classifier(shared)
    test = clothing.data(shared).test  # 372 photos: over FUSION_MIN_IMAGES
    assert len(test) >= FUSION_MIN_IMAGES
    fused = gluonft.predict_proba(clf.net, test, ctx=CPU, image_size=clothing.SIZE)
    monkeypatch.setenv(FUSION_ENV, "0")
    assert fusion_available([CPU]) == f"{FUSION_ENV}=0"
    assert inference_forward(clf.net, [CPU]) is clf.net
    plain = gluonft.predict_proba(clf.net, test, ctx=CPU, image_size=clothing.SIZE)
    with autograd.predict_mode():  # unfused, the one hybridized graph, all 372 in one batch
        direct = mx.nd.softmax(clf.net(_inputs(clf.net, test.images))).asnumpy()
    # Not bit for bit across machines: predict_proba scores in batches, and oneDNN picks its
    # convolution kernels by batch size on AVX2 (on AVX-512 the two happened to agree
    # exactly). Seen on an AVX2 EPYC: 1.0e-6 at most in probability (float32 rounding of
    # logits of magnitude ~10); 1e-5 is ten times that, far below a real difference.
    np.testing.assert_allclose(plain, direct, rtol=0, atol=1e-5)
    # Probabilities in [0, 1]: the logits' tolerance carries over as an absolute one.
    np.testing.assert_allclose(fused, plain, rtol=0, atol=REL_TOL)
    monkeypatch.delenv(FUSION_ENV)
    clf.net.save_parameters(str(tmp_path / "net.params"))
    two_devices = [mx.cpu(0), mx.cpu(1)]
    net2 = gluonft.load_backbone("mobilenet0.75", classes=10, ctx=two_devices, weights=None)
    net2.load_parameters(str(tmp_path / "net.params"), ctx=two_devices)
    two = gluonft.predict_proba(net2, test, ctx=two_devices, image_size=clothing.SIZE)
    np.testing.assert_allclose(two, fused, rtol=0, atol=REL_TOL)


def test_fallbacks_name_their_reason(monkeypatch):
    assert "GPU" in fusion_available([mx.gpu(0)])
    monkeypatch.setenv(FUSION_ENV, "off")
    assert fusion_available([CPU]) == f"{FUSION_ENV}=off"
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(4))
    net.initialize(ctx=CPU)
    net.cast("float16")
    monkeypatch.delenv(FUSION_ENV)
    assert inference_forward(net, [CPU]) is net  # not float32: the block itself
