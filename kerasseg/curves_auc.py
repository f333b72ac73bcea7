"""Threshold-free scores from predicted probabilities: AUC-ROC, AUC-PR, best F1.

:class:`ProbabilityCurves` accumulates, image by image, per class ``c``
(one-vs-rest: the positives are the pixels whose truth is ``c``, every other
evaluated pixel is a negative) two histograms of the predicted probability of
class ``c``, one over the positive pixels and one over the negative pixels.
Pixels whose truth is ``ignore_index`` are left out. Memory is fixed
(``2 * bins`` counts per class), whatever the number of images.

Histogram method
----------------
The ``bins`` (default 16384) bins split ``[0, 1]`` into equal widths; a pixel
with probability ``p`` falls in bin ``floor(p * bins)`` (``p == 1`` in the last
bin). The thresholds are the bin edges ``t_j = j / bins``, ``j = bins .. 0``
(descending); at ``t_j`` a pixel is predicted positive when it lies in a bin
``>= j``, i.e. when ``p >= t_j`` (exactly, except that ``p == 1`` still counts
at the lowest edge of the last bin).

* AUC-ROC: trapezoid rule over the ROC points ``(FPR_j, TPR_j)`` of every edge,
  from ``(0, 0)`` (nothing predicted) to ``(1, 1)`` (everything predicted).
  It equals the Mann-Whitney probability that a random positive scores above
  a random negative, with a positive and a negative in one bin counted as a
  tie (1/2); the only difference from the exact (sorted) computation is
  pairs whose probabilities differ but share a bin.
* AUC-PR: average precision, the step-wise sum over the thresholds of
  ``(recall_j - recall_{j+1}) * precision_j`` (no interpolation; only the
  thresholds where recall changes contribute), pixels of one bin treated as
  tied scores.
* Best F1: the largest ``F1 = 2 TP / (2 TP + FP + FN)`` over the edges, and the
  (smallest) edge ``best_threshold`` achieving it (predict ``p >= threshold``).

With probabilities spread over ``[0, 1]`` (not piled on a few values) the
AUCs match the exact computation from all pixels sorted (Mann-Whitney with
average ranks; average precision over the distinct scores) within about
1e-4: the tests assert 1e-4 on real ISBI 2012 membrane masks with blurred,
noisy probabilities, where the measured differences are about 1e-7 (AUC-ROC)
and 1e-5 (AUC-PR). Many distinct probabilities inside one bin of width
``1 / bins`` would widen the gap (they are counted as ties).

A class without a positive or without a negative pixel has no curve: its
``auc_roc``, ``auc_pr``, ``best_f1`` and ``best_threshold`` are ``None`` (JSON
``null``), never NaN.

Binary sigmoid models: probabilities of shape ``(H, W, 1)`` with
``num_classes`` 1 or 2 are the probability of class 1; class 0 gets ``1 - p``.

numpy only (no TensorFlow).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kerasseg.schema import IGNORE_INDEX

__all__ = ["ProbabilityCurves", "DEFAULT_BINS"]

DEFAULT_BINS = 16384

# Probabilities this far outside [0, 1] (float rounding of a softmax) are clipped;
# anything further out is refused.
_TOLERANCE = 1e-4


class ProbabilityCurves:
    """Per-class positive/negative probability histograms, and the scores read from them.

    Args:
        num_classes: number of classes (1 = binary sigmoid model, read as 2).
        class_names: one unique name per class (``max(num_classes, 2)`` names).
        bins: number of equal-width histogram bins over ``[0, 1]``.
        ignore_index: truth value left out of every count (``None``: none).

    Attributes:
        positives: ``(n, bins)`` int64, per class the histogram of its
            probability over the pixels of that class.
        negatives: ``(n, bins)`` int64, the same over the other pixels.
        images: number of images added.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str],
        *,
        bins: int = DEFAULT_BINS,
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.n = max(self.num_classes, 2)
        names = [str(c) for c in class_names]
        if len(names) != self.n:
            raise ValueError(
                f"{len(names)} class names given for {self.n} classes (num_classes={num_classes}): {names}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if int(bins) < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.class_names = names
        self.bins = int(bins)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self.positives = np.zeros((self.n, self.bins), dtype=np.int64)
        self.negatives = np.zeros((self.n, self.bins), dtype=np.int64)
        self.images = 0

    # ------------------------------------------------------------------ input

    def _validated(self, truth: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
        truth = np.asarray(truth)
        probs = np.asarray(probabilities)
        if truth.ndim != 2:
            raise ValueError(f"truth must be an (H, W) label map, got shape {truth.shape}")
        if probs.ndim != 3 or probs.shape[:2] != truth.shape:
            raise ValueError(
                f"probabilities must be (H, W, K) with (H, W) = truth's {truth.shape}, got shape {probs.shape}"
            )
        k = probs.shape[-1]
        if k != self.n and not (k == 1 and self.n == 2):
            raise ValueError(
                f"probabilities of shape {probs.shape} have {k} channel(s) for {self.n} classes "
                f"(expected {self.n}" + (", or 1 for a sigmoid output)" if self.n == 2 else ")")
            )
        if not (np.issubdtype(truth.dtype, np.integer) or truth.dtype == bool):
            raise ValueError(f"truth must hold integer class ids, got dtype {truth.dtype}")
        if not np.issubdtype(probs.dtype, np.floating):
            raise ValueError(f"probabilities must be floats, got dtype {probs.dtype}")
        return truth.astype(np.int64), probs

    def update(self, truth: Any, probabilities: Any) -> None:
        """Add one image.

        Args:
            truth: ``(H, W)`` integer ground truth, values ``0..n-1`` or
                ``ignore_index``.
            probabilities: ``(H, W, K)`` float class probabilities, ``K == n``
                (or ``K == 1``, the class-1 probability of a sigmoid model, when
                ``n == 2``).

        Raises:
            ValueError: shapes that do not fit (the message names them),
                labels outside ``0..n-1``, or probabilities that are not finite
                or lie outside ``[0, 1]``. Nothing is added then.
        """
        truth, probs = self._validated(truth, probabilities)
        valid = np.ones(truth.shape, dtype=bool) if self.ignore_index is None else truth != self.ignore_index
        t = truth[valid]
        bad = np.unique(t[(t < 0) | (t >= self.n)])
        if bad.size:
            raise ValueError(f"truth holds labels {bad[:10].tolist()} outside 0..{self.n - 1}")
        p = probs[valid].astype(np.float64)  # (N, K)
        if p.size:
            if not np.all(np.isfinite(p)):
                raise ValueError("probabilities must be finite")
            low, high = float(p.min()), float(p.max())
            if low < -_TOLERANCE or high > 1.0 + _TOLERANCE:
                raise ValueError(f"probabilities must lie in [0, 1], got values in [{low:.6g}, {high:.6g}]")
        np.clip(p, 0.0, 1.0, out=p)
        if p.shape[1] == 1:
            p = np.concatenate([1.0 - p, p], axis=1)
        # bins is applied in float64: floor(p * bins) >= j exactly when p >= j / bins
        # for power-of-two bins, and up to one rounding of p * bins otherwise.
        index = np.minimum(np.floor(p * self.bins).astype(np.int64), self.bins - 1)
        for c in range(self.n):
            key = index[:, c] + self.bins * (t == c)
            counts = np.bincount(key, minlength=2 * self.bins)
            self.negatives[c] += counts[: self.bins]
            self.positives[c] += counts[self.bins :]
        self.images += 1

    # ------------------------------------------------------------------ output

    def class_scores(self, c: int) -> dict[str, Any]:
        """Scores of class index ``c``: ``{auc_roc, auc_pr, best_f1, best_threshold, positives, negatives}``."""
        pos = self.positives[c]
        neg = self.negatives[c]
        n_pos = int(pos.sum())
        n_neg = int(neg.sum())
        scores: dict[str, Any] = {
            "auc_roc": None,
            "auc_pr": None,
            "best_f1": None,
            "best_threshold": None,
            "positives": n_pos,
            "negatives": n_neg,
        }
        if n_pos == 0 or n_neg == 0:
            return scores
        # tp[j], fp[j]: pixels predicted positive at threshold j / bins (bins >= j), j = 0..bins.
        tp = np.concatenate([np.cumsum(pos[::-1])[::-1], [0]]).astype(np.float64)
        fp = np.concatenate([np.cumsum(neg[::-1])[::-1], [0]]).astype(np.float64)
        tpr = tp / n_pos
        fpr = fp / n_neg
        # index 0 is the lowest threshold; steps between consecutive edges j and j+1.
        auc_roc = float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) * 0.5))
        predicted = tp + fp
        precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
        auc_pr = float(np.sum((tpr[:-1] - tpr[1:]) * precision[:-1]))
        f1 = 2.0 * tp / (2.0 * tp + fp + (n_pos - tp))
        best = int(np.argmax(f1))
        scores.update(
            auc_roc=auc_roc,
            auc_pr=auc_pr,
            best_f1=float(f1[best]),
            best_threshold=float(best / self.bins),
        )
        return scores

    def result(self) -> dict[str, dict[str, Any]]:
        """``{class_name: {auc_roc, auc_pr, best_f1, best_threshold, positives, negatives}}``.

        ``auc_*``, ``best_f1`` and ``best_threshold`` are ``None`` for a class
        without a positive or a negative pixel; ``positives``/``negatives`` are
        pixel counts.
        """
        return {name: self.class_scores(c) for c, name in enumerate(self.class_names)}
