"""Feature cache: cached training equals uncached, keys follow what features depend on, files on
disk are validated and rebuilt. Small random-weight nets and random images: fast and offline.
Speed is measured by `python -m bench.speed`, never here."""
import os
import shutil
import warnings

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.datasets import ImageSet
from gluonft.datasets.imageset import iterate_batches
from gluonft.features import (
    FeatureCacheWarning,
    batch_indices,
    deepen_features,
    extract_features,
    feature_key,
    prefix_block,
)
from gluonft.transforms import BatchTransform

CPU = mx.cpu()
NONE = gluonft.Augment.none()


def _images(n, seed, size=32, classes=4):
    rng = np.random.RandomState(seed)
    # Smooth-ish random images: a coarse grid upsampled, so convolutions see structure.
    coarse = rng.randint(0, 256, (n, size // 4, size // 4, 3)).astype(np.uint8)
    images = np.ascontiguousarray(coarse.repeat(4, axis=1).repeat(4, axis=2))
    labels = np.arange(n) % classes
    return ImageSet(images, labels, tuple(f"c{i}" for i in range(classes)), f"random {seed}")


@pytest.fixture(scope="module")
def data():
    return _images(50, 0), _images(22, 1)  # 50 = 3 batches of 16 and one of 2


def _net(regime="head"):
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=4, weights=None, ctx=CPU, seed=0)
    gluonft.apply_regime(net, regime)
    return net


def _fit(net, train, val, **kw):
    args = dict(epochs=3, batch_size=16, lr=0.1, augment=NONE, ctx=CPU, seed=3, progress=False)
    args.update(kw)
    return gluonft.fit(net, train, val, **args)


def _trainable_weights(net):
    return {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()
            if p.grad_req != "null"}


def _assert_same_training(cached, uncached, net_c, net_u):
    assert cached.settings["cache_features"] is True
    assert uncached.settings["cache_features"] is False
    for key in ("train_loss", "val_loss"):
        assert cached[key] == pytest.approx(uncached[key], rel=1e-4)
    assert cached["train_acc"] == uncached["train_acc"]
    assert cached["val_acc"] == uncached["val_acc"]
    assert cached["train_loss"][-1] != cached["train_loss"][0]  # it did train
    weights_c, weights_u = _trainable_weights(net_c), _trainable_weights(net_u)
    assert weights_c.keys() == weights_u.keys() and weights_c
    for name in weights_c:
        np.testing.assert_allclose(weights_c[name], weights_u[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_head_only_on_cached_features_equals_uncached_training(data):
    train, val = data
    net_c, net_u = _net(), _net()
    cached = _fit(net_c, train, val, cache_features=True)
    uncached = _fit(net_u, train, val, cache_features=False)
    _assert_same_training(cached, uncached, net_c, net_u)
    info = cached.settings["feature_cache"]
    assert info["train"]["source"] == "computed" and info["train"]["shape"][0] == len(train)
    assert info["val"]["shape"][0] == len(val)
    assert uncached.settings["feature_cache"]["train"] is None


def test_last_k_prefix_cached_equals_uncached(data):
    train, val = data
    net_c, net_u = _net("last_k:1"), _net("last_k:1")
    cached = _fit(net_c, train, val, cache_features=True, epochs=2)
    uncached = _fit(net_u, train, val, cache_features=False, epochs=2)
    _assert_same_training(cached, uncached, net_c, net_u)
    # the trainable stage's BatchNorm learns (training mode) on the cached prefix output too
    assert len(cached.settings["feature_cache"]["train"]["shape"]) == 4  # (N, C, H, W)


def test_cache_is_automatic_only_without_augmentation_and_with_a_frozen_prefix(data):
    train, _ = data
    short = dict(epochs=1)
    assert _fit(_net(), train, None, **short).settings["cache_features"] is True
    augmented = _fit(_net(), train, None, augment=gluonft.Augment(), **short)
    assert augmented.settings["cache_features"] is False
    assert "augmentation" in augmented.settings["feature_cache"]["reason"]
    assert _fit(_net("full"), train, None, **short).settings["cache_features"] is False
    with pytest.raises(ValueError, match="cache_features=True but training augmentation"):
        _fit(_net(), train, None, augment=gluonft.Augment(), cache_features=True, **short)
    with pytest.raises(ValueError, match="cache_features=True but the regime leaves no frozen"):
        _fit(_net("full"), train, None, cache_features=True, **short)
    with pytest.raises(ValueError, match="cache_features must be None .* got 'yes'"):
        _fit(_net(), train, None, cache_features="yes", **short)


def test_auto_cache_respects_its_memory_limit(data, monkeypatch):
    monkeypatch.setattr(gluonft.batches, "AUTO_CACHE_MAX_BYTES", 1000)
    history = _fit(_net(), data[0], None, epochs=1)
    assert history.settings["cache_features"] is False
    assert "automatic limit" in history.settings["feature_cache"]["reason"]
    assert _fit(_net(), data[0], None, epochs=1, cache_features=True).settings["cache_features"]


def _key(net, data, steps, image_size=32):
    return feature_key(prefix_block(net, steps), data, backbone=net.backbone, steps=steps,
                       image_size=image_size, mean=net.family.mean, std=net.family.std)


def test_key_changes_with_weights_data_image_size_and_prefix(data):
    train, val = data
    net = _net()
    steps = len(net.features._children)
    base = _key(net, train, steps)
    assert _key(_net(), train, steps) == base  # same weights, data, size, prefix: same key
    assert _key(net, val, steps) != base
    changed = ImageSet(train.images.copy(), train.labels, train.classes, "one pixel changed")
    changed.images[0, 0, 0, 0] ^= 1
    assert _key(net, changed, steps) != base
    relabelled = ImageSet(train.images, train.labels[::-1].copy(), train.classes, "labels")
    assert _key(net, relabelled, steps) != base
    assert _key(net, train, steps, image_size=40) != base
    assert _key(net, train, steps - 1) != base
    first_conv = net.features[0]
    first_conv.weight.set_data(first_conv.weight.data() * 1.001)
    assert _key(net, train, steps) != base
    other = gluonft.load_backbone("cifar_resnet20_v1", classes=4, weights=None, ctx=CPU, seed=1)
    assert _key(other, train, steps) != base


def _cache_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".npz"))


def test_disk_cache_is_reused_and_rebuilt_when_what_it_depends_on_changes(data, tmp_path):
    train, val = data
    folder = str(tmp_path / "features")
    first = _fit(_net(), train, val, epochs=1, cache_dir=folder)
    assert first.settings["feature_cache"]["train"]["source"] == "computed"
    assert len(_cache_files(folder)) == 2  # train and val
    again = _fit(_net(), train, val, epochs=1, cache_dir=folder)
    assert again.settings["feature_cache"]["train"]["source"] == "disk"
    assert again.settings["feature_cache"]["val"]["source"] == "disk"
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=1e-6)

    sized = _fit(_net(), train, val, epochs=1, cache_dir=folder, image_size=40)
    assert sized.settings["feature_cache"]["train"]["source"] == "computed"
    prefix = _fit(_net("last_k:1"), train, val, epochs=1, cache_dir=folder)
    assert prefix.settings["feature_cache"]["train"]["source"] == "computed"
    net = _net()
    net.features[0].weight.set_data(net.features[0].weight.data() + 0.01)
    reweighted = _fit(net, train, val, epochs=1, cache_dir=folder)
    assert reweighted.settings["feature_cache"]["train"]["source"] == "computed"
    assert len(_cache_files(folder)) == 8
    assert not [f for f in os.listdir(folder) if ".tmp" in f]  # atomic writes leave no debris


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "wrong_key"])
def test_a_corrupt_or_stale_cache_file_is_detected_and_rebuilt(data, tmp_path, damage):
    train = data[0]
    folder = str(tmp_path)
    net = _net()
    built = extract_features(net, train, image_size=32, ctx=CPU, cache_dir=folder)
    path = built.path
    if damage == "truncate":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif damage == "garbage":
        with open(path, "wb") as f:
            f.write(b"not a zip file at all")
    elif damage == "flip":  # one byte inside the stored features: the zip CRC catches it
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:  # a valid file of other features under this key's name
        other = extract_features(net, data[1], image_size=32, ctx=CPU, cache_dir=folder)
        shutil.copyfile(other.path, path)
    with pytest.warns(FeatureCacheWarning, match="unusable"):
        rebuilt = extract_features(net, train, image_size=32, ctx=CPU, cache_dir=folder)
    assert rebuilt.source == "computed" and rebuilt.path == path
    np.testing.assert_allclose(rebuilt.values, built.values, rtol=1e-6, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        reloaded = extract_features(net, train, image_size=32, ctx=CPU, cache_dir=folder)
    assert reloaded.source == "disk"
    assert np.array_equal(reloaded.values, rebuilt.values)


def test_extracted_features_are_the_backbone_output_in_stored_order(data):
    train = data[0]
    net = _net()
    feats = extract_features(net, train, image_size=32, ctx=CPU, batch_size=7)
    tf = BatchTransform(32, net.family.mean, net.family.std)
    direct = net.features(tf(mx.nd.array(train.images, dtype="uint8"), None)).asnumpy()
    assert feats.values.shape == direct.shape == (len(train), 64, 1, 1)
    np.testing.assert_allclose(feats.values, direct, rtol=1e-4, atol=1e-5)
    assert np.array_equal(feats.labels, train.labels) and feats.source == "computed"
    with pytest.raises(ValueError, match="steps must be an int in"):
        extract_features(net, train, steps=0, ctx=CPU)


def test_features_deepened_from_a_shallower_cut_equal_those_extracted_at_the_deeper_one(data):
    train = data[0]
    net = _net()
    steps = len(net.features._children)
    shallow = extract_features(net, train, steps=3, image_size=32, ctx=CPU, batch_size=16)
    deep = extract_features(net, train, steps=steps, image_size=32, ctx=CPU, batch_size=16)
    deepened = deepen_features(shallow, net, steps, ctx=CPU, batch_size=16)
    assert shallow.steps == 3 and deep.steps == deepened.steps == steps
    assert deepened.source == "deepened" and deepened.values.shape == deep.values.shape
    # The same layers in other fused graphs: float32 rounding apart (values of order 1),
    # the tolerance the cached-vs-uncached tests use.
    np.testing.assert_allclose(deepened.values, deep.values, rtol=1e-4, atol=1e-5)
    assert np.array_equal(deepened.labels, train.labels)
    assert deepen_features(shallow, net, 3) is shallow  # nothing in between
    with pytest.raises(ValueError, match=r"steps must be an int in \[3, "):
        deepen_features(shallow, net, 2)


def test_fit_from_shallower_prefix_features_trains_as_from_the_photos(data):
    """What fine_tune's stages share: a head-only fit given the features of the first 3
    steps runs only the rest over them, and trains as when it computes its own."""
    train, val = data
    net_s, net_o = _net(), _net()
    source = tuple(extract_features(net_s, d, steps=3, image_size=32, ctx=CPU, batch_size=16)
                   for d in (train, val))
    shared = _fit(net_s, train, val, prefix_features=source)
    own = _fit(net_o, train, val)
    info = shared.settings["feature_cache"]
    assert info["train"]["source"] == "deepened" and info["from_prefix"]["steps"] == 3
    assert own.settings["feature_cache"]["train"]["source"] == "computed"
    for key in ("train_loss", "val_loss"):
        assert shared[key] == pytest.approx(own[key], rel=1e-4)
    assert shared["val_acc"] == own["val_acc"]
    weights_s, weights_o = _trainable_weights(net_s), _trainable_weights(net_o)
    for name in weights_s:
        np.testing.assert_allclose(weights_s[name], weights_o[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_prefix_features_that_do_not_fit_the_run_are_refused(data):
    train, val = data
    net = _net("last_k:1")
    frozen = gluonft.regimes.frozen_prefix(net)
    whole = len(net.features._children)
    deep = tuple(extract_features(net, d, steps=whole, image_size=32, ctx=CPU) for d in data)
    with pytest.raises(ValueError, match=f"come from {whole} backbone steps; this regime "
                                         f"freezes the first {frozen}"):
        _fit(net, train, val, prefix_features=deep)
    shallow = tuple(extract_features(net, d, steps=2, image_size=32, ctx=CPU) for d in data)
    with pytest.raises(ValueError, match=r"prefix_features\['val'\] are not the 22 val"):
        _fit(net, train, val, prefix_features=(shallow[0], shallow[0]))
    with pytest.raises(ValueError, match="a \\(train, val\\) pair"):
        _fit(net, train, val, prefix_features=shallow[0])
    # with the cache off they are not used, and the history says so
    off = _fit(net, train, val, epochs=1, prefix_features=shallow, cache_features=False)
    assert off.settings["feature_cache"]["from_prefix"].startswith("not used: the cache is off")


@pytest.mark.parametrize("shuffle", [True, False])
def test_batch_indices_follow_iterate_batches(data, shuffle):
    train = data[0]
    kw = dict(seed=4, epoch=2) if shuffle else {}
    got = list(iterate_batches(train, 16, shuffle=shuffle, **kw))
    want = list(batch_indices(len(train), 16, shuffle=shuffle, **kw))
    assert len(got) == len(want) == 4
    for (images, labels), idx in zip(got, want):
        assert np.array_equal(images, train.images[idx])
        assert np.array_equal(labels, train.labels[idx])


def test_cached_training_on_two_devices_matches_one(data):
    train, val = data
    one = _fit(_net(), train, val, epochs=2)
    net2 = gluonft.load_backbone("cifar_resnet20_v1", classes=4, weights=None,
                                 ctx=[mx.cpu(0), mx.cpu(1)], seed=0)
    gluonft.apply_regime(net2, "head")
    two = _fit(net2, train, val, epochs=2, ctx=[mx.cpu(0), mx.cpu(1)])
    assert one.settings["cache_features"] and two.settings["cache_features"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    assert two["val_acc"] == one["val_acc"]


def test_fit_numbers_equal_a_plain_gluon_loop(data, monkeypatch):
    """The device-side loss/accuracy sums and the asynchronous batches change no number: fit
    logs what an obvious loop over the same batches computes, and ends at the same weights.
    The frozen prefix runs unfused here, as in the loop: this checks the bookkeeping to 1e-5;
    tests/test_inference.py checks what fusion changes (float rounding only)."""
    monkeypatch.setenv("GLUONFT_FUSION", "0")
    train = data[0]
    net = _net("last_k:1")
    history = _fit(net, train, None, epochs=2, cache_features=False,
                   schedule=gluonft.Schedule("constant"))

    ref = _net("last_k:1")
    ref.hybridize()
    params = [p for p in ref.collect_params().values() if p.grad_req != "null"]
    trainer = mx.gluon.Trainer(params, "sgd", {"learning_rate": 0.1, "wd": 1e-4,
                                               "momentum": 0.9})
    tf = BatchTransform(32, ref.family.mean, ref.family.std)
    for epoch in range(2):
        loss_sum = correct = 0.0
        for images, labels in iterate_batches(train, 16, shuffle=True, seed=3, epoch=epoch):
            x = tf(mx.nd.array(images, dtype="uint8"))
            y = mx.nd.array(labels)
            with mx.autograd.record():
                out = ref(x)
                loss = -mx.nd.pick(mx.nd.log_softmax(out, axis=-1), y, axis=-1)
            loss.backward()
            trainer.step(len(images))
            loss_sum += float(loss.sum().asscalar())
            correct += float((out.argmax(axis=1) == y).sum().asscalar())
        assert history["train_loss"][epoch] == pytest.approx(loss_sum / len(train), rel=1e-5)
        assert history["train_acc"][epoch] == correct / len(train)
    for name, weights in _trainable_weights(net).items():
        np.testing.assert_allclose(weights, _trainable_weights(ref)[name], rtol=1e-4,
                                   atol=1e-6, err_msg=name)


def test_fixed_augmented_views_cached_equal_uncached(data):
    train, val = data
    augment = gluonft.Augment(flip=True, translate=0.125)
    kw = dict(augment=augment, feature_views=2, epochs=3)  # epochs use views 0, 1, 0
    net_c, net_u = _net(), _net()
    cached = _fit(net_c, train, val, **kw)  # automatic: a frozen prefix and fixed views
    uncached = _fit(net_u, train, val, cache_features=False, **kw)
    _assert_same_training(cached, uncached, net_c, net_u)
    views = cached.settings["feature_cache"]["train_views"]
    assert len(views) == 2 and views[0]["key"] != views[1]["key"]
    assert cached.settings["feature_views"] == 2
    # fresh augmentation every epoch is another run
    fresh = _fit(_net(), train, val, augment=augment, epochs=3)
    assert fresh["train_loss"] != pytest.approx(uncached["train_loss"], rel=1e-4)
    assert "feature_views" not in fresh.settings


def test_feature_views_need_an_augmentation_and_a_positive_count(data):
    train = data[0]
    with pytest.raises(ValueError, match="feature_views=2 needs an augmentation"):
        _fit(_net(), train, None, feature_views=2, epochs=1)
    with pytest.raises(ValueError, match=r"feature_views must be None or a positive int .* got 0"):
        _fit(_net(), train, None, augment=gluonft.Augment(), feature_views=0, epochs=1)
