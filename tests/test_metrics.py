"""gluonft.metrics and gluonft.interpret against scikit-learn on the same predictions, and an
interpretation of a real model on the real clothing photos."""
import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as sk

import gluonft
from gluonft import metrics
from gluonft.interpretation import Interpretation, interpret

from . import clothing


def _predictions(seed, n, classes, *, drop_true=(), drop_predicted=()):
    """Labels and probabilities with some classes absent from the truth or the predictions."""
    rng = np.random.RandomState(seed)
    allowed_true = [c for c in range(classes) if c not in drop_true]
    labels = rng.choice(allowed_true, size=n)
    logits = rng.randn(n, classes) * 2
    logits[np.arange(n), labels] += 1.5  # better than chance, far from perfect
    logits[:, list(drop_predicted)] = -50
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, proba


@pytest.mark.parametrize("seed,classes,drop_true,drop_predicted", [
    (0, 2, (), ()), (1, 5, (), ()), (2, 10, (3,), ()), (3, 10, (), (7,)), (4, 7, (1, 2), (2, 5)),
    (5, 100, (), ())])
def test_figures_equal_scikit_learns(seed, classes, drop_true, drop_predicted):
    labels, proba = _predictions(seed, 400, classes, drop_true=drop_true,
                                 drop_predicted=drop_predicted)
    predicted = proba.argmax(axis=1)
    every = list(range(classes))
    cm = metrics.confusion_matrix(labels, predicted, classes=classes)
    assert np.array_equal(cm, sk.confusion_matrix(labels, predicted, labels=every))
    with warnings.catch_warnings():  # scikit-learn warns about the 0-by-convention classes
        warnings.simplefilter("ignore")
        p, r, f, s = sk.precision_recall_fscore_support(labels, predicted, labels=every,
                                                         zero_division=0)
        macro = sk.f1_score(labels, predicted, labels=every, average="macro", zero_division=0)
        weighted = sk.f1_score(labels, predicted, labels=every, average="weighted",
                               zero_division=0)
    figures = metrics.per_class(cm)
    # Both compute the same ratios of the same integer counts in float64; only the order of
    # a few operations may differ: 1e-12 is thousands of ulps of numbers in [0, 1].
    for ours, theirs in ((figures.precision, p), (figures.recall, r), (figures.f1, f)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert np.array_equal(figures.support, s)
    assert abs(metrics.macro_f1(cm) - macro) <= 1e-12
    assert abs(metrics.weighted_f1(cm) - weighted) <= 1e-12
    assert metrics.accuracy(cm) == sk.accuracy_score(labels, predicted)
    assert not np.isnan(figures.f1).any()
    for c in drop_true:
        assert "never in the truth" in figures.undefined[c]
    for c in drop_predicted:
        assert "never predicted" in figures.undefined[c]
    if classes == 2:
        for positive in (0, 1):
            assert abs(metrics.binary_f1(cm, positive)
                       - sk.f1_score(labels, predicted, pos_label=positive)) <= 1e-12


def test_most_confused_and_top_losses_are_what_the_predictions_say():
    labels, proba = _predictions(7, 300, 4)
    result = Interpretation(("a", "b", "c", "d"), labels, proba,
                            tuple(f"f{i}.jpg" for i in range(300)))
    cm = result.confusion_matrix
    pairs = result.most_confused(min_count=3)
    assert pairs == sorted(pairs, key=lambda x: (-x[2], x[0], x[1]))
    assert all(count == cm["abcd".index(t), "abcd".index(p)] and count >= 3 and t != p
               for t, p, count in pairs)
    assert sum(c for _, _, c in result.most_confused()) == cm.sum() - np.trace(cm)
    top = result.top_losses(5)
    losses = -np.log(proba[np.arange(300), labels])
    assert [row["index"] for row in top] == list(np.argsort(-losses, kind="stable")[:5])
    assert top[0]["loss"] == pytest.approx(losses.max(), abs=1e-12)
    assert top[0]["file"] == f"f{top[0]['index']}.jpg"


def test_calibration_by_hand_and_strict_json():
    # Two bins of 0.5 width: confidences 0.9, 0.8 (right, wrong) -> bin 2: conf 0.85, acc 0.5;
    # confidence 0.3 (right; three classes) -> bin 1: conf 0.3, acc 1.
    proba = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    proba[2] = [0.3, 0.35, 0.35]  # top 0.35, class 1
    labels = np.array([0, 0, 1])
    cal = metrics.calibration(labels, proba, bins=2)
    assert cal.count.tolist() == [1, 2]
    assert cal.ece == pytest.approx((abs(0.35 - 1) * 1 + abs(0.85 - 0.5) * 2) / 3, abs=1e-12)
    empty = metrics.calibration(labels, proba, bins=10).to_dict()
    json.dumps(empty, allow_nan=False)  # empty bins are null, not NaN
    assert None in empty["accuracy"]


def test_an_empty_or_one_class_split_is_a_clear_error():
    with pytest.raises(ValueError, match="no predictions: the split holds no images"):
        Interpretation(("a", "b"), np.zeros(0, int), np.zeros((0, 2)), ())
    with pytest.raises(ValueError, match="photos of one class only \\('b'\\)"):
        Interpretation(("a", "b"), np.ones(3, int), np.full((3, 2), 0.5), ("x", "y", "z"))
    with pytest.raises(ValueError, match="binary F1 of a two-class model"):
        Interpretation(("a", "b", "c"), np.array([0, 1, 2]), np.eye(3), ("x", "y", "z")).f1("a")


def test_interpret_a_real_model_on_real_photos(shared, tmp_path):
    clf = clothing.classifier(shared)
    root = clothing.paths(shared)[0]
    result = interpret(clf, root, split="test")
    test = clothing.data(shared).test
    assert len(result.labels) == len(test) and result.classes == clf.classes
    assert np.array_equal(np.sort(result.labels), np.sort(test.labels))
    # the same photos through the same decoder and net: evaluate_folder's accuracy exactly
    assert result.accuracy == pytest.approx(
        gluonft.evaluate_folder(clf, root)["accuracy"], abs=1e-12)
    assert result.accuracy > 0.4  # 10 classes: chance is 0.1
    data = result.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["confusion_matrix"] == result.confusion_matrix.tolist()
    assert all(f.startswith("test/") for f in result.files)
    with pytest.raises(ValueError, match="unknown split 'valid': expected one of test, "):
        interpret(clf, root, split="valid")
    with pytest.raises(ValueError, match="has no train/ validation/ test/ folders; pass "
                                         "split='all'"):
        interpret(clf, root / "test", split="test")


def test_temperature_scaling_keeps_the_predictions_and_lowers_the_loss():
    labels, proba = _predictions(11, 600, 6)
    sharp = metrics.with_temperature(proba, 0.4)  # an over-confident model
    result = Interpretation(tuple("abcdef"), labels, sharp, tuple(map(str, range(600))))
    t = result.temperature()
    # sharpening by 0.4 divides the logits by 0.4: the best temperature is 2.5x the original's
    assert t == pytest.approx(metrics.fit_temperature(labels, proba) / 0.4, rel=1e-4)
    calibrated = result.with_temperature(t)
    assert np.array_equal(calibrated.predicted, result.predicted)
    assert np.array_equal(calibrated.confusion_matrix, result.confusion_matrix)
    assert calibrated.losses.mean() < result.losses.mean()
    assert calibrated.calibration().ece < result.calibration().ece
    nll = [metrics.with_temperature(sharp, t * f)[np.arange(600), labels] for f in (0.9, 1.1)]
    assert all(-np.log(p).mean() > calibrated.losses.mean() for p in nll)  # a minimum
