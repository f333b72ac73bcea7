"""Atrous Spatial Pyramid Pooling (Chen et al., DeepLabv3 2017 / DeepLabv3+ 2018)."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kerasseg")
class ASPP(keras.layers.Layer):
    """Atrous spatial pyramid pooling with image-level features.

    Input ``(B, H, W, C)`` backbone features; output ``(B, H, W, filters)``.
    Branches, each conv -> batch norm -> ReLU with ``filters`` channels:

    * a 1x1 convolution;
    * one 3x3 atrous convolution per rate in ``rates`` (DeepLabv3: 6/12/18 at
      output stride 16, 12/24/36 at output stride 8; the DeepLab v2 ASPP rates
      6/12/18/24 are ``rates=(6, 12, 18, 24)``), depthwise-separable when
      ``separable=True`` (DeepLabv3+ with Xception);
    * with ``image_pooling=True``, global average pooling -> 1x1 conv, broadcast
      back to ``H x W`` (a bilinear up-sampling of a 1x1 map is a broadcast).

    The branches are concatenated and projected by a 1x1 conv -> BN -> ReLU
    (-> dropout when ``dropout > 0``).

    Args:
        filters: channels of every branch and of the output (256 in the paper).
        rates: dilation rates of the 3x3 branches.
        image_pooling: add the image-level (global pooling) branch.
        separable: use depthwise-separable atrous convolutions.
        dropout: dropout rate after the projection (0.1 in DeepLab's code).
        batchnorm_momentum, batchnorm_epsilon: batch-norm hyper-parameters.
        kernel_initializer: initializer of the convolutions.
    """

    def __init__(
        self,
        filters: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        image_pooling: bool = True,
        separable: bool = False,
        dropout: float = 0.1,
        batchnorm_momentum: float = 0.99,
        batchnorm_epsilon: float = 1e-3,
        kernel_initializer: Any = "he_normal",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"filters must be >= 1, got {filters}")
        rates = [int(r) for r in rates]
        if any(r < 1 for r in rates):
            raise ValueError(f"ASPP rates must be positive integers, got {rates}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.filters = int(filters)
        self.rates = rates
        self.image_pooling = bool(image_pooling)
        self.separable = bool(separable)
        self.dropout = float(dropout)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _init(self) -> keras.initializers.Initializer:
        return self.kernel_initializer.__class__.from_config(self.kernel_initializer.get_config())

    def _bn(self, name: str) -> keras.layers.BatchNormalization:
        return keras.layers.BatchNormalization(
            momentum=self.batchnorm_momentum, epsilon=self.batchnorm_epsilon,
            dtype=self.dtype_policy, name=name,
        )

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        out_shape = (*input_shape[:-1], self.filters)
        f = self.filters
        self.branches: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []
        conv = keras.layers.Conv2D(f, 1, use_bias=False, kernel_initializer=self._init(),
                                   dtype=self.dtype_policy, name="aspp_1x1")
        self.branches.append((conv, self._bn("aspp_1x1_bn")))
        for rate in self.rates:
            if self.separable:
                conv = keras.layers.SeparableConv2D(
                    f, 3, padding="same", dilation_rate=rate, use_bias=False,
                    depthwise_initializer=self._init(), pointwise_initializer=self._init(),
                    dtype=self.dtype_policy, name=f"aspp_rate{rate}",
                )
            else:
                conv = keras.layers.Conv2D(
                    f, 3, padding="same", dilation_rate=rate, use_bias=False,
                    kernel_initializer=self._init(), dtype=self.dtype_policy, name=f"aspp_rate{rate}",
                )
            self.branches.append((conv, self._bn(f"aspp_rate{rate}_bn")))
        for conv, bn in self.branches:
            conv.build(input_shape)
            bn.build(out_shape)
        if self.image_pooling:
            self.pool_conv = keras.layers.Conv2D(f, 1, use_bias=False, kernel_initializer=self._init(),
                                                 dtype=self.dtype_policy, name="aspp_pool")
            self.pool_bn = self._bn("aspp_pool_bn")
            self.pool_conv.build((input_shape[0], 1, 1, input_shape[-1]))
            self.pool_bn.build((input_shape[0], 1, 1, f))
        n_branches = len(self.branches) + int(self.image_pooling)
        self.project = keras.layers.Conv2D(f, 1, use_bias=False, kernel_initializer=self._init(),
                                           dtype=self.dtype_policy, name="aspp_project")
        self.project_bn = self._bn("aspp_project_bn")
        self.project.build((*input_shape[:-1], f * n_branches))
        self.project_bn.build(out_shape)
        self.project_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="aspp_dropout")
        self.built = True

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        outputs = [tf.nn.relu(bn(conv(inputs), training=training)) for conv, bn in self.branches]
        if self.image_pooling:
            pooled = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
            pooled = tf.nn.relu(self.pool_bn(self.pool_conv(pooled), training=training))
            shape = tf.shape(inputs)
            outputs.append(tf.broadcast_to(pooled, tf.stack([shape[0], shape[1], shape[2], self.filters])))
        x = tf.concat(outputs, axis=-1)
        x = tf.nn.relu(self.project_bn(self.project(x), training=training))
        if self.dropout > 0:
            x = self.project_dropout(x, training=training)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*tuple(input_shape)[:-1], self.filters)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            filters=self.filters,
            rates=list(self.rates),
            image_pooling=self.image_pooling,
            separable=self.separable,
            dropout=self.dropout,
            batchnorm_momentum=self.batchnorm_momentum,
            batchnorm_epsilon=self.batchnorm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
