"""Model folders (save / load), and the symbol and ONNX exports, on real clothing photos."""
import json
import os

import mxnet as mx
import numpy as np
import pytest

from gluonft.model_io import (
    MODEL_JSON,
    MODEL_PARAMS,
    ModelFolderError,
    export_onnx,
    export_symbol,
    load_classifier,
    save_classifier,
)
from gluonft.train import predict_proba

from . import clothing

CPU = clothing.CPU


def _prep(clf):
    """How the classifier's training photos were prepared (save_classifier must be told)."""
    return {"stored_size": clf.stored_size, "fit": clf.fit}


@pytest.fixture(scope="module")
def clf(shared):
    return clothing.classifier(shared)


@pytest.fixture(scope="module")
def test_set(shared):
    return clothing.data(shared).test.take(np.arange(0, 372, 12))  # 31 photos, every class


def test_save_load_round_trip_predicts_the_same(clf, test_set, tmp_path):
    folder = save_classifier(clf.net, tmp_path / "model", classes=clf.classes,
                             image_size=clf.image_size,
                             extra={"note": "round trip", **_prep(clf)})
    assert sorted(os.listdir(folder)) == [MODEL_JSON, MODEL_PARAMS]
    meta = json.loads((folder / MODEL_JSON).read_text())
    assert meta["backbone"] == "mobilenet0.75" and meta["family"] == "mobilenet_v1"
    assert meta["classes"] == list(clf.classes) and len(meta["classes"]) == 10
    assert meta["image_size"] == 64 and meta["mean"] == [0.485, 0.456, 0.406]
    assert meta["std"] == [0.229, 0.224, 0.225]
    assert meta["params"] == 1816560 + 768 * 10 + 10
    assert meta["versions"]["mxnet"] == "1.9.1" and meta["versions"]["gluonft"]
    assert meta["weights_source"]["path"].endswith("mobilenet0.75-imagenet.params")
    assert "normalised" in meta["input"] and meta["note"] == "round trip"
    # Only the model folder: the temporary folder was renamed, nothing is left beside it.
    assert os.listdir(tmp_path) == ["model"]

    loaded = load_classifier(folder, ctx=CPU)
    assert loaded.classes == clf.classes and loaded.image_size == 64
    assert loaded.params == meta["params"]
    np.testing.assert_allclose(predict_proba(loaded.net, test_set, ctx=CPU, image_size=64),
                               predict_proba(clf.net, test_set, ctx=CPU, image_size=64),
                               atol=1e-6)


def test_nothing_is_overwritten_without_being_asked(clf, tmp_path):
    folder = tmp_path / "model"
    save_classifier(clf.net, folder, classes=clf.classes, image_size=64, extra=_prep(clf))
    before = (folder / MODEL_PARAMS).read_bytes()
    # The same model again: nothing to do, no error.
    save_classifier(clf.net, folder, classes=clf.classes, image_size=64, extra=_prep(clf))
    # Another model (other class names): refused, the folder untouched.
    other = tuple(f"c{i}" for i in range(10))
    with pytest.raises(FileExistsError, match="already holds a different model.*overwrite"):
        save_classifier(clf.net, folder, classes=other, image_size=64, extra=_prep(clf))
    assert (folder / MODEL_PARAMS).read_bytes() == before
    assert json.loads((folder / MODEL_JSON).read_text())["classes"] == list(clf.classes)
    save_classifier(clf.net, folder, classes=other, image_size=64, overwrite=True,
                    extra=_prep(clf))
    assert json.loads((folder / MODEL_JSON).read_text())["classes"] == list(other)
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no backup or temporary left over

    # A folder of the user's own files is never replaced, even with overwrite=True.
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not a gluonft model folder"):
        save_classifier(clf.net, mine, classes=clf.classes, image_size=64, overwrite=True,
                        extra=_prep(clf))
    assert (mine / "holiday.jpg").read_bytes() == b"precious"


def test_bad_arguments_fail_before_writing(clf, tmp_path):
    with pytest.raises(ValueError, match="lists 3 names but the net has 10 outputs"):
        save_classifier(clf.net, tmp_path / "m", classes=("a", "b", "c"), image_size=64,
                        extra=_prep(clf))
    with pytest.raises(ValueError, match="JSON|serializable"):
        save_classifier(clf.net, tmp_path / "m", classes=clf.classes, image_size=64,
                        extra={"bad": object(), **_prep(clf)})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage, match", [
    ("remove_params", r"no model\.params: .*model\.params is missing"),
    ("remove_json", r"no model\.json: .*model\.json is missing"),
    ("garbage_params", r"model\.params is corrupt"),
    ("truncate_params", r"model\.params is corrupt"),
    ("garbage_json", r"model\.json is corrupt"),
    ("json_without_classes", r"model\.json is corrupt: it lacks classes"),
])
def test_a_damaged_model_folder_names_the_file(clf, tmp_path, damage, match):
    folder = save_classifier(clf.net, tmp_path / "m", classes=clf.classes, image_size=64,
                             extra=_prep(clf))
    params, meta = folder / MODEL_PARAMS, folder / MODEL_JSON
    if damage == "remove_params":
        params.unlink()
    elif damage == "remove_json":
        meta.unlink()
    elif damage == "garbage_params":
        params.write_bytes(b"this is not a parameter file")
    elif damage == "truncate_params":
        params.write_bytes(params.read_bytes()[:1000])
    elif damage == "garbage_json":
        meta.write_text("{ not json")
    else:
        data = json.loads(meta.read_text())
        del data["classes"]
        meta.write_text(json.dumps(data))
    with pytest.raises(ModelFolderError, match=match):
        load_classifier(folder, ctx=CPU)
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_classifier(tmp_path / "nowhere", ctx=CPU)


