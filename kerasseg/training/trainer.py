"""``fit(config)``: the steps of a training run.

1. read and check everything (config, dataset files, resume compatibility)
   before writing anything;
2. write the resolved ``config.yaml`` and build the data, model and loss under
   the ``tf.distribute`` strategy;
3. run the phases (:mod:`kerasseg.training.phases`) with the run's callbacks
   (:mod:`kerasseg.training.callbacks`);
4. plot the learning curves, remove the backup and report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Iterator, Mapping, Sequence

from kerasseg import distribute
from kerasseg.config import Config, save_config, to_dict
from kerasseg.training import run_dir as files
from kerasseg.errors import TrainingError
from kerasseg.training.settings import (
    class_weights_setting,
    emulated_bfloat16_warning,
    loss_spec,
    mixed_precision_policy,
)

LAST_MODEL_FILENAME = "last.keras"


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` produced.

    Attributes:
        run_dir: the run folder.
        best_model_path: ``run_dir/best.keras`` (``None`` if no epoch produced a
            finite monitored value).
        last_model_path: ``run_dir/last.keras``, the model after the last epoch.
        best_epoch: 1-based epoch of the best model.
        best_value: the monitored value of the best model.
        monitor: name of the monitored metric (e.g. ``val_foreground_dice``).
        initial_epoch: epoch this invocation started at (> 0 after a resume).
        epochs_completed: epochs finished in total (resumed ones included).
        history: per-metric lists read back from ``history.csv``.
        global_batch_size: per-replica batch x replicas.
        num_replicas: replicas in sync.
        stopped_early: why training ended before ``training.epochs`` (``""``: it did not).
        model: the trained model (final weights, not necessarily the best).
    """

    run_dir: str
    best_model_path: str | None
    last_model_path: str | None
    best_epoch: int | None
    best_value: float | None
    monitor: str
    initial_epoch: int
    epochs_completed: int
    history: dict[str, list[float]]
    global_batch_size: int
    num_replicas: int
    stopped_early: str = ""
    model: Any = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass
class _Run:
    """Everything decided before the first file is written."""

    config: Config
    strategy: Any
    chief: bool
    run_dir: str
    out_dir: str
    info: Any
    normalization: dict
    class_weights: Any
    global_batch: int
    replicas: int
    steps: int
    has_val: bool
    val_limit: int | None
    monitor: str
    geometry: Any  # InferenceGeometry, or artifacts.VolumeGeometry for volumes
    resuming: bool
    volume: bool = False


def _log(message: str, chief: bool = True) -> None:
    if chief:
        print(message, file=sys.stderr, flush=True)


def _as_config(config: Any, overrides: Sequence[str]) -> Config:
    from kerasseg.config import apply_overrides, from_dict, load_config

    if isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides)
    if isinstance(config, Config):
        return from_dict(apply_overrides(to_dict(config), overrides)) if overrides else config.validate()
    if isinstance(config, Mapping):
        return from_dict(apply_overrides(config, overrides))
    raise TypeError(f"config must be a Config, a dict or a YAML path, got {type(config).__name__}")


# --------------------------------------------------------------------------- step 1: checks


def _check_dataset(config: Config, splits: Sequence[str]) -> None:
    from kerasseg import schema

    check = getattr(schema, "check_dataset", None)
    if check is None:
        return
    try:
        check(config.data.path, splits)
    except schema.SchemaError as e:
        raise TrainingError(str(e)) from None


