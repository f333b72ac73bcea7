"""Losses and streaming metrics on volumes: ``(B, D, H, W)`` labels, ``(B, D, H, W, K)`` predictions.

A volume of one slice must score exactly as that slice does as an image, and a
volume must score as the pooled sums over all its voxels (not per slice).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kerasseg import losses, metrics  # noqa: E402

LOSSES = ["dice_ce", "dice", "cross_entropy", "focal", "tversky", "jaccard", "focal_tversky"]


def _batch(seed: int = 0, shape=(2, 3, 8, 8), classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, shape).astype(np.int32)
    labels[0, 0, 0, :3] = 255  # ignore voxels
    probs = tf.nn.softmax(tf.constant(rng.normal(size=shape + (classes,)), tf.float32)).numpy()
    return labels, probs


@pytest.mark.parametrize("name", LOSSES)
def test_a_one_slice_volume_scores_as_its_image(name):
    labels, probs = _batch()
    loss = losses.get(name, num_classes=3)
    as_volume = float(loss(labels[:, :1], probs[:, :1]))
    as_image = float(loss(labels[:, 0], probs[:, 0]))
    assert as_volume == pytest.approx(as_image, rel=1e-5)


def test_volume_dice_pools_all_voxels_not_slices():
    labels, probs = _batch(seed=1)
    dice = losses.get("dice", num_classes=3)
    whole = float(dice(labels[:1], probs[:1]))
    # the same voxels laid out as one tall image: identical sums, identical loss
    tall = float(dice(labels[:1].reshape(1, -1, 8), probs[:1].reshape(1, -1, 8, 3)))
    per_slice = np.mean([float(dice(labels[:1, d], probs[:1, d])) for d in range(3)])
    assert whole == pytest.approx(tall, rel=1e-5)
    assert whole != pytest.approx(per_slice, rel=1e-3)


def test_volume_sample_weights_act_per_voxel():
    labels, probs = _batch(seed=2)
    ce = losses.get("cross_entropy", num_classes=3)
    weights = np.ones(labels.shape, np.float32)
    weights[1] = 0.0  # the second volume does not count
    weighted = float(ce(labels, probs, weights))
    first_only = float(ce(labels[:1], probs[:1]))
    assert weighted == pytest.approx(first_only / 2, rel=1e-5)  # mean over the batch of (first, 0)


def test_streaming_metrics_take_volumes():
    labels, probs = _batch(seed=3)
    predicted = probs.argmax(-1)
    found = {}
    for metric in metrics.default_metrics(3, ["background", "a", "b"]):
        metric.update_state(labels, probs)
        found[metric.name] = float(metric.result())
    valid = labels != 255
    for k, name in enumerate(["background", "a", "b"]):
        t, p = (labels == k) & valid, (predicted == k) & valid
        expected = 2 * (t & p).sum() / (t.sum() + p.sum())
        key = next(n for n in found if n.startswith("dice_") and n.endswith(name))
        assert found[key] == pytest.approx(expected, abs=1e-6)


def test_a_label_volume_with_a_channel_axis_is_squeezed_not_misread():
    labels, probs = _batch(seed=4)
    loss = losses.get("dice_ce", num_classes=3)
    assert float(loss(labels[..., None], probs)) == pytest.approx(float(loss(labels, probs)), rel=1e-6)
