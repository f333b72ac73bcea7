"""Full-resolution evaluation: overlap scores and surface distances per class.

``SegmentationEvaluator`` takes one ``(H, W)`` integer label map pair per image
(ground truth, prediction), or one ``(D, H, W)`` pair per volume (CT/MRI, axes
``(z, y, x)``), and accumulates

* a dataset-level confusion matrix, from which per-class IoU (Jaccard), Dice,
  sensitivity, specificity and precision, mean IoU, mean Dice and pixel
  (segmentation) accuracy are computed;
* per image (volume) and class: Dice, IoU, HD95 and ASSD (average symmetric
  surface distance), in pixels (voxels) or in the physical ``spacing`` given:
  ``(row, column)`` for images, ``(z, y, x)`` in mm for volumes.

One evaluator holds images or volumes, not both (the distances would mix units).

Pixels whose ground truth equals ``ignore_index`` (255) are left out of every
count; for surface distances both masks are restricted to non-ignored pixels.

Definitions
-----------
* Surface of a mask: its pixels with at least one 4-neighbour outside the mask
  (outside the image counts as outside); for a volume, its voxels with at least
  one of the 6 face neighbours outside the mask (outside the volume counts as
  outside).
* Directed distances ``d(A->B)``: for every surface pixel of ``A`` the exact
  Euclidean distance (with ``spacing``) to the nearest surface pixel of ``B``
  (images: OpenCV's exact distance transform for square pixels, an exact
  separable numpy method for anisotropic ``spacing``; volumes: SimpleITK's
  Maurer distance map with the voxel spacing, exact Euclidean, over the
  bounding box of both surfaces; its squared distances are float32, so the
  distances are exact for integer spacing and within about 1e-6 relative
  otherwise).
* HD95 = ``max(P95(d(P->G)), P95(d(G->P)))`` (linear-interpolated percentile;
  the MONAI convention). ASSD = mean of all distances in both directions.

Empty masks (defined, never NaN; see ``EMPTY_POLICY``)
------------------------------------------------------
For a class in one image:

* absent from both truth and prediction: Dice = IoU = 1, HD95 = ASSD = 0;
* present in only one of them: Dice = IoU = 0, HD95 = ASSD = the image
  diagonal (``sqrt((H*sy)^2 + (W*sx)^2)``; a volume's:
  ``sqrt((D*sz)^2 + (H*sy)^2 + (W*sx)^2)``), the largest distance possible in
  the image, so averages stay finite and such an image is clearly penalized.

Dataset-level ratios follow the same rule: a ratio whose denominator is 0 is
1.0 when the class is absent from both truth and prediction everywhere, else
0.0. The per-class ``hd95``, ``assd`` and ``dice_per_image`` averages run over
the images where the class is in the truth or the prediction; images where it
is in neither are *not* averaged in, and are counted in ``images_both_empty``
(with ``images_missed`` and ``images_false_positive`` for the one-sided cases),
so nothing is dropped silently. Mean IoU / mean Dice are plain means of the
per-class values shown.

Nothing evaluated. An image whose ground truth is all ``ignore_index`` has no
evaluated pixel: every class is absent from both truth and prediction there,
so its per-image Dice/IoU are 1 and HD95/ASSD 0, and it is averaged into
nothing (it adds to ``images_both_empty`` of every class). When no pixel of
the whole dataset is evaluated, every class is absent everywhere, so the
dataset-level ratios are 1 by the rule above, exactly what the per-image
records and ``dice_per_image`` say (the same values the streaming Keras
metrics give). Pixel accuracy has no class and counts correct pixels: 0/0 is
0.0 there (as in the streaming metric). ``counts.pixels`` is then 0 and
``format_table`` says that nothing was evaluated, so such a report is not
mistaken for a perfect score.

Threshold-free scores. When ``update`` is given the ``probabilities`` as
well, the evaluator also keeps a :class:`kerasseg.curves_auc.ProbabilityCurves`
(one-vs-rest histograms of 16384 bins, ``ignore_index`` pixels left out) and
the report adds per class ``auc_roc``, ``auc_pr`` (average precision),
``best_f1`` and ``best_threshold``, and ``mean_auc_roc`` / ``mean_auc_pr``
over the foreground classes (:func:`kerasseg.classes.foreground_indices`).
These keys are absent when no probabilities were given, and ``None`` (JSON
``null``) for a class with no positive or no negative pixel.

Shapes. ``hd95``, ``assd``, ``surface_distances`` and ``binary_scores`` take
two masks of one shape, both 2-D ``(H, W)`` or both 3-D ``(D, H, W)``; anything
else is an :class:`EvaluationError` (never a broadcast, never the diagonal of
one of them). A spacing of the wrong length for the masks is an error too.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
from typing import Any, Sequence, cast

import numpy as np

from kerasseg.classes import foreground_indices
from kerasseg.curves_auc import ProbabilityCurves
from kerasseg.errors import EvaluationError
from kerasseg.schema import IGNORE_INDEX

__all__ = [
    "EMPTY_POLICY",
    "EvaluationError",
    "SegmentationEvaluator",
    "surface",
    "surface_distances",
    "hd95",
    "assd",
    "binary_scores",
    "confusion_counts",
]

EMPTY_POLICY = (
    "class absent from truth and prediction: Dice=IoU=1, HD95=ASSD=0 (image not averaged into "
    "per-class HD95/ASSD/per-image Dice, counted in images_both_empty); present in only one: "
    "Dice=IoU=0, HD95=ASSD=image diagonal; dataset-level 0/0 ratios: 1 if the class is absent "
    "everywhere (also when no pixel was evaluated), else 0; pixel accuracy of no pixel: 0"
)

_CHUNK_ELEMENTS = 1 << 22


def confusion_counts(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``(K, K)`` counts: row = true class, column = predicted class.

    ``truth`` and ``prediction`` are integer class ids of the pixels to count
    (ignored pixels already left out), any equal shapes, values in ``0..K-1``.
    The one counter behind :class:`SegmentationEvaluator` and the CRF scores
    (:mod:`kerasseg.postprocess.scores`).
    """
    k = int(num_classes)
    flat = np.asarray(truth, np.int64).ravel() * k + np.asarray(prediction, np.int64).ravel()
    return np.bincount(flat, minlength=k * k).reshape(k, k)


