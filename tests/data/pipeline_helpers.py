"""Helpers for the tf.data pipeline tests: real TFRecord datasets in tmp dirs (fixtures: make_dataset, blocks_dataset)."""

from __future__ import annotations

import io
import pathlib
from typing import Callable, Sequence

import numpy as np
import pytest
from PIL import Image

from kerasseg import schema


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of a uint8/uint16 ``(H, W)`` or ``(H, W, 3)`` array."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype == np.uint16:
        import cv2

        ok, buf = cv2.imencode(".png", array)
        assert ok
        return buf.tobytes()
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def write_dataset(
    out_dir: pathlib.Path,
    splits: dict[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    *,
    class_names: Sequence[str] = ("background", "object"),
    num_shards: int = 1,
    **info_kwargs,
) -> pathlib.Path:
    """Write ``splits = {"train": [(image, mask), ...]}`` as kerasseg TFRecords + dataset.json."""
    import tensorflow as tf

    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, list[int]] = {}
    first = next(iter(splits.values()))[0][0]
    channels = 1 if first.ndim == 2 else first.shape[-1]
    dtype = str(first.dtype)
    for split, pairs in splits.items():
        shards = min(num_shards, len(pairs))
        writers = [tf.io.TFRecordWriter(str(out_dir / schema.shard_filename(split, i, shards))) for i in range(shards)]
        total = np.zeros(len(class_names), np.int64)
        for i, (image, mask) in enumerate(pairs):
            writers[i % shards].write(
                schema.encode_example(
                    image_bytes=png_bytes(image),
                    image_format="png",
                    height=image.shape[0],
                    width=image.shape[1],
                    channels=channels,
                    mask_png=png_bytes(mask.astype(np.uint8)),
                    filename=f"{split}/{i:03d}.png",
                    source_id=f"{split}-{i:03d}",
                )
            )
            valid = mask[mask != 255]
            total += np.bincount(valid.ravel(), minlength=len(class_names))[: len(class_names)]
        for w in writers:
            w.close()
        counts[split] = [int(c) for c in total]
    train_pairs = splits.get("train") or next(iter(splits.values()))
    train = np.concatenate([p[0].reshape(-1, channels).astype(np.float64) for p in train_pairs])
    info = schema.DatasetInfo(
        class_names=list(class_names),
        splits={k: len(v) for k, v in splits.items()},
        shards={k: min(num_shards, len(v)) for k, v in splits.items()},
        class_pixel_counts=counts,
        intensity={
            "mean": train.mean(axis=0).tolist(),
            "std": train.std(axis=0).tolist(),
            "min": train.min(axis=0).tolist(),
            "max": train.max(axis=0).tolist(),
            "dtype": dtype,
        },
        channels=channels,
        image_dtype=dtype,
        **info_kwargs,
    )
    schema.write_dataset_info(str(out_dir), info)
    return out_dir


def blocks_example(rng: np.random.Generator, size: int = 64, *, dtype=np.uint8, num_classes: int = 2,
                   ignore_block: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-constant image whose mask is computable from it.

    Class ``c`` pixels have intensity in band ``c`` (``[c * step + step/4, c * step + 3 step/4]``),
    so ``mask == intensity // step``. A rectangle of ignore (255) may be added.
    """
    top = 255 if dtype == np.uint8 else 65535
    step = (top + 1) // num_classes
    mask = np.zeros((size, size), np.uint8)
    block = max(4, size // 8)
    for _ in range(6):
        c = int(rng.integers(1, num_classes))
        y, x = rng.integers(0, size - 2 * block, size=2)
        h, w = rng.integers(block, 2 * block, size=2)
        mask[y : y + h, x : x + w] = c
    image = (mask.astype(np.float64) * step + step / 2).astype(dtype)
    if ignore_block:
        y, x = rng.integers(0, size - block, size=2)
        mask[y : y + block // 2, x : x + block // 2] = 255
    return image, mask


@pytest.fixture
def make_dataset(tmp_path) -> Callable[..., pathlib.Path]:
    counter = {"n": 0}

    def _make(splits, **kwargs) -> pathlib.Path:
        counter["n"] += 1
        return write_dataset(tmp_path / f"ds{counter['n']}", splits, **kwargs)

    return _make


@pytest.fixture
def blocks_dataset(make_dataset) -> pathlib.Path:
    rng = np.random.default_rng(0)
    train = [blocks_example(rng, 64) for _ in range(6)]
    val = [blocks_example(rng, 48) for _ in range(3)]
    return make_dataset({"train": train, "val": val}, num_shards=2)
