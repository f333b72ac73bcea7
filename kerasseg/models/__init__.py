"""kerasseg.models: segmentation architectures, each faithful to its paper.

``build(name, *, input_shape, num_classes, **kwargs)`` builds a registered model
(``available()`` lists them); every builder is also importable directly:

| name | builder | paper |
| --- | --- | --- |
| ``unet`` | :func:`build_unet` | Ronneberger et al., MICCAI 2015 |
| ``attention_unet`` | :func:`build_attention_unet` | Oktay et al., MIDL 2018 |
| ``unet3d`` | :func:`build_unet3d` | Çiçek et al., MICCAI 2016 |
| ``attention_unet3d`` | :func:`build_attention_unet3d` | Oktay et al., MIDL 2018 |
| ``deeplabv3plus`` | :func:`build_deeplabv3plus` | Chen et al., ECCV 2018 |
| ``segnet`` | :func:`build_segnet` | Badrinarayanan et al., TPAMI 2017 |
| ``fcn8s`` | :func:`build_fcn8s` | Long et al., CVPR 2015 |
| ``pspnet`` | :func:`build_pspnet` | Zhao et al., CVPR 2017 |

Every model maps float32 ``(B, H, W, C)`` images to float32 ``(B, H, W, K)``
probabilities (softmax for ``num_classes >= 2``; sigmoid with ``K = 1`` for
``num_classes = 1``; ``output_activation=None`` gives logits), also under a
``mixed_float16`` policy. ``size_divisor(model)`` is the multiple ``H`` and ``W``
must be; ``freeze_encoder(model, ...)`` supports two-phase fine-tuning.

Importing this package does not import TensorFlow; the builders are loaded on
first use. Loading a saved ``.keras`` model needs the kerasseg layers
registered: use ``kerasseg.models.load_model(path)``, or call
``kerasseg.layers.register_all()`` before ``keras.saving.load_model``.
"""

from __future__ import annotations

import importlib
from typing import Any

from kerasseg.errors import ModelConfigError
from kerasseg.models.registry import available, build, get_builder, paper, spatial_dims

_LAZY = {
    "build_unet": "kerasseg.models.unet",
    "build_attention_unet": "kerasseg.models.unet",
    "build_unet3d": "kerasseg.models.unet3d",
    "build_attention_unet3d": "kerasseg.models.unet3d",
    "build_deeplabv3plus": "kerasseg.models.deeplabv3plus",
    "build_segnet": "kerasseg.models.segnet",
    "build_fcn8s": "kerasseg.models.fcn",
    "build_pspnet": "kerasseg.models.pspnet",
    "size_divisor": "kerasseg.models.utils",
    "freeze_encoder": "kerasseg.models.utils",
    "encoder_layers": "kerasseg.models.utils",
    "load_model": "kerasseg.models.utils",
}

__all__ = ["ModelConfigError", "available", "build", "get_builder", "paper", "spatial_dims", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
