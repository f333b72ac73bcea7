"""Augmentation: image/mask alignment, label sets, determinism, config parsing."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_helpers import blocks_example

tf = pytest.importorskip("tensorflow")

from kerasseg.data.augment import AugmentConfig, as_augment_config, augment, element_seed, gaussian_blur  # noqa: E402

GEOMETRIC = {
    "hflip": {"hflip": 1.0},
    "vflip": {"vflip": 1.0},
    "rot90": {"rot90": 1.0},
    "affine": {"affine": 1.0, "affine_rotation": 30, "affine_shear": 10, "affine_translate": 0.1,
               "affine_scale": [0.8, 1.2]},
    "elastic": {"elastic": 1.0, "elastic_sigma": 8},
    "affine+elastic": {"affine": 1.0, "elastic": 1.0},
}
INTENSITY = {
    "brightness": {"brightness": 1.0, "brightness_delta": 0.2},
    "contrast": {"contrast": 1.0, "contrast_range": [0.6, 1.5]},
    "gamma": {"gamma": 1.0, "gamma_range": [0.5, 2.0]},
    "noise": {"noise": 1.0},
    "blur": {"blur": 1.0},
}


def _run(image, mask, cfg: dict, seed: int):
    config = AugmentConfig.from_dict({"preset": "none", **cfg})
    out_image, out_mask = augment(
        tf.constant(image, tf.float32), tf.constant(mask), element_seed(seed, 0), config
    )
    return out_image.numpy()[..., 0], out_mask.numpy()


@pytest.fixture(scope="module")
def example():
    rng = np.random.default_rng(3)
    image, mask = blocks_example(rng, 64, num_classes=2, ignore_block=False)
    return image[..., None], mask


@pytest.mark.parametrize("name", list(GEOMETRIC))
def test_geometric_transforms_keep_image_and_mask_aligned(example, name):
    image, mask = example
    assert ((image[..., 0] > 128) == (mask == 1)).all()  # the mask is computable from the image
    changed = 0
    for seed in range(4):
        out_image, out_mask = _run(image, mask, GEOMETRIC[name], seed)
        valid = out_mask != 255
        assert valid.mean() > 0.5
        from_image = (out_image > 128).astype(np.uint8)
        disagreement = (from_image[valid] != out_mask[valid]).mean()
        # only interpolated boundary pixels may disagree
        assert disagreement < 0.03, (name, seed, disagreement)
        changed += int((out_mask != mask).mean() > 0.01)
        # a one-pixel misalignment would be caught: compare against a shifted mask
        shifted = np.roll(out_mask, 3, axis=1)
        assert (from_image[valid] != shifted[valid]).mean() > 2 * disagreement + 0.01
    assert changed >= 2, f"{name} with probability 1 should change the mask"


@pytest.mark.parametrize("name", list(INTENSITY))
def test_intensity_transforms_leave_the_mask_alone(example, name):
    image, mask = example
    # add texture inside each class band so every intensity map changes something
    image = image.astype(np.float32) + (np.arange(64) % 16 * 2.0)[None, :, None]
    out_image, out_mask = _run(image, mask, INTENSITY[name], seed=1)
    np.testing.assert_array_equal(out_mask, mask)
    assert out_image.dtype == np.float32
    assert not np.allclose(out_image, image[..., 0])
    if name in ("brightness", "contrast", "gamma"):
        # monotone maps: the two classes stay separable by a threshold
        assert out_image[mask == 1].min() > out_image[mask == 0].max()


@pytest.mark.parametrize("name", list(GEOMETRIC) + ["all"])
def test_masks_only_contain_class_ids_and_ignore(name):
    rng = np.random.default_rng(7)
    image, mask = blocks_example(rng, 48, num_classes=4, ignore_block=True)
    cfg = GEOMETRIC.get(name, {"preset": "full", "affine": 1.0, "elastic": 1.0})
    allowed = {0, 1, 2, 3, 255}
    for seed in range(3):
        _, out_mask = _run(image[..., None], mask, cfg, seed)
        assert set(np.unique(out_mask)) <= allowed
        if name in ("hflip", "vflip", "rot90"):
            # exact geometric transforms keep the ignore area's size
            assert (out_mask == 255).sum() == (mask == 255).sum()


def test_out_of_image_pixels_become_ignore_or_background(example):
    image, mask = example
    cfg = {"affine": 1.0, "affine_scale": [0.5, 0.5], "affine_rotation": 0, "affine_shear": 0,
           "affine_translate": 0}
    _, out_ignore = _run(image, mask, cfg, seed=0)
    # zoom out by 2: the outer ring comes from outside the image
    assert out_ignore[0, 0] == 255 and out_ignore[-1, -1] == 255
    assert 0.6 < (out_ignore == 255).mean() < 0.85
    _, out_background = _run(image, mask, {**cfg, "fill_mask": "background"}, seed=0)
    assert (out_background == 255).sum() == 0
    np.testing.assert_array_equal(out_background[out_ignore == 255], 0)


def test_same_seed_same_result_and_seeds_differ(example):
    image, mask = example
    cfg = {"preset": "full"}
    a = _run(image, mask, cfg, seed=11)
    b = _run(image, mask, cfg, seed=11)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    others = [_run(image, mask, cfg, seed=s)[0] for s in (12, 13, 14)]
    assert any(not np.array_equal(a[0], o) for o in others)


def test_elastic_displacement_is_smooth(example):
    # a smooth field moves neighbouring pixels together: a horizontal ramp stays monotone-ish
    ramp = np.tile(np.arange(64, dtype=np.float32) * 4, (64, 1))[..., None]
    mask = np.zeros((64, 64), np.uint8)
    out_image, out_mask = _run(ramp, mask, {"elastic": 1.0, "elastic_sigma": 4}, seed=5)
    inside = out_mask != 255
    assert not np.allclose(out_image, ramp[..., 0])
    dx = np.diff(out_image, axis=1)[inside[:, 1:] & inside[:, :-1]]
    assert (dx > -1e-3).mean() > 0.95  # no folding for sigma 4 on a 3x3 grid


def test_rot90_of_non_square_keeps_shape():
    image = np.arange(6 * 10, dtype=np.float32).reshape(6, 10, 1)
    mask = (image[..., 0] > 30).astype(np.uint8)
    config = AugmentConfig.from_dict({"preset": "none", "rot90": 1.0})
    fn = tf.function(lambda i, m, s: augment(i, m, s, config))
    out_image, out_mask = fn(tf.constant(image), tf.constant(mask), element_seed(0, 0))
    assert out_image.shape == (6, 10, 1)
    np.testing.assert_array_equal(out_image.numpy()[..., 0], image[::-1, ::-1, 0])
    np.testing.assert_array_equal(out_mask.numpy(), mask[::-1, ::-1])


def test_gaussian_blur_preserves_mean_and_smooths():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32, 2)).astype(np.float32)
    out = gaussian_blur(tf.constant(image), 1.5).numpy()
    assert out.shape == image.shape
    assert abs(out.mean() - image.mean()) < 0.05
    assert out.std() < 0.5 * image.std()


def test_config_from_dict_nested_and_flat_agree():
    a = AugmentConfig.from_dict({"affine": {"p": 0.7, "rotation": 20}, "elastic": {"prob": 0.2, "sigma": 5}})
    b = AugmentConfig.from_dict({"affine": 0.7, "affine_rotation": 20, "elastic": 0.2, "elastic_sigma": 5})
    assert a == b
    assert a.affine == 0.7 and a.affine_rotation == 20 and a.hflip == AugmentConfig().hflip
    assert AugmentConfig.from_dict(a.to_dict()) == a
    assert not AugmentConfig.none().enabled
    assert as_augment_config(False) is None and as_augment_config(True) == AugmentConfig()
    assert as_augment_config("full").elastic > 0


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"flip": 0.5}, "unknown key"),
        ({"hflip": 1.5}, "outside"),
        ({"gamma_range": [2.0, 1.0]}, "gamma_range"),
        ({"fill_mask": "zero"}, "fill_mask"),
        ({"preset": "heavy"}, "preset"),
    ],
)
def test_config_errors_are_clear(bad, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_dict(bad)
