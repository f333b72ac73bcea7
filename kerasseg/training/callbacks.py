"""The Keras callbacks of a training run.

Order matters at the end of an epoch (``fit`` builds the list in this order):

1. :class:`BatchNormRecalibration` re-estimates batch-norm statistics for the
   epoch's final weights (see :mod:`kerasseg.models.batchnorm`);
2. :class:`FullImageValidation` scores the validation split the way
   ``kerasseg evaluate`` does — whole stored images, the model's inference
   geometry, the same evaluator — and adds ``val_*`` to the epoch's logs;
3. :class:`NonFiniteGuard` stops the run on a non-finite loss or weight;
4. :class:`ModelCheckpoints` writes ``last.keras`` and, when the monitored
   value is at least as good as the best so far, ``best.keras``;
5. the learning-rate logger, ``CSVLogger`` and TensorBoard record the epoch
   (early stopping and the time budget may then end the run);
6. :class:`EpochBackup` writes the resumable training state, last, so an epoch
   counts as finished only once everything above has recorded it.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import keras
import numpy as np

from kerasseg.atomic_files import replacing, write_json
from kerasseg.schema import IGNORE_INDEX

BACKUP_WEIGHTS_PREFIX = "epoch-"
BACKUP_STATE_FILENAME = "state.json"


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the value at the epoch's end) to the epoch logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        try:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        except Exception:  # an optimizer without a readable rate: log nothing
            pass


class BatchNormRecalibration(keras.callbacks.Callback):
    """Re-estimate batch-norm moving statistics at the end of every epoch.

    Args:
        batches: an iterable of training batches (``(images, ...)`` tuples);
            an iterator is taken once and reused across epochs.
        steps: batches averaged per re-estimation.
    """

    def __init__(self, batches: Iterable[Any], *, steps: int):
        super().__init__()
        self._source = batches
        self._iterator: Iterator[Any] | None = None
        self.steps = int(steps)
        self.last_steps = 0

    def recalibrate(self) -> int:
        from kerasseg.models.batchnorm import recalibrate

        if self._iterator is None:
            self._iterator = iter(self._source)
        self.last_steps = recalibrate(self.model, self._iterator, steps=self.steps)
        return self.last_steps

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.steps > 0:
            self.recalibrate()


class FullImageValidation(keras.callbacks.Callback):
    """Validation on whole stored images with the model's inference geometry.

    The scores are those of ``kerasseg evaluate`` on the same split (one
    dataset-level confusion matrix, :class:`kerasseg.evaluation.SegmentationEvaluator`),
    so the model chosen by them is scored the same way afterwards.

    Adds to the epoch logs: ``val_loss`` (the training loss on each whole
    image, averaged over images), ``val_mean_dice``, ``val_mean_iou``,
    ``val_pixel_accuracy``, ``val_foreground_dice`` (mean Dice over the
    foreground classes, :func:`kerasseg.classes.foreground_indices`) and
    ``val_dice_<class>`` / ``val_iou_<class>`` per class.

    Args:
        examples: callable returning an iterable of ``(image, mask)`` numpy
            pairs (stored ``(H, W, C)`` image, ``(H, W)`` labels with 255 = ignore),
            or ``(image, mask, context)`` where ``context`` holds keyword
            arguments for the predictor (a volume's ``spacing``).
        predictor: callable mapping one raw image (volume) to ``(H, W, K)``
            (``(D, H, W, K)``) probabilities.
        class_names: one name per class.
        loss_fn: the training loss (``y_true, y_pred, sample_weight``), or ``None``.
        ignore_index: ignored label in the masks.
        limit: validate on the first ``limit`` images only (``None``: all).
    """

    def __init__(self, examples: Callable[[], Iterable[tuple[Any, Any] | tuple[Any, Any, dict[str, Any]]]],
                 predictor: Callable[[Any], Any], *,
                 class_names: Sequence[str], loss_fn: Any = None, ignore_index: int = IGNORE_INDEX,
                 limit: int | None = None):
        super().__init__()
        self.examples = examples
        self.predictor = predictor
        self.class_names = list(class_names)
        self.loss_fn = loss_fn
        self.ignore_index = int(ignore_index)
        self.limit = limit
        self.last_report: dict | None = None

    def evaluate(self) -> dict[str, float]:
        from kerasseg.classes import foreground_indices
        from kerasseg.evaluation import SegmentationEvaluator
        from kerasseg.metrics import class_metric_names

        evaluator = SegmentationEvaluator(len(self.class_names), self.class_names, surface_metrics=False,
                                          ignore_index=self.ignore_index)
        losses = []
        for index, example in enumerate(self.examples()):
            if self.limit is not None and index >= self.limit:
                break
            image, mask = example[0], example[1]
            context: dict[str, Any] = example[2] if len(example) > 2 else {}  # e.g. a volume's spacing
            probs = np.asarray(self.predictor(image, **context), np.float32)
            evaluator.update(mask, probs)
            if self.loss_fn is not None:
                valid = mask != self.ignore_index
                labels = np.where(valid, mask, 0).astype(np.int32)
                value = self.loss_fn(labels[None], probs[None], valid[None].astype(np.float32))
                losses.append(float(keras.ops.convert_to_numpy(value)))
        report = evaluator.result()
        self.last_report = report
        per_class = report["per_class"]
        logs: dict[str, float] = {
            "val_mean_dice": float(report["mean_dice"]),
            "val_mean_iou": float(report["mean_iou"]),
            "val_pixel_accuracy": float(report["pixel_accuracy"]),
        }
        dice = [float(per_class[name]["dice"]) for name in self.class_names]
        logs["val_foreground_dice"] = float(np.mean([dice[i] for i in foreground_indices(self.class_names)]))
        for i, (name, key) in enumerate(zip(self.class_names, class_metric_names(self.class_names))):
            logs[f"val_dice_{key}"] = dice[i]
            logs[f"val_iou_{key}"] = float(per_class[name]["iou"])
        if self.loss_fn is not None:
            logs["val_loss"] = float(np.mean(losses)) if losses else float("nan")
        return logs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs.update(self.evaluate())


def weights_are_finite(model: Any) -> bool:
    """True when every weight of ``model`` is finite."""
    return all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights
               if np.issubdtype(np.dtype(w.dtype), np.floating))


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop training on the first non-finite loss (after that batch) or weight (at epoch end).

    ``failure`` holds a message saying where it happened; :class:`ModelCheckpoints`
    saves nothing once it is set, so a diverged model never becomes ``best.keras``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or self.failure:
            return
        value = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(value):
            self.failure = (f"the training loss became {value} at epoch {self._epoch + 1}, step {batch + 1}")
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.failure is None and not weights_are_finite(self.model):
            self.failure = f"the model weights became non-finite during epoch {epoch + 1}"
        if self.failure is not None:
            self.model.stop_training = True


class ModelCheckpoints(keras.callbacks.Callback):
    """Write ``last.keras`` every epoch and ``best.keras`` when ``monitor`` is at least as good.

    Ties go to the later epoch (a model that keeps its score while training on
    is the better bet than an early one, and an untrained model that scores
    like an all-background prediction must not stay "best"). Files are written
    atomically; ``state_path`` (``best.json``) records the best epoch and value
    so a resumed run keeps comparing against the real best.

    Args:
        best_path, last_path: the two model files.
        monitor: the logged value to maximise (e.g. ``val_foreground_dice``).
        state_path: ``best.json``.
        best, best_epoch: the best so far (from an earlier invocation).
        guard: a :class:`NonFiniteGuard`; nothing is saved once it has fired.
        on_first_save: called once, after the first model file is written.
    """

    def __init__(self, best_path: str, last_path: str, *, monitor: str, state_path: str,
                 best: float | None = None, best_epoch: int | None = None,
                 guard: NonFiniteGuard | None = None, on_first_save: Callable[[], None] | None = None):
        super().__init__()
        self.best_path = best_path
        self.last_path = last_path
        self.monitor = monitor
        self.state_path = state_path
        self.best = best
        self.best_epoch = best_epoch
        self.guard = guard
        self.on_first_save = on_first_save

    def _save(self, path: str) -> None:
        with replacing(path) as tmp:
            self.model.save(tmp, overwrite=True)
        if self.on_first_save is not None:
            self.on_first_save()
            self.on_first_save = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.guard is not None and self.guard.failure:
            return
        self._save(self.last_path)
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value) or (self.best is not None and value < self.best):
            return
        self.best, self.best_epoch = value, epoch + 1
        self._save(self.best_path)
        write_json(self.state_path, {"epoch": self.best_epoch, "monitor": self.monitor, "value": value})


class EpochBackup(keras.callbacks.Callback):
    """The resumable training state, written atomically at the end of every epoch.

    ``backup_dir/epoch-000N.weights.h5`` holds the model and optimizer state
    after epoch ``N``; ``backup_dir/state.json`` names it and is replaced only
    once the weights file is complete, then older weight files are removed. A
    kill at any moment leaves ``state.json`` pointing at a complete file, so a
    rerun resumes from the last finished epoch (:func:`read_backup`).
    """

    def __init__(self, backup_dir: str):
        super().__init__()
        self.backup_dir = backup_dir

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"{BACKUP_WEIGHTS_PREFIX}{epoch + 1:04d}.weights.h5"
        final = os.path.join(self.backup_dir, name)
        with replacing(final) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        write_json(os.path.join(self.backup_dir, BACKUP_STATE_FILENAME), {"epoch": epoch + 1, "weights": name})
        for other in os.listdir(self.backup_dir):
            if other.startswith(BACKUP_WEIGHTS_PREFIX) and other != name:
                try:
                    os.remove(os.path.join(self.backup_dir, other))
                except OSError:
                    pass


def read_backup(backup_dir: str) -> tuple[int, str | None]:
    """``(finished epochs, weights file)`` recorded in ``backup_dir`` (``(0, None)`` when none)."""
    path = os.path.join(backup_dir, BACKUP_STATE_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        weights = os.path.join(backup_dir, str(state["weights"]))
        epoch = int(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, None
    if not os.path.isfile(weights):
        return 0, None
    return epoch, weights


class _TrainingClock(keras.callbacks.Callback):
    """Wall-clock seconds spent inside ``fit`` calls: over all phases, plus ``already_spent`` seconds."""

    def __init__(self, already_spent: float = 0.0):
        super().__init__()
        self.spent = float(already_spent)
        self._started: float | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._started is not None:
            self.spent += time.perf_counter() - self._started
            self._started = None

    def elapsed(self) -> float:
        return self.spent + (time.perf_counter() - self._started if self._started is not None else 0.0)


class TimeBudget(_TrainingClock):
    """Stop after the epoch during which ``minutes`` of training have passed, over all phases."""

    def __init__(self, minutes: float, *, already_spent_seconds: float = 0.0):
        super().__init__(already_spent_seconds)
        self.seconds = float(minutes) * 60.0
        self.exhausted = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.elapsed() >= self.seconds:
            self.exhausted = True
            self.model.stop_training = True


class ElapsedMinutes(_TrainingClock):
    """Adds ``minutes`` (wall-clock training minutes at the epoch's end, over all phases and,
    through ``already_spent_minutes``, earlier invocations of a resumed run) to the epoch logs,
    so ``history.csv`` holds validation scores against time."""

    def __init__(self, *, already_spent_minutes: float = 0.0):
        super().__init__(float(already_spent_minutes) * 60.0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["minutes"] = round(self.elapsed() / 60.0, 4)


class ScalarSummaries(keras.callbacks.Callback):
    """Per-epoch scalars as TensorBoard event files, written with TensorFlow's
    core summary ops (``logs/train`` and ``logs/validation``, tags
    ``epoch_<metric>`` like Keras' own callback). Used when the
    ``tensorboard`` package, which Keras' ``TensorBoard`` callback needs and
    TensorFlow >= 2.20 no longer installs, is absent."""

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers: dict = {}

    def _writer(self, name: str) -> Any:
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        for key, value in (logs or {}).items():
            run, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(run).as_default():
                tf.summary.write(f"epoch_{tag}", tf.constant(float(value), tf.float32), step=epoch,
                                 metadata=metadata)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def tensorboard_callback(log_dir: str) -> Any:
    """Keras' ``TensorBoard`` callback when the ``tensorboard`` package is
    installed, else :class:`ScalarSummaries` (scalars only, same layout)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return keras.callbacks.TensorBoard(log_dir)
    return ScalarSummaries(log_dir)


__all__ = [
    "LearningRateLogger",
    "BatchNormRecalibration",
    "FullImageValidation",
    "weights_are_finite",
    "NonFiniteGuard",
    "ModelCheckpoints",
    "EpochBackup",
    "read_backup",
    "TimeBudget",
    "ScalarSummaries",
    "tensorboard_callback",
]
