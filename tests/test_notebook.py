"""notebooks/cifar10_transfer.ipynb executes headlessly on real data and exports to HTML.

The notebook runs its default configuration (the lab-cpu preset: real CIFAR-10 images and
weights from ../shared, about 5 minutes on 2 cores) in a fresh kernel, as `jupyter nbconvert
--to html --execute` does; the run folder goes to a temporary folder through GLUONFT_RUN_DIR so
the checkout stays clean. The run must show the lab's lesson: ImageNet transfer beats learning
from scratch by more than the uncertainty of the test accuracies.
"""
import json

import pytest

from gluonft.results import read_results

from .notebooks import ROOT, execute, require
from .notebooks import outputs as _outputs
from .notebooks import stream_text as _text

NOTEBOOK = ROOT / "notebooks" / "cifar10_transfer.ipynb"


@pytest.fixture(scope="module")
def executed(shared, tmp_path_factory):
    require(shared / "data" / "cifar-10-subset",
            shared / "weights" / "mobilenet0.75-imagenet.params",
            shared / "weights" / "cifar_resnet20_v1-cifar10.params")
    run_dir = tmp_path_factory.mktemp("notebook") / "run"
    notebook = execute(NOTEBOOK, {"GLUONFT_SHARED": shared, "GLUONFT_RUN_DIR": run_dir})
    return notebook, run_dir


def test_the_notebook_runs_without_an_error_cell(executed):
    notebook, _ = executed
    assert not [o for o in _outputs(notebook) if o.output_type == "error"]
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert 'find_spec("gluonft") is None' in code[0].source  # the install cell (Colab)
    assert "FULL = False" in code[1].source  # the one flag cell, small by default


def test_it_calls_the_package_and_holds_no_training_loop(executed):
    notebook, _ = executed
    source = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "cifar.main(ARGV)" in source and "gluonft.summary(" in source
    for loop_part in ("autograd.record", ".backward(", "Trainer(", "trainer.step", "gluonft.fit("):
        assert loop_part not in source


def test_it_shows_data_summaries_results_curves_chart_and_card(executed):
    notebook, run_dir = executed
    text = _text(notebook)
    for name in ("resnet18_v1", "resnet50_v1", "mobilenetv2_1.0", "densenet121"):
        assert f"=== {name} (input 32x32) ===" in text
    assert text.count("Total params:") >= 4
    records = read_results(run_dir / "results.json")
    regimes = {r.regime for r in records if r.kind == "transfer"}
    assert regimes == {"head", "full", "scratch"}
    assert any(r.kind == "baseline" for r in records)
    assert all(r.status == "ok" for r in records)
    for record in records:
        assert record.id in text
    best = max(records, key=lambda r: r.test_accuracy)
    assert f"best model: {best.id}  test accuracy {100 * best.test_accuracy:.2f}%" in text
    assert json.loads((run_dir / "best.json").read_text())["id"] == best.id
    images = [o for o in _outputs(notebook) if "image/png" in o.get("data", {})]
    # The sample images, one curve figure per experiment, the accuracy chart, the best
    # model's confusion matrix and (a transfer net) its Grad-CAM gallery.
    cam = (run_dir / "best_cam.png").exists()
    assert len(images) == 1 + len(records) + 1 + 1 + cam
    card = json.loads((run_dir / "best.json").read_text())
    assert f"{card['id']}: accuracy " in text and "macro F1" in text
    assert (run_dir / "report.html").is_file()


def test_the_executed_notebook_exports_to_html(executed, tmp_path):
    nbconvert = pytest.importorskip("nbconvert", reason="pip install -e '.[notebook]'")
    notebook, _ = executed
    body, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    assert body.count("data:image/png;base64,") >= 3
    assert "CIFAR-10 transfer learning with" in body and "Total params:" in body
    (tmp_path / "notebook.html").write_text(body, encoding="utf-8")


def test_imagenet_transfer_visibly_beats_learning_from_scratch(executed):
    """The default run teaches the lab's lesson, with room to spare: the Wilson 95 % intervals
    of ImageNet head-only (and fine-tuned) do not overlap those of the scratch backbone and of
    the lab-1 CNN, i.e. the gap exceeds the sum of the half-widths."""
    notebook, run_dir = executed
    by_id = {r.id: r for r in read_results(run_dir / "results.json")}
    head, full = by_id["mobilenet0.75-head-s0"], by_id["mobilenet0.75-full-s0"]
    baselines = [by_id["mobilenet0.75-scratch-s0"], by_id["lab1_cnn-scratch-s0"]]
    assert head.pretrained_on == full.pretrained_on == "imagenet"
    assert all(b.pretrained_on == "random" for b in baselines)
    for transfer in (head, full):
        for scratch in baselines:
            assert transfer.test_count == scratch.test_count == 1017
            assert transfer.interval[0] > scratch.interval[1], (transfer.id, scratch.id)
    text = _text(notebook)
    assert "clearly better" in text
    # The CIFAR-10-pretrained net is labelled for what it is, wherever it is shown.
    assert by_id["cifar_resnet20_v1-head-s0"].pretrained_on == "cifar10"
    assert "CIFAR-10 (same task, not transfer)" in text
    best = max(by_id.values(), key=lambda r: r.test_accuracy)
    if best.pretrained_on == "cifar10":
        assert "its score is not transfer learning" in text
        assert "best ImageNet (transfer) model:" in text
