"""How a trained model is applied to a whole image: one implementation, in TensorFlow ops.

A model sees images in training at one scale and size (``data.geometry``);
it must see them the same way when it is validated, evaluated, used by
``kerasseg predict`` or the Python API, and served from a SavedModel. This
module is that one way. :class:`InferenceGeometry` records it (in
``model_info.json`` and the SavedModel's model card) and
:func:`predict_normalized` applies it with TensorFlow ops, so the same code runs
eagerly behind :func:`kerasseg.inference.predict_probabilities` and inside the
exported serving graph.

Modes (``InferenceGeometry.mode``):

``resize``
    The model was trained on whole images resized to ``size`` (``data.geometry:
    resize``): the normalized image is resized bilinearly to ``size``, the model
    runs once, and the probabilities are resized bilinearly back to the image's
    own height and width.
``tile``
    The model was trained on ``size`` patches at the images' own scale
    (``random_crop`` / ``center_crop``): overlapping ``size`` tiles cover the
    image (``overlap`` of a tile shared with its neighbour, the last row and
    column aligned to the far edge), each tile's probabilities are weighted by
    a Gaussian centred on the tile (border pixels, which see less context, count
    less) and the weighted sum is divided by the summed weights. An image
    smaller than a tile is mirror-padded up to the tile first.
``whole``
    The model was trained on whole images at their own scale (``pad``): the
    image is mirror-padded at the bottom/right to a multiple of the network's
    stride, the model runs once, and the output is cropped back.

Normalization happens before the geometry, on the whole stored image (the
training pipeline does the same), so per-image statistics never depend on the
tile or crop. Flip test-time augmentation (``tta``) averages the
probabilities of the image and its horizontal, vertical and double flips.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

MODES = ("resize", "tile", "whole")
DEFAULT_OVERLAP = 0.5
GAUSSIAN_SIGMA_SCALE = 0.125
TILE_BATCH = 4

# data.geometry of a training config -> the inference mode that reproduces it
_TRAINING_TO_MODE = {"resize": "resize", "random_crop": "tile", "center_crop": "tile", "pad": "whole"}


@dataclasses.dataclass(frozen=True)
class InferenceGeometry:
    """How a model is applied to a whole image (see the module docstring).

    Attributes:
        mode: ``"resize"``, ``"tile"`` or ``"whole"``.
        size: ``(height, width)`` the model was trained at (``resize`` and
            ``tile``); ``None`` for ``whole``.
        overlap: fraction of a tile shared with its neighbour (``tile``), in ``[0, 1)``.
    """

    mode: str = "whole"
    size: tuple[int, ...] | None = None  # (height, width): __post_init__ refuses any other length
    overlap: float = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"geometry mode must be one of {MODES}, got {self.mode!r}")
        if self.mode in ("resize", "tile"):
            if self.size is None:
                raise ValueError(f"geometry mode {self.mode!r} needs a size (height, width)")
            size = tuple(int(v) for v in self.size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"geometry size must be (height, width) of positive ints, got {self.size!r}")
            object.__setattr__(self, "size", size)
        else:
            object.__setattr__(self, "size", None)
        overlap = float(self.overlap)
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {self.overlap!r}")
        object.__setattr__(self, "overlap", overlap)

    @classmethod
    def from_training(cls, geometry: str, image_size: Sequence[int] | None) -> "InferenceGeometry":
        """The geometry that reproduces ``data.geometry`` / ``data.image_size`` of a training run."""
        if geometry not in _TRAINING_TO_MODE:
            raise ValueError(f"unknown training geometry {geometry!r}; one of {sorted(_TRAINING_TO_MODE)}")
        mode = _TRAINING_TO_MODE[geometry]
        return cls(mode=mode, size=tuple(image_size) if mode != "whole" and image_size else None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InferenceGeometry":
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        unknown = set(data) - {"mode", "size", "overlap"}
        if unknown:
            raise ValueError(f"unknown geometry key(s) {sorted(unknown)}")
        size = data.get("size")
        return cls(mode=str(data.get("mode", "whole")), size=tuple(size) if size else None,
                   overlap=float(data.get("overlap", DEFAULT_OVERLAP)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form, as stored in ``model_info.json``."""
        return {"mode": self.mode, "size": list(self.size) if self.size else None, "overlap": self.overlap}

    def describe(self) -> str:
        """One line for logs and model cards."""
        if self.mode == "resize":
            assert self.size is not None  # __post_init__ sizes "resize" and "tile"
            return f"resize to {self.size[0]}x{self.size[1]} and back"
        if self.mode == "tile":
            assert self.size is not None
            return f"{self.size[0]}x{self.size[1]} tiles at native scale, overlap {self.overlap:g}, Gaussian-weighted"
        return "whole image at native scale, padded to the network stride"

    def with_tile(self, tile: int | Sequence[int] | None, overlap: float | None = None) -> "InferenceGeometry":
        """A copy switched to ``tile`` mode with ``tile`` (``0`` or ``None``: ``whole``)."""
        if not tile:
            return InferenceGeometry(mode="whole")
        size = (int(tile), int(tile)) if isinstance(tile, int) else tuple(int(v) for v in tile)
        return InferenceGeometry(mode="tile", size=size, overlap=self.overlap if overlap is None else overlap)


