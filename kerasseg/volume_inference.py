"""Sliding-window inference of volume models: one implementation, in TensorFlow ops.

A volume model is trained on random ``patch_size`` patches of volumes that were
resampled to the model's spacing, normalized as whole volumes and padded with 0
up to at least the patch (:mod:`kerasseg.data.volumes`). Applied to a whole
volume at its own grid, :func:`sliding_window_probabilities` repeats those steps
and slides the patch over the result:

1. cast to float32;
2. resample (trilinear, :func:`kerasseg.data.resample.resample`) from the
   volume's spacing to the model's (skipped when the model has no spacing, the
   volume's spacing is not given, or both give the same grid);
3. normalize the whole volume (:func:`kerasseg.data.preprocess.normalize`,
   ``spatial_dims=3``);
4. pad with 0 to at least the patch, split evenly on both sides (as training);
5. windows of ``patch_size`` advancing ``round(patch * (1 - overlap))`` voxels
   per axis, the last one aligned to the far edge
   (:func:`kerasseg.predict_graph.tile_starts`), ``batch_size`` windows per
   model call; with ``tta`` each window is also predicted flipped along every
   combination of the three spatial axes (8 in all) and flipped back, and the 8
   results are averaged;
6. Gaussian importance weighting: a window's probabilities are weighted by a
   Gaussian centred on it with ``sigma = patch / 8`` per axis (nnU-Net's
   choice; voxels near a window border see less context), each axis's profile
   scaled to a maximum of 1 and floored at :data:`WEIGHT_FLOOR`, and the weighted
   sum is divided by the summed weights of every voxel;
7. crop the padding, resample the probabilities back to the volume's own grid
   (trilinear, class by class) and return float32 ``(D, H, W, K)``.

Memory. The weighted sum is kept in a **float16** accumulator on the padded
model grid: ``2 * K`` bytes per voxel instead of ``4 * K``. Every window adds
its probabilities already divided by the summed weights of each voxel (the
weights are a product of per-axis profiles and the windows a Cartesian grid,
so that total is a product of three per-axis sums, computed exactly in
float32 from 1-D vectors without any volume-sized weight map); the accumulator
therefore holds values in ``[0, 1]``, where float16 rounds to within ``2.4e-4``
(half a unit in the last place below 1) per addition: with ``n`` windows over a
voxel (at most 27 with overlap 0.5: 3 per axis) the error is at most about
``n * 5e-4`` and in practice below ``1e-3``. The peak beside the returned float32
``(D, H, W, K)`` probabilities is about: the normalized, padded volume
(``4 * C`` bytes per model-grid voxel) + the accumulator (``2 * K``) while the
windows slide, then the accumulator + the float32 class-by-class pieces of the
output that are joined into it (``4 * K`` per input-grid voxel), plus one
batch of windows through the model.

The same function runs eagerly-traced behind :class:`VolumePredictor` (``kerasseg
predict``/``evaluate`` and validation during training) and inside the SavedModel
of :mod:`kerasseg.volume_export`, so both compute the same masks. Importing this
module does not import TensorFlow.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from kerasseg.errors import InferenceError

WEIGHT_FLOOR = 1e-3
"""Smallest per-axis Gaussian weight (the border of a window still counts a little)."""

ACCUMULATOR_DTYPE = "float16"
"""The dtype of the weighted-sum accumulator on the model grid (see the module docstring)."""

FLIP_AXES = tuple(axes for n in range(1, 4) for axes in itertools.combinations((1, 2, 3), n))
"""The 7 non-empty sets of spatial axes of a ``(B, d, h, w, C)`` batch flipped by TTA (+ the identity)."""


# --------------------------------------------------------------------------- arguments
def check_patch_size(patch_size: Any) -> tuple[int, int, int]:
    """``patch_size`` as 3 positive ints ``(d, h, w)``; else :class:`InferenceError`."""
    try:
        size = tuple(int(v) for v in patch_size)
        exact = all(float(a) == b for a, b in zip(patch_size, size))
    except (TypeError, ValueError):
        size, exact = (), False
    if len(size) != 3 or min(size) < 1 or not exact:
        raise InferenceError(f"patch_size must be (depth, height, width), 3 positive ints, got {patch_size!r}")
    return size


def check_spacing(spacing: Any, *, what: str = "spacing") -> tuple[float, float, float]:
    """``spacing`` as 3 positive finite floats ``(z, y, x)`` mm; else :class:`InferenceError`."""
    try:
        values = tuple(float(v) for v in np.asarray(spacing, dtype=np.float64).reshape(-1))
        shaped = np.ndim(spacing) == 1
    except (TypeError, ValueError):
        values, shaped = (), False
    if not shaped or len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InferenceError(f"{what} must be the (z, y, x) voxel size in mm, 3 positive numbers, got {spacing!r}")
    return values


def check_overlap(overlap: Any) -> float:
    """``overlap`` as a float in ``[0, 1)``; else :class:`InferenceError`."""
    try:
        value = float(overlap)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise InferenceError(f"overlap must be in [0, 1) (the fraction of a window shared with its "
                             f"neighbour), got {overlap!r}")
    return value


def check_voxels(voxels: Any, channels: int) -> np.ndarray:
    """``voxels`` as a float32 ``(D, H, W, channels)`` array, or a clear :class:`InferenceError`.

    Accepts ``(D, H, W)`` for one-channel models and ``(D, H, W, C)``, of any
    integer or float type; refuses other ranks, another channel count, empty
    volumes and NaN or infinite values.
    """
    array = np.asarray(voxels)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InferenceError(f"volume voxels must be integers or floats, got dtype {array.dtype}")
    if array.ndim == 3 and channels == 1:
        array = array[..., np.newaxis]
    if array.ndim != 4:
        expected = "(D, H, W) or (D, H, W, 1)" if channels == 1 else f"(D, H, W, {channels})"
        raise InferenceError(f"a volume must be {expected} (axes z, y, x[, channel]) for this model, "
                             f"got shape {np.shape(voxels)}")
    if array.shape[-1] != channels:
        raise InferenceError(f"the model takes {channels} channel(s) but the volume has {array.shape[-1]} "
                             f"(shape {array.shape})")
    if min(array.shape[:3]) < 1:
        raise InferenceError(f"the volume is empty: shape {array.shape}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InferenceError(f"the volume has {bad} NaN or infinite voxel value(s); the model needs finite "
                             "intensities (fill or crop them first)")
    return array


def axis_weights(length: int) -> np.ndarray:
    """float32 ``(length,)`` Gaussian profile of one window axis: sigma ``length / 8``, max 1, floor 1e-3."""
    from kerasseg.predict_graph import GAUSSIAN_SIGMA_SCALE

    x = np.arange(length, dtype=np.float64) - (length - 1) / 2.0
    w = np.exp(-0.5 * (x / max(GAUSSIAN_SIGMA_SCALE * length, 1e-6)) ** 2)
    return np.maximum(w / w.max(), WEIGHT_FLOOR).astype(np.float32)


def gaussian_weights(patch_size: Sequence[int]) -> np.ndarray:
    """float32 ``(d, h, w)`` importance weights of one window: the product of the three axis profiles."""
    d, h, w = check_patch_size(patch_size)
    return np.einsum("i,j,k->ijk", axis_weights(d), axis_weights(h), axis_weights(w)).astype(np.float32)


# --------------------------------------------------------------------------- TensorFlow
def _coverage(length: Any, starts: Any, profile: Any) -> Any:
    """float32 ``(length,)``: the summed profile of every window (``starts``) covering each position."""
    import tensorflow as tf

    size = tf.shape(profile)[0]
    positions = tf.reshape(starts[:, tf.newaxis] + tf.range(size)[tf.newaxis], [-1])
    values = tf.tile(profile, [tf.shape(starts)[0]])
    return tf.math.unsorted_segment_sum(values, positions, length)


def _forward(model: Any, patches: Any, tta: bool) -> Any:
    """float32 ``(b, d, h, w, K)`` model probabilities of ``patches``, averaged over the 8 flips with ``tta``."""
    import tensorflow as tf

    from kerasseg.predict_graph import _call

    total = _call(model, patches)
    if not tta:
        return total
    for axes in FLIP_AXES:
        total += tf.reverse(_call(model, tf.reverse(patches, list(axes))), list(axes))
    return total / float(len(FLIP_AXES) + 1)


def sliding_window_probabilities(
    model: Any,
    volume: Any,
    spacing: Any = None,
    *,
    normalization: Mapping[str, Any],
    patch_size: Sequence[int],
    num_outputs: int,
    model_spacing: Sequence[float] | None = None,
    overlap: float = 0.5,
    tta: bool = False,
    batch_size: int = 1,
) -> Any:
    """Probabilities of ``model`` over a whole volume, on the volume's own grid (steps in the module docstring).

    Args:
        model: Keras model (called with ``training=False``) mapping float32
            ``(b, d, h, w, C)`` to ``(b, d, h, w, K)`` probabilities (any float
            dtype, e.g. under ``mixed_bfloat16``; a list output uses its first).
        volume: ``(D, H, W, C)`` tensor of any numeric dtype, at its stored grid.
        spacing: float ``(3,)`` voxel size of ``volume`` in mm ``(z, y, x)``;
            ``None``: the model's spacing (no resampling).
        normalization: the resolved normalization dict of training.
        patch_size: ``(d, h, w)`` window, the training patch size.
        num_outputs: ``K``, the model's output channels.
        model_spacing: ``(z, y, x)`` mm the model was trained at (``None``: none,
            volumes are used at their own grid).
        overlap: fraction of a window shared with its neighbour, ``[0, 1)``.
        tta: average the 8 flips of the spatial axes of every window.
        batch_size: windows per model call.

    Returns:
        float32 ``(D, H, W, K)`` tensor.
    """
    import tensorflow as tf

    from kerasseg.data.preprocess import normalize
    from kerasseg.data.resample import resample, shape_for_spacing
    from kerasseg.predict_graph import tile_starts

    pd, ph, pw = check_patch_size(patch_size)
    overlap = check_overlap(overlap)
    k = int(num_outputs)
    batch = max(1, int(batch_size))
    x = tf.cast(tf.convert_to_tensor(volume), tf.float32)
    channels = x.shape[-1]
    in_shape = tf.shape(x)[:3]
    resampled = model_spacing is not None and spacing is not None
    if resampled:
        target = shape_for_spacing(in_shape, tf.cast(spacing, tf.float32), check_spacing(model_spacing))
        x = resample(x, target, method="linear")
    x = normalize(x, dict(normalization), spatial_dims=3)
    grid = tf.shape(x)[:3]

    patch = tf.constant([pd, ph, pw], tf.int32)
    short = tf.maximum(patch - grid, 0)
    before = short // 2
    x = tf.pad(x, tf.concat([tf.stack([before, short - before], axis=1), [[0, 0]]], 0))
    padded = tf.shape(x)[:3]

    per_axis = []  # (starts, profile / coverage lookup) per axis
    for axis, size in enumerate((pd, ph, pw)):
        starts = tile_starts(padded[axis], size, overlap)
        profile = tf.constant(axis_weights(size))
        per_axis.append((starts, profile, _coverage(padded[axis], starts, profile)))
    sz, sy, sx = tf.meshgrid(per_axis[0][0], per_axis[1][0], per_axis[2][0], indexing="ij")
    corners = tf.stack([tf.reshape(sz, [-1]), tf.reshape(sy, [-1]), tf.reshape(sx, [-1])], axis=1)  # (N, 3)
    count = tf.shape(corners)[0]
    offsets = tf.stack(tf.meshgrid(tf.range(pd), tf.range(ph), tf.range(pw), indexing="ij"), axis=-1)

    def axis_weight(chunk: Any, axis: int, size: int) -> Any:
        # (b, size): this axis's profile divided by the summed profile of every window at each position
        _, profile, coverage = per_axis[axis]
        positions = chunk[:, axis : axis + 1] + tf.range(size)[tf.newaxis]
        return profile[tf.newaxis] / tf.gather(coverage, positions)

    def body(i: Any, acc: Any) -> tuple[Any, Any]:
        chunk = corners[i : i + batch]
        patches = tf.map_fn(lambda c: tf.slice(x, tf.concat([c, [0]], 0), [pd, ph, pw, -1]), chunk,
                            fn_output_signature=tf.TensorSpec([pd, ph, pw, channels], tf.float32))
        probs = _forward(model, patches, tta)
        wz, wy, wx = axis_weight(chunk, 0, pd), axis_weight(chunk, 1, ph), axis_weight(chunk, 2, pw)
        weights = wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]  # (b, pd, ph, pw)
        updates = tf.cast(probs * weights[..., tf.newaxis], ACCUMULATOR_DTYPE)
        indices = chunk[:, None, None, None, :] + offsets[tf.newaxis]  # (b, pd, ph, pw, 3)
        return i + batch, tf.tensor_scatter_nd_add(acc, indices, updates)

    acc = tf.zeros(tf.concat([padded, [k]], 0), ACCUMULATOR_DTYPE)
    _, acc = tf.while_loop(lambda i, _: i < count, body, [tf.constant(0), acc])
    lo, hi = before, before + grid
    if not resampled:
        return tf.cast(acc[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], :], tf.float32)
    # class by class: never a float32 copy of every class on the model grid
    pieces = [resample(acc[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], c : c + 1], in_shape, method="linear")
              for c in range(k)]
    return pieces[0] if k == 1 else tf.concat(pieces, axis=-1)


def probabilities_to_labels(probabilities: Any, threshold: float = 0.5) -> Any:
    """uint8 ``(D, H, W)`` class ids of float ``(D, H, W, K)``: arg-max, or ``p >= threshold`` for ``K = 1``."""
    from kerasseg.predict_graph import probabilities_to_mask

    return probabilities_to_mask(probabilities, threshold)


# --------------------------------------------------------------------------- predictor
def model_channels_and_outputs(model: Any) -> tuple[int, int]:
    """``(C, K)`` of a volume model ``(B, D, H, W, C) -> (B, D, H, W, K)``; else :class:`InferenceError`."""
    try:
        in_shape = tuple(model.inputs[0].shape)
        out_shape = tuple(model.outputs[0].shape)
    except (AttributeError, IndexError, TypeError):
        raise InferenceError(f"{type(model).__name__} is not a built functional Keras model with one volume "
                             "input (B, D, H, W, C) and one (B, D, H, W, K) output") from None
    if len(in_shape) != 5 or in_shape[-1] is None:
        raise InferenceError(f"a volume model's input must be (B, D, H, W, C) with a known C, got {in_shape}")
    if len(out_shape) != 5 or out_shape[-1] is None:
        raise InferenceError(f"a volume model's output must be (B, D, H, W, K) with a known K, got {out_shape}")
    return int(in_shape[-1]), int(out_shape[-1])


def check_patch_fits_model(model: Any, patch_size: tuple[int, int, int]) -> None:
    """Refuse a window the model cannot take (not a multiple of its stride, or not its fixed input size)."""
    from kerasseg.models import size_divisor

    fixed = tuple(model.inputs[0].shape)[1:4]
    for axis, (size, want) in enumerate(zip(patch_size, fixed)):
        if want is not None and int(want) != size:
            raise InferenceError(f"patch_size {patch_size}: the model takes inputs of {fixed} only "
                                 f"(axis {axis} is {want})")
    try:
        divisor = max(1, int(size_divisor(model)))
    except Exception:  # a graph the stride walk does not know: the model itself will complain
        return
    if any(size % divisor for size in patch_size):
        raise InferenceError(f"patch_size {patch_size} is not a multiple of the model's stride {divisor} "
                             "on every axis; use the training patch (model_info.json volume.patch_size)")


class VolumePredictor:
    """A volume model applied to whole volumes the way it was trained (one traced graph).

    ``VolumePredictor(model, normalization=..., patch_size=..., spacing=...)(voxels,
    spacing=...)`` returns float32 ``(D, H, W, K)`` probabilities on the input's
    own grid, through :func:`sliding_window_probabilities` -- the code the
    exported SavedModel (:mod:`kerasseg.volume_export`) runs too. The graph is
    traced once for any volume size.

    Args:
        model: Keras model ``(B, d, h, w, C) -> (B, d, h, w, K)`` probabilities.
        normalization: the resolved normalization dict of training (``None``:
            raw float32 voxels, as :class:`kerasseg.inference.Predictor`).
        patch_size: ``(d, h, w)`` sliding window, the training patch size.
        spacing: ``(z, y, x)`` mm the model was trained at; ``None``: volumes
            are used at their own grid.
        overlap: fraction of a window shared with its neighbour, ``[0, 1)``.
        tta: average the 8 flips of the spatial axes of every window.
        batch_size: windows per model call.

    Raises:
        InferenceError: a malformed argument or a model that is not a volume model.
    """

    def __init__(self, model: Any, *, normalization: Mapping[str, Any] | None, patch_size: Sequence[int],
                 spacing: Sequence[float] | None, overlap: float = 0.5, tta: bool = False,
                 batch_size: int = 1) -> None:
        import tensorflow as tf

        from kerasseg.data.preprocess import NormalizationError, check_normalization

        self.model = model
        self.channels, self.num_outputs = model_channels_and_outputs(model)
        self.patch_size = check_patch_size(patch_size)
        check_patch_fits_model(model, self.patch_size)
        self.spacing = None if spacing is None else check_spacing(spacing, what="the model's spacing")
        self.overlap = check_overlap(overlap)
        self.tta = bool(tta)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InferenceError(f"batch_size must be a positive int (windows per model call), got {batch_size!r}")
        self.batch_size = batch_size
        try:
            self.normalization = check_normalization(dict(normalization) if normalization else {"method": "none"})
        except NormalizationError as e:
            raise InferenceError(f"normalization: {e}") from None

        def probabilities(voxels: Any, voxel_spacing: Any) -> Any:
            return sliding_window_probabilities(
                model, voxels, voxel_spacing, normalization=self.normalization, patch_size=self.patch_size,
                num_outputs=self.num_outputs, model_spacing=self.spacing, overlap=self.overlap, tta=self.tta,
                batch_size=self.batch_size)

        signature = [tf.TensorSpec([None, None, None, self.channels], tf.float32, name="volume"),
                     tf.TensorSpec([3], tf.float32, name="spacing")]
        self._probabilities = tf.function(probabilities, input_signature=signature)
        self._labels = tf.function(lambda v, s: probabilities_to_labels(probabilities(v, s)),
                                   input_signature=signature)

    def _inputs(self, voxels: Any, spacing: Any) -> tuple[np.ndarray, np.ndarray]:
        volume = check_voxels(voxels, self.channels)
        if spacing is None:
            spacing = self.spacing or (1.0, 1.0, 1.0)
        return volume, np.asarray(check_spacing(spacing), np.float32)

    def __call__(self, voxels: Any, spacing: Sequence[float] | None = None) -> np.ndarray:
        """float32 ``(D, H, W, K)`` probabilities of ``voxels`` (``(D, H, W)`` or ``(D, H, W, C)``, any
        numeric dtype) at spacing ``spacing`` mm ``(z, y, x)`` (``None``: the model's)."""
        volume, spacing_mm = self._inputs(voxels, spacing)
        return np.asarray(self._probabilities(volume, spacing_mm), dtype=np.float32)

    def predict_labels(self, voxels: Any, spacing: Sequence[float] | None = None) -> np.ndarray:
        """uint8 ``(D, H, W)`` class ids (arg-max; ``p >= 0.5`` for a one-class sigmoid model)."""
        volume, spacing_mm = self._inputs(voxels, spacing)
        return np.asarray(self._labels(volume, spacing_mm), dtype=np.uint8)


__all__ = [
    "ACCUMULATOR_DTYPE",
    "WEIGHT_FLOOR",
    "VolumePredictor",
    "axis_weights",
    "check_voxels",
    "gaussian_weights",
    "probabilities_to_labels",
    "sliding_window_probabilities",
]
