"""``model_info.json``: what a trained model needs to be fed like in training, and loading it.

``kerasseg train`` writes ``model_info.json`` beside ``best.keras`` and
``last.keras``; ``evaluate``, ``predict``, ``export`` and the Python API read it
through :func:`load_for_inference`. :class:`ModelInfo` is its one owner (as
:mod:`kerasseg.schema` owns ``dataset.json``). Version 2 holds:

==================  ==========================================================
key                 meaning
==================  ==========================================================
``version``         format version (2)
``class_names``     one name per class, in class-id order
``num_classes``     number of classes
``normalization``   the resolved normalization dict of training
``channels``        input channels the model takes
``image_dtype``     ``uint8`` / ``uint16``: what the training images were
``image_size``      ``[height, width]`` of training examples
``geometry``        how the model is applied to a whole image
                    (:class:`kerasseg.predict_graph.InferenceGeometry`)
``ignore_index``    label of ignored pixels (255)
``model``           architecture name (``kerasseg.models.build`` name)
``crf``             dense-CRF parameters of the run
``dataset``         the dataset folder trained on
``monitor``         the validation metric that chose ``best.keras``
``dimensions``      2 (images) or 3 (volumes; version 3 files only)
``volume``          volumes only: ``patch_size`` ``[D, H, W]`` of training,
                    ``spacing`` ``[z, y, x]`` mm the model was trained at
                    (``null``: each volume's own grid), ``overlap`` of the
                    sliding window (:class:`VolumeGeometry`)
==================  ==========================================================

Version 3 is written for volume models only (an older kerasseg then refuses
them instead of running them as 2D models); 2D models are still version 2.

Files of version 1 (no ``version`` key, ``input_channels`` beside
``channels``, no ``geometry``) are read too: their models ran on images larger
than the training size in tiles of that size, which is ``tile`` geometry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Mapping, Sequence

from kerasseg.errors import ArtifactError
from kerasseg.predict_graph import InferenceGeometry
from kerasseg.schema import IGNORE_INDEX

MODEL_INFO_FILENAME = "model_info.json"
MODEL_INFO_VERSION = 3
"""Newest version read; 2D models are written as version 2, volume models as 3."""


@dataclasses.dataclass(frozen=True)
class VolumeGeometry:
    """How a volume model is applied to a whole volume: a Gaussian-weighted sliding window.

    Attributes:
        patch_size: ``(D, H, W)`` window, the training patch size.
        spacing: ``(z, y, x)`` mm the model was trained at; volumes are resampled
            to it and back (``None``: no resampling).
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
    """

    patch_size: tuple[int, int, int]
    spacing: tuple[float, float, float] | None = None
    overlap: float = 0.5

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.patch_size)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"volume patch_size must be 3 positive ints, got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", size)
        if self.spacing is not None:
            spacing = tuple(float(v) for v in self.spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise ValueError(f"volume spacing must be 3 positive numbers (mm), got {self.spacing!r}")
            object.__setattr__(self, "spacing", spacing)
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"volume overlap must be in [0, 1), got {self.overlap!r}")
        object.__setattr__(self, "overlap", float(self.overlap))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VolumeGeometry":
        unknown = set(data) - {"patch_size", "spacing", "overlap"}
        if unknown:
            raise ValueError(f"unknown volume key(s) {sorted(unknown)}")
        if "patch_size" not in data:
            raise ValueError("volume needs patch_size")
        return cls(patch_size=tuple(data["patch_size"]), spacing=data.get("spacing"),
                   overlap=float(data.get("overlap", 0.5)))

    def to_dict(self) -> dict[str, Any]:
        return {"patch_size": list(self.patch_size),
                "spacing": list(self.spacing) if self.spacing is not None else None, "overlap": self.overlap}

    def describe(self) -> str:
        where = ("at {:g}x{:g}x{:g} mm".format(*self.spacing) if self.spacing else "at each volume's own spacing")
        d, h, w = self.patch_size
        return f"{d}x{h}x{w} sliding window {where}, overlap {self.overlap:g}, Gaussian-weighted"


@dataclasses.dataclass
class ModelInfo:
    """The contents of ``model_info.json`` (see the module docstring)."""

    class_names: list[str]
    normalization: dict | None = None
    channels: int | None = None
    image_dtype: str = "uint8"
    image_size: tuple[int, ...] | None = None
    geometry: InferenceGeometry = dataclasses.field(default_factory=InferenceGeometry)
    ignore_index: int = IGNORE_INDEX
    model: str = ""
    crf: dict = dataclasses.field(default_factory=dict)
    dataset: str = ""
    monitor: str = ""
    volume: VolumeGeometry | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dimensions(self) -> int:
        """3 for a volume model, else 2."""
        return 3 if self.volume is not None else 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (what :meth:`write` stores)."""
        out = dict(self.extra)
        out.update({
            "version": 3 if self.volume is not None else 2,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "normalization": self.normalization,
            "channels": self.channels,
            "image_dtype": self.image_dtype,
            "image_size": list(self.image_size) if self.image_size else None,
            "geometry": self.geometry.to_dict(),
            "ignore_index": self.ignore_index,
            "model": self.model,
            "crf": dict(self.crf),
            "dataset": self.dataset,
            "monitor": self.monitor,
        })
        if self.volume is not None:
            out["dimensions"] = 3
            out["volume"] = self.volume.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = MODEL_INFO_FILENAME) -> "ModelInfo":
        """Parse version 2 or version 1 content; raise :class:`ArtifactError` naming ``origin``."""
        if not isinstance(data, Mapping):
            raise ArtifactError(f"{origin}: model info must be a JSON object, got {type(data).__name__}")
        version = data.get("version", 1)
        if not isinstance(version, int) or version > MODEL_INFO_VERSION:
            raise ArtifactError(
                f"{origin}: model info version {version!r} is newer than this kerasseg understands "
                f"({MODEL_INFO_VERSION}); upgrade kerasseg"
            )
        names = data.get("class_names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ArtifactError(f"{origin}: class_names must be a list of strings, got {names!r}")
        size = data.get("image_size")
        image_size = tuple(int(v) for v in size) if size else None  # (D, H, W) for volume models
        try:
            if data.get("geometry"):
                geometry = InferenceGeometry.from_dict(data["geometry"])
            elif image_size:  # version 1: tiles of the training size on larger images
                geometry = InferenceGeometry(mode="tile", size=image_size)
            else:
                geometry = InferenceGeometry()
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{origin}: geometry: {e}") from None
        channels = data.get("channels", data.get("input_channels"))
        volume = None
        if data.get("dimensions", 2) == 3 or data.get("volume"):
            try:
                volume = VolumeGeometry.from_dict(data.get("volume") or {})
            except (TypeError, ValueError) as e:
                raise ArtifactError(f"{origin}: volume: {e}") from None
        known = {"version", "class_names", "num_classes", "normalization", "channels", "input_channels",
                 "image_dtype", "image_size", "geometry", "ignore_index", "model", "crf", "dataset", "monitor",
                 "dimensions", "volume"}
        return cls(
            class_names=list(names),
            normalization=data.get("normalization"),
            channels=int(channels) if channels is not None else None,
            image_dtype=str(data.get("image_dtype", "uint8")),
            image_size=image_size,
            geometry=geometry,
            ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
            model=str(data.get("model", "")),
            crf=dict(data.get("crf") or {}),
            dataset=str(data.get("dataset", "")),
            monitor=str(data.get("monitor", "")),
            volume=volume,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def write(self, folder: str | os.PathLike) -> str:
        """Write ``folder/model_info.json`` atomically; return its path."""
        from kerasseg.atomic_files import write_json

        return write_json(os.path.join(os.fspath(folder), MODEL_INFO_FILENAME), self.to_dict())


def model_info_path(model_path: str | os.PathLike) -> str:
    """Where the ``model_info.json`` of a ``.keras`` file lives (its folder)."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(model_path))), MODEL_INFO_FILENAME)


def read_model_info(model_path: str | os.PathLike) -> ModelInfo | None:
    """The :class:`ModelInfo` beside ``model_path`` (``None`` when there is none).

    Raises:
        ArtifactError: the file exists but is unreadable or malformed.
    """
    path = model_info_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable model info ({e})") from e
    return ModelInfo.from_dict(data, origin=path)


# --------------------------------------------------------------------------- models


def load_model(path: str | os.PathLike, *, compile: bool = False) -> Any:
    """Load a ``.keras`` model with ``safe_mode=True`` (no code runs from the file).

    Every kerasseg layer, loss, metric and schedule is registered first, so no
    ``custom_objects`` are needed.

    Raises:
        ArtifactError: the file is missing, is not a ``.keras`` archive, or is
            corrupt / needs unsafe deserialization; the message names the file.
    """
    import keras

    from kerasseg.registration import register_all

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ArtifactError(f"{path}: model file not found")
    if os.path.isdir(path):
        raise ArtifactError(f"{path}: is a folder; expected a .keras model file (e.g. runs/x/best.keras)")
    if not path.endswith(".keras"):
        raise ArtifactError(f"{path}: expected a .keras model file")
    register_all()
    try:
        return keras.models.load_model(path, safe_mode=True, compile=compile)
    except Exception as e:  # keras raises many types for a damaged archive
        raise ArtifactError(f"{path}: cannot load model (corrupt or unsafe .keras file: {e})") from e


@dataclasses.dataclass
class LoadedModel:
    """A model with what inference needs to feed it like in training.

    Attributes:
        model: the Keras model.
        path: the ``.keras`` file.
        class_names: one name per output class.
        normalization: resolved normalization dict (the one given, else that of
            ``model_info.json``, else per-image z-score).
        geometry: how the model is applied to a whole image.
        image_size: ``(h, w)`` of training examples, or ``None`` if unknown.
        crf: dense-CRF parameters stored with the run (``{}`` = defaults).
        info: the :class:`ModelInfo` (``None`` when there is no ``model_info.json``).
    """

    model: Any
    path: str
    class_names: list
    normalization: dict
    geometry: InferenceGeometry
    image_size: tuple | None
    crf: dict
    info: ModelInfo | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int | None:
        return model_input_channels(self.model)

    @property
    def size_divisor(self) -> int:
        return model_size_divisor(self.model)


def model_input_channels(model: Any) -> int | None:
    """Input channels of a Keras model (``None`` when unknown)."""
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else model.input_shape
    return None if shape[-1] is None else int(shape[-1])


def model_size_divisor(model: Any) -> int:
    """The multiple input height and width must be (1 when it cannot be computed)."""
    try:
        from kerasseg.models import size_divisor
    except ImportError:
        return 1
    try:
        return max(1, int(size_divisor(model)))
    except Exception:  # a model whose graph cannot be walked: no padding
        return 1


def fixed_input_size(model: Any) -> tuple[int, int] | None:
    """``(h, w)`` when the model only takes one input size, else ``None``."""
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else (None, None, None)
    if len(shape) == 4 and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return None


def fit_geometry_to_model(geometry: InferenceGeometry, model: Any) -> InferenceGeometry:
    """``geometry``, adjusted for a model whose input size is fixed (tiles or resizing of that size)."""
    fixed = fixed_input_size(model)
    if fixed is None:
        return geometry
    if geometry.mode == "resize":
        return InferenceGeometry(mode="resize", size=fixed)
    return InferenceGeometry(mode="tile", size=fixed, overlap=geometry.overlap)


def _inference_precision(model: Any, float32: bool | None, path: str | os.PathLike) -> Any:
    from kerasseg.models.precision import as_float32, compute_dtype

    trained = compute_dtype(model)
    if trained == "float32" or float32 is False:
        return model
    if float32 is None:
        import tensorflow as tf

        from kerasseg.tf_runtime import cpu_has_bf16

        if trained != "bfloat16" or cpu_has_bf16() or tf.config.list_physical_devices("GPU"):
            return model
        print(f"note: {os.fspath(path)} was trained in mixed_bfloat16 and this CPU has no native bfloat16: "
              "computing in float32 instead (the same weights)", file=sys.stderr)
    return as_float32(model)


def load_for_inference(
    path: str | os.PathLike,
    *,
    normalization: dict | str | None = None,
    class_names: Sequence[str] | None = None,
    geometry: InferenceGeometry | None = None,
    float32: bool | None = None,
) -> LoadedModel:
    """Load a model and its ``model_info.json``; explicit arguments override the file.

    Without ``model_info.json`` and without ``normalization`` the image is
    z-scored per image (the kerasseg default) and a note says so on stderr;
    the geometry is then ``whole`` (the image at its own scale).

    ``float32``: ``True`` computes in float32 whatever the model was trained
    in; ``False`` keeps its training precision; ``None`` (default) keeps it
    except for a bfloat16 model on a CPU that would only emulate bfloat16
    (several times slower), which then computes in float32 with a note on stderr
    (:func:`kerasseg.models.precision.as_float32`).

    Raises:
        ArtifactError: missing/corrupt model or model info, class names that do
            not match the model's outputs.
    """
    model = _inference_precision(load_model(path), float32, path)
    info = read_model_info(path)
    if isinstance(normalization, str):
        normalization = {"method": normalization}
    if normalization is None:
        normalization = info.normalization if info else None
        if normalization is None:
            normalization = {"method": "zscore"}
            print(f"note: no {MODEL_INFO_FILENAME} beside {os.fspath(path)}; normalizing with "
                  "per-image z-score (pass --normalization to change)", file=sys.stderr)
    outputs = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    names = list(class_names) if class_names else list(info.class_names if info else [])
    if not names:
        k = int(outputs or 2)
        names = [f"class{i}" for i in range(max(k, 2))]
    expected = max(int(outputs), 2) if outputs else len(names)
    if len(names) != expected:
        raise ArtifactError(
            f"{os.fspath(path)}: {len(names)} class names {names} but the model has {outputs} output channel(s)"
        )
    if geometry is None:
        geometry = info.geometry if info else InferenceGeometry()
    return LoadedModel(
        model=model,
        path=os.fspath(path),
        class_names=names,
        normalization=normalization,
        geometry=fit_geometry_to_model(geometry, model),
        image_size=info.image_size if info else None,
        crf=dict(info.crf) if info else {},
        info=info,
    )


__all__ = [
    "MODEL_INFO_FILENAME",
    "MODEL_INFO_VERSION",
    "ArtifactError",
    "ModelInfo",
    "VolumeGeometry",
    "model_info_path",
    "read_model_info",
    "load_model",
    "LoadedModel",
    "model_input_channels",
    "model_size_divisor",
    "fixed_input_size",
    "fit_geometry_to_model",
    "load_for_inference",
]
