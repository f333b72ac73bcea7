"""Resampling volumes between voxel grids, as TensorFlow ops (tf.data, models and serving graphs alike).

Trilinear interpolation is separable: resizing ``(H, W)`` of every slice with
bilinear interpolation and then ``D`` of every row gives the trilinear result.
Both passes use half-pixel centres (voxel ``i`` covers ``[i, i + 1)`` of the
old grid scaled onto the new one), so a volume resampled to a new spacing and
back lands on its own voxel centres. Labels use nearest neighbour, never a
blend of class ids.
"""

from __future__ import annotations

from typing import Any, Sequence

RESAMPLE_METHODS = ("linear", "nearest")


def shape_for_spacing(shape: Any, spacing: Any, target_spacing: Sequence[float]) -> Any:
    """The ``(D, H, W)`` grid covering the same extent at ``target_spacing``.

    Args:
        shape: int ``(3,)`` current ``(D, H, W)`` (tensor or sequence).
        spacing: float ``(3,)`` current voxel size in mm, ``(z, y, x)``.
        target_spacing: float ``(3,)`` wanted voxel size in mm, ``(z, y, x)``.

    Returns:
        int32 ``(3,)`` tensor: ``round(shape * spacing / target_spacing)``, at least 1.
    """
    import tensorflow as tf

    shape = tf.cast(tf.convert_to_tensor(shape), tf.float32)
    spacing = tf.cast(tf.convert_to_tensor(spacing), tf.float32)
    target = tf.constant([float(v) for v in target_spacing], tf.float32)
    return tf.maximum(tf.cast(tf.round(shape * spacing / target), tf.int32), 1)


def resample(volume: Any, target_shape: Any, *, method: str = "linear") -> Any:
    """Resample ``volume`` onto a ``target_shape`` grid spanning the same extent.

    Args:
        volume: ``(D, H, W, C)`` tensor; float for ``linear``, any numeric type
            for ``nearest`` (the type is kept).
        target_shape: int ``(3,)`` ``(D', H', W')`` (tensor or sequence).
        method: ``"linear"`` (trilinear, images) or ``"nearest"`` (labels).

    Returns:
        ``(D', H', W', C)`` tensor (float32 for ``linear``, the input type for ``nearest``).
    """
    import tensorflow as tf

    if method not in RESAMPLE_METHODS:
        raise ValueError(f"resample method must be one of {RESAMPLE_METHODS}, got {method!r}")
    volume = tf.convert_to_tensor(volume)
    if volume.shape.rank is not None and volume.shape.rank != 4:
        raise ValueError(f"resample expects a (D, H, W, C) volume, got shape {volume.shape}")
    target = tf.cast(tf.convert_to_tensor(target_shape), tf.int32)
    kind = tf.image.ResizeMethod.BILINEAR if method == "linear" else tf.image.ResizeMethod.NEAREST_NEIGHBOR
    dtype = volume.dtype
    x = tf.cast(volume, tf.float32) if method == "linear" else volume

    def passes() -> Any:
        # (D, H, W, C): resize every slice in-plane, then every (D, W') plane along D
        y = tf.image.resize(x, target[1:3], method=kind)
        y = tf.transpose(y, [1, 0, 2, 3])  # (H', D, W', C)
        y = tf.image.resize(y, tf.stack([target[0], target[2]]), method=kind)
        return tf.transpose(y, [1, 0, 2, 3])

    same = tf.reduce_all(tf.equal(tf.shape(x)[:3], target))
    out = tf.cond(same, lambda: tf.cast(x, tf.float32 if method == "linear" else dtype),
                  lambda: tf.cast(passes(), tf.float32 if method == "linear" else dtype))
    return out


__all__ = ["RESAMPLE_METHODS", "resample", "shape_for_spacing"]
