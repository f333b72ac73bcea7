"""Config-driven training: ``fit(config) -> FitResult``.

``fit`` builds, under the configured ``tf.distribute`` strategy, the data
pipeline (``kerasseg.data.load_dataset``), the model (``kerasseg.models.build``),
the loss (``kerasseg.losses.get``), the metrics
(``kerasseg.metrics.default_metrics``) and the optimizer with its
learning-rate schedule, then runs ``model.fit`` once per phase.

The run folder (``config.run_dir``) ends up holding::

    config.yaml         the resolved configuration (every default written out)
    history.csv         one row per epoch: losses, metrics, learning rate
    best.keras          the model with the best validation mean Dice so far
    best.json           {"epoch": ..., "monitor": ..., "value": ...} of best.keras
    model_info.json     class names, resolved normalization, channels, image
                        size, CRF settings: what evaluate/predict need
    logs/               TensorBoard event files
    learning_curves.png loss and metrics per epoch
    backup/             BackupAndRestore state while a run is unfinished

Fault tolerance: the training state is backed up at the end of every epoch;
running the same command again after a crash or a kill resumes at the first
unfinished epoch (``history.csv`` is trimmed to the finished ones). Finished
runs delete ``backup/``; running the same config again then starts afresh.

Two-phase fine-tuning (``finetune.frozen_epochs > 0``): the encoder is frozen
(``kerasseg.models.freeze_encoder``) for the first ``frozen_epochs`` epochs,
then everything trains at ``learning_rate * finetune.learning_rate_factor``
for the remaining epochs. Each phase is resumable on its own.

Only the chief writes to ``run_dir``; other workers of a multi-worker run
write to temporary folders that are removed at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

from kerasseg import distribute
from kerasseg.config import Config, save_config

__all__ = [
    "TrainingError",
    "FitResult",
    "fit",
    "class_weights_setting",
    "make_schedule",
    "make_optimizer",
    "mixed_precision_policy",
    "read_history",
    "plot_learning_curves",
    "BestModelCheckpoint",
    "LearningRateLogger",
    "WorkerBackupAndRestore",
    "tensorboard_callback",
]

CONFIG_FILENAME = "config.yaml"
HISTORY_FILENAME = "history.csv"
BEST_MODEL_FILENAME = "best.keras"
BEST_STATE_FILENAME = "best.json"
MODEL_INFO_FILENAME = "model_info.json"
CURVES_FILENAME = "learning_curves.png"
BACKUP_DIRNAME = "backup"
LOGS_DIRNAME = "logs"


class TrainingError(RuntimeError):
    """Training cannot start or run with this configuration/data."""


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` produced.

    Attributes:
        run_dir: the run folder.
        best_model_path: ``run_dir/best.keras`` (``None`` if no epoch produced a
            finite monitored value).
        best_epoch: 1-based epoch of the best model.
        best_value: the monitored value of the best model.
        monitor: name of the monitored metric (e.g. ``val_mean_dice``).
        initial_epoch: epoch this invocation started at (> 0 after a resume).
        epochs_completed: epochs finished in total (resumed ones included).
        history: per-metric lists read back from ``history.csv``.
        global_batch_size: per-replica batch x replicas.
        num_replicas: replicas in sync.
        model: the trained model (final weights, not necessarily the best).
    """

    run_dir: str
    best_model_path: str | None
    best_epoch: int | None
    best_value: float | None
    monitor: str
    initial_epoch: int
    epochs_completed: int
    history: dict[str, list[float]]
    global_batch_size: int
    num_replicas: int
    model: Any = dataclasses.field(default=None, repr=False)


# --------------------------------------------------------------------------- helpers


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
    import keras

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
        return _Warmup(poly, learning_rate, warmup_steps) if warmup_steps else poly
    raise TrainingError(f"unknown learning-rate schedule {name!r}")


