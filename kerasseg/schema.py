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
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

SCHEMA_VERSION = 1
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

IMAGE_FORMATS = ("png", "jpeg")


class SchemaError(ValueError):
    """A dataset folder or record does not follow the kerasseg schema."""


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
) -> bytes:
    """Serialize one image/mask pair as a ``tf.train.Example``.

    Args:
        image_bytes: encoded image (PNG or JPEG bytes, never re-encoded lossily).
        image_format: ``"png"`` or ``"jpeg"``.
        height, width, channels: size of the decoded image.
        mask_png: PNG of uint8 class ids, ``255`` = ignore, shape ``(height, width)``.
        filename: path of the source image relative to the input folder.
        source_id: stable, unique id of the example.

    Returns:
        The serialized ``tf.train.Example`` bytes.
    """
    import tensorflow as tf  # local import: keep `import kerasseg.schema` light

    if image_format not in IMAGE_FORMATS:
        raise SchemaError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    feature = {
        KEY_IMAGE_ENCODED: _bytes(image_bytes),
        KEY_IMAGE_FORMAT: _bytes(image_format.encode()),
        KEY_IMAGE_HEIGHT: _int(height),
        KEY_IMAGE_WIDTH: _int(width),
        KEY_IMAGE_CHANNELS: _int(channels),
        KEY_IMAGE_FILENAME: _bytes(filename.encode("utf-8")),
        KEY_IMAGE_SOURCE_ID: _bytes(source_id.encode("utf-8")),
        KEY_MASK_ENCODED: _bytes(mask_png),
        KEY_MASK_FORMAT: _bytes(b"png"),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # deterministic=True: protobuf map order can differ between processes otherwise,
    # and conversions must be byte-identical for any worker count.
    return example.SerializeToString(deterministic=True)


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
        folds: optional k-fold assignment ``{"0": {"train": [...ids], "val": [...]}, ...}``
            stored in ``splits/`` files; here only the count.
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
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "dataset.json") -> "DatasetInfo":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"{origin}: schema_version {version!r} is not supported by this kerasseg "
                f"(expects {SCHEMA_VERSION}); re-run the converter"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("class_names", "splits") if k not in data]
        if missing:
            raise SchemaError(f"{origin}: missing required keys {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})


def read_dataset_info(dataset_dir: str) -> DatasetInfo:
    """Read and validate ``dataset.json`` of a converted dataset folder.

    Works with any path ``tf.io.gfile`` understands (local, ``gs://``...).

    Raises:
        SchemaError: the folder has no ``dataset.json`` (conversion unfinished or
            not a dataset) or it has another schema version.
    """
    import tensorflow as tf

    path = os.path.join(dataset_dir, DATASET_INFO_FILENAME)
    if not tf.io.gfile.exists(path):
        raise SchemaError(
            f"{dataset_dir}: no {DATASET_INFO_FILENAME}; not a converted kerasseg dataset "
            "(or the conversion did not finish). Run labelme2tfrecord or masks2tfrecord first."
        )
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}: invalid JSON ({e})") from e
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
    import tensorflow as tf

    path = os.path.join(dataset_dir, SPLITS_DIRNAME, f"{name}.txt")
    with tf.io.gfile.GFile(path, "r") as f:
        return [line.strip() for line in f if line.strip()]


__all__: Sequence[str] = [
    "SCHEMA_VERSION",
    "DATASET_INFO_FILENAME",
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
]
