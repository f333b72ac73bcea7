"""labelme and mask-folder converters producing kerasseg TFRecords.

Public API (imported lazily, so ``import data_tools`` stays light)::

    from data_tools import convert_labelme, convert_mask_folder, convert_volumes, verify_dataset
    report = convert_labelme("annotations/", "records/", split="train=0.8,val=0.2", workers=4)
    report = convert_volumes("imagesTr/", "labelsTr/", "volumes/", labels="labels.txt", folds=5)

Command-line equivalents: ``labelme2tfrecord``, ``masks2tfrecord``, ``volumes2tfrecord`` and
``kerasseg data verify``. Every user-caused problem raises
:class:`data_tools.errors.AnnotationError` naming the file and the problem.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "convert_labelme": "data_tools.converter",
    "convert_mask_folder": "data_tools.converter",
    "convert_mask_list": "data_tools.converter",
    "convert_volumes": "data_tools.volumes",
    "verify_dataset": "data_tools.verify",
    "VerifyReport": "data_tools.verify",
    "ConversionReport": "data_tools.report",
    "AnnotationError": "data_tools.errors",
    "ConversionError": "data_tools.errors",
    "read_labelme_sample": "data_tools.labelme",
    "load_labelme_json": "data_tools.labelme",
    "read_labels_txt": "data_tools.labels",
    "read_mask": "data_tools.masks",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'data_tools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
