"""The image the appearance (bilateral) kernel sees: uint8, ``(H, W, C)``.

pydensecrf's appearance kernel measures intensity differences in uint8 grey
levels (``bilateral_srgb`` is in those units), so every image is brought to
uint8 first:

* uint8 images (grey or RGB) are used as they are (unless a window is given);
* 16-bit, other integer and float images are *windowed*: intensities in
  ``[low, high]`` map linearly to ``0..255`` (rounded), values outside are
  clipped. By default ``low``/``high`` are the 0.5th and 99.5th percentiles of
  the image (all channels together, so colours keep their balance; nearest
  rank, as the serving graph computes them); a
  ``(center, width)`` pair or ``{"center": c, "width": w}`` gives a fixed
  window (``low = c - w/2``, ``high = c + w/2``), as for CT, and
  ``{"percentiles": [lo, hi]}`` other percentiles;
* boolean images become 0/255.

Grayscale stays a single channel: the appearance feature is then
``(y/sxy, x/sxy, I/srgb)``, exactly the paper's ``|I_i - I_j|`` on the one
intensity there is. (Replicating grey into three equal channels, as is often
done to satisfy ``addPairwiseBilateral``, silently shrinks the effective
``srgb`` by ``sqrt(3)`` and makes the permutohedral lattice 5-D instead of 3-D,
which is slower.)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kerasseg.errors import CRFConfigError, CRFInputError
from kerasseg.postprocess.params import WindowSpec, validate_window

DEFAULT_PERCENTILES = (0.5, 99.5)


def window_bounds(image: np.ndarray, window: WindowSpec = None) -> tuple[float, float]:
    """Return ``(low, high)`` intensity bounds that map to 0 and 255."""
    try:
        validate_window(window)
    except CRFConfigError as e:
        raise CRFInputError(str(e)) from None
    if isinstance(window, Mapping) and "center" in window:
        c, w = float(window["center"]), float(window["width"])
        return c - w / 2.0, c + w / 2.0
    if window is not None and not isinstance(window, Mapping):
        c, w = float(window[0]), float(window[1])
        return c - w / 2.0, c + w / 2.0
    pct = DEFAULT_PERCENTILES if window is None else tuple(window["percentiles"])
    lo, hi = np.percentile(image, pct, method="nearest")  # as the serving graph (percentile_bounds)
    return float(lo), float(hi)


def appearance_image(image: Any, window: WindowSpec = None, *, source: str = "image") -> np.ndarray:
    """Convert ``image`` to the uint8 ``(H, W, C)`` array used by the appearance kernel.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array of any int, float or bool dtype.
        window: ``None`` (uint8 as is; others: 0.5-99.5 percentile window), a
            ``(center, width)`` pair, ``{"center", "width"}`` or ``{"percentiles": [lo, hi]}``.
        source: name used in error messages (e.g. the file name).

    Returns:
        C-contiguous uint8 array ``(H, W, C)`` (``C == 1`` for grayscale).

    Raises:
        CRFInputError: wrong rank, empty image, NaN/inf pixels or a bad window.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise CRFInputError(f"{source}: image must be (H, W) or (H, W, C) and non-empty, got shape {np.shape(image)}")
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * np.uint8(255))
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise CRFInputError(f"{source}: image dtype {arr.dtype} is not numeric")
    if arr.dtype == np.uint8 and window is None:
        # pydensecrf's Cython signature needs a writable buffer (it never writes).
        return arr if arr.flags.c_contiguous and arr.flags.writeable else np.array(arr, order="C")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise CRFInputError(f"{source}: image contains NaN or infinite values")
    lo, hi = window_bounds(arr, window)
    if hi <= lo:  # a constant image: no appearance information at all
        return np.zeros(arr.shape, np.uint8)
    scaled = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.ascontiguousarray(np.rint(scaled).astype(np.uint8))
