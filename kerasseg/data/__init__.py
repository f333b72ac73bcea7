"""kerasseg.data: converted datasets -> ``tf.data`` pipelines.

Public entry points (imported lazily, so ``import kerasseg.data`` does not load
TensorFlow)::

    load_dataset(path, split, *, image_size, batch_size, ...)   # tf.data for model.fit
    iterate_examples(path, split)                                # full-resolution originals
    from_tfds(name, split, *, image_size, batch_size, ...)      # any TFDS segmentation set
    AugmentConfig                                                # augmentation config
    load_volume_dataset(path, split, *, patch_size, batch_size, ...)  # 3D patches for model.fit
    iterate_volumes(path, split)                                 # stored volumes (numpy)
    Augment3DConfig                                              # 3D augmentation config

Submodules: ``preprocess`` (intensity normalization), ``geometry`` (resize,
crops, pad/crop-back), ``augment``, ``classical`` (numpy/OpenCV preprocessing of
the source papers), ``class_weights``, ``visualize`` (``save_batch_grid``);
for volumes ``volumes`` (the 3D pipeline), ``augment3d`` and ``resample``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_dataset": "kerasseg.data.pipeline",
    "iterate_examples": "kerasseg.data.pipeline",
    "num_examples": "kerasseg.data.pipeline",
    "decode_example": "kerasseg.data.pipeline",
    "from_tfds": "kerasseg.data.tfds",
    "AugmentConfig": "kerasseg.data.augment",
    "load_volume_dataset": "kerasseg.data.volumes",
    "iterate_volumes": "kerasseg.data.volumes",
    "Augment3DConfig": "kerasseg.data.augment3d",
    "normalize": "kerasseg.data.preprocess",
    "resolve_normalization": "kerasseg.data.preprocess",
    "median_frequency_weights": "kerasseg.data.class_weights",
    "apply_preprocessing": "kerasseg.data.classical",
    "save_batch_grid": "kerasseg.data.visualize",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kerasseg.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
