"""`python -m gluonft`: train, predict, export on real clothing photos; bad input gets one
line and exit status 2."""
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gluonft.__main__ import main

from . import clothing

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(shared, tmp_path_factory):
    """A model folder trained by the CLI on 8 photos of each class (class-folder layout)."""
    base = tmp_path_factory.mktemp("cli")
    photos = clothing.copy_photos(shared, base / "photos", per_class=8, split="train")
    _, weights = clothing.paths(shared)
    code = main(["train", str(photos), "--out", str(base / "model"), "--fast",
                 "--model", "mobilenet0.75", "--weights", str(weights), "--image-size", "64",
                 "--epochs", "3"])
    assert code == 0
    return base


def test_train_prints_the_model_and_writes_the_folder(trained, shared, capsys):
    assert sorted(os.listdir(trained / "model")) == ["model.json", "model.params"]
    meta = json.loads((trained / "model" / "model.json").read_text())
    assert meta["params"] == 2870266 and meta["image_size"] == 64    # the mlp:1024,256 head
    assert meta["head"] == "mlp:1024,256"
    # Training again onto the same folder is refused before any work, in one line.
    _, weights = clothing.paths(shared)
    code, out, err = run(capsys, "train", trained / "photos", "--out", trained / "model",
                         "--fast", "--model", "mobilenet0.75", "--weights", weights)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gluonft: error: ")
    assert "already holds a model" in err and "--overwrite" in err


def test_predict_prints_file_class_probability(trained, shared, tmp_path, capsys):
    photos = clothing.copy_photos(shared, tmp_path / "new", per_class=1)
    code, out, err = run(capsys, "predict", trained / "model", photos)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 10
    classes = json.loads((trained / "model" / "model.json").read_text())["classes"]
    for line in lines:
        name, label, probability = line.split("\t")
        assert (photos / name).is_file() and label in classes and 0 < float(probability) <= 1
    code, out, _ = run(capsys, "predict", trained / "model", photos / "hat", "--json", "--tta")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 1 and set(rows[0]) == {
        "file", "class", "index", "label", "probability", "probabilities"}
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    code, out, err = run(capsys, "predict", trained / "model", photos)
    assert code == 0 and len(out.splitlines()) == 10
    assert err.startswith("gluonft: warning: 1 unreadable image file(s) skipped")


def test_evaluate_scores_a_labelled_folder(trained, shared, tmp_path, capsys):
    photos = clothing.copy_photos(shared, tmp_path / "labelled", per_class=3)
    code, out, err = run(capsys, "evaluate", trained / "model", photos, "--split", "all")
    assert code == 0, err
    assert out.startswith("accuracy: ") and "on 30 images (all)" in out
    code, out, _ = run(capsys, "evaluate", trained / "model", photos, "--split", "all", "--tta")
    assert code == 0 and "flip TTA" in out
    other = clothing.copy_photos(shared, tmp_path / "other", per_class=1,
                                 classes=["hat", "dress"])
    code, _, err = run(capsys, "evaluate", trained / "model", other, "--split", "all")
    assert code == 2 and "has the classes ['dress', 'hat'] but the model was trained on" in err


