"""notebooks/own_images.ipynb executes headlessly on the real clothing photos and exports to HTML.

Its default configuration is the one a practitioner starts with: `train_classifier(...,
fast_train=True)` on all of ../shared/data/clothing-small with mobilenet0.75's ImageNet weights
(about a minute on 2 cores). The model folder goes to a temporary folder via GLUONFT_MODEL_DIR.
With GLUONFT_COLAB_PYTHON set (CI), it runs in that Colab-like Python's kernel (3.12, numpy 2,
PyTorch) instead, where its install cell put gluonft (tests/test_colab.py): the practitioner's
first run, checked once rather than twice.
"""
import re
import subprocess
import sys

import pytest

from gluonft.model_io import load_classifier

from .notebooks import COLAB_PYTHON, ROOT, code, errors, execute, outputs, require, stream_text

NOTEBOOK = ROOT / "notebooks" / "own_images.ipynb"


@pytest.fixture(scope="module")
def executed(shared, tmp_path_factory):
    require(shared / "data" / "clothing-small",
            shared / "weights" / "mobilenet0.75-imagenet.params")
    model_dir = tmp_path_factory.mktemp("own_images") / "model"
    notebook = execute(NOTEBOOK, {"GLUONFT_SHARED": shared, "GLUONFT_MODEL_DIR": model_dir},
                       python=COLAB_PYTHON)
    return notebook, model_dir


def _number(text, pattern):
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the notebook's output"
    return float(found.group(1))


def test_the_notebook_runs_without_an_error_cell_and_calls_the_package(executed):
    notebook, _ = executed
    assert not errors(notebook)
    cells = code(notebook)
    assert all(c.execution_count for c in cells)
    assert "importlib.util.find_spec(\"gluonft\") is None" in cells[0].source  # the install cell
    assert "FULL = False" in cells[1].source
    source = "\n".join(c.source for c in cells)
    for call in ("gluonft.train_classifier(", "gluonft.evaluate_folder(", "gluonft.predict_files(",
                 "gluonft.classify(", "gluonft.load_classifier(", "gluonft.export_symbol(",
                 "gluonft.export_onnx("):
        assert call in source
    for loop_part in ("autograd.record", ".backward(", "Trainer(", "gluonft.fit("):
        assert loop_part not in source
    # The kernel's own numpy, as the install cell left it (2.x in a Colab-like Python).
    numpy = subprocess.run([COLAB_PYTHON or sys.executable, "-c",
                            "import numpy; print(numpy.__version__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert f"on cpu(0); numpy {numpy}" in stream_text(notebook)


def test_fast_training_classifies_real_test_photos_with_honest_confidence(executed):
    notebook, model_dir = executed
    text = stream_text(notebook)
    assert "Classifier(mobilenet0.75, 10 classes" in text
    assert "head only on cached features" in text
    accuracy = _number(text, r"test accuracy: ([0-9.]+) on 372 photos")
    loss = _number(text, r"test accuracy: [0-9.]+ on 372 photos \(cross-entropy ([0-9.]+)\)")
    tta = _number(text, r"test accuracy \(flip TTA\): ([0-9.]+) on 372 photos")
    assert accuracy > 0.75, accuracy  # chance is 0.10 (0.20 for always "t-shirt")
    assert tta > 0.75, tta
    # Probabilities a user can read: a mean test cross-entropy far below an overconfident
    # head's (2.6 at lr 0.1 with the same accuracy).
    assert loss < 1.0, loss
    # interpret prepares photos as training did: the same accuracy as evaluate_folder.
    assert _number(text, r"interpret: accuracy ([0-9.]+),") == accuracy
    saved = load_classifier(model_dir)
    assert round(saved.meta["test_accuracy"], 4) == accuracy
    assert "same classes after loading: True" in text


def test_the_exports_predict_like_the_model(executed):
    notebook, model_dir = executed
    text = stream_text(notebook)
    assert _number(text, r"SymbolBlock max \|difference\|: ([0-9.e-]+)") < 1e-4
    export = model_dir / "export"
    assert (export / "model-symbol.json").is_file() and (export / "model-0000.params").is_file()
    if "ONNX export skipped" not in text:
        assert _number(text, r"ONNX max \|difference\|: ([0-9.e-]+)") < 1e-2
        assert (export / "model.onnx").is_file()


def test_it_shows_photos_curves_confusion_and_predictions_and_exports_to_html(executed, tmp_path):
    nbconvert = pytest.importorskip("nbconvert", reason="pip install -e '.[notebook]'")
    notebook, _ = executed
    images = [o for o in outputs(notebook) if "image/png" in o.get("data", {})]
    # sample photos, training curves, confusion matrix, top losses with Grad-CAM, predictions
    assert len(images) == 5
    text = "\n".join(o.get("text", "") for o in outputs(notebook) if o.get("name") == "stdout")
    assert "interpret: accuracy" in text and "most confused" in text
    body, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    assert body.count("data:image/png;base64,") >= 4
    assert "Fine-tune on your own photos" in body
    (tmp_path / "own_images.html").write_text(body, encoding="utf-8")
