"""Streaming Keras segmentation metrics built on one running confusion matrix.

Convention (same as ``kerasseg.losses``):

* ``y_true``: integer class ids ``(B, H, W)`` or ``(B, H, W, 1)``;
* ``y_pred``: ``(B, H, W, K)`` probabilities or logits; the predicted class is
  the argmax for ``K >= 2`` and ``p >= threshold`` for ``K == 1`` (a sigmoid
  probability of class 1; with ``from_logits=True`` the sigmoid is applied first);
* ``sample_weight``: per-pixel ``(B, H, W)``. Pixels of weight 0 (ignore
  pixels) are not counted, nor are labels equal to ``ignore_index`` or outside
  ``[0, num_classes)``. By default (``weighted=False``) every other pixel
  counts once, so class weights that a data pipeline puts into the weight map
  do not change the metric; ``weighted=True`` counts each pixel with its weight.

``num_classes`` is the number of label values; ``num_classes=1`` (a sigmoid
model) is read as binary, i.e. two classes (0 = background, 1 = foreground).

Scores per class ``c`` from the confusion matrix (rows = truth, columns =
prediction), with ``TP, FP, FN, TN`` counted over all pixels seen so far:

* IoU ``TP / (TP + FP + FN)``; Dice ``2 TP / (2 TP + FP + FN)``;
* sensitivity (recall) ``TP / (TP + FN)``; specificity ``TN / (TN + FP)``;
  precision ``TP / (TP + FP)``; pixel accuracy ``trace / total``.

Empty cases are defined, never NaN: a ratio whose denominator is 0 is 1.0 when
class ``c`` is absent from both the ground truth and the prediction (nothing to
find, nothing claimed) and 0.0 otherwise; before any pixel is seen every score
is 0.0. A "mean" metric is the plain (or ``class_ids``-restricted) average of
the per-class values, absent classes included with their defined value.

All metrics keep their state in a summed ``(n, n)`` float32 variable, so they
work under ``tf.distribute`` (replica states are summed) and in
``model.evaluate``, and serialize with ``get_config``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import keras
import tensorflow as tf

from kerasseg._targets import labels_and_weights
from kerasseg.schema import IGNORE_INDEX

__all__ = [
    "ConfusionMatrixMetric",
    "IoU",
    "MeanIoU",
    "Dice",
    "MeanDice",
    "Sensitivity",
    "Specificity",
    "Precision",
    "PixelAccuracy",
    "confusion_matrix",
    "scores_from_confusion",
    "metric_name_for_class",
    "default_metrics",
]


def _num_label_classes(num_classes: int) -> int:
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return max(num_classes, 2)


def confusion_matrix(
    y_true: Any,
    y_pred: Any,
    sample_weight: Any = None,
    *,
    num_classes: int,
    ignore_index: int | None = IGNORE_INDEX,
    threshold: float = 0.5,
    from_logits: bool = False,
    weighted: bool = False,
) -> tf.Tensor:
    """Confusion matrix of one batch: float32 ``(n, n)``, rows truth, columns prediction.

    ``n = max(num_classes, 2)``. One segment sum over the pixels (O(pixels),
    XLA-compatible); with the default 0/1 pixel counts the float32 sums are
    exact integers, hence deterministic on GPU too.
    """
    n = _num_label_classes(num_classes)
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank is not None and y_pred.shape.rank not in (4, 5):
        raise ValueError(f"y_pred must have shape (B, H, W, K) or (B, D, H, W, K); got shape {y_pred.shape}")
    channels = y_pred.shape[-1]
    if channels == 1:
        prob = tf.cast(y_pred[..., 0], tf.float32)
        if from_logits:
            prob = tf.sigmoid(prob)
        predicted = tf.cast(prob >= threshold, tf.int32)
    else:
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)

    labels, valid, sw = labels_and_weights(y_true, sample_weight, num_classes=n, ignore_index=ignore_index,
                                           spatial_dims=(y_pred.shape.rank or 4) - 2)
    valid = tf.logical_and(valid, tf.logical_and(predicted >= 0, predicted < n))
    weight = tf.cast(valid, tf.float32)
    if sw is not None:
        weight = weight * (sw if weighted else tf.cast(sw > 0, tf.float32))
        if weighted:
            weight = tf.maximum(weight, 0.0)

    labels = tf.where(valid, labels, tf.zeros_like(labels))
    predicted = tf.where(valid, predicted, tf.zeros_like(predicted))
    index = tf.reshape(labels * n + predicted, [-1])
    counts = tf.math.unsorted_segment_sum(tf.reshape(weight, [-1]), index, n * n)
    return tf.reshape(counts, [n, n])


def scores_from_confusion(cm: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per-class scores ``(n,)`` and pixel accuracy from a confusion matrix.

    Returns a dict with ``iou``, ``dice``, ``sensitivity``, ``specificity``,
    ``precision`` (each ``(n,)``) and ``pixel_accuracy`` (scalar), following the
    empty-case rule in the module docstring.
    """
    cm = tf.cast(cm, tf.float32)
    total = tf.reduce_sum(cm)
    tp = tf.linalg.diag_part(cm)
    gt = tf.reduce_sum(cm, axis=1)
    pred = tf.reduce_sum(cm, axis=0)
    fn = gt - tp
    fp = pred - tp
    tn = total - tp - fn - fp
    absent = tf.logical_and(tf.equal(gt, 0.0), tf.equal(pred, 0.0))
    seen = total > 0

    def ratio(num: tf.Tensor, den: tf.Tensor) -> tf.Tensor:
        value = tf.math.divide_no_nan(num, den)
        empty = tf.where(absent, tf.ones_like(num), tf.zeros_like(num))
        value = tf.where(den > 0, value, empty)
        return tf.where(seen, value, tf.zeros_like(value))

    return {
        "iou": ratio(tp, tp + fp + fn),
        "dice": ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "pixel_accuracy": tf.math.divide_no_nan(tf.reduce_sum(tp), total),
    }