# --------------------------------------------------------------------------- geometry


def _spacing_pair(spacing: float | Sequence[float] | None) -> tuple[float, float]:
    if spacing is None:
        return (1.0, 1.0)
    values: tuple[float, ...]
    if isinstance(spacing, (int, float)):
        values = (float(spacing), float(spacing))
    else:
        values = tuple(float(s) for s in spacing)
        if len(values) != 2:
            raise EvaluationError(f"spacing must be one number or (row, column), got {spacing!r}")
    if not all(v > 0 and math.isfinite(v) for v in values):
        raise EvaluationError(f"spacing must be positive, got {spacing!r}")
    return values


def _spacing_triple(spacing: float | Sequence[float] | None) -> tuple[float, float, float]:
    """A volume's voxel size ``(z, y, x)``: ``None`` -> ones, one number -> that number on every axis."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    values: tuple[float, ...]
    if np.ndim(spacing) == 0:  # a number (np.ndim does not narrow the union)
        values = (float(cast(float, spacing)),) * 3
    else:
        values = tuple(float(s) for s in cast(Sequence[float], spacing))
        if len(values) != 3:
            raise EvaluationError(f"spacing of a volume must be one number or (z, y, x) in mm, got {spacing!r}")
    if not all(v > 0 and math.isfinite(v) for v in values):
        raise EvaluationError(f"spacing must be positive, got {spacing!r}")
    return values


def _spacing_for(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """``spacing`` checked for masks of ``ndim`` (2 or 3) dimensions."""
    return _spacing_triple(spacing) if ndim == 3 else _spacing_pair(spacing)


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary of a boolean mask, image edge = outside.

    ``(H, W)``: pixels with a 4-neighbour outside the mask. ``(D, H, W)``:
    voxels with one of their 6 face neighbours outside the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 3:
        return _surface_3d(mask)
    if mask.ndim != 2:
        raise EvaluationError(f"a mask must be 2-D (H, W) or 3-D (D, H, W), got shape {mask.shape}")
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return mask & ~interior


def _surface_3d(mask: np.ndarray) -> np.ndarray:
    """Voxels of a boolean ``(D, H, W)`` mask with a face neighbour outside it (no padded copy made)."""
    interior = mask.copy()
    for axis in range(3):
        after = [slice(None)] * 3
        before = [slice(None)] * 3
        after[axis] = slice(1, None)
        before[axis] = slice(None, -1)
        interior[tuple(after)] &= mask[tuple(before)]  # the neighbour at index - 1 along this axis
        interior[tuple(before)] &= mask[tuple(after)]  # the neighbour at index + 1
        edge: list[slice | int] = [slice(None)] * 3
        for end in (0, -1):
            edge[axis] = end
            interior[tuple(edge)] = False  # its neighbour there lies outside the volume
    return mask & ~interior


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every ``True`` of a non-empty mask."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        where = np.flatnonzero(mask.any(axis=others))
        box.append(slice(int(where[0]), int(where[-1]) + 1))
    return tuple(box)


def _distance_map_3d(target: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Euclidean distance (units of ``spacing``) of every voxel of ``(D, H, W)`` to the nearest ``True``.

    SimpleITK's signed Maurer map (exact Euclidean, anisotropic spacing) is
    negative inside the target and 0 on its contour; outside, the nearest
    target voxel always lies on the contour, so clipping at 0 gives the
    distance to the nearest target voxel everywhere (0 on the target).
    ITK gives squared distances in float32 (exact integers for integer
    spacing); the root is taken in float64.
    """
    import SimpleITK as sitk

    if target.all():
        return np.zeros(target.shape)  # ITK's map has no contour to measure from without a background voxel
    image = sitk.GetImageFromArray(target.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # ITK's (x, y, z)
    signed = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=True, useImageSpacing=True, backgroundValue=0.0
    )
    # squared distances are integers for unit spacing (exact in float32), so the root is exact there
    return np.sqrt(np.maximum(sitk.GetArrayFromImage(signed).astype(np.float64), 0.0))


