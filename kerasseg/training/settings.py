"""Config values translated into what the libraries take (no TensorFlow at import)."""

from __future__ import annotations

from typing import Any


def class_weights_setting(setting: Any) -> Any:
    """Map ``data.class_weights`` to ``load_dataset``'s ``class_weights`` argument."""
    if setting is False or setting is None:
        return None
    if setting is True:
        return "median_frequency"
    return setting


def mixed_precision_policy(setting: Any) -> str | None:
    """Keras dtype policy for ``training.mixed_precision`` (``None`` = leave float32).

    ``True`` means ``mixed_float16`` when a GPU is visible, else ``mixed_bfloat16``.
    """
    if setting is False or setting is None or setting == "float32":
        return None
    if setting is True:
        import tensorflow as tf

        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    return str(setting)


def loss_spec(config: Any) -> Any:
    """``kerasseg.losses.get`` spec of ``config.loss`` (a name, or a dict with options)."""
    return {"name": config.loss.name, **config.loss.options} if config.loss.options else config.loss.name


__all__ = ["class_weights_setting", "mixed_precision_policy", "loss_spec"]
