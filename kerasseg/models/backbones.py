"""Encoders: dilated ``keras.applications`` backbones and a VGG16 (optionally with BN).

Dilated backbones (DeepLabv3+, PSPNet)
--------------------------------------
``keras.applications`` has no dilation option, so :func:`dilated_backbone` builds
the stock application (``weights=None``, ``"imagenet"`` through Keras' own
download, or a local weights file, exactly as ``keras.applications`` takes them),
then rewrites its functional config: every layer that would push the cumulative
stride past ``output_stride`` gets stride 1 and the stride is carried as a
dilation rate on the following convolutions (the DeepLab recipe: a unit that
lost its stride keeps the old rate, later ones use ``rate * stride``). Zero
padding layers that fed a removed stride are disabled and their convolution
uses ``"same"`` padding; remaining ``"valid"`` kxk convolutions without explicit
padding (Xception's stem) become ``"same"`` so every feature map is exactly
``input / stride`` (an "aligned" backbone, as DeepLab's own Xception). Kernel
shapes do not change, so the weights are copied 1:1 and layer names stay those of
``keras.applications`` (ImageNet weights load as usual). The result is wrapped as
a nested functional model named ``"encoder"`` that returns
``[low_level_features (stride 4), high_level_features (stride output_stride)]``.

VGG16 (SegNet, FCN-8s)
----------------------
:func:`vgg16_encoder` builds VGG16's 13 convolutions in the main graph with the
layer names of ``keras.applications.VGG16`` prefixed by ``encoder_`` (so they are
identifiable after a reload and ImageNet weights are copied by name), optionally
with batch norm after every convolution (SegNet) and with a pooling function of
the caller's choice (argmax pooling for SegNet).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable

import keras

from kerasseg.models._common import ENCODER_NAME, ENCODER_PREFIX, ModelConfigError

# name -> (keras.applications constructor, low-level feature spec, high-level feature spec)
# A spec is a layer name (its output) or ("input", name) for the input of a layer;
# None means the application's own output.
BACKBONES: dict[str, tuple[str, Any, Any]] = {
    "resnet50": ("ResNet50", "conv2_block3_out", None),
    "resnet101": ("ResNet101", "conv2_block3_out", None),
    "xception": ("Xception", ("input", "block3_sepconv1_act"), None),
    # DeepLab's MobileNetV2 uses the 320-channel last block, not the 1280 1x1 conv.
    "mobilenetv2": ("MobileNetV2", "block_3_expand_relu", "block_16_project_BN"),
}

_STRIDED = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D"}
_CONVS = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D"}


def check_encoder_weights(encoder_weights: Any, *, model: str) -> None:
    if encoder_weights is None or encoder_weights == "imagenet":
        return
    if isinstance(encoder_weights, (str, os.PathLike)):
        if not os.path.isfile(encoder_weights):
            raise ModelConfigError(
                f"{model}: encoder_weights file {os.fspath(encoder_weights)!r} does not exist "
                "(use None, 'imagenet' or the path of a keras.applications weights file)"
            )
        return
    raise ModelConfigError(f"{model}: encoder_weights must be None, 'imagenet' or a file path, got {encoder_weights!r}")


def _application(backbone: str, *, channels: int, encoder_weights: Any, alpha: float) -> keras.Model:
    ctor_name = BACKBONES[backbone][0]
    ctor = getattr(keras.applications, ctor_name)
    kwargs: dict[str, Any] = dict(include_top=False, weights=encoder_weights, input_shape=(None, None, channels))
    if backbone == "mobilenetv2":
        kwargs["alpha"] = alpha
    elif alpha != 1.0:
        raise ModelConfigError(f"alpha (width multiplier) applies to mobilenetv2 only, not {backbone!r}")
    if encoder_weights is not None:
        encoder_weights = os.fspath(encoder_weights)
        kwargs["weights"] = encoder_weights
    return ctor(**kwargs)


def _inbound_names(layer_cfg: dict) -> list[str]:
    names: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                names.append(obj["config"]["keras_history"][0])
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(layer_cfg.get("inbound_nodes", []))
    return names


def dilate_config(config: dict, output_stride: int) -> tuple[dict, dict[str, tuple[int, int]]]:
    """Rewrite a functional config so its cumulative stride stops at ``output_stride``.

    Returns the new config and ``{layer name: (stride, rate)}`` of every layer's output.
    """
    config = copy.deepcopy(config)
    by_name = {layer["name"]: layer for layer in config["layers"]}
    state: dict[str, tuple[int, int]] = {}
    for layer in config["layers"]:
        inbound = _inbound_names(layer)
        s_in = max((state[n][0] for n in inbound), default=1)
        r_in = max((state[n][1] for n in inbound), default=1)
        cls, cfg = layer["class_name"], layer["config"]
        s_out, r_out = s_in, r_in
        if cls in _STRIDED:
            stride = int(cfg["strides"][0]) if isinstance(cfg["strides"], (list, tuple)) else int(cfg["strides"])
            kernel = cfg.get("kernel_size", cfg.get("pool_size"))
            kernel = int(kernel[0]) if isinstance(kernel, (list, tuple)) else int(kernel)
            padded_by = [n for n in inbound if by_name[n]["class_name"] == "ZeroPadding2D"]
            if stride > 1 and s_in * stride > output_stride:
                cfg["strides"] = [1, 1]
                cfg["padding"] = "same"
                if cls in _CONVS and kernel > 1:
                    cfg["dilation_rate"] = [r_in, r_in]
                for pad in padded_by:
                    by_name[pad]["config"]["padding"] = [[0, 0], [0, 0]]
                r_out = r_in * stride
            else:
                if cls in _CONVS and kernel > 1:
                    if r_in > 1:
                        cfg["dilation_rate"] = [r_in, r_in]
                        cfg["padding"] = "same"
                        for pad in padded_by:
                            by_name[pad]["config"]["padding"] = [[0, 0], [0, 0]]
                    elif cfg.get("padding") == "valid" and not padded_by:
                        cfg["padding"] = "same"  # align stems such as Xception's
                s_out = s_in * stride
        state[layer["name"]] = (s_out, r_out)
    return config, state


def dilated_backbone(
    backbone: str,
    *,
    channels: int,
    output_stride: int,
    encoder_weights: Any = None,
    alpha: float = 1.0,
    model: str = "model",
) -> keras.Model:
    """Build a dilated ``keras.applications`` encoder.

    Args:
        backbone: one of :data:`BACKBONES` (``resnet50``, ``resnet101``,
            ``xception``, ``mobilenetv2``).
        channels: input channels of the encoder (3 when pretrained weights are used).
        output_stride: 8, 16 or 32; the last stage(s) are dilated below 32.
        encoder_weights: ``None``, ``"imagenet"`` or a local weights file.
        alpha: MobileNetV2 width multiplier.

    Returns:
        A functional model named ``"encoder"`` mapping ``(B, H, W, channels)`` to
        ``[low (B, H/4, W/4, C_low), high (B, H/os, W/os, C_high)]``.
    """
    if backbone not in BACKBONES:
        import difflib

        close = difflib.get_close_matches(str(backbone), list(BACKBONES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelConfigError(f"{model}: unknown backbone {backbone!r}; choose one of {list(BACKBONES)}{hint}")
    if output_stride not in (8, 16, 32):
        raise ModelConfigError(f"{model}: output_stride must be 8, 16 or 32, got {output_stride!r}")
    check_encoder_weights(encoder_weights, model=model)
    app = _application(backbone, channels=channels, encoder_weights=encoder_weights, alpha=alpha)
    config, state = dilate_config(app.get_config(), output_stride)
    dilated = keras.Model.from_config(config)
    dilated.set_weights(app.get_weights())
    _, low_spec, high_spec = BACKBONES[backbone]

    def feature(spec: Any) -> Any:
        if spec is None:
            return dilated.output
        if isinstance(spec, tuple):
            return dilated.get_layer(spec[1]).input
        return dilated.get_layer(spec).output

    encoder = keras.Model(dilated.input, [feature(low_spec), feature(high_spec)], name=ENCODER_NAME)
    return encoder


def vgg16_encoder(
    x: Any,
    *,
    base_filters: int = 64,
    batch_norm: bool = False,
    pool: Callable[[Any, str], Any] | None = None,
) -> list[Any]:
    """VGG16's 13 3x3 convolutions (Simonyan & Zisserman 2015) in the caller's graph.

    Widths ``base_filters * (1, 2, 4, 8, 8)`` in blocks of 2, 2, 3, 3, 3 convs;
    layer names ``encoder_block{b}_conv{i}`` (``keras.applications.VGG16`` names
    with the ``encoder_`` prefix). ``pool(x, name)`` pools each block's output
    (default: 2x2 max pooling) and may return anything (SegNet returns values and
    argmax indices).

    Returns:
        The list of the 5 pooling results (strides 2, 4, 8, 16, 32).
    """
    if pool is None:
        def pool(t: Any, name: str) -> Any:
            return keras.layers.MaxPooling2D(2, name=name)(t)

    widths = [base_filters * m for m in (1, 2, 4, 8, 8)]
    results = []
    for block, (width, convs) in enumerate(zip(widths, (2, 2, 3, 3, 3)), start=1):
        for i in range(1, convs + 1):
            name = f"{ENCODER_PREFIX}block{block}_conv{i}"
            x = keras.layers.Conv2D(
                width, 3, padding="same", use_bias=True, activation=None if batch_norm else "relu",
                kernel_initializer="he_normal" if batch_norm else "glorot_uniform", name=name,
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
                x = keras.layers.ReLU(name=f"{name}_relu")(x)
        out = pool(x, f"{ENCODER_PREFIX}block{block}_pool")
        results.append(out)
        x = out[0] if isinstance(out, (list, tuple)) else out
    return results


def load_vgg16_weights(model: keras.Model, encoder_weights: Any, *, model_name: str, base_filters: int) -> None:
    """Copy ``keras.applications.VGG16`` conv weights (ImageNet or a local file) by name."""
    if encoder_weights is None:
        return
    check_encoder_weights(encoder_weights, model=model_name)
    if base_filters != 64:
        raise ModelConfigError(f"{model_name}: pretrained VGG16 weights need base_filters=64, got {base_filters}")
    weights = encoder_weights if encoder_weights == "imagenet" else os.fspath(encoder_weights)
    vgg = keras.applications.VGG16(include_top=False, weights=weights, input_shape=(None, None, 3))
    for layer in vgg.layers:
        if isinstance(layer, keras.layers.Conv2D):
            target = model.get_layer(ENCODER_PREFIX + layer.name)
            kernel, bias = layer.get_weights()
            current = target.get_weights()
            if current[0].shape != kernel.shape:
                raise ModelConfigError(
                    f"{model_name}: cannot load VGG16 weights into {target.name}: "
                    f"shape {current[0].shape} vs {kernel.shape} (input channels must be 3 after adaptation)"
                )
            target.set_weights([kernel, bias])
