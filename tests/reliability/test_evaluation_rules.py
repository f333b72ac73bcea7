"""Evaluation (issue 20 rows 15 and 16): the README's empty-mask rules hold at dataset and
image level alike, shape mismatches are errors, and HD95/ASSD/Dice/IoU agree with an
independent reference (scipy's Euclidean distance transform, plain counts) on real masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kerasseg import evaluation
from kerasseg.evaluation import EvaluationError, SegmentationEvaluator, assd, binary_scores, hd95

ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is in the dev extra (independent reference)")

CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


# -- the independent reference -------------------------------------------------------------------


def ref_surface(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (outside the image counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, structure=CROSS, border_value=0)


def ref_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """For each surface pixel of ``a``, the Euclidean distance to the nearest surface pixel of ``b``."""
    return ndimage.distance_transform_edt(~ref_surface(b), sampling=spacing)[ref_surface(a)]


def ref_hd95_assd(pred, truth, spacing, *, pct=(95, 95)):
    d_pt, d_tp = ref_directed(pred, truth, spacing), ref_directed(truth, pred, spacing)
    h = max(np.percentile(d_pt, pct[0]), np.percentile(d_tp, pct[1]))
    return float(h), float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))


def ref_scores(truth: np.ndarray, pred: np.ndarray, c: int, valid: np.ndarray) -> dict[str, float]:
    t, p = (truth == c) & valid, (pred == c) & valid
    tp = np.sum(t & p)
    fp = np.sum(~t & p & valid)
    fn = np.sum(t & ~p)
    tn = np.sum(~t & ~p & valid)
    return {"iou": tp / (tp + fp + fn), "dice": 2 * tp / (2 * tp + fp + fn), "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp), "precision": tp / (tp + fp)}


# -- real masks ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def isbi_labels(isbi_membrane):
    """Five real ISBI label maps as class ids: 0 = membrane, 1 = cell (256x256 crops, for speed)."""
    folder = isbi_membrane / "data" / "membrane" / "train" / "label"
    return [(np.asarray(Image.open(folder / f"{i}.png")) == 255).astype(np.int64)[:256, 128:384] for i in range(5)]


@pytest.fixture(scope="module")
def video_labels(labelme_examples):
    """labelme's own reference label maps of five video frames (0 background, 1 car, 2 track)."""
    folder = labelme_examples / "examples" / "video_annotation" / "data_dataset_voc" / "SegmentationClassPNG"
    return [np.asarray(Image.open(p)).astype(np.int64) for p in sorted(folder.glob("*.png"))]


def _pairs(isbi_labels):
    """(name, pred, truth) of real membrane masks: another slice, an eroded and a shifted copy."""
    membrane = [label == 0 for label in isbi_labels]
    eroded = ndimage.binary_erosion(membrane[0], structure=CROSS, iterations=1)
    shifted = np.zeros_like(membrane[0])
    shifted[3:, 5:] = membrane[0][:-3, :-5]
    return [("slice1_vs_slice0", membrane[1], membrane[0]), ("eroded_vs_slice0", eroded, membrane[0]),
            ("shifted_vs_slice0", shifted, membrane[0])]


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 0.5), (0.7, 1.9), (2.5, 0.4)])
def test_hd95_and_assd_match_the_scipy_reference_on_real_masks(isbi_labels, spacing):
    tolerance = 1e-5 if spacing[0] == spacing[1] else 1e-9  # OpenCV's isotropic transform is float32
    for name, a, b in _pairs(isbi_labels):
        for pred, truth in ((a, b), (b, a)):  # both orders: each direction is the larger once
            want_h, want_a = ref_hd95_assd(pred, truth, spacing)
            assert hd95(pred, truth, spacing) == pytest.approx(want_h, rel=tolerance), name
            assert assd(pred, truth, spacing) == pytest.approx(want_a, rel=tolerance), name


def test_the_reference_pins_each_direction_percentile(isbi_labels):
    """The pairs are asymmetric enough that a 90th percentile in either direction changes
    HD95: so the test above fails if one direction's percentile in _distance_pair drifts."""
    spacing = (0.7, 1.9)
    a, b = _pairs(isbi_labels)[0][1:]
    d_ab, d_ba = ref_directed(a, b, spacing), ref_directed(b, a, spacing)
    p95_ab, p95_ba = np.percentile(d_ab, 95), np.percentile(d_ba, 95)
    assert p95_ab != pytest.approx(p95_ba, rel=1e-3)
    # each mutated direction changes the result in at least one order
    changed = {
        mutated for mutated in ((90, 95), (95, 90)) for pred, truth in ((a, b), (b, a))
        if ref_hd95_assd(pred, truth, spacing, pct=mutated)[0]
        != pytest.approx(ref_hd95_assd(pred, truth, spacing)[0], rel=1e-6)
    }
    assert changed == {(90, 95), (95, 90)}