def _strict_json(path):
    def refuse(token):
        raise ValueError(f"{path} holds {token}: not strict JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_evaluate_report_writes_the_figures_as_data_and_one_page(trained, shared, tmp_path,
                                                                  capsys):
    from gluonft.evaluation_report import REPORT_FILES

    photos = clothing.copy_photos(shared, tmp_path / "labelled", per_class=3)
    code, plain, err = run(capsys, "evaluate", trained / "model", photos, "--split", "all")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", trained / "model", photos, "--split", "all",
                         "--report", tmp_path / "report")
    assert code == 0, err
    assert out.split(";")[0] == plain.split(";")[0]  # the same accuracy line
    assert "macro F1" in out and f"report: {tmp_path / 'report' / 'report.html'}" in out
    assert sorted(os.listdir(tmp_path / "report")) == sorted(REPORT_FILES)
    metrics = _strict_json(tmp_path / "report" / "metrics.json")
    assert metrics["count"] == 30 and len(metrics["confusion_matrix"]) == 10
    assert sum(map(sum, metrics["confusion_matrix"])) == 30
    assert f"{metrics['accuracy']:.4f}" in out
    per_class = (tmp_path / "report" / "per_class.csv").read_text().splitlines()
    assert per_class[0].startswith("class,precision,recall,f1,support") and len(per_class) == 11
    predictions = (tmp_path / "report" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 31 and all(",hat/" not in line for line in predictions[:1])
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 3  # matrix, reliability, top losses
    code, _, err = run(capsys, "evaluate", trained / "model", photos, "--split", "test",
                       "--report", tmp_path / "r2")
    assert code == 2 and "has no train/ validation/ test/ folders; pass split='all'" in err


def test_predict_cam_writes_an_overlay_per_photo(trained, shared, tmp_path, capsys):
    photos = clothing.copy_photos(shared, tmp_path / "new", per_class=1,
                                  classes=["hat", "shoes"])
    code, out, err = run(capsys, "predict", trained / "model", photos, "--cam",
                         tmp_path / "cams")
    assert code == 0, err
    written = sorted(os.listdir(tmp_path / "cams"))
    assert len(written) == 2 and all(w.endswith(".cam.png") for w in written)
    import cv2
    for name, line in zip(written, sorted(out.splitlines())):
        overlay = cv2.imread(str(tmp_path / "cams" / name))
        photo = cv2.imread(str(photos / line.split("\t")[0]))
        assert overlay.shape == photo.shape and not (overlay == photo).all()


def test_train_with_stages(trained, shared, tmp_path, capsys):
    _, weights = clothing.paths(shared)
    code, out, err = run(capsys, "train", trained / "photos", "--out", tmp_path / "m",
                         "--weights", weights, "--image-size", "64",
                         "--stages", "head=1,last_k:1=1")
    assert code == 0, err
    assert "(fine_tune head x1, last_k:1 x1)" in out
    # stderr is no terminal here: no bars, but each stage's estimate and a line per epoch
    # (80 photos, 2 steps: too few to skip and time, so timed on the first epoch) ...
    assert err.count("fit (mobilenet0.75, 1 epochs): about ") == 2, err
    assert err.count("(timed on the first epoch); scoring") == 2, err
    assert err.count("epoch 1/1: loss ") == 2 and "images/s" in err, err
    # ... and the command's log handler is gone once it returns (a later call in this
    # process must not write to this call's stderr)
    assert logging.getLogger("gluonft").handlers == []
    code, _, err = run(capsys, "train", trained / "photos", "--out", tmp_path / "m2",
                       "--weights", weights, "--stages", "head=1,lastk=2")
    assert code == 2 and "unknown regime 'lastk'" in err and not (tmp_path / "m2").exists()


def test_export_writes_symbol_and_onnx(trained, capsys):
    want_onnx = all(_importable(m) for m in ("onnx", "onnxruntime"))
    argv = ["export", trained / "model"] + (["--onnx"] if want_onnx else [])
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    written = [Path(p) for p in out.split()]
    assert all(p.is_file() for p in written)
    assert {p.name for p in written} >= {"model-symbol.json", "model-0000.params"}
    assert ("model.onnx" in {p.name for p in written}) == want_onnx
    code, _, err = run(capsys, *argv)
    assert code == 2 and "overwrite" in err and err.count("\n") == 1
    assert run(capsys, *argv, "--overwrite")[0] == 0


def _importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("case, match", [
    ("no_args", "required: COMMAND"),
    ("bad_epochs", "--epochs: expected a positive integer, got '-1'"),
    ("missing_model", "does not exist"),
    ("model_without_params", r"model\.params is missing"),
    ("empty_folder", "has no class folders"),
    ("one_class", "only one class folder"),
    ("class_without_images", "'shoes' hold no image files"),
    ("unknown_backbone", "unknown backbone 'resnet9'"),
    ("over_budget", "over max_params=1,000,000"),
    ("not_a_model_folder", "not a gluonft model folder"),
    ("missing_image", "does not exist"),
    ("negative_seed", "argument --seed: expected a seed, an integer >= 0, got '-5'"),
    ("huge_image_size", "image_size=100000 is too large: expected at most 1024"),
    ("out_under_a_file", r"model folder .*a_file/model: .*a_file is a file, not a folder"),
    ("export_to_a_file", r"--out .*a_file is a file, not a folder"),
    ("only_unreadable", r"no readable image among .*: nothing was predicted"),
])
def test_bad_input_is_one_line_and_exit_2(case, match, trained, shared, tmp_path, capsys):
    _, weights = clothing.paths(shared)
    photos = trained / "photos"
    train = ["train", "--fast", "--model", "mobilenet0.75", "--weights", weights, "--out",
             tmp_path / "out"]
    if case == "no_args":
        argv = []
    elif case == "bad_epochs":
        argv = train + [photos, "--epochs", "-1"]
    elif case == "missing_model":
        argv = ["predict", tmp_path / "nowhere", photos]
    elif case == "model_without_params":
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "model.json").write_text((trained / "model" / "model.json").read_text())
        argv = ["predict", broken, photos]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        argv = train + [tmp_path / "empty"]
    elif case == "one_class":
        argv = train + [clothing.copy_photos(shared, tmp_path / "one", per_class=2,
                                             classes=["hat"])]
    elif case == "class_without_images":
        folder = clothing.copy_photos(shared, tmp_path / "h", per_class=2,
                                      classes=["hat", "dress"])
        (folder / "shoes").mkdir()
        argv = train + [folder]
    elif case == "unknown_backbone":
        argv = train + [photos, "--model", "resnet9"]
    elif case == "over_budget":
        argv = train + [photos, "--max-params", "1_000_000"]
    elif case == "not_a_model_folder":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "mine.txt").write_text("keep me")
        argv = train + [photos, "--overwrite"]
    elif case == "negative_seed":
        argv = train + [photos, "--seed", "-5"]
    elif case == "huge_image_size":
        argv = train + [photos, "--image-size", "100000"]
    elif case in ("out_under_a_file", "export_to_a_file"):
        (tmp_path / "a_file").write_text("x")
        argv = (["train", "--fast", "--model", "mobilenet0.75", "--weights", weights, photos,
                 "--out", tmp_path / "a_file" / "model"] if case == "out_under_a_file"
                else ["export", trained / "model", "--out", tmp_path / "a_file"])
    elif case == "only_unreadable":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")
        argv = ["predict", trained / "model", tmp_path / "bad"]
    else:
        argv = ["predict", trained / "model", tmp_path / "nope.jpg"]
    begin = time.perf_counter()
    code, out, err = run(capsys, *argv)
    # Checked before any photo is decoded or any epoch trained.
    assert time.perf_counter() - begin < 20, case
    assert code == 2, (out, err)
    if case == "only_unreadable":  # the warning that names the unreadable file, then the error
        warning, err = err.split("\n", 1)
        assert warning.startswith("gluonft: warning: 1 unreadable image file(s) skipped: ")
    assert err.count("\n") == 1 and err.startswith("gluonft: error: "), err
    assert pytest.importorskip("re").search(match, err), err
    if case == "not_a_model_folder":
        assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_the_module_runs_as_a_program_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gluonft", "predict", str(tmp_path / "m"),
                             "x.jpg"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"gluonft: error: model folder {tmp_path / 'm'} does not exist (expected a folder "
        f"written by save_classifier / 'python -m gluonft train')"]