def _check_resume(config: Config, run_dir: str) -> None:
    """Refuse to resume a backup made with another model or data setup (nothing is touched)."""
    from kerasseg.config import ConfigError, load_config

    saved_path = os.path.join(run_dir, files.CONFIG_FILENAME)
    if not os.path.exists(saved_path):
        return
    try:
        saved = to_dict(load_config(saved_path))
    except ConfigError:
        return  # an unreadable old config cannot be compared; the weights check will catch a mismatch
    new = to_dict(config)
    differ = []
    for section, keys in (("model", ("name", "options")),
                          ("data", ("path", "image_size", "geometry", "normalization", "train_split")),
                          ("loss", ("name", "options"))):
        for key in keys:
            if saved[section].get(key) != new[section].get(key):
                differ.append(f"{section}.{key}: {saved[section].get(key)!r} -> {new[section].get(key)!r}")
    if differ:
        raise TrainingError(
            f"{run_dir} holds an unfinished run (backup/) trained with another setup ({'; '.join(differ)}). "
            "Resuming would mix two models. Use another run_dir for the new setup, or delete "
            f"{os.path.join(run_dir, files.BACKUP_DIRNAME)} to restart this run from scratch."
        )


def _check_model_options(config: Config) -> None:
    from kerasseg.models import ModelConfigError
    from kerasseg.models.registry import check_options

    try:
        check_options(config.model.name, config.model.options)
    except ModelConfigError as e:
        raise TrainingError(f"model.options: {e}") from None


def _prepare(config: Config, strategy: Any) -> _Run:
    from kerasseg.data.preprocess import resolve_normalization
    from kerasseg.predict_graph import InferenceGeometry
    from kerasseg.schema import read_dataset_info

    if not config.data.path:
        raise TrainingError("data.path is empty: point it at a converted dataset folder")
    _check_model_options(config)
    info = read_dataset_info(config.data.path)
    from kerasseg import losses
    from kerasseg.training.volumes import check_volume_run

    check_volume_run(config, info)

    losses.get(loss_spec(config), num_classes=info.num_classes)  # LossSpecError before anything is written
    if config.data.train_split not in info.splits:
        raise TrainingError(
            f"{config.data.path}: no split {config.data.train_split!r} (splits: {sorted(info.splits)})"
        )
    has_val = bool(info.splits.get(config.data.val_split))
    _check_dataset(config, [config.data.train_split] + ([config.data.val_split] if has_val else []))
    monitor = config.training.monitor if has_val else config.training.monitor.removeprefix("val_")
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
    val_limit = None
    if has_val and config.training.validation_steps:
        val_limit = config.training.validation_steps * global_batch
    run_dir = os.path.abspath(config.run_dir)
    resuming = os.path.isdir(os.path.join(run_dir, files.BACKUP_DIRNAME))
    if resuming:
        _check_resume(config, run_dir)
    if info.is_volume:
        from kerasseg.artifacts import VolumeGeometry

        geometry: VolumeGeometry | InferenceGeometry = VolumeGeometry(
            patch_size=tuple(config.data.image_size),
            spacing=None if config.data.spacing is None else tuple(config.data.spacing))
    else:
        geometry = InferenceGeometry.from_training(config.data.geometry, config.data.image_size)
    return _Run(
        config=config, strategy=strategy, chief=distribute.is_chief(strategy), run_dir=run_dir,
        out_dir=distribute.write_dir(run_dir, strategy), info=info, normalization=normalization,
        class_weights=class_weights, global_batch=global_batch, replicas=replicas, steps=steps,
        has_val=has_val, val_limit=val_limit, monitor=monitor, geometry=geometry, resuming=resuming,
        volume=info.is_volume,
    )


# --------------------------------------------------------------------------- step 2: build


@contextlib.contextmanager
def _dtype_policy(setting: Any) -> Iterator[str | None]:
    import keras

    previous = keras.mixed_precision.global_policy()
    policy = mixed_precision_policy(setting)
    try:
        if policy:
            keras.mixed_precision.set_global_policy(policy)
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(config: Config, info: Any) -> Any:
    """The model of ``config`` for ``info``'s channels and classes (dynamic input size when possible)."""
    from kerasseg import models

    options = dict(config.model.options)
    if getattr(info, "is_volume", False):
        try:
            return models.build(config.model.name, input_shape=(None, None, None, info.channels),
                                num_classes=info.num_classes, **options)
        except ValueError as e:
            raise TrainingError(f"model {config.model.name!r}: {e}") from None
    height, width = config.data.image_size
    try:
        return models.build(config.model.name, input_shape=(None, None, info.channels),
                            num_classes=info.num_classes, **options)
    except ValueError as dynamic_error:
        # Some architectures need a fixed input size; fall back to the training size.
        try:
            return models.build(config.model.name, input_shape=(height, width, info.channels),
                                num_classes=info.num_classes, **options)
        except ValueError as e:
            raise TrainingError(f"model {config.model.name!r}: {e}") from dynamic_error


