"""Check a converted dataset: every record decodes and agrees with ``dataset.json``.

``dataset.json`` itself is checked field by field first (types, lengths: see
:func:`kerasseg.schema.dataset_info_problems`): a ``class_names`` edited to the
string ``"lesion"`` or a count edited to ``"32"`` is reported as a problem.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from data_tools.errors import ConversionError



@dataclasses.dataclass
class VerifyReport:
    """Outcome of :func:`verify_dataset`.

    Attributes:
        dataset_dir: the folder checked.
        split_counts: records found per split.
        problems: every disagreement found (empty when the dataset is sound).
    """

    dataset_dir: str
    split_counts: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_text(self) -> str:
        counts = ", ".join(f"{split}: {n}" for split, n in self.split_counts.items())
        if self.ok:
            return f"{self.dataset_dir}: OK ({counts} records; all decode and match dataset.json)\n"
        found = f" ({counts} records)" if counts else ""
        lines = [f"{self.dataset_dir}: {len(self.problems)} problem(s){found}"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines) + "\n"


def verify_dataset(dataset_dir: str | os.PathLike, *, max_problems: int = 50) -> VerifyReport:
    """Read every record of a converted dataset and check it.

    Checks: ``dataset.json`` is valid JSON and every field has the right type
    (reported as problems, nothing else is checked then); the shard files of
    each split are exactly those the shard pattern names, none empty; every image and mask decodes with TensorFlow; image and mask
    sizes agree with the stored height/width/channels; mask values are known
    class ids or 255; source ids are unique and equal ``splits/<split>.txt``;
    record counts and per-class pixel counts equal ``dataset.json``.

    Raises:
        ConversionError: no (or an unreadable, or not an object) ``dataset.json``.
    """
    from kerasseg import schema
    from kerasseg.tf_logging import import_tensorflow

    tf = import_tensorflow()

    dataset_dir = os.fspath(dataset_dir)
    try:
        info = schema.read_dataset_info(dataset_dir)
    except schema.SchemaError as e:
        fields = _field_problems(dataset_dir)
        if fields:
            return VerifyReport(dataset_dir, {}, [f"{schema.DATASET_INFO_FILENAME}: {p}" for p in fields])
        raise ConversionError(dataset_dir, str(e)) from e
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < max_problems:
            problems.append(text)
        elif len(problems) == max_problems:
            problems.append("... more problems not listed")

    found_splits = set()
    for name in os.listdir(dataset_dir):
        match = schema.SHARD_PATTERN.match(name)
        if match:
            found_splits.add(match["split"])
    for extra in sorted(found_splits - set(info.splits)):
        problem(f"shards of split {extra!r} are not listed in dataset.json")

    spec = schema.feature_spec()
    image_dtype = tf.uint16 if info.image_dtype == "uint16" else tf.uint8
    counts: dict[str, int] = {}
    all_ids: dict[str, str] = {}
    for split, expected in info.splits.items():
        files = sorted(tf.io.gfile.glob(os.path.join(dataset_dir, schema.shard_glob(split))))
        for text in schema.shard_problems(dataset_dir, split, info):
            problem(text)
        pixels = np.zeros(256, np.int64)
        ids: list[str] = []
        n = 0
        for path in files:
            try:
                for index, raw in enumerate(tf.data.TFRecordDataset(path)):
                    n += 1
                    where = f"{os.path.basename(path)} record {index}"
                    if info.is_volume:
                        source_id = _check_volume_record(raw.numpy(), info, where, problem, pixels)
                    else:
                        source_id = _check_record(raw, spec, image_dtype, info, where, problem, pixels)
                    if source_id is None:
                        continue
                    if source_id in all_ids:
                        problem(f"{where}: source id {source_id!r} also in {all_ids[source_id]}")
                    all_ids[source_id] = where
                    ids.append(source_id)
            except tf.errors.OpError as e:
                problem(f"{os.path.basename(path)}: unreadable TFRecord ({e.message.splitlines()[0]})")
        counts[split] = n
        if n != expected:
            problem(f"{split}: {n} records, dataset.json says {expected}")
        listed_path = os.path.join(dataset_dir, schema.SPLITS_DIRNAME, f"{split}.txt")
        if os.path.exists(listed_path):
            listed = schema.read_split_ids(dataset_dir, split)
            if sorted(listed) != sorted(ids):
                missing = sorted(set(listed) - set(ids))[:5]
                extra = sorted(set(ids) - set(listed))[:5]
                problem(f"{split}: records and splits/{split}.txt differ (missing {missing}, extra {extra})")
        else:
            problem(f"{split}: splits/{split}.txt is missing")
        want = info.class_pixel_counts.get(split)
        if want is not None and [int(v) for v in pixels[: len(want)]] != [int(v) for v in want]:
            problem(f"{split}: class pixel counts {pixels[:len(want)].tolist()} differ from dataset.json {want}")
    return VerifyReport(dataset_dir, counts, problems)


def _field_problems(dataset_dir: str) -> list[str]:
    """Field type problems of a ``dataset.json`` that is a JSON object of our schema version."""
    from kerasseg import schema

    try:
        with open(os.path.join(dataset_dir, schema.DATASET_INFO_FILENAME), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("schema_version") not in schema.SUPPORTED_SCHEMA_VERSIONS:
        return []
    if any(key not in data for key in ("class_names", "splits")):
        return []
    return schema.dataset_info_problems(data)


def _check_record(raw, spec, image_dtype, info, where, problem, pixels) -> str | None:
    import tensorflow as tf

    from kerasseg import schema

    try:
        ex = tf.io.parse_single_example(raw, spec)
    except tf.errors.OpError as e:
        problem(f"{where}: not a kerasseg example ({e.message.splitlines()[0]})")
        return None
    height = int(ex[schema.KEY_IMAGE_HEIGHT])
    width = int(ex[schema.KEY_IMAGE_WIDTH])
    channels = int(ex[schema.KEY_IMAGE_CHANNELS])
    fmt = ex[schema.KEY_IMAGE_FORMAT].numpy().decode()
    source_id = ex[schema.KEY_IMAGE_SOURCE_ID].numpy().decode("utf-8")
    where = f"{where} ({source_id})"
    try:
        if fmt == "jpeg":
            image = tf.io.decode_jpeg(ex[schema.KEY_IMAGE_ENCODED], channels=0)
        elif fmt == "png":
            image = tf.io.decode_png(ex[schema.KEY_IMAGE_ENCODED], channels=0, dtype=image_dtype)
        else:
            problem(f"{where}: unknown image format {fmt!r}")
            return source_id
        mask = tf.io.decode_png(ex[schema.KEY_MASK_ENCODED], channels=0, dtype=tf.uint8)
    except tf.errors.OpError as e:
        problem(f"{where}: does not decode ({e.message.splitlines()[0]})")
        return source_id
    if tuple(image.shape) != (height, width, channels):
        problem(f"{where}: image decodes to {tuple(image.shape)}, record says {(height, width, channels)}")
    if tuple(mask.shape) != (height, width, 1):
        problem(f"{where}: mask decodes to {tuple(mask.shape)}, image is {(height, width)}")
        return source_id
    counts = np.bincount(mask.numpy().ravel(), minlength=256)
    bad = [v for v in np.nonzero(counts)[0].tolist() if v >= info.num_classes and v != info.ignore_index]
    if bad:
        problem(f"{where}: mask values {bad} are not class ids (0..{info.num_classes - 1}) or {info.ignore_index}")
    pixels += counts
    return source_id


def _check_volume_record(raw: bytes, info, where, problem, pixels) -> str | None:
    """Check one volume record: it decodes (sizes, type, zlib), its geometry is sane, its labels are class ids."""
    from kerasseg import schema

    try:
        record = schema.decode_volume_example(raw)
    except schema.SchemaError as e:
        problem(f"{where}: {e}")
        return None
    source_id = record["source_id"]
    where = f"{where} ({source_id})"
    spacing = np.asarray(record["spacing"], np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        problem(f"{where}: spacing {record['spacing']} is not 3 positive numbers (mm)")
    if record["voxels"].shape[:3] != record["mask"].shape:
        problem(f"{where}: voxels {record['voxels'].shape} and labels {record['mask'].shape} differ in size")
        return source_id
    counts = np.bincount(record["mask"].ravel(), minlength=256)
    bad = [v for v in np.nonzero(counts)[0].tolist() if v >= info.num_classes and v != info.ignore_index]
    if bad:
        problem(f"{where}: label values {bad} are not class ids (0..{info.num_classes - 1}) or {info.ignore_index}")
    pixels += counts
    return source_id


__all__ = ["VerifyReport", "verify_dataset"]
