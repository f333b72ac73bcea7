"""Intensity normalization (pure TF) against numpy references."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kerasseg.data.preprocess import NormalizationError, normalize, resolve_normalization  # noqa: E402
from kerasseg.schema import DatasetInfo  # noqa: E402


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4096, size=(3, 16, 12, 2)).astype(np.uint16)


def _per_image(fn, batch):
    return np.stack([fn(img.astype(np.float64)) for img in batch])


def test_zscore_per_image_and_channel(batch):
    out = normalize(tf.constant(batch), {"method": "zscore"}).numpy()
    assert out.dtype == np.float32
    ref = _per_image(lambda x: (x - x.mean((0, 1))) / x.std((0, 1)), batch)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    # rank 3 gives the same as one element of the batch; default config is zscore
    np.testing.assert_allclose(normalize(tf.constant(batch[1])).numpy(), out[1], rtol=1e-5, atol=1e-5)


def test_zscore_of_a_constant_image_is_finite():
    out = normalize(tf.fill([4, 4, 1], tf.constant(7, tf.uint8)), {"method": "zscore"}).numpy()
    assert np.isfinite(out).all() and np.allclose(out, 0)


def test_dataset_minmax_window_scale(batch):
    x = batch.astype(np.float64)
    out = normalize(tf.constant(batch), {"method": "dataset", "mean": [100.0, 200.0], "std": [10.0, 20.0]}).numpy()
    np.testing.assert_allclose(out, (x - [100, 200]) / [10, 20], rtol=1e-5)
    out = normalize(tf.constant(batch), {"method": "minmax"}).numpy()
    np.testing.assert_allclose(out.min((1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(out.max((1, 2)), 1, atol=1e-6)
    out = normalize(tf.constant(batch), {"method": "window", "center": 1000, "width": 1000}).numpy()
    np.testing.assert_allclose(out, np.clip((x - 500) / 1000, 0, 1), atol=1e-6)
    out = normalize(tf.constant(batch), {"method": "scale"}).numpy()
    np.testing.assert_allclose(out, x / 65535, rtol=1e-6)
    out8 = normalize(tf.constant(np.array([[[255]], [[51]]], np.uint8)), {"method": "scale"}).numpy()
    np.testing.assert_allclose(out8.ravel(), [1.0, 0.2], rtol=1e-6)


def test_window_on_signed_ct_values():
    hu = np.array([-1000, -160, 40, 240, 3000], np.int16).reshape(1, 5, 1)
    out = normalize(tf.constant(hu), {"method": "window", "center": 40, "width": 400}).numpy().ravel()
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_percentile_clipping_ignores_outliers(batch):
    img = batch[0].astype(np.float32).copy()
    img[0, 0, :] = 1e6  # one hot pixel would dominate min-max
    out = normalize(tf.constant(img), {"method": "percentile", "lower": 1, "upper": 99}).numpy()
    n = img.shape[0] * img.shape[1]
    for c in range(2):
        values = np.sort(img[..., c].ravel())
        lo, hi = values[int(round((n - 1) * 0.01))], values[int(round((n - 1) * 0.99))]
        np.testing.assert_allclose(out[..., c], (np.clip(img[..., c], lo, hi) - lo) / (hi - lo), atol=1e-5)
    assert out.max() == pytest.approx(1.0) and np.median(out) > 0.2


def test_resolve_fills_statistics_so_the_dict_alone_reproduces():
    info = DatasetInfo(class_names=["bg", "fg"], splits={"train": 1}, image_dtype="uint16",
                       intensity={"mean": [1000.0], "std": [250.0], "min": [0.0], "max": [4000.0]})
    resolved = resolve_normalization({"method": "dataset"}, info)
    assert resolved["mean"] == [1000.0] and resolved["std"] == [250.0]
    x = tf.constant(np.full((2, 2, 1), 1500, np.uint16))
    np.testing.assert_allclose(normalize(x, resolved).numpy(), 2.0)
    assert resolve_normalization({"method": "scale"}, info)["max"] == 65535.0
    mm = resolve_normalization({"method": "minmax", "source": "dataset"}, info)
    assert (mm["min"], mm["max"]) == ([0.0], [4000.0])
    assert resolve_normalization(None, info)["method"] == "zscore"
    # explicit statistics win over dataset.json
    assert resolve_normalization({"method": "dataset", "mean": [1], "std": [2]}, info)["mean"] == [1.0]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"method": "histogram"}, "unknown normalization"),
        ({"method": "window", "center": 0}, "width"),
        ({"method": "dataset"}, "mean"),
    ],
)
def test_bad_configs_raise(config, message):
    with pytest.raises(NormalizationError, match=message):
        normalize(tf.zeros([2, 2, 1]), config)


def test_resolve_without_statistics_names_the_gap():
    info = DatasetInfo(class_names=["bg"], splits={"train": 1})
    with pytest.raises(NormalizationError, match="mean"):
        resolve_normalization({"method": "dataset"}, info)