def _model_info(run: _Run, model: Any) -> Any:
    from kerasseg.artifacts import ModelInfo, fit_geometry_to_model
    from kerasseg.postprocess import CRFParams
    from kerasseg.predict_graph import InferenceGeometry

    config, info = run.config, run.info
    volume = run.geometry if run.volume else None
    geometry = InferenceGeometry() if run.volume else fit_geometry_to_model(run.geometry, model)
    return ModelInfo(
        class_names=list(info.class_names), normalization=run.normalization, channels=info.channels,
        image_dtype=info.image_dtype, image_size=tuple(config.data.image_size), volume=volume,
        geometry=geometry, ignore_index=info.ignore_index,
        model=config.model.name, crf=CRFParams.from_dict(config.crf).to_dict(),
        dataset=os.path.abspath(config.data.path), monitor=run.monitor,
    )


# --------------------------------------------------------------------------- step 3: phases


def _callbacks(run: _Run, model: Any, loss_fn: Any, *, backup_dir: str | None, checkpoints: Any,
               guard: Any, budget: Any, recalibration: Any, loggers: Sequence[Any] = (),
               extra: Sequence[Any] = ()) -> list[Any]:
    import keras

    from kerasseg.training import callbacks as cb

    config = run.config
    out: list[Any] = []
    if recalibration is not None:
        out.append(recalibration)
    if run.has_val and run.volume:
        from kerasseg.training.volumes import volume_predictor, volume_validation_examples

        out.append(cb.FullImageValidation(
            volume_validation_examples(config.data.path, config.data.val_split, limit=run.val_limit),
            volume_predictor(model, normalization=run.normalization, geometry=run.geometry),
            class_names=list(run.info.class_names), loss_fn=loss_fn, ignore_index=run.info.ignore_index,
        ))
    elif run.has_val:
        from kerasseg.inference import Predictor
        from kerasseg.training.datasets import validation_examples

        predictor = Predictor(model, normalization=run.normalization, geometry=_model_info(run, model).geometry)
        out.append(cb.FullImageValidation(
            validation_examples(config.data.path, config.data.val_split,
                                preprocess=config.data.preprocess or None, limit=run.val_limit),
            predictor, class_names=list(run.info.class_names), loss_fn=loss_fn,
            ignore_index=run.info.ignore_index,
        ))
    out += [guard, checkpoints, cb.LearningRateLogger(), *loggers]  # loggers add to logs before CSVLogger
    out.append(keras.callbacks.CSVLogger(os.path.join(run.out_dir, files.HISTORY_FILENAME), append=True))
    if config.callbacks.tensorboard:
        out.append(cb.tensorboard_callback(os.path.join(run.out_dir, files.LOGS_DIRNAME)))
    if config.callbacks.early_stopping_patience:
        out.append(keras.callbacks.EarlyStopping(monitor=run.monitor, mode="max",
                                                 patience=config.callbacks.early_stopping_patience))
    if budget is not None:
        out.append(budget)
    out += list(extra)
    if backup_dir is not None:
        # last: an epoch counts as finished for a resume only once everything above recorded it
        out.append(cb.EpochBackup(backup_dir))
    return out


