"""Config-driven training: ``fit(config) -> FitResult``.

``fit`` builds, under the configured ``tf.distribute`` strategy, the data
pipeline (``kerasseg.data.load_dataset``), the model (``kerasseg.models.build``),
the loss (``kerasseg.losses.get``), the metrics
(``kerasseg.metrics.default_metrics``) and the optimizer with its
learning-rate schedule, then runs ``model.fit`` once per phase.

The run folder (``config.run_dir``) ends up holding::

    config.yaml         the resolved configuration (every default written out)
    history.csv         one row per epoch: losses, metrics, learning rate
    best.keras          the model with the best monitored validation score so far
                        (``training.monitor``, default ``val_foreground_dice``:
                        mean Dice over the classes that are not background;
                        ties go to the later epoch)
    best.json           {"epoch": ..., "monitor": ..., "value": ...} of best.keras
    last.keras          the model after the last finished epoch
    model_info.json     class names, resolved normalization, channels, the
                        inference geometry, CRF settings: what evaluate,
                        predict and export need (kerasseg.artifacts.ModelInfo)
    logs/               TensorBoard event files
    learning_curves.png loss, mean Dice and per-class validation Dice per epoch
    backup/             the resumable training state while a run is unfinished

Validation scores whole stored images exactly as ``kerasseg evaluate`` does
(the model's inference geometry, one dataset-level confusion matrix), after
the batch-norm statistics are re-estimated for the epoch's weights
(:mod:`kerasseg.models.batchnorm`), so the score that picks ``best.keras`` is
the score the model gets afterwards.

Fault tolerance: the training state is backed up atomically at the end of
every epoch; running the same command again after a crash or a kill resumes
at the first unfinished epoch (``history.csv`` is trimmed to the finished
ones). A resume with another model or data setup is refused before anything
is written. Finished runs delete ``backup/``; running the same config again
then starts afresh. A non-finite loss or weight stops the run with a
``TrainingError``; no non-finite model is ever saved.

Two-phase fine-tuning (``finetune.frozen_epochs > 0``): the encoder is frozen
(``kerasseg.models.freeze_encoder``) for the first ``frozen_epochs`` epochs,
then everything trains at ``learning_rate * finetune.learning_rate_factor``
for the remaining epochs. Each phase is resumable on its own.

Only the chief writes to ``run_dir``; other workers of a multi-worker run
write to temporary folders that are removed at the end.

Modules: :mod:`~kerasseg.training.trainer` (``fit``: the steps of a run),
:mod:`~kerasseg.training.phases` (the phase loop),
:mod:`~kerasseg.training.callbacks`, :mod:`~kerasseg.training.schedules`
(optimizers and learning-rate schedules), :mod:`~kerasseg.training.run_dir`
(the files of a run folder), :mod:`~kerasseg.training.curves` (the learning-curve
plot) and :mod:`~kerasseg.training.keras_workarounds` (every patch of private
Keras internals, each naming its upstream issue). Importing this package does
not import TensorFlow; the Keras-dependent modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from kerasseg.errors import TrainingError
from kerasseg.training.run_dir import read_history
from kerasseg.training.settings import class_weights_setting, mixed_precision_policy

_LAZY = {
    "fit": "kerasseg.training.trainer",
    "FitResult": "kerasseg.training.trainer",
    "make_schedule": "kerasseg.training.schedules",
    "make_optimizer": "kerasseg.training.schedules",
    "LinearWarmup": "kerasseg.training.schedules",
    "plot_learning_curves": "kerasseg.training.curves",
    "BatchNormRecalibration": "kerasseg.training.callbacks",
    "FullImageValidation": "kerasseg.training.callbacks",
    "ModelCheckpoints": "kerasseg.training.callbacks",
    "NonFiniteGuard": "kerasseg.training.callbacks",
    "EpochBackup": "kerasseg.training.callbacks",
    "LearningRateLogger": "kerasseg.training.callbacks",
    "ScalarSummaries": "kerasseg.training.callbacks",
    "TimeBudget": "kerasseg.training.callbacks",
    "tensorboard_callback": "kerasseg.training.callbacks",
}

__all__ = ["TrainingError", "read_history", "class_weights_setting", "mixed_precision_policy", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
