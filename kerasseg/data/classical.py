"""Classical preprocessing of the source papers, on numpy arrays (OpenCV).

These are plain functions usable at conversion time (``data_tools`` can call
:func:`apply_preprocessing` on each decoded image/mask before encoding) or as
an optional hook in :func:`kerasseg.data.load_dataset` (``preprocess=[...]``,
run once per example before caching). They are *not* in the augmentation hot
path.

Images are ``(H, W)`` or ``(H, W, C)`` uint8/uint16/float arrays and keep
their dtype and rank; masks are ``(H, W)`` uint8 class ids with ``255`` =
ignore.

Config form (a list, applied in order)::

    [{"name": "crop_effective_region"}, {"name": "gaussian_lowpass", "sigma": 2},
     {"name": "clahe", "clip_limit": 2.0}, {"name": "mask_opening", "radius": 1},
     "remove_small_objects"]
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence, overload

import numpy as np

from kerasseg.schema import IGNORE_INDEX


def _cv2():
    import cv2  # local import: keep `import kerasseg.data` light

    return cv2


def _restore(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing channel axis of size 1; put it back."""
    if like.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return -np.inf, np.inf


def _cast_back(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    lo, hi = _dtype_range(dtype)
    if np.issubdtype(dtype, np.integer):
        x = np.rint(np.clip(x, lo, hi))
    return x.astype(dtype)


def gaussian_lowpass(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Gaussian low-pass filter (sigma in pixels, default 2 as in the source papers)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    src = image.astype(np.float32) if image.dtype not in (np.uint8, np.uint16, np.float32) else image
    out = _cv2().GaussianBlur(src, (0, 0), sigmaX=float(sigma), borderType=_cv2().BORDER_REFLECT)
    return _restore(_cast_back(out, image.dtype), image)


def effective_region_bbox(
    image: np.ndarray,
    *,
    tolerance: float = 0.04,
    min_fraction: float = 0.05,
) -> tuple[int, int, int, int]:
    """Bounding box ``(y0, y1, x0, x1)`` of the imaging region of an ultrasound frame.

    Uniform borders are pixels within ``tolerance`` (fraction of the dtype
    range) of the frame's border value (median of the outermost rows/cols).
    Thin burnt-in device text and calipers are removed by a morphological
    opening; after a closing that fills dark areas inside the scan, the largest
    connected component is the imaging region. Components smaller than
    ``min_fraction`` of the frame mean "no region found" and the full frame is
    returned.
    """
    cv2 = _cv2()
    gray = image.astype(np.float32)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    h, w = gray.shape
    lo, hi = _dtype_range(image.dtype)
    span = (hi - lo) if np.isfinite(hi - lo) else float(gray.max() - gray.min() or 1.0)
    frame = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    border_value = float(np.median(frame))
    content = (np.abs(gray - border_value) > tolerance * span).astype(np.uint8)
    k = max(3, (min(h, w) // 64) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    content = cv2.morphologyEx(content, cv2.MORPH_OPEN, kernel)
    close_k = max(3, (min(h, w) // 16) | 1)
    content = cv2.morphologyEx(
        content, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_k, close_k))
    )
    n, _, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=8)
    if n <= 1:
        return 0, h, 0, w
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x0, y0, bw, bh, area = (int(v) for v in stats[best])
    if area < min_fraction * h * w:
        return 0, h, 0, w
    return y0, y0 + bh, x0, x0 + bw


def crop_effective_region(
    image: np.ndarray, mask: np.ndarray | None = None, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int, int]]:
    """Crop ``image`` (and ``mask``) to :func:`effective_region_bbox`.

    Returns:
        ``(image_crop, mask_crop_or_None, (y0, y1, x0, x1))``.
    """
    y0, y1, x0, x1 = effective_region_bbox(image, **kwargs)
    cropped_mask = None if mask is None else mask[y0:y1, x0:x1]
    return image[y0:y1, x0:x1], cropped_mask, (y0, y1, x0, x1)


def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid_size: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalization (OpenCV).

    uint8 RGB images are equalized on the L channel of Lab, uint8 grayscale
    directly. Other dtypes (uint16, floats) are equalized per channel with 256
    histogram bins over the image's own min..max range and mapped back to that
    range in their dtype: OpenCV's 16-bit CLAHE uses 65536 bins, where the clip
    limit (``clip_limit * tile_pixels / bins``) falls below one count per bin
    and the result is nearly the identity; 256 bins is also scikit-image's
    default.
    """
    cv2 = _cv2()
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid_size), int(tile_grid_size)))
    if image.dtype == np.uint8:
        if image.ndim == 3 and image.shape[-1] == 3:
            lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
            lab[..., 0] = op.apply(lab[..., 0])
            return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        if image.ndim == 2:
            return op.apply(image)
        return np.stack([op.apply(np.ascontiguousarray(image[..., c])) for c in range(image.shape[-1])], axis=-1)

    def _one(channel: np.ndarray) -> np.ndarray:
        x = channel.astype(np.float64)
        lo, hi = float(x.min()), float(x.max())
        span = hi - lo or 1.0
        q = np.rint((x - lo) / span * 255.0).astype(np.uint8)
        return _cast_back(op.apply(q).astype(np.float64) / 255.0 * span + lo, image.dtype)

    if image.ndim == 2:
        return _one(image)
    return np.stack([_one(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def adaptive_contrast_enhancement(
    image: np.ndarray, window: int = 15, alpha: float = 1.0, max_gain: float = 4.0
) -> np.ndarray:
    """Adaptive contrast enhancement (local-statistics ACE).

    ``y = m + G * (x - m)`` with ``m`` the local mean over a ``window`` box and
    gain ``G = clip(alpha * global_std / local_std, 1, max_gain)``: low-contrast
    neighbourhoods are amplified most, noise in flat areas at most ``max_gain``.
    """
    cv2 = _cv2()
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd size >= 3, got {window}")
    x = image.astype(np.float32)
    mean = cv2.blur(x, (window, window), borderType=cv2.BORDER_REFLECT)
    sq = cv2.blur(x * x, (window, window), borderType=cv2.BORDER_REFLECT)
    mean, sq = _restore(mean, x), _restore(sq, x)
    local_std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    global_std = x.reshape(-1, x.shape[-1] if x.ndim == 3 else 1).std(axis=0)
    gain = np.clip(alpha * global_std / np.maximum(local_std, 1e-6), 1.0, max_gain)
    return _cast_back(mean + gain * (x - mean), image.dtype)


def denoise_speckle(
    image: np.ndarray,
    method: str = "median",
    ksize: int = 5,
    sigma_color: float | None = None,
    sigma_space: float = 3.0,
) -> np.ndarray:
    """Speckle denoising with a median (``ksize``) or bilateral filter.

    For ``bilateral``, ``sigma_color`` defaults to twice the image's noise
    level, estimated robustly from the median absolute deviation of
    neighbouring-pixel differences (so it adapts to the speckle strength).
    """
    cv2 = _cv2()
    if method == "median":
        if ksize < 3 or ksize % 2 == 0:
            raise ValueError(f"median ksize must be odd and >= 3, got {ksize}")
        if image.dtype != np.uint8 and ksize > 5:
            raise ValueError(
                f"median ksize {ksize} needs a uint8 image (OpenCV supports only 3 and 5 for {image.dtype})"
            )
        src = image
        if image.dtype not in (np.uint8, np.uint16, np.float32):
            src = image.astype(np.float32)
        out = cv2.medianBlur(np.ascontiguousarray(src), ksize)
        return _restore(_cast_back(out, image.dtype), image)
    if method == "bilateral":
        x = image.astype(np.float32)
        if sigma_color is None:
            diff = np.diff(x, axis=1).ravel()
            noise = 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / np.sqrt(2.0)
            sigma_color = max(2.0 * noise, 1e-3)
        out = cv2.bilateralFilter(x, d=-1, sigmaColor=float(sigma_color), sigmaSpace=float(sigma_space))
        return _restore(_cast_back(out, image.dtype), image)
    raise ValueError(f"speckle denoising method must be 'median' or 'bilateral', got {method!r}")


def mask_opening(mask: np.ndarray, radius: int = 1, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Morphological opening of every foreground class (elliptic element of ``radius``).

    Pixels a class loses become background (0); ignore pixels are kept.
    """
    if radius < 1:
        return mask.copy()
    cv2 = _cv2()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = mask.copy()
    for c in np.unique(mask):
        if c == 0 or c == ignore_index:
            continue
        binary = (mask == c).astype(np.uint8)
        opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
        out[(binary == 1) & (opened == 0)] = 0
    return out


def remove_small_objects(
    mask: np.ndarray, min_size: int = 64, connectivity: int = 8, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Set connected components of a foreground class smaller than ``min_size`` pixels to 0."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    cv2 = _cv2()
    out = mask.copy()
    for c in np.unique(mask):
        if c == 0 or c == ignore_index:
            continue
        binary = (mask == c).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=connectivity)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_size)
        small = small[small != 0]
        if small.size:
            out[np.isin(labels, small) & (binary == 1)] = 0
    return out


def _image_step(fn: Callable[..., np.ndarray]) -> Callable[..., tuple[np.ndarray, np.ndarray | None]]:
    def step(image, mask, **params):
        return fn(image, **params), mask

    step.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]  # typeshed: no __signature__ on functions
    step.__doc__ = fn.__doc__
    return step


