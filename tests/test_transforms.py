"""Device-side batch transforms on real CIFAR-10 images: geometry, normalisation, determinism."""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from gluonft.datasets import cifar10
from gluonft.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    IDENTITY_AFFINE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    BatchTransform,
    sample_augment,
)

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # output = x / 255


@pytest.fixture(scope="module")
def images(shared) -> np.ndarray:
    return cifar10(shared / "data" / "cifar-10-subset", train=False, download=False).images[:16]


def _nd(x, ctx=mx.cpu()):
    return mx.nd.array(x, ctx=ctx, dtype="uint8")


def _affine(rows, n):
    return mx.nd.array(np.tile(np.asarray(rows, np.float32), (n, 1)))


def _reference(images, mean, std):
    x = images.astype(np.float64).transpose(0, 3, 1, 2) / 255
    return (x - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))


def test_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert CIFAR_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR_STD == (0.2023, 0.1994, 0.2010)


# --- sample_augment -----------------------------------------------------------------------------

def test_same_seed_same_affine_and_ranges():
    aug = Augment(flip=True, translate=0.125, scale=(0.8, 1.25))
    a = sample_augment(2000, aug, np.random.RandomState(3))
    np.testing.assert_array_equal(a, sample_augment(2000, aug, np.random.RandomState(3)))
    assert not np.array_equal(a, sample_augment(2000, aug, np.random.RandomState(4)))
    assert a.shape == (2000, 6) and a.dtype == np.float32
    assert np.all(a[:, [1, 3]] == 0)
    assert np.abs(a[:, [2, 5]]).max() <= 0.25 and np.abs(a[:, [2, 5]]).max() > 0.24
    flipped = a[:, 0] < 0
    assert 0.45 < flipped.mean() < 0.55
    zoom = 1 / a[:, 4]
    np.testing.assert_allclose(np.abs(a[:, 0]), a[:, 4], rtol=1e-6)  # same zoom on both axes
    assert 0.8 <= zoom.min() < 0.82 and 1.23 < zoom.max() <= 1.25


def test_none_gives_identity_and_options_switch_off_independently():
    a = sample_augment(50, Augment.none(), np.random.RandomState(0))
    np.testing.assert_array_equal(a, np.tile(IDENTITY_AFFINE, (50, 1)))
    # The stream is the same whatever the options: switching flip off keeps the shifts.
    with_flip = sample_augment(50, Augment(flip=True), np.random.RandomState(0))
    without = sample_augment(50, Augment(flip=False), np.random.RandomState(0))
    np.testing.assert_array_equal(with_flip[:, 2], without[:, 2])
    assert np.all(without[:, 0] == 1)
    assert sample_augment(0, Augment(), np.random.RandomState(0)).shape == (0, 6)


@pytest.mark.parametrize("kwargs, match", [
    ({"translate": 1.0}, r"\[0, 1\).*got 1.0"),
    ({"translate": -0.1}, "got -0.1"),
    ({"scale": (1.2, 0.9)}, r"low <= high, got \(1.2, 0.9\)"),
    ({"scale": (0, 1)}, "got"),
    ({"scale": 1.0}, "pair"),
    ({"flip": "yes"}, "True or False, got 'yes'"),
])
def test_augment_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augment(**kwargs)


def test_augment_is_hashable_value():
    assert Augment(scale=[1.0, 1.0]) == Augment() and hash(Augment.none()) == hash(Augment.none())
    assert Augment.none().is_identity and not Augment().is_identity


def test_sample_augment_validation():
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -1"):
        sample_augment(-1, Augment(), np.random.RandomState(0))
    with pytest.raises(ValueError, match="must be an Augment"):
        sample_augment(2, {"flip": True}, np.random.RandomState(0))


# --- BatchTransform ----------------------------------------------------------------------------

