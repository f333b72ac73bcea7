"""Scores and the CRF grid search (tune_crf) on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from kerasseg.postprocess import (
    CRFConfigError,
    CRFInputError,
    expand_grid,
    parse_grid,
    segmentation_scores,
    tune_crf,
)
from kerasseg.postprocess.scores import boundary_band


def test_scores_on_a_hand_checked_example():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 0, 1, 1]])
    s = segmentation_scores([pred], [truth], 3, band=1)
    # class 0: tp 3, pred 5 (two valid extra), true 4 -> 6/9; class 1: tp 3, pred 4, true 4 -> 6/8
    # class 2: tp 1, pred 1, true 2 -> 2/3. Ignore pixels (255) are not counted.
    assert s["dice_per_class"] == pytest.approx([6 / 9, 6 / 8, 2 / 3])
    assert s["dice"] == pytest.approx((6 / 8 + 2 / 3) / 2)
    assert s["mean_dice"] == pytest.approx((6 / 9 + 6 / 8 + 2 / 3) / 3)
    assert s["pixel_accuracy"] == pytest.approx(7 / 10)


def test_boundary_band_width():
    truth = np.zeros((5, 12), int)
    truth[:, 6:] = 1
    assert boundary_band(truth, 1)[0].nonzero()[0].tolist() == [5, 6]
    assert boundary_band(truth, 3)[0].nonzero()[0].tolist() == [3, 4, 5, 6, 7, 8]
    assert not boundary_band(np.zeros((4, 4), int), 3).any()


def _noisy_set(n=3, size=48, seed=0):
    rng = np.random.default_rng(seed)
    images, probs, truths = [], [], []
    for i in range(n):
        truth = np.zeros((size, size), np.int64)
        truth[8 + i: 30 + i, 10:36] = 1
        image = np.where(truth == 1, 170, 60).astype(np.uint8) + rng.integers(0, 20, truth.shape).astype(np.uint8)
        logit = (truth * 2.0 - 1.0) * 0.8 + rng.normal(0, 1.2, truth.shape)
        fg = 1 / (1 + np.exp(-logit))
        images.append(image)
        probs.append(np.stack([1 - fg, fg], -1).astype(np.float32))
        truths.append(truth)
    return images, probs, truths


def test_tune_crf_finds_an_improving_setting_and_parallel_equals_serial():
    images, probs, truths = _noisy_set()
    grid = {"bilateral_compat": [0, 10], "gaussian_compat": [0, 3], "bilateral_sxy": [20]}
    serial = tune_crf(images, probs, truths, grid, n_jobs=1)
    parallel = tune_crf(images, probs, truths, grid, n_jobs=2)
    assert serial.to_dict() == parallel.to_dict()
    assert len(serial.results) == 4
    no_pairwise = serial.results[0]  # both weights 0: the CRF returns the unary
    assert no_pairwise["scores"]["dice"] == pytest.approx(serial.baseline["dice"])
    assert serial.improved and serial.best_params.enabled
    assert serial.best_scores["dice"] > serial.baseline["dice"] + 0.05
    assert serial.best_params.bilateral_sxy == 20
    table = serial.format_table()
    assert "(no CRF)" in table and table.count("*") == 1


def test_tune_crf_disables_the_crf_when_nothing_beats_the_prediction():
    images, _, truths = _noisy_set(n=2)
    perfect = [np.stack([1 - t, t], -1).astype(np.float32) * 0.8 + 0.1 for t in truths]
    result = tune_crf(images, perfect, truths, {"bilateral_compat": [3, 10]})
    assert result.baseline["dice"] == 1.0
    assert not result.improved and result.best_params.enabled is False


def test_tune_crf_rejects_bad_inputs():
    images, probs, truths = _noisy_set(n=2)
    with pytest.raises(CRFInputError, match="same non-zero number"):
        tune_crf(images, probs, truths[:1], {"iterations": [1]})
    with pytest.raises(CRFInputError, match="scan1"):
        tune_crf(images, probs, [truths[0], truths[1][:10]], {"iterations": [1]}, names=["scan0", "scan1"])
    with pytest.raises(CRFConfigError, match="metric"):
        tune_crf(images, probs, truths, {"iterations": [1]}, metric="auc")


def test_grid_parsing_and_validation():
    grid = parse_grid("bilateral_srgb=5,13.5; kernel=diag,full\niterations=3")
    assert grid == {"bilateral_srgb": [5, 13.5], "kernel": ["diag", "full"], "iterations": [3]}
    assert len(expand_grid(grid)) == 4
    with pytest.raises(CRFConfigError, match="unknown CRF parameter 'bilateral_sgrb'"):
        expand_grid({"bilateral_sgrb": [1]})
    with pytest.raises(CRFConfigError, match="bilateral_compat"):
        expand_grid({"bilateral_compat": [1, -2]})
    with pytest.raises(CRFConfigError, match="NAME=V1"):
        parse_grid("bilateral_srgb")