def _run_phases(run: _Run, model: Any, train_ds: Any, loss_fn: Any, model_info: Any,
                extra_callbacks: list[Any]) -> tuple[int, str]:
    """Run every unfinished phase; return ``(initial epoch of this invocation, early-stop reason)``."""
    from kerasseg import metrics, models
    from kerasseg.models.batchnorm import batchnorm_layers
    from kerasseg.training import callbacks as cb
    from kerasseg.training import phases as ph
    from kerasseg.training.keras_workarounds import prebuild_for_multi_worker
    from kerasseg.training.schedules import make_optimizer, make_schedule

    config, strategy = run.config, run.strategy
    backup_root = os.path.join(run.run_dir, files.BACKUP_DIRNAME)
    best_value, best_epoch = (files.read_best_state(os.path.join(run.out_dir, files.BEST_STATE_FILENAME))
                              if run.resuming else (None, None))
    guard = cb.NonFiniteGuard()
    checkpoints = cb.ModelCheckpoints(
        os.path.join(run.out_dir, files.BEST_MODEL_FILENAME), os.path.join(run.out_dir, LAST_MODEL_FILENAME),
        monitor=run.monitor, state_path=os.path.join(run.out_dir, files.BEST_STATE_FILENAME),
        best=best_value, best_epoch=best_epoch, guard=guard,
        on_first_save=lambda: model_info.write(run.out_dir),
    )
    recalibration = None
    if config.training.batchnorm_recalibration_steps > 0 and batchnorm_layers(model):
        from kerasseg.training.datasets import training_dataset

        recal = training_dataset(config, batch_size=config.training.batch_size, normalization=run.normalization,
                                 class_weights=run.class_weights, seed=config.seed + 1)
        recalibration = cb.BatchNormRecalibration(recal, steps=config.training.batchnorm_recalibration_steps)
    phases = ph.plan_phases(config, warn=lambda m: _log(m, run.chief))
    budget = None
    if config.training.max_minutes:
        budget = cb.TimeBudget(config.training.max_minutes)
    earlier = files.read_history(os.path.join(run.out_dir, files.HISTORY_FILENAME)) if run.resuming else {}
    elapsed = cb.ElapsedMinutes(already_spent_minutes=(earlier.get("minutes") or [0.0])[-1])
    initial_epoch = None
    for index, phase in enumerate(phases):
        phase_dir = ph.phase_backup_dir(backup_root, index)
        marker = ph.done_marker(backup_root, index)
        if os.path.exists(marker) and index + 1 < len(phases):
            model.load_weights(marker)  # finished in an earlier invocation; seeds the next phase
            continue
        finished, weights = cb.read_backup(phase_dir)
        start = max(phase.start, finished)
        if run.chief:
            files.trim_history(os.path.join(run.out_dir, files.HISTORY_FILENAME), start)
        if initial_epoch is None:
            initial_epoch = start
        with strategy.scope():
            if phase.freezes:
                models.freeze_encoder(model, trainable=phase.encoder_trainable,
                                      keep_batchnorm_frozen=config.finetune.keep_batchnorm_frozen)
            warmup = config.schedule.warmup_epochs * run.steps if index == 0 else 0
            schedule = make_schedule(
                name=config.schedule.name, learning_rate=phase.learning_rate,
                total_steps=(phase.end - phase.start) * run.steps, warmup_steps=warmup,
                power=config.schedule.power, min_learning_rate=config.schedule.min_learning_rate,
            )
            model.compile(optimizer=make_optimizer(config.optimizer, schedule), loss=loss_fn,
                          metrics=metrics.default_metrics(run.info.num_classes, list(run.info.class_names)))
            if weights is not None and finished > phase.start:
                ph.restore(model, weights)
        if distribute.num_workers(strategy) > 1:
            prebuild_for_multi_worker(model, train_ds, strategy)
        own_backup = None
        if config.callbacks.backup:
            own_backup = phase_dir if run.chief else os.path.join(run.out_dir, files.BACKUP_DIRNAME,
                                                                  f"phase{index + 1}")
        callbacks = _callbacks(run, model, loss_fn, backup_dir=own_backup, checkpoints=checkpoints,
                               guard=guard, budget=budget, recalibration=recalibration, loggers=[elapsed], extra=extra_callbacks)
        _log(f"phase {index + 1}/{len(phases)} ({phase.label}): epochs {phase.start + 1}..{phase.end}, "
             f"learning rate {phase.learning_rate:g} ({config.schedule.name})"
             + (f", resuming after epoch {finished}" if finished > phase.start else ""), run.chief)
        if start < phase.end:
            import tensorflow as tf

            try:
                model.fit(train_ds, epochs=phase.end, initial_epoch=start, steps_per_epoch=run.steps,
                          callbacks=callbacks, shuffle=False,  # the tf.data pipeline shuffles
                          verbose=config.training.verbose if run.chief else 0)
            except tf.errors.DataLossError as e:
                raise TrainingError(_corrupt_data_message(run, e)) from None
        if guard.failure:
            raise TrainingError(
                f"training stopped: {guard.failure}. No model of that epoch was saved (best.keras and "
                "last.keras hold the last finite epoch, if any). Lower optimizer.learning_rate, set "
                "optimizer.clipnorm (e.g. 1.0), or check the data with `kerasseg data verify`."
            )
        if budget is not None and budget.exhausted:
            return initial_epoch or 0, f"training.max_minutes ({config.training.max_minutes:g}) reached"
        if model.stop_training:
            return initial_epoch or 0, "early stopping"
        if index + 1 < len(phases):
            target = marker if run.chief else os.path.join(run.out_dir, "phase.done.weights.h5")
            ph.save_weights_atomically(model, target)
    if recalibration is not None and not run.has_val:
        recalibration.recalibrate()
    return initial_epoch or 0, ""


