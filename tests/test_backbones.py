"""Backbones: every family loads with a new head and its weights file bit for bit."""
import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model

import gluonft
from gluonft.backbones import FAMILIES, family_of

CPU = mx.cpu()

# The smallest member of each family (they are built and saved here, so size is time).
REPRESENTATIVES = {
    "resnet_v1": "resnet18_v1", "resnet_v2": "resnet18_v2", "resnet_v1b": "resnet18_v1b",
    "resnext": "resnext50_32x4d", "resnest": "resnest14", "mobilenet_v1": "mobilenet0.25",
    "mobilenet_v2": "mobilenetv2_0.25", "mobilenet_v3": "mobilenetv3_small",
    "squeezenet": "squeezenet1.1", "densenet": "densenet121", "vgg": "vgg11",
    "alexnet": "alexnet", "inceptionv3": "inceptionv3", "xception": "xception",
    "googlenet": "googlenet", "darknet53": "darknet53", "cifar_resnet": "cifar_resnet20_v1",
    "cifar_wideresnet": "cifar_wideresnet16_10", "cifar_resnext": "cifar_resnext29_16x64d",
    "efficientnet_lite0": "efficientnet_lite0", "efficientnet_lite1": "efficientnet_lite1",
    "efficientnet_lite2": "efficientnet_lite2",
    "efficientnet_b0": "efficientnet_b0", "efficientnet_b1": "efficientnet_b1",
    "efficientnet_b2": "efficientnet_b2", "efficientnet_b3": "efficientnet_b3",
}


def _zoo(name, classes):
    """The model-zoo net of ``name``: GluonCV's, or gluonft's own for families outside it."""
    family = family_of(name)
    return family.build(name, classes=classes) if family.build else get_model(name,
                                                                              classes=classes)


def test_every_family_has_a_representative_and_names():
    assert set(REPRESENTATIVES) == {f.name for f in FAMILIES}
    names = gluonft.list_backbones()
    for family in FAMILIES:
        assert gluonft.list_backbones(family=family.name), family.name
    for expected in ["resnet50_v1d", "se_resnext50_32x4d", "mobilenetv3_large", "vgg16_bn",
                     "densenet201", "resnest50", "cifar_wideresnet28_10", "darknet53",
                     "efficientnet_lite0", "efficientnet_lite2", "efficientnet_b0",
                     "efficientnet_b3"]:
        assert expected in names
    # Detection/segmentation nets and zoo entries without pretrained weights are not offered.
    assert "yolo3_darknet53_coco" not in names and "se_resnet18_v1" not in names


def _gluoncv_file(name, tmp_path, classes):
    """A GluonCV-layout weights file with random values, as GluonCV's save_parameters writes."""
    zoo = _zoo(name, classes)
    zoo.initialize(mx.init.Normal(0.05), ctx=CPU)
    side = family_of(name).input_size
    with mx.autograd.predict_mode():
        zoo(mx.nd.zeros((1, 3, side, side)))  # resolve deferred shapes
    path = str(tmp_path / f"{name}.params")
    zoo.save_parameters(path)
    return path


@pytest.mark.parametrize("family", sorted(REPRESENTATIVES))
def test_family_loads_with_new_head_and_exact_weights(family, tmp_path):
    name = REPRESENTATIVES[family]
    path = _gluoncv_file(name, tmp_path, classes=1000 if "cifar" not in name else 10)
    net = gluonft.load_backbone(name, classes=7, weights=path, ctx=CPU)
    assert net.family.name == family
    side = net.family.input_size
    with mx.autograd.predict_mode():
        out = net(mx.nd.random.uniform(shape=(2, 3, side, side)))
    assert out.shape == (2, 7)
    assert isinstance(net.output, mx.gluon.nn.Dense) and net.output.weight.shape[0] == 7

    # Every backbone parameter equals the file bit for bit. The net holds the zoo net's own
    # blocks, so its parameters come in the zoo's registration order, as the file's keys do.
    stored = mx.nd.load(path)
    zoo = _zoo(name, 1000 if "cifar" not in name else 10)
    backbone_keys = [k for k in zoo._collect_params_with_prefix()
                     if not any(k == h or k.startswith(h + ".") for h in net.family.head)]
    own = list(net.features.collect_params().values())
    assert len(own) == len(backbone_keys)
    for key, param in zip(backbone_keys, own):
        assert param.shape == stored[key].shape, key
        assert np.array_equal(param.data().asnumpy(), stored[key].asnumpy()), key
