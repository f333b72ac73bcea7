"""Typed training configuration: dataclasses, YAML loading and ``--set`` overrides.

A training run is described by one YAML file (see ``configs/`` for examples)::

    run_dir: runs/unet_isbi
    seed: 42
    data:      {path: data/isbi, image_size: [256, 256], normalization: {method: zscore}}
    model:     {name: unet, options: {base_filters: 64, depth: 4}}
    loss:      {name: dice_ce}
    optimizer: {name: adam, learning_rate: 0.001}
    schedule:  {name: cosine}
    training:  {epochs: 50, batch_size: 4, strategy: auto, mixed_precision: auto}
    finetune:  {frozen_epochs: 0, learning_rate_factor: 0.1}
    callbacks: {tensorboard: true, early_stopping_patience: null}
    crf:       {enabled: false, iterations: 5}

Sections are dataclasses, so every key is known: an unknown key is an error
that names the key and the nearest valid one. Free-form mappings (model
builder options, normalization, augmentation, loss options) are passed through
to the module that owns them, which validates them.

``--set key.sub=value`` overrides parse ``value`` as YAML (``--set
training.epochs=3``, ``--set data.image_size=[64,64]``, ``--set
training.mixed_precision=true``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from typing import Any, Iterable, Mapping, Sequence, Union

import yaml

from kerasseg.errors import ConfigError

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "FinetuneConfig",
    "CallbacksConfig",
    "Config",
    "from_dict",
    "load_config",
    "apply_overrides",
    "save_config",
    "to_dict",
    "yaml_load",
]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.2; PyYAML's 1.1
    resolver wants ``1.0e-4`` and would hand the string ``"1e-4"`` back)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]}, again on line {line}); "
                "YAML would silently keep the last one", key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def yaml_load(text: Any) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-4``) and duplicate keys refused;
    ``text`` is a str or a file."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _recommended_augmentation() -> dict:
    from kerasseg.data.augment import RECOMMENDED_AUGMENTATION

    return dict(RECOMMENDED_AUGMENTATION)


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how it is fed.

    Attributes:
        path: folder of a converted dataset (``dataset.json`` + TFRecord shards).
        train_split, val_split: split names inside that folder.
        image_size: ``[height, width]`` the pipeline resizes/crops to; for a
            volume dataset ``[depth, height, width]``, the training patch size
            (volumes always train on random patches and are inferred with a
            sliding window of that size).
        spacing: volumes only: ``[z, y, x]`` voxel size in mm every volume is
            resampled to (image linear, labels nearest) for training and
            inference; ``null`` keeps each volume's own grid.
        normalization: intensity normalization dict (``kerasseg.data`` contract),
            e.g. ``{method: zscore}`` or ``{method: dataset}``; resolved against
            ``dataset.json`` and stored with the model.
        geometry: how examples reach ``image_size``: ``resize``, ``random_crop``
            (foreground-biased patches, ``foreground_fraction`` of them centred on a
            labelled pixel), ``center_crop`` or ``pad``.
        augmentation: augmentation settings passed to ``kerasseg.data.load_dataset``
            (``AugmentConfig`` keys, e.g. ``{hflip: 0.5, elastic: 0.3}``); default
            ``kerasseg.data.augment.RECOMMENDED_AUGMENTATION``, ``{}`` for none;
            for volumes ``Augment3DConfig`` keys, and the 2D default means
            ``kerasseg.data.augment3d.RECOMMENDED_AUGMENTATION_3D``.
        preprocess: classical preprocessing steps run before caching
            (``kerasseg.data.classical``), e.g. ``[{name: median, size: 3}]``.
        class_weights: ``false`` (all 1), ``true``/``median_frequency``
            (median-frequency balancing from the pixel counts in ``dataset.json``)
            or an explicit list with one weight per class.
        cache: cache decoded examples in memory.
        shuffle_buffer: shuffle buffer size (examples).
    """

    path: str = ""
    train_split: str = "train"
    val_split: str = "val"
    image_size: list = dataclasses.field(default_factory=lambda: [256, 256])
    spacing: Union[list, None] = None
    normalization: dict = dataclasses.field(default_factory=lambda: {"method": "zscore"})
    geometry: str = "resize"
    foreground_fraction: float = 0.5
    augmentation: dict = dataclasses.field(default_factory=_recommended_augmentation)
    preprocess: list = dataclasses.field(default_factory=list)
    class_weights: Any = False
    cache: bool = False
    shuffle_buffer: int = 256


