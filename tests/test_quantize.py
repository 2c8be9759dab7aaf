"""int8 features (gluonft.quantize): fit(feature_dtype="int8") on real photos, and its errors."""
import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.quantize import int8_unavailable
from gluonft.recipes import train_classifier

from . import clothing

CPU = clothing.CPU
pytestmark = pytest.mark.skipif(int8_unavailable([CPU]) is not None,
                                reason=f"no int8 here: {int8_unavailable([CPU])}")


def _net(shared):
    net = gluonft.load_backbone("mobilenet0.75", classes=10, ctx=CPU,
                                weights=str(clothing.paths(shared)[1]))
    gluonft.apply_regime(net, "head")
    return net


def _frozen(net):
    return {k: p.data().asnumpy().copy() for k, p in net.features.collect_params().items()}


def test_int8_features_train_a_head_on_real_photos(shared, tmp_path):
    data = clothing.data(shared)
    train = data.train  # 3068 photos: the feature pass is a few seconds at 64 px
    kw = dict(epochs=10, batch_size=64, lr=0.05, augment=gluonft.Augment.none(),
              image_size=clothing.SIZE, ctx=CPU, progress=False, cache_dir=str(tmp_path))
    runs = {}
    for dtype in ("float32", "int8"):
        net = _net(shared)
        before = _frozen(net)
        history = gluonft.fit(net, train, data.validation, feature_dtype=dtype, **kw)
        after = _frozen(net)
        assert all(np.array_equal(before[k], after[k]) for k in before)  # backbone untouched
        runs[dtype] = (history, gluonft.evaluate(net, data.test, ctx=CPU,
                                                 image_size=clothing.SIZE)["accuracy"])
    int8, float32 = runs["int8"][0], runs["float32"][0]
    assert int8.settings["feature_dtype"] == "int8" and "feature_dtype" not in float32.settings
    keys = {h.settings["feature_cache"]["train"]["key"] for h, _ in runs.values()}
    assert len(keys) == 2 and len(list(tmp_path.glob("*.npz"))) == 4  # train + val, each
    # 10 classes: far above chance (0.1) with either (measured here 0.667 float32, 0.653
    # int8), int8 within a few points of float32 (372 test photos: +-5 points is noise).
    accuracy = {k: acc for k, (_, acc) in runs.items()}
    assert accuracy["int8"] > 0.55 and accuracy["float32"] > 0.55, accuracy
    assert accuracy["int8"] > accuracy["float32"] - 0.06, accuracy


def test_int8_errors_name_the_value_and_the_way_out(shared):
    data = clothing.data(shared)
    train = data.train.subset(n_per_class=2, seed=0)
    kw = dict(epochs=1, batch_size=8, lr=0.05, image_size=clothing.SIZE, progress=False)
    with pytest.raises(ValueError, match="feature_dtype must be one of float32, int8, got "
                                         "'int4'"):
        gluonft.fit(_net(shared), train, feature_dtype="int4", ctx=CPU, **kw)
    with pytest.raises(ValueError, match="feature_dtype='int8' quantizes the cached features, "
                                         "but the feature cache is off: training augmentation"):
        gluonft.fit(_net(shared), train, feature_dtype="int8", ctx=CPU,
                    augment=gluonft.Augment(), **kw)
    two = [mx.cpu(0), mx.cpu(1)]
    net = gluonft.load_backbone("mobilenet0.75", classes=10, ctx=two, weights=None)
    gluonft.apply_regime(net, "head")
    with pytest.raises(ValueError, match=r"int8 features run on one CPU context"):
        gluonft.fit(net, train, feature_dtype="int8", ctx=two,
                    augment=gluonft.Augment.none(), **kw)
    with pytest.raises(ValueError, match="goes with fast_train=True or another recipe"):
        train_classifier(clothing.paths(shared)[0], feature_dtype="int8", recipe="staged")
