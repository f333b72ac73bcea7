"""Overlay PNGs of converted examples, to look at before training."""

from __future__ import annotations

import numpy as np

from kerasseg.schema import IGNORE_INDEX

IGNORE_COLOUR = (128, 128, 128)


def label_colours(num: int = 256) -> np.ndarray:
    """The PASCAL VOC colour table (class id -> RGB), ``(num, 3)`` uint8."""
    colours = np.zeros((num, 3), dtype=np.uint8)
    for i in range(num):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    return colours


_COLOURS = label_colours()


def display_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` uint8/uint16 image -> ``(H, W, 3)`` uint8 for display (16-bit is min-max scaled)."""
    arr = pixels
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = ((arr.astype(np.float32) - lo) * scale).round().astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def overlay(pixels: np.ndarray, mask: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over the image where ``mask != 0``; ignore pixels in grey.

    Args:
        pixels: ``(H, W, C)`` image.
        mask: ``(H, W)`` uint8 class ids, 255 = ignore.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    base = display_rgb(pixels).astype(np.float32)
    colours = _COLOURS[mask].astype(np.float32)
    colours[mask == IGNORE_INDEX] = IGNORE_COLOUR
    labelled = (mask != 0)[:, :, None]
    out = np.where(labelled, (1 - alpha) * base + alpha * colours, base)
    return out.round().clip(0, 255).astype(np.uint8)


__all__ = ["display_rgb", "label_colours", "overlay"]
