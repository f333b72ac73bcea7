"""Segmentation losses: cross-entropy, soft Dice, Jaccard, Tversky, focal,
focal-Tversky and weighted sums of them.

Every loss follows one convention (see CONTRIBUTING.md):

* ``y_true``: integer class ids, shape ``(B, H, W)`` or ``(B, H, W, 1)``.
* ``y_pred``: shape ``(B, H, W, K)``; probabilities by default (softmax over
  ``K >= 2`` classes), or logits with ``from_logits=True``. ``K == 1`` is a
  sigmoid probability of class 1 and is treated exactly as the two-class
  distribution ``[1 - p, p]``, so a binary task gives the same loss whether the
  model ends in a sigmoid (``K=1``) or a two-way softmax (``K=2``).
* volumes work the same one rank up: ``y_true`` ``(B, D, H, W)``, ``y_pred``
  ``(B, D, H, W, K)``, sums over all spatial axes.
* ``sample_weight``: optional per-pixel weight, shape ``(B, H, W)`` (or
  ``(B, H, W, 1)``). It acts *inside* every loss, Dice included: a pixel of
  weight 0 (an ignore pixel) contributes nothing, a pixel of weight 2 counts
  twice in every sum (the denominators of the pixel losses stay the count
  of valid pixels, as with Keras' own sample weights). Pixels whose label
  equals ``ignore_index`` (255) are ignored as well, so raw masks work
  without a weight map.

Reduction. Each loss first computes one value per image, shape ``(B,)``:

* pixel losses (cross-entropy, focal): ``sum(w * l) / n_valid``, the mean over
  the image's non-ignored pixels (``w > 0``) of the weighted pixel loss; class
  weights therefore scale the loss rather than cancel out, and an image with no
  valid pixel has loss 0;
* region losses (Dice, Jaccard, Tversky, focal-Tversky): soft true/false
  positives/negatives summed over the image's pixels with weight ``w``, turned
  into one score per class, then ``1 - score`` averaged over the classes with
  ``class_weights``. ``batch_dice=True`` pools the sums over the whole batch
  instead (every image then carries the batch value).

Empty and ignored inputs are defined, with finite gradients. A batch whose
pixels are all ignored (labels 255 or weights 0) gives loss 0 and zero
gradients for every loss. A region-loss class with nothing in the truth or the
prediction of an image's valid pixels (a 0/0 score, reached with
``smooth=0``) scores 1, i.e. loss 0, like the evaluator's "absent from both"
rule. Powers (focal ``gamma``, focal-Tversky ``gamma``) are taken with a zero
gradient where their base is 0, where ``x ** g`` with ``g < 1`` has an
infinite slope (and ``0 * inf`` would turn every gradient into NaN).

The per-image values are reduced with Keras' ``reduction`` (default: mean over
the batch, scaled for ``tf.distribute`` like Keras' own losses), so a global
batch split over replicas gives the same loss as one device. All arithmetic is
float32 whatever the input dtype (``mixed_float16``/``mixed_bfloat16`` safe).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterable, Mapping, Sequence

import keras
import tensorflow as tf

from kerasseg._targets import labels_and_weights
from kerasseg.errors import LossSpecError
from kerasseg.schema import IGNORE_INDEX

__all__ = [
    "LossSpecError",
    "SegmentationLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "DiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "CombinedLoss",
    "DiceCrossEntropyLoss",
    "LOSS_NAMES",
    "get",
]

_EPSILON = 1e-7


# --------------------------------------------------------------------------- helpers


def _as_class_weights(class_weights: Sequence[float] | None) -> list[float] | None:
    if class_weights is None:
        return None
    try:
        values = [float(v) for v in class_weights]
    except (TypeError, ValueError) as exc:
        raise LossSpecError(f"class_weights must be a list of numbers, got {class_weights!r}") from exc
    if not values:
        raise LossSpecError("class_weights must not be empty")
    if any(v < 0 or v != v for v in values):
        raise LossSpecError(f"class_weights must be non-negative numbers, got {values}")
    return values


def _prepare(
    y_true: Any,
    y_pred: Any,
    sample_weight: Any,
    *,
    from_logits: bool,
    ignore_index: int | None,
) -> dict[str, tf.Tensor]:
    """Bring inputs to float32 class-probability form.

    Returns a dict with ``onehot``, ``probs`` and ``log_probs`` of shape
    ``(B, H, W, C)`` (``C = max(K, 2)``), ``labels`` int32 ``(B, H, W)`` (0 at
    invalid pixels), ``weight`` float32 ``(B, H, W)`` (0 at invalid pixels) and
    ``valid`` float32 ``(B, H, W)`` (1 where the weight is positive).
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank is not None and y_pred.shape.rank not in (4, 5):
        raise ValueError(f"y_pred must have shape (B, H, W, K) or (B, D, H, W, K); got shape {y_pred.shape}")
    y_pred = tf.cast(y_pred, tf.float32)
    num_channels = y_pred.shape[-1]
    if num_channels is None:
        raise ValueError("y_pred needs a known number of channels K (last axis)")
    num_classes = max(int(num_channels), 2)

    labels, valid, sw = labels_and_weights(
        y_true, sample_weight, num_classes=num_classes, ignore_index=ignore_index,
        spatial_dims=(y_pred.shape.rank or 4) - 2,
    )
    weight = tf.cast(valid, tf.float32)
    if sw is not None:
        weight = weight * sw
    labels = tf.where(valid, labels, tf.zeros_like(labels))
    valid_f = tf.cast(weight > 0, tf.float32)

    if num_channels == 1:
        if from_logits:
            log_p1 = tf.math.log_sigmoid(y_pred)
            log_p0 = tf.math.log_sigmoid(-y_pred)
            p1 = tf.sigmoid(y_pred)
        else:
            p1 = tf.clip_by_value(y_pred, 0.0, 1.0)
            log_p1 = tf.math.log(tf.maximum(p1, _EPSILON))
            log_p0 = tf.math.log(tf.maximum(1.0 - p1, _EPSILON))
        probs = tf.concat([1.0 - p1, p1], axis=-1)
        log_probs = tf.concat([log_p0, log_p1], axis=-1)
    elif from_logits:
        log_probs = tf.nn.log_softmax(y_pred, axis=-1)
        probs = tf.exp(log_probs)
    else:
        probs = tf.clip_by_value(y_pred, 0.0, 1.0)
        log_probs = tf.math.log(tf.maximum(probs, _EPSILON))

    onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    return {
        "onehot": onehot,
        "probs": probs,
        "log_probs": log_probs,
        "labels": labels,
        "weight": weight,
        "valid": valid_f,
    }