@dataclasses.dataclass
class ModelConfig:
    """Which architecture: ``kerasseg.models.build(name, **options)``."""

    name: str = "unet"
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LossConfig:
    """Loss spec given to ``kerasseg.losses.get`` (``name`` plus ``options``)."""

    name: str = "dice_ce"
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OptimizerConfig:
    """Optimizer: ``adam``, ``adamw`` or ``sgd``.

    ``momentum`` (default 0.9) and ``nesterov`` (default false) are SGD's; giving
    them with another optimizer is an error rather than a silently ignored value.
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: Union[float, None] = None
    nesterov: Union[bool, None] = None
    clipnorm: Union[float, None] = None


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule over the whole run (per optimizer step).

    ``cosine`` decays to ``min_learning_rate``; ``polynomial`` is DeepLab's
    "poly" policy ``lr * (1 - step/total) ** power`` (``power`` 0.9);
    ``constant`` keeps the rate. ``warmup_epochs`` ramps linearly from 0 first
    (cosine and polynomial).
    """

    name: str = "cosine"
    power: float = 0.9
    min_learning_rate: float = 0.0
    warmup_epochs: int = 0


@dataclasses.dataclass
class TrainingConfig:
    """Loop settings.

    Attributes:
        epochs: total epochs (fine-tuning phases included).
        batch_size: batch size **per replica**; the global batch is this times
            the number of replicas.
        steps_per_epoch, validation_steps: ``null`` = one pass over the split.
        strategy: ``auto | default | one_device | mirrored | multi_worker``.
        mixed_precision: ``auto`` (``mixed_bfloat16`` on a CPU with native
            bfloat16 and no GPU, else float32), ``false``, ``true``
            (``mixed_float16`` on GPU, ``mixed_bfloat16`` on CPU) or a Keras
            policy name.
        monitor: metric that picks the best model (maximised; ties go to the
            later epoch): ``val_foreground_dice`` (mean Dice over the classes
            that are not background, see :mod:`kerasseg.classes`),
            ``val_mean_dice`` (background included), ``val_dice_<class>``, ...
        verbose: Keras progress display: 0 silent, 1 progress bar, 2 one line/epoch.
        batchnorm_recalibration_steps: training batches over which batch-norm
            statistics are re-estimated before every validation and at the end
            (0 = never; :mod:`kerasseg.models.batchnorm`).
        max_minutes: stop after the epoch during which this many minutes of
            training have passed (``null`` = no limit).
    """

    epochs: int = 50
    batch_size: int = 4
    steps_per_epoch: Union[int, None] = None
    validation_steps: Union[int, None] = None
    strategy: str = "auto"
    mixed_precision: Any = "auto"
    monitor: str = "val_foreground_dice"
    verbose: int = 1
    batchnorm_recalibration_steps: int = 8
    max_minutes: Union[float, None] = None


@dataclasses.dataclass
class FinetuneConfig:
    """Two-phase fine-tuning: ``frozen_epochs`` with the encoder frozen, then the
    remaining epochs with all layers trainable at ``learning_rate *
    learning_rate_factor``. ``frozen_epochs: 0`` trains everything from the start."""

    frozen_epochs: int = 0
    learning_rate_factor: float = 0.1
    keep_batchnorm_frozen: bool = True


@dataclasses.dataclass
class CallbacksConfig:
    """Optional callbacks. TensorBoard logs go to ``<run_dir>/logs``."""

    tensorboard: bool = True
    backup: bool = True
    early_stopping_patience: Union[int, None] = None
    learning_curves: bool = True


