"""Additive attention gate (Oktay et al., 2018, "Attention U-Net")."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


def _resize_linear(x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Bilinear (rank 4) or trilinear (rank 5) resize of ``x`` to the spatial size in the shape ``like``.

    Trilinear interpolation is separable: ``tf.image.resize`` over (H, W) of every
    depth slice, then over (D, W') of every row, with the same half-pixel
    convention on all three axes.
    """
    if x.shape.rank == 4:
        return tf.image.resize(x, like[1:3], method="bilinear")
    shape = tf.shape(x)
    b, d, c = shape[0], shape[1], shape[4]
    depth, height, width = like[1], like[2], like[3]
    planes = tf.image.resize(tf.reshape(x, tf.concat([[b * d], shape[2:]], 0)), [height, width], method="bilinear")
    planes = tf.reshape(planes, [b, d, height, width, c])
    rows = tf.reshape(tf.transpose(planes, [0, 2, 1, 3, 4]), [b * height, d, width, c])  # (B*H', D, W', C)
    rows = tf.image.resize(rows, [depth, width], method="bilinear")
    return tf.transpose(tf.reshape(rows, [b, height, depth, width, c]), [0, 2, 1, 3, 4])


@keras.saving.register_keras_serializable(package="kerasseg")
class AttentionGate(keras.layers.Layer):
    """Additive attention gate that re-weights a skip connection.

    Inputs ``[x, g]``: ``x`` the skip features ``(B, H, W, Cx)`` and ``g`` the
    gating signal from the coarser decoder level ``(B, H/s, W/s, Cg)`` with
    ``s = subsample``. Following Oktay et al. (2018, eq. 1-2)::

        q = psi(relu(W_x x + W_g g + b_g)) + b_psi      # theta_x: k=s, stride s
        alpha = sigmoid(q)                              # (B, H/s, W/s, 1)
        y = W(upsample(alpha) * x)                      # 1x1 conv + BN, (B, H, W, Cx)

    Output ``(B, H, W, Cx)``, or ``[y, alpha_upsampled]`` with
    ``return_attention=True`` (``alpha`` at the resolution of ``x``).

    Volumes work the same, one rank up (the paper's own 3D setting):
    ``x`` ``(B, D, H, W, Cx)`` and ``g`` ``(B, D/s, H/s, W/s, Cg)`` use 3D
    convolutions and trilinear upsampling; the rank is read from ``x`` when
    the layer is built.

    Args:
        intermediate_channels: channels of the joint ``W_x x + W_g g`` space
            (``None``: ``Cx // 2`` as in the authors' code).
        subsample: resolution ratio between ``x`` and ``g`` (2 in a U-Net).
        output_projection: apply the final 1x1 conv + batch norm ``W``.
        return_attention: also return the attention coefficients.
        batchnorm_momentum: momentum of the projection's batch norm.
        kernel_initializer: initializer of the convolutions.
    """

    def __init__(
        self,
        intermediate_channels: int | None = None,
        subsample: int = 2,
        output_projection: bool = True,
        return_attention: bool = False,
        batchnorm_momentum: float = 0.99,
        kernel_initializer: Any = "he_normal",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if intermediate_channels is not None and int(intermediate_channels) < 1:
            raise ValueError(f"intermediate_channels must be >= 1, got {intermediate_channels}")
        if int(subsample) < 1:
            raise ValueError(f"subsample must be >= 1, got {subsample}")
        self.intermediate_channels = None if intermediate_channels is None else int(intermediate_channels)
        self.subsample = int(subsample)
        self.output_projection = bool(output_projection)
        self.return_attention = bool(return_attention)
        if not 0.0 <= float(batchnorm_momentum) < 1.0:
            raise ValueError(f"batchnorm_momentum must be in [0, 1), got {batchnorm_momentum}")
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape: list[tuple]) -> None:
        x_shape, g_shape = input_shape
        if len(x_shape) not in (4, 5) or len(g_shape) != len(x_shape):
            raise ValueError(f"AttentionGate takes [x, g] of rank 4 (images) or 5 (volumes), got shapes "
                             f"{tuple(x_shape)} and {tuple(g_shape)}")
        self._spatial = len(x_shape) - 2
        conv = keras.layers.Conv2D if self._spatial == 2 else keras.layers.Conv3D
        channels = int(x_shape[-1])
        inter = self.intermediate_channels or max(1, channels // 2)
        def init() -> keras.initializers.Initializer:
            # A fresh initializer per weight (a shared seeded one would repeat values).
            return self.kernel_initializer.__class__.from_config(self.kernel_initializer.get_config())

        s = self.subsample
        self.theta_x = conv(
            inter, s, strides=s, padding="same", use_bias=False,
            kernel_initializer=init(), dtype=self.dtype_policy, name="theta_x",
        )
        self.phi_g = conv(
            inter, 1, use_bias=True, kernel_initializer=init(), dtype=self.dtype_policy, name="phi_g"
        )
        self.psi = conv(
            1, 1, use_bias=True, kernel_initializer=init(), dtype=self.dtype_policy, name="psi"
        )
        self.theta_x.build(x_shape)
        self.phi_g.build(g_shape)
        self.psi.build((None,) * (self._spatial + 1) + (inter,))
        if self.output_projection:
            self.project = conv(
                channels, 1, use_bias=False, kernel_initializer=init(), dtype=self.dtype_policy, name="project"
            )
            self.project_bn = keras.layers.BatchNormalization(momentum=self.batchnorm_momentum,
                                                              dtype=self.dtype_policy, name="project_bn")
            self.project.build(x_shape)
            self.project_bn.build(x_shape)
        self.built = True

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> Any:
        x, g = inputs
        theta = self.theta_x(x)
        phi = self.phi_g(g)
        # Align the gating signal to theta's grid (already identical in a U-Net,
        # where the resize is an identity).
        phi = tf.cast(_resize_linear(phi, tf.shape(theta)), theta.dtype)
        alpha = tf.sigmoid(self.psi(tf.nn.relu(theta + phi)))
        alpha = tf.cast(_resize_linear(alpha, tf.shape(x)), x.dtype)
        y = alpha * x
        if self.output_projection:
            y = self.project_bn(self.project(y), training=training)
        if self.return_attention:
            return [y, alpha]
        return y

    def compute_output_shape(self, input_shape: list[tuple]) -> Any:
        x_shape = tuple(input_shape[0])
        if self.return_attention:
            return [x_shape, (*x_shape[:-1], 1)]
        return x_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            intermediate_channels=self.intermediate_channels,
            subsample=self.subsample,
            output_projection=self.output_projection,
            return_attention=self.return_attention,
            batchnorm_momentum=self.batchnorm_momentum,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
