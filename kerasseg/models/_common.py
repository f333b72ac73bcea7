"""Helpers shared by the model builders: argument checks, the norm-layer factory, heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras

from kerasseg.errors import ModelConfigError

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11+ (kerasseg runs on 3.10): for the type checker only

__all__ = ["ModelConfigError"]

ENCODER_PREFIX = "encoder_"
ENCODER_NAME = "encoder"




def check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelConfigError(
            f"num_classes must be an integer >= 1 (1 gives a sigmoid binary head), got {num_classes!r}"
        )
    return num_classes


def check_input_shape(
    input_shape: Sequence[int | None],
    *,
    model: str,
    divisor: int,
    spatial_dims: int = 2,
    allow_dynamic: bool = True,
) -> tuple[Unpack[tuple[int | None, ...]], int]:
    """Validate ``input_shape`` = spatial dims + channels; spatial dims multiples of ``divisor``."""
    try:
        shape = tuple(None if s is None else int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ModelConfigError(f"{model}: input_shape must be a tuple of ints/None, got {input_shape!r}") from None
    if len(shape) != spatial_dims + 1:
        raise ModelConfigError(
            f"{model}: input_shape must have {spatial_dims + 1} entries "
            f"({'(D, H, W, C)' if spatial_dims == 3 else '(H, W, C)'}), got {input_shape!r}"
        )
    channels = shape[-1]
    if channels is None or channels < 1:
        raise ModelConfigError(f"{model}: the channel count must be a known positive int, got {input_shape!r}")
    for size in shape[:-1]:
        if size is None:
            if not allow_dynamic:
                raise ModelConfigError(f"{model}: spatial size must be known, got {input_shape!r}")
            continue
        if size < 1 or size % divisor:
            raise ModelConfigError(
                f"{model}: input size {shape[:-1]} is not divisible by the network's stride {divisor}; "
                f"use sizes that are multiples of {divisor} (e.g. {max(divisor, (size // divisor) * divisor)}) "
                "or pad the image (kerasseg.models.size_divisor(model) gives the multiple)"
            )
    return (*shape[:-1], channels)


def check_choice(value: Any, choices: Sequence[Any], *, what: str, model: str) -> Any:
    if value not in choices:
        import difflib

        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            if close:
                hint = f"; did you mean {close[0]!r}?"
        raise ModelConfigError(f"{model}: unknown {what} {value!r}; choose one of {list(choices)}{hint}")
    return value


def resolve_activation(num_classes: int, output_activation: Any) -> str | None:
    """``"auto"``: softmax for K>=2, sigmoid for K=1; ``None``: logits."""
    if output_activation == "auto":
        return "softmax" if num_classes >= 2 else "sigmoid"
    if output_activation is None or output_activation in ("softmax", "sigmoid", "linear"):
        return None if output_activation == "linear" else output_activation
    raise ModelConfigError(
        f"output_activation must be 'auto', 'softmax', 'sigmoid' or None (logits), got {output_activation!r}"
    )


def output_layer(logits: Any, activation: str | None, name: str = "probabilities") -> Any:
    """Final activation in float32 (also under mixed precision)."""
    if activation is None:
        return keras.layers.Activation("linear", dtype="float32", name="logits" if name == "probabilities" else name)(logits)
    return keras.layers.Activation(activation, dtype="float32", name=name)(logits)


def norm_layer(kind: str | None, *, name: str, groups: int = 8, channels: int | None = None,
               momentum: float = 0.99, epsilon: float = 1e-3) -> keras.layers.Layer | None:
    """The feature-normalization layer ``norm=kind`` of a builder (``None`` for no layer).

    ``kind``: ``"batch"``, ``"group"`` (``min(groups, channels)`` groups),
    ``"instance"`` or ``None``/``"none"``. Not to be confused with intensity
    normalization of the input (:mod:`kerasseg.data.preprocess`).
    """
    if kind is None or kind == "none":
        return None
    if kind == "batch":
        return keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)
    if kind == "group":
        g = min(groups, channels) if channels else groups
        if channels is not None and channels % g:
            raise ModelConfigError(f"group norm: {channels} channels are not divisible into {g} groups")
        return keras.layers.GroupNormalization(groups=g, epsilon=epsilon, name=name)
    if kind == "instance":
        return keras.layers.GroupNormalization(groups=-1, epsilon=epsilon, name=name)
    raise ModelConfigError(f"unknown norm {kind!r}; choose 'batch', 'group', 'instance' or None")


def adapt_channels(x: Any, channels: int, *, pretrained: bool, name: str = "input_adapter") -> Any:
    """Make a ``C``-channel input fit an encoder pretrained on RGB, inside the graph.

    1 channel is repeated to 3 (a grayscale image as gray RGB); other channel
    counts other than 3 go through a learnable 1x1 convolution to 3 channels.
    Without pretrained weights the encoder takes the input as it is.
    """
    if not pretrained or channels == 3:
        return x
    if channels == 1:
        return keras.layers.Concatenate(axis=-1, name=f"{name}_gray_to_rgb")([x, x, x])
    return keras.layers.Conv2D(3, 1, name=f"{name}_to_rgb")(x)


def is_pretrained(encoder_weights: Any) -> bool:
    return encoder_weights is not None


def upsample2d(x: Any, factor: int, *, interpolation: str, name: str) -> Any:
    """``(B, h, w, C)`` -> ``(B, h * factor, w * factor, C)``; works with unknown ``h``, ``w``.

    ``"nearest"`` repeats pixels (``keras.layers.UpSampling2D``); ``"bilinear"``
    uses :class:`kerasseg.layers.resize.ResizeByFactor` (see there why not
    ``UpSampling2D``).
    """
    if interpolation == "nearest":
        return keras.layers.UpSampling2D(factor, name=name)(x)
    from kerasseg.layers.resize import ResizeByFactor

    return ResizeByFactor(factor, interpolation=interpolation, name=name)(x)
