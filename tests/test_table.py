"""Photos labelled by a CSV (a grader's gt.csv, a Kaggle train.csv), unlabelled test folders
and submission files, built in a temporary folder from the real clothing-small photos."""
import csv
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gluonft.datasets import (
    TableWarning,
    UnlabelledImagesWarning,
    image_folder,
    labelled_images,
    read_labels,
)
from gluonft.model_io import load_classifier
from gluonft.predict import classify, evaluate
from gluonft.recipes import train_classifier
from gluonft.submission import write_submission

from . import clothing

PER_CLASS = 30   # training photos per class: the fast recipe runs in seconds
TEST_PER_CLASS = 6
# Integer class ids whose numeric order is the class-name order but whose string order is
# not ("10" < "2"): equal results with class folders prove the numeric order is used.
IDS = (2, 5, 9, 10, 14, 21, 33, 40, 100, 101)


def _photos(shared, split, per_class):
    root = clothing.paths(shared)[0] / split
    return {c.name: sorted(c.iterdir())[:per_class] for c in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def layouts(shared, tmp_path_factory):
    """The same real photos as class folders, as a grader's gt.csv + flat images/, and as a
    Kaggle layout (train.csv with extension-less ids, test_upload/, a shuffled sample)."""
    base = tmp_path_factory.mktemp("layouts")
    train, test = _photos(shared, "train", PER_CLASS), _photos(shared, "test", TEST_PER_CLASS)
    ids = dict(zip(sorted(train), IDS))
    (base / "images").mkdir()
    (base / "test_images").mkdir()
    rows, truth = [], {}
    for name, files in train.items():
        (base / "folders" / name).mkdir(parents=True)
        for f in files:
            os.symlink(f, base / "folders" / name / f.name)
            os.symlink(f, base / "images" / f.name)
            rows.append((f.name, ids[name]))
    random.Random(0).shuffle(rows)  # the row order must not matter
    with open(base / "gt.csv", "w", newline="") as out:
        csv.writer(out).writerows([("filename", "class_id")] + rows)
    for name, files in test.items():
        (base / "test_folders" / name).mkdir(parents=True)
        for f in files:
            os.symlink(f, base / "test_images" / f.name)
            os.symlink(f, base / "test_folders" / name / f.name)
            truth[f.name] = ids[name]
    sample = [(Path(n).stem, "") for n in truth]
    random.Random(1).shuffle(sample)
    with open(base / "sample-submission.csv", "w", newline="") as out:
        csv.writer(out).writerows([("Id", "Category")] + sample)
    return {"base": base, "ids": ids, "truth": truth}


def _grader_gt(path):
    """What the grader does: gt.csv -> {filename: class_id}."""
    with open(path) as f:
        next(f)
        return {name: int(cid) for name, cid in csv.reader(f)}


def test_the_graders_calls_answer_in_gt_ids_and_match_class_folder_training(shared, layouts):
    base, weights = layouts["base"], str(clothing.paths(shared)[1])
    model = train_classifier(_grader_gt(base / "gt.csv"), str(base / "images"),
                             fast_train=True, model="mobilenet0.75", weights=weights)
    predicted = classify(model, str(base / "test_images"))
    truth = layouts["truth"]
    assert set(predicted) == set(truth)                  # every file of the flat folder
    assert set(predicted.values()) <= set(IDS)            # gt.csv's ids, not indices
    assert all(isinstance(v, int) for v in predicted.values())
    accuracy = np.mean([predicted[f] == truth[f] for f in truth])
    # The same photos as class folders, same seed: the same net, bit for bit (same process),
    # so the same answer for every photo.
    by_folders = train_classifier(str(base / "folders"), fast_train=True, model="mobilenet0.75",
                                  weights=weights)
    index_to_id = [layouts["ids"][c] for c in by_folders.classes]
    folder_answers = {Path(f).name: index_to_id[i]
                      for f, i in classify(by_folders, str(base / "test_folders")).items()}
    assert folder_answers == predicted
    assert model.meta["val_accuracy"] == by_folders.meta["val_accuracy"]
    # 10 classes, 240 training photos, head only: far above chance (0.1); seen 0.72.
    assert accuracy > 0.5


def test_a_csv_file_and_the_cli_train_and_submit_in_the_samples_order(shared, layouts, tmp_path):
    base, weights = layouts["base"], str(clothing.paths(shared)[1])
    model_dir = tmp_path / "model"
    run = subprocess.run(
        [sys.executable, "-m", "gluonft", "train", str(base / "images"), "--labels",
         str(base / "gt.csv"), "--fast", "--model", "mobilenet0.75", "--weights", weights,
         "--out", str(model_dir)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads((model_dir / "model.json").read_text())["labels"] == list(IDS)
    out = tmp_path / "submission.csv"
    run = subprocess.run(
        [sys.executable, "-m", "gluonft", "predict", str(model_dir), str(base / "test_images"),
         "--submission", str(base / "sample-submission.csv"), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    with open(base / "sample-submission.csv") as f:
        sample = list(csv.reader(f))
    with open(out) as f:
        written = list(csv.reader(f))
    assert written[0] == ["Id", "Category"] and len(written) == len(sample)
    assert [r[0] for r in written] == [r[0] for r in sample]   # the sample's order and ids
    truth = {Path(n).stem: v for n, v in layouts["truth"].items()}
    score = np.mean([int(label) == truth[i] for i, label in written[1:]])
    # The submission scores what evaluate measures on the same photos, labelled by a table.
    clf = load_classifier(model_dir)
    test = labelled_images(layouts["truth"], base / "test_images", image_size=clf.image_size,
                           margin=clf.stored_size / clf.image_size, val_fraction=None)
    assert test.classes == clf.classes
    measured = evaluate(clf.net, test.train, ctx=clothing.CPU, image_size=clf.image_size)
    # Same pixels, same net, same process; only the batch composition differs, which moves
    # logits by float32 rounding, far below what could flip an argmax here: equal counts.
    assert score == pytest.approx(measured["accuracy"], abs=1e-12)


def test_submission_names_what_the_folder_and_the_sample_disagree_on(shared, layouts,
                                                                     tmp_path):
    base = layouts["base"]
    clf = clothing.classifier(shared)
    sample = tmp_path / "sample.csv"
    sample.write_text("Id,Category\nnot-a-photo,\n"
                      + "".join(f"{Path(n).stem},\n" for n in sorted(layouts["truth"])[:3]))
    with pytest.raises(ValueError, match="1 image.*not in .*: not-a-photo"):
        write_submission(clf, base / "test_images", sample, tmp_path / "out.csv")
    sample.write_text("Id,Category\n" + "".join(f"{Path(n).stem},\n"
                                                for n in sorted(layouts["truth"])[:3]))
    with pytest.warns(TableWarning, match=f"{len(layouts['truth']) - 3} image.*not predicted"):
        written = write_submission(clf, base / "test_images", sample, tmp_path / "out.csv")
    assert written["rows"] == 3
    # A folder-trained model answers with its class names.
    rows = list(csv.reader(open(tmp_path / "out.csv")))
    assert all(r[1] in clf.classes for r in rows[1:])


def test_table_problems_are_named(shared, layouts, tmp_path):
    images = layouts["base"] / "images"
    names = sorted(os.listdir(images))
    with pytest.raises(ValueError, match="two different labels: " + names[0]):
        read_labels(tmp_csv(tmp_path, [("file", "label"), (names[0], "a"), (names[0], "b"),
                                       (names[1], "a")]))
    with pytest.raises(ValueError, match="cannot tell which column holds the labels"):
        read_labels(tmp_csv(tmp_path, [("file", "colour"), (names[0], "a")]))
    # Strings as labels, extension-less names, a missing file, files without a row, a class
    # with a single image: warned about by name, and the data still loads.
    rows = [("image", "label")] + [(Path(n).stem, "cat" if i % 2 else "dog")
                                   for i, n in enumerate(names[:40])]
    rows += [("ghost.jpg", "dog"), (names[40], "bird")]
    with pytest.warns(TableWarning) as caught:
        data = labelled_images(tmp_csv(tmp_path, rows), images, image_size=32)
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 row(s)" in messages and "ghost.jpg" in messages
    assert f"{len(names) - 41} image(s)" in messages and names[41] in messages
    assert "bird have a single image" in messages
    assert data.labels == ("bird", "cat", "dog") and data.classes == ("bird", "cat", "dog")
    assert len(data.train) + len(data.validation) == 41
    assert data.train.class_counts()["bird"] == 1 and data.validation.class_counts()["bird"] == 0


def test_labels_table_gives_the_same_images_as_class_folders(layouts):
    base = layouts["base"]
    table = labelled_images(base / "gt.csv", base / "images", image_size=32, val_fraction=0.2)
    folders = image_folder(base / "folders", image_size=32, val_fraction=0.2)
    assert table.labels == IDS and table.classes == tuple(str(i) for i in IDS)
    for split in ("train", "validation"):
        assert np.array_equal(table[split].images, folders[split].images)
        assert np.array_equal(table[split].labels, folders[split].labels)


def test_an_unlabelled_test_folder_is_not_a_split(shared, tmp_path):
    """Hot dog / not hot dog: train/<class>/ and a flat, unlabelled test/."""
    photos = _photos(shared, "train", 6)
    for name in ("dress", "hat"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for f in photos[name]:
            os.symlink(f, tmp_path / "train" / name / f.name)
    (tmp_path / "test").mkdir()
    for f in photos["shoes"]:
        os.symlink(f, tmp_path / "test" / f.name)
    with pytest.warns(UnlabelledImagesWarning, match="test holds images but no class folders"):
        data = image_folder(tmp_path, image_size=32, val_fraction=0.5)
    assert data.test is None and data.classes == ("dress", "hat")
    assert len(data.train) + len(data.validation) == 12


def tmp_csv(tmp_path, rows):
    path = tmp_path / f"labels{len(rows)}.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


READ_ONLY_RUN = textwrap.dedent("""
    import csv, os, sys
    writes = []
    def audit(event, args):
        if event == "open" and args[0] not in (None,) and isinstance(args[0], (str, bytes)):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (
                    flags and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                writes.append(("open", args[0]))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
                       "os.symlink", "os.link", "shutil.copyfile", "shutil.rmtree",
                       "os.truncate"):
            writes.append((event, args[0]))
    sys.addaudithook(audit)
    import time
    from gluonft import classify, train_classifier
    base = sys.argv[1]
    with open(os.path.join(base, "gt.csv")) as f:
        next(f)
        gt = {name: int(cid) for name, cid in csv.reader(f)}
    begin = time.perf_counter()
    model = train_classifier(gt, os.path.join(base, "images"), fast_train=True,
                             model="mobilenet0.75", weights=sys.argv[2])
    answers = classify(model, os.path.join(base, "test_images"))
    print("SECONDS", round(time.perf_counter() - begin, 1), "ANSWERS", len(answers))
    # tempfile.gettempdir() probes TMPDIR by creating and deleting a file (portalocker, which
    # gluoncv imports, calls it at import); the test checks TMPDIR is left empty instead.
    tmp = os.environ["TMPDIR"]
    print("WRITES", [w for w in writes if not str(w[1]).startswith(("/dev/", tmp))])
""")


def test_fast_train_writes_nothing_with_a_read_only_home_and_working_folder(shared, layouts,
                                                                           tmp_path):
    """The grader's calls with the weights as a local file, HOME, the working folder and the
    MXNet store read-only (which binds no one running as root, as CI does: hence the audit
    hook); every file write Python makes is recorded, and there must be none."""
    home, work, store = tmp_path / "home", tmp_path / "solution", tmp_path / "mxnet" / "models"
    temp = tmp_path / "tmp"
    for folder in (home, work, store, temp):
        folder.mkdir(parents=True)
    script = work / "grader.py"
    script.write_text(READ_ONLY_RUN)
    for folder in (home, work, store, store.parent):
        folder.chmod(0o555)
    try:
        env = dict(os.environ, HOME=str(home), MXNET_HOME=str(store.parent), TMPDIR=str(temp),
                   PYTHONPATH=str(Path(__file__).resolve().parents[1]),
                   MPLCONFIGDIR=str(home / "mpl"))
        run = subprocess.run([sys.executable, str(script), str(layouts["base"]),
                              str(clothing.paths(shared)[1])], cwd=work,
                             env=env, capture_output=True, text=True, timeout=900)
    finally:
        for folder in (home, work, store, store.parent):
            folder.chmod(0o755)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert f"ANSWERS {len(layouts['truth'])}" in out
    assert "WRITES []" in out, out
    assert sorted(os.listdir(work)) == ["grader.py"] and os.listdir(home) == []
    assert os.listdir(temp) == [] and os.listdir(store) == []


def test_rows_naming_one_photo_differently_are_one_photo(shared, tmp_path):
    """The audit's case on real photos: "cat1.jpg" and "cat1", "./dog2.jpg" and "dog2.jpg"
    resolve to one file each; before, those photos counted twice (one in train and in
    validation at once) and one carried both labels."""
    from gluonft.datasets import labelled_images
    from gluonft.datasets.table import TableWarning
    images = shared / "data" / "dogcat"
    rows = {"cat/cat1.jpg": "cat", "cat1": "cat", "cat/cat2.jpg": "cat", "cat3.png": "cat",
            "cat4.jpeg": "cat", "dog1.jpg": "dog", "./dog/dog2.jpg": "dog", "dog2.jpg": "dog",
            "dog3.jpg": "dog", "dog4.png": "dog"}
    with pytest.warns(TableWarning, match=r"2 image\(s\) .* named by several rows .*cat1"):
        data = labelled_images(rows, images, image_size=32, val_fraction=0.5, seed=0)
    assert len(data.train) + len(data.validation) == 8  # 8 photos, each once
    stack = np.concatenate([data.train.images, data.validation.images]).reshape(8, -1)
    assert len(np.unique(stack, axis=0)) == 8  # no photo in both splits
    with pytest.raises(ValueError, match=r"two different labels under different names: cat/"
                                         r"cat1\.jpg \('cat/cat1\.jpg': 'cat', 'cat1': 'dog'\)"):
        labelled_images({**rows, "cat1": "dog"}, images, image_size=32)