def _class_weight_vector(class_weights: list[float] | None, num_classes: int) -> tf.Tensor:
    if class_weights is None:
        return tf.ones([num_classes], tf.float32)
    if len(class_weights) != num_classes:
        raise LossSpecError(
            f"class_weights has {len(class_weights)} entries but the prediction has "
            f"{num_classes} classes (K=1 sigmoid outputs count as 2: background, foreground)"
        )
    return tf.constant(class_weights, tf.float32)


def _safe_pow(base: tf.Tensor, exponent: float) -> tf.Tensor:
    """``base ** exponent`` for ``base >= 0``, with a zero gradient where ``base == 0``.

    ``d/dx x**g = g x**(g-1)`` is infinite at 0 for ``g < 1`` (and
    ``0 * x**-1`` is NaN for ``g == 0``); the double ``where`` keeps the
    infinite branch out of the gradient. ``0 ** 0`` is 1.
    """
    exponent = float(exponent)
    if exponent == 0.0:
        return tf.ones_like(base)
    if exponent == 1.0:
        return base
    positive = base > 0
    safe = tf.where(positive, base, tf.ones_like(base))
    return tf.where(positive, tf.pow(safe, exponent), tf.zeros_like(base))


def _safe_ratio(numerator: tf.Tensor, denominator: tf.Tensor, *, empty: float) -> tf.Tensor:
    """``numerator / denominator``, and ``empty`` where the denominator is 0 (zero gradient there)."""
    nonzero = denominator > 0
    safe = tf.where(nonzero, denominator, tf.ones_like(denominator))
    return tf.where(nonzero, numerator / safe, tf.fill(tf.shape(numerator), tf.constant(empty, numerator.dtype)))


