"""Ground-truth handling shared by the losses and the streaming metrics."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def labels_and_weights(
    y_true: Any, sample_weight: Any, *, num_classes: int, ignore_index: int | None, spatial_dims: int = 2
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """Normalize ``y_true`` and ``sample_weight`` to the ``(B, H, W)`` convention
    (``(B, D, H, W)`` for volumes).

    Args:
        y_true: class ids ``(B, H, W)`` or ``(B, H, W, 1)`` (volumes: ``(B, D, H, W)``
            or ``(B, D, H, W, 1)``), any numeric dtype.
        sample_weight: ``None`` or per-pixel weights of the same spatial shape.
        num_classes: labels outside ``[0, num_classes)`` are invalid.
        ignore_index: this label is invalid too (``None``: no ignore label).
        spatial_dims: 2 for images, 3 for volumes (the rank of the prediction minus 2).

    Returns:
        ``labels`` int32 ``(B, H, W)`` (as given, invalid ones not yet replaced),
        ``valid`` bool ``(B, H, W)``, and the weights as float32 ``(B, H, W)``
        (``None`` when no ``sample_weight`` was given).
    """
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == spatial_dims + 2:
        y_true = tf.squeeze(y_true, axis=-1)
    if y_true.dtype.is_floating:
        y_true = tf.round(y_true)
    labels = tf.cast(y_true, tf.int32)
    valid = tf.logical_and(labels >= 0, labels < num_classes)
    if ignore_index is not None:
        valid = tf.logical_and(valid, tf.not_equal(labels, ignore_index))
    weights = None
    if sample_weight is not None:
        weights = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
        if weights.shape.rank == spatial_dims + 2:
            weights = tf.squeeze(weights, axis=-1)
        weights = tf.broadcast_to(weights, tf.shape(labels))
    return labels, valid, weights