@dataclasses.dataclass
class Config:
    """A complete training run.

    ``crf`` holds dense-CRF parameters (``kerasseg.postprocess.CRFParams`` keys:
    ``enabled``, ``iterations``, ``gaussian_sxy``, ``gaussian_compat``,
    ``bilateral_sxy``, ``bilateral_srgb``, ``bilateral_compat``, ...). They are
    stored with the trained model; ``evaluate``/``predict`` apply them with
    ``--crf`` (or always when ``enabled: true``).
    """

    run_dir: str = "runs/run"
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    callbacks: CallbacksConfig = dataclasses.field(default_factory=CallbacksConfig)
    crf: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> "Config":
        """Check values that the types alone do not catch; return ``self``."""
        _check_choice("schedule.name", self.schedule.name, ("cosine", "polynomial", "constant"))
        _check_choice("data.geometry", self.data.geometry, ("resize", "random_crop", "center_crop", "pad"))
        _check_choice("optimizer.name", self.optimizer.name, ("adam", "adamw", "sgd"))
        _check_choice(
            "training.strategy",
            self.training.strategy,
            ("auto", "default", "one_device", "mirrored", "multi_worker"),
        )
        mp = self.training.mixed_precision
        if not isinstance(mp, bool):
            _check_choice(
                "training.mixed_precision", mp, ("auto", "mixed_float16", "mixed_bfloat16", "float32")
            )
        size = self.data.image_size
        if (
            not isinstance(size, list)
            or len(size) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise ConfigError(f"data.image_size must be [height, width] (volumes: [depth, height, width]) "
                              f"positive ints, got {size!r}")
        spacing = self.data.spacing
        if spacing is not None and not (
            isinstance(spacing, list) and len(spacing) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                    for v in spacing)
        ):
            raise ConfigError(f"data.spacing must be null or [z, y, x] positive numbers (mm), got {spacing!r}")
        if spacing is not None and len(size) != 3:
            raise ConfigError("data.spacing is for volumes: set data.image_size to a [depth, height, width] patch")
        cw = self.data.class_weights
        if not (
            isinstance(cw, bool)
            or cw == "median_frequency"
            or (isinstance(cw, list) and all(isinstance(v, (int, float)) for v in cw))
        ):
            raise ConfigError(
                "data.class_weights must be false, true, 'median_frequency' or a list of "
                f"numbers, got {cw!r}"
            )
        for key, value in (
            ("training.epochs", self.training.epochs),
            ("training.batch_size", self.training.batch_size),
            ("training.steps_per_epoch", self.training.steps_per_epoch),
            ("training.validation_steps", self.training.validation_steps),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1" + (" (or null)" if "steps" in key else "") + f", got {value}")
        if self.training.batchnorm_recalibration_steps < 0:
            raise ConfigError("training.batchnorm_recalibration_steps must be >= 0 (0 = off), "
                              f"got {self.training.batchnorm_recalibration_steps}")
        if self.training.max_minutes is not None and not (
                math.isfinite(self.training.max_minutes) and self.training.max_minutes > 0):
            raise ConfigError(f"training.max_minutes must be > 0 (or null), got {self.training.max_minutes}")
        _check_finite("optimizer.learning_rate", self.optimizer.learning_rate, positive=True)
        _check_finite("optimizer.weight_decay", self.optimizer.weight_decay)
        if self.optimizer.momentum is not None:
            _check_finite("optimizer.momentum", self.optimizer.momentum)
        if self.optimizer.clipnorm is not None:
            _check_finite("optimizer.clipnorm", self.optimizer.clipnorm, positive=True)
        _check_finite("schedule.min_learning_rate", self.schedule.min_learning_rate)
        _check_finite("schedule.power", self.schedule.power, positive=True)
        _check_finite("finetune.learning_rate_factor", self.finetune.learning_rate_factor, positive=True)
        _check_finite("data.foreground_fraction", self.data.foreground_fraction)
        if not 0.0 <= self.data.foreground_fraction <= 1.0:
            raise ConfigError(f"data.foreground_fraction must be in [0, 1], got {self.data.foreground_fraction}")
        if self.schedule.min_learning_rate >= self.optimizer.learning_rate and self.schedule.name != "constant":
            raise ConfigError(
                f"schedule.min_learning_rate ({self.schedule.min_learning_rate}) must be below "
                f"optimizer.learning_rate ({self.optimizer.learning_rate})"
            )
        if self.schedule.warmup_epochs < 0:
            raise ConfigError(f"schedule.warmup_epochs must be >= 0, got {self.schedule.warmup_epochs}")
        self._validate_options()
        if not 0 <= self.finetune.frozen_epochs <= self.training.epochs:
            raise ConfigError(
                f"finetune.frozen_epochs must be in 0..training.epochs ({self.training.epochs}), "
                f"got {self.finetune.frozen_epochs}"
            )
        self._validate_crf()
        if self.training.verbose not in (0, 1, 2):
            raise ConfigError(f"training.verbose must be 0, 1 or 2, got {self.training.verbose}")
        return self


    def _validate_options(self) -> None:
        """Nested option mappings are checked like top-level keys (nearest-key hints)."""
        from kerasseg.data.augment import AugmentConfig
        from kerasseg.data.preprocess import NormalizationError, check_normalization

        try:
            check_normalization(self.data.normalization)
        except NormalizationError as e:
            raise ConfigError(f"data.normalization: {e}") from None
        try:
            if len(self.data.image_size) == 3:
                volume_augmentation(self.data.augmentation)
            else:
                AugmentConfig.from_dict(self.data.augmentation)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data.augmentation: {e}") from None
        for key, names in {"momentum": ("sgd",), "nesterov": ("sgd",)}.items():
            if self.optimizer.name not in names and getattr(self.optimizer, key) is not None:
                raise ConfigError(
                    f"optimizer.{key} is used by {'/'.join(names)} only; {self.optimizer.name!r} ignores it "
                    f"(remove optimizer.{key} or set optimizer.name: sgd)"
                )

    def _validate_crf(self) -> None:
        from kerasseg.postprocess import CRFConfigError, CRFParams

        known = CRFParams.field_names()
        for key in self.crf:
            if key not in known:
                raise ConfigError(f"unknown config key 'crf.{key}'{_nearest(str(key), known, 'crf')}")
        try:
            CRFParams.from_dict(self.crf, origin="crf")
        except CRFConfigError as e:
            raise ConfigError(str(e)) from e


def volume_augmentation(setting: Mapping[str, Any]) -> Any:
    """The ``Augment3DConfig`` of a volume run's ``data.augmentation`` (the 2D default
    means the recommended 3D set; ``{}`` none)."""
    from kerasseg.data.augment import RECOMMENDED_AUGMENTATION
    from kerasseg.data.augment3d import RECOMMENDED_AUGMENTATION_3D, Augment3DConfig

    if dict(setting) == dict(RECOMMENDED_AUGMENTATION):
        setting = RECOMMENDED_AUGMENTATION_3D
    return Augment3DConfig.from_dict(dict(setting))


def _check_finite(key: str, value: Any, *, positive: bool = False) -> None:
    if not math.isfinite(float(value)) or (positive and value <= 0) or (not positive and value < 0):
        raise ConfigError(f"{key} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")


def _check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        hint = _nearest(str(value), choices, None)
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}{hint}")


