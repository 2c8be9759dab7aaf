"""Weights: real pretrained files on real images, offline errors that say what to do, bad files."""
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.datasets import ImageSet, cifar10

CPU = mx.cpu()


@pytest.fixture()
def offline_store(tmp_path, monkeypatch):
    """An empty weight store whose download is refused at once (nothing listens on port 9)."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://127.0.0.1:9/")
    return tmp_path / "mxnet_home" / "models"


def test_pretrained_offline_names_the_file_and_where_to_put_it(offline_store):
    with pytest.raises(gluonft.WeightsUnavailable) as error:
        gluonft.load_backbone("resnet18_v1", classes=5, weights="imagenet", ctx=CPU)
    message = str(error.value)
    assert str(offline_store / "resnet18_v1-") in message and ".params" in message
    assert "weights=" in message and "sha1" in message
    # The failed download left no partial file in the store.
    assert not [f for f in os.listdir(offline_store) if f.endswith(".params")]


def test_explicit_root_wins_over_mxnet_home(offline_store, tmp_path):
    with pytest.raises(gluonft.WeightsUnavailable) as error:
        gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights="default",
                              root=str(tmp_path / "my_store"), ctx=CPU)
    assert str(tmp_path / "my_store" / "cifar_resnet20_v1-") in str(error.value)


def test_cifar_resnet20_real_weights_score_on_real_test_images_both_layouts(shared):
    weights = shared / "weights" / "cifar_resnet20_v1-cifar10.params"
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=str(weights), ctx=CPU)
    assert net.weights_source.kind == "file" and len(net.weights_source.sha1) == 40
    scores = {}
    for layout in ("cifar-10-batches-py", "cifar-10-batches-bin"):
        test = cifar10(str(shared / "data" / "cifar-10-subset" / layout), train=False)
        scores[layout] = gluonft.evaluate(net, test, ctx=CPU, batch_size=256)
    assert scores["cifar-10-batches-py"]["accuracy"] >= 0.90
    assert scores["cifar-10-batches-py"] == scores["cifar-10-batches-bin"]
    assert scores["cifar-10-batches-py"]["count"] == 1017


def test_weights_folder_is_searched_for_the_model_file(shared, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    os.symlink(shared / "weights" / "cifar_resnet20_v1-cifar10.params",
               folder / "cifar_resnet20_v1-cifar10.params")
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=str(folder), ctx=CPU)
    assert net.weights_source.path.endswith("cifar_resnet20_v1-cifar10.params")
    with pytest.raises(FileNotFoundError, match="cifar_resnet56_v1"):
        gluonft.load_backbone("cifar_resnet56_v1", classes=10, weights=str(folder), ctx=CPU)


def _photos(folder, side=224):
    """Resize the short side to 256 and centre-crop 224, as ImageNet evaluation does."""
    images, names = [], []
    for name in sorted(os.listdir(folder)):
        image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        scale = 256 / min(h, w)
        image = cv2.resize(image, (round(w * scale), round(h * scale)),
                           interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        top, left = (h - side) // 2, (w - side) // 2
        images.append(cv2.cvtColor(image[top:top + side, left:left + side], cv2.COLOR_BGR2RGB))
        names.append(name)
    return ImageSet(np.stack(images), np.zeros(len(images), np.int32), ("photo",),
                    str(folder)), names


def test_mobilenet_imagenet_weights_keep_their_classifier_and_recognise_cats_and_dogs(shared):
    weights = shared / "weights" / "mobilenet0.75-imagenet.params"
    net = gluonft.load_backbone("mobilenet0.75", classes=1000, weights=str(weights), ctx=CPU)
    labels = (shared / "weights" / "imagenet1k-labels.txt").read_text().splitlines()
    for kind, first, last in (("cat", 281, 285), ("dog", 151, 268)):
        photos, names = _photos(shared / "data" / "dogcat" / kind)
        top = gluonft.predict_proba(net, photos, ctx=CPU).argmax(axis=1)
        for name, index in zip(names, top):
            assert first <= index <= last, f"{kind}/{name} ranked {labels[index]!r} first"


def test_missing_corrupt_and_foreign_weights_files_are_clear_errors(shared, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.params"):
        gluonft.load_backbone("cifar_resnet20_v1", classes=10,
                              weights=str(tmp_path / "nope.params"))
    corrupt = tmp_path / "corrupt.params"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(gluonft.WeightsMismatch, match="not a Gluon parameter file"):
        gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=str(corrupt))
    truncated = tmp_path / "truncated.params"
    whole = (shared / "weights" / "cifar_resnet20_v1-cifar10.params").read_bytes()
    truncated.write_bytes(whole[:5000])
    with pytest.raises(gluonft.WeightsMismatch, match="truncated.params"):
        gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=str(truncated))
    with pytest.raises(gluonft.WeightsMismatch) as error:  # resnet56 weights into resnet20
        gluonft.load_backbone("cifar_resnet20_v1", classes=10,
                              weights=str(shared / "weights" / "cifar_resnet56_v2-cifar10.params"))
    message = str(error.value)
    assert "does not fit cifar_resnet20_v1" in message and "another architecture" in message
    assert "features." in message  # names the parameters that did not match


def test_saved_transfer_net_loads_back_with_its_head(tmp_path):
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=3, weights=None, ctx=CPU)
    path = str(tmp_path / "mine.params")
    net.save_parameters(path)
    again = gluonft.load_backbone("cifar_resnet20_v1", classes=3, weights=path, ctx=CPU)
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    with mx.autograd.predict_mode():
        assert np.array_equal(net(x).asnumpy(), again(x).asnumpy())
    # Another number of classes: the backbone loads, the head is new.
    other = gluonft.load_backbone("cifar_resnet20_v1", classes=5, weights=path, ctx=CPU)
    assert np.array_equal(other.features[0].weight.data().asnumpy(),
                          net.features[0].weight.data().asnumpy())


def test_bad_arguments_name_the_value():
    with pytest.raises(gluonft.UnknownBackbone, match="resnet18_v1") as error:
        gluonft.load_backbone("resnet18", classes=10)
    assert "did you mean" in str(error.value)
    for classes in (1, 0, "10", 2.5, True):
        with pytest.raises(ValueError, match="classes must be an int >= 2"):
            gluonft.load_backbone("cifar_resnet20_v1", classes=classes, weights=None)
    with pytest.raises(ValueError, match="'imagenet'.*cifar10"):
        gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights="imagenet")
    with pytest.raises(ValueError, match="weights must be"):
        gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=3)
    net = gluonft.load_backbone("mobilenet0.25", classes=10, weights=None, ctx=CPU)
    train = ImageSet(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4, dtype=np.int32) % 2,
                     ("a", "b"), "tiny")
    gluonft.apply_regime(net, "head")
    with pytest.raises(ValueError, match="image_size=16 is too small for mobilenet0.25"):
        gluonft.fit(net, train, epochs=1, batch_size=2, lr=0.1, image_size=16, progress=False)
    with pytest.raises(ValueError, match="vgg11 only accepts 224x224"):
        gluonft.backbones.check_image_size("vgg11", 64)


@pytest.mark.network
def test_gluoncv_weights_download_into_the_store_and_load(tmp_path):
    """GluonCV's real store (deselected by default; `pytest -m network`)."""
    net = gluonft.load_backbone("mobilenet0.25", classes=10, weights="imagenet",
                                root=str(tmp_path), ctx=mx.cpu())
    assert net.weights_source.kind == "pretrained"
    assert list(tmp_path.glob("mobilenet0.25-*.params"))
