"""The TFRecord schema and the ``dataset.json`` contract.

This module is the single definition shared by the producer (``data_tools``)
and the consumer (``kerasseg.data``). Keys follow the TF Model Garden
segmentation reader, so records written here can be read there too.

A converted dataset is a folder::

    OUTPUT_DIR/
      dataset.json                          # DatasetInfo below
      train-00000-of-00002.tfrecord         # shards, one set per split
      val-00000-of-00001.tfrecord
      splits/train.txt, splits/val.txt      # source ids of each split

``dataset.json`` is written last (the folder is renamed into place atomically),
so its presence means the conversion finished.

Reading ``dataset.json`` (:meth:`DatasetInfo.from_dict`) checks the types of
every field it holds (``class_names`` a list of unique strings, split counts
non-negative integers, per-class pixel counts one per class...), so a hand-edited
or damaged file is refused with the file named rather than trained on.
:func:`check_dataset` also checks the shard files against it (all present,
none empty, as many records as ``dataset.json`` says; with
``verify_records=True`` every record's checksum) in seconds, without decoding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
from typing import Any, Mapping, Sequence

from kerasseg.errors import SchemaError

SCHEMA_VERSION = 2
"""Version written by this kerasseg. 2 adds volume records (``dimensions: 3``); 1 is still read."""
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
DATASET_INFO_FILENAME = "dataset.json"
IGNORE_INDEX = 255
SPLITS_DIRNAME = "splits"

KEY_IMAGE_ENCODED = "image/encoded"
KEY_IMAGE_FORMAT = "image/format"
KEY_IMAGE_HEIGHT = "image/height"
KEY_IMAGE_WIDTH = "image/width"
KEY_IMAGE_CHANNELS = "image/channels"
KEY_IMAGE_FILENAME = "image/filename"
KEY_IMAGE_SOURCE_ID = "image/source_id"
KEY_MASK_ENCODED = "image/segmentation/class/encoded"
KEY_MASK_FORMAT = "image/segmentation/class/format"
# optional: region of interest (field of view), PNG 255 inside / 0 outside; labels outside are already 255
KEY_ROI_ENCODED = "image/roi/encoded"

IMAGE_FORMATS = ("png", "jpeg")

# --- volume records (dataset.json "dimensions": 3) ---------------------------------------------
# Voxels are stored raw (little-endian, C order, array axes (D, H, W) = (z, y, x)), zlib-compressed.
KEY_VOLUME_ENCODED = "volume/encoded"
KEY_VOLUME_ENCODING = "volume/encoding"  # b"raw-zlib"
KEY_VOLUME_DTYPE = "volume/dtype"  # storage type of the voxels, one of VOLUME_DTYPES
KEY_VOLUME_DEPTH = "volume/depth"
KEY_VOLUME_HEIGHT = "volume/height"
KEY_VOLUME_WIDTH = "volume/width"
KEY_VOLUME_CHANNELS = "volume/channels"
KEY_VOLUME_SPACING = "volume/spacing"  # 3 floats, mm, in array axis order (z, y, x)
KEY_VOLUME_ORIGIN = "volume/origin"  # 3 floats, ITK physical point (x, y, z) of voxel (0, 0, 0), LPS mm
KEY_VOLUME_DIRECTION = "volume/direction"  # 9 floats, ITK direction matrix, row-major (x, y, z)
KEY_VOLUME_MASK_ENCODED = "volume/segmentation/class/encoded"  # raw-zlib uint8 (D, H, W), 255 = ignore
VOLUME_ENCODING = "raw-zlib"
VOLUME_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64")
"""Voxel storage types kept as they are in a volume record."""


_FIX = (
    "the file was edited or damaged: restore it, or convert the data again "
    "(labelme2tfrecord / masks2tfrecord with --overwrite)"
)


def shard_filename(split: str, index: int, num_shards: int) -> str:
    """Return the canonical shard name, e.g. ``train-00000-of-00004.tfrecord``."""
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} outside 0..{num_shards - 1}")
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_glob(split: str) -> str:
    """Glob pattern matching every shard of ``split``."""
    return f"{split}-?????-of-?????.tfrecord"


def encode_example(
    *,
    image_bytes: bytes,
    image_format: str,
    height: int,
    width: int,
    channels: int,
    mask_png: bytes,
    filename: str,
    source_id: str,
    roi_png: bytes | None = None,
) -> bytes:
    """Serialize one image/mask pair as a ``tf.train.Example``.

    Args:
        image_bytes: encoded image (PNG or JPEG bytes, never re-encoded lossily).
        image_format: ``"png"`` or ``"jpeg"``.
        height, width, channels: size of the decoded image.
        mask_png: PNG of uint8 class ids, ``255`` = ignore, shape ``(height, width)``.
        filename: path of the source image relative to the input folder.
        source_id: stable, unique id of the example.
        roi_png: optional PNG of the region of interest (255 inside, 0 outside);
            the mask already holds 255 (ignore) outside it.

    Returns:
        The serialized ``tf.train.Example`` bytes (the same bytes as TensorFlow's
        deterministic serialization; TensorFlow is not imported).
    """
    from kerasseg.example_proto import encode_example as serialize

    if image_format not in IMAGE_FORMATS:
        raise SchemaError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    feature: dict[str, bytes | int] = {
        KEY_IMAGE_ENCODED: bytes(image_bytes),
        KEY_IMAGE_FORMAT: image_format.encode(),
        KEY_IMAGE_HEIGHT: int(height),
        KEY_IMAGE_WIDTH: int(width),
        KEY_IMAGE_CHANNELS: int(channels),
        KEY_IMAGE_FILENAME: filename.encode("utf-8"),
        KEY_IMAGE_SOURCE_ID: source_id.encode("utf-8"),
        KEY_MASK_ENCODED: bytes(mask_png),
        KEY_MASK_FORMAT: b"png",
    }
    if roi_png is not None:
        feature[KEY_ROI_ENCODED] = bytes(roi_png)
    # Written without TensorFlow, map keys sorted as protobuf's deterministic serialization
    # sorts them: conversions are byte-identical for any worker count.
    return serialize(feature)


def encode_volume_example(
    *,
    voxels: Any,
    mask: Any,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    filename: str,
    source_id: str,
) -> bytes:
    """Serialize one volume and its label volume as a ``tf.train.Example``.

    Args:
        voxels: numpy array ``(D, H, W)`` (or ``(D, H, W, C)``) in one of
            :data:`VOLUME_DTYPES`; stored as it is (raw bytes, zlib).
        mask: numpy uint8 array ``(D, H, W)`` of class ids, ``255`` = ignore.
        spacing: voxel size in mm in array axis order ``(z, y, x)``.
        origin: ITK origin ``(x, y, z)`` in mm.
        direction: ITK direction matrix, 9 floats row-major.
        filename: path of the source image relative to the input folder.
        source_id: stable, unique id of the example.

    Returns:
        The serialized ``tf.train.Example`` bytes (deterministic).
    """
    import zlib

    import numpy as np
    import tensorflow as tf

    voxels = np.asarray(voxels)
    mask = np.asarray(mask)
    dtype = voxels.dtype.name
    if dtype not in VOLUME_DTYPES:
        raise SchemaError(f"voxel type {dtype} is not one of {VOLUME_DTYPES}")
    if voxels.ndim not in (3, 4):
        raise SchemaError(f"a volume must be (D, H, W) or (D, H, W, C), got shape {voxels.shape}")
    if mask.dtype != np.uint8 or mask.shape != voxels.shape[:3]:
        raise SchemaError(f"mask must be uint8 {voxels.shape[:3]}, got {mask.dtype} {mask.shape}")
    if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
        raise SchemaError("spacing and origin take 3 numbers, direction 9")
    channels = 1 if voxels.ndim == 3 else int(voxels.shape[3])
    raw = np.ascontiguousarray(voxels, dtype=voxels.dtype.newbyteorder("<")).tobytes()

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    def _floats(values: Sequence[float]) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))

    feature = {
        KEY_VOLUME_ENCODED: _bytes(zlib.compress(raw, 6)),
        KEY_VOLUME_ENCODING: _bytes(VOLUME_ENCODING.encode()),
        KEY_VOLUME_DTYPE: _bytes(dtype.encode()),
        KEY_VOLUME_DEPTH: _int(voxels.shape[0]),
        KEY_VOLUME_HEIGHT: _int(voxels.shape[1]),
        KEY_VOLUME_WIDTH: _int(voxels.shape[2]),
        KEY_VOLUME_CHANNELS: _int(channels),
        KEY_VOLUME_SPACING: _floats(spacing),
        KEY_VOLUME_ORIGIN: _floats(origin),
        KEY_VOLUME_DIRECTION: _floats(direction),
        KEY_VOLUME_MASK_ENCODED: _bytes(zlib.compress(np.ascontiguousarray(mask).tobytes(), 6)),
        KEY_IMAGE_FILENAME: _bytes(filename.encode("utf-8")),
        KEY_IMAGE_SOURCE_ID: _bytes(source_id.encode("utf-8")),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def decode_volume_example(serialized: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_volume_example` in numpy (for checks, tools and tests).

    Returns:
        ``{"voxels": (D, H, W[, C]) array of the stored type, "mask": uint8 (D, H, W),
        "spacing", "origin", "direction": tuples, "filename", "source_id": str}``.

    Raises:
        SchemaError: a key is missing, the encoding is unknown, or the byte
            counts disagree with the stored shape and type.
    """
    import zlib

    import numpy as np
    import tensorflow as tf

    features = tf.train.Example.FromString(serialized).features.feature

    def get(key: str, kind: str) -> Any:
        if key not in features:
            raise SchemaError(f"volume record has no {key!r}")
        return list(getattr(features[key], kind).value)

    encoding = get(KEY_VOLUME_ENCODING, "bytes_list")[0].decode()
    if encoding != VOLUME_ENCODING:
        raise SchemaError(f"volume record encoding {encoding!r} is not {VOLUME_ENCODING!r}")
    dtype = get(KEY_VOLUME_DTYPE, "bytes_list")[0].decode()
    if dtype not in VOLUME_DTYPES:
        raise SchemaError(f"volume record voxel type {dtype!r} is not one of {VOLUME_DTYPES}")
    shape = [get(k, "int64_list")[0] for k in (KEY_VOLUME_DEPTH, KEY_VOLUME_HEIGHT, KEY_VOLUME_WIDTH)]
    channels = get(KEY_VOLUME_CHANNELS, "int64_list")[0]
    try:
        raw = zlib.decompress(get(KEY_VOLUME_ENCODED, "bytes_list")[0])
        raw_mask = zlib.decompress(get(KEY_VOLUME_MASK_ENCODED, "bytes_list")[0])
    except zlib.error as e:
        raise SchemaError(f"volume record data does not decompress ({e})") from None
    full = shape + ([channels] if channels > 1 else [])
    voxels = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    mask = np.frombuffer(raw_mask, dtype=np.uint8)
    if voxels.size != int(np.prod(full)) or mask.size != int(np.prod(shape)):
        raise SchemaError(f"volume record holds {voxels.size} voxels / {mask.size} labels, its shape says {full}")
    return {
        "voxels": voxels.astype(dtype).reshape(full),
        "mask": mask.reshape(shape),
        "spacing": tuple(get(KEY_VOLUME_SPACING, "float_list")),
        "origin": tuple(get(KEY_VOLUME_ORIGIN, "float_list")),
        "direction": tuple(get(KEY_VOLUME_DIRECTION, "float_list")),
        "filename": get(KEY_IMAGE_FILENAME, "bytes_list")[0].decode("utf-8"),
        "source_id": get(KEY_IMAGE_SOURCE_ID, "bytes_list")[0].decode("utf-8"),
    }


