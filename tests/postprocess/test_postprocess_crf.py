"""Behaviour of dense_crf on synthetic images: classes, binary maps, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from kerasseg.postprocess import (
    CRFConfigError,
    CRFInputError,
    appearance_image,
    dense_crf,
)


def _scene(k: int = 2, size: int = 64, noise: float = 0.35, seed: int = 0):
    """A grey image of k vertical bands, the true labels, and noisy softmax output."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(size)[None, :] * k // size).repeat(size, axis=0)
    image = (40 + truth * (180 // max(1, k - 1))).astype(np.uint8)
    logits = np.eye(k)[truth] * 1.0 + rng.normal(0, noise * 3, (size, size, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return image, truth, probs.astype(np.float32)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_crf_cleans_noisy_prediction_any_number_of_classes(k):
    image, truth, probs = _scene(k)
    before = (probs.argmax(axis=2) == truth).mean()
    refined, labels = dense_crf(image, probs)
    after = (labels == truth).mean()
    assert before < 0.95 and after > 0.99, (before, after)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    assert labels.shape == truth.shape and labels.dtype == np.uint8
    np.testing.assert_allclose(refined.sum(axis=2), 1.0, atol=1e-4)
    np.testing.assert_array_equal(labels, refined.argmax(axis=2))


def test_binary_sigmoid_is_expanded_to_two_classes():
    image, _, probs = _scene(2)
    fg = probs[:, :, 1:]
    two = np.concatenate([1 - fg, fg], axis=2)
    refined_1, labels_1 = dense_crf(image, fg)
    refined_2, labels_2 = dense_crf(image, two)
    assert refined_1.shape == fg.shape  # the sigmoid layout is kept
    np.testing.assert_allclose(refined_1[:, :, 0], refined_2[:, :, 1], atol=1e-6)
    np.testing.assert_array_equal(labels_1, labels_2)
    _, labels_hw = dense_crf(image, fg[:, :, 0])  # (H, W) foreground map
    np.testing.assert_array_equal(labels_hw, labels_1)


def test_no_pairwise_terms_returns_the_input_distribution():
    image, _, probs = _scene(3)
    refined, _ = dense_crf(image, probs, gaussian_compat=0, bilateral_compat=0)
    np.testing.assert_allclose(refined, probs, atol=1e-5)
    refined0, _ = dense_crf(image, probs, iterations=0)
    np.testing.assert_allclose(refined0, probs, atol=1e-5)


def test_generic_and_default_paths_agree_on_grayscale_and_rgb():
    image, _, probs = _scene(3, noise=0.5)
    for img in (image, np.repeat(image[:, :, None], 3, axis=2)):
        _, a = dense_crf(img, probs)
        _, b = dense_crf(img, probs, use_generic_path=True)
        assert (a == b).mean() > 0.99


def test_grayscale_layouts_and_16_bit_windowing_are_equivalent():
    image, _, probs = _scene(2, noise=0.5)
    _, ref = dense_crf(image, probs)
    _, chan = dense_crf(image[:, :, None], probs)
    np.testing.assert_array_equal(ref, chan)
    wide = image.astype(np.uint16) * 257  # same picture in 16 bit
    _, l16 = dense_crf(wide, probs, window=(65535 / 2, 65535))
    np.testing.assert_array_equal(ref, l16)


def test_appearance_kernel_uses_intensity():
    """An ambiguous region takes the class of the side whose intensity it shares."""
    size = 48
    image = np.zeros((size, size), np.uint8)
    image[:, size // 2:] = 200
    probs = np.full((size, size, 2), 0.5, np.float32)
    probs[:, :8] = [0.9, 0.1]
    probs[:, -8:] = [0.1, 0.9]
    _, labels = dense_crf(image, probs, bilateral_compat=20, gaussian_compat=1)
    assert (labels[:, : size // 2] == 0).all() and (labels[:, size // 2:] == 1).all()


def test_appearance_image_windows():
    u16 = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    auto = appearance_image(u16)
    assert auto.dtype == np.uint8 and auto.shape == (64, 64, 1)
    assert auto.min() == 0 and auto.max() == 255
    fixed = appearance_image(u16, {"center": 2000, "width": 1000})
    assert fixed[0, 0, 0] == 0 and fixed[-1, -1, 0] == 255
    assert fixed[32, 0, 0] == np.rint((float(u16[32, 0]) - 1500) * 255 / 1000)
    rgb_float = np.random.default_rng(0).random((8, 8, 3))
    assert appearance_image(rgb_float).shape == (8, 8, 3)
    assert (appearance_image(np.ones((4, 4), np.float32)) == 0).all()  # constant image
    assert appearance_image(np.eye(3, dtype=bool)).max() == 255


@pytest.mark.parametrize(
    "probs, message",
    [
        (np.full((10, 12, 2), 0.5, np.float32), "probabilities are 10x12"),
        (np.full((12, 10, 2, 1), 0.5, np.float32), "must be (H, W, K)"),
        (np.full((12, 10, 2), 0.6, np.float32), "sum to 1"),
        (np.full((12, 10, 2), 3.0, np.float32), "logits?"),
        (np.full((12, 10, 2), 1, np.int64), "floating point"),
    ],
)
def test_bad_probabilities_raise_clear_errors(probs, message):
    with pytest.raises(CRFInputError, match="case.png") as e:
        dense_crf(np.zeros((12, 10), np.uint8), probs, source="case.png")
    assert message in str(e.value)


def test_nan_probabilities_and_images_are_rejected():
    probs = np.full((6, 6, 2), 0.5, np.float32)
    probs[2, 3, 0] = np.nan
    with pytest.raises(CRFInputError, match="NaN"):
        dense_crf(np.zeros((6, 6), np.uint8), probs)
    image = np.zeros((6, 6), np.float32)
    image[0, 0] = np.inf
    with pytest.raises(CRFInputError, match="NaN or infinite"):
        dense_crf(image, np.full((6, 6, 2), 0.5, np.float32))


def test_bad_parameters_raise_config_errors():
    image, _, probs = _scene(2, size=8)
    with pytest.raises(CRFConfigError, match="bilateral_srgb"):
        dense_crf(image, probs, bilateral_srgb=0)
    with pytest.raises(CRFConfigError, match="kernel"):
        dense_crf(image, probs, kernel="diagonal")
    with pytest.raises(CRFInputError, match="3 values but the image has 1"):
        dense_crf(image, probs, bilateral_srgb=(10, 10, 10))


def test_the_serving_graph_gives_the_crf_the_same_16_bit_image_as_numpy():
    """kerasseg predict (appearance_image) and the SavedModel (serving._crf_image) window
    16-bit images alike: one 0.5-99.5 percentile window over all channels of the image."""
    tf = pytest.importorskip("tensorflow")
    from kerasseg.postprocess import appearance_image
    from kerasseg.serving import _crf_image

    rng = np.random.default_rng(3)
    rgb = np.stack([rng.integers(0, 4000, (48, 64)), rng.integers(1000, 60000, (48, 64)),
                    rng.integers(200, 900, (48, 64))], -1).astype(np.uint16)  # channels of very different range
    grey = rng.integers(100, 30000, (40, 30, 1)).astype(np.uint16)
    flat = np.full((8, 8, 3), 1234, np.uint16)
    for image in (rgb, grey, flat):
        ours = _crf_image(tf.constant(image[None]))[0].numpy()
        reference = appearance_image(image)
        assert ours.shape == reference.shape
        assert np.array_equal(ours.astype(np.uint8), reference), np.abs(ours - reference).max()
    # one window for the three channels: the narrow third channel stays dark instead of spanning 0..255
    assert appearance_image(rgb)[..., 2].max() < 10