def _surface_distances_3d(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances of two non-empty ``(D, H, W)`` masks, in units of ``spacing``.

    The surfaces are taken on the whole volume (its edge is outside), the
    distance maps on the bounding box of both surfaces only: every query and
    every target voxel lies inside it, so the distances are the same.
    """
    pred_surface = surface(pred)
    truth_surface = surface(truth)
    box = _bounding_box(pred_surface | truth_surface)
    pred_surface, truth_surface = pred_surface[box], truth_surface[box]
    return (
        _distance_map_3d(truth_surface, spacing)[pred_surface],
        _distance_map_3d(pred_surface, spacing)[truth_surface],
    )


def _gap_along_rows(target: np.ndarray) -> np.ndarray:
    """Per pixel, the number of rows to the nearest ``True`` in its column (``inf`` if none)."""
    rows = np.arange(target.shape[0], dtype=np.float64)[:, None]
    above = np.maximum.accumulate(np.where(target, rows, -np.inf), axis=0)  # nearest at or above
    below = np.minimum.accumulate(np.where(target, rows, np.inf)[::-1], axis=0)[::-1]  # at or below
    return np.minimum(rows - above, below - rows)


def _nearest_distances(
    query_rows: np.ndarray,
    query_cols: np.ndarray,
    target: np.ndarray,
    spacing: tuple[float, float],
) -> np.ndarray:
    """Exact Euclidean distance from each query pixel to the nearest ``True`` of ``target``.

    Separable exact method: ``g[r, c']``, the row distance from row ``r`` to the
    nearest target pixel in column ``c'`` (two cumulative scans), then for each
    query ``min over c' of (sx*(c-c'))^2 + (sy*g[r,c'])^2``. The nearest target
    in the query's own row or column bounds the answer, so only columns within
    that bound are scanned (window sizes bucketed to powers of two, chunked);
    queries with no target in their row or column scan every target column.
    Exact for any (anisotropic) spacing.
    """
    sy, sx = spacing
    out = np.full(query_rows.shape, np.inf)
    if query_rows.size == 0 or not target.any():
        return out
    gap = _gap_along_rows(target)  # (H, W)
    side = _gap_along_rows(target.T).T  # columns to the nearest target in the same row
    bound = np.minimum(sy * gap[query_rows, query_cols], sx * side[query_rows, query_cols])
    gap_sq = (sy * gap) ** 2

    # Windowed scan for queries with a finite bound.
    finite = np.isfinite(bound)
    half = np.zeros(query_rows.shape, dtype=np.int64)
    half[finite] = np.floor(bound[finite] / sx + 1e-9).astype(np.int64)
    bucket = np.where(half > 0, 2 ** np.ceil(np.log2(np.maximum(half, 1))).astype(np.int64), 0)
    bucket = np.minimum(bucket, target.shape[1])
    pad = int(bucket[finite].max()) if finite.any() else 0
    padded = np.pad(gap_sq, ((0, 0), (pad, pad)), constant_values=np.inf)
    for width in np.unique(bucket[finite]):
        chosen = np.flatnonzero(finite & (bucket == width))
        offsets = np.arange(-width, width + 1)
        along = (sx * offsets.astype(np.float64)) ** 2
        step = max(1, _CHUNK_ELEMENTS // offsets.size)
        for begin in range(0, chosen.size, step):
            idx = chosen[begin : begin + step]
            cols = query_cols[idx][:, None] + offsets[None, :] + pad
            d2 = padded[query_rows[idx][:, None], cols] + along[None, :]
            out[idx] = np.sqrt(d2.min(axis=1))

    # Full scan over the target's columns for the rest.
    rest = np.flatnonzero(~finite)
    if rest.size:
        columns = np.flatnonzero(target.any(axis=0))
        col_pos = columns.astype(np.float64) * sx
        sub = gap_sq[:, columns]
        step = max(1, _CHUNK_ELEMENTS // columns.size)
        for begin in range(0, rest.size, step):
            idx = rest[begin : begin + step]
            c = query_cols[idx].astype(np.float64) * sx
            d2 = sub[query_rows[idx]] + (c[:, None] - col_pos[None, :]) ** 2
            out[idx] = np.sqrt(d2.min(axis=1))
    return out


def surface_distances(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: float | Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(d(pred->truth), d(truth->pred))`` of two boolean masks.

    Both masks must be non-empty, both ``(H, W)`` or both ``(D, H, W)``.
    Distances are in units of ``spacing``: ``(row, column)`` for images,
    ``(z, y, x)`` (mm) for volumes, or one number; pixels (voxels) when
    ``None``. Each array holds one distance per surface pixel (voxel) of the
    first mask, in C order.
    """
    pred, truth = _mask_pair(pred, truth)
    if not pred.any() or not truth.any():
        raise EvaluationError("surface distances need two non-empty masks")
    if pred.ndim == 3:
        return _surface_distances_3d(pred, truth, _spacing_triple(spacing))
    sp = _spacing_pair(spacing)
    pred_surface = surface(pred)
    truth_surface = surface(truth)
    if sp[0] == sp[1]:
        # Isotropic: OpenCV's exact Euclidean transform (Felzenszwalb's algorithm) is fastest.
        return (
            _distance_transform(truth_surface)[pred_surface] * sp[0],
            _distance_transform(pred_surface)[truth_surface] * sp[0],
        )
    pr, pc = np.nonzero(pred_surface)
    tr, tc = np.nonzero(truth_surface)
    return (
        _nearest_distances(pr, pc, truth_surface, sp),
        _nearest_distances(tr, tc, pred_surface, sp),
    )


def _distance_transform(target: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (pixels) of every pixel to the nearest ``True`` of ``target``."""
    import cv2

    source = np.where(target, 0, 1).astype(np.uint8)
    return cv2.distanceTransform(source, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)


def _mask_pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays, refusing anything but two 2-D or two 3-D masks of one shape."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim not in (2, 3):
        raise EvaluationError(
            "masks must be 2-D (H, W) or 3-D (D, H, W) and of one shape, got prediction "
            f"{pred.shape} and truth {truth.shape}"
        )
    return pred, truth


def _diagonal(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return float(math.hypot(*(n * s for n, s in zip(shape, spacing))))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance of two boolean masks (empty cases per ``EMPTY_POLICY``).

    ``(H, W)`` masks with ``spacing`` ``(row, column)``, or ``(D, H, W)`` masks
    with ``(z, y, x)`` (mm); one number or ``None`` (1) fits both.
    """
    return _distance_pair(pred, truth, spacing)[0]


def assd(pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float] | None = None) -> float:
    """Average symmetric surface distance of two boolean masks (empty cases per ``EMPTY_POLICY``).

    Masks and ``spacing`` as for :func:`hd95`.
    """
    return _distance_pair(pred, truth, spacing)[1]


def _distance_pair(pred: np.ndarray, truth: np.ndarray, spacing: Any) -> tuple[float, float]:
    pred, truth = _mask_pair(pred, truth)
    sp = _spacing_for(spacing, pred.ndim)
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0, 0.0
    if has_pred != has_truth:
        diagonal = _diagonal(pred.shape, sp)
        return diagonal, diagonal
    d_pt, d_tp = surface_distances(pred, truth, sp)
    h95 = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))
    mean = float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))
    return h95, mean


