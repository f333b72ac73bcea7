"""Batch-norm policy: momentum for models trained from scratch, and re-estimation.

Why this exists. ``BatchNormalization`` normalizes with the statistics of the
current batch in training mode but with *moving* averages in inference mode.
``keras.applications`` encoders ship with momentum 0.99 (ResNet, Xception) or
0.999 (MobileNetV2): values meant for ImageNet-scale runs of many thousand
steps starting from pretrained statistics. A medical model trained **from
scratch** for a few hundred steps then validates with moving statistics that
are still close to their initial values (mean 0, variance 1) while the real
activations are nothing like that, and predicts garbage in inference mode
(observed: DeepLabv3+ lesion Dice 0.61 in training mode, 0.000 in inference
mode on real ultrasound).

The policy, applied by every builder and by :func:`kerasseg.training.fit`:

* builders take ``batchnorm_momentum``; ``None`` (the default) means
  :data:`FROM_SCRATCH_MOMENTUM` (0.9, PyTorch's default, so the moving
  averages follow the last few dozen batches) for layers trained from scratch,
  and the application's own momentum for encoders loaded with pretrained
  weights (their statistics start meaningful);
* :func:`recalibrate` re-estimates the moving statistics of every trainable
  batch-norm layer as the plain average over ``steps`` training batches
  ("precise BN"); ``fit`` runs it before every validation and at the end of
  training, so validation, ``best.keras``, ``last.keras`` and the exported
  model use statistics of the final weights, whatever the momentum.
"""

from __future__ import annotations

from typing import Any, Iterable

FROM_SCRATCH_MOMENTUM = 0.9


def resolve_momentum(batchnorm_momentum: float | None, *, pretrained: bool, default: float = 0.99) -> float:
    """The momentum to give a batch-norm layer.

    Args:
        batchnorm_momentum: the builder argument (``None`` = policy default).
        pretrained: the layer's statistics come from pretrained weights.
        default: the momentum the layer's source uses (e.g. 0.999 for
            MobileNetV2) — kept for pretrained layers.
    """
    if batchnorm_momentum is not None:
        value = float(batchnorm_momentum)
        if not 0.0 <= value < 1.0:
            from kerasseg.errors import ModelConfigError

            raise ModelConfigError(f"batchnorm_momentum must be in [0, 1), got {batchnorm_momentum!r}")
        return value
    return float(default) if pretrained else FROM_SCRATCH_MOMENTUM


def set_batchnorm_momentum(model: Any, momentum: float, *, skip: Iterable[Any] = ()) -> None:
    """Set ``momentum`` on the plain ``BatchNormalization`` layers of ``model``.

    Walks ``model.layers`` and nested functional models (a backbone named
    ``"encoder"``), not into custom layers: those (``ASPP``, ``AttentionGate``)
    take the momentum as a constructor argument so it survives their own
    ``get_config``. Layers inside a model listed in ``skip`` keep theirs. The
    value is written into each layer's config, so it survives a ``.keras`` reload.
    """
    import keras

    skipped = {id(m) for m in skip}

    def walk(container: Any) -> None:
        for layer in container.layers:
            if id(layer) in skipped:
                continue
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(momentum)
            elif isinstance(layer, keras.Model):
                walk(layer)

    walk(model)


def batchnorm_layers(model: Any, *, trainable_only: bool = True) -> list[Any]:
    """Every ``BatchNormalization`` layer of ``model``, nested models included.

    With ``trainable_only`` the frozen ones (which run in inference mode even
    when the model is called with ``training=True``) are left out.
    """
    import keras

    found: list[Any] = []
    seen: set[int] = set()

    def walk(layer: Any, parent_trainable: bool) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        trainable = parent_trainable and layer.trainable
        if isinstance(layer, keras.layers.BatchNormalization):
            if trainable or not trainable_only:
                found.append(layer)
            return
        # ``_layers`` holds the sublayers of any Keras 3 layer (a functional
        # model's ``layers`` and a custom layer's own sublayers alike).
        for sub in getattr(layer, "_layers", None) or []:
            walk(sub, trainable)

    walk(model, True)
    return found


def recalibrate(model: Any, batches: Iterable[Any], *, steps: int) -> int:
    """Re-estimate the moving mean/variance of every trainable batch-norm layer.

    Runs the model in training mode (without updating any weight) on up to
    ``steps`` batches and sets each layer's moving statistics to the plain
    average of its per-batch mean and variance, instead of the exponential
    average the layer keeps during training.

    Args:
        model: a built Keras model.
        batches: an iterable of input batches ``(B, H, W, C)`` or of tuples whose
            first element is the input batch (a ``tf.data.Dataset`` of
            ``(images, masks, weights)`` works).
        steps: number of batches to average (>= 1).

    Returns:
        The number of batches used (0 when the model has no trainable batch
        norm, or ``batches`` was empty; the statistics are then unchanged).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    layers = batchnorm_layers(model)
    if not layers or steps < 1:
        return 0
    saved = [layer.momentum for layer in layers]
    originals = [(keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance))
                 for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # each call then leaves exactly the batch statistics

    @tf.function(reduce_retracing=True, autograph=False)
    def batch_statistics(x: Any) -> list[Any]:
        model(x, training=True)
        return [v for layer in layers for v in (layer.moving_mean.value, layer.moving_variance.value)]

    sums: list[Any] | None = None
    used = 0
    try:
        for batch in batches:
            if used >= steps:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            values = [np.asarray(v, np.float64) for v in batch_statistics(x)]
            sums = values if sums is None else [s + v for s, v in zip(sums, values)]
            used += 1
    except BaseException:
        _assign(layers, originals)
        raise
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    if sums is None:
        _assign(layers, originals)
        return 0
    _assign(layers, [(sums[2 * i] / used, sums[2 * i + 1] / used) for i in range(len(layers))])
    return used


def _assign(layers: list[Any], statistics: list[tuple[Any, Any]]) -> None:
    for layer, (mean, variance) in zip(layers, statistics):
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))


__all__ = ["FROM_SCRATCH_MOMENTUM", "resolve_momentum", "set_batchnorm_momentum", "batchnorm_layers", "recalibrate"]
