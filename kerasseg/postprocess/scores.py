"""NumPy scores for judging CRF settings: Dice, pixel and boundary accuracy.

Counts are pooled over all images of a split (so an image without some class
does not produce an undefined per-image Dice). Pixels whose truth equals
``ignore_index`` are left out everywhere.

*Boundary accuracy* is the pixel accuracy inside a band around the true class
boundaries (the "trimap" accuracy Krähenbühl & Koltun and DeepLab use to show
what a CRF does at edges): the band holds every pixel within ``band`` pixels
(Chebyshev distance) of a label change, i.e. ``band`` pixels on each side.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from kerasseg.evaluation import confusion_counts


def boundary_band(truth: np.ndarray, band: int) -> np.ndarray:
    """Boolean ``(H, W)``: pixels within ``band`` pixels of a change of label."""
    t = np.asarray(truth)
    edge = np.zeros(t.shape, bool)
    dy = t[1:, :] != t[:-1, :]
    dx = t[:, 1:] != t[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return _dilate(edge, max(0, int(band) - 1)) if band > 0 else np.zeros(t.shape, bool)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) dilation by ``radius`` pixels, separable, NumPy only."""
    out = mask
    for axis in (0, 1):
        acc = out.copy()
        n = out.shape[axis]
        for r in range(1, min(radius, n - 1) + 1):
            lead = [slice(None)] * 2
            trail = [slice(None)] * 2
            lead[axis], trail[axis] = slice(r, None), slice(None, -r)
            acc[tuple(lead)] |= out[tuple(trail)]
            acc[tuple(trail)] |= out[tuple(lead)]
        out = acc
    return out


class ScoreAccumulator:
    """Pools confusion counts over images; :meth:`result` gives the score dict."""

    def __init__(self, num_classes: int, *, ignore_index: int | None = 255, band: int = 3):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.band = int(band)
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.band_correct = 0
        self.band_total = 0

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        """Add one ``(H, W)`` predicted label map and its ``(H, W)`` truth."""
        pred = np.asarray(prediction).astype(np.int64)
        true = np.asarray(truth).astype(np.int64)
        if pred.shape != true.shape:
            raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
        valid = np.ones(true.shape, bool) if self.ignore_index is None else true != self.ignore_index
        k = self.num_classes
        if valid.any() and (true[valid].max() >= k or true[valid].min() < 0):
            raise ValueError(f"truth has class ids outside 0..{k - 1} (and ignore {self.ignore_index})")
        self.confusion += confusion_counts(true[valid], np.clip(pred[valid], 0, k - 1), k)
        inband = boundary_band(true, self.band) & valid
        self.band_total += int(inband.sum())
        self.band_correct += int((pred[inband] == true[inband]).sum())

    def result(self) -> dict[str, Any]:
        c = self.confusion
        tp = np.diag(c).astype(np.float64)
        denom = c.sum(axis=0) + c.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(denom > 0, 2 * tp / denom, np.nan)
        fg = dice[1:] if self.num_classes > 1 else dice
        total = c.sum()
        return {
            "dice": _nanmean(fg),  # mean over foreground classes 1..K-1
            "mean_dice": _nanmean(dice),  # mean over all classes, background included
            "dice_per_class": [None if math.isnan(d) else float(d) for d in dice],
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "boundary_accuracy": (self.band_correct / self.band_total) if self.band_total else float("nan"),
        }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def segmentation_scores(
    predictions: Iterable[np.ndarray],
    truths: Iterable[np.ndarray],
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    band: int = 3,
) -> dict[str, Any]:
    """Pooled scores of label maps against truths (see module doc)."""
    acc = ScoreAccumulator(num_classes, ignore_index=ignore_index, band=band)
    for p, t in zip(predictions, truths):
        acc.update(p, t)
    return acc.result()
