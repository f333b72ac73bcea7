"""Sliding-window volume inference (kerasseg.volume_inference): grids, weighting, TTA, resampling, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kerasseg.errors import InferenceError
from kerasseg.volume_inference import VolumePredictor, sliding_window_probabilities

ZSCORE = {"method": "zscore", "eps": 1e-6}
# the float16 accumulator keeps probabilities within about 1e-3 of a float32 sum
ACC_TOL = 3e-3


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return ((x - x.mean()) / max(x.std(), 1e-6)).astype(np.float32)


def _pointwise_model(channels: int = 1, classes: int = 3, seed: int = 0):
    """Per-voxel (1x1x1 conv) softmax: every window gives a voxel the same probabilities."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, None, channels))
    x = keras.layers.Conv3D(6, 1, activation="tanh")(inputs)
    outputs = keras.layers.Conv3D(classes, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _context_model(*, symmetric: bool, seed: int = 0):
    """Two 3x3x3 'same' convolutions; with ``symmetric`` kernels (averaged over their 8 flips) it is
    equivariant to flips of the spatial axes."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, None, 1))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="tanh")(inputs)
    outputs = keras.layers.Conv3D(2, 3, padding="same", activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    if symmetric:
        for layer in model.layers[1:]:
            kernel, bias = layer.get_weights()
            flips = [np.flip(kernel, axes) if axes else kernel
                     for n in range(4) for axes in itertools.combinations((0, 1, 2), n)]
            layer.set_weights([np.mean(flips, axis=0), bias])
    return model


@pytest.fixture(scope="module")
def unet3d():
    import keras

    from kerasseg import models

    keras.utils.set_random_seed(0)
    return models.build("unet3d", input_shape=(None, None, None, 1), num_classes=3, base_filters=4, depth=2)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(300, 60, (13, 17, 11))).astype(np.float32)


# ----------------------------------------------------------------------------- agreement


def test_pointwise_model_matches_a_whole_volume_pass_for_odd_and_small_volumes(volume):
    model = _pointwise_model()
    predictor = VolumePredictor(model, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None)
    batched = VolumePredictor(model, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None, batch_size=3)
    for voxels in (volume, volume[:5, :6, :7], volume[:, :3, :]):
        expected = np.asarray(model(_zscore(voxels)[None, ..., None]))[0]
        got = predictor(voxels)
        assert got.shape == voxels.shape + (3,) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=ACC_TOL)
        np.testing.assert_allclose(batched(voxels), got, atol=ACC_TOL)


class _PositionModel:
    """Class-0 probability ``sigmoid(x + ramp)``, where the ramp depends on the position *inside the
    window*: the result over a volume depends on where the windows lie and how they are weighted."""

    def __init__(self, patch):
        d, h, w = patch
        zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
        self.ramp = (zz / d - 2 * yy / h + 3 * xx / w).astype(np.float32)

    def __call__(self, x, training=False):
        import tensorflow as tf

        p = tf.sigmoid(x[..., 0] + self.ramp)
        return tf.stack([p, 1 - p], axis=-1)

    def numpy(self, x):
        p = 1 / (1 + np.exp(-(x + self.ramp)))
        return np.stack([p, 1 - p], axis=-1)


def _reference(model: _PositionModel, x: np.ndarray, patch, overlap: float, *, gaussian: bool) -> np.ndarray:
    """Weighted average over windows, written out window by window in numpy."""
    def starts(length, size):
        step = max(1, round(size * (1 - overlap)))
        out = list(range(0, length - size + 1, step))
        return out if out[-1] == length - size else out + [length - size]

    def profile(n):
        g = np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (n / 8)) ** 2)
        return np.maximum(g / g.max(), 1e-3)

    weight = np.einsum("i,j,k->ijk", *(profile(n) for n in patch)) if gaussian else np.ones(patch)
    total, norm = np.zeros(x.shape + (2,)), np.zeros(x.shape)
    for z, y, w in itertools.product(*(starts(n, p) for n, p in zip(x.shape, patch))):
        box = np.s_[z:z + patch[0], y:y + patch[1], w:w + patch[2]]
        total[box] += weight[..., None] * model.numpy(x[box])
        norm[box] += weight
    return total / norm[..., None]


@pytest.mark.parametrize("overlap", [0.5, 0.25])
def test_gaussian_weighted_windows_match_a_window_by_window_reference(overlap):
    patch = (6, 8, 5)
    model = _PositionModel(patch)
    x = np.random.default_rng(1).normal(0, 1, (11, 13, 9)).astype(np.float32)
    got = np.asarray(sliding_window_probabilities(
        model, x[..., None], normalization={"method": "none"}, patch_size=patch, num_outputs=2, overlap=overlap,
        batch_size=2))
    expected = _reference(model, x, patch, overlap, gaussian=True)
    np.testing.assert_allclose(got, expected, atol=ACC_TOL)
    # the weighting matters here: uniform weights give a measurably different answer
    assert np.abs(_reference(model, x, patch, overlap, gaussian=False) - expected).max() > 10 * ACC_TOL


def test_unet3d_output_is_on_the_input_grid_at_any_shape_and_spacing(unet3d, volume):
    predictor = VolumePredictor(unet3d, normalization=ZSCORE, patch_size=(8, 12, 8), spacing=(1.5, 1.5, 1.5))
    for voxels, spacing in ((volume, (2.0, 1.0, 1.3)), (volume[:5, :6, :7], None), (volume[:3, :, :4], (0.7, 3, 1)),
                            (volume[:1, :1, :1], (1.0, 1.0, 1.0))):
        probs = predictor(voxels, spacing=spacing)
        assert probs.shape == voxels.shape + (3,) and probs.dtype == np.float32
        assert probs.min() >= 0 and probs.max() <= 1 + ACC_TOL
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=ACC_TOL)
    # the model's own spacing is the same as not giving one
    np.testing.assert_array_equal(predictor(volume, spacing=(1.5, 1.5, 1.5)), predictor(volume))


def test_resampling_to_the_model_spacing_and_back_lands_on_the_input_voxels():
    model = _pointwise_model(classes=2, seed=3)
    zz, yy, xx = np.meshgrid(np.arange(12), np.arange(20), np.arange(18), indexing="ij")
    smooth = (100 * np.sin(zz / 4.0) + 40 * np.cos(yy / 5.0) + xx).astype(np.float32)
    # 2 mm slices and 0.5 mm rows: the model grid has twice the slices and half the rows
    predictor = VolumePredictor(model, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
    got = predictor(smooth, spacing=(2.0, 0.5, 1.0))
    direct = np.asarray(model(_zscore(smooth)[None, ..., None]))[0]
    assert got.shape == direct.shape
    interior = np.s_[1:-1, 1:-1, 1:-1]
    error = np.abs(got[interior] - direct[interior]).max()
    # a grid shifted by one input slice along z would be far off
    shifted = np.abs(got[2:-1, 1:-1, 1:-1] - direct[1:-2, 1:-1, 1:-1]).max()
    assert error < 0.005 < shifted, (error, shifted)


# ----------------------------------------------------------------------------- TTA and labels


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta(volume):
    model = _context_model(symmetric=True)
    plain = VolumePredictor(model, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None)
    tta = VolumePredictor(model, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None, tta=True)
    np.testing.assert_allclose(tta(volume), plain(volume), atol=ACC_TOL)


def test_flip_tta_averages_the_eight_flips_of_each_window():
    model = _context_model(symmetric=False, seed=2)
    x = np.random.default_rng(2).normal(0, 1, (8, 8, 8)).astype(np.float32)  # exactly one window
    tta = VolumePredictor(model, normalization={"method": "none"}, patch_size=(8, 8, 8), spacing=None, tta=True)
    flips = [axes for n in range(4) for axes in itertools.combinations((0, 1, 2), n)]
    expected = np.mean([np.flip(np.asarray(model(np.flip(x, axes)[None, ..., None].copy()))[0], axes)
                        for axes in flips], axis=0)
    plain = np.asarray(model(x[None, ..., None]))[0]
    assert np.abs(expected - plain).max() > 10 * ACC_TOL  # the flips differ for this model
    np.testing.assert_allclose(tta(x), expected, atol=ACC_TOL)


def test_predict_labels_is_the_argmax_and_a_threshold_for_one_sigmoid_class(volume):
    model = _pointwise_model(classes=3, seed=4)
    predictor = VolumePredictor(model, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None)
    labels = predictor.predict_labels(volume)
    assert labels.dtype == np.uint8 and labels.shape == volume.shape
    np.testing.assert_array_equal(labels, np.argmax(predictor(volume), axis=-1))
    assert len(np.unique(labels)) > 1

    import keras

    inputs = keras.Input((None, None, None, 1))
    sigmoid = keras.Model(inputs, keras.layers.Conv3D(1, 1, activation="sigmoid")(inputs))
    one = VolumePredictor(sigmoid, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None)
    probs = one(volume)
    assert probs.shape == volume.shape + (1,)
    np.testing.assert_array_equal(one.predict_labels(volume), (probs[..., 0] >= 0.5).astype(np.uint8))


def test_integer_voxels_give_the_same_result_as_their_float_values():
    model = _pointwise_model(seed=5)
    predictor = VolumePredictor(model, normalization={"method": "window", "center": 40, "width": 400},
                                patch_size=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
    ct = np.random.default_rng(5).integers(-1000, 1500, (9, 10, 11)).astype(np.int16)
    np.testing.assert_array_equal(predictor(ct, spacing=(2.5, 0.8, 0.8)),
                                  predictor(ct.astype(np.float32), spacing=(2.5, 0.8, 0.8)))
    u8 = np.random.default_rng(6).integers(0, 255, (9, 10, 11, 1)).astype(np.uint8)
    np.testing.assert_array_equal(predictor(u8), predictor(u8.astype(np.float32)))


def test_a_mixed_bfloat16_model_gives_float32_probabilities(volume):
    import keras

    reference = _pointwise_model(seed=6)
    inputs = keras.Input((None, None, None, 1))
    x = keras.layers.Conv3D(6, 1, activation="tanh", dtype="mixed_bfloat16")(inputs)
    outputs = keras.layers.Conv3D(3, 1, activation="softmax", dtype="mixed_bfloat16")(x)
    mixed = keras.Model(inputs, outputs)
    mixed.set_weights(reference.get_weights())
    assert mixed(np.zeros((1, 2, 2, 2, 1), np.float32)).dtype == "bfloat16"
    got = VolumePredictor(mixed, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None)(volume)
    want = VolumePredictor(reference, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None)(volume)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=0.03)


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def pointwise_predictor():
    return VolumePredictor(_pointwise_model(), normalization=ZSCORE, patch_size=(8, 8, 8), spacing=(1, 1, 1))


@pytest.mark.parametrize("voxels, spacing, message", [
    (np.zeros((5, 6)), None, "shape"),
    (np.zeros((2, 5, 6, 1, 1)), None, "shape"),
    (np.zeros((5, 6, 7, 2)), None, "2"),
    (np.zeros((0, 6, 7)), None, "empty"),
    (np.full((5, 6, 7), np.nan), None, "NaN"),
    (np.full((5, 6, 7), np.inf, np.float32), None, "infinite"),
    (np.zeros((5, 6, 7), bool), None, "dtype"),
    (np.zeros((5, 6, 7)), (1.0, 1.0), "3 positive"),
    (np.zeros((5, 6, 7)), (1.0, 0.0, 1.0), "3 positive"),
    (np.zeros((5, 6, 7)), (1.0, -1.0, 1.0), "3 positive"),
    (np.zeros((5, 6, 7)), (1.0, float("nan"), 1.0), "3 positive"),
    (np.zeros((5, 6, 7)), "1mm", "3 positive"),
])
def test_bad_input_is_an_inference_error(pointwise_predictor, voxels, spacing, message):
    with pytest.raises(InferenceError, match=message):
        pointwise_predictor(voxels, spacing=spacing)
    with pytest.raises(InferenceError):
        pointwise_predictor.predict_labels(voxels, spacing=spacing)


def test_bad_arguments_are_inference_errors(unet3d):
    model = _pointwise_model()
    for kwargs, message in (({"patch_size": (8, 8)}, "patch_size"), ({"patch_size": (8, 0, 8)}, "patch_size"),
                            ({"patch_size": (8, 8.5, 8)}, "patch_size"), ({"overlap": 1.0}, "overlap"),
                            ({"overlap": -0.1}, "overlap"), ({"spacing": (1, 1)}, "spacing"),
                            ({"batch_size": 0}, "batch_size"),
                            ({"normalization": {"method": "zscores"}}, "normalization")):
        args = {"normalization": ZSCORE, "patch_size": (8, 8, 8), "spacing": None, **kwargs}
        with pytest.raises(InferenceError, match=message):
            VolumePredictor(model, **args)
    with pytest.raises(InferenceError, match="stride 4"):
        VolumePredictor(unet3d, normalization=ZSCORE, patch_size=(8, 10, 8), spacing=None)
    import keras

    inputs = keras.Input((None, None, 1))
    flat = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    with pytest.raises(InferenceError, match=r"\(B, D, H, W, C\)"):
        VolumePredictor(flat, normalization=ZSCORE, patch_size=(8, 8, 8), spacing=None)
