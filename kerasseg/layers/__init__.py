"""kerasseg.layers: custom Keras layers used by the model zoo.

Every layer here is registered with
``keras.saving.register_keras_serializable(package="kerasseg")`` and round-trips
all constructor arguments through ``get_config``. A model saved to ``.keras``
reloads without ``custom_objects`` once this package (or ``kerasseg.models``)
has been imported; the layers are imported lazily on first attribute access, so
``import kerasseg.layers`` alone does not import TensorFlow, while
``kerasseg.layers.register_all()`` imports (and so registers) every layer.

| layer | module |
| --- | --- |
| ``MaxPoolingWithArgmax2D``, ``MaxUnpooling2D`` | ``kerasseg.layers.pooling`` (SegNet) |
| ``AttentionGate`` | ``kerasseg.layers.attention`` (Attention U-Net) |
| ``ASPP`` | ``kerasseg.layers.aspp`` (DeepLabv3+) |
| ``AdaptiveAveragePooling2D``, ``ResizeToMatch``, ``ResizeByFactor`` | ``kerasseg.layers.resize`` (PSPNet, DeepLabv3+, bilinear U-Net) |
| ``BilinearKernel`` (initializer) | ``kerasseg.layers.initializers`` (FCN-8s) |
| ``DenseCRF`` | ``kerasseg.layers.dense_crf`` (CRF-as-RNN style dense CRF) |
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MaxPoolingWithArgmax2D": "pooling",
    "MaxUnpooling2D": "pooling",
    "AttentionGate": "attention",
    "ASPP": "aspp",
    "AdaptiveAveragePooling2D": "resize",
    "ResizeToMatch": "resize",
    "ResizeByFactor": "resize",
    "BilinearKernel": "initializers",
    "DenseCRF": "dense_crf",
}

# Modules whose import registers the model-zoo layers (dense_crf is optional here:
# it belongs to the TF-CRF work and is registered when it is imported).
_ZOO_MODULES = ("pooling", "attention", "aspp", "resize", "initializers")

__all__ = [*_EXPORTS, "register_all"]


def register_all() -> None:
    """Import every layer module so that all kerasseg layers are registered with Keras."""
    for module in _ZOO_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    try:
        importlib.import_module(f"{__name__}.dense_crf")
    except ModuleNotFoundError as exc:  # pragma: no cover - only while dense_crf is absent
        if exc.name != f"{__name__}.dense_crf":
            raise


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
