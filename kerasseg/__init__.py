"""kerasseg: a TensorFlow/Keras model zoo for medical image segmentation.

Importing this package neither imports TensorFlow, nor prints, nor touches
the environment. Submodules are imported on first use (``kerasseg.models``,
``kerasseg.data``, ...). Its one effect is that kerasseg's layers, losses,
metrics and schedules get registered with Keras as soon as Keras is (or
already was) imported, so ``import kerasseg; keras.saving.load_model(path)``
loads kerasseg models without ``custom_objects`` (:mod:`kerasseg.registration`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "artifacts",
    "classes",
    "cli",
    "config",
    "data",
    "evaluation",
    "export",
    "errors",
    "inference",
    "layers",
    "losses",
    "metrics",
    "models",
    "postprocess",
    "predict_graph",
    "registration",
    "schema",
    "training",
)

__all__ = ["__version__", *_SUBMODULES]

from kerasseg.registration import register_when_keras_loads as _register_when_keras_loads  # noqa: E402

_register_when_keras_loads()


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