def _reduce(values: tf.Tensor, reduction: str | None) -> tf.Tensor:
    """Reduce per-image losses ``(B,)`` like Keras does, distribution-aware.

    ``"sum_over_batch_size"``/``"mean"``/``"mean_with_sample_weight"`` average over
    the (per-replica) batch and divide by the number of replicas in sync, so that
    summing the replicas' gradients gives the global-batch mean (Keras' own rule).
    """
    if reduction is None or reduction == "none":
        return values
    total = tf.reduce_sum(values)
    if reduction == "sum":
        return total
    count = tf.cast(tf.size(values), tf.float32)
    loss = tf.math.divide_no_nan(total, count)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * (1.0 / replicas)
    return loss


# --------------------------------------------------------------------------- base class


@keras.saving.register_keras_serializable(package="kerasseg")
class SegmentationLoss(keras.losses.Loss):
    """Base class: per-pixel weights inside the loss, float32 maths, per-image values.

    Subclasses implement ``_per_image(prep) -> (B,)`` on the dict built by
    ``_prepare``. ``__call__`` applies ``sample_weight`` itself (inside the loss)
    and reduces the per-image values with ``reduction``; Keras never applies the
    weight a second time.

    Args:
        from_logits: ``y_pred`` holds logits (softmax for K>=2, sigmoid for K=1).
        ignore_index: label value that is ignored (weight 0); ``None`` disables.
        reduction: Keras reduction of the per-image losses
            (``"sum_over_batch_size"``/``"mean"``, ``"sum"``, ``"none"``).
        name: loss name.
    """

    def __init__(
        self,
        *,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.from_logits = bool(from_logits)
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def _per_image(self, prep: dict[str, tf.Tensor]) -> tf.Tensor:
        """Per-image losses ``(B,)``; every concrete loss overrides this."""
        raise TypeError(f"{type(self).__name__} is an abstract base class; use one of {list(LOSS_NAMES)}")

    def per_image_losses(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        """Unreduced loss: float32 ``(B,)``, one value per image."""
        prep = _prepare(
            y_true,
            y_pred,
            sample_weight,
            from_logits=self.from_logits,
            ignore_index=self.ignore_index,
        )
        return self._per_image(prep)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        return self.per_image_losses(y_true, y_pred)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        with tf.name_scope(self.name):
            values = self.per_image_losses(y_true, y_pred, sample_weight)
            return _reduce(values, self.reduction)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reduction": self.reduction,
            "from_logits": self.from_logits,
            "ignore_index": self.ignore_index,
        }


# --------------------------------------------------------------------------- pixel losses


def _pixel_mean(pixel_loss: tf.Tensor, prep: dict[str, tf.Tensor], class_weights: list[float] | None) -> tf.Tensor:
    """``sum(w * cw[y] * l) / n_valid`` per image -> ``(B,)``."""
    weight = prep["weight"]
    if class_weights is not None:
        cw = _class_weight_vector(class_weights, prep["onehot"].shape[-1])
        weight = weight * tf.gather(cw, prep["labels"])
    spatial = list(range(1, pixel_loss.shape.rank))
    total = tf.reduce_sum(weight * pixel_loss, axis=spatial)
    count = tf.reduce_sum(prep["valid"], axis=spatial)
    return tf.math.divide_no_nan(total, count)


@keras.saving.register_keras_serializable(package="kerasseg")
class CrossEntropyLoss(SegmentationLoss):
    """Sparse (binary for K=1) cross-entropy with optional class weights.

    Per image: mean over non-ignored pixels of ``w * class_weights[y] * -log p_y``.

    Args:
        class_weights: one weight per class (``K``, or 2 for K=1), or ``None``.
        label_smoothing: mix the one-hot target with the uniform distribution.
        (plus ``from_logits``, ``ignore_index``, ``reduction``, ``name``)
    """

    def __init__(
        self,
        *,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str = "cross_entropy",
    ) -> None:
        super().__init__(from_logits=from_logits, ignore_index=ignore_index, reduction=reduction, name=name)
        self.class_weights = _as_class_weights(class_weights)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise LossSpecError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def _per_image(self, prep: dict[str, tf.Tensor]) -> tf.Tensor:
        target = prep["onehot"]
        if self.label_smoothing:
            num_classes = target.shape[-1]
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        pixel = -tf.reduce_sum(target * prep["log_probs"], axis=-1)
        return _pixel_mean(pixel, prep, self.class_weights)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "label_smoothing": self.label_smoothing,
        }


