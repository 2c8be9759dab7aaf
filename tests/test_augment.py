"""Augmentation ops do what their names say: crop, rotation, colour jitter, cutout, presets,
and the same seed gives the same batch on any device."""
import dataclasses
import json

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.datasets import cifar10
from gluonft.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    Augment,
    BatchTransform,
    sample_augment,
)

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # output = x / 255
OFF = dict(flip=False, translate=0.0)  # geometry off, to isolate one op


class _Constant:
    """A stand-in RandomState whose every draw is ``value``: puts each option at a known end."""

    def __init__(self, value):
        self.value = value

    def random_sample(self, shape):
        return np.full(shape, self.value)


@pytest.fixture(scope="module")
def images(shared) -> np.ndarray:
    return cifar10(shared / "data" / "cifar-10-subset", train=False).images[:16]


def _nd(x, ctx=mx.cpu()):
    return mx.nd.array(x, ctx=ctx, dtype="uint8")


def _run(images, rows, size=32, **norm):
    return BatchTransform(size, **(norm or PLAIN))(_nd(images), rows).asnumpy()


# --- geometry ----------------------------------------------------------------------------------

@pytest.mark.parametrize("draw, k", [(1.0, 1), (0.0, -1)])
def test_rotation_by_90_degrees_is_rot90(images, draw, k):
    # Draw 1 gives +rotation (counter-clockwise as displayed, like np.rot90), draw 0 -rotation.
    rows = sample_augment(16, Augment(**OFF, rotation=90), _Constant(draw))
    out = _run(images, rows)
    expected = np.rot90(images, k=k, axes=(1, 2)).transpose(0, 3, 1, 2) / 255
    assert np.abs(out - expected).max() < 1e-4  # interpolation exactly on pixel centres


