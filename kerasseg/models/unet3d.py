"""3D U-Net (Çiçek et al., MICCAI 2016, arXiv:1606.06650) and its attention-gated variant
(Oktay et al., MIDL 2018, arXiv:1804.03999)."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from kerasseg.models._common import ModelConfigError, check_choice, check_input_shape, check_num_classes
from kerasseg.models.batchnorm import resolve_momentum, set_batchnorm_momentum
from kerasseg.models.unet import NORMS, unet_graph


def build_unet3d(
    *,
    input_shape: Sequence[int | None] = (None, None, None, 1),
    num_classes: int = 2,
    depth: int = 3,
    base_filters: int = 32,
    norm: str | None = "batch",
    groups: int = 8,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    residual: bool = False,
    deep_supervision: bool = False,
    batchnorm_momentum: float | None = None,
    output_activation: Any = "auto",
    name: str = "unet3d",
    _attention: bool = False,
) -> keras.Model:
    """3D U-Net for volumes (Çiçek, Abdulkadir, Lienkamp, Brox & Ronneberger 2016).

    As in the paper: ``depth=3`` poolings of 2x2x2, each analysis level has two
    3x3x3 convolutions of ``f`` then ``2f`` filters (32/64, 64/128, 128/256,
    bottleneck 256/512 with ``base_filters=32``) with batch norm before each
    ReLU; every synthesis level has a 2x2x2 transposed convolution keeping the
    channels, concatenation with the skip and two 3x3x3 convs of ``2f``; a
    1x1x1 classifier. ``"same"`` padding keeps the volume size.

    Args:
        input_shape: ``(D, H, W, C)``; spatial sizes ``None`` or multiples of
            ``2 ** depth``.
        num_classes: ``K``; 1 gives a sigmoid head.
        norm: ``"batch"`` (paper), ``"group"``, ``"instance"`` or ``None``.
        upsampling: ``"transpose"`` (paper) or ``"nearest"``.
        batchnorm_momentum: momentum of every batch-norm layer; ``None`` (default)
            means 0.9 for layers trained from scratch (see
            :mod:`kerasseg.models.batchnorm`).
        Other arguments as :func:`kerasseg.models.build_unet`.

    Returns:
        A functional model ``(B, D, H, W, C) -> (B, D, H, W, K)`` float32.
    """
    model_name = "attention_unet3d" if _attention else "unet3d"
    check_num_classes(num_classes)
    if not isinstance(depth, int) or not 1 <= depth <= 6:
        raise ModelConfigError(f"{model_name}: depth must be an int in [1, 6], got {depth!r}")
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ModelConfigError(f"{model_name}: base_filters must be a positive int, got {base_filters!r}")
    check_choice(norm, NORMS, what="norm", model=model_name)
    check_choice(upsampling, ("transpose", "nearest"), what="upsampling (3D)", model=model_name)
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelConfigError(f"{model_name}: dropout must be in [0, 1), got {dropout!r}")
    shape = check_input_shape(input_shape, model=model_name, divisor=2 ** depth, spatial_dims=3)
    widths = [base_filters * 2 ** i for i in range(depth + 1)]
    momentum = resolve_momentum(batchnorm_momentum, pretrained=False)
    inputs = keras.Input(shape, name="volume")
    outputs = unet_graph(
        inputs, ndim=3, num_classes=num_classes, depth=depth,
        encoder_filters=[(w, 2 * w) for w in widths],
        decoder_filters=[(2 * w, 2 * w) for w in widths[:depth]],
        upconv_filters=[4 * w for w in widths[:depth]],
        norm=norm, groups=groups, dropout=float(dropout), upsampling=upsampling, residual=residual,
        attention=_attention, deep_supervision=deep_supervision, output_activation=output_activation,
        batchnorm_momentum=momentum,
    )
    model = keras.Model(inputs, outputs if deep_supervision else outputs[0], name=name)
    set_batchnorm_momentum(model, momentum)
    return model


def build_attention_unet3d(
    *,
    input_shape: Sequence[int | None] = (None, None, None, 1),
    num_classes: int = 2,
    depth: int = 3,
    base_filters: int = 32,
    norm: str | None = "batch",
    groups: int = 8,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    residual: bool = False,
    deep_supervision: bool = False,
    batchnorm_momentum: float | None = None,
    output_activation: Any = "auto",
    name: str = "attention_unet3d",
) -> keras.Model:
    """3D Attention U-Net (Oktay et al., MIDL 2018, arXiv:1804.03999; the paper's own setting is CT).

    The 3D U-Net of :func:`build_unet3d` whose skip connections pass through
    additive attention gates (:class:`kerasseg.layers.AttentionGate` with 3D
    convolutions and trilinear upsampling of the coefficients), gated by the
    coarser decoder features. Each gate's projection keeps the paper's batch
    norm whatever ``norm`` the convolution blocks use. Arguments as
    :func:`build_unet3d`.

    Returns:
        A functional model ``(B, D, H, W, C) -> (B, D, H, W, K)`` float32.
    """
    return build_unet3d(
        input_shape=input_shape, num_classes=num_classes, depth=depth, base_filters=base_filters, norm=norm,
        groups=groups, dropout=dropout, upsampling=upsampling, residual=residual,
        deep_supervision=deep_supervision, batchnorm_momentum=batchnorm_momentum,
        output_activation=output_activation, name=name, _attention=True,
    )