def _warmup_class():
    import keras

    @keras.saving.register_keras_serializable(package="kerasseg")
    class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
        """Linear ramp from 0 to ``target`` over ``warmup_steps``, then ``after``
        (a schedule counted from the end of the warm-up)."""

        def __init__(self, after, target: float, warmup_steps: int):
            self.after = after
            self.target = float(target)
            self.warmup_steps = int(warmup_steps)

        def __call__(self, step):
            from keras import ops

            step = ops.cast(step, "float32")
            warm = self.target * step / float(max(1, self.warmup_steps))
            return ops.where(step < self.warmup_steps, warm, self.after(step - self.warmup_steps))

        def get_config(self):
            return {
                "after": keras.optimizers.schedules.serialize(self.after),
                "target": self.target,
                "warmup_steps": self.warmup_steps,
            }

        @classmethod
        def from_config(cls, config):
            config = dict(config)
            config["after"] = keras.optimizers.schedules.deserialize(config["after"])
            return cls(**config)

    return LinearWarmup


def _Warmup(after: Any, target: float, warmup_steps: int) -> Any:
    return _warmup_class()(after, target, warmup_steps)


def make_optimizer(opt_config: Any, learning_rate: Any) -> Any:
    """Keras optimizer for ``OptimizerConfig`` with ``learning_rate`` (float or schedule)."""
    import keras

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
        return keras.optimizers.SGD(
            learning_rate, momentum=opt_config.momentum, nesterov=opt_config.nesterov, **kwargs
        )
    raise TrainingError(f"unknown optimizer {opt_config.name!r}")


def read_history(path: str) -> dict[str, list[float]]:
    """``history.csv`` as ``{column: [values per epoch]}`` (``epoch`` included)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                out.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                out.setdefault(key, []).append(float("nan"))
    return out


def _trim_history(path: str, finished_epochs: int) -> None:
    """Keep the rows of epochs ``< finished_epochs`` (drop a half-logged epoch)."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and r[0].strip().isdigit() and int(r[0]) < finished_epochs]
    if len(keep) == len(body):
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(keep)
    os.replace(tmp, path)


