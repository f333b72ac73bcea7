"""Image/mask augmentation as stateless TensorFlow ops.

Every transform is applied identically to the image and the mask and is a
deterministic function of a ``[2]`` int seed, so a pipeline that derives the
seed from ``(seed, element index)`` gives the same batches for the same seed
on every run, whatever the number of parallel calls.

Geometric transforms (flips, 90-degree rotations, random affine, elastic
deformation) resample the image bilinearly and the mask with nearest
neighbour, so masks keep only their original labels (class ids and 255).
Affine and elastic share one resampling (their sampling grids are composed),
so the image is interpolated once.

**Out-of-image pixels** (areas an affine or elastic warp pulls in from outside
the source) become ``ignore`` (255) in the mask by default, so they get zero
sample weight and the model is neither trained to call invented pixels
background nor anything else; the image there is filled with the image's
minimum intensity. ``fill_mask="background"`` labels them 0 instead.

Intensity transforms (brightness, contrast, gamma, Gaussian noise, blur) work
on intensities of any range relative to the image's own min..max range; in
``load_dataset`` they run after normalization (which is computed on the whole
stored image), so a brightness or contrast change survives into what the
model sees instead of being undone by a per-image z-score.

Configuration::

    AugmentConfig.from_dict({"hflip": 0.5, "elastic": 0.3, "elastic_sigma": 10})
    AugmentConfig.from_dict({"affine": {"p": 0.5, "rotation": 20}, "gamma": 0.3})

Each ``<name>`` field is the probability of that transform; its parameters are
``<name>_<param>`` fields (or the keys of a nested dict).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

# What a training config augments with unless it says otherwise (``data.augmentation``), and what
# ``kerasseg plan`` starts from: flips and 90-degree turns, small affine warps, elastic deformation
# as in the U-Net paper, intensity jitter. ``data.augmentation: {}`` trains without augmentation.
RECOMMENDED_AUGMENTATION: dict[str, float] = {
    "hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "affine": 0.3, "elastic": 0.3,
    "brightness": 0.3, "contrast": 0.3, "gamma": 0.2, "noise": 0.1, "blur": 0.0,
}

_TRANSFORMS = ("hflip", "vflip", "rot90", "affine", "elastic", "brightness", "contrast", "gamma", "noise", "blur")


@dataclasses.dataclass
class AugmentConfig:
    """Probabilities and parameters of each augmentation.

    Attributes:
        hflip, vflip: probability of a horizontal / vertical flip.
        rot90: probability of a rotation by a random multiple of 90 degrees
            (only 180 degrees for non-square images, so shapes are kept).
        affine: probability of a random affine warp with
            ``affine_rotation`` (max abs degrees), ``affine_scale`` (min, max zoom),
            ``affine_translate`` (max abs shift, fraction of the size),
            ``affine_shear`` (max abs degrees).
        elastic: probability of an elastic deformation as in the U-Net paper:
            displacements drawn from N(0, ``elastic_sigma`` pixels) on an
            ``elastic_grid`` x ``elastic_grid`` coarse grid, interpolated to
            full resolution with ``elastic_interpolation`` ("bicubic"/"bilinear").
        brightness: probability of adding ``U(-brightness_delta, +delta)`` times
            the image's intensity range.
        contrast: probability of scaling deviations from the mean by
            ``U(*contrast_range)``.
        gamma: probability of a gamma curve with exponent ``U(*gamma_range)``
            on the image's own min..max range.
        noise: probability of Gaussian noise with std ``noise_std`` times the range.
        blur: probability of a Gaussian blur with sigma ``U(*blur_sigma)`` pixels.
        fill_mask: label of out-of-image pixels after affine/elastic warps:
            ``"ignore"`` (default; zero sample weight) or ``"background"``.
    """

    hflip: float = 0.5
    vflip: float = 0.0
    rot90: float = 0.0
    affine: float = 0.5
    affine_rotation: float = 15.0
    affine_scale: tuple[float, float] = (0.9, 1.1)
    affine_translate: float = 0.05
    affine_shear: float = 5.0
    elastic: float = 0.0
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    elastic_interpolation: str = "bicubic"
    brightness: float = 0.3
    brightness_delta: float = 0.1
    contrast: float = 0.3
    contrast_range: tuple[float, float] = (0.8, 1.25)
    gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.8, 1.25)
    noise: float = 0.2
    noise_std: float = 0.03
    blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    fill_mask: str = "ignore"

    def __post_init__(self) -> None:
        for name in _TRANSFORMS:
            p = float(getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augment: probability {name}={p} is outside [0, 1]")
            setattr(self, name, p)
        for name in ("affine_scale", "contrast_range", "gamma_range", "blur_sigma"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not 0 < lo <= hi:
                raise ValueError(f"augment: {name} must be (min, max) with 0 < min <= max, got {(lo, hi)}")
            setattr(self, name, (lo, hi))
        if int(self.elastic_grid) < 2:
            raise ValueError(f"augment: elastic_grid must be >= 2, got {self.elastic_grid}")
        if self.elastic_interpolation not in ("bicubic", "bilinear"):
            raise ValueError("augment: elastic_interpolation must be 'bicubic' or 'bilinear'")
        if self.fill_mask not in ("ignore", "background"):
            raise ValueError("augment: fill_mask must be 'ignore' or 'background'")

    @classmethod
    def none(cls) -> "AugmentConfig":
        """Every probability 0 (identity)."""
        probabilities: dict[str, Any] = {name: 0.0 for name in _TRANSFORMS}
        return cls(**probabilities)

    @classmethod
    def full(cls) -> "AugmentConfig":
        """Everything on, elastic deformation included (used by the benchmark)."""
        return cls(hflip=0.5, vflip=0.5, rot90=0.5, affine=0.5, elastic=0.5, brightness=0.5,
                   contrast=0.5, gamma=0.5, noise=0.5, blur=0.3)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "AugmentConfig":
        """Build from a flat or nested dict; unspecified fields keep their defaults.

        ``{"affine": {"p": 0.5, "rotation": 20}}`` is the same as
        ``{"affine": 0.5, "affine_rotation": 20}``. ``{"preset": "none"|"default"|"full"}``
        starts from a preset.
        """
        data = dict(data or {})
        preset = data.pop("preset", "default")
        presets: dict[str, Callable[[], AugmentConfig]] = {"none": cls.none, "default": cls, "full": cls.full}
        base = presets.get(preset)
        if base is None:
            raise ValueError(f"augment: unknown preset {preset!r} (none, default, full)")
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                if key not in _TRANSFORMS:
                    raise ValueError(f"augment: {key!r} is not a transform; nested dicts are for {_TRANSFORMS}")
                for sub, sub_value in value.items():
                    flat[key if sub in ("p", "prob", "probability") else f"{key}_{sub}"] = sub_value
            else:
                flat[key] = value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(flat) - known)
        if unknown:
            import difflib

            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"augment: unknown key(s) {', '.join(hints)}; valid keys: {sorted(known)}")
        return dataclasses.replace(base(), **flat)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) > 0 for name in _TRANSFORMS)


def as_augment_config(augment: Any) -> AugmentConfig | None:
    """``False``/``None`` -> ``None``; ``True`` -> defaults; dict -> ``from_dict``; config as is."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return AugmentConfig()
    if isinstance(augment, AugmentConfig):
        return augment
    if isinstance(augment, Mapping):
        return AugmentConfig.from_dict(augment)
    if isinstance(augment, str):
        return AugmentConfig.from_dict({"preset": augment})
    raise TypeError(f"augment must be a bool, dict, preset name or AugmentConfig, got {type(augment).__name__}")


