"""Classical (numpy/OpenCV) preprocessing of the source papers."""

from __future__ import annotations

import numpy as np
import pytest

from kerasseg.data import classical


def _ultrasound_frame(rng):
    """A 120x160 frame: black border, a textured scan area, burnt-in 'text' in the corner."""
    frame = np.zeros((120, 160), np.uint8)
    frame[20:100, 40:140] = rng.integers(30, 220, size=(80, 100), dtype=np.uint8)
    frame[40:60, 60:80] = 0  # an anechoic (black) region inside the scan
    frame[5:8, 5:30] = 255  # device text strokes
    frame[10:13, 5:25] = 255
    frame[110:112, 150:158] = 200  # caliper mark
    return frame


def test_crop_effective_region_drops_border_and_text():
    rng = np.random.default_rng(0)
    frame = _ultrasound_frame(rng)
    mask = np.zeros_like(frame)
    mask[50:70, 90:110] = 1
    image, cropped_mask, bbox = classical.crop_effective_region(frame, mask)
    assert bbox == (20, 100, 40, 140)
    assert image.shape == (80, 100) and cropped_mask.shape == (80, 100)
    assert cropped_mask.sum() == mask.sum()  # labels inside the scan area are kept


def test_crop_effective_region_keeps_a_frame_without_border():
    rng = np.random.default_rng(1)
    frame = rng.integers(20, 230, size=(40, 50, 3), dtype=np.uint8)
    assert classical.effective_region_bbox(frame) == (0, 40, 0, 50)


def test_gaussian_lowpass_smooths_and_keeps_dtype_and_rank():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65535, size=(64, 64, 1), dtype=np.uint16)
    out = classical.gaussian_lowpass(img, sigma=2.0)
    assert out.dtype == np.uint16 and out.shape == img.shape
    assert out.astype(float).std() < 0.25 * img.astype(float).std()
    assert abs(out.astype(float).mean() - img.astype(float).mean()) < 0.01 * 65535


def test_clahe_raises_local_contrast_of_a_dull_image():
    rng = np.random.default_rng(0)
    dull = (100 + np.clip(rng.normal(5, 1.5, size=(64, 64)), 0, 10)).astype(np.uint8)  # peaked histogram
    for img in (dull, dull.astype(np.uint16) * 64, dull.astype(np.float32)):
        out = classical.clahe(img, clip_limit=4.0, tile_grid_size=4)
        assert out.dtype == img.dtype and out.shape == img.shape
        if img.dtype != np.uint8:  # other dtypes keep their range; the histogram spreads inside it
            assert out.astype(float).std() > 1.1 * img.astype(float).std()
            assert out.min() >= img.min() and out.max() <= img.max() + 1
        else:
            assert np.ptp(out.astype(float)) > 2 * np.ptp(img.astype(float))
    rgb = np.stack([dull] * 3, axis=-1)
    assert classical.clahe(rgb).shape == rgb.shape


def test_adaptive_contrast_enhancement_amplifies_faint_detail():
    img = np.full((64, 64), 120, np.uint8)
    img[30:34, 30:34] = 126  # faint detail
    img[:, :8] = 250  # strong structure elsewhere sets the global std
    out = classical.adaptive_contrast_enhancement(img, window=15, max_gain=4.0)
    assert out.dtype == np.uint8
    before = int(img[32, 32]) - int(img[20, 20])
    after = int(out[32, 32]) - int(out[20, 20])
    assert after > 2 * before


@pytest.mark.parametrize("method", ["median", "bilateral"])
def test_denoise_speckle_reduces_multiplicative_noise(method):
    rng = np.random.default_rng(0)
    clean = np.full((64, 64), 120.0)
    clean[:, 32:] = 200.0
    speckled = np.clip(clean * rng.gamma(8, 1 / 8, size=clean.shape), 0, 255).astype(np.uint8)
    out = classical.denoise_speckle(speckled, method=method)
    assert out.dtype == np.uint8
    err_before = np.abs(speckled.astype(float) - clean).mean()
    err_after = np.abs(out.astype(float) - clean).mean()
    assert err_after < 0.7 * err_before
    with pytest.raises(ValueError, match="uint8"):
        classical.denoise_speckle(speckled.astype(np.uint16), method="median", ksize=7)


def test_mask_opening_and_small_object_removal_keep_ignore():
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 1  # big object
    mask[30, 30] = 1  # single-pixel noise
    mask[32:35, 2:5] = 2  # small object of another class (9 px)
    mask[0:3, 30:40] = 255
    opened = classical.mask_opening(mask, radius=1)
    assert opened[30, 30] == 0 and opened[15, 15] == 1 and (opened == 255).sum() == 30
    cleaned = classical.remove_small_objects(mask, min_size=10)
    assert cleaned[30, 30] == 0 and (cleaned == 2).sum() == 0 and (cleaned == 1).sum() == 400
    assert (cleaned == 255).sum() == 30
    assert (classical.remove_small_objects(mask, min_size=5) == 2).sum() == 9


def test_apply_preprocessing_runs_steps_in_order_and_validates():
    rng = np.random.default_rng(0)
    frame = _ultrasound_frame(rng)
    mask = np.zeros_like(frame)
    mask[50:70, 90:110] = 1
    mask[25, 45] = 1
    steps = ["crop_effective_region", {"name": "gaussian_lowpass", "sigma": 2},
             {"name": "remove_small_objects", "min_size": 4}]
    image, out_mask = classical.apply_preprocessing(frame, mask, steps)
    assert image.shape == (80, 100) and out_mask.shape == (80, 100)
    assert out_mask.sum() == 400
    # the shorthand names used in training configs
    median, _ = classical.apply_preprocessing(frame, None, [{"name": "median", "size": 3}])
    np.testing.assert_array_equal(median, classical.denoise_speckle(frame, method="median", ksize=3))
    with pytest.raises(ValueError, match="unknown preprocessing step"):
        classical.parse_steps(["sharpen"])
    with pytest.raises(ValueError, match="unknown parameters"):
        classical.parse_steps([{"name": "clahe", "clip": 2}])