def volume_feature_spec() -> dict:
    """``tf.io.parse_single_example`` spec for volume records."""
    import tensorflow as tf

    return {
        KEY_VOLUME_ENCODED: tf.io.FixedLenFeature([], tf.string),
        KEY_VOLUME_ENCODING: tf.io.FixedLenFeature([], tf.string, default_value=VOLUME_ENCODING),
        KEY_VOLUME_DTYPE: tf.io.FixedLenFeature([], tf.string),
        KEY_VOLUME_DEPTH: tf.io.FixedLenFeature([], tf.int64),
        KEY_VOLUME_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        KEY_VOLUME_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        KEY_VOLUME_CHANNELS: tf.io.FixedLenFeature([], tf.int64, default_value=1),
        KEY_VOLUME_SPACING: tf.io.FixedLenFeature([3], tf.float32),
        KEY_VOLUME_ORIGIN: tf.io.FixedLenFeature([3], tf.float32),
        KEY_VOLUME_DIRECTION: tf.io.FixedLenFeature([9], tf.float32),
        KEY_VOLUME_MASK_ENCODED: tf.io.FixedLenFeature([], tf.string),
        KEY_IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
        KEY_IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def feature_spec() -> dict:
    """``tf.io.parse_single_example`` spec for the schema."""
    import tensorflow as tf

    return {
        KEY_IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        KEY_IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="png"),
        KEY_IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        KEY_IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        KEY_IMAGE_CHANNELS: tf.io.FixedLenFeature([], tf.int64),
        KEY_IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
        KEY_IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        KEY_MASK_ENCODED: tf.io.FixedLenFeature([], tf.string),
        KEY_MASK_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="png"),
        KEY_ROI_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


