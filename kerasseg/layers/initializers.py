"""Initializers used by the model zoo."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="kerasseg")
class BilinearKernel(keras.initializers.Initializer):
    """Bilinear-interpolation kernel for a ``Conv2DTranspose`` (FCN up-sampling).

    For a kernel of shape ``(k, k, out_channels, in_channels)`` channel ``c`` is
    up-sampled bilinearly into channel ``c`` (other pairs are zero), as in Long et
    al. (2015). With ``k = 2 * factor`` and stride ``factor`` this is exact
    bilinear up-sampling (away from the border).
    """

    def __call__(self, shape: tuple, dtype: Any = None) -> Any:
        if len(shape) != 4:
            raise ValueError(f"BilinearKernel expects a 4-D kernel shape, got {shape}")
        kh, kw, out_c, in_c = (int(s) for s in shape)
        weights = np.zeros((kh, kw, out_c, in_c), dtype="float32")
        filt = np.outer(_bilinear_1d(kh), _bilinear_1d(kw))
        for c in range(min(out_c, in_c)):
            weights[:, :, c, c] = filt
        return keras.ops.convert_to_tensor(weights, dtype=dtype or "float32")

    def get_config(self) -> dict[str, Any]:
        return {}


def _bilinear_1d(size: int) -> np.ndarray:
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1.0 - np.abs(np.arange(size) - center) / factor
