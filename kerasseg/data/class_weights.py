"""Per-class loss weights from the pixel counts in ``dataset.json``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def median_frequency_weights(pixel_counts: Sequence[int]) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus 2015): ``w_c = median(f) / f_c``.

    ``f_c`` is the fraction of labelled pixels of class ``c``; the median is
    taken over classes that occur. A class with no pixels gets weight 1.0 (it
    cannot influence training, and a finite weight keeps it visible in
    weighted validation metrics).

    Args:
        pixel_counts: pixels per class id ``0..K-1`` (ignore pixels excluded).

    Returns:
        ``K`` float weights; the median-frequency class gets 1.0.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0):
        raise ValueError(f"pixel_counts must be a non-empty list of non-negative counts, got {pixel_counts!r}")
    present = counts > 0
    if not present.any():
        raise ValueError("pixel_counts are all zero: no labelled pixels to balance")
    freq = counts / counts.sum()
    median = float(np.median(freq[present]))
    weights = np.ones_like(freq)
    weights[present] = median / freq[present]
    return [float(w) for w in weights]


def resolve_class_weights(
    class_weights: Any, info: Any = None, *, num_classes: int | None = None, split: str = "train"
) -> list[float] | None:
    """Turn the ``class_weights`` argument of ``load_dataset`` into a list (or ``None``).

    Args:
        class_weights: ``None`` (all 1.0), ``"median_frequency"`` (from
            ``info.class_pixel_counts[split]``, falling back to the sum over
            all splits when ``split`` has no counts) or an explicit list.
        info: the dataset's :class:`kerasseg.schema.DatasetInfo`.
        num_classes: expected length (defaults to ``info.num_classes``).
    """
    if class_weights is None:
        return None
    if num_classes is None and info is not None:
        num_classes = info.num_classes
    if isinstance(class_weights, str):
        if class_weights != "median_frequency":
            raise ValueError(f"class_weights must be None, 'median_frequency' or a list, got {class_weights!r}")
        counts_by_split = dict(getattr(info, "class_pixel_counts", None) or {})
        counts = counts_by_split.get(split)
        if counts is None and counts_by_split:
            counts = np.sum([np.asarray(c, dtype=np.int64) for c in counts_by_split.values()], axis=0)
        if counts is None:
            raise ValueError(
                "class_weights='median_frequency' needs class_pixel_counts in dataset.json; "
                "give explicit weights instead"
            )
        weights = median_frequency_weights(counts)
    else:
        weights = [float(w) for w in class_weights]
        if any(w < 0 for w in weights):
            raise ValueError(f"class weights must be non-negative, got {weights}")
    if num_classes is not None and len(weights) != num_classes:
        raise ValueError(f"got {len(weights)} class weights for {num_classes} classes")
    return weights


__all__ = ["median_frequency_weights", "resolve_class_weights"]
