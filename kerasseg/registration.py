"""Registering kerasseg's Keras objects, so saved models load without ``custom_objects``.

A ``.keras`` file names its custom layers, losses, metrics and schedules by
their registered names (``kerasseg>ASPP``, ``kerasseg>DiceCrossEntropyLoss``);
Keras finds them only once the classes are registered, which happens when
their modules are imported. :func:`register_all` imports every such module.

``import kerasseg`` calls :func:`register_when_keras_loads`: when Keras is
already imported it registers at once; otherwise it registers right after
Keras's own import finishes (a one-shot import hook that watches for the
``keras`` package only and removes itself), so ``import kerasseg`` stays free
of TensorFlow and ``import kerasseg; keras.saving.load_model(path)`` still works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

# Modules whose import registers Keras objects that saved models may reference.
_MODULES = ("kerasseg.layers", "kerasseg.losses", "kerasseg.metrics", "kerasseg.training.schedules")


def register_all() -> None:
    """Register every kerasseg layer, loss, metric and learning-rate schedule with Keras."""
    for name in _MODULES:
        module = importlib.import_module(name)
        hook = getattr(module, "register_all", None)
        if callable(hook):
            hook()


def _register_quietly() -> None:
    try:
        register_all()
    except Exception as e:  # never break the user's `import keras`
        warnings.warn(f"kerasseg could not register its Keras objects ({e}); "
                      "load models with kerasseg.models.load_model", RuntimeWarning, stacklevel=2)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``keras`` to register afterwards."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "keras":
            return None
        _remove_hook()
        spec = importlib.util.find_spec("keras")
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _register_quietly()

        loader.exec_module = exec_then_register
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterKerasImport)]


def register_when_keras_loads() -> None:
    """Register now if Keras is imported, else right after it is (see the module docstring)."""
    if "keras" in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())


__all__ = ["register_all", "register_when_keras_loads"]