@keras.saving.register_keras_serializable(package="kerasseg")
class ConfusionMatrixMetric(keras.metrics.Metric):
    """Base class: accumulates a confusion matrix; subclasses choose the score.

    Args:
        num_classes: number of label classes (1 = binary sigmoid, read as 2).
        class_id: report this class only; ``None`` reports the mean over
            ``class_ids`` (all classes by default).
        class_ids: classes averaged when ``class_id`` is ``None``.
        ignore_index: label value never counted (``None`` disables).
        threshold: decision threshold for ``K == 1`` predictions.
        from_logits: ``y_pred`` holds logits (matters only for ``K == 1``).
        weighted: count pixels with their ``sample_weight`` instead of once.
        name: metric name.
    """

    score_key = "iou"

    def __init__(
        self,
        num_classes: int,
        *,
        class_id: int | None = None,
        class_ids: Sequence[int] | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        threshold: float = 0.5,
        from_logits: bool = False,
        weighted: bool = False,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype or "float32")
        self.num_classes = int(num_classes)
        n = _num_label_classes(num_classes)
        if class_id is not None and not 0 <= int(class_id) < n:
            raise ValueError(f"{self.name}: class_id {class_id} outside 0..{n - 1}")
        if class_ids is not None:
            class_ids = [int(c) for c in class_ids]
            bad = [c for c in class_ids if not 0 <= c < n]
            if bad or not class_ids:
                raise ValueError(f"{self.name}: class_ids {class_ids} must be non-empty, within 0..{n - 1}")
        self.class_id = None if class_id is None else int(class_id)
        self.class_ids = class_ids
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.weighted = bool(weighted)
        self._n = n
        self.confusion = self.add_variable(
            shape=(n, n), initializer="zeros", dtype="float32", aggregation="sum", name="confusion"
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        cm = confusion_matrix(
            y_true,
            y_pred,
            sample_weight,
            num_classes=self._n,
            ignore_index=self.ignore_index,
            threshold=self.threshold,
            from_logits=self.from_logits,
            weighted=self.weighted,
        )
        self.confusion.assign_add(cm)

    def reset_state(self) -> None:
        self.confusion.assign(tf.zeros((self._n, self._n), tf.float32))

    def per_class(self) -> tf.Tensor:
        """The score of every class, float32 ``(n,)``."""
        return scores_from_confusion(tf.convert_to_tensor(self.confusion))[
            self.score_key
        ]

    def result(self) -> tf.Tensor:
        scores = self.per_class()
        if self.class_id is not None:
            return scores[self.class_id]
        if self.class_ids is not None:
            scores = tf.gather(scores, self.class_ids)
        return tf.reduce_mean(scores)

    def get_config(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "class_id": self.class_id,
            "class_ids": self.class_ids,
            "ignore_index": self.ignore_index,
            "threshold": self.threshold,
            "from_logits": self.from_logits,
            "weighted": self.weighted,
            "name": self.name,
            "dtype": self.dtype,
        }


@keras.saving.register_keras_serializable(package="kerasseg")
class IoU(ConfusionMatrixMetric):
    """Intersection over union ``TP / (TP + FP + FN)`` of one class (or the mean)."""

    score_key = "iou"

    def __init__(self, num_classes: int, *, name: str | None = None, **kwargs: Any) -> None:
        class_id = kwargs.get("class_id")
        super().__init__(num_classes, name=name or (f"iou_{class_id}" if class_id is not None else "mean_iou"), **kwargs)


@keras.saving.register_keras_serializable(package="kerasseg")
class MeanIoU(IoU):
    """Mean over classes of IoU (``class_ids`` restricts the average)."""

    def __init__(self, num_classes: int, *, name: str = "mean_iou", **kwargs: Any) -> None:
        kwargs.pop("class_id", None)
        super().__init__(num_classes, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="kerasseg")
class Dice(ConfusionMatrixMetric):
    """Dice ``2 TP / (2 TP + FP + FN)`` of one class (or the mean)."""

    score_key = "dice"

    def __init__(self, num_classes: int, *, name: str | None = None, **kwargs: Any) -> None:
        class_id = kwargs.get("class_id")
        super().__init__(num_classes, name=name or (f"dice_{class_id}" if class_id is not None else "mean_dice"), **kwargs)


@keras.saving.register_keras_serializable(package="kerasseg")
class MeanDice(Dice):
    """Mean over classes of Dice (``class_ids`` restricts the average)."""

    def __init__(self, num_classes: int, *, name: str = "mean_dice", **kwargs: Any) -> None:
        kwargs.pop("class_id", None)
        super().__init__(num_classes, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="kerasseg")
class Sensitivity(ConfusionMatrixMetric):
    """Sensitivity (recall) ``TP / (TP + FN)`` of one class (or the mean)."""

    score_key = "sensitivity"

    def __init__(self, num_classes: int, *, name: str | None = None, **kwargs: Any) -> None:
        class_id = kwargs.get("class_id")
        super().__init__(
            num_classes, name=name or (f"sensitivity_{class_id}" if class_id is not None else "mean_sensitivity"), **kwargs
        )


@keras.saving.register_keras_serializable(package="kerasseg")
class Specificity(ConfusionMatrixMetric):
    """Specificity ``TN / (TN + FP)`` of one class (or the mean)."""

    score_key = "specificity"

    def __init__(self, num_classes: int, *, name: str | None = None, **kwargs: Any) -> None:
        class_id = kwargs.get("class_id")
        super().__init__(
            num_classes, name=name or (f"specificity_{class_id}" if class_id is not None else "mean_specificity"), **kwargs
        )


@keras.saving.register_keras_serializable(package="kerasseg")
class Precision(ConfusionMatrixMetric):
    """Precision ``TP / (TP + FP)`` of one class (or the mean)."""

    score_key = "precision"

    def __init__(self, num_classes: int, *, name: str | None = None, **kwargs: Any) -> None:
        class_id = kwargs.get("class_id")
        super().__init__(
            num_classes, name=name or (f"precision_{class_id}" if class_id is not None else "mean_precision"), **kwargs
        )


@keras.saving.register_keras_serializable(package="kerasseg")
class PixelAccuracy(ConfusionMatrixMetric):
    """Fraction of counted pixels whose predicted class is the true class."""

    def __init__(self, num_classes: int, *, name: str = "pixel_accuracy", **kwargs: Any) -> None:
        kwargs.pop("class_id", None)
        kwargs.pop("class_ids", None)
        super().__init__(num_classes, name=name, **kwargs)

    def result(self) -> tf.Tensor:
        return scores_from_confusion(tf.convert_to_tensor(self.confusion))[
            "pixel_accuracy"
        ]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["class_id"], config["class_ids"]
        return config


def metric_name_for_class(class_name: str, index: int) -> str:
    """A metric-name-safe version of a class name (``"Left Atrium"`` -> ``"left_atrium"``).

    labelme's ``"_background_"`` becomes ``"background"``; a name with no usable
    character becomes ``"class<index>"``.
    """
    safe = re.sub(r"[^0-9A-Za-z]+", "_", str(class_name)).strip("_").lower()
    return safe or f"class{index}"


def class_metric_names(class_names: Sequence[str]) -> list[str]:
    """:func:`metric_name_for_class` of every class, made unique (``name_<index>`` on a clash)."""
    used: set[str] = set()
    out = []
    for index, class_name in enumerate(class_names):
        safe = metric_name_for_class(class_name, index)
        if safe in used:
            safe = f"{safe}_{index}"
        used.add(safe)
        out.append(safe)
    return out


def default_metrics(
    num_classes: int,
    class_names: Sequence[str] | None = None,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    from_logits: bool = False,
    per_class: bool = True,
) -> list[keras.metrics.Metric]:
    """The metrics ``kerasseg train`` compiles with.

    Returns, in order: ``mean_dice``, ``foreground_dice`` (mean Dice over the
    classes that are not background, :mod:`kerasseg.classes`), ``mean_iou``, ``pixel_accuracy``, ``mean_sensitivity``, ``mean_specificity``,
    ``mean_precision`` and, with ``per_class``, ``dice_<class>`` and
    ``iou_<class>`` for every class (names from ``metric_name_for_class``).

    Args:
        num_classes: model classes (1 = binary sigmoid; read as 2 label classes).
        class_names: one name per label class (``max(num_classes, 2)`` names);
            ``None`` uses ``class0, class1, ...``.
    """
    n = _num_label_classes(num_classes)
    if class_names is None:
        class_names = [f"class{i}" for i in range(n)]
    class_names = list(class_names)
    if len(class_names) != n:
        raise ValueError(
            f"default_metrics: {len(class_names)} class names given for {n} label classes "
            f"(num_classes={num_classes}): {class_names}"
        )
    common = {"ignore_index": ignore_index, "from_logits": from_logits}
    metrics: list[keras.metrics.Metric] = [
        MeanDice(num_classes, name="mean_dice", **common),
        MeanIoU(num_classes, name="mean_iou", **common),
        PixelAccuracy(num_classes, name="pixel_accuracy", **common),
        Sensitivity(num_classes, name="mean_sensitivity", **common),
        Specificity(num_classes, name="mean_specificity", **common),
        Precision(num_classes, name="mean_precision", **common),
    ]
    from kerasseg.classes import foreground_indices

    metrics.insert(1, Dice(num_classes, class_ids=foreground_indices(class_names), name="foreground_dice", **common))
    if per_class:
        for index, safe in enumerate(class_metric_names(class_names)):
            metrics.append(Dice(num_classes, class_id=index, name=f"dice_{safe}", **common))
            metrics.append(IoU(num_classes, class_id=index, name=f"iou_{safe}", **common))
    return metrics
