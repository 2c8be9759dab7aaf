"""Test-time augmentation with the real CIFAR-10 weights on real CIFAR-10 test images."""
import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.datasets import ImageSet, cifar10
from gluonft.predict import VIEW_NAMES, evaluate_tta, predict_proba_tta, tta_views

CPU = mx.cpu()


@pytest.fixture(scope="module")
def test_images(shared):
    return cifar10(shared / "data" / "cifar-10-subset", train=False)


@pytest.fixture(scope="module")
def net(shared):
    return gluonft.load_backbone(
        "cifar_resnet20_v1", classes=10, ctx=CPU,
        weights=str(shared / "weights" / "cifar_resnet20_v1-cifar10.params"))


def test_flip_tta_on_real_weights_is_no_worse_and_identity_equals_evaluate(net, test_images):
    plain = gluonft.evaluate(net, test_images, ctx=CPU, batch_size=128)
    assert plain["accuracy"] > 0.9  # the real weights: 93.8 % on these 1017 images
    assert evaluate_tta(net, test_images, views=("identity",), ctx=CPU, batch_size=128) == plain
    flip = evaluate_tta(net, test_images, views="flip", ctx=CPU, batch_size=128)
    assert flip["count"] == 1017
    assert flip["accuracy"] >= plain["accuracy"] - 0.01
    assert flip["loss"] <= plain["loss"] + 0.02


def test_views_are_what_they_say(net, test_images):
    data = test_images.take(np.arange(64))
    mirrored = ImageSet(np.ascontiguousarray(data.images[:, :, ::-1]), data.labels,
                        data.classes, "mirrored")
    flip = predict_proba_tta(net, data, views=("flip",), ctx=CPU)
    np.testing.assert_allclose(flip, gluonft.predict_proba(net, mirrored, ctx=CPU), atol=1e-5)
    # A "crop" of the whole side is the identity (up to float32 grid rounding).
    whole = predict_proba_tta(net, data, views=("center",), crop=1.0, ctx=CPU)
    np.testing.assert_allclose(whole, gluonft.predict_proba(net, data, ctx=CPU), atol=1e-4)
    # A corner crop at the stored size is that corner of the image, resampled to the input.
    big = ImageSet(np.pad(data.images, ((0, 0), (0, 8), (0, 8), (0, 0))), data.labels,
                   data.classes, "padded to 40")
    corner = predict_proba_tta(net, big, views=("top_left",), crop=0.8, image_size=32, ctx=CPU)
    # 0.8 of 40 px: the top-left 32 px, i.e. the original image, sampled at 31/39 px pitch.
    assert (corner.argmax(1) == gluonft.predict_proba(net, data, ctx=CPU).argmax(1)).mean() > 0.8


def test_ten_crop_is_the_mean_of_its_views(net, test_images):
    data = test_images.take(np.arange(20))
    ten = predict_proba_tta(net, data, views="ten_crop", crop=0.9, ctx=CPU)
    each = [predict_proba_tta(net, data, views=(v,), crop=0.9, ctx=CPU)
            for v in tta_views("ten_crop")]
    np.testing.assert_allclose(ten, np.mean(each, axis=0), atol=1e-6)
    np.testing.assert_allclose(ten.sum(axis=1), 1, atol=1e-5)
    both = [mx.cpu(0), mx.cpu(1)]
    with pytest.raises(ValueError, match=r"parameters live on \[cpu\(0\)\] but ctx asks for"):
        predict_proba_tta(net, data, ctx=both)
    net.collect_params().reset_ctx(both)
    try:
        two_devices = predict_proba_tta(net, data, views="ten_crop", crop=0.9, ctx=both)
    finally:
        net.collect_params().reset_ctx(CPU)
    np.testing.assert_allclose(two_devices, ten, atol=1e-6)


def test_view_names_sets_and_counts():
    assert tta_views("flip") == ("identity", "flip") == tta_views(2)
    assert tta_views(1) == ("identity",) and len(tta_views(10)) == 10
    assert tta_views("five_crop")[0] == "center" and tta_views("flip_center") == ("flip_center",)
    assert set(tta_views("ten_crop")) <= set(VIEW_NAMES)
    with pytest.raises(ValueError, match="unknown views 'mirror'"):
        tta_views("mirror")
    with pytest.raises(ValueError, match="views=3: a count must be one of 1, 2, 5, 10"):
        tta_views(3)
    with pytest.raises(ValueError, match=r"unknown view\(s\) \['upside_down'\]"):
        tta_views(["identity", "upside_down"])


def test_argument_errors(net, test_images):
    with pytest.raises(ValueError, match=r"crop must be in \(0, 1\] .*got 1.5"):
        evaluate_tta(net, test_images, crop=1.5)
    with pytest.raises(ValueError, match="data must be a gluonft ImageSet, got ndarray"):
        evaluate_tta(net, test_images.images)
