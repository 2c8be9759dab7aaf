"""mixup, cutmix (gluonft.mixing) and albumentations pipelines (gluonft.pipelines) on real
clothing photos: repeatable, the labels and weights match the images, bad pipelines named."""
import sys

import mxnet as mx
import numpy as np
import pytest

from gluonft.backbones import load_backbone
from gluonft.batches import image_inputs
from gluonft.mixing import Mix, draw_mix
from gluonft.regimes import apply_regime, split_net
from gluonft.train import fit
from gluonft.transforms import Augment, BatchTransform

from . import clothing

A = pytest.importorskip("albumentations", reason="the albumentations extra is not installed: "
                                                 "pip install -e '.[albumentations]'")
from gluonft.pipelines import Albumentations  # noqa: E402

CPU = clothing.CPU
SIZE = clothing.SIZE


def _practitioner_pipeline():
    return A.Compose([A.HorizontalFlip(), A.Affine(rotate=(-15, 15)),
                      A.RandomBrightnessContrast(), A.CoarseDropout(num_holes_range=(1, 4))])


@pytest.fixture(scope="module")
def photos(shared):
    return clothing.data(shared).test.take(np.arange(0, 372, 23))   # 17 photos, all classes


def _mixed_inputs(photos, mix, seed):
    """What fit's step gets for these photos: a net without a frozen prefix passes the
    normalised (and mixed) images through unchanged."""
    net = load_backbone("mobilenet0.25", classes=10, weights=None, ctx=CPU)
    apply_regime(net, "full")
    parts = split_net(net)
    transform = BatchTransform(SIZE, net.family.mean, net.family.std)
    rng = np.random.RandomState(seed)
    inputs = image_inputs(parts, transform, photos.images, photos.labels, None, [CPU],
                           mix=mix, rng=rng)
    plain = transform(mx.nd.array(photos.images, dtype="uint8"), None).asnumpy()
    draw = draw_mix(mix, len(photos), SIZE, np.random.RandomState(seed))
    return inputs[0], plain, draw


def test_a_mixup_batch_is_the_weighted_pair_with_both_labels(photos):
    (x, y, partner, lam), plain, draw = _mixed_inputs(photos, Mix("mixup", alpha=0.4), seed=3)
    assert lam == draw.lam and 0 < lam < 1
    np.testing.assert_array_equal(partner.asnumpy(), photos.labels[draw.partner])
    np.testing.assert_array_equal(y.asnumpy(), photos.labels)
    # float32 arithmetic of the same two terms: equal to rounding.
    np.testing.assert_allclose(x.asnumpy(), lam * plain + (1 - lam) * plain[draw.partner],
                               rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_a_cutmix_box_holds_the_partner_and_its_area_is_the_weight(photos, seed):
    (x, y, partner, lam), plain, draw = _mixed_inputs(photos, Mix("cutmix"), seed=seed)
    top, left, height, width = draw.box
    assert 1 - lam == pytest.approx(height * width / SIZE ** 2)
    inside = np.zeros((SIZE, SIZE), bool)
    inside[top:top + height, left:left + width] = True
    x = x.asnumpy()
    np.testing.assert_array_equal(x[:, :, inside], plain[draw.partner][:, :, inside])
    np.testing.assert_array_equal(x[:, :, ~inside], plain[:, :, ~inside])
    np.testing.assert_array_equal(partner.asnumpy(), photos.labels[draw.partner])


def test_mix_probability_leaves_some_batches_unmixed(photos):
    rng = np.random.RandomState(0)
    draws = [draw_mix(Mix("mixup", prob=0.5), 8, SIZE, rng) for _ in range(200)]
    mixed = sum(d is not None for d in draws)
    assert 70 < mixed < 130      # Binomial(200, 0.5): mean 100, sd 7


def test_bad_mix_settings_are_clear_errors():
    with pytest.raises(ValueError, match="unknown mix 'mixmatch'"):
        Mix("mixmatch")
    with pytest.raises(ValueError, match=r"mix prob must be in \(0, 1\]"):
        Mix("mixup", prob=0)
    with pytest.raises(ValueError, match="mix alpha must be a number > 0"):
        Mix("cutmix", alpha=-1)


def test_same_seed_same_albumentations_batch_with_or_without_workers(photos):
    seeds = np.arange(len(photos)) * 7919
    here = Albumentations(_practitioner_pipeline(), workers=0)
    first, again = here(photos.images, seeds), here(photos.images, seeds)
    assert np.array_equal(first, again) and not np.array_equal(first, photos.images)
    assert first.dtype == np.uint8 and first.shape == photos.images.shape
    pooled = Albumentations(_practitioner_pipeline(), workers=2)
    assert np.array_equal(pooled(photos.images, seeds), first)
    assert not np.array_equal(here(photos.images, seeds + 1), first)


@pytest.mark.parametrize("culprit, match", [
    (A.Resize(32, 32), r"Resize.*turned a \(\d+, \d+, 3\) uint8 image into \(32, 32, 3\)"),
    (A.ToFloat(), r"ToFloat.*into \(\d+, \d+, 3\) float32"),
])
def test_a_pipeline_that_changes_size_or_dtype_names_the_transform(photos, culprit, match):
    pipeline = Albumentations(A.Compose([A.HorizontalFlip(), culprit]), workers=0)
    with pytest.raises(ValueError, match=match):
        pipeline(photos.images[:2], [1, 2])


def test_without_albumentations_the_error_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[albumentations\]'"):
        Albumentations(object())


@pytest.mark.parametrize("augment, mix", [
    ("albumentations", None), (Augment.preset("standard"), Mix("mixup")),
    (Augment.preset("standard"), Mix("cutmix", prob=0.5))])
def test_fit_with_a_pipeline_or_mixing_learns_repeats_and_records_it(shared, augment, mix):
    data = clothing.data(shared)
    train = data.train.subset(n_per_class=30, seed=0)
    weights = str(clothing.paths(shared)[1])
    runs = []
    for _ in range(2):
        aug = Albumentations(_practitioner_pipeline(), workers=0) \
            if augment == "albumentations" else augment
        net = load_backbone("mobilenet0.75", classes=10, weights=weights, ctx=CPU)
        apply_regime(net, "last_k:2")
        runs.append(fit(net, train, data.validation, epochs=3, batch_size=32, lr=0.01,
                        augment=aug, mix=mix, image_size=SIZE, ctx=CPU, progress=False))
    first, second = runs
    # Same seed, same process: the same augmented and mixed batches, so the same numbers.
    assert first["train_loss"] == second["train_loss"] and first["val_acc"] == second["val_acc"]
    assert first.settings["cache_features"] is False
    if mix is not None:
        assert first.settings["mix"] == mix.to_dict()
    else:
        assert "mix" not in first.settings
        assert first.settings["augment"]["albumentations"]["transform"]["__class_fullname__"] \
            == "Compose"
    # 10 classes, 300 photos at 64 px, 3 epochs of the last two blocks: well above chance 0.1
    # (seen 0.34-0.46).
    assert first["val_acc"][-1] > 0.2