def _corrupt_data_message(run: _Run, error: Exception) -> str:
    """Name the shard holding a corrupt record (found by re-reading the splits' records)."""
    from kerasseg import schema

    splits = [run.config.data.train_split] + ([run.config.data.val_split] if run.has_val else [])
    where = ""
    check = getattr(schema, "check_dataset", None)
    if check is not None:
        try:
            check(run.config.data.path, splits, verify_records=True)
        except schema.SchemaError as found:
            where = f"{found}; "
        except Exception:  # the locating pass must not hide the original problem
            where = ""
    detail = str(getattr(error, "message", error)).splitlines()[0]
    return (f"{run.config.data.path}: a record could not be read during training ({where}{detail}). "
            f"Run `kerasseg data verify {run.config.data.path}` to list every damaged record, "
            "then convert the data again.")


# --------------------------------------------------------------------------- fit


def fit(config: Config | Mapping[str, Any] | str | os.PathLike, *, overrides: Sequence[str] = (),
        strategy: Any = None, callbacks: Sequence[Any] = ()) -> FitResult:
    """Train the model described by ``config``; see :mod:`kerasseg.training`.

    Args:
        config: a :class:`kerasseg.config.Config`, a nested dict of sections, or
            the path of a YAML config file.
        overrides: ``key.sub=value`` strings applied on top (as ``--set`` does).
        strategy: a ``tf.distribute.Strategy`` to use instead of creating one
            from ``config.training.strategy`` (a multi-worker strategy must be
            created before any other TensorFlow op, so launchers create it early).
        callbacks: extra ``keras.callbacks.Callback`` objects, run after the
            validation and checkpoint callbacks of every phase (so their
            ``on_epoch_end`` sees the epoch's validation scores in ``logs``).

    Returns:
        :class:`FitResult`.

    Raises:
        TrainingError: data, model or config problems found before training,
            a non-finite loss or weights during training.
        kerasseg.schema.SchemaError: the data folder is not a converted dataset.
    """
    import keras

    from kerasseg import losses

    config = _as_config(config, overrides)
    strategy = strategy or distribute.make_strategy(config.training.strategy)
    run = _prepare(config, strategy)
    started = time.perf_counter()
    try:
        with _dtype_policy(config.training.mixed_precision) as policy:
            keras.utils.set_random_seed(config.seed)
            if run.chief:
                save_config(config, os.path.join(run.run_dir, files.CONFIG_FILENAME))
                if not run.resuming:  # outputs of an earlier finished run would mix in
                    for name in (files.HISTORY_FILENAME, files.BEST_STATE_FILENAME):
                        if os.path.exists(os.path.join(run.run_dir, name)):
                            os.remove(os.path.join(run.run_dir, name))
            n_train = int(run.info.splits[config.data.train_split])
            _log(
                f"training {config.model.name} on {config.data.path} ({n_train} train images, "
                f"{run.info.num_classes} classes) with {distribute.strategy_name(strategy)}: {run.replicas} "
                f"replica(s), global batch {run.global_batch}, {run.steps} steps/epoch, "
                f"{_policy_note(policy)}; best model by {run.monitor}; run folder {run.run_dir}",
                run.chief,
            )
            warning = emulated_bfloat16_warning(policy)
            if warning:
                _log(warning, run.chief)
            with strategy.scope():
                train_ds = _training_stream(run)
                model = build_model(config, run.info)
            loss_fn = losses.get(loss_spec(config), num_classes=run.info.num_classes)
            model_info = _model_info(run, model)
            geometry = model_info.volume if model_info.volume is not None else model_info.geometry
            _log(f"inference geometry: {geometry.describe()}", run.chief)
            initial_epoch, stopped = _run_phases(run, model, train_ds, loss_fn, model_info, list(callbacks))
        return _finish(run, model, initial_epoch, stopped, time.perf_counter() - started)
    finally:
        distribute.cleanup_write_dir(run.out_dir, run.run_dir)


