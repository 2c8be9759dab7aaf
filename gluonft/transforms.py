"""Batch transforms that run on the device: random affine augmentation, resize, normalisation.

Random numbers are drawn on the host from a numpy RandomState (``sample_augment``) and the device
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

Beyond the affine (crop, flip, rotation, zoom, shift: one sampling grid), colour jitter
and cutout run as NDArray ops on the device, with their random parameters drawn on the host
too: `sample_augment` packs everything one batch needs into one float32 row per image
(its docstring lists the columns), and `BatchTransform` applies such rows. With the colour
and cutout options off the rows are the 6 affine numbers, exactly as before.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np

__all__ = ["Augment", "sample_augment", "BatchTransform", "IDENTITY_AFFINE",
           "IMAGENET_MEAN", "IMAGENET_STD", "CIFAR_MEAN", "CIFAR_STD", "PRESETS",
           "GRAY_WEIGHTS", "to_device"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # [sx, 0, tx, 0, sy, ty] of GridGenerator
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as OpenCV's and PIL's RGB -> gray
PRESETS = ("none", "light", "standard", "strong")


@dataclass(frozen=True)
class Augment:
    """Random augmentation settings for training batches.

    The geometric options make one affine map per image (one resampling, so crop, flip,
    rotation, zoom and shift cost the same as any one of them): the output shows the window of
    the input centred at the crop centre plus the shift, of the crop's size divided by the
    zoom, turned by the angle, mirrored when flipped. Colour jitter and cutout follow as NDArray
    ops: brightness, contrast, saturation (then clipped to 0..255), normalisation, cutout.
    Settings round-trip through ``dataclasses.asdict`` and JSON (``Augment(**d)``).

    Attributes:
        flip: mirror left-right with probability 1/2.
        translate: maximum shift as a fraction of the image side (0.125: about 4 px of 32,
            the standard CIFAR pad-4-and-crop), drawn uniformly per image and axis.
        scale: range (low, high) of the random zoom factor; >1 zooms in, <1 zooms out (the
            border is then zero padded).
        crop_area: random resized crop: range (low, high) of the crop's area as a fraction of
            the image, in (0, 1] (``(0.08, 1.0)`` is the ImageNet recipe); None: no crop. The
            crop lies inside the image and is resized to the output size.
        crop_ratio: range (low, high) of the crop's aspect ratio width / height, drawn
            log-uniformly (``(3/4, 4/3)`` is the ImageNet recipe); used with ``crop_area``.
        rotation: maximum rotation in degrees, in [0, 180], drawn uniformly in
            [-rotation, rotation]; positive turns the content counter-clockwise as displayed
            (like ``np.rot90``); corners that come from outside the image are zero padded.
            Angles are exact on square images (all gluonft loaders store square images).
        brightness, contrast, saturation: colour jitter strength s >= 0: a factor f drawn
            uniformly in [max(0, 1 - s), 1 + s] per image multiplies the pixel values
            (brightness), scales the deviation from the image's mean grey (contrast), or scales
            the deviation of each pixel from its own grey (saturation); 0 switches it off.
        cutout: number of square holes per image, >= 0; each hole is set to 0 after
            normalisation (the mean colour), centred uniformly in the image and allowed to
            reach over the border (DeVries & Taylor, 2017).
        cutout_size: side of a hole as a fraction of the output side, in (0, 1].

    Example:
        >>> Augment(flip=True, translate=0.125).is_identity
        False
        >>> Augment.preset("strong").rotation
        15.0
        >>> Augment.none().is_identity
        True
    """

    flip: bool = True
    translate: float = 0.125
    scale: Tuple[float, float] = (1.0, 1.0)
    crop_area: Optional[Tuple[float, float]] = None
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    cutout: int = 0
    cutout_size: float = 0.25

    def __post_init__(self):
        if not isinstance(self.flip, (bool, np.bool_)):
            raise ValueError(f"Augment flip must be True or False, got {self.flip!r}")
        if not 0 <= self.translate < 1:
            raise ValueError(f"Augment translate must be in [0, 1) (a fraction of the image "
                             f"side), got {self.translate!r}")
        low, high = _pair("scale", self.scale)
        if not 0 < low <= high:
            raise ValueError(f"Augment scale must satisfy 0 < low <= high, got {self.scale!r}")
        # frozen dataclass: normalise through object.__setattr__ so equality and hashing work
        # whether the caller passed a list or a tuple.
        object.__setattr__(self, "scale", (low, high))
        object.__setattr__(self, "flip", bool(self.flip))
        object.__setattr__(self, "translate", float(self.translate))
        if self.crop_area is not None:
            low, high = _pair("crop_area", self.crop_area)
            if not 0 < low <= high <= 1:
                raise ValueError(f"Augment crop_area must satisfy 0 < low <= high <= 1 (a "
                                 f"fraction of the image area), got {self.crop_area!r}")
            object.__setattr__(self, "crop_area", (low, high))
        low, high = _pair("crop_ratio", self.crop_ratio)
        if not 0 < low <= high:
            raise ValueError(f"Augment crop_ratio must satisfy 0 < low <= high (width / "
                             f"height), got {self.crop_ratio!r}")
        object.__setattr__(self, "crop_ratio", (low, high))
        for name, upper in (("rotation", 180), ("brightness", None), ("contrast", None),
                            ("saturation", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not value >= 0 or (upper is not None and value > upper):
                bound = f"[0, {upper}]" if upper is not None else ">= 0"
                raise ValueError(f"Augment {name} must be a number {bound}, got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.cutout, bool) or not isinstance(self.cutout, (int, np.integer)) \
                or self.cutout < 0:
            raise ValueError(f"Augment cutout must be an integer >= 0 (holes per image), "
                             f"got {self.cutout!r}")
        object.__setattr__(self, "cutout", int(self.cutout))
        if isinstance(self.cutout_size, bool) or not isinstance(
                self.cutout_size, (int, float, np.floating)) or not 0 < self.cutout_size <= 1:
            raise ValueError(f"Augment cutout_size must be in (0, 1] (a fraction of the image "
                             f"side), got {self.cutout_size!r}")
        object.__setattr__(self, "cutout_size", float(self.cutout_size))

    @classmethod
    def none(cls) -> "Augment":
        """No augmentation (for evaluation).

        Returns:
            Augment whose sampled affines are all the identity.

        Example:
            >>> sample_augment(2, Augment.none(), np.random.RandomState(0))[0].tolist()
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        """
        return cls(flip=False, translate=0.0, scale=(1.0, 1.0))

    @classmethod
    def preset(cls, name: str) -> "Augment":
        """A named recipe.

        * ``"none"``: nothing (`Augment.none`).
        * ``"light"``: flip + shift by up to 1/8 of the side: the CIFAR standard and the
          default ``Augment()``.
        * ``"standard"``: flip + random resized crop (area 25-100 %, ratio 3/4-4/3) + colour
          jitter 0.2: the usual fine-tuning recipe for photos.
        * ``"strong"``: flip + random resized crop (area 8-100 %, the ImageNet recipe) +
          rotation up to 15 degrees + colour jitter 0.4 + one cutout hole of 1/4 side.

        Args:
            name: one of `PRESETS`.

        Returns:
            the Augment.

        Example:
            >>> Augment.preset("light") == Augment()
            True
        """
        if name == "none":
            return cls.none()
        if name == "light":
            return cls()
        if name == "standard":
            return cls(flip=True, translate=0.0, crop_area=(0.25, 1.0), brightness=0.2,
                       contrast=0.2, saturation=0.2)
        if name == "strong":
            return cls(flip=True, translate=0.0, crop_area=(0.08, 1.0), rotation=15.0,
                       brightness=0.4, contrast=0.4, saturation=0.4, cutout=1,
                       cutout_size=0.25)
        raise ValueError(f"unknown augmentation preset {name!r}: expected one of "
                         f"{', '.join(PRESETS)}")

    @property
    def is_identity(self) -> bool:
        """True when every sampled affine is the identity and no pixel op is on."""
        return (not self.flip and self.translate == 0 and self.scale == (1.0, 1.0)
                and not self._extended)

    @property
    def pixel_ops(self) -> bool:
        """True when colour jitter or cutout is on: sampled rows then carry more than the affine."""
        return bool(self.brightness or self.contrast or self.saturation or self.cutout)

    @property
    def _extended(self) -> bool:
        # Any option beyond the original three (flip, translate, scale).
        return self.crop_area is not None or self.rotation > 0 or self.pixel_ops


def _pair(name: str, value) -> Tuple[float, float]:
    try:
        low, high = (float(s) for s in value)
    except (TypeError, ValueError):
        raise ValueError(f"Augment {name} must be a pair (low, high), got {value!r}") from None
    return low, high


def sample_augment(n: int, augment: Augment, rng: np.random.RandomState) -> np.ndarray:
    """Draw the random parameters of ``augment`` for ``n`` images, one float32 row per image.

    Columns of a row:

    * 0-5: the affine ``[a, b, tx, d, e, ty]`` for ``mx.nd.GridGenerator(transform_type=
      'affine')``, mapping output grid coordinates (in [-1, 1]) to input ones:
      ``(x_in, y_in) = (a x + b y + tx, d x + e y + ty)``. It is R(angle) . diag(crop width,
      crop height) / zoom . diag(flip, 1), shifted by the crop centre plus the translation.
    * only when ``augment.pixel_ops``: 6-8 the brightness, contrast and saturation factors
      (1 = unchanged), then 4 per cutout hole: ``x0, y0, x1, y1`` as fractions of the output
      side (pixel ``(i, j)`` is in the hole when ``x0 <= (j + .5) / S < x1`` and
      ``y0 <= (i + .5) / S < y1``).

    Random numbers: 4 * n are drawn first (flip, two shifts, zoom) whatever the settings, so
    runs using only flip / translate / scale draw exactly what earlier versions drew and give
    the same batches. When any other option is on, (8 + 2 * cutout) * n more are drawn in one
    call (crop area, ratio, two centre coordinates, angle, three colour factors, hole centres),
    so switching one of those options off keeps the others' numbers.

    Args:
        n: number of images, >= 0.
        augment: the settings.
        rng: the only source of randomness.

    Returns:
        float32 array (n, 6), or (n, 9 + 4 * cutout) with pixel ops.

    Example:
        >>> sample_augment(256, Augment(), np.random.RandomState(0)).shape
        (256, 6)
        >>> sample_augment(8, Augment.preset("strong"), np.random.RandomState(0)).shape
        (8, 13)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_augment n must be an integer >= 0, got {n!r}")
    if not isinstance(augment, Augment):
        raise ValueError(f"sample_augment augment must be an Augment, got {augment!r}")
    u = rng.random_sample((n, 4))
    flip = np.where(augment.flip & (u[:, 0] < 0.5), -1.0, 1.0)
    shift = 2.0 * augment.translate
    tx = (2.0 * u[:, 1] - 1.0) * shift
    ty = (2.0 * u[:, 2] - 1.0) * shift
    low, high = augment.scale
    zoom = low + (high - low) * u[:, 3]
    affine = np.zeros((n, 6), np.float64)
    if not augment._extended:
        # The original formulas, kept verbatim so that old runs stay bit-identical.
        affine[:, 0] = flip / zoom
        affine[:, 2] = tx
        affine[:, 4] = 1.0 / zoom
        affine[:, 5] = ty
        return affine.astype(np.float32)

    v = rng.random_sample((n, 8 + 2 * augment.cutout))
    width = height = np.ones(n)
    cx = cy = np.zeros(n)
    if augment.crop_area is not None:
        a_low, a_high = augment.crop_area
        area = a_low + (a_high - a_low) * v[:, 0]
        r_low, r_high = np.log(augment.crop_ratio)
        ratio = np.exp(r_low + (r_high - r_low) * v[:, 1])
        # Sides as fractions of the image side; a side longer than the image is cut to it.
        width = np.minimum(1.0, np.sqrt(area * ratio))
        height = np.minimum(1.0, np.sqrt(area / ratio))
        # The crop's centre, in grid units, anywhere that keeps the crop inside the image.
        cx = (2.0 * v[:, 2] - 1.0) * (1.0 - width)
        cy = (2.0 * v[:, 3] - 1.0) * (1.0 - height)
    angle = np.deg2rad((2.0 * v[:, 4] - 1.0) * augment.rotation)
    cos, sin = np.cos(angle), np.sin(angle)
    sx, sy = flip * width / zoom, height / zoom
    affine[:, 0] = cos * sx
    affine[:, 1] = -sin * sy
    affine[:, 2] = cx + tx
    affine[:, 3] = sin * sx
    affine[:, 4] = cos * sy
    affine[:, 5] = cy + ty
    if not augment.pixel_ops:
        return affine.astype(np.float32)

    factors = []
    for column, strength in ((5, augment.brightness), (6, augment.contrast),
                             (7, augment.saturation)):
        f_low, f_high = max(0.0, 1.0 - strength), 1.0 + strength
        factors.append(f_low + (f_high - f_low) * v[:, column] if strength else np.ones(n))
    half = augment.cutout_size / 2.0
    holes = []
    for k in range(augment.cutout):
        hx, hy = v[:, 8 + 2 * k], v[:, 9 + 2 * k]
        holes += [hx - half, hy - half, hx + half, hy + half]
    return np.column_stack([affine] + factors + holes).astype(np.float32)



