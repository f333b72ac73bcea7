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

    ``"auto"`` (the default) means ``mixed_bfloat16`` on a CPU that computes
    bfloat16 natively (AVX512_BF16, AMX-BF16) when no GPU is visible, float32
    everywhere else: measured on such a CPU it trains U-Net and DeepLabv3+ faster
    at the same validation Dice (``train_bf16_*`` in benchmarks/RESULTS.md).
    ``True`` means ``mixed_float16`` when a GPU is visible, else ``mixed_bfloat16``.
    """
    if setting is False or setting is None or setting == "float32":
        return None
    if setting is True or setting == "auto":
        import tensorflow as tf

        from kerasseg.tf_runtime import cpu_has_bf16

        if tf.config.list_physical_devices("GPU"):
            return "mixed_float16" if setting is True else None
        return "mixed_bfloat16" if setting is True or cpu_has_bf16() else None
    return str(setting)


def emulated_bfloat16_warning(policy: str | None) -> str | None:
    """A warning when ``policy`` computes in bfloat16 on a CPU that only emulates it, else ``None``."""
    if policy != "mixed_bfloat16":
        return None
    import tensorflow as tf

    from kerasseg.tf_runtime import cpu_has_bf16

    if tf.config.list_physical_devices("GPU") or cpu_has_bf16():
        return None
    return ("warning: mixed_bfloat16 on a CPU without native bfloat16 (no AVX512_BF16/AMX-BF16): TensorFlow "
            "emulates it, several times slower than float32; set training.mixed_precision: auto (or false)")


def loss_spec(config: Any) -> Any:
    """``kerasseg.losses.get`` spec of ``config.loss`` (a name, or a dict with options)."""
    return {"name": config.loss.name, **config.loss.options} if config.loss.options else config.loss.name


__all__ = ["class_weights_setting", "emulated_bfloat16_warning", "mixed_precision_policy", "loss_spec"]