def test_no_affine_same_size_is_exact_normalisation(images):
    out = BatchTransform(32, CIFAR_MEAN, CIFAR_STD)(_nd(images), None)
    assert out.shape == (16, 3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out.asnumpy(), _reference(images, CIFAR_MEAN, CIFAR_STD),
                               atol=1e-5)
    white = BatchTransform(32, CIFAR_MEAN, CIFAR_STD)(_nd(np.full((1, 32, 32, 3), 255)))
    expected = (1 - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    np.testing.assert_allclose(white.asnumpy()[0, :, 5, 5], expected, rtol=1e-6)


def test_identity_affine_reproduces_the_image(images):
    # Align-corners sampling hits every pixel centre; only float32 grid rounding remains.
    out = BatchTransform(32, **PLAIN)(_nd(images), _affine(IDENTITY_AFFINE, 16)).asnumpy()
    assert np.abs(out - images.transpose(0, 3, 1, 2) / 255).max() < 1e-5


def test_flip_mirrors(images):
    tf = BatchTransform(32, **PLAIN)
    flipped = tf(_nd(images), _affine([-1, 0, 0, 0, 1, 0], 16)).asnumpy()
    expected = images[:, :, ::-1].transpose(0, 3, 1, 2) / 255
    assert np.abs(flipped - expected).max() < 1e-5
    # The flip the augmentation samples is this one.
    a = sample_augment(16, Augment(flip=True, translate=0), np.random.RandomState(0))
    out = tf(_nd(images), mx.nd.array(a)).asnumpy()
    for i in range(16):
        ref = images[i, :, ::-1] if a[i, 0] < 0 else images[i]
        assert np.abs(out[i] - ref.transpose(2, 0, 1) / 255).max() < 1e-5


def test_translation_shifts_content_and_zero_pads(images):
    # tx = 2/(S-1) grid units is one pixel: output column j reads input column j + 1.
    shift = 2 / 31
    out = BatchTransform(32, CIFAR_MEAN, CIFAR_STD)(
        _nd(images), _affine([1, 0, shift, 0, 1, 2 * shift], 16)).asnumpy()
    ref = _reference(images, CIFAR_MEAN, CIFAR_STD)
    np.testing.assert_allclose(out[:, :, :-2, :-1], ref[:, :, 2:, 1:], atol=1e-3)
    # Out of the image: 0 before normalisation, so -mean/std after.
    pad = -np.array(CIFAR_MEAN) / np.array(CIFAR_STD)
    np.testing.assert_allclose(out[:, :, :, -1], np.broadcast_to(pad[None, :, None], (16, 3, 32)),
                               rtol=1e-5)
    np.testing.assert_allclose(out[:, :, -2:, :], np.broadcast_to(pad[None, :, None, None],
                                                                  (16, 3, 2, 32)), rtol=1e-5)


def test_zoom_in_magnifies_the_centre(images):
    # Zoom 2 (scales 0.5): the output's corners read the input's central half.
    out = BatchTransform(32, **PLAIN)(_nd(images), _affine([0.5, 0, 0, 0, 0.5, 0], 16))
    centre = images[:, 8:24, 8:24].astype(np.float64).mean(axis=(1, 2)) / 255
    np.testing.assert_allclose(out.asnumpy().mean(axis=(2, 3)), centre, atol=0.01)


def test_upsampling_to_64(images):
    tf = BatchTransform(64, **PLAIN)
    out = tf(_nd(images)).asnumpy()
    assert out.shape == (16, 3, 64, 64)
    src = images.transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(out[:, :, 0, 0], src[:, :, 0, 0], atol=1e-5)  # corners align
    np.testing.assert_allclose(out[:, :, -1, -1], src[:, :, -1, -1], atol=1e-5)
    np.testing.assert_allclose(out.mean(axis=(2, 3)), src.mean(axis=(2, 3)), atol=0.01)
    # Same result with an explicit identity affine.
    np.testing.assert_allclose(tf(_nd(images), _affine(IDENTITY_AFFINE, 16)).asnumpy(), out,
                               atol=1e-6)
    assert tf(_nd(images[:2]), sample_augment(2, Augment(), np.random.RandomState(0))).shape \
        == (2, 3, 64, 64)  # a numpy affine is accepted too


def test_devices_give_identical_output(images):
    aug = Augment(flip=True, translate=0.125, scale=(0.9, 1.1))
    tf = BatchTransform(40, IMAGENET_MEAN, IMAGENET_STD)
    outs = []
    for ctx in (mx.cpu(0), mx.cpu(1)):
        a = sample_augment(16, aug, np.random.RandomState(11))  # the host rng, same per device
        out = tf(_nd(images, ctx), mx.nd.array(a, ctx=ctx))
        assert out.context == ctx
        outs.append(out.asnumpy())
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("args, match", [
    ((4, CIFAR_MEAN, CIFAR_STD), "integer >= 8, got 4"),
    ((32.0, CIFAR_MEAN, CIFAR_STD), "got 32.0"),
    ((32, (0.5, 0.5), CIFAR_STD), r"mean must have 3 values .*got 2"),
    ((32, CIFAR_MEAN, "abc"), "std must be 3 numbers"),
    ((32, CIFAR_MEAN, (0.2, 0.0, 0.2)), "std must be positive"),
])
def test_transform_validation(args, match):
    with pytest.raises(ValueError, match=match):
        BatchTransform(*args)


def test_transform_input_validation(images):
    tf = BatchTransform(32, CIFAR_MEAN, CIFAR_STD)
    with pytest.raises(ValueError, match="uint8 of shape"):
        tf(mx.nd.array(images))  # float32
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        tf(_nd(images.transpose(0, 3, 1, 2)))  # NCHW by mistake
    with pytest.raises(ValueError, match="NDArray"):
        tf(images)
    with pytest.raises(ValueError, match=r"\(16, 6\).*\(3, 6\)"):
        tf(_nd(images), _affine(IDENTITY_AFFINE, 3))


# --- the sampling grid --------------------------------------------------------------------------

def test_the_grid_is_gridgenerators():
    """BatchTransform builds GridGenerator's affine grid in elementwise ops (see
    `BatchTransform._affine_grid` for why). Coordinates reach |4| here; GridGenerator sums the
    three float32 products inside OpenBLAS's sgemm, whose kernel (FMA or not, its order)
    depends on the CPU: three roundings of at most half an ulp of 4 (2.4e-7) each stay below
    1e-6. Identity and flips multiply by 1, -1 and 0 and add zeros: exact in any order."""
    rng = np.random.RandomState(0)
    for side in (32, 64, 97):
        tf = BatchTransform(side, IMAGENET_MEAN, IMAGENET_STD)
        rows = np.concatenate([sample_augment(16, Augment(rotation=30, translate=0.2,
                                                         scale=(0.7, 1.3)), rng),
                               rng.uniform(-1.5, 1.5, (16, 6))]).astype(np.float32)
        reference = mx.nd.GridGenerator(mx.nd.array(rows), transform_type="affine",
                                        target_shape=(side, side)).asnumpy()
        np.testing.assert_allclose(tf._affine_grid(mx.nd.array(rows)).asnumpy(), reference,
                                   rtol=0, atol=1e-6)
        for exact in (IDENTITY_AFFINE, (-1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0)):
            rows = _affine(exact, 2)
            np.testing.assert_array_equal(tf._affine_grid(rows).asnumpy(), mx.nd.GridGenerator(
                rows, transform_type="affine", target_shape=(side, side)).asnumpy())


TWO_CONTEXTS_AT_ONCE = """
import sys
import numpy as np
import gluonft, mxnet as mx
from gluonft.transforms import Augment, BatchTransform, sample_augment
images = np.load(sys.argv[1])
tf = BatchTransform(64, gluonft.transforms.IMAGENET_MEAN, gluonft.transforms.IMAGENET_STD)
rows = sample_augment(len(images), Augment(flip=True, translate=0.125), np.random.RandomState(0))
contexts = [mx.cpu(0), mx.cpu(1)]
inputs = [(mx.nd.array(images, ctx=c, dtype="uint8"), mx.nd.array(rows, ctx=c)) for c in contexts]
for step in range(int(sys.argv[2])):
    outs = [tf(x, a) for x, a in inputs]  # both contexts' engine threads at work at once
    for out in outs:
        out.wait_to_read()
print("done", flush=True)
"""


def test_batches_on_two_cpu_contexts_at_once_finish(images, tmp_path):
    """A batch split over cpu(0) and cpu(1) runs on two engine threads at once. Through
    GridGenerator (OpenBLAS 0.3.13's threaded sgemm) this deadlocked: the script below hung
    within its first 50 steps in 4 runs of 4 on a 2-core Xeon (300 steps take ~10 s), and a
    CI run of the suite hung in a test predicting on two contexts. With two OpenMP threads
    (OMP_NUM_THREADS=2, as gluonft sets on 2 cores) OpenBLAS takes its threaded path, the one
    that deadlocked."""
    np.save(tmp_path / "images.npy", np.repeat(images, 2, axis=0))  # 32 real images
    script = tmp_path / "two_contexts.py"
    script.write_text(TWO_CONTEXTS_AT_ONCE)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    try:
        run = subprocess.run([sys.executable, str(script), str(tmp_path / "images.npy"), "300"],
                             env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("two CPU contexts transforming at once did not finish in 120 s (deadlock)")
    assert run.returncode == 0 and "done" in run.stdout, run.stderr
