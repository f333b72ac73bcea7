"""DeepLabv3+ (Chen, Zhu, Papandreou, Schroff & Adam, ECCV 2018, arXiv:1802.02611)."""

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


def _conv_bn_relu(x: Any, filters: int, kernel: int, *, name: str, separable: bool = False,
                  momentum: float = 0.99) -> Any:
    if separable and kernel > 1:
        x = keras.layers.SeparableConv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name=name)(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_deeplabv3plus(
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    num_classes: int = 2,
    backbone: str = "resnet50",
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = None,
    aspp_filters: int = 256,
    image_pooling: bool = True,
    low_level_filters: int = 48,
    decoder_filters: int = 256,
    separable: bool | None = None,
    dropout: float = 0.1,
    encoder_weights: Any = None,
    alpha: float = 1.0,
    batchnorm_momentum: float | None = None,
    output_activation: Any = "auto",
    name: str = "deeplabv3plus",
) -> keras.Model:
    """DeepLabv3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018).

    A dilated encoder, atrous spatial pyramid pooling and a light decoder.

    Encoder: a ``keras.applications`` backbone (``"resnet50"``, ``"resnet101"``,
    ``"xception"``, ``"mobilenetv2"``) whose last stage(s) use atrous
    convolution instead of striding so the features are at ``output_stride`` 16
    (last stage dilated) or 8 (last two); see
    :func:`kerasseg.models.backbones.dilated_backbone`. ASPP
    (:class:`kerasseg.layers.ASPP`): 1x1 conv, 3x3 atrous convs at
    ``atrous_rates`` (default 6/12/18 at OS 16, 12/24/36 at OS 8; DeepLab v2's
    6/12/18/24 is ``atrous_rates=(6, 12, 18, 24)``) and image pooling. Decoder:
    the ASPP output is up-sampled bilinearly to stride 4, concatenated with the
    stride-4 encoder features projected to ``low_level_filters`` (48) channels,
    refined by two 3x3 convs of ``decoder_filters`` (256), classified by a 1x1
    conv and up-sampled x4 bilinearly to the input size.

    Args:
        input_shape: ``(H, W, C)``; ``H``/``W`` ``None`` or multiples of ``output_stride``.
        num_classes: ``K``; 1 gives a sigmoid head.
        backbone: encoder name.
        output_stride: 8 or 16 (32 = undilated backbone).
        atrous_rates: ASPP rates; ``None`` picks the paper's for the output stride.
        separable: depthwise-separable ASPP/decoder convs (``None``: True for
            Xception as in the paper, else False).
        dropout: dropout after the ASPP projection.
        encoder_weights: ``None``, ``"imagenet"`` (Keras download) or a local
            ``keras.applications`` weights file. With pretrained weights a
            1-channel input is repeated to 3 channels inside the graph (other
            channel counts get a learnable 1x1 conv to 3 channels).
        alpha: MobileNetV2 width multiplier.
        batchnorm_momentum: momentum of every batch-norm layer. ``None``
            (default): 0.9 for layers trained from scratch (decoder, ASPP, and
            the encoder without pretrained weights; ``keras.applications`` ships
            0.99-0.999, which lags far behind the weights in a short run from
            scratch), the application's own value for a pretrained encoder. See
            :mod:`kerasseg.models.batchnorm`.
        output_activation: ``"auto"``, ``"softmax"``, ``"sigmoid"`` or ``None`` (logits).

    Returns:
        A functional model ``(B, H, W, C) -> (B, H, W, K)`` float32 whose encoder
        is the nested model named ``"encoder"``.
    """
    model_name = "deeplabv3plus"
    check_num_classes(num_classes)
    if output_stride not in (8, 16, 32):
        raise ModelConfigError(f"{model_name}: output_stride must be 8 or 16 (or 32), got {output_stride!r}")
    shape = check_input_shape(input_shape, model=model_name, divisor=output_stride)
    if atrous_rates is None:
        atrous_rates = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]
    if separable is None:
        separable = backbone == "xception"
    pretrained = encoder_weights is not None
    encoder = dilated_backbone(
        backbone, channels=3 if pretrained else shape[-1], output_stride=output_stride,
        encoder_weights=encoder_weights, alpha=alpha, model=model_name,
    )
    from kerasseg.layers.aspp import ASPP

    inputs = keras.Input(shape, name="image")
    x = adapt_channels(inputs, shape[-1], pretrained=pretrained)
    low, high = encoder(x)
    momentum = resolve_momentum(batchnorm_momentum, pretrained=False)
    x = ASPP(filters=aspp_filters, rates=tuple(atrous_rates), image_pooling=image_pooling,
             separable=separable, dropout=dropout, batchnorm_momentum=momentum, name="aspp")(high)
    if output_stride > 4:
        x = upsample2d(x, output_stride // 4, interpolation="bilinear", name="decoder_upsample")
    low = _conv_bn_relu(low, low_level_filters, 1, name="decoder_low_level", momentum=momentum)
    x = keras.layers.Concatenate(name="decoder_concat")([x, low])
    x = _conv_bn_relu(x, decoder_filters, 3, name="decoder_conv1", separable=separable, momentum=momentum)
    x = _conv_bn_relu(x, decoder_filters, 3, name="decoder_conv2", separable=separable, momentum=momentum)
    logits = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    logits = upsample2d(logits, 4, interpolation="bilinear", name="upsample")
    outputs = output_layer(logits, resolve_activation(num_classes, output_activation))
    model = keras.Model(inputs, outputs, name=name)
    keep_encoder = pretrained and batchnorm_momentum is None
    set_batchnorm_momentum(model, momentum, skip=[encoder] if keep_encoder else [])
    return model
