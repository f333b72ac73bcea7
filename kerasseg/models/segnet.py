"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017, arXiv:1511.00561)."""

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
from kerasseg.models.batchnorm import resolve_momentum, set_batchnorm_momentum
from kerasseg.models.backbones import check_encoder_weights, load_vgg16_weights, vgg16_encoder


def build_segnet(
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    num_classes: int = 2,
    base_filters: int = 64,
    encoder_weights: Any = None,
    batchnorm_momentum: float | None = None,
    output_activation: Any = "auto",
    name: str = "segnet",
) -> keras.Model:
    """SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

    A VGG16-BN encoder and a decoder that unpools with the encoder's argmax indices.

    Encoder: the 13 3x3 convolutions of VGG16 (conv -> BN -> ReLU), each block
    ending in 2x2 max pooling that records argmax indices
    (:class:`kerasseg.layers.MaxPoolingWithArgmax2D`). Decoder: the mirror image;
    every block starts with max-unpooling using the indices of the matching
    encoder pooling (:class:`kerasseg.layers.MaxUnpooling2D`, no learned
    up-sampling and no copy of encoder features), then 3x3 conv -> BN -> ReLU
    layers (widths 512-512-512, 512-512-256, 256-256-128, 128-64, 64), and a
    1x1 convolution to ``K`` classes followed by the softmax. With the defaults,
    3 input channels and 12 classes (CamVid) it has about 29.46 M parameters,
    the paper's figure.

    Args:
        input_shape: ``(H, W, C)``; ``H``/``W`` ``None`` or multiples of 32.
        num_classes: ``K``; 1 gives a sigmoid head.
        base_filters: width of the first block (VGG16: 64; smaller for quick
            experiments, then no pretrained weights).
        encoder_weights: ``None``, ``"imagenet"`` or a local ``keras.applications``
            VGG16 weights file; the 13 conv kernels are copied by name (the
            batch-norm layers start fresh).
        batchnorm_momentum: momentum of every batch-norm layer; ``None`` (default):
            0.9 (every batch norm here starts from scratch; see
            :mod:`kerasseg.models.batchnorm`).
        output_activation: ``"auto"``, ``"softmax"``, ``"sigmoid"`` or ``None`` (logits).

    Returns:
        A functional model ``(B, H, W, C) -> (B, H, W, K)`` float32.
    """
    model_name = "segnet"
    check_num_classes(num_classes)
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ModelConfigError(f"{model_name}: base_filters must be a positive int, got {base_filters!r}")
    check_encoder_weights(encoder_weights, model=model_name)
    shape = check_input_shape(input_shape, model=model_name, divisor=32)
    from kerasseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

    inputs = keras.Input(shape, name="image")
    x = adapt_channels(inputs, shape[-1], pretrained=encoder_weights is not None)

    def pool(t: Any, layer_name: str) -> Any:
        return MaxPoolingWithArgmax2D(2, name=layer_name)(t)

    pooled = vgg16_encoder(x, base_filters=base_filters, batch_norm=True, pool=pool)
    x = pooled[-1][0]
    widths = [base_filters * m for m in (1, 2, 4, 8, 8)]
    # decoder block b (5..1): conv widths, mirror of the encoder
    plan = {
        5: [widths[4]] * 3,
        4: [widths[3], widths[3], widths[2]],
        3: [widths[2], widths[2], widths[1]],
        2: [widths[1], widths[0]],
        1: [widths[0]],
    }
    for block in (5, 4, 3, 2, 1):
        indices = pooled[block - 1][1]
        x = MaxUnpooling2D(2, name=f"decoder_block{block}_unpool")([x, indices])
        for i, width in enumerate(plan[block], start=1):
            layer = f"decoder_block{block}_conv{i}"
            x = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer="he_normal", name=layer)(x)
            x = keras.layers.BatchNormalization(name=f"{layer}_bn")(x)
            x = keras.layers.ReLU(name=f"{layer}_relu")(x)
    logits = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    outputs = output_layer(logits, resolve_activation(num_classes, output_activation))
    model = keras.Model(inputs, outputs, name=name)
    set_batchnorm_momentum(model, resolve_momentum(batchnorm_momentum, pretrained=False))
    load_vgg16_weights(model, encoder_weights, model_name=model_name, base_filters=base_filters)
    return model