@dataclasses.dataclass
class DatasetInfo:
    """Contents of ``dataset.json``.

    Attributes:
        class_names: names of class ids ``0..num_classes-1`` (0 is background).
        splits: number of examples per split, e.g. ``{"train": 48, "val": 12}``.
        shards: number of shard files per split.
        class_pixel_counts: per split, pixels of each class id (ignore excluded).
        intensity: per-channel statistics of the training split:
            ``{"mean": [...], "std": [...], "min": [...], "max": [...], "dtype": "uint8"}``.
        channels: channel count of the images (1 or 3).
        image_dtype: ``"uint8"`` or ``"uint16"``.
        ignore_index: class id that losses and metrics skip.
        num_folds: number of k-fold lists ``splits/fold{k}_train.txt`` / ``fold{k}_val.txt``.
        dimensions: 2 for image records, 3 for volume records (schema version 2).
        volume: statistics of a volume dataset's training split (``dimensions: 3``):
            ``spacing`` and ``shape`` (``median``/``min``/``max`` per array axis
            ``(z, y, x)``), ``foreground_intensity`` (``p00_5``, ``p99_5``, ``mean``,
            ``std`` of the voxels inside any label), ``dtypes`` (volumes per
            storage type). ``class_pixel_counts`` count voxels there.
        source: free-form description of what was converted and how.
        schema_version: bumped on incompatible schema changes.
    """

    class_names: list[str]
    splits: dict[str, int]
    shards: dict[str, int] = dataclasses.field(default_factory=dict)
    class_pixel_counts: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    intensity: dict[str, Any] = dataclasses.field(default_factory=dict)
    channels: int = 1
    image_dtype: str = "uint8"
    ignore_index: int = IGNORE_INDEX
    num_folds: int = 0
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    dimensions: int = 2
    volume: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def is_volume(self) -> bool:
        """True for a dataset of volume records (``dimensions: 3``)."""
        return self.dimensions == 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "dataset.json") -> "DatasetInfo":
        """Build from the decoded ``dataset.json``, checking every field's type.

        Raises:
            SchemaError: naming ``origin`` and every problem found: not an
                object, another schema version, missing keys, wrong types or
                values (``class_names`` the string ``"lesion"``, a count of
                ``-1`` or ``"32"``, a ``num_classes`` or per-class list that
                disagrees with ``class_names``...).
        """
        if not isinstance(data, Mapping):
            raise SchemaError(
                f"{origin}: top level is {_kind(data)}, not an object with class_names, splits, ...; {_FIX}"
            )
        version = data.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
            raise SchemaError(
                f"{origin}: schema_version {version!r} is not supported by this kerasseg "
                f"(reads {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}); re-run the converter"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("class_names", "splits") if k not in data]
        if missing:
            raise SchemaError(f"{origin}: missing required keys {missing}")
        problems = dataset_info_problems(data)
        if problems:
            listed = "".join(f"\n  - {p}" for p in problems)
            raise SchemaError(f"{origin}: {len(problems)} problem(s) in its fields:{listed}\n{_FIX}")
        return cls(**{k: v for k, v in data.items() if k in known})


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, str):
        return f"the string {value!r:.40}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return f"a list ({len(value)} item(s))"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def dataset_info_problems(data: Mapping[str, Any]) -> list[str]:
    """Every type or consistency problem of a decoded ``dataset.json`` object (empty if sound).

    Checked: ``class_names`` (a non-empty list of unique non-empty strings),
    ``num_classes`` when present (equal to their count), ``splits`` and
    ``shards`` (objects of split name -> non-negative integer; a split with
    examples has at least one shard), ``class_pixel_counts`` (per split, one
    non-negative integer per class), ``channels`` (1 to 4), ``image_dtype``
    (``uint8``/``uint16``), ``ignore_index`` (0..255), ``num_folds``
    (non-negative integer), ``intensity`` and ``source`` (objects; intensity
    ``mean``/``std``/``min``/``max`` lists of finite numbers).
    """
    problems: list[str] = []
    names = data.get("class_names")
    if not isinstance(names, list):
        problems.append(f"class_names must be a list of class name strings, got {_kind(names)}")
        names = None
    elif not names:
        problems.append("class_names is empty")
    else:
        bad = [repr(n) for n in names if not isinstance(n, str) or not n]
        if bad:
            problems.append(f"class_names must hold non-empty strings, got {', '.join(bad[:5])}")
        elif len(set(names)) != len(names):
            problems.append(f"class_names has duplicates: {names}")
    num_classes = len(names) if isinstance(names, list) else None
    if "num_classes" in data:
        value = data["num_classes"]
        if not _is_int(value) or (num_classes is not None and value != num_classes):
            problems.append(f"num_classes is {_kind(value)} but class_names lists {num_classes} classes")

    def counts(key: str, *, required: bool) -> dict:
        value = data.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, Mapping):
            problems.append(f"{key} must be an object of split name -> integer, got {_kind(value)}")
            return {}
        for split, n in value.items():
            if not isinstance(split, str) or not split:
                problems.append(f"{key}: split names must be non-empty strings, got {split!r}")
            elif not _is_int(n) or n < 0:
                problems.append(f"{key}[{split!r}] must be a non-negative integer, got {_kind(n)}")
        return dict(value)

    splits = counts("splits", required=True)
    shards = counts("shards", required=False)
    for split, n in shards.items():
        if split not in splits:
            problems.append(f"shards lists split {split!r}, which splits does not")
        elif _is_int(n) and _is_int(splits[split]) and splits[split] > 0 and n == 0:
            problems.append(f"shards[{split!r}] is 0 but splits[{split!r}] is {splits[split]}")
    pixel_counts = data.get("class_pixel_counts", {})
    if not isinstance(pixel_counts, Mapping):
        problems.append(f"class_pixel_counts must be an object of split name -> list, got {_kind(pixel_counts)}")
    else:
        for split, values in pixel_counts.items():
            if not isinstance(values, list) or not all(_is_int(v) and v >= 0 for v in values):
                problems.append(f"class_pixel_counts[{split!r}] must be a list of non-negative integers")
            elif num_classes is not None and len(values) != num_classes:
                problems.append(
                    f"class_pixel_counts[{split!r}] has {len(values)} entries but class_names lists "
                    f"{num_classes} classes"
                )
    channels = data.get("channels", 1)
    if not _is_int(channels) or not 1 <= channels <= 4:
        problems.append(f"channels must be an integer 1..4, got {_kind(channels)}")
    dimensions = data.get("dimensions", 2)
    if dimensions not in (2, 3) or isinstance(dimensions, bool):
        problems.append(f"dimensions must be 2 (images) or 3 (volumes), got {_kind(dimensions)}")
    dtype = data.get("image_dtype", "uint8")
    if dimensions == 3:
        if dtype not in VOLUME_DTYPES + ("mixed",):
            problems.append(f"image_dtype of a volume dataset must be one of {VOLUME_DTYPES} or 'mixed', "
                            f"got {_kind(dtype)}")
        if "volume" in data and not isinstance(data["volume"], Mapping):
            problems.append(f"volume must be an object, got {_kind(data['volume'])}")
    elif dtype not in ("uint8", "uint16"):
        problems.append(f"image_dtype must be 'uint8' or 'uint16', got {_kind(dtype)}")
    ignore = data.get("ignore_index", IGNORE_INDEX)
    if not _is_int(ignore) or not 0 <= ignore <= 255:
        problems.append(f"ignore_index must be an integer 0..255, got {_kind(ignore)}")
    folds = data.get("num_folds", 0)
    if not _is_int(folds) or folds < 0:
        problems.append(f"num_folds must be a non-negative integer, got {_kind(folds)}")
    for key in ("intensity", "source"):
        if key in data and not isinstance(data[key], Mapping):
            problems.append(f"{key} must be an object, got {_kind(data[key])}")
    intensity = data.get("intensity")
    if isinstance(intensity, Mapping):
        for key in ("mean", "std", "min", "max"):
            if key in intensity:
                values = intensity[key]
                if not isinstance(values, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
                ):
                    problems.append(f"intensity.{key} must be a list of finite numbers, got {_kind(values)}")
    return problems