def _nearest(name: str, candidates: Iterable[str], prefix: str | None = "") -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    if not match:
        if prefix is None:
            return ""
        return f" (valid keys: {', '.join(sorted(candidates))})"
    full = f"{prefix}.{match[0]}" if prefix else match[0]
    return f" (did you mean {full!r}?)"


# --------------------------------------------------------------------------- typing


def _type_ok(value: Any, annotation: Any) -> bool:
    """True when ``value`` (from YAML) fits the field annotation."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is list or origin is list:
        return isinstance(value, list)
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {full!r}{_nearest(str(key), fields, prefix)}")
        annotation = hints[key]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):  # a nested config class
            kwargs[key] = _build(annotation, value, full)
            continue
        if not _type_ok(value, annotation):
            raise ConfigError(
                f"{full} must be {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
            )
        if annotation is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from a nested mapping.

    Raises:
        ConfigError: unknown key (naming the nearest valid one), wrong type or value.
    """
    return _build(Config, data or {}, "").validate()


def to_dict(config: Config) -> dict:
    """Plain nested dict of ``config`` (YAML/JSON serializable)."""
    return dataclasses.asdict(config)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from e
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied.

    Keys must exist in the schema (free-form mappings such as ``model.options``
    accept new keys); values are parsed as YAML.
    """
    import copy

    result = copy.deepcopy(dict(data or {}))
    for item in overrides:
        path, value = _parse_override(item)
        cls: Any = Config
        node = result
        for depth, part in enumerate(path):
            full = ".".join(path[: depth + 1])
            last = depth == len(path) - 1
            if cls is not None:
                fields = {f.name for f in dataclasses.fields(cls)}
                if part not in fields:
                    raise ConfigError(
                        f"--set: unknown config key {full!r}"
                        f"{_nearest(part, fields, '.'.join(path[:depth]))}"
                    )
                annotation = typing.get_type_hints(cls)[part]
                cls = annotation if dataclasses.is_dataclass(annotation) else None
                if not last and cls is None and not (annotation is dict or annotation is Any):
                    raise ConfigError(f"--set: {'.'.join(path[:depth + 1])!r} has no sub-keys")
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = {}
                    node[part] = child
                if not isinstance(child, dict):
                    raise ConfigError(f"--set: {full!r} is not a mapping")
                node = child
    return result


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``--set`` overrides and validate.

    Raises:
        ConfigError: missing/unreadable file, invalid YAML, unknown keys, bad values;
            the message names the file.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from e
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        return from_dict(apply_overrides(data or {}, overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def save_config(config: Config, path: str | os.PathLike) -> str:
    """Write the resolved config as YAML (atomically) and return the path."""
    from kerasseg.atomic_files import write_text

    return write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False))