# --------------------------------------------------------------------------- TensorFlow


def _round_up(value: Any, divisor: int) -> Any:
    return (value + divisor - 1) // divisor * divisor


def _symmetric_indices(size: Any, target: Any) -> Any:
    """Indices ``0..target-1`` into an axis of length ``size``, mirrored with edge repeat.

    numpy's ``mode="symmetric"``, also when the padding exceeds the axis length
    (where ``tf.pad(mode="SYMMETRIC")`` fails).
    """
    import tensorflow as tf

    period = 2 * size
    j = tf.math.floormod(tf.range(target), period)
    return tf.where(j < size, j, period - 1 - j)


def pad_symmetric(x: Any, height: Any, width: Any) -> Any:
    """Mirror-pad ``(B, H, W, C)`` at the bottom/right to ``(B, height, width, C)``."""
    import tensorflow as tf

    shape = tf.shape(x)
    x = tf.gather(x, _symmetric_indices(shape[1], height), axis=1)
    return tf.gather(x, _symmetric_indices(shape[2], width), axis=2)


def tile_starts(length: Any, tile: int, overlap: float) -> Any:
    """int32 start offsets of tiles of ``tile`` covering ``[0, length)`` (``length >= tile``).

    Tiles advance by ``round(tile * (1 - overlap))``; the last one is aligned to
    the far edge. ``length == tile`` gives ``[0]``.
    """
    import tensorflow as tf

    step = max(1, int(round(tile * (1.0 - overlap))))
    room = tf.maximum(length - tile, 0)
    count = (room + step - 1) // step + 1
    return tf.minimum(tf.range(count) * step, room)


def gaussian_weights(height: int, width: int, sigma_scale: float = GAUSSIAN_SIGMA_SCALE) -> Any:
    """float32 ``(height, width)`` Gaussian centred on a tile, max 1, floored at 1e-3."""
    import numpy as np

    def axis(n: int) -> Any:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        return np.exp(-0.5 * (x / max(sigma_scale * n, 1e-6)) ** 2)

    w = np.outer(axis(height), axis(width))
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def _call(model: Any, x: Any) -> Any:
    import tensorflow as tf

    out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return tf.cast(out, tf.float32)


def _whole(model: Any, x: Any, divisor: int) -> Any:
    import tensorflow as tf

    shape = tf.shape(x)
    height, width = shape[1], shape[2]
    if divisor > 1:
        x = pad_symmetric(x, _round_up(height, divisor), _round_up(width, divisor))
    return _call(model, x)[:, :height, :width, :]


def _resized(model: Any, x: Any, size: Sequence[int], divisor: int) -> Any:
    import tensorflow as tf

    shape = tf.shape(x)
    small = tf.image.resize(x, size, method="bilinear")
    probs = _whole(model, small, divisor)
    return tf.image.resize(probs, shape[1:3], method="bilinear")