@keras.saving.register_keras_serializable(package="kerasseg")
class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al. 2017): ``-alpha_y (1 - p_y)^gamma log p_y`` per pixel.

    Per image: mean over non-ignored pixels of ``w * focal``. ``class_weights``
    plays the role of ``alpha`` (one value per class; ``None`` = 1 for all).

    Args:
        gamma: focusing parameter (0 gives cross-entropy).
        class_weights: per-class ``alpha``.
    """

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str = "focal",
    ) -> None:
        super().__init__(from_logits=from_logits, ignore_index=ignore_index, reduction=reduction, name=name)
        if float(gamma) < 0:
            raise LossSpecError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.class_weights = _as_class_weights(class_weights)

    def _per_image(self, prep: dict[str, tf.Tensor]) -> tf.Tensor:
        log_pt = tf.reduce_sum(prep["onehot"] * prep["log_probs"], axis=-1)
        pt = tf.exp(log_pt)
        modulator = _safe_pow(tf.maximum(1.0 - pt, 0.0), self.gamma)
        pixel = -modulator * log_pt
        return _pixel_mean(pixel, prep, self.class_weights)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "class_weights": self.class_weights}


# --------------------------------------------------------------------------- region losses


@keras.saving.register_keras_serializable(package="kerasseg")
class TverskyLoss(SegmentationLoss):
    """Tversky loss (Salehi et al. 2017), the parent of Dice and Jaccard losses.

    Per class ``c``, with pixel weight ``w``, probability ``p`` and one-hot ``t``:
    ``TP = sum w p t``, ``FP = sum w p (1-t)``, ``FN = sum w (1-p) t`` and
    ``TI = (TP + smooth) / (TP + alpha FP + beta FN + smooth)``. The loss is the
    ``class_weights``-weighted mean over classes of ``(1 - TI) ** gamma``
    (``gamma=1`` here; see ``FocalTverskyLoss``).

    Args:
        alpha: weight of false positives (0.3 by default).
        beta: weight of false negatives (0.7 by default).
        smooth: additive smoothing in numerator and denominator (pixels).
        include_background: include class 0 in the class average.
        batch_dice: pool the sums over the batch instead of per image.
        class_weights: weights of the class average (``None`` = equal).
    """

    _gamma_default = 1.0

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        include_background: bool = True,
        batch_dice: bool = False,
        class_weights: Sequence[float] | None = None,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str = "tversky",
    ) -> None:
        super().__init__(from_logits=from_logits, ignore_index=ignore_index, reduction=reduction, name=name)
        if float(alpha) < 0 or float(beta) < 0:
            raise LossSpecError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        if float(smooth) < 0:
            raise LossSpecError(f"smooth must be >= 0, got {smooth}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.batch_dice = bool(batch_dice)
        self.class_weights = _as_class_weights(class_weights)

    def _exponent(self) -> float:
        return 1.0

    def _per_image(self, prep: dict[str, tf.Tensor]) -> tf.Tensor:
        w = prep["weight"][..., None]
        p = prep["probs"]
        t = prep["onehot"]
        num_classes = t.shape[-1]
        spatial = list(range(1, t.shape.rank - 1))
        axes = [0, *spatial] if self.batch_dice else spatial
        tp = tf.reduce_sum(w * p * t, axis=axes)
        fp = tf.reduce_sum(w * p * (1.0 - t), axis=axes)
        fn = tf.reduce_sum(w * (1.0 - p) * t, axis=axes)
        # a class with nothing in truth or prediction (0/0, with smooth=0) scores 1
        score = _safe_ratio(tp + self.smooth, tp + self.alpha * fp + self.beta * fn + self.smooth, empty=1.0)
        per_class = _safe_pow(tf.maximum(1.0 - score, 0.0), self._exponent())
        cw = _class_weight_vector(self.class_weights, num_classes)
        if not self.include_background:
            cw = tf.concat([tf.zeros([1]), cw[1:]], axis=0)
        loss = tf.math.divide_no_nan(tf.reduce_sum(per_class * cw, axis=-1), tf.reduce_sum(cw))
        if self.batch_dice:
            loss = tf.fill(tf.shape(prep["labels"])[:1], loss)
        return loss

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "smooth": self.smooth,
            "include_background": self.include_background,
            "batch_dice": self.batch_dice,
            "class_weights": self.class_weights,
        }


@keras.saving.register_keras_serializable(package="kerasseg")
class DiceLoss(TverskyLoss):
    """Soft Dice loss: ``1 - (2 TP + smooth) / (2 TP + FP + FN + smooth)`` per class.

    Same arguments as ``TverskyLoss`` without ``alpha``/``beta`` (both 0.5).
    """

    def __init__(
        self,
        *,
        smooth: float = 1.0,
        include_background: bool = True,
        batch_dice: bool = False,
        class_weights: Sequence[float] | None = None,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str = "dice",
    ) -> None:
        # (2TP + s) / (2TP + FP + FN + s) == (TP + s/2) / (TP + FP/2 + FN/2 + s/2)
        super().__init__(
            alpha=0.5,
            beta=0.5,
            smooth=float(smooth) / 2.0,
            include_background=include_background,
            batch_dice=batch_dice,
            class_weights=class_weights,
            from_logits=from_logits,
            ignore_index=ignore_index,
            reduction=reduction,
            name=name,
        )
        self.smooth_arg = float(smooth)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["alpha"], config["beta"]
        config["smooth"] = self.smooth_arg
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class JaccardLoss(TverskyLoss):
    """Soft Jaccard (IoU) loss: ``1 - (TP + smooth) / (TP + FP + FN + smooth)`` per class."""

    def __init__(
        self,
        *,
        smooth: float = 1.0,
        include_background: bool = True,
        batch_dice: bool = False,
        class_weights: Sequence[float] | None = None,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str = "jaccard",
    ) -> None:
        super().__init__(
            alpha=1.0,
            beta=1.0,
            smooth=smooth,
            include_background=include_background,
            batch_dice=batch_dice,
            class_weights=class_weights,
            from_logits=from_logits,
            ignore_index=ignore_index,
            reduction=reduction,
            name=name,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["alpha"], config["beta"]
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class FocalTverskyLoss(TverskyLoss):
    """Focal-Tversky loss (Abraham & Khan 2019): ``(1 - TI_c) ** gamma`` averaged over classes.

    ``gamma=0.75`` (their ``1/gamma`` with ``gamma=4/3``) focuses on hard classes.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 0.75,
        smooth: float = 1.0,
        include_background: bool = True,
        batch_dice: bool = False,
        class_weights: Sequence[float] | None = None,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str = "focal_tversky",
    ) -> None:
        super().__init__(
            alpha=alpha,
            beta=beta,
            smooth=smooth,
            include_background=include_background,
            batch_dice=batch_dice,
            class_weights=class_weights,
            from_logits=from_logits,
            ignore_index=ignore_index,
            reduction=reduction,
            name=name,
        )
        if float(gamma) <= 0:
            raise LossSpecError(f"gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def _exponent(self) -> float:
        return self.gamma

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma}


