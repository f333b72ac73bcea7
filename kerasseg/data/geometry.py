"""Geometry policies as pure TensorFlow ops.

Images are ``(H, W, C)`` (or ``(B, H, W, C)`` where stated), masks ``(H, W)``
uint8/int class ids with ``255`` = ignore. Masks are always resampled with
nearest neighbour so no interpolated labels appear, and pixels that do not come
from the source image (padding) are marked ignore in the mask.

Policies used by :func:`kerasseg.data.load_dataset` (``geometry=``):

* ``"resize"``: resize to ``image_size`` (bilinear image, nearest mask).
* ``"random_crop"``: a fixed ``image_size`` patch; a ``foreground_fraction`` of
  the patches are centred on a random labelled (non-background, non-ignore)
  pixel, the rest are uniform (MONAI's positive/negative sampling). Images
  smaller than the patch are padded first.
* ``"center_crop"``: the central ``image_size`` patch (padded when smaller).
* ``"pad"``: pad bottom/right to a multiple of ``size_divisor`` (the model's
  stride) and keep the original content unscaled; crop predictions back with
  :func:`crop_to_size`. ``pad_to_multiple``/``crop_to_size`` are also what the
  export stage uses inside its serving graph.
"""

from __future__ import annotations

from typing import Sequence, overload

from kerasseg.schema import IGNORE_INDEX


@overload
def as_size(size: None) -> None: ...
@overload
def as_size(size: int | Sequence[int]) -> tuple[int, int]: ...
def as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``256`` -> ``(256, 256)``; ``(h, w)`` unchanged; ``None`` stays ``None``."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be an int or (height, width) of positive ints, got {size}")
    return size


def resize(image, mask, size: Sequence[int]):
    """Resize ``image`` (bilinear) and ``mask`` (nearest) to ``size = (h, w)``.

    Args:
        image: ``(H, W, C)`` any dtype; returned as float32.
        mask: ``(H, W)`` integer labels; returned with its dtype.
    """
    import tensorflow as tf

    h, w = as_size(size)
    image = tf.cast(image, tf.float32)
    same = tf.reduce_all(tf.equal(tf.shape(mask), [h, w]))  # already the right size: skip the resampling
    image, mask = tf.cond(
        same,
        lambda: (tf.identity(image), tf.identity(mask)),
        lambda: (
            tf.image.resize(image, [h, w], method="bilinear"),
            tf.image.resize(mask[..., tf.newaxis], [h, w], method="nearest")[..., 0],
        ),
    )
    image.set_shape([h, w, image.shape[-1]])
    mask.set_shape([h, w])
    return image, mask


def pad_to_multiple(x, multiple: int, *, constant_values=0, mode: str = "CONSTANT"):
    """Pad the bottom/right of ``x`` so height and width are multiples of ``multiple``.

    Args:
        x: ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)`` tensor (rank 2 is taken as a mask).
        multiple: the model's size divisor (e.g. 16 or 32).
        constant_values: fill value for ``mode="CONSTANT"``.
        mode: ``"CONSTANT"``, ``"REFLECT"`` or ``"SYMMETRIC"``.

    Returns:
        The padded tensor; the original content sits at ``[:H, :W]``, so
        :func:`crop_to_size` with the original height/width undoes it.
    """
    import tensorflow as tf

    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    x = tf.convert_to_tensor(x)
    rank = x.shape.rank
    h_axis = {2: 0, 3: 0, 4: 1}[rank]
    shape = tf.shape(x)
    h, w = shape[h_axis], shape[h_axis + 1]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    paddings = [[0, 0]] * rank
    paddings[h_axis] = [0, pad_h]
    paddings[h_axis + 1] = [0, pad_w]
    return tf.pad(x, paddings, mode=mode, constant_values=tf.cast(constant_values, x.dtype) if mode == "CONSTANT" else 0)


def crop_to_size(x, height, width):
    """Crop ``x`` back to ``[:height, :width]`` (inverse of :func:`pad_to_multiple`).

    ``x`` is ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)``; ``height``/``width``
    may be Python ints or scalar tensors.
    """
    rank = x.shape.rank
    if rank == 4:
        return x[:, :height, :width, :]
    return x[:height, :width]


