"""kerasseg: a TensorFlow/Keras model zoo for medical image segmentation.

Importing this package has no side effects: it neither imports TensorFlow
eagerly, nor prints, nor touches the environment. Submodules are imported on
first use (``kerasseg.models``, ``kerasseg.data``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "cli",
    "config",
    "data",
    "evaluation",
    "export",
    "inference",
    "layers",
    "losses",
    "metrics",
    "models",
    "postprocess",
    "schema",
    "training",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
