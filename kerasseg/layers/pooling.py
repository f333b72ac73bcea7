"""Max pooling that records argmax indices, and the matching unpooling (SegNet).

SegNet (Badrinarayanan et al., 2017) stores, for every pooling window of the
encoder, the position of the maximum and the decoder places each value back at
exactly that position ("max-unpooling"), leaving the rest zero. This is not the
same as nearest-neighbour up-sampling, which copies a value to the whole window.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return value


@keras.saving.register_keras_serializable(package="kerasseg")
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """2D max pooling that also returns the flat argmax index of every maximum.

    Input ``(B, H, W, C)``; outputs ``[pooled, indices]`` with ``pooled`` of shape
    ``(B, H/sh, W/sw, C)`` (``"same"`` padding rounds up) and ``indices`` int64 of
    the same shape holding ``((b * H + y) * W + x) * C + c`` of the maximum in the
    input, i.e. the batch is included in the index (``tf.nn.max_pool_with_argmax``
    with ``include_batch_in_index=True``). Feed ``indices`` to
    :class:`MaxUnpooling2D`.

    Args:
        pool_size: window size (int or pair).
        strides: stride (int or pair); defaults to ``pool_size``.
        padding: ``"valid"`` or ``"same"``.
    """

    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        strides: int | tuple[int, int] | None = None,
        padding: str = "valid",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = _pair(strides if strides is not None else self.pool_size, "strides")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding

    def call(self, inputs: tf.Tensor) -> list[tf.Tensor]:
        pooled, indices = tf.nn.max_pool_with_argmax(
            inputs,
            ksize=[1, *self.pool_size, 1],
            strides=[1, *self.strides, 1],
            padding=self.padding.upper(),
            include_batch_in_index=True,
        )
        # The argmax is a position, not a differentiable quantity.
        return [pooled, tf.stop_gradient(indices)]

    def _out_dim(self, size: int | None, axis: int) -> int | None:
        if size is None:
            return None
        if self.padding == "same":
            return -(-size // self.strides[axis])
        return (size - self.pool_size[axis]) // self.strides[axis] + 1

    def compute_output_shape(self, input_shape: tuple) -> list[tuple]:
        shape = (input_shape[0], self._out_dim(input_shape[1], 0), self._out_dim(input_shape[2], 1), input_shape[3])
        return [shape, shape]

    def compute_output_spec(self, inputs: Any) -> list[keras.KerasTensor]:
        shape = self.compute_output_shape(tuple(inputs.shape))[0]
        return [
            keras.KerasTensor(shape, dtype=self.compute_dtype),
            keras.KerasTensor(shape, dtype="int64"),
        ]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class MaxUnpooling2D(keras.layers.Layer):
    """Places values back at the argmax positions recorded by :class:`MaxPoolingWithArgmax2D`.

    Inputs ``[values, indices]``, both ``(B, h, w, C)`` (``indices`` int64 from the
    pooling layer, batch included in the index); output ``(B, h*sh, w*sw, C)`` with
    every value at its recorded position and zeros elsewhere. ``size`` must equal
    the pooling's ``strides`` and the pooled input's height/width must have been a
    multiple of it (the model builders check this).

    Args:
        size: up-sampling factor (int or pair), the pooling stride.
    """

    def __init__(self, size: int | tuple[int, int] = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = _pair(size, "size")

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        values, indices = inputs
        shape = tf.shape(values, out_type=tf.int64)
        out_shape = tf.stack([shape[0], shape[1] * self.size[0], shape[2] * self.size[1], shape[3]])
        flat = tf.scatter_nd(
            tf.reshape(tf.cast(indices, tf.int64), [-1, 1]),
            tf.reshape(values, [-1]),
            tf.reduce_prod(out_shape)[None],
        )
        return tf.reshape(flat, out_shape)

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple:
        b, h, w, c = input_shape[0]
        return (
            b,
            None if h is None else h * self.size[0],
            None if w is None else w * self.size[1],
            c,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(size=list(self.size))
        return config
