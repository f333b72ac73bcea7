"""Volume normalization (spatial_dims=3) and clip_zscore against numpy references."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kerasseg.data.preprocess import NormalizationError, normalize, resolve_normalization  # noqa: E402
from kerasseg.schema import DatasetInfo  # noqa: E402


@pytest.fixture(scope="module")
def volumes():
    rng = np.random.default_rng(0)
    # channel 1 has another scale; each depth slice its own offset, so per-slice != per-volume statistics
    x = rng.normal(size=(2, 6, 7, 5, 2)) * [10.0, 300.0] + [50.0, -1000.0]
    x += np.arange(6)[None, :, None, None, None] * 20.0
    return x.astype(np.float32)


def test_zscore_is_per_volume_and_channel(volumes):
    out = normalize(tf.constant(volumes), {"method": "zscore"}, spatial_dims=3).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=1e-4)
    x = volumes.astype(np.float64)
    ref = (x - x.mean((1, 2, 3), keepdims=True)) / x.std((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # one volume (D, H, W, C) gives the same as its batch element; None is zscore
    np.testing.assert_allclose(normalize(tf.constant(volumes[1]), spatial_dims=3).numpy(), out[1], atol=1e-5)
    # the 2D default would z-score every slice on its own: not the same
    per_slice = normalize(tf.constant(volumes[0]), {"method": "zscore"}).numpy()
    assert np.abs(per_slice - out[0]).max() > 0.5


def test_minmax_and_percentile_per_volume(volumes):
    out = normalize(tf.constant(volumes), {"method": "minmax"}, spatial_dims=3).numpy()
    np.testing.assert_allclose(out.min(axis=(1, 2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
    vol = volumes[0].copy()
    vol[0, 0, 0, 0] = 1e6  # one outlier
    out = normalize(tf.constant(vol), {"method": "percentile", "lower": 1, "upper": 99}, spatial_dims=3).numpy()
    assert out.shape == vol.shape and out.min() >= 0.0 and out.max() <= 1.0
    for c in range(2):
        flat = np.sort(vol[..., c].ravel())
        n = flat.size - 1
        lo, hi = flat[int(round(n * 0.01))], flat[int(round(n * 0.99))]
        np.testing.assert_allclose(out[..., c], (np.clip(vol[..., c], lo, hi) - lo) / (hi - lo), atol=1e-5)


def test_spatial_dims_is_checked():
    with pytest.raises(NormalizationError, match=r"\(D, H, W, C\)"):
        normalize(tf.zeros([4, 4, 1]), spatial_dims=3)
    with pytest.raises(NormalizationError, match="spatial_dims"):
        normalize(tf.zeros([4, 4, 4, 1]), spatial_dims=4)


def test_clip_zscore_explicit_values():
    hu = np.array([-2000, -1000, -100, 0, 40, 300, 3000], np.int16).reshape(1, 1, 7, 1)
    config = {"method": "clip_zscore", "lower": -1000, "upper": 300, "mean": 40.0, "std": 100.0}
    out = normalize(tf.constant(hu), config, spatial_dims=3).numpy().ravel()
    np.testing.assert_allclose(out, (np.clip(hu.ravel(), -1000, 300) - 40.0) / 100.0, rtol=1e-6)
    with pytest.raises(NormalizationError, match="resolve_normalization"):
        normalize(tf.constant(hu), {"method": "clip_zscore", "lower": 0}, spatial_dims=3)
    with pytest.raises(NormalizationError, match="did you mean 'lower'"):
        resolve_normalization({"method": "clip_zscore", "lowr": 0})


def _volume_info(**volume) -> DatasetInfo:
    return DatasetInfo(class_names=["background", "organ"], splits={"train": 3}, dimensions=3, channels=2,
                       image_dtype="int16", intensity={"mean": [1.0, 2.0], "std": [3.0, 4.0]}, volume=volume)


def test_clip_zscore_resolved_from_foreground_statistics():
    info = _volume_info(foreground_intensity={"p00_5": [-100.0, 0.0], "p99_5": [200.0, 50.0], "mean": [60.0, 20.0],
                                              "std": [40.0, 10.0]})
    resolved = resolve_normalization({"method": "clip_zscore"}, info)
    assert resolved == {"method": "clip_zscore", "lower": [-100.0, 0.0], "upper": [200.0, 50.0],
                        "mean": [60.0, 20.0], "std": [40.0, 10.0], "eps": 1e-6}
    # given values win over dataset.json; scalars become lists
    partial = resolve_normalization({"method": "clip_zscore", "lower": -50, "std": 5}, info)
    assert partial["lower"] == [-50.0] and partial["std"] == [5.0] and partial["upper"] == [200.0, 50.0]
    x = np.array([[-500.0, -10.0], [100.0, 30.0], [900.0, 900.0]], np.float32).reshape(1, 1, 3, 2)
    out = normalize(tf.constant(x), resolved, spatial_dims=3).numpy()
    ref = (np.clip(x, [-100.0, 0.0], [200.0, 50.0]) - [60.0, 20.0]) / [40.0, 10.0]
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_clip_zscore_without_statistics_is_refused():
    with pytest.raises(NormalizationError, match="foreground_intensity.p00_5"):
        resolve_normalization({"method": "clip_zscore"}, _volume_info())
    with pytest.raises(NormalizationError, match="lower <= upper"):
        resolve_normalization({"method": "clip_zscore", "lower": 5, "upper": 1, "mean": 0, "std": 1})


def test_dataset_method_on_a_volume_dataset_uses_intensity():
    resolved = resolve_normalization({"method": "dataset"}, _volume_info())
    assert resolved["mean"] == [1.0, 2.0] and resolved["std"] == [3.0, 4.0]
    # the default stays the per-volume z-score
    assert resolve_normalization(None, _volume_info())["method"] == "zscore"
