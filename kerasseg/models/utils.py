"""Model utilities: the size multiple a model needs, encoder freezing."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import keras

from kerasseg.models._common import ENCODER_NAME, ENCODER_PREFIX

_UPSAMPLERS = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "UpSampling1D", "UpSampling2D",
               "UpSampling3D", "MaxUnpooling2D", "ResizeByFactor")


def _factor(layer: Any) -> Fraction:
    """How much ``layer`` shrinks the spatial size (2 for stride 2, 1/2 for x2 up-sampling)."""
    name = type(layer).__name__
    if name in _UPSAMPLERS:
        attribute = "strides" if "Transpose" in name else "factor" if name == "ResizeByFactor" else "size"
        value = getattr(layer, attribute, None)
        return Fraction(1, max(_as_ints(value) or [1]))
    strides = getattr(layer, "strides", None)
    if strides is None:
        return Fraction(1)
    return Fraction(max(_as_ints(strides) or [1]))


def _as_ints(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    try:
        return [int(v) for v in value]
    except TypeError:
        return []


def _walk(model: Any, input_strides: list[Fraction]) -> tuple[list[Fraction], Fraction]:
    """Propagate cumulative strides through a functional model.

    Returns the strides of the model outputs and the largest stride reached inside.
    """
    strides: dict[int, Fraction] = {}
    for tensor, s in zip(model.inputs, input_strides):
        strides[id(tensor)] = s
    deepest = max(input_strides, default=Fraction(1))
    for layer in model.layers:
        for node in layer._inbound_nodes:
            node_inputs = list(node.input_tensors)
            node_outputs = list(node.outputs)
            if not node_inputs:
                continue  # an InputLayer: its tensor's stride is set above
            if any(id(t) not in strides for t in node_inputs):
                continue  # a node from another graph (e.g. the stock model a backbone was cloned from)
            s_in = [strides[id(t)] for t in node_inputs]
            if isinstance(layer, keras.Model) and hasattr(layer, "_inbound_nodes") and hasattr(layer, "inputs") \
                    and getattr(layer, "_is_graph_network", True) and _is_functional(layer):
                outs, inner = _walk(layer, s_in if len(s_in) == len(layer.inputs) else [max(s_in)] * len(layer.inputs))
                deepest = max(deepest, inner)
            else:
                s = max(s_in) * _factor(layer)
                outs = [s] * len(node_outputs)
                deepest = max(deepest, s)
            for t, s in zip(node_outputs, outs):
                strides[id(t)] = s
    out = [strides.get(id(t), deepest) for t in model.outputs]
    return out, deepest


def _is_functional(model: Any) -> bool:
    return type(model).__name__ in ("Functional", "Model") and hasattr(model, "operations")


def size_divisor(model: keras.Model) -> int:
    """The multiple input height and width (and depth) must be for ``model``.

    Computed from the graph: strides are accumulated along every path (nested
    functional models such as the ``"encoder"`` included); transposed
    convolutions and up-/un-pooling divide by their factor. The answer is the
    largest down-sampling factor reached (an int; 1 means any size works). It
    needs nothing stored on the model, so it holds after a ``.keras`` reload.
    """
    inputs = [Fraction(1)] * len(model.inputs)
    _, deepest = _walk(model, inputs)
    return int(math.ceil(deepest))


def load_model(path: Any, **kwargs: Any) -> keras.Model:
    """``keras.saving.load_model`` with every kerasseg layer, loss, metric and schedule
    registered first (no ``custom_objects``)."""
    from kerasseg.registration import register_all

    register_all()
    return keras.saving.load_model(path, **kwargs)


def _encoder_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if layer.name == ENCODER_NAME or layer.name.startswith(ENCODER_PREFIX)]


def encoder_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Top-level layers of ``model`` that form its encoder.

    The encoder is the nested model named ``"encoder"`` (DeepLabv3+, PSPNet) or
    the layers whose names start with ``"encoder_"`` (U-Nets, SegNet, FCN-8s);
    names survive a ``.keras`` reload.
    """
    return _encoder_layers(model)


def _all_sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    if isinstance(layer, keras.Model):
        out: list[keras.layers.Layer] = []
        for sub in layer.layers:
            out.append(sub)
            out.extend(_all_sublayers(sub) if isinstance(sub, keras.Model) else [])
        return out
    return [layer]


def freeze_encoder(model: keras.Model, trainable: bool = False, keep_batchnorm_frozen: bool = True) -> keras.Model:
    """Freeze (or unfreeze) the encoder for two-phase fine-tuning.

    Phase 1: ``freeze_encoder(model)`` trains only the decoder/head. Phase 2:
    ``freeze_encoder(model, trainable=True)`` unfreezes the encoder while, with
    ``keep_batchnorm_frozen=True``, its batch-norm layers stay frozen (they run
    in inference mode with their pretrained statistics, the usual practice for
    small medical batches). Frozen batch norms in Keras 3 use their moving
    statistics. Recompile the model after calling this.

    Returns:
        ``model`` (modified in place).

    Raises:
        ValueError: the model has no identifiable encoder.
    """
    layers = _encoder_layers(model)
    if not layers:
        raise ValueError(
            f"model {model.name!r} has no encoder layers (a nested model named {ENCODER_NAME!r} "
            f"or layers named {ENCODER_PREFIX!r}...)"
        )
    for layer in layers:
        layer.trainable = trainable
        for sub in _all_sublayers(layer):
            sub.trainable = trainable
        if trainable and keep_batchnorm_frozen:
            for sub in _all_sublayers(layer):
                if isinstance(sub, keras.layers.BatchNormalization):
                    sub.trainable = False
    return model