def pad_to_at_least(image, mask, size: Sequence[int], *, ignore_index: int = IGNORE_INDEX):
    """Pad ``image`` with 0 and ``mask`` with ``ignore_index`` (bottom/right split evenly)
    until both are at least ``size = (h, w)``."""
    import tensorflow as tf

    h, w = as_size(size)
    shape = tf.shape(mask)
    pad_h = tf.maximum(h - shape[0], 0)
    pad_w = tf.maximum(w - shape[1], 0)
    top, left = pad_h // 2, pad_w // 2
    image = tf.pad(image, [[top, pad_h - top], [left, pad_w - left], [0, 0]])
    mask = tf.pad(
        mask, [[top, pad_h - top], [left, pad_w - left]], constant_values=tf.cast(ignore_index, mask.dtype)
    )
    return image, mask


def center_crop(image, mask, size: Sequence[int], *, ignore_index: int = IGNORE_INDEX):
    """Central ``size`` patch of ``image`` ``(H, W, C)`` and ``mask`` ``(H, W)``;
    pads first (mask with ``ignore_index``) when the image is smaller."""
    import tensorflow as tf

    h, w = as_size(size)
    image, mask = pad_to_at_least(image, mask, (h, w), ignore_index=ignore_index)
    shape = tf.shape(mask)
    y0 = (shape[0] - h) // 2
    x0 = (shape[1] - w) // 2
    image = image[y0 : y0 + h, x0 : x0 + w]
    mask = mask[y0 : y0 + h, x0 : x0 + w]
    image.set_shape([h, w, image.shape[-1]])
    mask.set_shape([h, w])
    return image, mask


def random_crop(
    image,
    mask,
    size: Sequence[int],
    seed,
    *,
    foreground_fraction: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
):
    """Random ``size`` patch with foreground-biased sampling (stateless).

    With probability ``foreground_fraction`` (when the mask has any labelled
    pixel, i.e. ``0 < label != ignore_index``) the patch is centred on a
    uniformly chosen labelled pixel (shifted to stay inside the image);
    otherwise its position is uniform.

    Args:
        image: ``(H, W, C)``.
        mask: ``(H, W)`` integer labels.
        size: patch ``(h, w)``.
        seed: shape ``[2]`` int seed for the stateless random ops.

    Returns:
        ``(image_patch (h, w, C), mask_patch (h, w))``.
    """
    import tensorflow as tf

    h, w = as_size(size)
    image, mask = pad_to_at_least(image, mask, (h, w), ignore_index=ignore_index)
    shape = tf.shape(mask)
    max_y = shape[0] - h
    max_x = shape[1] - w
    seeds = tf.random.experimental.stateless_split(seed, 4)

    labelled = tf.logical_and(mask > 0, mask != tf.cast(ignore_index, mask.dtype))
    coords = tf.where(labelled)  # (N, 2) int64
    n = tf.shape(coords, out_type=tf.int32)[0]
    want_fg = tf.random.stateless_uniform([], seeds[0]) < foreground_fraction
    use_fg = tf.logical_and(want_fg, n > 0)

    def _fg_offset():
        i = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=tf.maximum(n, 1), dtype=tf.int32)
        centre = tf.cast(coords[i], tf.int32)
        y = tf.clip_by_value(centre[0] - h // 2, 0, max_y)
        x = tf.clip_by_value(centre[1] - w // 2, 0, max_x)
        return y, x

    def _uniform_offset():
        y = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=max_y + 1, dtype=tf.int32)
        x = tf.random.stateless_uniform([], seeds[3], minval=0, maxval=max_x + 1, dtype=tf.int32)
        return y, x

    y0, x0 = tf.cond(use_fg, _fg_offset, _uniform_offset)
    image = image[y0 : y0 + h, x0 : x0 + w]
    mask = mask[y0 : y0 + h, x0 : x0 + w]
    image.set_shape([h, w, image.shape[-1]])
    mask.set_shape([h, w])
    return image, mask


GEOMETRY_POLICIES = ("resize", "random_crop", "center_crop", "pad")

__all__ = [
    "GEOMETRY_POLICIES",
    "as_size",
    "resize",
    "pad_to_multiple",
    "crop_to_size",
    "pad_to_at_least",
    "center_crop",
    "random_crop",
]