def test_symbol_export_gives_the_gluon_outputs(clf, test_set, tmp_path):
    files = export_symbol(clf, tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "model-0000.params", "model-README.txt", "model-symbol.json"]
    assert "normalised" in files["readme"].read_text()
    x = clf.prepare(test_set.images, ctx=CPU)
    assert x.shape == (31, 3, 64, 64)
    with mx.autograd.predict_mode():
        expected = clf.net(x).asnumpy()
    block = mx.gluon.SymbolBlock.imports(str(files["symbol"]), ["data"], str(files["params"]),
                                         ctx=CPU)
    # The same MXNet, the same oneDNN kernels on the same machine: only the graph object
    # differs, so the logits agree to float32 rounding (measured: identical).
    np.testing.assert_allclose(block(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    # The softmax of the exported logits is what gluonft predicts from the image files' pixels.
    proba = mx.nd.softmax(block(x)).asnumpy()
    np.testing.assert_allclose(proba, predict_proba(clf.net, test_set, ctx=CPU, image_size=64),
                               atol=1e-5)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_symbol(clf, tmp_path / "export")
    export_symbol(clf, tmp_path / "export", overwrite=True)


def test_onnx_export_predicts_like_gluon(clf, test_set, tmp_path):
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install "
                                              "-e '.[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip "
                                                    "install -e '.[onnx]'")
    path = export_onnx(clf, tmp_path / "model.onnx")
    assert "normalised" in (tmp_path / "model.onnx.README.txt").read_text()
    # Stamped with the opset MXNet's translations follow, whatever onnx is installed.
    model = onnx.load(str(path))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    # The image is the one input (weights listed as inputs too made ORT warn once per weight).
    assert [i.name for i in model.graph.input] == ["data"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = clf.prepare(test_set.images, ctx=CPU)
    with mx.autograd.predict_mode():
        expected = clf.net(x).asnumpy()
    name = session.get_inputs()[0].name
    # Two runtimes, two sets of float32 kernels: each of mobilenet's 28 conv layers sums in
    # its own order, and the rounding differences grow with depth and with the size of the
    # activations, so the bound is relative to the logits' scale. Seen: 2.6e-4 on logits of
    # ~14 (1.9e-5 of the scale) on an AVX2 CPU; under 1e-4 on the AVX-512 machine of the first
    # CI runs. 1e-3 of the scale leaves a 50x margin over the worst seen and is still far below
    # any gap between classes that a prediction depends on.
    scale = float(np.abs(expected).max())
    for batch in (x.asnumpy(), x.asnumpy()[:1]):  # a dynamic batch size
        logits = session.run(None, {name: batch})[0]
        np.testing.assert_allclose(logits, expected[:len(batch)], rtol=0, atol=1e-3 * scale)
        assert (logits.argmax(1) == expected[:len(batch)].argmax(1)).all()
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(clf, tmp_path / "model.onnx")


def test_overwrite_rewrites_the_metadata_of_the_same_model(clf, tmp_path):
    """The audit's case: same parameters, classes, backbone and size, new metadata: with
    overwrite=True it was silently kept."""
    folder = tmp_path / "model"
    save_classifier(clf.net, folder, classes=clf.classes, image_size=64,
                    extra={"note": "first", **_prep(clf)})
    save_classifier(clf.net, folder, classes=clf.classes, image_size=64, overwrite=True,
                    extra={"note": "second", **_prep(clf)})
    assert json.loads((folder / MODEL_JSON).read_text())["note"] == "second"
    save_classifier(clf.net, folder, classes=clf.classes, image_size=64,
                    extra={"note": "third", **_prep(clf)})  # no overwrite: the copy is kept
    assert json.loads((folder / MODEL_JSON).read_text())["note"] == "second"


def test_the_model_folder_records_how_the_training_images_really_were_made(shared, tmp_path):
    """A net trained on native 32-px CIFAR-10 was recorded with stored_size round(1.15 x 32)
    = 37, so prediction upsampled photos to 37 and resampled back; now the data says 32."""
    import gluonft
    from gluonft.datasets import cifar10
    cifar = cifar10(str(shared / "data" / "cifar-10-subset"), train=False).subset(
        n_per_class=2, seed=0)
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, seed=0)
    names = [f"c{i}" for i in range(10)]
    folder = save_classifier(net, tmp_path / "cifar", classes=names, image_size=32, data=cifar)
    meta = json.loads((folder / MODEL_JSON).read_text())
    assert (meta["stored_size"], meta["fit"]) == (32, "crop")
    assert load_classifier(folder).stored_size == 32
    with pytest.raises(ValueError, match="how the training images were prepared"):
        save_classifier(net, tmp_path / "unknown", classes=names, image_size=32)
    with pytest.raises(ValueError, match=r"stored_size=37 \(the training data: 32\)"):
        save_classifier(net, tmp_path / "clash", classes=names, image_size=32, data=cifar,
                        extra={"stored_size": 37})
    assert not (tmp_path / "unknown").exists() and not (tmp_path / "clash").exists()