def binary_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice and IoU of two boolean masks of one shape (both empty: 1.0; one empty: 0.0)."""
    pred, truth = _mask_pair(pred, truth)
    tp = float(np.count_nonzero(pred & truth))
    total = float(np.count_nonzero(pred) + np.count_nonzero(truth))
    if total == 0:
        return {"dice": 1.0, "iou": 1.0}
    union = total - tp
    return {"dice": 2.0 * tp / total, "iou": tp / union}


# --------------------------------------------------------------------------- evaluator


def _ratio(num: float, den: float, absent: bool) -> float:
    if den > 0:
        return float(num / den)
    return 1.0 if absent else 0.0


class SegmentationEvaluator:
    """Accumulate full-resolution segmentation metrics over images or volumes.

    Args:
        num_classes: number of label classes (1 = binary sigmoid model, read as 2).
        class_names: one unique name per class (``max(num_classes, 2)``);
            default ``class0, class1, ...``.
        spacing: pixel size, one number or ``(row, column)``; or, for volumes,
            the voxel size ``(z, y, x)`` in mm. Distances are reported in its
            unit (pixels / voxels when ``None``). ``update`` may give each
            image or volume its own.
        ignore_index: ground-truth value left out of every count.
        surface_metrics: compute HD95/ASSD (the costly part); when ``False``
            they are reported as ``None``.

    One evaluator takes images or volumes, not both: the first ``update``
    decides (``reset`` forgets it).

    Example::

        ev = SegmentationEvaluator(2, ["background", "lesion"], spacing=(0.5, 0.5))
        for truth, pred in pairs:
            ev.update(truth, pred)
        print(ev.format_table())
        ev.write_json("report.json"); ev.write_csv("report.csv")

        vol = SegmentationEvaluator(3, ["background", "anterior", "posterior"])
        vol.update(truth_dhw, pred_dhw, name="case_001", spacing=(3.0, 0.8, 0.8))  # (z, y, x) mm
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        spacing: float | Sequence[float] | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        *,
        surface_metrics: bool = True,
    ) -> None:
        if int(num_classes) < 1:
            raise EvaluationError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.n = max(self.num_classes, 2)
        if class_names is None:
            class_names = [f"class{i}" for i in range(self.n)]
        class_names = [str(c) for c in class_names]
        if len(class_names) != self.n:
            raise EvaluationError(
                f"{len(class_names)} class names given for {self.n} classes "
                f"(num_classes={num_classes}): {class_names}"
            )
        if len(set(class_names)) != len(class_names):
            raise EvaluationError(f"class names must be unique, got {class_names}")
        self.class_names = class_names
        # one number: the same size on every axis, for images and volumes alike
        self._uniform_spacing: float | None = None
        if spacing is not None and np.ndim(spacing) == 0:
            self.spacing: tuple[float, ...] | None = _spacing_pair(spacing)
            self._uniform_spacing = self.spacing[0]
        elif spacing is not None and len(cast(Sequence[float], spacing)) == 3:
            self.spacing = _spacing_triple(spacing)
        else:
            self.spacing = None if spacing is None else _spacing_pair(spacing)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.surface_metrics = bool(surface_metrics)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self.confusion = np.zeros((self.n, self.n), dtype=np.int64)
        self.ignored_pixels = 0
        self.per_image: list[dict[str, Any]] = []
        self.curves: ProbabilityCurves | None = None
        self.images_with_probabilities = 0
        self.spatial_dims: int | None = None  # 2 (images) or 3 (volumes), set by the first update
        self._spacing_given = False  # some update was given its own spacing

    @property
    def _volumes(self) -> bool:
        return self.spatial_dims == 3 or (self.spatial_dims is None and self.spacing is not None
                                          and len(self.spacing) == 3)

    # ------------------------------------------------------------------ input

    def _as_labels(self, array: Any, what: str, name: str | None, dims: int = 2) -> np.ndarray:
        array = np.asarray(array)
        where = f" ({name})" if name else ""
        if dims == 3:
            if array.ndim == 4 and array.shape[-1] == 1 and what == "y_true":
                array = array[..., 0]
            if what == "y_pred" and array.ndim == 4 and np.issubdtype(array.dtype, np.floating):
                # class probabilities (D, H, W, K): argmax, or threshold 0.5 for K=1
                array = (array[..., 0] >= 0.5).astype(np.int64) if array.shape[-1] == 1 else array.argmax(-1)
            if array.ndim != 3:
                raise EvaluationError(f"{what}{where} must be a (D, H, W) label map, got shape {array.shape}")
        else:
            if array.ndim == 3 and array.shape[-1] == 1 and what == "y_true":
                array = array[..., 0]
            if what == "y_pred" and array.ndim == 3 and np.issubdtype(array.dtype, np.floating):
                # class probabilities (H, W, K): argmax, or threshold 0.5 for K=1
                array = (array[..., 0] >= 0.5).astype(np.int64) if array.shape[-1] == 1 else array.argmax(-1)
            if array.ndim != 2:
                raise EvaluationError(f"{what}{where} must be an (H, W) label map, got shape {array.shape}")
        if np.issubdtype(array.dtype, np.floating):
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
                raise EvaluationError(f"{what}{where} must hold integer class ids, got non-integer values")
        elif not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
            raise EvaluationError(f"{what}{where} must be an integer label map, got dtype {array.dtype}")
        return array.astype(np.int64)

    def _spatial_dims_of(self, y_true: Any, y_pred: Any, spacing: Any, where: str) -> int:
        """2 (an image) or 3 (a volume) for this update, refusing a spacing or a kind that does not fit.

        The shapes decide when they can: ``(H, W)`` truth is an image;
        ``(D, H, W, 1)`` truth, or ``(D, H, W)`` truth with ``W > 1`` and a
        prediction of 3 or more dimensions, is a volume. ``(H, W, 1)`` truth
        is an image unless a 3-entry spacing (this update's, else the
        evaluator's) or the volumes seen before say it is a ``(D, H, 1)`` volume.
        """
        shape = np.shape(y_true)
        if len(shape) == 2:
            by_shape: int | None = 2
        elif len(shape) == 4 or (len(shape) == 3 and shape[-1] != 1 and np.ndim(y_pred) >= 3):
            by_shape = 3
        elif len(shape) == 3 and shape[-1] == 1:
            by_shape = None  # (H, W, 1) image or (D, H, 1) volume
        elif len(shape) == 3:
            by_shape = 2  # (H, W, C) truth beside an (H, W) prediction: the 2-D checks say what is wrong
        else:
            by_shape = 0  # neither kind: the label-map checks below name the shape
        whose = "spacing"
        explicit = spacing
        if spacing is None and self.spacing is not None and self._uniform_spacing is None:
            whose, explicit = "the evaluator's spacing", self.spacing
        by_spacing = None if explicit is None or np.ndim(explicit) == 0 else len(explicit)
        if by_spacing not in (None, 2, 3):
            raise EvaluationError(
                f"spacing{where} must be one number, (row, column) for an image or (z, y, x) for a volume, "
                f"got {explicit!r}"
            )
        if by_shape == 0:
            return self.spatial_dims or by_spacing or 2
        if by_spacing == 2 and by_shape == 3:
            raise EvaluationError(
                f"y_true{where} has shape {shape}, a (D, H, W) volume, but {whose} {tuple(explicit)} has 2 "
                "entries (row, column): give the voxel size (z, y, x) in mm"
            )
        if by_spacing == 3 and by_shape == 2:
            raise EvaluationError(
                f"y_true{where} has shape {shape}, an (H, W) image, but {whose} {tuple(explicit)} has 3 "
                "entries (z, y, x): give (row, column) for an image"
            )
        dims = by_shape or by_spacing or self.spatial_dims or 2
        if self.spatial_dims is not None and dims != self.spatial_dims:
            seen, given = ("images", "a volume") if self.spatial_dims == 2 else ("volumes", "an image")
            raise EvaluationError(
                f"y_true{where} of shape {shape} is {given} but this evaluator holds {seen}: use one "
                "SegmentationEvaluator for images and another for volumes"
            )
        return dims

    def update(
        self,
        y_true: Any,
        y_pred: Any,
        name: str | None = None,
        *,
        spacing: float | Sequence[float] | None = None,
        probabilities: Any = None,
        filename: str | None = None,
    ) -> dict[str, Any]:
        """Add one image, or one volume.

        Args:
            y_true: ``(H, W)`` (or ``(H, W, 1)``) integer ground truth;
                ``ignore_index`` pixels are left out. A volume: ``(D, H, W)``
                (or ``(D, H, W, 1)``).
            y_pred: ``(H, W)`` integer prediction, or ``(H, W, K)`` float
                probabilities (argmax; ``K == 1``: ``p >= 0.5``); a volume:
                ``(D, H, W)`` labels or ``(D, H, W, K)`` probabilities.
            name: an identifier kept in the per-image records (e.g. the file).
            spacing: this image's pixel size ``(row, column)``, or this
                volume's voxel size ``(z, y, x)`` in mm, overriding the
                evaluator's ``spacing`` (scans often differ); same unit for
                every image.
            probabilities: optional ``(H, W, K)`` (volume: ``(D, H, W, K)``)
                float class probabilities of this image (``K`` classes, or
                ``K == 1`` for a sigmoid model), accumulated for AUC-ROC /
                AUC-PR / best F1 (see the module docstring); usually the array
                ``y_pred`` was taken from.
            filename: the image's file name, kept in the per-image record.

        Returns:
            This image's record: ``{"index", "name", "filename", "dice": {class:
            v}, "iou", "hd95", "assd", "pixel_accuracy"}`` (for a volume,
            ``"pixels"`` counts voxels and ``"spacing"`` is ``[z, y, x]``).

        Raises:
            EvaluationError: naming the image or volume: shapes that differ,
                labels out of range, a spacing of the wrong length (2 entries
                for a volume, 3 for an image), an image added to an evaluator
                of volumes or the reverse. Nothing is added then.
        """
        where = f" ({name})" if name else ""
        dims = self._spatial_dims_of(y_true, y_pred, spacing, where)
        truth = self._as_labels(y_true, "y_true", name, dims)
        pred = self._as_labels(y_pred, "y_pred", name, dims)
        if truth.shape != pred.shape:
            raise EvaluationError(f"y_true{where} has shape {truth.shape} but y_pred has shape {pred.shape}")
        valid = np.ones(truth.shape, dtype=bool)
        if self.ignore_index is not None:
            valid &= truth != self.ignore_index
        bad_truth = np.unique(truth[valid & ((truth < 0) | (truth >= self.n))])
        if bad_truth.size:
            raise EvaluationError(
                f"y_true{where} holds labels {bad_truth[:10].tolist()} outside 0..{self.n - 1}"
                + (f" (ignore index {self.ignore_index})" if self.ignore_index is not None else "")
            )
        bad_pred = np.unique(pred[(pred < 0) | (pred >= self.n)])
        if bad_pred.size:
            raise EvaluationError(f"y_pred{where} holds labels {bad_pred[:10].tolist()} outside 0..{self.n - 1}")
        given_spacing = spacing is not None
        if given_spacing:
            spacing = _spacing_for(spacing, dims)
        elif self.spacing is not None and len(self.spacing) == dims:
            spacing = self.spacing
        elif self._uniform_spacing is not None:
            spacing = (self._uniform_spacing,) * dims
        else:
            spacing = (1.0,) * dims
        if probabilities is not None:
            curve_truth, curve_probs = truth, probabilities
            if dims == 3:
                curve_truth, curve_probs = self._volume_probabilities(truth, probabilities, where)
            if self.curves is None:
                self.curves = ProbabilityCurves(self.num_classes, self.class_names, ignore_index=self.ignore_index)
            try:
                self.curves.update(curve_truth, curve_probs)  # validates before adding anything
            except ValueError as e:
                raise EvaluationError(f"probabilities{where}: {e}") from None
            self.images_with_probabilities += 1

        t = truth[valid]
        p = pred[valid]
        cm = confusion_counts(t, p, self.n)
        self.confusion += cm
        self.ignored_pixels += int(valid.size - np.count_nonzero(valid))

        record: dict[str, Any] = {
            "index": len(self.per_image),
            "name": name,
            "filename": filename,
            "pixels": int(t.size),
            "spacing": list(spacing),
            "pixel_accuracy": float(np.trace(cm) / t.size) if t.size else 0.0,
            "dice": {},
            "iou": {},
            "hd95": {},
            "assd": {},
            "truth_pixels": {},
            "pred_pixels": {},
        }
        for c, cname in enumerate(self.class_names):
            truth_c = (truth == c) & valid
            pred_c = (pred == c) & valid
            scores = binary_scores(pred_c, truth_c)
            record["dice"][cname] = scores["dice"]
            record["iou"][cname] = scores["iou"]
            record["truth_pixels"][cname] = int(np.count_nonzero(truth_c))
            record["pred_pixels"][cname] = int(np.count_nonzero(pred_c))
            if self.surface_metrics:
                h, a = _distance_pair(pred_c, truth_c, spacing)
                record["hd95"][cname] = h
                record["assd"][cname] = a
            else:
                record["hd95"][cname] = None
                record["assd"][cname] = None
        self.per_image.append(record)
        self.spatial_dims = dims
        self._spacing_given = self._spacing_given or given_spacing
        return record

    def _volume_probabilities(self, truth: np.ndarray, probabilities: Any, where: str) -> tuple[np.ndarray, Any]:
        """A volume's truth and ``(D, H, W, K)`` probabilities as one tall image (the histograms are per voxel)."""
        probs = np.asarray(probabilities)
        if probs.ndim != 4 or probs.shape[:3] != truth.shape:
            raise EvaluationError(
                f"probabilities{where} must be (D, H, W, K) with (D, H, W) = truth's {truth.shape}, "
                f"got shape {probs.shape}"
            )
        k = probs.shape[-1]
        if k != self.n and not (k == 1 and self.n == 2):
            raise EvaluationError(
                f"probabilities{where} of shape {probs.shape} have {k} channel(s) for {self.n} classes "
                f"(expected {self.n}" + (", or 1 for a sigmoid output)" if self.n == 2 else ")")
            )
        d, h, w = truth.shape
        return truth.reshape(d * h, w), probs.reshape(d * h, w, k)

    # ------------------------------------------------------------------ output

    def result(self) -> dict[str, Any]:
        """The report: per-class scores, means, counts and per-image records.

        Keys: ``per_class`` (``{name: {iou, dice, sensitivity, specificity,
        precision, hd95, assd, dice_per_image, images_averaged, truth_pixels,
        pred_pixels, images_with_truth, images_both_empty, images_missed,
        images_false_positive}}``), ``mean_iou``, ``mean_dice``,
        ``mean_hd95``, ``mean_assd``, ``pixel_accuracy``, ``confusion_matrix``,
        ``counts`` (``images``, ``pixels``, ``ignored_pixels``), ``per_image``,
        ``class_names``, ``spacing``, ``distance_unit``, ``empty_policy``.
        The same keys for volumes: ``images`` then counts volumes, ``pixels``
        voxels, and ``distance_unit`` is ``"mm"`` (a spacing was given) or
        ``"voxels"``.

        Only when probabilities were given to ``update``: per class also
        ``auc_roc``, ``auc_pr``, ``best_f1``, ``best_threshold`` (``None`` for
        a class without positive or negative pixels), ``mean_auc_roc`` and
        ``mean_auc_pr`` (over the foreground classes, ``None`` values left
        out; ``None`` when nothing is left), and
        ``counts.images_with_probabilities``.
        """
        cm = self.confusion.astype(np.float64)
        total = float(cm.sum())
        per_class: dict[str, dict[str, Any]] = {}
        for c, cname in enumerate(self.class_names):
            tp = cm[c, c]
            fn = cm[c, :].sum() - tp
            fp = cm[:, c].sum() - tp
            tn = total - tp - fn - fp
            absent = (tp + fn + fp) == 0  # also when nothing was evaluated at all
            entry: dict[str, Any] = {
                "iou": _ratio(tp, tp + fp + fn, absent),
                "dice": _ratio(2 * tp, 2 * tp + fp + fn, absent),
                "sensitivity": _ratio(tp, tp + fn, absent),
                "specificity": _ratio(tn, tn + fp, absent),
                "precision": _ratio(tp, tp + fp, absent),
            }
            averaged = [r for r in self.per_image if r["truth_pixels"][cname] or r["pred_pixels"][cname]]
            if self.surface_metrics:
                entry["hd95"] = float(np.mean([r["hd95"][cname] for r in averaged])) if averaged else 0.0
                entry["assd"] = float(np.mean([r["assd"][cname] for r in averaged])) if averaged else 0.0
            else:
                entry["hd95"] = entry["assd"] = None
            entry["dice_per_image"] = float(np.mean([r["dice"][cname] for r in averaged])) if averaged else 1.0
            entry["images_averaged"] = len(averaged)
            entry["truth_pixels"] = int(self.confusion[c, :].sum())
            entry["pred_pixels"] = int(self.confusion[:, c].sum())
            entry["images_with_truth"] = sum(1 for r in self.per_image if r["truth_pixels"][cname])
            entry["images_both_empty"] = len(self.per_image) - len(averaged)
            entry["images_missed"] = sum(
                1 for r in self.per_image if r["truth_pixels"][cname] and not r["pred_pixels"][cname]
            )
            entry["images_false_positive"] = sum(
                1 for r in self.per_image if r["pred_pixels"][cname] and not r["truth_pixels"][cname]
            )
            per_class[cname] = entry
        curves = self.curves.result() if self.curves is not None else None
        if curves is not None:
            for cname in self.class_names:
                for key in ("auc_roc", "auc_pr", "best_f1", "best_threshold"):
                    per_class[cname][key] = curves[cname][key]

        def mean_of(key: str) -> float | None:
            values = [e[key] for e in per_class.values()]
            if any(v is None for v in values):
                return None
            return float(np.mean(values))

        auc_means: dict[str, float | None] = {}
        if curves is not None:
            foreground = [self.class_names[i] for i in foreground_indices(self.class_names)]
            for key in ("auc_roc", "auc_pr"):
                values = [per_class[c][key] for c in foreground if per_class[c][key] is not None]
                auc_means[f"mean_{key}"] = float(np.mean(values)) if values else None

        report: dict[str, Any] = {
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "per_class": per_class,
            "mean_iou": mean_of("iou"),
            "mean_dice": mean_of("dice"),
            "mean_sensitivity": mean_of("sensitivity"),
            "mean_specificity": mean_of("specificity"),
            "mean_precision": mean_of("precision"),
            "mean_hd95": mean_of("hd95"),
            "mean_assd": mean_of("assd"),
            **auc_means,
            "pixel_accuracy": float(np.trace(cm) / total) if total else 0.0,
            "confusion_matrix": self.confusion.tolist(),
            "counts": {
                "images": len(self.per_image),
                "pixels": int(total),
                "ignored_pixels": int(self.ignored_pixels),
            },
            "spacing": self._reported_spacing(),
            "distance_unit": self._distance_unit(),
            "ignore_index": self.ignore_index,
            "empty_policy": EMPTY_POLICY,
            "per_image": copy.deepcopy(self.per_image),
        }
        if curves is not None:
            report["counts"]["images_with_probabilities"] = self.images_with_probabilities
        return report

    def _reported_spacing(self) -> list[float] | None:
        if self.spacing is None:
            return None
        if self._volumes and self._uniform_spacing is not None:
            return [self._uniform_spacing] * 3
        return list(self.spacing)

    def _distance_unit(self) -> str:
        if self._volumes:
            return "mm" if self.spacing is not None or self._spacing_given else "voxels"
        return "pixels" if self.spacing is None else "spacing units"

    def format_table(self) -> str:
        """Human-readable summary, starting with ``Intersection over Union for each class:``."""
        report = self.result()
        if self._volumes:
            unit = "mm" if report["distance_unit"] == "mm" else "vox"
            image, pixel = "volume", "voxel"
        else:
            unit = "px" if self.spacing is None else "units"
            image, pixel = "image", "pixel"
        lines = ["Intersection over Union for each class:"]
        for c, cname in enumerate(self.class_names):
            e = report["per_class"][cname]
            text = (
                f"class {c} ({cname}): IoU {e['iou']:.4f}  Dice {e['dice']:.4f}  "
                f"Sensitivity {e['sensitivity']:.4f}  Specificity {e['specificity']:.4f}  "
                f"Precision {e['precision']:.4f}"
            )
            if e["hd95"] is not None:
                text += f"  HD95 {e['hd95']:.2f} {unit}  ASSD {e['assd']:.2f} {unit}"
            if "auc_roc" in e:
                text += f"  AUC-ROC {_score_text(e['auc_roc'])}  AUC-PR {_score_text(e['auc_pr'])}"
                if e["best_f1"] is not None:
                    text += f"  best F1 {e['best_f1']:.4f} @ {e['best_threshold']:.4f}"
            lines.append(text)
        lines.append(f"mean IoU: {report['mean_iou']:.4f}")
        lines.append(f"mean Dice: {report['mean_dice']:.4f}")
        if "mean_auc_roc" in report:
            lines.append(
                f"mean AUC-ROC: {_score_text(report['mean_auc_roc'])}  "
                f"mean AUC-PR: {_score_text(report['mean_auc_pr'])} (foreground classes, one-vs-rest)"
            )
        lines.append(f"pixel accuracy: {report['pixel_accuracy']:.4f}")
        counts = report["counts"]
        lines.append(
            f"{image}s: {counts['images']}  {pixel}s: {counts['pixels']}  ignored {pixel}s: {counts['ignored_pixels']}"
        )
        unevaluated = sum(1 for r in report["per_image"] if r["pixels"] == 0)
        if counts["pixels"] == 0:
            lines.append(
                f"nothing was evaluated: no ground-truth {pixel} outside the ignore label, so the scores "
                "above are the empty-mask convention (1 = absent from truth and prediction), not a measurement"
            )
        elif unevaluated:
            lines.append(
                f"{unevaluated} {image}(s) had no evaluated {pixel} (all ignore) and count as both-empty"
            )
        notes = []
        for cname, e in report["per_class"].items():
            parts = []
            if e["images_both_empty"]:
                parts.append(
                    f"absent from truth and prediction in {e['images_both_empty']} {image}(s), not averaged"
                )
            if e["images_missed"]:
                parts.append(f"missed in {e['images_missed']} {image}(s)")
            if e["images_false_positive"]:
                parts.append(f"predicted but absent in {e['images_false_positive']} {image}(s)")
            if parts:
                notes.append(f"  {cname}: " + "; ".join(parts))
        if notes:
            lines.append(
                f"empty masks (one-sided: Dice 0, HD95/ASSD = {image} diagonal; both empty: not averaged):"
            )
            lines.extend(notes)
        return "\n".join(lines) + "\n"

    def write_json(self, path: str | os.PathLike) -> None:
        """Write ``result()`` as JSON, atomically (no half-written file on failure)."""
        text = json.dumps(self.result(), indent=2, allow_nan=False)
        _atomic_write(path, text + "\n")

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write one row per class and a ``mean`` row, atomically.

        The ``auc_roc``, ``auc_pr``, ``best_f1`` and ``best_threshold`` columns
        are there only when probabilities were given to ``update``.
        """
        report = self.result()
        columns = [
            "class_id", "class_name", "iou", "dice", "sensitivity", "specificity", "precision",
            "hd95", "assd", "dice_per_image", "images_averaged", "truth_pixels", "pred_pixels",
            "images_with_truth", "images_both_empty", "images_missed", "images_false_positive",
        ]
        if "mean_auc_roc" in report:
            columns += ["auc_roc", "auc_pr", "best_f1", "best_threshold"]
        averaged = ("iou", "dice", "sensitivity", "specificity", "precision", "hd95", "assd", "auc_roc", "auc_pr")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for c, cname in enumerate(self.class_names):
            e = report["per_class"][cname]
            writer.writerow([c, cname] + [_csv_value(e[k]) for k in columns[2:]])
        writer.writerow(
            ["", "mean"]
            + [_csv_value(report.get(f"mean_{k}")) if k in averaged else "" for k in columns[2:]]
        )
        _atomic_write(path, buffer.getvalue())

    def write_per_image_csv(self, path: str | os.PathLike) -> None:
        """Write one row per image: name, file name, pixel accuracy, then Dice/IoU/HD95/ASSD per class.

        Volumes: one row per volume, with its voxel size in ``spacing_z``,
        ``spacing_y``, ``spacing_x`` (mm, or voxels when none was given) after
        the file name.
        """
        volumes = self._volumes
        columns = ["index", "name", "filename"]
        columns += ["spacing_z", "spacing_y", "spacing_x"] if volumes else []
        columns += ["pixel_accuracy"]
        for metric in ("dice", "iou", "hd95", "assd"):
            columns += [f"{metric}_{c}" for c in self.class_names]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in self.per_image:
            row = [r["index"], r["name"] or "", r.get("filename") or ""]
            row += [_csv_value(float(v)) for v in r["spacing"]] if volumes else []
            row += [_csv_value(r["pixel_accuracy"])]
            for metric in ("dice", "iou", "hd95", "assd"):
                row += [_csv_value(r[metric][c]) for c in self.class_names]
            writer.writerow(row)
        _atomic_write(path, buffer.getvalue())


def _score_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _atomic_write(path: str | os.PathLike, text: str) -> None:
    from kerasseg.atomic_files import write_text

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise EvaluationError(f"cannot write {path}: folder {directory} does not exist")
    write_text(path, text, make_folder=False)