def test_evaluator_per_class_scores_match_plain_counts_on_real_confusions(isbi_labels, video_labels):
    for labels, names in ((isbi_labels, ["membrane", "cell"]), (video_labels, ["background", "car", "track"])):
        ev = SegmentationEvaluator(len(names), names, spacing=(0.8, 1.3))
        truths, preds = [], []
        for truth, pred in zip(labels[:-1], labels[1:]):  # each frame/slice predicts the next one
            truth = truth.copy()
            truth[:6] = 255  # an ignored band
            record = ev.update(truth, pred)
            truths.append(truth)
            preds.append(pred)
            valid = truth != 255
            for c, cname in enumerate(names):
                t, p = (truth == c) & valid, (pred == c) & valid
                want = ref_scores(truth, pred, c, valid)
                assert record["dice"][cname] == pytest.approx(want["dice"] if t.any() or p.any() else 1.0)
                assert record["iou"][cname] == pytest.approx(want["iou"] if t.any() or p.any() else 1.0)
                if t.any() and p.any():
                    assert record["hd95"][cname] == pytest.approx(ref_hd95_assd(p, t, (0.8, 1.3))[0], rel=1e-9)
                    assert record["assd"][cname] == pytest.approx(ref_hd95_assd(p, t, (0.8, 1.3))[1], rel=1e-9)
        report = ev.result()
        all_truth, all_pred = np.concatenate(truths), np.concatenate(preds)
        valid = all_truth != 255
        for c, cname in enumerate(names):
            want = ref_scores(all_truth, all_pred, c, valid)
            for key, value in want.items():
                assert report["per_class"][cname][key] == pytest.approx(value), (cname, key)
        assert report["pixel_accuracy"] == pytest.approx(np.mean(all_truth[valid] == all_pred[valid]))
        assert report["counts"]["ignored_pixels"] == int((~valid).sum())


# -- row 15: empty cases follow one rule ---------------------------------------------------------


def test_an_all_ignore_image_is_both_empty_at_image_and_dataset_level():
    ev = SegmentationEvaluator(2, ["background", "lesion"])
    record = ev.update(np.full((8, 8), 255), np.ones((8, 8), np.int64))
    assert record["pixels"] == 0
    assert record["dice"] == {"background": 1.0, "lesion": 1.0} and record["hd95"]["lesion"] == 0.0
    report = ev.result()
    for name in ("background", "lesion"):
        entry = report["per_class"][name]
        assert entry["dice"] == entry["iou"] == entry["dice_per_image"] == 1.0  # was dice 0.0 vs 1.0
        assert entry["images_both_empty"] == 1 and entry["images_averaged"] == 0
    assert report["mean_dice"] == 1.0 and report["counts"]["pixels"] == 0
    assert report["pixel_accuracy"] == 0.0  # no pixel was correct: like the streaming metric
    assert "nothing was evaluated" in ev.format_table()
    assert SegmentationEvaluator(2).result()["mean_dice"] == 1.0  # no image at all: the same rule


def test_an_all_ignore_image_changes_nothing_beside_a_real_one():
    truth = np.zeros((16, 16), np.int64)
    truth[4:10, 4:10] = 1
    pred = np.zeros((16, 16), np.int64)
    pred[5:11, 4:10] = 1
    alone = SegmentationEvaluator(2, ["bg", "lesion"])
    alone.update(truth, pred)
    both = SegmentationEvaluator(2, ["bg", "lesion"])
    both.update(truth, pred)
    both.update(np.full((16, 16), 255), pred)
    a, b = alone.result(), both.result()
    for key in ("iou", "dice", "sensitivity", "specificity", "precision", "hd95", "assd", "dice_per_image"):
        assert b["per_class"]["lesion"][key] == pytest.approx(a["per_class"]["lesion"][key]), key
    assert b["per_class"]["lesion"]["images_both_empty"] == 1
    assert "1 image(s) had no evaluated pixel" in both.format_table()


@pytest.mark.parametrize("function", [hd95, assd, binary_scores, evaluation.surface_distances])
def test_masks_of_different_shapes_are_an_error_not_the_diagonal(function):
    pred = np.zeros((64, 64), bool)
    truth = np.zeros((32, 80), bool)
    truth[5:9, 5:9] = True
    with pytest.raises(EvaluationError, match=r"one shape, got prediction \(64, 64\) and truth \(32, 80\)"):
        function(pred, truth)
    with pytest.raises(EvaluationError):
        function(np.ones((4, 4), bool), np.ones((4, 1), bool))  # would broadcast
