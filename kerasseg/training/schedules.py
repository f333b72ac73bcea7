"""Optimizers and learning-rate schedules built from the config sections."""

from __future__ import annotations

from typing import Any

import keras

from kerasseg.errors import TrainingError


@keras.saving.register_keras_serializable(package="kerasseg")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear ramp from 0 to ``target`` over ``warmup_steps``, then ``after``
    (a schedule counted from the end of the warm-up)."""

    def __init__(self, after: Any, target: float, warmup_steps: int):
        self.after = after
        self.target = float(target)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        from keras import ops

        step = ops.cast(step, "float32")
        warm = self.target * step / float(max(1, self.warmup_steps))
        return ops.where(step < self.warmup_steps, warm, self.after(step - self.warmup_steps))

    def get_config(self) -> dict[str, Any]:
        return {
            "after": keras.optimizers.schedules.serialize(self.after),
            "target": self.target,
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LinearWarmup":
        config = dict(config)
        config["after"] = keras.optimizers.schedules.deserialize(config["after"])
        return cls(**config)


def make_schedule(
    *,
    name: str,
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    power: float = 0.9,
    min_learning_rate: float = 0.0,
) -> Any:
    """Keras learning-rate schedule (or a float for ``constant``).

    ``polynomial`` is DeepLab's poly policy: ``lr * (1 - t/T) ** power`` down to
    ``min_learning_rate``; ``cosine`` is a cosine decay to ``min_learning_rate``.
    Both start with ``warmup_steps`` of linear warm-up when given.
    """
    if name == "constant":
        return float(learning_rate)
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))
    decay_steps = max(1, total_steps - warmup_steps)
    if name == "cosine":
        if warmup_steps:
            return keras.optimizers.schedules.CosineDecay(
                0.0,
                decay_steps,
                alpha=min_learning_rate / learning_rate,
                warmup_target=learning_rate,
                warmup_steps=warmup_steps,
            )
        return keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps, alpha=min_learning_rate / learning_rate
        )
    if name == "polynomial":
        poly = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, decay_steps, end_learning_rate=min_learning_rate, power=power
        )
        return LinearWarmup(poly, learning_rate, warmup_steps) if warmup_steps else poly
    raise TrainingError(f"unknown learning-rate schedule {name!r}")


def make_optimizer(opt_config: Any, learning_rate: Any) -> Any:
    """Keras optimizer for ``OptimizerConfig`` with ``learning_rate`` (float or schedule)."""
    kwargs = {}
    if opt_config.clipnorm is not None:
        kwargs["clipnorm"] = float(opt_config.clipnorm)
    if opt_config.name == "adam":
        if opt_config.weight_decay:
            kwargs["weight_decay"] = opt_config.weight_decay
        return keras.optimizers.Adam(learning_rate, **kwargs)
    if opt_config.name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=opt_config.weight_decay or 0.004, **kwargs)
    if opt_config.name == "sgd":
        if opt_config.weight_decay:
            kwargs["weight_decay"] = opt_config.weight_decay
        momentum = 0.9 if opt_config.momentum is None else opt_config.momentum
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=bool(opt_config.nesterov), **kwargs)
    raise TrainingError(f"unknown optimizer {opt_config.name!r}")


__all__ = ["LinearWarmup", "make_schedule", "make_optimizer"]
