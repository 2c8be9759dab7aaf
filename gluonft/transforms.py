"""Batch transforms that run on the device: random affine augmentation, resize, normalisation.

Random numbers are drawn on the host from a numpy RandomState (``sample_affine``) and the device
only applies them (``BatchTransform``), so the same seed gives the same augmentation on any
device and any number of devices.

Coordinates follow MXNet's ``GridGenerator``/``BilinearSampler``: a grid coordinate of -1 and +1
is the centre of the first and last pixel ("align corners"). Consequences:

* the identity affine samples every pixel centre exactly; the values differ from the input only
  by float32 rounding of the grid (at most ~1e-3 on the 0..255 scale, ~4e-6 after /255). With
  ``affine=None`` and an image already of the target size the sampler is skipped and the result
  is exact;
* a horizontal flip (x-scale -1) maps pixel i to pixel W-1-i exactly;
* a shift of ``t`` grid units moves the content by ``t * (W - 1) / 2`` pixels, so
  ``translate=0.125`` shifts a 32-pixel image by at most 3.875 pixels (the grid spans W-1 pixel
  pitches between the corner centres, not W);
* samples falling outside the image read 0 before normalisation: zero padding, as in the usual
  CIFAR pad-and-crop.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np

__all__ = ["Augment", "sample_affine", "BatchTransform", "IDENTITY_AFFINE",
           "IMAGENET_MEAN", "IMAGENET_STD", "CIFAR_MEAN", "CIFAR_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # [sx, 0, tx, 0, sy, ty] of GridGenerator


@dataclass(frozen=True)
class Augment:
    """Random augmentation settings for training batches.

    Attributes:
        flip: mirror left-right with probability 1/2.
        translate: maximum shift as a fraction of the image side (0.125: about 4 px of 32,
            the standard CIFAR pad-4-and-crop), drawn uniformly per image and axis.
        scale: range (low, high) of the random zoom factor; >1 zooms in, <1 zooms out (the
            border is then zero padded).

    Example:
        >>> Augment(flip=True, translate=0.125)
        Augment(flip=True, translate=0.125, scale=(1.0, 1.0))
        >>> Augment.none().is_identity
        True
    """

    flip: bool = True
    translate: float = 0.125
    scale: Tuple[float, float] = (1.0, 1.0)

    def __post_init__(self):
        if not isinstance(self.flip, (bool, np.bool_)):
            raise ValueError(f"Augment flip must be True or False, got {self.flip!r}")
        if not 0 <= self.translate < 1:
            raise ValueError(f"Augment translate must be in [0, 1) (a fraction of the image "
                             f"side), got {self.translate!r}")
        try:
            low, high = (float(s) for s in self.scale)
        except (TypeError, ValueError):
            raise ValueError(f"Augment scale must be a pair (low, high), got {self.scale!r}")
        if not 0 < low <= high:
            raise ValueError(f"Augment scale must satisfy 0 < low <= high, got {self.scale!r}")
        # frozen dataclass: normalise through object.__setattr__ so equality and hashing work
        # whether the caller passed a list or a tuple.
        object.__setattr__(self, "scale", (low, high))
        object.__setattr__(self, "flip", bool(self.flip))
        object.__setattr__(self, "translate", float(self.translate))

    @classmethod
    def none(cls) -> "Augment":
        """No augmentation (for evaluation).

        Returns:
            Augment whose sampled affines are all the identity.

        Example:
            >>> sample_affine(2, Augment.none(), np.random.RandomState(0))[0].tolist()
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        """
        return cls(flip=False, translate=0.0, scale=(1.0, 1.0))

    @property
    def is_identity(self) -> bool:
        """True when every sampled affine is the identity."""
        return not self.flip and self.translate == 0 and self.scale == (1.0, 1.0)


def sample_affine(n: int, augment: Augment, rng: np.random.RandomState) -> np.ndarray:
    """Draw per-image affine parameters for ``mx.nd.GridGenerator(transform_type='affine')``.

    Each row is [sx, 0, tx, 0, sy, ty], mapping output grid coordinates (in [-1, 1]) to input
    ones: a flip negates sx, the zoom factor z divides both scales, tx and ty are uniform in
    [-2 * translate, 2 * translate]. Exactly 4 * n numbers are drawn from ``rng`` whatever the
    settings, so the stream stays aligned when an option is switched off.

    Args:
        n: number of images, >= 0.
        augment: the settings.
        rng: the only source of randomness.

    Returns:
        float32 array (n, 6).

    Example:
        >>> a = sample_affine(256, Augment(), np.random.RandomState(0))
        >>> a.shape, a.dtype
        ((256, 6), dtype('float32'))
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_affine n must be an integer >= 0, got {n!r}")
    if not isinstance(augment, Augment):
        raise ValueError(f"sample_affine augment must be an Augment, got {augment!r}")
    u = rng.random_sample((n, 4))
    flip = np.where(augment.flip & (u[:, 0] < 0.5), -1.0, 1.0)
    shift = 2.0 * augment.translate
    tx = (2.0 * u[:, 1] - 1.0) * shift
    ty = (2.0 * u[:, 2] - 1.0) * shift
    low, high = augment.scale
    zoom = low + (high - low) * u[:, 3]
    affine = np.zeros((n, 6), np.float64)
    affine[:, 0] = flip / zoom
    affine[:, 2] = tx
    affine[:, 4] = 1.0 / zoom
    affine[:, 5] = ty
    return affine.astype(np.float32)


