"""3D augmentation (kerasseg.data.augment3d): exact permutations, identities, label safety, config checks."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kerasseg.data.augment3d import (  # noqa: E402
    RECOMMENDED_AUGMENTATION_3D,
    Augment3DConfig,
    augment_patch,
    augment_volume,
)

NONE = {"preset": "none"}


def _config(**kwargs) -> Augment3DConfig:
    return Augment3DConfig.from_dict({**NONE, **kwargs})


@pytest.fixture(scope="module")
def patch():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 8, 8, 2)).astype(np.float32)
    labels = rng.integers(0, 3, size=(6, 8, 8)).astype(np.uint8)
    labels[0, :2, :2] = 255
    return image, labels


def _run(image, labels, config, seed=(1, 2)):
    out_image, out_labels = augment_volume(tf.constant(image), tf.constant(labels), config=config,
                                           seed=tf.constant(seed, tf.int32))
    return out_image.numpy(), out_labels.numpy()


def test_config_from_dict():
    assert Augment3DConfig.from_dict(RECOMMENDED_AUGMENTATION_3D) == Augment3DConfig()
    nested = Augment3DConfig.from_dict({"rotation": {"p": 0.3, "max": 20}, "scale": {"range": [0.9, 1.1]}})
    assert nested.rotation == 0.3 and nested.rotation_max == 20.0 and nested.scale_range == (0.9, 1.1)
    assert not Augment3DConfig.from_dict(NONE).enabled
    assert Augment3DConfig.from_dict({"preset": "none", "gamma": 0.5}).to_dict()["gamma"] == 0.5
    with pytest.raises(ValueError, match="did you mean 'rotation_max'"):
        Augment3DConfig.from_dict({"rotation_maxx": 10})
    with pytest.raises(ValueError, match="2D augmentation key; for volumes use .flip_x."):
        Augment3DConfig.from_dict({"hflip": 0.5})
    with pytest.raises(ValueError, match=r"flip_z=1.5 is outside \[0, 1\]"):
        Augment3DConfig.from_dict({"flip_z": 1.5})
    with pytest.raises(ValueError, match="scale_range"):
        Augment3DConfig.from_dict({"scale_range": [1.2, 0.8]})
    with pytest.raises(ValueError, match="elastic_grid"):
        Augment3DConfig.from_dict({"elastic_grid": 1})


def test_flips_are_exact_permutations(patch):
    image, labels = patch
    for name, axis in (("flip_z", 0), ("flip_y", 1), ("flip_x", 2)):
        out_image, out_labels = _run(image, labels, _config(**{name: 1.0}))
        np.testing.assert_array_equal(out_image, np.flip(image, axis))
        np.testing.assert_array_equal(out_labels, np.flip(labels, axis))
    out_image, out_labels = _run(image, labels, _config(flip_z=1.0, flip_y=1.0, flip_x=1.0))
    np.testing.assert_array_equal(out_image, image[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(out_labels, labels[::-1, ::-1, ::-1])


def test_rot90_turns_image_and_labels_alike(patch):
    image, labels = patch
    seen = set()
    for seed in range(12):
        out_image, out_labels = _run(image, labels, _config(rot90=1.0), seed=(seed, 0))
        k = next(k for k in (1, 2, 3) if np.array_equal(out_image, np.rot90(image, k, axes=(1, 2))))
        np.testing.assert_array_equal(out_labels, np.rot90(labels, k, axes=(1, 2)))
        seen.add(k)
    assert seen == {1, 2, 3}
    # not square in-plane: only 180 degrees, shape kept
    wide_image, wide_labels = image[:, :6], labels[:, :6]
    out_image, out_labels = _run(wide_image, wide_labels, _config(rot90=1.0))
    np.testing.assert_array_equal(out_image, np.rot90(wide_image, 2, axes=(1, 2)))
    np.testing.assert_array_equal(out_labels, np.rot90(wide_labels, 2, axes=(1, 2)))


def test_rotation_by_zero_and_scale_one_are_identity(patch):
    image, labels = patch
    config = _config(rotation=1.0, rotation_max=0.0, scale=1.0, scale_range=[1.0, 1.0])
    out_image, out_labels = _run(image, labels, config)
    np.testing.assert_allclose(out_image, image, atol=1e-6)
    np.testing.assert_array_equal(out_labels, labels)


def test_scale_resamples_trilinearly_about_the_centre():
    # trilinear interpolation reproduces a linear ramp exactly; zoom 2 halves the ramp's slope
    d, h, w = 9, 11, 7
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    ramp = (zz + 2.0 * yy - xx).astype(np.float32)[..., None]
    labels = np.zeros((d, h, w), np.uint8)
    out_image, out_labels = _run(ramp, labels, _config(scale=1.0, scale_range=[2.0, 2.0]))
    c = (np.array([d, h, w]) - 1) / 2.0
    ref = (c[0] + (zz - c[0]) / 2) + 2.0 * (c[1] + (yy - c[1]) / 2) - (c[2] + (xx - c[2]) / 2)
    np.testing.assert_allclose(out_image[..., 0], ref, atol=1e-4)
    assert (out_labels == 0).all()  # magnified: everything comes from inside


def test_out_of_volume_is_ignore_but_context_comes_from_the_volume():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(8, 10, 10)).astype(np.uint8)
    image = rng.normal(size=(8, 10, 10, 1)).astype(np.float32)
    zoom_out = _config(scale=1.0, scale_range=[0.5, 0.5])
    out_image, out_labels = _run(image, labels, zoom_out)
    assert set(np.unique(out_labels)) <= {0, 1, 2, 255} and (out_labels == 255).any()
    np.testing.assert_array_equal(out_image[out_labels == 255], 0.0)
    background = Augment3DConfig.from_dict({**NONE, "scale": 1.0, "scale_range": [0.5, 0.5],
                                            "fill_mask": "background"})
    assert not (_run(image, labels, background)[1] == 255).any()
    # the same zoom on a patch inside a larger volume samples the volume around it: no ignore
    big_labels = rng.integers(0, 3, size=(24, 30, 30)).astype(np.uint8)
    big_image = rng.normal(size=(24, 30, 30, 1)).astype(np.float32)
    _, inner = augment_patch(tf.constant(big_image), tf.constant(big_labels), tf.constant([8, 10, 10]), (8, 10, 10),
                             config=zoom_out, seed=tf.constant([1, 2]))
    assert not (inner.numpy() == 255).any()
    # and without any transform augment_patch is the slice
    plain_image, plain_labels = augment_patch(tf.constant(big_image), tf.constant(big_labels), tf.constant([3, 4, 5]),
                                              (8, 10, 10), config=None, seed=tf.constant([1, 2]))
    np.testing.assert_array_equal(plain_image.numpy(), big_image[3:11, 4:14, 5:15])
    np.testing.assert_array_equal(plain_labels.numpy(), big_labels[3:11, 4:14, 5:15])


def test_spatial_ops_keep_only_input_labels(patch):
    image, labels = patch
    labels = np.where(labels == 2, 1, labels).astype(np.uint8)  # ids {0, 1, 255}
    config = _config(rotation=1.0, rotation_max=30.0, rotation_out_of_plane=20.0, scale=1.0, elastic=1.0,
                     elastic_sigma=3.0, flip_x=0.5, rot90=0.5)
    changed = 0
    for seed in range(6):
        out_image, out_labels = _run(image, labels, config, seed=(seed, 3))
        assert out_image.shape == image.shape and out_labels.shape == labels.shape
        assert out_labels.dtype == np.uint8
        assert set(np.unique(out_labels)) <= {0, 1, 255}
        assert np.isfinite(out_image).all()
        changed += not np.array_equal(out_labels, labels)
    assert changed == 6


def test_intensity_ops_leave_labels_alone(patch):
    image, labels = patch
    for name in ("gamma", "noise", "brightness", "contrast", "blur"):
        out_image, out_labels = _run(image, labels, _config(**{name: 1.0}))
        np.testing.assert_array_equal(out_labels, labels)
        assert np.isfinite(out_image).all()
        assert not np.allclose(out_image, image), name
    # gamma keeps each channel's min..max
    out_image, _ = _run(image, labels, _config(gamma=1.0, gamma_range=[2.0, 2.0]))
    np.testing.assert_allclose(out_image.min((0, 1, 2)), image.min((0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(out_image.max((0, 1, 2)), image.max((0, 1, 2)), atol=1e-5)
    # blur keeps a constant image constant, also at the borders
    flat = np.full_like(image, 3.0)
    np.testing.assert_allclose(_run(flat, labels, _config(blur=1.0))[0], 3.0, atol=1e-5)


def test_stateless_same_seed_same_output(patch):
    image, labels = patch
    config = Augment3DConfig.full()
    a = _run(image, labels, config, seed=(5, 6))
    b = _run(image, labels, config, seed=(5, 6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    differs = [not np.array_equal(_run(image, labels, config, seed=(s, 7))[0], a[0]) for s in range(3)]
    assert all(differs)