def element_seed(seed: int, index):
    """The ``[2]`` stateless seed of element ``index`` under global ``seed``."""
    import tensorflow as tf

    base = tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def augment(image, mask, seed, config: AugmentConfig, *, ignore_index: int = 255):
    """Apply ``config`` to one example.

    Args:
        image: ``(H, W, C)`` float32 intensities (any range).
        mask: ``(H, W)`` integer labels (``ignore_index`` = ignore).
        seed: ``[2]`` int seed (see :func:`element_seed`).
        config: an :class:`AugmentConfig`.

    Returns:
        ``(image float32 (H, W, C), mask (H, W) same dtype)``.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    static_shape = image.shape
    mask_static = mask.shape
    seeds = tf.random.experimental.stateless_split(seed, 16)
    gate = lambda i, p: tf.random.stateless_uniform([], seeds[i]) < p  # noqa: E731

    lo = tf.reduce_min(image)
    hi = tf.reduce_max(image)
    rng = tf.maximum(hi - lo, 1e-6)

    if config.hflip > 0:
        image, mask = tf.cond(
            gate(0, config.hflip),
            lambda: (tf.reverse(image, [1]), tf.reverse(mask, [1])),
            lambda: (image, mask),
        )
    if config.vflip > 0:
        image, mask = tf.cond(
            gate(1, config.vflip),
            lambda: (tf.reverse(image, [0]), tf.reverse(mask, [0])),
            lambda: (image, mask),
        )
    if config.rot90 > 0:
        square = static_shape[0] is not None and static_shape[0] == static_shape[1]
        if square:
            k = tf.random.stateless_uniform([], seeds[3], minval=1, maxval=4, dtype=tf.int32)
        else:
            k = tf.constant(2)
        k = tf.where(gate(2, config.rot90), k, 0)
        image = tf.image.rot90(image, k)
        mask = tf.image.rot90(mask[..., tf.newaxis], k)[..., 0]
        image.set_shape(static_shape)
        mask.set_shape(mask_static)

    if config.affine > 0 or config.elastic > 0:
        do_affine = gate(4, config.affine) if config.affine > 0 else tf.constant(False)
        do_elastic = gate(5, config.elastic) if config.elastic > 0 else tf.constant(False)
        fill_label = ignore_index if config.fill_mask == "ignore" else 0
        image, mask = tf.cond(
            tf.logical_or(do_affine, do_elastic),
            lambda: _warp(image, mask, seeds[6], config, do_affine, do_elastic, lo, fill_label),
            lambda: (image, mask),
        )
        image.set_shape(static_shape)
        mask.set_shape(mask_static)

    if config.brightness > 0:
        delta = tf.random.stateless_uniform(
            [], seeds[7], -config.brightness_delta, config.brightness_delta
        )
        image = tf.where(gate(8, config.brightness), image + delta * rng, image)
    if config.contrast > 0:
        f = tf.random.stateless_uniform([], seeds[9], *config.contrast_range)
        mean = tf.reduce_mean(image)
        image = tf.where(gate(10, config.contrast), mean + f * (image - mean), image)
    if config.gamma > 0:
        g = _log_uniform(seeds[11], config.gamma_range)
        curved = lo + rng * tf.pow(tf.clip_by_value((image - lo) / rng, 0.0, 1.0), g)
        image = tf.where(gate(12, config.gamma), curved, image)
    if config.noise > 0:
        noise = tf.random.stateless_normal(tf.shape(image), seeds[13], stddev=config.noise_std) * rng
        image = tf.where(gate(14, config.noise), image + noise, image)
    if config.blur > 0:
        sigma = tf.random.stateless_uniform([], seeds[15], *config.blur_sigma)
        do_blur = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 99)) < config.blur
        image = tf.cond(do_blur, lambda: gaussian_blur(image, sigma, max_sigma=config.blur_sigma[1]), lambda: image)
        image.set_shape(static_shape)
    return image, mask


def _log_uniform(seed, bounds):
    import tensorflow as tf

    lo, hi = (math.log(b) for b in bounds)
    return tf.exp(tf.random.stateless_uniform([], seed, lo, hi))


def _warp(image, mask, seed, config: AugmentConfig, do_affine, do_elastic, fill_value, fill_label: int):
    """Resample image (bilinear) and mask (nearest) on a composed affine+elastic grid."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 6)
    shape = tf.shape(mask)
    h, w = shape[0], shape[1]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    cy, cx = (hf - 1.0) / 2.0, (wf - 1.0) / 2.0
    ys, xs = tf.meshgrid(tf.range(hf), tf.range(wf), indexing="ij")

    # forward affine F = R(theta) @ Shear @ S; we sample the source at F^-1 (dst - c - t) + c
    deg = math.pi / 180.0
    theta = tf.random.stateless_uniform([], seeds[0], -config.affine_rotation, config.affine_rotation) * deg
    shear = tf.random.stateless_uniform([], seeds[1], -config.affine_shear, config.affine_shear) * deg
    scale = _log_uniform(seeds[2], config.affine_scale)
    t = tf.random.stateless_uniform([2], seeds[3], -config.affine_translate, config.affine_translate)
    ty, tx = t[0] * hf, t[1] * wf
    c, s, sh = tf.cos(theta), tf.sin(theta), tf.tan(shear)
    # rows act on (y, x) column vectors
    f00, f01 = c * scale, (c * sh - s) * scale
    f10, f11 = s * scale, (s * sh + c) * scale
    det = f00 * f11 - f01 * f10
    m00, m01, m10, m11 = f11 / det, -f01 / det, -f10 / det, f00 / det
    dy, dx = ys - cy - ty, xs - cx - tx
    sy_aff = m00 * dy + m01 * dx + cy
    sx_aff = m10 * dy + m11 * dx + cx
    sy = tf.where(do_affine, sy_aff, ys)
    sx = tf.where(do_affine, sx_aff, xs)

    def _elastic():
        g = int(config.elastic_grid)
        coarse = tf.random.stateless_normal([1, g, g, 2], seeds[4], stddev=config.elastic_sigma)
        fine = tf.image.resize(coarse, [h, w], method=config.elastic_interpolation)[0]
        return fine[..., 0], fine[..., 1]

    zeros = tf.zeros_like(ys)
    ey, ex = tf.cond(do_elastic, _elastic, lambda: (zeros, zeros))
    sy, sx = sy + ey, sx + ex

    # nearest source pixel decides what is inside the image, for image and mask alike
    ry, rx = tf.round(sy), tf.round(sx)
    inside = (ry >= 0) & (ry <= hf - 1) & (rx >= 0) & (rx <= wf - 1)
    ri = tf.cast(tf.clip_by_value(ry, 0, hf - 1), tf.int32)
    rj = tf.cast(tf.clip_by_value(rx, 0, wf - 1), tf.int32)
    # flat-index gathers are much cheaper than gather_nd on CPU
    new_mask = tf.gather(tf.reshape(mask, [-1]), ri * w + rj)
    new_mask = tf.where(inside, new_mask, tf.cast(fill_label, mask.dtype))

    sy = tf.clip_by_value(sy, 0.0, hf - 1.0)
    sx = tf.clip_by_value(sx, 0.0, wf - 1.0)
    y0f, x0f = tf.floor(sy), tf.floor(sx)
    wy, wx = (sy - y0f)[..., tf.newaxis], (sx - x0f)[..., tf.newaxis]
    y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, h - 1), tf.minimum(x0 + 1, w - 1)
    flat = tf.reshape(image, [h * w, -1])

    def at(yi, xi):
        return tf.gather(flat, yi * w + xi)

    top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
    new_image = top * (1.0 - wy) + bottom * wy
    new_image = tf.where(inside[..., tf.newaxis], new_image, fill_value)
    return new_image, new_mask


def gaussian_blur(image, sigma, *, max_sigma: float = 3.0):
    """Separable Gaussian blur of ``image`` ``(H, W, C)`` with reflect padding.

    ``sigma`` may be a scalar tensor; the kernel radius is ``ceil(3 * max_sigma)``.
    """
    import tensorflow as tf

    radius = max(1, int(math.ceil(3.0 * float(max_sigma))))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    k = tf.exp(-0.5 * tf.square(x / sigma))
    k = k / tf.reduce_sum(k)
    channels = image.shape[-1]
    batched = image[tf.newaxis]
    batched = tf.pad(batched, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, channels, 1])
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(batched, ky, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, kx, [1, 1, 1, 1], "VALID")
    return out[0]


__all__ = ["RECOMMENDED_AUGMENTATION", "AugmentConfig", "as_augment_config", "augment", "element_seed", "gaussian_blur"]