def plot_learning_curves(history: dict[str, list[float]], path: str, *, title: str = "") -> str | None:
    """Write a PNG with losses (left) and the other metrics (right) per epoch."""
    if not history.get("epoch"):
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    epochs = [int(e) + 1 for e in history["epoch"]]
    fig = Figure(figsize=(11, 4), dpi=100)
    ax_loss, ax_metric = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for key, values in sorted(history.items()):
        if key in ("epoch", "learning_rate"):
            continue
        if key.endswith("loss"):
            ax = ax_loss
        elif any(tag in key for tag in ("mean_dice", "mean_iou", "pixel_accuracy")):
            ax = ax_metric
        else:
            continue
        ax.plot(epochs, values, marker="o", markersize=3, label=key, linestyle="--" if key.startswith("val_") else "-")
    for ax, label in ((ax_loss, "loss"), (ax_metric, "metric")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = f"{path}.part.png"
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- callbacks


def _callback_classes():
    import keras
    from keras import ops

    class LearningRateLogger(keras.callbacks.Callback):
        """Adds ``learning_rate`` (the value at the epoch's end) to the epoch logs."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            try:
                logs["learning_rate"] = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
            except Exception:  # an optimizer without a readable rate: log nothing
                pass

    class BestModelCheckpoint(keras.callbacks.Callback):
        """Save the whole model when ``monitor`` improves (maximised).

        Writes atomically (temporary file, then rename) and records the epoch
        and value in ``state_path`` so a resumed run keeps comparing against the
        real best rather than starting from scratch.
        """

        def __init__(self, path: str, *, monitor: str, state_path: str, best: float | None = None,
                     best_epoch: int | None = None, on_first_save=None):
            super().__init__()
            self.path = path
            self.monitor = monitor
            self.state_path = state_path
            self.best = best
            self.best_epoch = best_epoch
            self.on_first_save = on_first_save

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is None:
                return
            value = float(value)
            if not math.isfinite(value) or (self.best is not None and value <= self.best):
                return
            self.best, self.best_epoch = value, epoch + 1
            tmp = f"{self.path[:-len('.keras')]}.part.keras"
            self.model.save(tmp, overwrite=True)
            os.replace(tmp, self.path)
            _write_json(self.state_path, {"epoch": self.best_epoch, "monitor": self.monitor, "value": value})
            if self.on_first_save is not None:
                self.on_first_save()
                self.on_first_save = None

    class WorkerBackupAndRestore(keras.callbacks.BackupAndRestore):
        """``BackupAndRestore`` where every worker restores from the chief's backup
        (the weights are identical across synchronous replicas) but only the
        chief writes there; other workers write to their own temporary folder."""

        def __init__(self, backup_dir: str, restore_dir: str | None = None, **kwargs):
            super().__init__(backup_dir, **kwargs)
            self.restore_dir = restore_dir or backup_dir

        def _paths(self, folder):
            weights = os.path.join(folder, "latest.weights.h5")
            meta = os.path.join(folder, "training_metadata.json")
            return weights, meta

        def on_train_begin(self, logs=None):
            save = (self._weights_path, self._training_metadata_path,
                    self._prev_weights_path, self._prev_training_metadata_path)
            w, m = self._paths(self.restore_dir)
            self._weights_path, self._training_metadata_path = w, m
            self._prev_weights_path, self._prev_training_metadata_path = f"{w}.bkp", f"{m}.bkp"
            try:
                super().on_train_begin(logs)
            finally:
                (self._weights_path, self._training_metadata_path,
                 self._prev_weights_path, self._prev_training_metadata_path) = save

    return LearningRateLogger, BestModelCheckpoint, WorkerBackupAndRestore


def _scalar_summaries_class():
    import keras

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

        def _writer(self, name: str):
            import tensorflow as tf

            if name not in self._writers:
                self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
            return self._writers[name]

        def on_epoch_end(self, epoch, logs=None):
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

        def on_train_end(self, logs=None):
            for writer in self._writers.values():
                writer.close()
            self._writers = {}

    return ScalarSummaries


def tensorboard_callback(log_dir: str) -> Any:
    """Keras' ``TensorBoard`` callback when the ``tensorboard`` package is
    installed, else :class:`ScalarSummaries` (scalars only, same layout)."""
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorboard") is not None:
        return keras.callbacks.TensorBoard(log_dir)
    return _scalar_summaries_class()(log_dir)


def __getattr__(name: str) -> Any:
    # Callback classes subclass keras classes; build them on first use so that
    # `import kerasseg.training` stays free of TensorFlow.
    if name in ("LearningRateLogger", "BestModelCheckpoint", "WorkerBackupAndRestore"):
        classes = dict(zip(("LearningRateLogger", "BestModelCheckpoint", "WorkerBackupAndRestore"),
                           _callback_classes()))
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _backup_epoch(folder: str) -> int:
    """Finished epochs recorded in a BackupAndRestore folder (0 when none)."""
    path = os.path.join(folder, "training_metadata.json")
    for candidate in (path, f"{path}.bkp"):
        try:
            with open(candidate, encoding="utf-8") as f:
                return int(json.load(f).get("epoch", 0))
        except (OSError, ValueError, TypeError):
            continue
    return 0


# --------------------------------------------------------------------------- fit


def _load_datasets(config: Config, info: Any, *, global_batch: int, normalization: dict,
                   class_weights: Any, strategy: Any, has_val: bool):
    from kerasseg.data import load_dataset
    from kerasseg.schema import split_files

    size = tuple(config.data.image_size)
    common = dict(image_size=size, batch_size=global_batch, normalization=normalization,
                  cache=config.data.cache, class_weights=class_weights,
                  preprocess=config.data.preprocess or None)
    shuffle = config.data.shuffle_buffer if config.data.shuffle_buffer > 0 else False
    train = load_dataset(
        config.data.path, config.data.train_split, geometry=config.data.geometry,
        foreground_fraction=config.data.foreground_fraction,
        augment=config.data.augmentation or None, shuffle=shuffle, repeat=True, seed=config.seed,
        drop_remainder=True, **common,
    )
    train = distribute.apply_sharding(
        train, num_files=len(split_files(config.data.path, config.data.train_split)), strategy=strategy
    )
    val = None
    if has_val:
        val_geometry = "center_crop" if config.data.geometry == "random_crop" else config.data.geometry
        # Keras keeps one validation iterator across epochs when validation_steps
        # is set, so the batched split repeats: every epoch then validates on
        # exactly one pass (ceil(n / batch) batches, the last one partial).
        val = load_dataset(
            config.data.path, config.data.val_split, geometry=val_geometry, augment=None,
            shuffle=False, repeat=False, **common,
        )
        if getattr(strategy, "num_replicas_in_sync", 1) > 1:
            val = _pad_to_full_batches(val, int(info.splits.get(config.data.val_split, 0)), global_batch)
        val = val.repeat()
        val = distribute.apply_sharding(
            val, num_files=len(split_files(config.data.path, config.data.val_split)), strategy=strategy
        )
    return train, val


def _pad_to_full_batches(dataset: Any, num_examples: int, global_batch: int) -> Any:
    """Complete the last validation batch with zero-weight copies of the first example.

    Keras 3.15 under ``MirroredStrategy`` fails (``AddN`` shape mismatch) on a
    batch that does not split evenly between replicas. Padding examples carry
    sample weight 0, so the metrics (which skip weight-0 pixels) are unchanged;
    only the batch-averaged ``val_loss`` is diluted by the padding share.
    """
    import tensorflow as tf

    missing = (-num_examples) % global_batch
    if missing == 0:
        return dataset
    examples = dataset.unbatch()
    filler = examples.take(1).map(lambda image, mask, weight: (image, mask, tf.zeros_like(weight)))
    return examples.concatenate(filler.repeat(missing)).batch(global_batch, drop_remainder=True)


def _build_model(config: Config, info: Any) -> Any:
    from kerasseg import models

    height, width = config.data.image_size
    options = dict(config.model.options)
    try:
        return models.build(
            config.model.name, input_shape=(None, None, info.channels),
            num_classes=info.num_classes, **options,
        )
    except ValueError as dynamic_error:
        # Some architectures need a fixed input size; fall back to the training size.
        try:
            return models.build(
                config.model.name, input_shape=(height, width, info.channels),
                num_classes=info.num_classes, **options,
            )
        except ValueError as e:
            raise TrainingError(f"model {config.model.name!r}: {e}") from dynamic_error


def _loss_spec(config: Config) -> Any:
    return {"name": config.loss.name, **config.loss.options} if config.loss.options else config.loss.name


def _prebuild_for_multi_worker(model: Any, dataset: Any, strategy: Any) -> None:
    """Work around two Keras 3.15 bugs under ``MultiWorkerMirroredStrategy``.

    First, ``Model.fit`` builds metrics/optimizer symbolically from the first batch,
    which it first ``strategy.reduce``s; the collective strategy cannot reduce
    the ``(x, y, sample_weight)`` tuple of per-replica values and fit fails
    ("Attempt to convert a value (PerReplica...)"). The build only needs shapes
    and dtypes, so build from the dataset's ``element_spec`` instead and skip
    the per-fit symbolic build (everything is already built).
    """
    with strategy.scope():
        model._symbolic_build(data_batch=dataset.element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    # Second bug (tensorflow/tensorflow#72388): each step's logs are reduced with
    # strategy.reduce("MEAN", v, axis=0), which fails on scalar logs. Returning
    # every scalar as shape (1,) makes that reduction the plain mean over the
    # replicas' values, a scalar again.
    import tensorflow as tf

    def as_vector(value):
        if isinstance(value, tf.Tensor) and value.shape.rank == 0:
            return tf.reshape(value, [1])
        return value

    for name in ("train_step", "test_step"):
        step = getattr(type(model), name).__get__(model)
        setattr(model, name, lambda data, _step=step: tf.nest.map_structure(as_vector, _step(data)))


def _as_config(config: Any, overrides: Sequence[str]) -> Config:
    from kerasseg.config import apply_overrides, from_dict, load_config, to_dict

    if isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides)
    if isinstance(config, Config):
        return from_dict(apply_overrides(to_dict(config), overrides)) if overrides else config.validate()
    if isinstance(config, Mapping):
        return from_dict(apply_overrides(config, overrides))
    raise TypeError(f"config must be a Config, a dict or a YAML path, got {type(config).__name__}")


def _log(message: str, chief: bool) -> None:
    if chief:
        print(message, file=sys.stderr, flush=True)


def fit(config: Config | Mapping[str, Any] | str | os.PathLike, *, overrides: Sequence[str] = (),
        strategy: Any = None) -> FitResult:
    """Train the model described by ``config``; see the module docstring.

    Args:
        config: a :class:`kerasseg.config.Config`, a nested dict of sections, or
            the path of a YAML config file.
        overrides: ``key.sub=value`` strings applied on top (as ``--set`` does).
        strategy: a ``tf.distribute.Strategy`` to use instead of creating one
            from ``config.training.strategy`` (a multi-worker strategy must be
            created before any other TensorFlow op, so launchers create it early).

    Returns:
        :class:`FitResult`.

    Raises:
        TrainingError: data, model or config problems found before training.
        kerasseg.schema.SchemaError: the data folder is not a converted dataset.
    """
    import keras

    from kerasseg import losses, metrics, models
    from kerasseg.data.preprocess import resolve_normalization
    from kerasseg.postprocess import CRFParams
    from kerasseg.schema import read_dataset_info

    config = _as_config(config, overrides)
    if not config.data.path:
        raise TrainingError("data.path is empty: point it at a converted dataset folder")
    strategy = strategy or distribute.make_strategy(config.training.strategy)
    chief = distribute.is_chief(strategy)
    run_dir = os.path.abspath(config.run_dir)
    out_dir = distribute.write_dir(run_dir, strategy)

    previous_policy = keras.mixed_precision.global_policy()
    policy = mixed_precision_policy(config.training.mixed_precision)
    try:
        if policy:
            keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(config.seed)

        info = read_dataset_info(config.data.path)
        if config.data.train_split not in info.splits:
            raise TrainingError(
                f"{config.data.path}: no split {config.data.train_split!r} (splits: {sorted(info.splits)})"
            )
        has_val = bool(info.splits.get(config.data.val_split))
        monitor = config.training.monitor if has_val else config.training.monitor.removeprefix("val_")
        if not has_val:
            _log(f"note: no {config.data.val_split!r} split; the best model is chosen by {monitor}", chief)
        normalization = resolve_normalization(config.data.normalization, info)
        class_weights = class_weights_setting(config.data.class_weights)
        if class_weights is not None:
            from kerasseg.data.class_weights import resolve_class_weights

            try:
                class_weights = resolve_class_weights(
                    class_weights, info, num_classes=info.num_classes, split=config.data.train_split
                )
            except ValueError as e:
                raise TrainingError(f"data.class_weights: {e}") from e
            _log("class weights: " + ", ".join(
                f"{n}={w:.3g}" for n, w in zip(info.class_names, class_weights)), chief)

        replicas = int(strategy.num_replicas_in_sync)
        global_batch = distribute.global_batch_size(config.training.batch_size, strategy)
        n_train = int(info.splits[config.data.train_split])
        if n_train < global_batch:
            raise TrainingError(
                f"{config.data.path}: split {config.data.train_split!r} has {n_train} images, fewer than "
                f"one global batch ({config.training.batch_size} per replica x {replicas} replica(s) = "
                f"{global_batch}); lower training.batch_size"
            )
        steps = config.training.steps_per_epoch or max(1, n_train // global_batch)
        val_steps = config.training.validation_steps
        if has_val and val_steps is None:
            # one exact pass per epoch over the (repeated, batched) validation split
            val_steps = max(1, math.ceil(info.splits[config.data.val_split] / global_batch))

        if chief:
            save_config(config, os.path.join(run_dir, CONFIG_FILENAME))
        _log(
            f"training {config.model.name} on {config.data.path} ({n_train} train images, "
            f"{info.num_classes} classes) with {distribute.strategy_name(strategy)}: {replicas} replica(s), "
            f"global batch {global_batch}, {steps} steps/epoch, policy {policy or 'float32'}; "
            f"run folder {run_dir}",
            chief,
        )

        with strategy.scope():
            train_ds, val_ds = _load_datasets(
                config, info, global_batch=global_batch, normalization=normalization,
                class_weights=class_weights, strategy=strategy, has_val=has_val,
            )
            model = _build_model(config, info)

        model_info = {
            "class_names": list(info.class_names),
            "num_classes": info.num_classes,
            "normalization": normalization,
            "input_channels": info.channels,
            "channels": info.channels,
            "image_dtype": info.image_dtype,
            "image_size": list(config.data.image_size),
            "ignore_index": info.ignore_index,
            "model": config.model.name,
            "crf": CRFParams.from_dict(config.crf).to_dict(),
            "dataset": os.path.abspath(config.data.path),
        }

        def write_model_info():
            _write_json(os.path.join(out_dir, MODEL_INFO_FILENAME), model_info)

        history_path = os.path.join(out_dir, HISTORY_FILENAME)
        best_path = os.path.join(out_dir, BEST_MODEL_FILENAME)
        best_state_path = os.path.join(out_dir, BEST_STATE_FILENAME)
        backup_root = os.path.join(run_dir, BACKUP_DIRNAME)
        resuming = os.path.isdir(backup_root)
        if not resuming and chief:
            # A fresh run: outputs of an earlier finished run would mix in.
            for name in (HISTORY_FILENAME, BEST_STATE_FILENAME):
                if os.path.exists(os.path.join(run_dir, name)):
                    os.remove(os.path.join(run_dir, name))
        best_value = best_epoch = None
        if resuming and os.path.exists(best_state_path):
            with open(best_state_path, encoding="utf-8") as f:
                state = json.load(f)
            best_value, best_epoch = float(state["value"]), int(state["epoch"])

        LearningRateLogger, BestModelCheckpoint, WorkerBackupAndRestore = _callback_classes()
        checkpoint = BestModelCheckpoint(
            best_path, monitor=monitor, state_path=best_state_path, best=best_value,
            best_epoch=best_epoch, on_first_save=write_model_info,
        )
        frozen = config.finetune.frozen_epochs
        phases = []
        if frozen > 0:
            phases.append(("frozen encoder", 0, frozen, config.optimizer.learning_rate, False))
        if config.training.epochs > frozen:
            lr = config.optimizer.learning_rate * (config.finetune.learning_rate_factor if frozen else 1.0)
            phases.append(("all layers" if frozen else "training", frozen, config.training.epochs, lr, True))

        initial_epoch_seen = None
        loss_fn = losses.get(_loss_spec(config), num_classes=info.num_classes)
        for index, (label, start, end, lr, trainable) in enumerate(phases):
            phase_dir = os.path.join(backup_root, f"phase{index + 1}")
            done_marker = os.path.join(backup_root, f"phase{index + 1}.done.weights.h5")
            if os.path.exists(done_marker) and index + 1 < len(phases):
                # Finished in an earlier invocation; its final weights seed the next phase.
                model.load_weights(done_marker)
                continue
            finished = _backup_epoch(phase_dir)
            if chief:
                _trim_history(history_path, max(start, finished))
            if initial_epoch_seen is None:
                initial_epoch_seen = max(start, finished)
            with strategy.scope():
                if frozen:
                    models.freeze_encoder(
                        model, trainable=trainable,
                        keep_batchnorm_frozen=config.finetune.keep_batchnorm_frozen,
                    )
                warmup = config.schedule.warmup_epochs * steps if index == 0 else 0
                schedule = make_schedule(
                    name=config.schedule.name, learning_rate=lr, total_steps=(end - start) * steps,
                    warmup_steps=warmup, power=config.schedule.power,
                    min_learning_rate=config.schedule.min_learning_rate,
                )
                model.compile(
                    optimizer=make_optimizer(config.optimizer, schedule),
                    loss=loss_fn,
                    metrics=metrics.default_metrics(info.num_classes, list(info.class_names)),
                )
            if distribute.num_workers(strategy) > 1:
                _prebuild_for_multi_worker(model, train_ds, strategy)
            callbacks = [LearningRateLogger()]
            if config.callbacks.backup:
                own_backup = phase_dir if chief else os.path.join(out_dir, BACKUP_DIRNAME, f"phase{index + 1}")
                callbacks.append(WorkerBackupAndRestore(own_backup, restore_dir=phase_dir))
            callbacks += [
                keras.callbacks.TerminateOnNaN(),
                keras.callbacks.CSVLogger(history_path, append=True),
                checkpoint,
            ]
            if config.callbacks.tensorboard:
                callbacks.append(tensorboard_callback(os.path.join(out_dir, LOGS_DIRNAME)))
            if config.callbacks.early_stopping_patience:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor=monitor, mode="max", patience=config.callbacks.early_stopping_patience,
                ))
            _log(f"phase {index + 1}/{len(phases)} ({label}): epochs {start + 1}..{end}, "
                 f"learning rate {lr:g} ({config.schedule.name})"
                 + (f", resuming after epoch {finished}" if finished > start else ""), chief)
            model._initial_epoch = None  # a restore in an earlier phase must not leak
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=end,
                initial_epoch=start,
                steps_per_epoch=steps,
                validation_steps=val_steps,
                callbacks=callbacks,
                shuffle=False,  # the tf.data pipeline shuffles
                verbose=config.training.verbose if chief else 0,
            )
            if index + 1 < len(phases):
                os.makedirs(backup_root, exist_ok=True)
                target = done_marker if chief else os.path.join(out_dir, "phase.done.weights.h5")
                model.save_weights(target)

        if chief and os.path.isdir(backup_root):
            import shutil

            shutil.rmtree(backup_root, ignore_errors=True)
        history = read_history(history_path)
        if chief and config.callbacks.learning_curves:
            plot_learning_curves(history, os.path.join(run_dir, CURVES_FILENAME),
                                 title=f"{config.model.name} ({os.path.basename(run_dir)})")
        epochs_done = len(history.get("epoch", []))
        if os.path.exists(best_state_path):
            with open(best_state_path, encoding="utf-8") as f:
                state = json.load(f)
            best_value, best_epoch = float(state["value"]), int(state["epoch"])
        result = FitResult(
            run_dir=run_dir,
            best_model_path=os.path.join(run_dir, BEST_MODEL_FILENAME) if best_epoch else None,
            best_epoch=best_epoch,
            best_value=best_value,
            monitor=monitor,
            initial_epoch=initial_epoch_seen or 0,
            epochs_completed=epochs_done,
            history=history,
            global_batch_size=global_batch,
            num_replicas=replicas,
            model=model,
        )
        if chief and best_epoch:
            _log(f"best {monitor} {best_value:.4f} at epoch {best_epoch}: {result.best_model_path}", chief)
        return result
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        distribute.cleanup_write_dir(out_dir, run_dir)