class BatchTransform:
    """uint8 NHWC images on a device -> normalised float32 NCHW at a given size.

    Computes ``((x / 255) - mean) / std`` of the images resampled through the affine (see the
    module docstring for the coordinate conventions). Non-square images are stretched to a
    square. Stateless: one instance serves any device.

    Args:
        image_size: output side S, an integer >= 8.
        mean: per-channel RGB mean on the 0..1 scale (3 values).
        std: per-channel RGB standard deviation (3 positive values).

    Example:
        >>> tf = BatchTransform(32, CIFAR_MEAN, CIFAR_STD)
        >>> x = mx.nd.zeros((4, 32, 32, 3), dtype='uint8')
        >>> aff = mx.nd.array(sample_affine(4, Augment(), np.random.RandomState(0)))
        >>> tf(x, aff).shape
        (4, 3, 32, 32)
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
                or image_size < 8:
            raise ValueError(f"BatchTransform image_size must be an integer >= 8, "
                             f"got {image_size!r}")
        self.image_size = int(image_size)
        self.mean = _three("mean", mean)
        self.std = _three("std", std)
        if min(self.std) <= 0:
            raise ValueError(f"BatchTransform std must be positive, got {self.std}")

    def __repr__(self) -> str:
        return f"BatchTransform(image_size={self.image_size}, mean={self.mean}, std={self.std})"

    def __call__(self, images: mx.nd.NDArray,
                 affine: Optional[Union[mx.nd.NDArray, np.ndarray]] = None) -> mx.nd.NDArray:
        """Transform one batch.

        Args:
            images: uint8 NDArray (B, H, W, 3), RGB.
            affine: float32 (B, 6) affine rows (NDArray, or numpy copied to the images'
                device), or None for the identity.

        Returns:
            float32 NDArray (B, 3, S, S) on the images' device.
        """
        if not isinstance(images, mx.nd.NDArray):
            raise ValueError(f"BatchTransform images must be an mx.nd.NDArray, "
                             f"got {type(images).__name__}")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"BatchTransform images must be uint8 of shape (B, H, W, 3), got "
                             f"{np.dtype(images.dtype).name} of shape {images.shape}")
        ctx, (b, h, w, _), s = images.context, images.shape, self.image_size
        x = images.astype("float32").transpose((0, 3, 1, 2))
        if affine is not None or h != s or w != s:
            if affine is None:
                affine = np.tile(np.asarray(IDENTITY_AFFINE, np.float32), (b, 1))
            if isinstance(affine, np.ndarray):
                affine = mx.nd.array(affine, ctx=ctx, dtype="float32")
            if affine.shape != (b, 6):
                raise ValueError(f"BatchTransform affine must have shape ({b}, 6) for {b} "
                                 f"images, got {affine.shape}")
            grid = mx.nd.GridGenerator(affine.as_in_context(ctx).astype("float32"),
                                       transform_type="affine", target_shape=(s, s))
            x = mx.nd.BilinearSampler(x, grid)
        # One fused multiply-add instead of /255, -mean, /std.
        scale = mx.nd.array([1.0 / (255.0 * d) for d in self.std], ctx=ctx).reshape((1, 3, 1, 1))
        shift = mx.nd.array([-m / d for m, d in zip(self.mean, self.std)],
                            ctx=ctx).reshape((1, 3, 1, 1))
        return mx.nd.broadcast_add(mx.nd.broadcast_mul(x, scale), shift)


def _three(name: str, values: Sequence[float]) -> Tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"BatchTransform {name} must be 3 numbers (R, G, B), got {values!r}")
    if len(values) != 3:
        raise ValueError(f"BatchTransform {name} must have 3 values (R, G, B), got {len(values)}: "
                         f"{values}")
    return values
