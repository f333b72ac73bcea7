"""3D augmentation of volume patches as stateless TensorFlow ops.

Every transform is a deterministic function of a ``[2]`` int seed (the pipeline
derives it from ``(seed, element index)``), applied identically to the image
``(d, h, w, C)`` and the labels ``(d, h, w)``; array axes are ``(D, H, W)`` =
``(z, y, x)`` as everywhere in kerasseg.

Spatial transforms:

* flips along each axis (``flip_z``, ``flip_y``, ``flip_x``) and in-plane
  turns by multiples of 90 degrees about the depth axis (``rot90``; only 180
  degrees when the patch is not square in-plane, so shapes are kept): exact
  voxel permutations, labels permuted like the image;
* small rotations (``rotation``: about the depth axis up to ``rotation_max``
  degrees, about the two in-plane axes up to ``rotation_out_of_plane``, 0 by
  default because a resampled grid is often anisotropic), scaling
  (``scale``, zoom factor log-uniform in ``scale_range``, > 1 magnifies) and
  elastic deformation (``elastic``: a coarse ``elastic_grid``^3 field of
  N(0, ``elastic_sigma`` voxels) displacements upsampled trilinearly). These
  three share one sampling grid, so the image is interpolated once:
  trilinear for the image, nearest neighbour for the labels (never a blend
  of class ids: the labels keep only their ids and 255).

:func:`augment_patch` samples that grid from the **whole** volume around the
patch, so rotating or shrinking a patch shows real tissue from around it;
only sampling positions outside the volume (whose nearest voxel is not in
the volume) become ``ignore`` (255: weight 0, the model is not taught that
invented voxels are background) with image value 0, the same as the padding
of a volume smaller than the patch in :mod:`kerasseg.data.volumes`
(``fill_mask="background"`` labels them 0 instead). :func:`augment_volume`
is the same on a single patch (everything outside it is outside).

Intensity transforms act on the normalized image (after z-scoring) in the
order noise, blur, brightness, contrast, gamma, never on the labels:
Gaussian noise with std ``U(0, noise_std)`` times the patch's std, Gaussian
blur with sigma ``U(*blur_sigma)`` voxels, multiplicative brightness
``U(*brightness_range)``, contrast (deviations from the mean scaled by
``U(*contrast_range)``, clipped back to the patch's min..max), and gamma
(the patch mapped to [0, 1] over its min..max, raised to ``U(*gamma_range)``
log-uniform, mapped back), each per channel.

Configuration (the training config's ``data.augmentation`` dict goes to
:meth:`Augment3DConfig.from_dict`)::

    Augment3DConfig.from_dict({"flip_x": 0.5, "rotation": 0.3, "rotation_max": 20})
    Augment3DConfig.from_dict({"rotation": {"p": 0.3, "max": 20}, "gamma": 0.3})
    Augment3DConfig.from_dict({"preset": "none", "flip_z": 0.5})

Each ``<name>`` field is the probability of that transform; its parameters are
``<name>_<param>`` fields (or the keys of a nested dict, ``p`` = probability).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from kerasseg.schema import IGNORE_INDEX

# What a volume training config augments with unless it says otherwise (and what
# ``kerasseg plan`` writes): the defaults of Augment3DConfig, probabilities only.
RECOMMENDED_AUGMENTATION_3D: dict[str, float] = {
    "flip_z": 0.5, "flip_y": 0.5, "flip_x": 0.5, "rot90": 0.2, "rotation": 0.2, "scale": 0.2,
    "elastic": 0.2, "brightness": 0.15, "contrast": 0.15, "gamma": 0.3, "noise": 0.1, "blur": 0.1,
}

_TRANSFORMS = ("flip_z", "flip_y", "flip_x", "rot90", "rotation", "scale", "elastic", "brightness", "contrast",
               "gamma", "noise", "blur")
_RANGES = ("scale_range", "brightness_range", "contrast_range", "gamma_range", "blur_sigma")


@dataclasses.dataclass
class Augment3DConfig:
    """Probabilities and parameters of each 3D augmentation (see the module docstring).

    Attributes:
        flip_z, flip_y, flip_x: probability of a flip along the depth, height, width axis.
        rot90: probability of an in-plane turn by a random multiple of 90 degrees
            (180 only when the patch height and width differ).
        rotation: probability of a small rotation: about the depth axis by
            ``U(-rotation_max, rotation_max)`` degrees, about the height and
            width axes by ``U(-rotation_out_of_plane, +)`` degrees (rotations are
            in voxel coordinates: keep ``rotation_out_of_plane`` 0 on anisotropic grids).
        scale: probability of a zoom by a log-uniform factor in ``scale_range``
            (> 1 magnifies the content).
        elastic: probability of an elastic deformation: N(0, ``elastic_sigma``
            voxels) displacements on an ``elastic_grid`` per axis coarse grid,
            upsampled trilinearly to the patch.
        brightness: probability of multiplying the image by ``U(*brightness_range)``.
        contrast: probability of scaling deviations from the patch mean by
            ``U(*contrast_range)`` (clipped to the patch's min..max).
        gamma: probability of a gamma curve with exponent log-uniform in
            ``gamma_range`` on the patch's own min..max range.
        noise: probability of Gaussian noise with std ``U(0, noise_std)`` times the
            patch's intensity std.
        blur: probability of a Gaussian blur with sigma ``U(*blur_sigma)`` voxels.
        fill_mask: label of positions sampled from outside the volume by
            rotation/scale/elastic: ``"ignore"`` (default; weight 0) or ``"background"``.
    """

    flip_z: float = 0.5
    flip_y: float = 0.5
    flip_x: float = 0.5
    rot90: float = 0.2
    rotation: float = 0.2
    rotation_max: float = 15.0
    rotation_out_of_plane: float = 0.0
    scale: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.25)
    elastic: float = 0.2
    elastic_grid: int = 4
    elastic_sigma: float = 2.0
    brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise: float = 0.1
    noise_std: float = 0.1
    blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    fill_mask: str = "ignore"

    def __post_init__(self) -> None:
        for name in _TRANSFORMS:
            p = _number(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augmentation: probability {name}={p} is outside [0, 1]")
            setattr(self, name, p)
        for name in _RANGES:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
                raise ValueError(f"augmentation: {name} must be [min, max], got {value!r}")
            lo, hi = (float(v) for v in value)
            if not 0 < lo <= hi or not math.isfinite(hi):
                raise ValueError(f"augmentation: {name} must be [min, max] with 0 < min <= max, got {[lo, hi]}")
            setattr(self, name, (lo, hi))
        for name, top in (("rotation_max", 180.0), ("rotation_out_of_plane", 180.0), ("elastic_sigma", None),
                          ("noise_std", None)):
            value = _number(self, name)
            if not 0.0 <= value or (top is not None and value > top) or not math.isfinite(value):
                raise ValueError(f"augmentation: {name} must be a number in [0, {top or 'inf'}), got {value}")
            setattr(self, name, value)
        if isinstance(self.elastic_grid, bool) or int(self.elastic_grid) != self.elastic_grid or self.elastic_grid < 2:
            raise ValueError(f"augmentation: elastic_grid must be an integer >= 2, got {self.elastic_grid!r}")
        self.elastic_grid = int(self.elastic_grid)
        if self.fill_mask not in ("ignore", "background"):
            raise ValueError(f"augmentation: fill_mask must be 'ignore' or 'background', got {self.fill_mask!r}")

    @classmethod
    def none(cls) -> "Augment3DConfig":
        """Every probability 0 (identity)."""
        probabilities: dict[str, Any] = {name: 0.0 for name in _TRANSFORMS}
        return cls(**probabilities)

    @classmethod
    def full(cls) -> "Augment3DConfig":
        """Every transform with probability 0.5 (benchmarks, timing)."""
        probabilities: dict[str, Any] = {name: 0.5 for name in _TRANSFORMS}
        return cls(**probabilities)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Augment3DConfig":
        """Build from a training config's ``data.augmentation`` dict (flat or nested).

        Unspecified fields keep the defaults (:data:`RECOMMENDED_AUGMENTATION_3D`);
        ``{"rotation": {"p": 0.3, "max": 20}}`` is ``{"rotation": 0.3, "rotation_max": 20}``;
        ``{"preset": "none"|"default"|"full"}`` starts from a preset.

        Raises:
            ValueError: an unknown key (naming the nearest valid one), a
                probability outside [0, 1] or a malformed range.
        """
        import difflib

        data = dict(data or {})
        preset = data.pop("preset", "default")
        presets: dict[str, Callable[[], Augment3DConfig]] = {"none": cls.none, "default": cls, "full": cls.full}
        base = presets.get(preset)
        if base is None:
            raise ValueError(f"augmentation: unknown preset {preset!r} (none, default, full)")
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                if key not in _TRANSFORMS:
                    raise ValueError(f"augmentation: {key!r} is not a transform; nested dicts are for {_TRANSFORMS}")
                for sub, sub_value in value.items():
                    flat[key if sub in ("p", "prob", "probability") else f"{key}_{sub}"] = sub_value
            else:
                flat[key] = value
        known = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(flat) - set(known))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                if key in _2D_KEYS:
                    hints.append(f"{key!r} (a 2D augmentation key; for volumes use {_2D_KEYS[key]})")
                elif close:
                    hints.append(f"{key!r} (did you mean {close[0]!r}?)")
                else:
                    hints.append(repr(key))
            raise ValueError(f"augmentation: unknown key(s) {', '.join(hints)}; valid keys: {known}")
        return dataclasses.replace(base(), **flat)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) > 0 for name in _TRANSFORMS)

    @property
    def warps(self) -> bool:
        """Whether any resampling transform (rotation, scale, elastic) can fire."""
        return self.rotation > 0 or self.scale > 0 or self.elastic > 0


# 2D AugmentConfig keys -> their volume counterparts, for the error message
_2D_KEYS = {
    "hflip": "'flip_x'", "vflip": "'flip_y'", "affine": "'rotation' and 'scale'", "affine_rotation": "'rotation_max'",
    "affine_scale": "'scale_range'", "affine_translate": "nothing (patches are placed at random)",
    "affine_shear": "nothing (no shear in 3D)", "brightness_delta": "'brightness_range' (multiplicative)",
    "elastic_interpolation": "nothing (the field is upsampled trilinearly)",
}


def _number(config: Any, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"augmentation: {name} must be a number, got {value!r}")
    return float(value)


def as_augment3d_config(augment: Any) -> Augment3DConfig | None:
    """``False``/``None`` -> ``None``; ``True`` -> defaults; dict -> ``from_dict``; a preset name; a config as is."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return Augment3DConfig()
    if isinstance(augment, Augment3DConfig):
        return augment
    if isinstance(augment, Mapping):
        return Augment3DConfig.from_dict(augment)
    if isinstance(augment, str):
        return Augment3DConfig.from_dict({"preset": augment})
    raise TypeError(f"augment must be a bool, dict, preset name or Augment3DConfig, got {type(augment).__name__}")


def augment_volume(image, labels, *, config: Augment3DConfig, seed, ignore_index: int = IGNORE_INDEX):
    """Augment one patch (or small volume) with ``config``.

    Args:
        image: ``(d, h, w, C)`` float intensities (normalized).
        labels: ``(d, h, w)`` integer class ids (``ignore_index`` = ignore).
        config: an :class:`Augment3DConfig`.
        seed: ``[2]`` int32/int64 stateless seed.
        ignore_index: the ignore label, kept by every spatial transform and
            given to positions sampled from outside the input.

    Returns:
        ``(image float32 (d, h, w, C), labels (d, h, w) of the input dtype)``.
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    labels = tf.convert_to_tensor(labels)
    static = labels.shape.as_list()
    size = tuple(static) if None not in static else tf.shape(labels)
    return augment_patch(image, labels, tf.zeros([3], tf.int32), size, config=config, seed=seed,
                         ignore_index=ignore_index)


def augment_patch(volume, labels, start, patch_size, *, config: Augment3DConfig | None, seed,
                  ignore_index: int = IGNORE_INDEX):
    """The ``patch_size`` patch of ``volume`` at ``start``, through ``config``'s augmentations.

    Rotation, scaling and elastic deformation turn about the patch centre and
    sample the whole ``volume`` (see the module docstring); without them (or
    with ``config=None``) this is a plain slice.

    Args:
        volume: ``(D, H, W, C)`` float image, at least ``patch_size`` along each axis.
        labels: ``(D, H, W)`` integer class ids.
        start: int32 ``(3,)`` corner of the patch in ``volume``.
        patch_size: ``(d, h, w)`` Python ints (static shapes) or an int32 tensor.
        config: an :class:`Augment3DConfig` or ``None``.
        seed: ``[2]`` stateless seed.

    Returns:
        ``(image float32 (d, h, w, C), labels (d, h, w))``.
    """
    import tensorflow as tf

    volume = tf.cast(volume, tf.float32)
    channels = volume.shape[-1]
    static = isinstance(patch_size, (tuple, list))
    size = tf.constant([int(s) for s in patch_size], tf.int32) if static else tf.cast(patch_size, tf.int32)
    start = tf.cast(start, tf.int32)
    fill_label = ignore_index if config is None or config.fill_mask == "ignore" else 0
    seeds = tf.random.experimental.stateless_split(seed, 24)

    def gate(i: int, p: float):
        return tf.random.stateless_uniform([], seeds[i]) < p

    def plain():
        return (tf.slice(volume, tf.concat([start, [0]], 0), tf.concat([size, [-1]], 0)),
                tf.slice(labels, start, size))

    def fix(image, lab):
        if static:
            image.set_shape([*patch_size, channels])
            lab.set_shape(list(patch_size))
        return image, lab

    if config is None or not config.warps:
        image, lab = fix(*plain())
    else:
        never = tf.constant(False)
        do_rotate = gate(0, config.rotation) if config.rotation > 0 else never
        do_scale = gate(1, config.scale) if config.scale > 0 else never
        do_elastic = gate(2, config.elastic) if config.elastic > 0 else never
        image, lab = tf.cond(
            do_rotate | do_scale | do_elastic,
            lambda: _warp(volume, labels, start, size, seeds[3], config, do_rotate, do_scale, do_elastic,
                          fill_label),
            plain,
        )
        image, lab = fix(image, lab)
    if config is None:
        return image, lab

    for i, (name, axis) in enumerate((("flip_z", 0), ("flip_y", 1), ("flip_x", 2))):
        p = getattr(config, name)
        if p > 0:
            image, lab = tf.cond(gate(4 + i, p), lambda a=axis: (tf.reverse(image, [a]), tf.reverse(lab, [a])),
                                 lambda: (image, lab))
            image, lab = fix(image, lab)
    if config.rot90 > 0:
        if static:
            square = tf.constant(patch_size[1] == patch_size[2])
        else:
            square = tf.equal(size[1], size[2])
        k = tf.where(square, tf.random.stateless_uniform([], seeds[8], minval=1, maxval=4, dtype=tf.int32), 2)
        k = tf.where(gate(7, config.rot90), k, 0)
        # tf.image.rot90 turns (h, w) of a (batch, h, w, c) tensor: the depth axis is the batch
        image = tf.image.rot90(image, k)
        lab = tf.image.rot90(lab[..., tf.newaxis], k)[..., 0]
        image, lab = fix(image, lab)

    image = _intensity(image, config, seeds)
    if static:
        image.set_shape([*patch_size, channels])
    return image, lab


def _log_uniform(seed, bounds):
    import tensorflow as tf

    lo, hi = (math.log(b) for b in bounds)
    return tf.exp(tf.random.stateless_uniform([], seed, lo, hi))


def _rotation_matrix(seed, config: Augment3DConfig):
    """``(3, 3)`` rotation acting on ``(z, y, x)`` coordinate vectors."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 3)
    deg = math.pi / 180.0

    def angle(i, limit):
        return tf.random.stateless_uniform([], seeds[i], -limit, limit) * deg if limit > 0 else tf.constant(0.0)

    a, b, g = angle(0, config.rotation_max), angle(1, config.rotation_out_of_plane), angle(2,
                                                                                          config.rotation_out_of_plane)
    one, zero = tf.constant(1.0), tf.constant(0.0)
    ca, sa, cb, sb, cg, sg = tf.cos(a), tf.sin(a), tf.cos(b), tf.sin(b), tf.cos(g), tf.sin(g)
    about_z = tf.stack([[one, zero, zero], [zero, ca, -sa], [zero, sa, ca]])  # turns (y, x): in-plane
    about_y = tf.stack([[cb, zero, sb], [zero, one, zero], [-sb, zero, cb]])  # turns (z, x)
    about_x = tf.stack([[cg, -sg, zero], [sg, cg, zero], [zero, zero, one]])  # turns (z, y)
    return about_z @ about_y @ about_x


def _warp(volume, labels, start, size, seed, config: Augment3DConfig, do_rotate, do_scale, do_elastic,
          fill_label: int):
    """Sample the patch grid, rotated/scaled about its centre and elastically displaced, from ``volume``."""
    import tensorflow as tf

    from kerasseg.data.resample import resample

    seeds = tf.random.experimental.stateless_split(seed, 3)
    src_shape = tf.shape(labels)
    src_f = tf.cast(src_shape, tf.float32)
    size_f = tf.cast(size, tf.float32)
    centre_out = (size_f - 1.0) / 2.0
    centre_src = tf.cast(start, tf.float32) + centre_out

    matrix = tf.where(do_rotate, _rotation_matrix(seeds[0], config), tf.eye(3))
    zoom = _log_uniform(seeds[1], config.scale_range) if config.scale > 0 else tf.constant(1.0)
    matrix = matrix / tf.where(do_scale, zoom, 1.0)

    zz, yy, xx = tf.meshgrid(tf.range(size_f[0]), tf.range(size_f[1]), tf.range(size_f[2]), indexing="ij")
    rel = tf.stack([zz, yy, xx], axis=-1) - centre_out  # (d, h, w, 3)
    src = centre_src + tf.einsum("dhwj,ij->dhwi", rel, matrix)
    if config.elastic > 0:
        def displacement():
            g = config.elastic_grid
            coarse = tf.random.stateless_normal([g, g, g, 3], seeds[2], stddev=config.elastic_sigma)
            return resample(coarse, size, method="linear")

        src = tf.cond(do_elastic, lambda: src + displacement(), lambda: src)

    # the nearest source voxel decides what is inside the volume, for image and labels alike
    nearest = tf.round(src)
    inside = tf.reduce_all((nearest >= 0.0) & (nearest <= src_f - 1.0), axis=-1)
    near = tf.cast(tf.clip_by_value(nearest, 0.0, src_f - 1.0), tf.int32)
    h, w = src_shape[1], src_shape[2]

    def flat_index(z, y, x):
        return (z * h + y) * w + x

    new_labels = tf.gather(tf.reshape(labels, [-1]), flat_index(near[..., 0], near[..., 1], near[..., 2]))
    new_labels = tf.where(inside, new_labels, tf.cast(fill_label, labels.dtype))

    src = tf.clip_by_value(src, 0.0, src_f - 1.0)
    low_f = tf.floor(src)
    frac = src - low_f
    low = tf.cast(low_f, tf.int32)
    high = tf.minimum(low + 1, src_shape - 1)
    flat = tf.reshape(volume, [-1, tf.shape(volume)[-1]])
    z0, y0, x0 = low[..., 0], low[..., 1], low[..., 2]
    z1, y1, x1 = high[..., 0], high[..., 1], high[..., 2]
    fz, fy, fx = frac[..., 0:1], frac[..., 1:2], frac[..., 2:3]

    def at(z, y, x):
        return tf.gather(flat, flat_index(z, y, x))

    def along_x(z, y):
        return at(z, y, x0) * (1.0 - fx) + at(z, y, x1) * fx

    front = along_x(z0, y0) * (1.0 - fy) + along_x(z0, y1) * fy
    back = along_x(z1, y0) * (1.0 - fy) + along_x(z1, y1) * fy
    new_image = front * (1.0 - fz) + back * fz
    new_image = tf.where(inside[..., tf.newaxis], new_image, 0.0)
    return new_image, new_labels


def _intensity(image, config: Augment3DConfig, seeds):
    """Noise, blur, brightness, contrast, gamma (per channel, on the patch's own statistics)."""
    import tensorflow as tf

    axes = [0, 1, 2]

    def gate(i: int, p: float):
        return tf.random.stateless_uniform([], seeds[i]) < p

    if config.noise > 0:
        std = tf.math.reduce_std(image, axis=axes, keepdims=True)
        sigma = tf.random.stateless_uniform([], seeds[10], 0.0, config.noise_std) * std
        image = tf.cond(gate(9, config.noise),
                        lambda: image + tf.random.stateless_normal(tf.shape(image), seeds[11]) * sigma,
                        lambda: image)
    if config.blur > 0:
        sigma = tf.random.stateless_uniform([], seeds[13], *config.blur_sigma)
        image = tf.cond(gate(12, config.blur), lambda: gaussian_blur3d(image, sigma, max_sigma=config.blur_sigma[1]),
                        lambda: image)
    if config.brightness > 0:
        factor = tf.random.stateless_uniform([], seeds[15], *config.brightness_range)
        image = tf.where(gate(14, config.brightness), image * factor, image)
    if config.contrast > 0:
        factor = tf.random.stateless_uniform([], seeds[17], *config.contrast_range)
        mean = tf.reduce_mean(image, axis=axes, keepdims=True)
        lo = tf.reduce_min(image, axis=axes, keepdims=True)
        hi = tf.reduce_max(image, axis=axes, keepdims=True)
        contrasted = tf.clip_by_value(mean + factor * (image - mean), lo, hi)
        image = tf.where(gate(16, config.contrast), contrasted, image)
    if config.gamma > 0:
        exponent = _log_uniform(seeds[19], config.gamma_range)

        def curve():
            lo = tf.reduce_min(image, axis=axes, keepdims=True)
            span = tf.maximum(tf.reduce_max(image, axis=axes, keepdims=True) - lo, 1e-6)
            return lo + span * tf.pow(tf.clip_by_value((image - lo) / span, 0.0, 1.0), exponent)

        image = tf.cond(gate(18, config.gamma), curve, lambda: image)
    return image


def gaussian_blur3d(image, sigma, *, max_sigma: float = 1.0):
    """Separable Gaussian blur of ``image`` ``(d, h, w, C)``, each channel on its own.

    ``sigma`` (voxels) may be a scalar tensor; the kernel radius is
    ``ceil(3 * max_sigma)``. At the borders the kernel is renormalized over the
    voxels inside the patch (a normalized convolution), so edges are neither
    darkened nor mirrored, whatever the patch size.
    """
    import tensorflow as tf

    radius = max(1, int(math.ceil(3.0 * float(max_sigma))))
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    x = tf.transpose(image, [3, 0, 1, 2])[..., tf.newaxis]  # (C, d, h, w, 1): channels as the batch
    weight = tf.ones_like(x[:1])
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[axis] = 2 * radius + 1
        k = tf.reshape(kernel, shape)
        x = tf.nn.conv3d(x, k, strides=[1, 1, 1, 1, 1], padding="SAME")
        weight = tf.nn.conv3d(weight, k, strides=[1, 1, 1, 1, 1], padding="SAME")
    return tf.transpose((x / weight)[..., 0], [1, 2, 3, 0])


__all__ = ["RECOMMENDED_AUGMENTATION_3D", "Augment3DConfig", "as_augment3d_config", "augment_patch",
           "augment_volume", "gaussian_blur3d"]
