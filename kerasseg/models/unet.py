"""U-Net (Ronneberger et al., 2015) and Attention U-Net (Oktay et al., 2018).

Both share one graph builder (also used by :mod:`kerasseg.models.unet3d`):
a contracting path of ``depth`` levels (two 3x3 conv -> [norm] -> ReLU, then 2x2
max pooling), a bottleneck, and an expanding path (2x up-sampling + 2x2
"up-convolution" halving the channels, concatenation with the skip, two 3x3
convs), then a 1x1 classifier. Convolutions use ``"same"`` padding (the paper
uses ``"valid"`` with overlap-tile cropping), so the output has the input's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from kerasseg.models._common import (
    ENCODER_PREFIX,
    ModelConfigError,
    check_choice,
    check_input_shape,
    check_num_classes,
    norm_layer,
    output_layer,
    resolve_activation,
    upsample2d,
)
from kerasseg.models.batchnorm import resolve_momentum, set_batchnorm_momentum

UPSAMPLING = ("transpose", "bilinear", "nearest")
NORMS = (None, "batch", "group", "instance")


def _layers(ndim: int) -> dict[str, Any]:
    if ndim == 2:
        return dict(conv=keras.layers.Conv2D, convt=keras.layers.Conv2DTranspose,
                    pool=keras.layers.MaxPooling2D, up=keras.layers.UpSampling2D)
    return dict(conv=keras.layers.Conv3D, convt=keras.layers.Conv3DTranspose,
                pool=_max_pooling_3d, up=keras.layers.UpSampling3D)


def _max_pooling_3d(pool_size: int, name: str) -> keras.layers.Layer:
    # TensorFlow's CPU MaxPool3D has no float16 kernel: under a mixed_float16 policy the
    # pooling runs in float32 (the next convolution casts back to float16).
    dtype = "float32" if keras.config.dtype_policy().compute_dtype == "float16" else None
    return keras.layers.MaxPooling3D(pool_size, name=name, dtype=dtype)


def _conv_norm_relu(x: Any, filters: int, *, kernel: int, name: str, ndim: int, norm: str | None,
                    groups: int, relu: bool = True) -> Any:
    L = _layers(ndim)
    x = L["conv"](filters, kernel, padding="same", use_bias=norm is None,
                  kernel_initializer="he_normal", name=f"{name}")(x)
    layer = norm_layer(norm, name=f"{name}_norm", groups=groups, channels=filters)
    if layer is not None:
        x = layer(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def conv_block(x: Any, filters: Sequence[int], *, name: str, ndim: int, norm: str | None, groups: int,
               residual: bool) -> Any:
    """Two (or ``len(filters)``) 3x3 conv -> norm -> ReLU; residual adds a (projected) shortcut."""
    shortcut = x
    for i, f in enumerate(filters, start=1):
        last = i == len(filters)
        x = _conv_norm_relu(x, f, kernel=3, name=f"{name}_conv{i}", ndim=ndim, norm=norm, groups=groups,
                            relu=not (residual and last))
    if residual:
        if shortcut.shape[-1] != filters[-1]:
            shortcut = _conv_norm_relu(shortcut, filters[-1], kernel=1, name=f"{name}_shortcut", ndim=ndim,
                                       norm=norm, groups=groups, relu=False)
        x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
        x = keras.layers.ReLU(name=f"{name}_out")(x)
    return x


def _upsample(x: Any, filters: int, *, name: str, ndim: int, mode: str, norm: str | None, groups: int) -> Any:
    L = _layers(ndim)
    if mode == "transpose":
        x = L["convt"](filters, 2, strides=2, padding="same", use_bias=norm is None,
                       kernel_initializer="he_normal", name=f"{name}_upconv")(x)
    else:
        if ndim == 2:
            x = upsample2d(x, 2, interpolation=mode, name=f"{name}_upsample")
        else:
            x = L["up"](2, name=f"{name}_upsample")(x)
        x = L["conv"](filters, 2, padding="same", use_bias=norm is None, kernel_initializer="he_normal",
                      name=f"{name}_upconv")(x)
    layer = norm_layer(norm, name=f"{name}_upconv_norm", groups=groups, channels=filters)
    if layer is not None:
        x = layer(x)
    return keras.layers.ReLU(name=f"{name}_upconv_relu")(x)


def unet_graph(
    inputs: Any,
    *,
    ndim: int,
    num_classes: int,
    depth: int,
    encoder_filters: Sequence[Sequence[int]],
    decoder_filters: Sequence[Sequence[int]],
    upconv_filters: Sequence[int],
    norm: str | None,
    groups: int,
    dropout: float,
    upsampling: str,
    residual: bool,
    attention: bool,
    deep_supervision: bool,
    output_activation: Any,
    batchnorm_momentum: float = 0.99,
) -> list[Any]:
    """Build the U-shaped graph; returns ``[main_output, *auxiliary_outputs]``.

    ``encoder_filters[i]`` are the conv widths of level ``i`` (``depth + 1``
    levels, the last is the bottleneck); ``decoder_filters[i]`` and
    ``upconv_filters[i]`` those of the decoder level that returns to level ``i``.
    """
    L = _layers(ndim)
    x = inputs
    skips = []
    for level in range(depth):
        x = conv_block(x, encoder_filters[level], name=f"{ENCODER_PREFIX}block{level + 1}", ndim=ndim,
                       norm=norm, groups=groups, residual=residual)
        if dropout > 0 and level == depth - 1:
            # "Drop-out layers at the end of the contracting path" (Ronneberger 2015).
            x = keras.layers.Dropout(dropout, name=f"{ENCODER_PREFIX}block{level + 1}_dropout")(x)
        skips.append(x)
        x = L["pool"](2, name=f"{ENCODER_PREFIX}block{level + 1}_pool")(x)
    x = conv_block(x, encoder_filters[depth], name=f"{ENCODER_PREFIX}bottleneck", ndim=ndim, norm=norm,
                   groups=groups, residual=residual)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{ENCODER_PREFIX}bottleneck_dropout")(x)

    activation = resolve_activation(num_classes, output_activation)
    aux: list[Any] = []
    for level in reversed(range(depth)):
        name = f"decoder_block{level + 1}"
        gate = x
        x = _upsample(x, upconv_filters[level], name=name, ndim=ndim, mode=upsampling, norm=norm, groups=groups)
        skip = skips[level]
        if attention:
            from kerasseg.layers.attention import AttentionGate

            skip = AttentionGate(intermediate_channels=max(1, skip.shape[-1] // 2), subsample=2,
                                 batchnorm_momentum=batchnorm_momentum, name=f"{name}_attention")([skip, gate])
        x = keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([skip, x])
        x = conv_block(x, decoder_filters[level], name=name, ndim=ndim, norm=norm, groups=groups,
                       residual=residual)
        if deep_supervision and level > 0:
            logits = L["conv"](num_classes, 1, name=f"aux{level}_logits")(x)
            factor = 2 ** level
            if ndim == 2:
                logits = upsample2d(logits, factor, interpolation="bilinear", name=f"aux{level}_upsample")
            else:
                logits = L["up"](factor, name=f"aux{level}_upsample")(logits)
            aux.append(output_layer(logits, activation, name=f"aux{level}_probabilities"
                                    if activation else f"aux{level}_logits_out"))
    logits = L["conv"](num_classes, 1, name="classifier")(x)
    main = output_layer(logits, activation)
    return [main, *aux]


def _validate_common(model: str, *, depth: int, base_filters: int, norm: Any, upsampling: str,
                     dropout: float, groups: int) -> None:
    if not isinstance(depth, int) or depth < 1 or depth > 7:
        raise ModelConfigError(f"{model}: depth must be an int in [1, 7], got {depth!r}")
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ModelConfigError(f"{model}: base_filters must be a positive int, got {base_filters!r}")
    check_choice(norm, NORMS, what="norm", model=model)
    check_choice(upsampling, UPSAMPLING, what="upsampling", model=model)
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelConfigError(f"{model}: dropout must be in [0, 1), got {dropout!r}")
    if norm == "group" and base_filters % min(groups, base_filters):
        raise ModelConfigError(f"{model}: base_filters={base_filters} is not divisible by groups={groups}")


def build_unet(
    *,
    input_shape: Sequence[int | None] = (None, None, 1),
    num_classes: int = 2,
    depth: int = 4,
    base_filters: int = 64,
    norm: str | None = None,
    groups: int = 8,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    residual: bool = False,
    deep_supervision: bool = False,
    batchnorm_momentum: float | None = None,
    output_activation: Any = "auto",
    name: str = "unet",
    _attention: bool = False,
) -> keras.Model:
    """U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv:1505.04597).

    The defaults are the paper's network: 4 poolings, 64..1024 filters, 2x2
    transposed "up-convolutions", no normalization; with ``input_shape=(None,
    None, 1)`` and ``num_classes=2`` it has exactly 31,030,658 parameters.

    Args:
        input_shape: ``(H, W, C)``; ``H``/``W`` may be ``None`` or multiples of
            ``2 ** depth``.
        num_classes: ``K``; 1 gives a sigmoid binary head, >= 2 a softmax.
        depth: number of poolings (the paper: 4).
        base_filters: filters of the first level, doubled at every level.
        norm: ``None`` (paper), ``"batch"``, ``"group"`` or ``"instance"``
            after every convolution.
        groups: groups of group normalization (``min(groups, channels)``).
        dropout: rate of the dropout at the end of the contracting path (paper: 0.5).
        upsampling: ``"transpose"`` (paper), ``"bilinear"`` or ``"nearest"``
            followed by a 2x2 convolution (group norm + nearest is the variant of
            Wu & He-style U-Nets used for small batches).
        residual: residual conv blocks (1x1 projected shortcut).
        deep_supervision: also output auxiliary predictions from every decoder
            level but the last, up-sampled to full resolution.
        batchnorm_momentum: momentum of every batch-norm layer; ``None`` (default)
            means 0.9 for layers trained from scratch (see
            :mod:`kerasseg.models.batchnorm`).
        output_activation: ``"auto"`` (softmax / sigmoid), ``"softmax"``,
            ``"sigmoid"`` or ``None`` for logits.

    Returns:
        A functional model ``(B, H, W, C) -> (B, H, W, K)`` float32; with
        ``deep_supervision`` a list ``[main, aux_1, ..., aux_{depth-1}]`` of such
        tensors (``aux_l`` from the decoder level at stride ``2**l``).
    """
    model_name = "attention_unet" if _attention else "unet"
    check_num_classes(num_classes)
    _validate_common(model_name, depth=depth, base_filters=base_filters, norm=norm, upsampling=upsampling,
                     dropout=dropout, groups=groups)
    shape = check_input_shape(input_shape, model=model_name, divisor=2 ** depth)
    widths = [base_filters * 2 ** i for i in range(depth + 1)]
    momentum = resolve_momentum(batchnorm_momentum, pretrained=False)
    inputs = keras.Input(shape, name="image")
    outputs = unet_graph(
        inputs, ndim=2, num_classes=num_classes, depth=depth,
        encoder_filters=[(w, w) for w in widths],
        decoder_filters=[(w, w) for w in widths[:depth]],
        upconv_filters=widths[:depth],
        norm=norm, groups=groups, dropout=float(dropout), upsampling=upsampling, residual=residual,
        attention=_attention, deep_supervision=deep_supervision, output_activation=output_activation,
        batchnorm_momentum=momentum,
    )
    model = keras.Model(inputs, outputs if deep_supervision else outputs[0], name=name)
    set_batchnorm_momentum(model, momentum)
    return model


def build_attention_unet(
    *,
    input_shape: Sequence[int | None] = (None, None, 1),
    num_classes: int = 2,
    depth: int = 4,
    base_filters: int = 64,
    norm: str | None = "batch",
    groups: int = 8,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    residual: bool = False,
    deep_supervision: bool = False,
    batchnorm_momentum: float | None = None,
    output_activation: Any = "auto",
    name: str = "attention_unet",
) -> keras.Model:
    """Attention U-Net (Oktay et al., MIDL 2018, arXiv:1804.03999).

    A U-Net (batch norm by default, as in the paper) whose skip connections pass
    through additive attention gates (:class:`kerasseg.layers.AttentionGate`)
    driven by the coarser decoder features, so irrelevant regions of the skip
    features are suppressed. Arguments and shapes as :func:`build_unet`; deep
    supervision (used in the paper) is available with ``deep_supervision=True``.
    """
    return build_unet(
        input_shape=input_shape, num_classes=num_classes, depth=depth, base_filters=base_filters, norm=norm,
        groups=groups, dropout=dropout, upsampling=upsampling, residual=residual,
        deep_supervision=deep_supervision, batchnorm_momentum=batchnorm_momentum,
        output_activation=output_activation, name=name, _attention=True,
    )
