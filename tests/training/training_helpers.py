"""Helpers for tests/training: a tiny real TFRecord dataset and tiny configs.

The dataset is written with the schema module itself (``encode_example`` +
``DatasetInfo``), so these tests do not depend on the converter: 32x32
grayscale images of a bright disk on a noisy background, the disk being
class 1. The mask is computable from the image, so a model can learn it in a
few epochs.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def disk_example(rng: np.random.Generator, size: int = 32, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """One ``(size, size)`` image with a bright disk and its 0/1 mask."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    r = rng.uniform(size * 0.15, size * 0.3)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    top = 255 if dtype == np.uint8 else 65535
    image = rng.normal(0.25, 0.05, (size, size)) + 0.5 * mask
    image = np.clip(image, 0, 1) * top
    return image.astype(dtype), mask


def write_dataset(
    out_dir: str | os.PathLike,
    *,
    splits: dict[str, int] | None = None,
    shards: dict[str, int] | None = None,
    size: int = 32,
    seed: int = 0,
) -> pathlib.Path:
    """Write a converted dataset folder (``dataset.json`` + TFRecord shards)."""
    import cv2
    import tensorflow as tf

    from kerasseg import schema

    splits = splits or {"train": 16, "val": 8}
    shards = shards or {"train": 2, "val": 1}
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts: dict[str, list[int]] = {}
    all_train = []
    for split, n in splits.items():
        k = shards.get(split, 1)
        writers = [tf.io.TFRecordWriter(str(out / schema.shard_filename(split, i, k))) for i in range(k)]
        counts[split] = [0, 0]
        for i in range(n):
            image, mask = disk_example(rng, size)
            if split == "train":
                all_train.append(image)
            counts[split][0] += int((mask == 0).sum())
            counts[split][1] += int((mask == 1).sum())
            writers[i % k].write(
                schema.encode_example(
                    image_bytes=cv2.imencode(".png", image)[1].tobytes(),
                    image_format="png",
                    height=size,
                    width=size,
                    channels=1,
                    mask_png=cv2.imencode(".png", mask)[1].tobytes(),
                    filename=f"{split}/{i}.png",
                    source_id=f"{split}-{i}",
                )
            )
        for w in writers:
            w.close()
    stack = np.stack(all_train).astype(np.float64) if all_train else np.zeros((1, 1))
    info = schema.DatasetInfo(
        class_names=["background", "disk"],
        splits=dict(splits),
        shards=dict(shards),
        class_pixel_counts=counts,
        intensity={"mean": [float(stack.mean())], "std": [float(stack.std())],
                   "min": [float(stack.min())], "max": [float(stack.max())], "dtype": "uint8"},
        channels=1,
        image_dtype="uint8",
    )
    schema.write_dataset_info(str(out), info)
    return out


def tiny_config(data_dir, run_dir, **sections) -> dict:
    """A config dict for a tiny U-Net on the disk dataset (sections override).

    It trains in float32 (``mixed_precision: false``) so that the numbers these tests compare do
    not depend on whether the CPU running them has native bfloat16 (``auto`` would pick it there);
    ``models/test_models_precision.py`` and ``training/test_training_fit.py`` test the precisions.
    """
    config = {
        "run_dir": str(run_dir),
        "seed": 1,
        "data": {"path": str(data_dir), "image_size": [32, 32], "normalization": {"method": "zscore"},
                 "shuffle_buffer": 0},
        "model": {"name": "unet", "options": {"base_filters": 4, "depth": 2}},
        "loss": {"name": "dice_ce"},
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "schedule": {"name": "constant"},
        "training": {"epochs": 2, "batch_size": 4, "verbose": 0, "strategy": "default", "mixed_precision": False},
        "callbacks": {"tensorboard": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_yaml(path, data) -> pathlib.Path:
    import yaml

    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_cli(args: list[str], *, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kerasseg", *args], cwd=REPO_ROOT, env=env or subprocess_env(),
        capture_output=True, text=True, timeout=timeout,
    )