# --------------------------------------------------------------------------- sums


@keras.saving.register_keras_serializable(package="kerasseg")
class CombinedLoss(SegmentationLoss):
    """Weighted sum of kerasseg losses, computed per image then reduced once.

    Args:
        losses: ``SegmentationLoss`` instances (or their serialized configs).
        weights: one weight per loss (default 1.0 each).
    """

    def __init__(
        self,
        losses: Sequence[Any],
        weights: Sequence[float] | None = None,
        *,
        reduction: str | None = "sum_over_batch_size",
        name: str = "combined",
    ) -> None:
        super().__init__(reduction=reduction, name=name)
        built = []
        for item in losses:
            if isinstance(item, Mapping):
                item = keras.saving.deserialize_keras_object(dict(item))
            if not isinstance(item, SegmentationLoss):
                raise LossSpecError(
                    f"CombinedLoss takes kerasseg losses, got {type(item).__name__}"
                )
            built.append(item)
        if not built:
            raise LossSpecError("CombinedLoss needs at least one loss")
        if weights is None:
            weights = [1.0] * len(built)
        weights = [float(v) for v in weights]
        if len(weights) != len(built):
            raise LossSpecError(f"{len(weights)} weights given for {len(built)} losses")
        self.losses = built
        self.weights = weights

    def per_image_losses(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        total = None
        for loss, weight in zip(self.losses, self.weights):
            value = weight * loss.per_image_losses(y_true, y_pred, sample_weight)
            total = value if total is None else total + value
        return total

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reduction": self.reduction,
            "losses": [keras.saving.serialize_keras_object(loss) for loss in self.losses],
            "weights": self.weights,
        }


