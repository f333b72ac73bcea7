"""Measurements on this machine: activation memory of a model and a short timed training run."""

from __future__ import annotations

import copy
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable

from kerasseg.config import Config
from kerasseg.planning.rules import Timing

# bytes per activation element kept for the backward pass: float32 value + gradient + one temporary
_BYTES_PER_ACTIVATION = 12


def _output_elements(model: Any) -> int:
    import numpy as np

    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _output_elements(layer)
            continue
        if isinstance(layer, keras.layers.InputLayer):
            continue
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        for tensor in outputs:
            shape = [d for d in tensor.shape[1:]]
            if all(d is not None for d in shape):
                total += int(np.prod(shape))
    return total


def activation_bytes(config: Config, *, channels: int, num_classes: int) -> float:
    """Training memory of one example (patch) at ``config.data.image_size``: every layer's output
    kept for the backward pass (value, gradient and a temporary, float32)."""
    import keras

    from kerasseg import models

    model = models.build(config.model.name, input_shape=(*config.data.image_size, channels),
                         num_classes=num_classes, **config.model.options)
    try:
        return float(_output_elements(model) * _BYTES_PER_ACTIVATION)
    finally:
        del model
        keras.backend.clear_session()


def _timer_class():
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Wall-clock times of every batch end and epoch boundary of a run."""

        def __init__(self) -> None:
            super().__init__()
            self.batch_ends: dict[int, list[float]] = {}
            self.epoch_begins: dict[int, float] = {}
            self.epoch_ends: dict[int, float] = {}
            self._epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch = epoch
            self.epoch_begins[epoch] = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.batch_ends.setdefault(self._epoch, []).append(time.perf_counter())

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch_ends[epoch] = time.perf_counter()

    return StepTimer


def time_training(config: Config, *, steps: int = 5, log: Callable[[str], None] | None = None) -> Timing:
    """Run ``config`` for two short epochs of ``steps`` steps in a temporary run folder and time it.

    The second epoch gives the steady step time (data pipeline included) and
    the cost of an epoch end (batch-norm re-estimation, full-image validation,
    checkpoints); the first batch gives the start-up cost (building, tracing).
    The temporary folder is removed afterwards.
    """
    from kerasseg import training

    probe = copy.deepcopy(config)
    probe.training.epochs = 2
    probe.training.steps_per_epoch = steps
    probe.training.max_minutes = None
    probe.training.verbose = 0
    probe.schedule.warmup_epochs = 0
    probe.callbacks.tensorboard = False
    probe.callbacks.backup = False
    probe.callbacks.learning_curves = False
    probe.callbacks.early_stopping_patience = None
    folder = tempfile.mkdtemp(prefix=".kerasseg-tmp-plan-probe-")
    probe.run_dir = os.path.join(folder, "run")
    timer = _timer_class()()
    if log:
        log(f"timing probe: 2 epochs of {steps} steps of {config.model.name} on this machine ...")
    started = time.perf_counter()
    try:
        training.fit(probe, callbacks=[timer])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started
    second = timer.batch_ends.get(1) or []
    if len(second) < 2:
        raise RuntimeError("the timing probe recorded too few steps")
    gaps = [b - a for a, b in zip([timer.epoch_begins[1]] + second[:-1], second)]
    step = statistics.median(gaps)
    epoch_end = timer.epoch_ends[1] - second[-1]
    startup = max(0.0, timer.batch_ends[0][0] - started - step)
    return Timing(step_seconds=step, epoch_end_seconds=epoch_end, startup_seconds=startup, probe_seconds=elapsed)


BFLOAT16 = "mixed_bfloat16"


def choose_cpu_precision(config: Config, *, steps: int = 5,
                         log: Callable[[str], None] | None = None) -> tuple[Any, Timing, str]:
    """Time ``config`` in float32 and in ``mixed_bfloat16`` on this CPU and keep the faster.

    For CPUs with native bfloat16 (AVX512_BF16, AMX), where the gain depends on
    the model and the CPU; elsewhere bfloat16 is emulated and always slower.

    Returns:
        ``(training.mixed_precision setting, that setting's Timing, reason)``;
        the setting is ``False`` (float32) or ``"mixed_bfloat16"``.
    """
    timings: dict[Any, Timing] = {}
    for setting in (False, BFLOAT16):
        trial = copy.deepcopy(config)
        trial.training.mixed_precision = setting
        timings[setting] = time_training(trial, steps=steps, log=log)
    fp32, bf16 = timings[False].step_seconds, timings[BFLOAT16].step_seconds
    best = BFLOAT16 if bf16 < fp32 else False
    reason = (f"timed on this CPU (native bfloat16): a step took {bf16:.3g} s in mixed_bfloat16 and {fp32:.3g} s "
              f"in float32; {'mixed_bfloat16' if best else 'float32'} is faster")
    return best, timings[best], reason


__all__ = ["BFLOAT16", "activation_bytes", "choose_cpu_precision", "time_training"]
