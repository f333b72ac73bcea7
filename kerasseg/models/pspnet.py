"""PSPNet (Zhao, Shi, Qi, Wang & Jia, CVPR 2017, arXiv:1612.01105)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from kerasseg.models._common import (
    ModelConfigError,
    adapt_channels,
    check_input_shape,
    check_num_classes,
    output_layer,
    resolve_activation,
    upsample2d,
)
from kerasseg.models.backbones import dilated_backbone
from kerasseg.models.batchnorm import resolve_momentum, set_batchnorm_momentum


def build_pspnet(
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    num_classes: int = 2,
    backbone: str = "resnet50",
    output_stride: int = 8,
    bins: Sequence[int] = (1, 2, 3, 6),
    pyramid_filters: int | None = None,
    head_filters: int = 512,
    dropout: float = 0.1,
    encoder_weights: Any = None,
    alpha: float = 1.0,
    batchnorm_momentum: float | None = None,
    output_activation: Any = "auto",
    name: str = "pspnet",
) -> keras.Model:
    """PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017).

    A dilated ResNet and the pyramid pooling module.

    Encoder: dilated ResNet50 at output stride 8 (paper; ``keras.applications``
    ResNet50 with its last two stages dilated, see
    :func:`kerasseg.models.backbones.dilated_backbone`; the paper's deep stem
    variant is not in Keras). Pyramid pooling: adaptive average pooling to
    ``bins`` (1x1, 2x2, 3x3, 6x6), each 1x1 conv -> BN -> ReLU to
    ``C / len(bins)`` channels, bilinear up-sampling to the feature size,
    concatenation with the features; then a 3x3 conv (512) -> BN -> ReLU,
    dropout 0.1, a 1x1 classifier and bilinear up-sampling by the output stride.
    The auxiliary training loss of the paper is not included.

    Args:
        input_shape: ``(H, W, C)``; ``H``/``W`` ``None`` or multiples of ``output_stride``.
        num_classes: ``K``; 1 gives a sigmoid head.
        backbone: ``"resnet50"`` (paper), ``"resnet101"``, ``"xception"`` or ``"mobilenetv2"``.
        output_stride: 8 (paper) or 16.
        bins: pyramid levels.
        pyramid_filters: channels per pyramid branch (``None``: ``C / len(bins)``).
        encoder_weights, alpha, batchnorm_momentum, output_activation: as
            :func:`build_deeplabv3plus`.

    Returns:
        A functional model ``(B, H, W, C) -> (B, H, W, K)`` float32.
    """
    model_name = "pspnet"
    check_num_classes(num_classes)
    if output_stride not in (8, 16):
        raise ModelConfigError(f"{model_name}: output_stride must be 8 or 16, got {output_stride!r}")
    bins = tuple(int(b) for b in bins)
    if not bins or min(bins) < 1:
        raise ModelConfigError(f"{model_name}: bins must be positive ints, got {bins!r}")
    shape = check_input_shape(input_shape, model=model_name, divisor=output_stride)
    pretrained = encoder_weights is not None
    encoder = dilated_backbone(
        backbone, channels=3 if pretrained else shape[-1], output_stride=output_stride,
        encoder_weights=encoder_weights, alpha=alpha, model=model_name,
    )
    from kerasseg.layers.resize import AdaptiveAveragePooling2D, ResizeToMatch

    inputs = keras.Input(shape, name="image")
    x = adapt_channels(inputs, shape[-1], pretrained=pretrained)
    _, features = encoder(x)
    channels = int(features.shape[-1])
    branch_filters = pyramid_filters or max(1, channels // len(bins))
    branches = [features]
    for b in bins:
        y = AdaptiveAveragePooling2D(b, name=f"ppm_pool{b}")(features)
        y = keras.layers.Conv2D(branch_filters, 1, use_bias=False, kernel_initializer="he_normal",
                                name=f"ppm_conv{b}")(y)
        y = keras.layers.BatchNormalization(name=f"ppm_conv{b}_bn")(y)
        y = keras.layers.ReLU(name=f"ppm_conv{b}_relu")(y)
        y = ResizeToMatch("bilinear", name=f"ppm_upsample{b}")([y, features])
        branches.append(y)
    x = keras.layers.Concatenate(name="ppm_concat")(branches)
    x = keras.layers.Conv2D(head_filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                            name="head_conv")(x)
    x = keras.layers.BatchNormalization(name="head_conv_bn")(x)
    x = keras.layers.ReLU(name="head_conv_relu")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    logits = upsample2d(logits, output_stride, interpolation="bilinear", name="upsample")
    outputs = output_layer(logits, resolve_activation(num_classes, output_activation))
    model = keras.Model(inputs, outputs, name=name)
    keep_encoder = pretrained and batchnorm_momentum is None
    set_batchnorm_momentum(model, resolve_momentum(batchnorm_momentum, pretrained=False),
                           skip=[encoder] if keep_encoder else [])
    return model
