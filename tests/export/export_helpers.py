"""Plain helpers of the export tests (importable by name; conftest holds the fixtures)."""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ["background", "blob", "rim"]
NORMALIZATION = {"method": "zscore", "eps": 1e-6}


def make_blobs(count: int, size: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N,size,size,1)`` and int32 labels ``(N,size,size)`` in 3 classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((count, size, size, 1), np.uint8)
    labels = np.zeros((count, size, size), np.int32)
    for i in range(count):
        img = rng.normal(60, 12, (size, size)).astype(np.float32)
        for _ in range(2):
            cy, cx, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(5, size / 4)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            img[d < r] += 110
            labels[i][(d < r) & (d >= r - 2.5)] = 2
            labels[i][d < r - 2.5] = 1
        images[i, ..., 0] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels


def keras_reference(model, images: np.ndarray) -> np.ndarray:
    """Probabilities of the Keras model on normalized ``images`` (H, W multiples of 4)."""
    from kerasseg.data.preprocess import normalize

    return np.asarray(model(np.asarray(normalize(images, NORMALIZATION)), training=False))