def _mask_step(fn: Callable[..., np.ndarray]) -> Callable[..., tuple[np.ndarray, np.ndarray | None]]:
    def step(image, mask, **params):
        return image, (None if mask is None else fn(mask, **params))

    step.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]  # typeshed: no __signature__ on functions
    step.__doc__ = fn.__doc__
    return step


def median_filter(image: np.ndarray, size: int = 3) -> np.ndarray:
    """Median filter of odd ``size`` (shorthand for ``denoise_speckle(method="median")``)."""
    return denoise_speckle(image, method="median", ksize=size)


def bilateral_filter(image: np.ndarray, sigma_color: float | None = None, sigma_space: float = 3.0) -> np.ndarray:
    """Edge-preserving bilateral filter (shorthand for ``denoise_speckle(method="bilateral")``)."""
    return denoise_speckle(image, method="bilateral", sigma_color=sigma_color, sigma_space=sigma_space)


def _crop_step(image, mask, **params):
    image, mask, _ = crop_effective_region(image, mask, **params)
    return image, mask


_crop_step.__signature__ = inspect.signature(effective_region_bbox)  # type: ignore[attr-defined]  # as above

#: name -> ``step(image, mask, **params) -> (image, mask)``
PREPROCESSING_STEPS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray | None]]] = {
    "gaussian_lowpass": _image_step(gaussian_lowpass),
    "crop_effective_region": _crop_step,
    "clahe": _image_step(clahe),
    "adaptive_contrast_enhancement": _image_step(adaptive_contrast_enhancement),
    "denoise_speckle": _image_step(denoise_speckle),
    "median": _image_step(median_filter),
    "bilateral": _image_step(bilateral_filter),
    "mask_opening": _mask_step(mask_opening),
    "remove_small_objects": _mask_step(remove_small_objects),
}


