"""Resizing layers that work with dynamic (``None``) spatial sizes (DeepLabv3+, PSPNet, U-Net)."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

_METHODS = ("bilinear", "nearest", "bicubic", "area")


@keras.saving.register_keras_serializable(package="kerasseg")
class ResizeToMatch(keras.layers.Layer):
    """Resizes ``x`` to the spatial size of a reference tensor.

    Inputs ``[x, reference]``: ``x`` ``(B, h, w, C)``, ``reference``
    ``(B, H, W, ...)``; output ``(B, H, W, C)`` in ``x``'s dtype. Works when the
    sizes are only known at run time.

    Args:
        interpolation: ``"bilinear"`` (half-pixel centres), ``"nearest"``,
            ``"bicubic"`` or ``"area"``.
    """

    def __init__(self, interpolation: str = "bilinear", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if interpolation not in _METHODS:
            raise ValueError(f"interpolation must be one of {_METHODS}, got {interpolation!r}")
        self.interpolation = interpolation

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        x, reference = inputs
        resized = tf.image.resize(x, tf.shape(reference)[1:3], method=self.interpolation)
        return tf.cast(resized, x.dtype)

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple:
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(interpolation=self.interpolation)
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class ResizeByFactor(keras.layers.Layer):
    """Upsamples ``(B, h, w, C)`` to ``(B, h * fh, w * fw, C)`` by interpolation.

    The bilinear upsampling of the model zoo. ``keras.layers.UpSampling2D(...,
    interpolation="bilinear")`` cannot be traced with unknown spatial sizes on
    Keras 3.14-3.15 (its size check, added in keras-team/keras#22079, evaluates a
    symbolic tensor as a Python bool), so whole-image prediction and a SavedModel
    with ``(None, None, C)`` inputs would fail; this layer computes the size in
    the graph. Output dtype is ``x``'s dtype.

    Args:
        factor: int or ``(fh, fw)``, positive.
        interpolation: ``"bilinear"`` (half-pixel centres), ``"nearest"``,
            ``"bicubic"`` or ``"area"``.
    """

    def __init__(self, factor: int | Sequence[int] = 2, interpolation: str = "bilinear", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(factor, int):
            factor = (factor, factor)
        factor = tuple(int(v) for v in factor)
        if len(factor) != 2 or min(factor) < 1:
            raise ValueError(f"factor must be a positive int or pair, got {factor!r}")
        if interpolation not in _METHODS:
            raise ValueError(f"interpolation must be one of {_METHODS}, got {interpolation!r}")
        self.factor = factor
        self.interpolation = interpolation

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        size = tf.shape(inputs)[1:3] * tf.constant(self.factor, tf.int32)
        return tf.cast(tf.image.resize(inputs, size, method=self.interpolation), inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def scaled(n: int | None, f: int) -> int | None:
            return None if n is None else n * f

        return (input_shape[0], scaled(input_shape[1], self.factor[0]), scaled(input_shape[2], self.factor[1]),
                input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(factor=list(self.factor), interpolation=self.interpolation)
        return config


def _pooling_matrix(size: tf.Tensor, bins: int, dtype: tf.DType) -> tf.Tensor:
    """``(bins, size)`` matrix averaging the adaptive bins of a length-``size`` axis.

    Bin ``i`` covers ``[floor(i*size/bins), ceil((i+1)*size/bins))`` (PyTorch's
    ``AdaptiveAvgPool`` convention, so bins overlap when ``size % bins != 0``).
    """
    size = tf.cast(size, tf.int64)
    i = tf.range(bins, dtype=tf.int64)[:, None]
    start = (i * size) // bins
    end = -((-(i + 1) * size) // bins)
    pos = tf.range(size, dtype=tf.int64)[None, :]
    mask = tf.cast((pos >= start) & (pos < end), tf.float32)
    matrix = mask / tf.reduce_sum(mask, axis=1, keepdims=True)
    return tf.cast(matrix, dtype)


@keras.saving.register_keras_serializable(package="kerasseg")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average pooling to a fixed ``output_size`` grid whatever the input size.

    Input ``(B, H, W, C)``; output ``(B, oh, ow, C)``. Bin ``i`` along an axis of
    length ``n`` averages ``[floor(i*n/o), ceil((i+1)*n/o))``; ``H``/``W`` may be
    unknown until run time and need not be multiples of the output size (the
    pyramid pooling module of PSPNet pools to 1, 2, 3 and 6 bins).

    Args:
        output_size: int or ``(oh, ow)``.
    """

    def __init__(self, output_size: int | Sequence[int] = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        output_size = tuple(int(v) for v in output_size)
        if len(output_size) != 2 or min(output_size) < 1:
            raise ValueError(f"output_size must be a positive int or pair, got {output_size!r}")
        self.output_size = output_size

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(inputs)
        rows = _pooling_matrix(shape[1], self.output_size[0], inputs.dtype)
        cols = _pooling_matrix(shape[2], self.output_size[1], inputs.dtype)
        return tf.einsum("ih,bhwc,jw->bijc", rows, inputs, cols)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(output_size=list(self.output_size))
        return config