@keras.saving.register_keras_serializable(package="kerasseg")
class DiceCrossEntropyLoss(CombinedLoss):
    """``dice_weight * soft Dice + ce_weight * cross-entropy`` (the default loss).

    Args:
        dice_weight, ce_weight: weights of the two terms.
        class_weights: per-class weights used by both terms.
        smooth, include_background, batch_dice: passed to ``DiceLoss``.
        label_smoothing: passed to ``CrossEntropyLoss``.
    """

    def __init__(
        self,
        *,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        class_weights: Sequence[float] | None = None,
        smooth: float = 1.0,
        include_background: bool = True,
        batch_dice: bool = False,
        label_smoothing: float = 0.0,
        from_logits: bool = False,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: str | None = "sum_over_batch_size",
        name: str = "dice_ce",
    ) -> None:
        class_weights = _as_class_weights(class_weights)
        dice = DiceLoss(
            smooth=smooth,
            include_background=include_background,
            batch_dice=batch_dice,
            class_weights=class_weights,
            from_logits=from_logits,
            ignore_index=ignore_index,
        )
        ce = CrossEntropyLoss(
            class_weights=class_weights,
            label_smoothing=label_smoothing,
            from_logits=from_logits,
            ignore_index=ignore_index,
        )
        super().__init__([dice, ce], [dice_weight, ce_weight], reduction=reduction, name=name)
        self.from_logits = bool(from_logits)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.class_weights = class_weights
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.batch_dice = bool(batch_dice)
        self.label_smoothing = float(label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reduction": self.reduction,
            "dice_weight": self.dice_weight,
            "ce_weight": self.ce_weight,
            "class_weights": self.class_weights,
            "smooth": self.smooth,
            "include_background": self.include_background,
            "batch_dice": self.batch_dice,
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
            "ignore_index": self.ignore_index,
        }


# --------------------------------------------------------------------------- registry

LOSS_NAMES: dict[str, type[SegmentationLoss]] = {
    "dice_ce": DiceCrossEntropyLoss,
    "ce": CrossEntropyLoss,
    "cross_entropy": CrossEntropyLoss,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "tversky": TverskyLoss,
    "focal": FocalLoss,
    "focal_tversky": FocalTverskyLoss,
}