def parse_steps(steps: Sequence[str | Mapping[str, Any]] | None) -> list[tuple[str, dict[str, Any]]]:
    """Validate a preprocessing config; return ``[(name, params), ...]``.

    Raises:
        ValueError: unknown step name or parameter.
    """
    parsed = []
    for step in steps or []:
        if isinstance(step, str):
            name, params = step, {}
        elif isinstance(step, Mapping) and "name" in step:
            params = dict(step)
            name = params.pop("name")
        else:
            raise ValueError(f"preprocessing step must be a name or a dict with 'name', got {step!r}")
        if name not in PREPROCESSING_STEPS:
            raise ValueError(f"unknown preprocessing step {name!r}; choose from {sorted(PREPROCESSING_STEPS)}")
        sig = inspect.signature(PREPROCESSING_STEPS[name])
        accepted = [p for p in list(sig.parameters)[1:] if p != "mask"]
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"preprocessing step {name!r}: unknown parameters {unknown}; accepted: {accepted}")
        parsed.append((name, params))
    return parsed


@overload
def apply_preprocessing(
    image: np.ndarray, mask: np.ndarray, steps: Sequence[str | Mapping[str, Any]] | None
) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def apply_preprocessing(
    image: np.ndarray, mask: None, steps: Sequence[str | Mapping[str, Any]] | None
) -> tuple[np.ndarray, None]: ...
def apply_preprocessing(
    image: np.ndarray, mask: np.ndarray | None, steps: Sequence[str | Mapping[str, Any]] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply the configured steps in order to ``image`` (and ``mask`` when given)."""
    for name, params in parse_steps(steps):
        image, mask = PREPROCESSING_STEPS[name](image, mask, **params)
    return image, mask


__all__ = [
    "PREPROCESSING_STEPS",
    "gaussian_lowpass",
    "effective_region_bbox",
    "crop_effective_region",
    "clahe",
    "adaptive_contrast_enhancement",
    "denoise_speckle",
    "median_filter",
    "bilateral_filter",
    "mask_opening",
    "remove_small_objects",
    "parse_steps",
    "apply_preprocessing",
]