def _tiled_one(model: Any, image: Any, size: Sequence[int], overlap: float, divisor: int,
               num_outputs: int) -> Any:
    """Sliding-window probabilities of one normalized ``(H, W, C)`` image."""
    import tensorflow as tf

    th, tw = _round_up(size[0], divisor), _round_up(size[1], divisor)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    ph, pw = tf.maximum(height, th), tf.maximum(width, tw)
    padded = pad_symmetric(image[tf.newaxis], ph, pw)[0]
    ys, xs = tile_starts(ph, th, overlap), tile_starts(pw, tw, overlap)
    grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")
    starts = tf.stack([tf.reshape(grid_y, [-1]), tf.reshape(grid_x, [-1])], axis=1)  # (N, 2)
    n = tf.shape(starts)[0]
    weights = tf.constant(gaussian_weights(th, tw))[:, :, tf.newaxis]
    offsets = tf.stack(tf.meshgrid(tf.range(th), tf.range(tw), indexing="ij"), axis=-1)  # (th, tw, 2)
    k = num_outputs

    def body(i: Any, acc: Any) -> tuple[Any, Any]:
        chunk = starts[i : i + TILE_BATCH]
        tiles = tf.map_fn(
            lambda s: tf.slice(padded, [s[0], s[1], 0], [th, tw, -1]), chunk,
            fn_output_signature=tf.TensorSpec([th, tw, image.shape[-1]], padded.dtype),
        )
        probs = _call(model, tiles)  # (b, th, tw, K)
        updates = tf.concat([probs * weights, tf.broadcast_to(weights, tf.shape(probs[..., :1]))], axis=-1)
        indices = chunk[:, tf.newaxis, tf.newaxis, :] + offsets[tf.newaxis]  # (b, th, tw, 2)
        return i + TILE_BATCH, tf.tensor_scatter_nd_add(acc, indices, updates)

    acc = tf.zeros(tf.stack([ph, pw, k + 1]), tf.float32)
    _, acc = tf.while_loop(lambda i, _: i < n, body, [tf.constant(0), acc])
    probs = acc[..., :k] / acc[..., k:]
    return probs[:height, :width, :]


def predict_normalized(
    model: Any,
    x: Any,
    geometry: InferenceGeometry,
    *,
    size_divisor: int = 1,
    num_outputs: int | None = None,
    tta: bool = False,
) -> Any:
    """Model probabilities for a normalized batch, at the batch's own resolution.

    Args:
        model: Keras model (or any callable) mapping float32 ``(B, h, w, C)`` to
            ``(B, h, w, K)`` probabilities.
        x: float32 ``(B, H, W, C)``, already normalized.
        geometry: how the model is applied (:class:`InferenceGeometry`).
        size_divisor: the network's stride multiple (``kerasseg.models.size_divisor``).
        num_outputs: ``K`` (needed by ``tile``; default: the model's output channels).
        tta: average the four flips.

    Returns:
        float32 ``(B, H, W, K)``.
    """
    import tensorflow as tf

    divisor = max(1, int(size_divisor))
    if geometry.mode == "tile" and num_outputs is None:
        num_outputs = int(model.outputs[0].shape[-1])
    size, k = geometry.size, num_outputs

    def once(batch: Any) -> Any:
        if geometry.mode == "resize":
            assert size is not None  # InferenceGeometry sizes "resize" and "tile"
            return _resized(model, batch, size, divisor)
        if geometry.mode == "tile":
            assert size is not None and k is not None  # k: set above
            return tf.map_fn(
                lambda one: _tiled_one(model, one, size, geometry.overlap, divisor, k),
                batch, fn_output_signature=tf.TensorSpec([None, None, k], tf.float32),
            )
        return _whole(model, batch, divisor)

    x = tf.convert_to_tensor(x, tf.float32)
    if not tta:
        return once(x)
    total = once(x)
    for axes in ([2], [1], [1, 2]):
        total += tf.reverse(once(tf.reverse(x, axes)), axes)
    return total / 4.0


def probabilities_to_mask(probabilities: Any, threshold: float = 0.5) -> Any:
    """uint8 class ids from ``(..., K)`` probabilities: arg-max, or ``p >= threshold`` for ``K = 1``."""
    import tensorflow as tf

    if probabilities.shape[-1] == 1:
        return tf.cast(probabilities[..., 0] >= threshold, tf.uint8)
    return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)


__all__ = [
    "MODES",
    "InferenceGeometry",
    "pad_symmetric",
    "tile_starts",
    "gaussian_weights",
    "predict_normalized",
    "probabilities_to_mask",
]
