"""The compute dtype a trained model runs in, and a float32 copy of a mixed-precision model.

A model trained under ``mixed_bfloat16`` (``training.mixed_precision: auto`` on a
CPU with native bfloat16) keeps that dtype policy in its ``.keras`` file, so it
also *infers* in bfloat16 wherever it is loaded. On a CPU without native
bfloat16 TensorFlow emulates it, several times slower than float32; there
:func:`kerasseg.artifacts.load_for_inference` swaps in :func:`as_float32`, a copy
computing in float32 with the same (float32) weights.
"""

from __future__ import annotations

from typing import Any


def compute_dtype(model: Any) -> str:
    """The compute dtype of ``model``'s layers: ``"float32"``, ``"bfloat16"`` or ``"float16"``
    (the lowest precision any layer computes in)."""
    dtypes = {str(getattr(layer, "compute_dtype", "float32")) for layer in _layers(model)}
    for low in ("float16", "bfloat16"):
        if low in dtypes:
            return low
    return "float32"


def _layers(model: Any) -> list[Any]:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_layers(layer))
    return found


def _float32_policies(value: Any) -> Any:
    """``value`` (a serialized Keras object) with every mixed dtype policy replaced by float32."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" and isinstance(value.get("config"), dict):
            name = str(value["config"].get("name", ""))
            if name.startswith("mixed_"):
                return {**value, "config": {**value["config"], "name": "float32"}}
        return {key: _float32_policies(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_float32_policies(item) for item in value]
    if isinstance(value, str) and value.startswith("mixed_"):
        return "float32"
    return value


def as_float32(model: Any) -> Any:
    """``model`` itself when it computes in float32, else a copy that does, with its weights.

    Mixed-precision policies keep their variables in float32, so the copy holds
    exactly the trained weights; only the arithmetic differs (its outputs differ
    from the bfloat16 model's by bfloat16 rounding, about 1e-2 relative).
    """
    import keras

    if compute_dtype(model) == "float32":
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


__all__ = ["as_float32", "compute_dtype"]