def read_dataset_info(dataset_dir: str) -> DatasetInfo:
    """Read and validate ``dataset.json`` of a converted dataset folder.

    Works with any path ``tf.io.gfile`` understands (local, ``gs://``...); local
    paths are read without importing TensorFlow.

    Raises:
        SchemaError: the folder has no ``dataset.json`` (conversion unfinished or
            not a dataset), it is not valid JSON, has another schema version or
            fields of the wrong type.
    """
    path = os.path.join(dataset_dir, DATASET_INFO_FILENAME)
    if not _exists(path):
        raise SchemaError(
            f"{dataset_dir}: no {DATASET_INFO_FILENAME}; not a converted kerasseg dataset "
            "(or the conversion did not finish). Run labelme2tfrecord or masks2tfrecord first."
        )
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SchemaError(f"{path}: invalid JSON ({e}); {_FIX}") from e
    return DatasetInfo.from_dict(data, origin=path)


def write_dataset_info(dataset_dir: str, info: DatasetInfo) -> str:
    """Write ``dataset.json`` into ``dataset_dir`` and return its path."""
    path = os.path.join(dataset_dir, DATASET_INFO_FILENAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(info.to_json())
    return path


def split_files(dataset_dir: str, split: str) -> list[str]:
    """Return the sorted shard paths of ``split``; raise if there are none."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(dataset_dir, shard_glob(split))))
    if not files:
        raise SchemaError(f"{dataset_dir}: no shards for split {split!r}")
    return files


def read_split_ids(dataset_dir: str, name: str) -> list[str]:
    """Source ids listed in ``splits/<name>.txt`` (e.g. ``train`` or ``fold0_val``)."""
    path = os.path.join(dataset_dir, SPLITS_DIRNAME, f"{name}.txt")
    with _open_text(path) as f:
        return [line.strip() for line in f if line.strip()]


# --------------------------------------------------------------------------- dataset checks

SHARD_PATTERN = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
"""Shard file names ``{split}-{i:05d}-of-{n:05d}.tfrecord``."""


def _is_remote(path: str) -> bool:
    return "://" in path


def _list_dir(dataset_dir: str) -> list[str]:
    if _is_remote(dataset_dir):
        import tensorflow as tf

        return [name.rstrip("/") for name in tf.io.gfile.listdir(dataset_dir)]
    return os.listdir(dataset_dir)


def _file_size(path: str) -> int:
    if _is_remote(path):
        import tensorflow as tf

        return int(tf.io.gfile.stat(path).length)
    return os.path.getsize(path)


def _exists(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return bool(tf.io.gfile.exists(path))
    return os.path.exists(path)


def _open_text(path: str):
    """A UTF-8 text file: ``tf.io.gfile`` for remote paths, plain ``open`` for local ones (no TensorFlow)."""
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "r")
    return open(path, "r", encoding="utf-8")


def _open_binary(path: str):
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def shard_problems(dataset_dir: str, split: str, info: DatasetInfo) -> list[str]:
    """Problems with the shard files of ``split`` (names, completeness, emptiness); empty if sound.

    The shards must be exactly ``{split}-{i:05d}-of-{n:05d}.tfrecord`` for every
    ``i < n``, with ``n`` = ``info.shards[split]`` (or the count in the file
    names when ``dataset.json`` has no shard counts), and none may be 0 bytes.
    """
    names = sorted(
        name for name in _list_dir(dataset_dir)
        if (m := SHARD_PATTERN.match(name)) is not None and m["split"] == split
    )
    expected = info.shards.get(split)
    if expected is None:
        counts = {int(m["count"]) for name in names if (m := SHARD_PATTERN.match(name)) is not None}
        if len(counts) > 1:
            return [f"{split}: shard files name different shard counts ({', '.join(names[:4])}...)"]
        expected = counts.pop() if counts else 0
    problems = []
    if info.splits.get(split, 0) > 0 and expected == 0:
        problems.append(f"{split}: dataset.json lists {info.splits[split]} examples but no shard files")
    wanted = [shard_filename(split, i, expected) for i in range(expected)]
    present = set(names)
    missing = [name for name in wanted if name not in present]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        problems.append(f"{split}: missing shard file(s) {', '.join(missing[:3])}{more}")
    for name in names:
        if name not in wanted:
            problems.append(f"{name}: unexpected shard file (dataset.json says {split} has {expected} shard(s))")
        elif _file_size(os.path.join(dataset_dir, name)) == 0:
            problems.append(f"{name}: empty shard file (0 bytes)")
    return problems


class _CorruptRecord(Exception):
    def __init__(self, index: int, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.index, self.offset, self.problem = index, offset, problem


def count_records(path: str) -> int:
    """Number of records in one TFRecord file, from its framing alone (fast, nothing decoded).

    Each record is ``length`` (uint64), the checksum of ``length``, ``length``
    bytes of data and their checksum; the length checksums are verified and
    the records must end exactly at the end of the file (the data checksums
    are not: see :func:`check_dataset` ``verify_records``).

    Raises:
        SchemaError: naming the file, the record index and byte offset of the
            first record whose framing is damaged or truncated.
    """
    try:
        return _count_framed(path)
    except _CorruptRecord as e:
        raise SchemaError(
            f"{path}: record {e.index} (byte {e.offset}) is corrupt: {e.problem}; {_FIX}"
        ) from None


def _count_framed(path: str) -> int:
    from kerasseg.tfrecord_file import masked_crc32c

    size = _file_size(path)
    count = 0
    offset = 0
    with _open_binary(path) as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise _CorruptRecord(count, offset, "the file ends inside a record header (truncated)")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise _CorruptRecord(count, offset, "its length field fails its checksum")
            end = offset + 12 + length + 4
            if end > size:
                raise _CorruptRecord(count, offset, f"its {length} bytes run past the end of the file (truncated)")
            f.seek(end)
            offset = end
            count += 1
    return count


def _verify_checksums(path: str) -> int:
    """Read every record with TensorFlow (which checks each data checksum); return the count."""
    import tensorflow as tf

    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            count += 1
    except tf.errors.DataLossError as e:
        found = re.search(r"record at (\d+)", e.message or "")
        # TensorFlow names the offset of the record's data, 12 bytes after its start
        where = f" (byte {int(found.group(1)) - 12})" if found else ""
        said = f" (TensorFlow: 'corrupted record at {found.group(1)}')" if found else ""
        raise SchemaError(
            f"{path}: record {count}{where} is corrupt: its data fails its checksum{said}; {_FIX}"
        ) from None
    return count


def check_dataset(dataset_dir: str, splits: Sequence[str], *, verify_records: bool = False) -> None:
    """Check a converted dataset against its ``dataset.json`` before it is used.

    Checks ``dataset.json`` (readable, every field of the right type:
    :meth:`DatasetInfo.from_dict`) and, for each of ``splits``: the split is
    listed, its shard files are exactly those the shard pattern names for
    the shard count (:func:`shard_problems`), none is empty, and their records
    (counted from the TFRecord framing, nothing decoded: about a second per
    100,000 records) add up to the split's count in ``dataset.json``.

    Args:
        dataset_dir: the converted dataset folder (local, or any ``tf.io.gfile`` path).
        splits: the splits about to be read, e.g. ``["train", "val"]``.
        verify_records: also read every record with TensorFlow and verify its
            data checksum (reads every byte once; use it after a
            ``DataLossError`` to name the damaged shard and record).

    Raises:
        SchemaError: naming the file (and the record) at fault and the fix.
    """
    info = read_dataset_info(dataset_dir)
    problems: list[str] = []
    for split in splits:
        if split not in info.splits:
            raise SchemaError(
                f"{os.path.join(dataset_dir, DATASET_INFO_FILENAME)} lists no split {split!r} "
                f"(it has {', '.join(sorted(info.splits)) or 'none'})"
            )
        found = shard_problems(dataset_dir, split, info)
        problems += found
        if found:
            continue
        expected = info.shards.get(split)
        if expected is None:
            expected = len([n for n in _list_dir(dataset_dir)
                            if (m := SHARD_PATTERN.match(n)) is not None and m["split"] == split])
        total = 0
        for i in range(expected):
            path = os.path.join(dataset_dir, shard_filename(split, i, expected))
            total += _verify_checksums(path) if verify_records else count_records(path)
        if total != info.splits[split]:
            problems.append(
                f"{split}: {total} records in {expected} shard(s), but dataset.json says {info.splits[split]}"
            )
    if problems:
        listed = "".join(f"\n  - {p}" for p in problems)
        raise SchemaError(
            f"{dataset_dir}: the shards do not match {DATASET_INFO_FILENAME}:{listed}\n"
            f"Run `kerasseg data verify {dataset_dir}` to check every record, and convert the data "
            "again (labelme2tfrecord / masks2tfrecord with --overwrite) to repair it."
        )


__all__: Sequence[str] = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "DATASET_INFO_FILENAME",
    "VOLUME_DTYPES",
    "encode_volume_example",
    "decode_volume_example",
    "volume_feature_spec",
    "IGNORE_INDEX",
    "SchemaError",
    "DatasetInfo",
    "encode_example",
    "feature_spec",
    "shard_filename",
    "shard_glob",
    "read_dataset_info",
    "write_dataset_info",
    "split_files",
    "read_split_ids",
    "SHARD_PATTERN",
    "check_dataset",
    "count_records",
    "dataset_info_problems",
    "shard_problems",
]