def _policy_note(policy: str | None) -> str:
    if policy is None:
        return "float32"
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    return f"mixed precision {policy} on {device} (computations in {policy.removeprefix('mixed_')})"


def _training_stream(run: _Run) -> Any:
    from kerasseg.training.datasets import training_dataset

    return training_dataset(run.config, batch_size=run.global_batch, normalization=run.normalization,
                            class_weights=run.class_weights, seed=run.config.seed, strategy=run.strategy)


def _finish(run: _Run, model: Any, initial_epoch: int, stopped: str, seconds: float) -> FitResult:
    from kerasseg.training.curves import plot_learning_curves

    config = run.config
    backup_root = os.path.join(run.run_dir, files.BACKUP_DIRNAME)
    if run.chief and os.path.isdir(backup_root):
        import shutil

        shutil.rmtree(backup_root, ignore_errors=True)
    history = files.read_history(os.path.join(run.out_dir, files.HISTORY_FILENAME))
    if run.chief and config.callbacks.learning_curves:
        plot_learning_curves(history, os.path.join(run.run_dir, files.CURVES_FILENAME),
                             title=f"{config.model.name} ({os.path.basename(run.run_dir)})",
                             class_names=list(run.info.class_names))
    best_value, best_epoch = files.read_best_state(os.path.join(run.out_dir, files.BEST_STATE_FILENAME))
    last = os.path.join(run.run_dir, LAST_MODEL_FILENAME)
    result = FitResult(
        run_dir=run.run_dir,
        best_model_path=os.path.join(run.run_dir, files.BEST_MODEL_FILENAME) if best_epoch else None,
        last_model_path=last if os.path.exists(last) else None,
        best_epoch=best_epoch, best_value=best_value, monitor=run.monitor, initial_epoch=initial_epoch,
        epochs_completed=len(history.get("epoch", [])), history=history,
        global_batch_size=run.global_batch, num_replicas=run.replicas, stopped_early=stopped, model=model,
    )
    if run.chief:
        if stopped:
            _log(f"stopped after epoch {result.epochs_completed}: {stopped}", run.chief)
        if best_epoch:
            _log(f"best {run.monitor} {best_value:.4f} at epoch {best_epoch}: {result.best_model_path} "
                 f"(training took {seconds / 60:.1f} min)", run.chief)
    return result


__all__ = ["FitResult", "fit", "build_model", "LAST_MODEL_FILENAME"]
