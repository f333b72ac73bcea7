"""FCN-8s (Long, Shelhamer & Darrell, CVPR 2015, arXiv:1411.4038)."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from kerasseg.models._common import (
    ModelConfigError,
    adapt_channels,
    check_input_shape,
    check_num_classes,
    output_layer,
    resolve_activation,
)
from kerasseg.models.backbones import check_encoder_weights, load_vgg16_weights, vgg16_encoder


def build_fcn8s(
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    num_classes: int = 2,
    base_filters: int = 64,
    fc_filters: int = 4096,
    dropout: float = 0.5,
    encoder_weights: Any = None,
    output_activation: Any = "auto",
    name: str = "fcn8s",
) -> keras.Model:
    """FCN-8s (Long, Shelhamer & Darrell, "Fully Convolutional Networks", CVPR 2015).

    VGG16 made fully convolutional, with pool4 and pool3 skip fusion.

    VGG16's 13 convolutions and 5 max poolings; ``fc6`` as a 7x7 conv and
    ``fc7`` as a 1x1 conv (``fc_filters`` = 4096 each, ReLU + dropout);
    ``score_fr`` (1x1 to ``K``); x2 transposed conv (``upscore2``) fused by
    addition with ``score_pool4`` (1x1 on pool4, zero-initialised as in the
    paper); x2 transposed conv fused with ``score_pool3``; a fixed (non-trainable)
    bilinear x8 transposed conv to the input size. The up-sampling kernels are
    initialised bilinear (:class:`kerasseg.layers.BilinearKernel`). ``"same"``
    padding replaces the paper's 100-pixel input padding and crops, so the
    input must be a multiple of 32.

    Args:
        input_shape: ``(H, W, C)``; ``H``/``W`` ``None`` or multiples of 32.
        num_classes: ``K``; 1 gives a sigmoid head.
        base_filters: VGG16 first-block width (64; smaller only for experiments).
        fc_filters: width of fc6/fc7 (4096).
        dropout: dropout after fc6 and fc7 (0.5).
        encoder_weights: ``None``, ``"imagenet"`` or a local VGG16 weights file
            (the 13 conv layers are copied by name; fc6/fc7 start fresh).
        output_activation: ``"auto"``, ``"softmax"``, ``"sigmoid"`` or ``None`` (logits).

    Returns:
        A functional model ``(B, H, W, C) -> (B, H, W, K)`` float32.
    """
    model_name = "fcn8s"
    check_num_classes(num_classes)
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ModelConfigError(f"{model_name}: base_filters must be a positive int, got {base_filters!r}")
    if not isinstance(fc_filters, int) or fc_filters < 1:
        raise ModelConfigError(f"{model_name}: fc_filters must be a positive int, got {fc_filters!r}")
    check_encoder_weights(encoder_weights, model=model_name)
    shape = check_input_shape(input_shape, model=model_name, divisor=32)
    from kerasseg.layers.initializers import BilinearKernel

    inputs = keras.Input(shape, name="image")
    x = adapt_channels(inputs, shape[-1], pretrained=encoder_weights is not None)
    pools = vgg16_encoder(x, base_filters=base_filters, batch_norm=False)
    pool3, pool4, pool5 = pools[2], pools[3], pools[4]
    k = num_classes
    x = keras.layers.Conv2D(fc_filters, 7, padding="same", activation="relu", name="fc6")(pool5)
    x = keras.layers.Dropout(dropout, name="fc6_dropout")(x)
    x = keras.layers.Conv2D(fc_filters, 1, activation="relu", name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="fc7_dropout")(x)
    x = keras.layers.Conv2D(k, 1, kernel_initializer="zeros", name="score_fr")(x)
    x = keras.layers.Conv2DTranspose(k, 4, strides=2, padding="same", use_bias=False,
                                     kernel_initializer=BilinearKernel(), name="upscore2")(x)
    s4 = keras.layers.Conv2D(k, 1, kernel_initializer="zeros", name="score_pool4")(pool4)
    x = keras.layers.Add(name="fuse_pool4")([x, s4])
    x = keras.layers.Conv2DTranspose(k, 4, strides=2, padding="same", use_bias=False,
                                     kernel_initializer=BilinearKernel(), name="upscore_pool4")(x)
    s3 = keras.layers.Conv2D(k, 1, kernel_initializer="zeros", name="score_pool3")(pool3)
    x = keras.layers.Add(name="fuse_pool3")([x, s3])
    upscore8 = keras.layers.Conv2DTranspose(k, 16, strides=8, padding="same", use_bias=False,
                                            kernel_initializer=BilinearKernel(), name="upscore8")
    upscore8.trainable = False
    logits = upscore8(x)
    outputs = output_layer(logits, resolve_activation(num_classes, output_activation))
    model = keras.Model(inputs, outputs, name=name)
    load_vgg16_weights(model, encoder_weights, model_name=model_name, base_filters=base_filters)
    return model
