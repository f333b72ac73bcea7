"""Helpers for the volume pipeline tests: tiny volume datasets written with the schema, and real
msd_hippocampus volumes (skipped when the shared data is absent)."""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
import pytest

from kerasseg import schema
from kerasseg_testing import SHARED_DATA

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def volume_record(voxels: np.ndarray, mask: np.ndarray | None = None, *, spacing=(1.0, 1.0, 1.0),
                  origin=(0.0, 0.0, 0.0), direction=IDENTITY, name: str = "case") -> dict:
    """One record's fields for :func:`write_volume_dataset` (mask defaults to all background)."""
    if mask is None:
        mask = np.zeros(voxels.shape[:3], np.uint8)
    return {"voxels": voxels, "mask": mask.astype(np.uint8), "spacing": tuple(spacing), "origin": tuple(origin),
            "direction": tuple(direction), "filename": f"{name}.nii.gz", "source_id": name}


def write_volume_dataset(out_dir: pathlib.Path, splits: dict[str, Sequence[dict]], *,
                         class_names: Sequence[str] = ("background", "a", "b"), num_shards: int = 1) -> pathlib.Path:
    """Write ``{"train": [volume_record(...), ...]}`` as volume TFRecords + a ``dimensions: 3`` dataset.json."""
    import tensorflow as tf

    out_dir.mkdir(parents=True, exist_ok=True)
    k = len(class_names)
    counts: dict[str, list[int]] = {}
    for split, records in splits.items():
        shards = min(num_shards, len(records))
        writers = [tf.io.TFRecordWriter(str(out_dir / schema.shard_filename(split, i, shards)))
                   for i in range(shards)]
        total = np.zeros(k, np.int64)
        for i, rec in enumerate(records):
            writers[i % shards].write(schema.encode_volume_example(**rec))
            valid = rec["mask"][rec["mask"] != 255]
            total += np.bincount(valid.ravel(), minlength=k)[:k]
        for w in writers:
            w.close()
        counts[split] = [int(c) for c in total]
    train = list(splits.get("train") or next(iter(splits.values())))
    channels = 1 if train[0]["voxels"].ndim == 3 else int(train[0]["voxels"].shape[-1])
    flat = np.concatenate([r["voxels"].reshape(-1, channels).astype(np.float64) for r in train])
    fg = np.concatenate([r["voxels"].reshape(-1, channels)[((r["mask"] > 0) & (r["mask"] != 255)).ravel()]
                         .astype(np.float64) for r in train])
    if fg.size == 0:
        fg = flat
    dtypes: dict[str, int] = {}
    for r in train:
        dtypes[r["voxels"].dtype.name] = dtypes.get(r["voxels"].dtype.name, 0) + 1
    spacings = np.array([r["spacing"] for r in train])
    shapes = np.array([r["mask"].shape for r in train])
    info = schema.DatasetInfo(
        class_names=list(class_names),
        splits={s: len(r) for s, r in splits.items()},
        shards={s: min(num_shards, len(r)) for s, r in splits.items()},
        class_pixel_counts=counts,
        intensity={"mean": flat.mean(0).tolist(), "std": flat.std(0).tolist(), "min": flat.min(0).tolist(),
                   "max": flat.max(0).tolist()},
        channels=channels,
        image_dtype=next(iter(dtypes)) if len(dtypes) == 1 else "mixed",
        dimensions=3,
        volume={
            "spacing": {"median": np.median(spacings, 0).tolist(), "min": spacings.min(0).tolist(),
                        "max": spacings.max(0).tolist()},
            "shape": {"median": np.median(shapes, 0).tolist(), "min": shapes.min(0).tolist(),
                      "max": shapes.max(0).tolist()},
            "foreground_intensity": {"p00_5": np.percentile(fg, 0.5, axis=0).tolist(),
                                     "p99_5": np.percentile(fg, 99.5, axis=0).tolist(),
                                     "mean": fg.mean(0).tolist(), "std": fg.std(0).tolist()},
            "dtypes": dtypes,
        },
    )
    schema.write_dataset_info(str(out_dir), info)
    return out_dir


def hippocampus_dir() -> pathlib.Path:
    """``msd_hippocampus`` of the shared data folder (``KERASSEG_SHARED_DATA``), or skip the test."""
    path = SHARED_DATA / "msd_hippocampus"
    if not (path / "imagesTr").is_dir():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


def hippocampus_records(count: int) -> list[dict]:
    """The first ``count`` real msd_hippocampus cases (sorted by name) as record fields, read with SimpleITK."""
    sitk = pytest.importorskip("SimpleITK")
    root = hippocampus_dir()
    records = []
    for image_path in sorted((root / "imagesTr").glob("*.nii.gz"))[:count]:
        image = sitk.ReadImage(str(image_path))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / image_path.name)))
        records.append({
            "voxels": sitk.GetArrayFromImage(image),  # (z, y, x), stored type kept (float32 or uint8)
            "mask": np.rint(labels).astype(np.uint8),  # two label files are float32 0., 1., 2.
            "spacing": tuple(reversed(image.GetSpacing())),
            "origin": tuple(image.GetOrigin()),
            "direction": tuple(image.GetDirection()),
            "filename": f"imagesTr/{image_path.name}",
            "source_id": image_path.name.split(".")[0],
        })
    return records