def test_rotation_keeps_a_centred_disc_and_pads_the_corners():
    # A disc centred in the image is its own rotation; the corners come from outside (0).
    yy, xx = np.mgrid[:32, :32]
    disc = np.where((yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 10 ** 2, 200, 100).astype(np.uint8)
    image = np.repeat(disc[None, :, :, None], 3, axis=3)
    out = _run(image, sample_augment(1, Augment(**OFF, rotation=30), _Constant(1.0))) * 255
    inner = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 14 ** 2
    assert np.abs(out[0, 0][inner] - disc[inner]).mean() < 5  # edge pixels interpolate
    assert np.all(out[0, :, 0, 0] == 0) and np.all(out[0, :, -1, -1] == 0)
    assert abs(np.mean(out[0, 0][inner] > 150) - np.mean(disc[inner] == 200)) < 0.05


def test_random_resized_crop_takes_the_drawn_window():
    # A 64x64 image whose top-left quadrant is 200: a crop of area 1/4, ratio 1, pushed to the
    # top-left corner (centre draws 0) is that quadrant, resized to 32x32.
    image = np.zeros((1, 64, 64, 3), np.uint8)
    image[:, :32, :32] = 200
    aug = Augment(**OFF, crop_area=(0.25, 0.25), crop_ratio=(1, 1))
    rows = sample_augment(1, aug, _Constant(0.0))
    np.testing.assert_allclose(rows[0], [0.5, 0, -0.5, 0, 0.5, -0.5], atol=1e-7)
    out = _run(image, rows) * 255
    # Align-corners: output pixels 0..30 read input 0..31 (all 200); the last reads 31.5.
    np.testing.assert_allclose(out[0, :, :-1, :-1], 200, atol=1e-3)
    np.testing.assert_allclose(out[0, :, :-1, -1], 100, atol=1e-3)


def test_sampled_crops_respect_area_ratio_and_stay_inside():
    aug = Augment(flip=True, translate=0.0, crop_area=(0.2, 0.6), crop_ratio=(0.5, 2.0))
    rows = sample_augment(4000, aug, np.random.RandomState(0))
    width, height = np.abs(rows[:, 0]), rows[:, 4]
    area, ratio = width * height, width / height
    clipped = (width >= 1 - 1e-6) | (height >= 1 - 1e-6)  # a side cut to the image side
    assert np.all(area[~clipped] >= 0.2 - 1e-5) and np.all(area <= 0.6 + 1e-5)
    assert np.all(ratio[~clipped] >= 0.5 - 1e-5) and np.all(ratio[~clipped] <= 2 + 1e-5)
    assert area.max() > 0.58 and area[~clipped].min() < 0.21
    assert np.all(np.abs(rows[:, 2]) + width <= 1 + 1e-5)  # inside the image
    assert np.all(np.abs(rows[:, 5]) + height <= 1 + 1e-5)
    assert 0.45 < (rows[:, 0] < 0).mean() < 0.55  # flips still drawn


# --- colour ------------------------------------------------------------------------------------

def test_brightness_scales_pixels_and_shifts_the_mean(images):
    rows = sample_augment(16, Augment(**OFF, brightness=0.5), np.random.RandomState(1))
    factors = rows[:, 6]
    assert rows.shape == (16, 9) and 0.5 <= factors.min() and factors.max() <= 1.5
    assert np.all(rows[:, 7:9] == 1)  # contrast and saturation off
    out = _run(images, rows) * 255
    expected = np.clip(images.transpose(0, 3, 1, 2) * factors[:, None, None, None], 0, 255)
    np.testing.assert_allclose(out, expected, atol=2e-3)
    shift = out.mean(axis=(1, 2, 3)) - images.mean(axis=(1, 2, 3))
    assert np.all(np.sign(shift[np.abs(factors - 1) > 0.05]) ==
                  np.sign(factors - 1)[np.abs(factors - 1) > 0.05])


def test_contrast_keeps_mean_grey_and_saturation_zero_is_grey(images):
    weights = np.array([0.299, 0.587, 0.114])
    low_contrast = _run(images, sample_augment(16, Augment(**OFF, contrast=1.0),
                                               _Constant(0.0))) * 255  # factor 0
    grey_mean = (images @ weights).mean(axis=(1, 2))
    np.testing.assert_allclose(low_contrast, np.broadcast_to(grey_mean[:, None, None, None],
                                                             low_contrast.shape), atol=1e-3)
    grey = _run(images, sample_augment(16, Augment(**OFF, saturation=1.0),
                                       _Constant(0.0))) * 255  # factor 0: no colour left
    np.testing.assert_allclose(grey[:, 0], grey[:, 1], atol=1e-3)
    np.testing.assert_allclose(grey[:, 0], images @ weights, atol=1e-3)
    # Factor 1.5: more contrast, the std of the image grows.
    strong = _run(images, sample_augment(16, Augment(**OFF, contrast=0.5), _Constant(1.0)))
    assert np.all(strong.std(axis=(1, 2, 3)) > (images / 255).std(axis=(1, 2, 3)))


# --- cutout ------------------------------------------------------------------------------------

def test_cutout_zeroes_exactly_the_holes(images):
    aug = Augment(**OFF, cutout=2, cutout_size=0.25)
    rows = sample_augment(16, aug, np.random.RandomState(5))
    assert rows.shape == (16, 9 + 8)
    tf = BatchTransform(32, IMAGENET_MEAN, IMAGENET_STD)
    out = tf(_nd(images), rows).asnumpy()
    plain = tf(_nd(images), rows[:, :6]).asnumpy()
    centres = (np.arange(32) + 0.5) / 32
    for i in range(16):
        mask = np.zeros((32, 32), bool)
        for k in range(2):
            x0, y0, x1, y1 = rows[i, 9 + 4 * k: 13 + 4 * k]
            mask |= ((centres[None, :] >= x0) & (centres[None, :] < x1)
                     & (centres[:, None] >= y0) & (centres[:, None] < y1))
        assert mask.any()
        assert np.all(out[i][:, mask] == 0)  # 0 after normalisation: the mean colour
        np.testing.assert_array_equal(out[i][:, ~mask], plain[i][:, ~mask])
        # An 8x8 hole (1/4 of 32) unless it reaches over the border.
        assert mask.sum() <= 2 * 64


# --- determinism, presets, compatibility -------------------------------------------------------

def test_same_seed_same_batch_on_two_devices_and_new_seed_differs(images):
    tf = BatchTransform(40, IMAGENET_MEAN, IMAGENET_STD)
    outs = []
    for ctx in (mx.cpu(0), mx.cpu(1)):
        rows = sample_augment(16, Augment.preset("strong"), np.random.RandomState(11))
        out = tf(_nd(images, ctx), mx.nd.array(rows, ctx=ctx))
        assert out.context == ctx
        outs.append(out.asnumpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    other = tf(_nd(images), sample_augment(16, Augment.preset("strong"),
                                           np.random.RandomState(12))).asnumpy()
    assert not np.array_equal(outs[0], other)


def test_old_settings_draw_the_same_stream_as_before():
    # The formulas of the first version: runs with flip / translate / scale are unchanged.
    aug = Augment(flip=True, translate=0.125, scale=(0.9, 1.1))
    rng = np.random.RandomState(3)
    u = rng.random_sample((50, 4))
    flip = np.where(u[:, 0] < 0.5, -1.0, 1.0)
    zoom = 0.9 + 0.2 * u[:, 3]
    expected = np.zeros((50, 6))
    expected[:, 0], expected[:, 4] = flip / zoom, 1 / zoom
    expected[:, 2], expected[:, 5] = (2 * u[:, 1] - 1) * 0.25, (2 * u[:, 2] - 1) * 0.25
    rng = np.random.RandomState(3)
    np.testing.assert_array_equal(sample_augment(50, aug, rng), expected.astype(np.float32))
    # Exactly 4 numbers per image were drawn: the next batch starts after 200.
    np.testing.assert_array_equal(sample_augment(50, aug, rng),
                                  sample_augment(50, aug, _after(3, 200)))


def _after(seed, draws):
    rng = np.random.RandomState(seed)
    rng.random_sample(draws)
    return rng


def test_switching_one_new_option_off_keeps_the_others_draws():
    full = sample_augment(100, Augment(rotation=20, brightness=0.3), np.random.RandomState(0))
    no_rot = sample_augment(100, Augment(brightness=0.3), np.random.RandomState(0))
    np.testing.assert_array_equal(full[:, 6:], no_rot[:, 6:])


def test_presets():
    assert PRESETS == ("none", "light", "standard", "strong")
    assert Augment.preset("none") == Augment.none() and Augment.preset("none").is_identity
    assert Augment.preset("light") == Augment()
    standard, strong = Augment.preset("standard"), Augment.preset("strong")
    assert standard.crop_area == (0.25, 1.0) and standard.brightness == 0.2 and standard.flip
    assert strong.crop_area == (0.08, 1.0) and strong.rotation == 15 and strong.cutout == 1
    assert not strong.is_identity and strong.pixel_ops and not Augment().pixel_ops
    for name in PRESETS:
        rows = sample_augment(3, Augment.preset(name), np.random.RandomState(0))
        assert rows.shape[0] == 3
    with pytest.raises(ValueError, match=r"unknown augmentation preset 'heavy': expected one of "
                                         r"none, light, standard, strong"):
        Augment.preset("heavy")
    # A value type: hashable, equal when equal, and serialisable for History.settings.
    assert hash(Augment(crop_area=[0.5, 1])) == hash(Augment(crop_area=(0.5, 1.0)))
    assert dataclasses.asdict(strong)["crop_area"] == (0.08, 1.0)
    for name in PRESETS:  # as History.settings stores it, and back
        augment = Augment.preset(name)
        assert Augment(**json.loads(json.dumps(dataclasses.asdict(augment)))) == augment


@pytest.mark.parametrize("kwargs, match", [
    ({"rotation": 181}, r"rotation must be a number \[0, 180\], got 181"),
    ({"rotation": -5}, "got -5"),
    ({"brightness": -0.1}, "brightness must be a number >= 0, got -0.1"),
    ({"contrast": "lots"}, "got 'lots'"),
    ({"cutout": 1.5}, "cutout must be an integer >= 0 .*got 1.5"),
    ({"cutout": 1, "cutout_size": 0}, r"cutout_size must be in \(0, 1\].*got 0"),
    ({"crop_area": (0, 1)}, r"crop_area must satisfy 0 < low <= high <= 1.*got \(0, 1\)"),
    ({"crop_area": (0.5, 1.2)}, "got"),
    ({"crop_area": 0.5}, "pair"),
    ({"crop_ratio": (2, 1)}, r"crop_ratio must satisfy 0 < low <= high.*got \(2, 1\)"),
])
def test_validation_echoes_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augment(**kwargs)


def test_transform_rejects_rows_of_a_wrong_width(images):
    with pytest.raises(ValueError, match=r"\(16, 6\).*\(16, 9 \+ 4 \* holes\).*got \(16, 7\)"):
        BatchTransform(32, **PLAIN)(_nd(images), np.zeros((16, 7), np.float32))


def test_fit_trains_with_the_strong_preset_alike_on_one_and_two_devices(shared):
    # fit passes the extended rows through unchanged (split per device like the affines);
    # the head regime keeps BatchNorm statistics fixed, so the device split cannot matter.
    data = cifar10(shared / "data" / "cifar-10-subset", train=False).subset(n_per_class=3, seed=0)
    histories = []
    for ctx in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=ctx)
        gluonft.apply_regime(net, "head")
        histories.append(gluonft.fit(net, data, epochs=1, batch_size=10, lr=0.05, ctx=ctx,
                                     augment=Augment.preset("strong"), seed=0, progress=False))
    assert histories[0]["train_loss"][0] == pytest.approx(histories[1]["train_loss"][0],
                                                          rel=1e-4)
    assert histories[0].settings["augment"]["cutout"] == 1