def _nearest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.0)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _build_named(name: Any, kwargs: Mapping[str, Any], num_classes: int | None, where: str) -> SegmentationLoss:
    if not isinstance(name, str):
        raise LossSpecError(f"{where}: loss name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    if key not in LOSS_NAMES:
        raise LossSpecError(
            f"{where}: unknown loss {name!r}{_nearest(key, LOSS_NAMES)}; "
            f"valid names: {', '.join(LOSS_NAMES)}"
        )
    cls = LOSS_NAMES[key]
    params = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for arg in kwargs:
        if arg not in params:
            raise LossSpecError(
                f"{where}: loss {key!r} has no option {arg!r}{_nearest(arg, params)}; "
                f"valid options: {', '.join(params)}"
            )
    class_weights = kwargs.get("class_weights")
    if class_weights is not None and num_classes is not None:
        expected = max(int(num_classes), 2)
        if len(class_weights) != expected:
            raise LossSpecError(
                f"{where}: class_weights has {len(class_weights)} entries, expected {expected} "
                f"(one per class for num_classes={num_classes})"
            )
    try:
        return cls(**kwargs)
    except LossSpecError as exc:
        raise LossSpecError(f"{where}: {exc}") from None


def get(spec: Any, *, num_classes: int | None = None) -> SegmentationLoss:
    """Build a loss from a specification.

    ``spec`` is one of:

    * a name: ``"dice_ce"`` (default choice), ``"ce"``, ``"dice"``, ``"jaccard"``,
      ``"tversky"``, ``"focal"``, ``"focal_tversky"``;
    * a dict ``{"name": "tversky", "alpha": 0.3, "beta": 0.7}``;
    * a weighted sum ``{"sum": [{"name": "dice", "weight": 1.0}, {"name": "focal", "weight": 2.0}]}``;
    * an existing ``SegmentationLoss`` (returned unchanged);
    * ``None``: the default, ``"dice_ce"``.

    ``num_classes`` (model classes; 1 = binary sigmoid) validates ``class_weights``
    lengths. Raises ``LossSpecError`` naming the problem and the nearest valid name.
    """
    if isinstance(spec, SegmentationLoss):
        return spec
    if spec is None:
        spec = "dice_ce"
    if isinstance(spec, str):
        return _build_named(spec, {}, num_classes, "loss")
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "sum" in spec:
            extra = sorted(set(spec) - {"sum", "name"})
            if extra:
                raise LossSpecError(f"loss: a 'sum' spec takes only 'sum' (and 'name'), got {extra}")
            terms = spec["sum"]
            if not isinstance(terms, Sequence) or isinstance(terms, str) or not terms:
                raise LossSpecError("loss: 'sum' must be a non-empty list of {'name': ..., 'weight': ...}")
            losses, weights = [], []
            for i, term in enumerate(terms):
                where = f"loss.sum[{i}]"
                if isinstance(term, str):
                    term = {"name": term}
                if not isinstance(term, Mapping) or "name" not in term:
                    raise LossSpecError(f"{where}: each term needs a 'name', got {term!r}")
                term = dict(term)
                weight = term.pop("weight", 1.0)
                try:
                    weight = float(weight)
                except (TypeError, ValueError):
                    raise LossSpecError(f"{where}: weight must be a number, got {weight!r}") from None
                name = term.pop("name")
                losses.append(_build_named(name, term, num_classes, where))
                weights.append(weight)
            return CombinedLoss(losses, weights, name=str(spec.get("name", "combined")))
        if "name" not in spec:
            raise LossSpecError(f"loss: a dict spec needs 'name' or 'sum', got keys {sorted(spec)}")
        name = spec.pop("name")
        return _build_named(name, spec, num_classes, "loss")
    raise LossSpecError(f"loss: expected a name, a dict or a SegmentationLoss, got {type(spec).__name__}")
