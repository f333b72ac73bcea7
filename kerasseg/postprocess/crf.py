"""Fully connected CRF (Krähenbühl & Koltun 2011) on top of ``pydensecrf``.

Energy of a labelling ``x`` of an image ``I`` (the one used by DeepLab and by
our ultrasound source paper)::

    E(x) = sum_i -log P(x_i)                                           (unary)
         + sum_{i<j} mu(x_i, x_j) [ w_g exp(-|p_i-p_j|^2 / 2 sxy_g^2)      (smoothness)
                                  + w_b exp(-|p_i-p_j|^2 / 2 sxy_b^2
                                            -|I_i-I_j|^2 / 2 srgb^2) ]   (appearance)

with Potts compatibility ``mu(a, b) = [a != b]``. ``w_g``/``w_b`` are
``gaussian_compat``/``bilateral_compat``. Mean-field inference runs
``iterations`` steps; the MAP labelling is the arg-max of the marginals.

Two code paths give the same energy:

* default: ``DenseCRF2D`` with its built-in C++ position/colour features
  (fastest for RGB);
* ``use_generic_path=True``: features are built here in NumPy in
  ``(y, x, channels...)`` order and added to a generic ``DenseCRF``. This is
  bit-exact with pydensecrf's documented generic example. The two paths differ
  only in the order of the feature dimensions, which changes the
  permutohedral-lattice approximation slightly (>= 99.8 % equal labels on
  pydensecrf's own examples).
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from kerasseg.postprocess.appearance import appearance_image
from kerasseg.errors import CRFInputError
from kerasseg.postprocess.params import CRFParams, WindowSpec

#: smallest probability fed to ``-log``; keeps the unary finite for hard 0/1 inputs.
MIN_PROBABILITY = 1e-8
#: how far per-pixel class probabilities may sum away from 1.
SUM_TOLERANCE = 1e-3


def _pydensecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ImportError(
            "kerasseg.postprocess needs pydensecrf: pip install pydensecrf2"
        ) from e
    return dcrf


def _kernel_constants(kernel: str, normalization: str) -> tuple[Any, Any]:
    dcrf = _pydensecrf()
    kernels = {"const": dcrf.CONST_KERNEL, "diag": dcrf.DIAG_KERNEL, "full": dcrf.FULL_KERNEL}
    norms = {
        "none": dcrf.NO_NORMALIZATION,
        "before": dcrf.NORMALIZE_BEFORE,
        "after": dcrf.NORMALIZE_AFTER,
        "symmetric": dcrf.NORMALIZE_SYMMETRIC,
    }
    return kernels[kernel], norms[normalization]


def check_probabilities(
    probabilities: Any,
    image_shape: Sequence[int] | None = None,
    *,
    source: str = "probabilities",
    sum_tolerance: float = SUM_TOLERANCE,
) -> np.ndarray:
    """Validate a probability map and return it as ``(H, W, K)`` with ``K >= 2``.

    Args:
        probabilities: ``(H, W, K)`` class probabilities (softmax), or a binary
            foreground probability ``(H, W, 1)`` / ``(H, W)`` (sigmoid), which is
            expanded to ``[1 - p, p]``. float32 or float64 is kept.
        image_shape: shape of the image; its ``(H, W)`` must match.
        source: name used in error messages.
        sum_tolerance: allowed ``|sum_k p_k - 1|`` per pixel.

    Raises:
        CRFInputError: wrong rank or size, non-float dtype, NaN/inf, values outside
            ``[0, 1]``, or rows that do not sum to 1.
    """
    p = np.asarray(probabilities)
    if not np.issubdtype(p.dtype, np.floating):
        raise CRFInputError(f"{source}: probabilities must be floating point, got dtype {p.dtype}")
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float32)
    if p.ndim == 2:
        p = p[:, :, None]
    if p.ndim != 3 or p.shape[2] == 0:
        raise CRFInputError(
            f"{source}: probabilities must be (H, W, K) (or (H, W) for a binary map), got shape {np.shape(probabilities)}"
        )
    if image_shape is not None and tuple(p.shape[:2]) != tuple(image_shape[:2]):
        raise CRFInputError(
            f"{source}: probabilities are {p.shape[0]}x{p.shape[1]} (H x W) but the image is "
            f"{image_shape[0]}x{image_shape[1]}; resize the prediction to the image first"
        )
    if not np.isfinite(p).all():
        bad = int(np.count_nonzero(~np.isfinite(p)))
        raise CRFInputError(f"{source}: probabilities contain {bad} NaN/infinite values")
    lo, hi = float(p.min()), float(p.max())
    if lo < -sum_tolerance or hi > 1.0 + sum_tolerance:
        raise CRFInputError(
            f"{source}: probabilities must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
            "(logits? apply softmax/sigmoid first)"
        )
    if p.shape[2] == 1:
        fg = p[:, :, 0]
        return np.stack([1.0 - fg, fg], axis=-1)
    sums = p.sum(axis=2, dtype=np.float64)
    worst = float(np.abs(sums - 1.0).max())
    if worst > sum_tolerance:
        raise CRFInputError(
            f"{source}: class probabilities must sum to 1 per pixel (tolerance {sum_tolerance:g}); "
            f"the worst pixel sums to {float(sums.flat[np.abs(sums - 1.0).argmax()]):.6g}. "
            "Pass softmax outputs, or a (H, W, 1) sigmoid map for binary segmentation"
        )
    return p


def unary_energy(probabilities: np.ndarray, *, min_probability: float = MIN_PROBABILITY) -> np.ndarray:
    """``-log p`` as the C-contiguous float32 ``(K, H*W)`` array pydensecrf expects.

    The logarithm is taken in the precision of ``probabilities`` (float64 input
    gives the float64 energy rounded once to float32).
    """
    h, w, k = probabilities.shape
    p = np.maximum(probabilities, probabilities.dtype.type(min_probability))
    u = -np.log(p)
    return np.ascontiguousarray(u.reshape(h * w, k).T, dtype=np.float32)


def position_features(height: int, width: int, sxy: float) -> np.ndarray:
    """``(2, H*W)`` float32 features ``(y / sxy, x / sxy)`` in raster order."""
    yx = np.indices((height, width), dtype=np.float32)
    yx /= np.float32(sxy)
    return yx.reshape(2, -1)


def appearance_features(image_u8: np.ndarray, sxy: float, srgb: Union[float, Sequence[float]]) -> np.ndarray:
    """``(2 + C, H*W)`` float32 features ``(y/sxy, x/sxy, c_1/srgb_1, ...)``."""
    h, w, c = image_u8.shape
    s = np.broadcast_to(np.asarray(srgb, dtype=np.float32).reshape(-1), (c,))
    feats = np.empty((2 + c, h, w), np.float32)
    feats[:2] = np.indices((h, w), dtype=np.float32)
    feats[:2] /= np.float32(sxy)
    feats[2:] = np.moveaxis(image_u8, -1, 0)
    for i in range(c):
        feats[2 + i] /= s[i]
    return feats.reshape(2 + c, -1)


def dense_crf(
    image: Any,
    probabilities: Any,
    *,
    iterations: int = 5,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 80.0,
    bilateral_srgb: Union[float, list[float], tuple[float, ...], np.ndarray] = 13.0,
    bilateral_compat: float = 10.0,
    kernel: str = "diag",
    normalization: str = "symmetric",
    window: WindowSpec = None,
    use_generic_path: bool = False,
    min_probability: float = MIN_PROBABILITY,
    sum_tolerance: float = SUM_TOLERANCE,
    source: str = "image",
) -> tuple[np.ndarray, np.ndarray]:
    """Refine a soft segmentation with a fully connected CRF.

    Args:
        image: ``(H, W)`` grayscale or ``(H, W, C)`` image (uint8 used as is; 16-bit,
            float, ... windowed to uint8 for the appearance term, see
            :func:`appearance_image`). RGB uses all three channels.
        probabilities: ``(H, W, K)`` softmax output with any ``K >= 2``, or a binary
            sigmoid output ``(H, W, 1)`` / ``(H, W)``.
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: smoothness kernel (position only).
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel
            (position and intensity); ``bilateral_srgb`` may be one value per channel.
            A ``*_compat`` of 0 drops that kernel.
        kernel, normalization: pydensecrf kernel type and normalization.
        window: intensity window for non-uint8 images (see :func:`appearance_image`).
        use_generic_path: generic ``DenseCRF`` with NumPy features (bit-exact with
            pydensecrf's generic example) instead of ``DenseCRF2D``.
        min_probability: probabilities are clipped below at this before ``-log``.
        sum_tolerance: allowed deviation of per-pixel sums from 1.
        source: name for error messages (e.g. the image file).

    Returns:
        ``(refined, labels)``: ``refined`` float32 ``(H, W, K)`` marginals (``(H, W, 1)``
        foreground probability when the input was a sigmoid map) and ``labels``
        ``(H, W)`` arg-max class ids (uint8 when ``K <= 256``, else int32).

    Raises:
        CRFInputError: bad image or probabilities (shape, NaN, not a distribution).
        CRFConfigError: bad parameters.
    """
    params = CRFParams(
        iterations=iterations,
        gaussian_sxy=gaussian_sxy,
        gaussian_compat=gaussian_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=tuple(bilateral_srgb) if isinstance(bilateral_srgb, (list, tuple, np.ndarray)) else bilateral_srgb,
        bilateral_compat=bilateral_compat,
        kernel=kernel,
        normalization=normalization,
        window=window,
        use_generic_path=use_generic_path,
    )
    img = appearance_image(image, params.window, source=source)
    binary_input = np.ndim(probabilities) == 2 or (np.ndim(probabilities) == 3 and np.shape(probabilities)[2] == 1)
    probs = check_probabilities(probabilities, img.shape, source=source, sum_tolerance=sum_tolerance)
    if isinstance(params.bilateral_srgb, tuple) and len(params.bilateral_srgb) not in (1, img.shape[2]):
        raise CRFInputError(
            f"{source}: bilateral_srgb has {len(params.bilateral_srgb)} values but the image has "
            f"{img.shape[2]} channels"
        )
    q = _infer(img, probs, params, min_probability)
    h, w, k = probs.shape
    refined = np.ascontiguousarray(q.reshape(k, h, w).transpose(1, 2, 0))
    labels = refined.argmax(axis=2).astype(np.uint8 if k <= 256 else np.int32)
    if binary_input:
        refined = np.ascontiguousarray(refined[:, :, 1:])
    return refined, labels


def _infer(img: np.ndarray, probs: np.ndarray, params: CRFParams, min_probability: float) -> np.ndarray:
    """Run pydensecrf; returns the ``(K, H*W)`` float32 marginals."""
    dcrf = _pydensecrf()
    h, w, c = img.shape
    k = probs.shape[2]
    kern, norm = _kernel_constants(params.kernel, params.normalization)
    unary = unary_energy(probs, min_probability=min_probability)
    srgb = params.bilateral_srgb
    if params.use_generic_path:
        crf = dcrf.DenseCRF(h * w, k)
        crf.setUnaryEnergy(unary)
        if params.gaussian_compat > 0:
            crf.addPairwiseEnergy(position_features(h, w, params.gaussian_sxy),
                                  compat=float(params.gaussian_compat), kernel=kern, normalization=norm)
        if params.bilateral_compat > 0:
            crf.addPairwiseEnergy(appearance_features(img, params.bilateral_sxy, srgb),
                                  compat=float(params.bilateral_compat), kernel=kern, normalization=norm)
    else:
        crf = dcrf.DenseCRF2D(w, h, k)
        crf.setUnaryEnergy(unary)
        if params.gaussian_compat > 0:
            crf.addPairwiseGaussian(sxy=float(params.gaussian_sxy), compat=float(params.gaussian_compat),
                                    kernel=kern, normalization=norm)
        if params.bilateral_compat > 0:
            scalar_srgb = not isinstance(srgb, tuple) or len(set(srgb)) == 1
            if c == 3 and scalar_srgb:
                s = float(srgb[0] if isinstance(srgb, tuple) else srgb)
                crf.addPairwiseBilateral(sxy=float(params.bilateral_sxy), srgb=s, rgbim=img,
                                         compat=float(params.bilateral_compat), kernel=kern, normalization=norm)
            else:  # grayscale / other channel counts: same kernel, features built here
                crf.addPairwiseEnergy(appearance_features(img, params.bilateral_sxy, srgb),
                                      compat=float(params.bilateral_compat), kernel=kern, normalization=norm)
    return np.asarray(crf.inference(int(params.iterations)))


def probabilities_from_labels(
    labels: Any,
    num_classes: int,
    *,
    gt_prob: float = 0.7,
    unsure_label: int | None = None,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Soft probabilities from a (sparse) hard annotation, for scribble-style refinement.

    Every labelled pixel gets ``gt_prob`` for its class and the rest spread evenly
    over the other classes; pixels equal to ``unsure_label`` get the uniform
    distribution ``1/K``. With ``unsure_label=0`` and ids ``1..K`` this is the
    convention of pydensecrf's example (class ``k`` written as ``k+1``, 0 = unknown);
    with ``unsure_label=255`` it follows kerasseg's ignore index, ids ``0..K-1``.

    Args:
        labels: ``(H, W)`` integer array.
        num_classes: ``K >= 2``.
        gt_prob: confidence in the annotation, in ``(0, 1)``.
        unsure_label: id meaning "unknown", or None when every pixel is labelled.
        dtype: float64 (default, so ``-log`` of it is exact before the float32
            cast pydensecrf needs) or float32.

    Returns:
        ``(H, W, K)`` probabilities.

    Raises:
        CRFInputError: bad ``gt_prob``/``num_classes`` or labels outside the classes.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise CRFInputError(f"labels must be a 2-D integer array, got shape {lab.shape} dtype {lab.dtype}")
    if int(num_classes) < 2:
        raise CRFInputError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 < float(gt_prob) < 1.0:
        raise CRFInputError(f"gt_prob must be in (0, 1), got {gt_prob}")
    k = int(num_classes)
    lab = lab.astype(np.int64)
    unsure = np.zeros(lab.shape, bool) if unsure_label is None else lab == int(unsure_label)
    ids = lab.copy()
    if unsure_label == 0:  # pydensecrf convention: 0 unknown, class k stored as k + 1
        ids -= 1
    ids[unsure] = 0
    if ids.size and (ids.min() < 0 or ids.max() >= k):
        raise CRFInputError(
            f"labels must be class ids in [0, {k - 1}]"
            + (f" (stored as 1..{k} with 0 = unsure)" if unsure_label == 0 else "")
            + (f" or {unsure_label} (unsure)" if unsure_label not in (None, 0) else "")
            + f"; got values in [{int(lab.min())}, {int(lab.max())}]"
        )
    off = (1.0 - float(gt_prob)) / (k - 1)
    probs = np.full(lab.shape + (k,), off, dtype=np.float64)
    np.put_along_axis(probs, ids[:, :, None], float(gt_prob), axis=2)
    probs[unsure] = 1.0 / k
    return probs.astype(dtype, copy=False)