class BatchTransform:
    """uint8 NHWC images on a device -> normalised float32 NCHW at a given size.

    Computes ``((x / 255) - mean) / std`` of the images resampled through the affine (see the
    module docstring for the coordinate conventions). Non-square images are stretched to a
    square. One instance serves any device (it keeps its constants per device).

    Args:
        image_size: output side S, an integer >= 8.
        mean: per-channel RGB mean on the 0..1 scale (3 values).
        std: per-channel RGB standard deviation (3 positive values).

    Example:
        >>> tf = BatchTransform(32, CIFAR_MEAN, CIFAR_STD)
        >>> x = mx.nd.zeros((4, 32, 32, 3), dtype='uint8')
        >>> aff = mx.nd.array(sample_augment(4, Augment(), np.random.RandomState(0)))
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
        self._normalisation: dict = {}  # device -> (scale, shift)
        self._base_grid: dict = {}  # device -> the grid's x and y coordinates

    def __repr__(self) -> str:
        return f"BatchTransform(image_size={self.image_size}, mean={self.mean}, std={self.std})"

    def _affine_normalisation(self, ctx) -> Tuple[mx.nd.NDArray, mx.nd.NDArray]:
        """(scale, shift) of shape (1, 3, 1, 1) on ``ctx``, made once per device: two host
        arrays and copies per batch were a measurable share of a small net's step."""
        cache = self._normalisation
        key = str(ctx)
        if key not in cache:
            scale = [1.0 / (255.0 * d) for d in self.std]
            shift = [-m / d for m, d in zip(self.mean, self.std)]
            cache[key] = (to_device(scale, ctx).reshape((1, 3, 1, 1)),
                          to_device(shift, ctx).reshape((1, 3, 1, 1)))
        return cache[key]

    def _affine_grid(self, affine: mx.nd.NDArray) -> mx.nd.NDArray:
        """The sampling grid (B, 2, S, S) of ``affine`` (B, 6), as ``mx.nd.GridGenerator(
        transform_type="affine")`` makes it, in elementwise ops.

        GridGenerator computes it as one matrix product through MXNet's bundled OpenBLAS
        (0.3.13, OpenMP build), which deadlocks when two engine threads call it at once, as
        a batch split over several CPU contexts (cpu(0), cpu(1)) does: it hung the suite on
        CI twice (tests/test_transforms.py has the reproduction). Elementwise ops share no
        such state; the coordinates are GridGenerator's (x = -1 + j * 2 / (S - 1)), so the
        identity and flips still land on pixel centres exactly."""
        ctx, s = affine.context, self.image_size
        key = str(ctx)
        if key not in self._base_grid:
            steps = mx.nd.arange(s, ctx=ctx, dtype="float32") * (2.0 / (s - 1)) - 1
            self._base_grid[key] = (steps.reshape((1, 1, 1, s)), steps.reshape((1, 1, s, 1)))
        xs, ys = self._base_grid[key]
        a, b, tx, d, e, ty = mx.nd.split(affine.reshape((-1, 6, 1, 1)), num_outputs=6, axis=1)

        def row(p, q, t):  # p * x + q * y + t, per image: (B, 1, S, S)
            return mx.nd.broadcast_add(mx.nd.broadcast_add(mx.nd.broadcast_mul(p, xs),
                                                           mx.nd.broadcast_mul(q, ys)), t)
        return mx.nd.concat(row(a, b, tx), row(d, e, ty), dim=1)

    def __call__(self, images: mx.nd.NDArray,
                 affine: Optional[Union[mx.nd.NDArray, np.ndarray]] = None) -> mx.nd.NDArray:
        """Transform one batch.

        Args:
            images: uint8 NDArray (B, H, W, 3), RGB.
            affine: float32 rows from `sample_augment` (NDArray, or numpy copied to the
                images' device): (B, 6) affines, or (B, 9 + 4 * holes) with colour factors
                and cutout holes; or None for the identity.

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
        rows = None
        if affine is not None or h != s or w != s:
            if affine is None:
                affine = np.tile(np.asarray(IDENTITY_AFFINE, np.float32), (b, 1))
            if isinstance(affine, np.ndarray):
                affine = to_device(affine, ctx)
            cols = affine.shape[1] if affine.ndim == 2 else -1
            if affine.ndim != 2 or affine.shape[0] != b or not (
                    cols == 6 or (cols >= 9 and (cols - 9) % 4 == 0)):
                raise ValueError(f"BatchTransform affine must have shape ({b}, 6) for {b} "
                                 f"images (or ({b}, 9 + 4 * holes) with colour factors and "
                                 f"cutout holes), got {affine.shape}")
            rows = affine.as_in_context(ctx).astype("float32")
            x = mx.nd.BilinearSampler(x, self._affine_grid(rows[:, :6] if cols > 6 else rows))
            if cols == 6:
                rows = None
        if rows is not None:
            x = _jitter(x, rows[:, 6:9])
        # One fused multiply-add instead of /255, -mean, /std.
        scale, shift = self._affine_normalisation(ctx)
        x = mx.nd.broadcast_add(mx.nd.broadcast_mul(x, scale), shift)
        if rows is not None and rows.shape[1] > 9:
            x = _cutout(x, rows[:, 9:])
        return x


def _jitter(x: mx.nd.NDArray, factors: mx.nd.NDArray) -> mx.nd.NDArray:
    """Brightness, contrast, saturation on (B, 3, S, S) pixel values 0..255; factors (B, 3)."""
    b = x.shape[0]
    brightness, contrast, saturation = (factors[:, i].reshape((b, 1, 1, 1)) for i in range(3))
    weights = to_device(GRAY_WEIGHTS, x.context).reshape((1, 3, 1, 1))
    x = mx.nd.broadcast_mul(x, brightness)
    # Contrast blends with the image's mean grey, saturation with each pixel's own grey:
    # f * x + (1 - f) * grey, which is x exactly when f = 1.
    grey = mx.nd.broadcast_mul(x, weights).sum(axis=1, keepdims=True).mean(axis=(2, 3),
                                                                           keepdims=True)
    x = mx.nd.broadcast_add(mx.nd.broadcast_mul(x, contrast),
                            mx.nd.broadcast_mul(grey, 1 - contrast))
    grey = mx.nd.broadcast_mul(x, weights).sum(axis=1, keepdims=True)
    x = mx.nd.broadcast_add(mx.nd.broadcast_mul(x, saturation),
                            mx.nd.broadcast_mul(grey, 1 - saturation))
    # Real pixels stay in 0..255; without the clip a bright image would leave the range the
    # network saw in pretraining.
    return mx.nd.clip(x, 0, 255)


def _cutout(x: mx.nd.NDArray, holes: mx.nd.NDArray) -> mx.nd.NDArray:
    """Zero the holes (B, 4 * k: x0, y0, x1, y1 fractions of the side) of (B, C, S, S)."""
    b, _, s, _ = x.shape
    centres = (mx.nd.arange(s, ctx=x.context) + 0.5) / s
    cols, rows = centres.reshape((1, 1, 1, s)), centres.reshape((1, 1, s, 1))
    inside = None
    for k in range(holes.shape[1] // 4):
        x0, y0, x1, y1 = (holes[:, 4 * k + i].reshape((b, 1, 1, 1)) for i in range(4))
        in_x = mx.nd.broadcast_greater_equal(cols, x0) * mx.nd.broadcast_lesser(cols, x1)
        in_y = mx.nd.broadcast_greater_equal(rows, y0) * mx.nd.broadcast_lesser(rows, y1)
        hole = mx.nd.broadcast_mul(in_x, in_y)  # (B, 1, S, S)
        inside = hole if inside is None else mx.nd.maximum(inside, hole)
    return mx.nd.broadcast_mul(x, 1 - inside)


def to_device(values, ctx, dtype="float32") -> mx.nd.NDArray:
    """A host array (or list) as an NDArray on ``ctx``, without waiting for the device.

    ``mx.nd.array`` waits until every operation already queued on the engine has run, so one
    call per batch keeps the host from preparing the next batch while the device computes.
    Here a private host copy is handed to MXNet (zero-copy) and moved asynchronously.

    Example:
        >>> to_device(np.arange(3), mx.cpu(), "int32").asnumpy()
        array([0, 1, 2], dtype=int32)
    """
    host = np.array(values, dtype=dtype, order="C")  # a copy MXNet may keep reading later
    array = mx.nd.from_numpy(host, zero_copy=True)
    return array if array.context == ctx else array.as_in_context(ctx)


def _three(name: str, values: Sequence[float]) -> Tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"BatchTransform {name} must be 3 numbers (R, G, B), got {values!r}")
    if len(values) != 3:
        raise ValueError(f"BatchTransform {name} must have 3 values (R, G, B), got {len(values)}: "
                         f"{values}")
    return values
