"""kerasseg.evaluation: hand-computed scores, empty masks, HD95/ASSD with known answers, reports."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest

from kerasseg import evaluation as E


def _brute_force(a: np.ndarray, b: np.ndarray, spacing=(1.0, 1.0)):
    pa = np.argwhere(E.surface(a)) * np.asarray(spacing)
    pb = np.argwhere(E.surface(b)) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


def test_surface_is_the_4_connected_boundary():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    expected = mask.copy()
    expected[2:4, 2:4] = False
    np.testing.assert_array_equal(E.surface(mask), expected)
    full = np.ones((3, 3), bool)  # image edge counts as outside
    assert E.surface(full).sum() == 8


def test_parallel_lines_k_apart_have_hd95_and_assd_k():
    truth = np.zeros((30, 60), bool)
    truth[10, 5:45] = True
    for k in (1, 3, 7):
        pred = np.zeros_like(truth)
        pred[10 + k, 5:45] = True
        assert E.hd95(pred, truth) == pytest.approx(k)
        assert E.assd(pred, truth) == pytest.approx(k)
        # anisotropic spacing: rows 2 units apart, columns 0.5
        assert E.hd95(pred, truth, spacing=(2.0, 0.5)) == pytest.approx(2.0 * k)


def test_squares_offset_by_k_pixels_known_answer():
    """Square B is square A shifted right by k: the classic Hausdorff distance is k."""
    k, side = 4, 20
    a = np.zeros((40, 60), bool)
    a[10 : 10 + side, 10 : 10 + side] = True
    b = np.zeros_like(a)
    b[10 : 10 + side, 10 + k : 10 + k + side] = True
    d_ab, d_ba = E.surface_distances(a, b)
    assert max(d_ab.max(), d_ba.max()) == pytest.approx(k)
    # By hand, A's 76 surface pixels (k=4, side 20) lie at these distances from B's surface:
    #   top and bottom rows: 4, 3, 2, 1 then 16 zeros (each row);
    #   left column (18 px): 4 each;
    #   right column (18 px, inside B): min(4, distance to B's top/bottom row) = 1,2,3, 12 x 4, 3,2,1.
    # 32 of 76 are 4 (the top 42%), so the 95th percentile is 4; the sum is 20 + 72 + 60 = 152.
    assert d_ab.size == 76 and np.count_nonzero(np.isclose(d_ab, 4)) == 32
    assert d_ab.sum() == pytest.approx(152)
    assert E.hd95(a, b) == pytest.approx(4.0)
    assert E.assd(a, b) == pytest.approx(2.0)  # both directions are symmetric: 304 / 152


def test_hd95_ignores_a_small_outlier_but_hausdorff_would_not():
    truth = np.zeros((64, 128), bool)
    truth[20:40, 10:110] = True
    pred = truth.copy()
    pred[60, 120] = True  # one stray pixel far away: 1 of ~237 surface pixels
    d_pt, d_tp = E.surface_distances(pred, truth)
    assert d_pt.max() > 20
    assert E.hd95(pred, truth) == pytest.approx(0.0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (2.0, 0.5), (0.3, 1.7)])
def test_distances_match_brute_force_on_random_shapes(spacing):
    rng = np.random.default_rng(5)
    for _ in range(4):
        a = np.zeros((48, 40), bool)
        b = np.zeros((48, 40), bool)
        for mask in (a, b):
            for _ in range(3):
                r, c = rng.integers(0, 44), rng.integers(0, 36)
                mask[r : r + rng.integers(1, 16), c : c + rng.integers(1, 16)] = True
        got = E.surface_distances(a, b, spacing)
        want = _brute_force(a, b, spacing)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_anisotropic_far_apart_shapes_match_brute_force():
    """Queries with and without a target in their own row/column (windowed and full scans)."""
    a = np.zeros((200, 300), bool)
    b = np.zeros_like(a)
    a[10:14, 10:15] = True
    a[100, 200] = True
    b[150:160, 250:280] = True
    b[12, 40:43] = True  # shares rows with the first blob of a
    got = E.surface_distances(a, b, (0.8, 1.3))
    want = _brute_force(a, b, (0.8, 1.3))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_numpy_and_opencv_paths_agree_for_square_pixels():
    rng = np.random.default_rng(6)
    a = rng.random((64, 48)) > 0.7
    b = rng.random((64, 48)) > 0.6
    sb = E.surface(b)
    rows, cols = np.nonzero(E.surface(a))
    numpy_path = E._nearest_distances(rows, cols, sb, (1.5, 1.5))
    opencv_path, _ = E.surface_distances(a, b, spacing=1.5)
    np.testing.assert_allclose(numpy_path, opencv_path, rtol=1e-6)


def test_distances_agree_with_opencv_distance_transform():
    a = np.zeros((128, 128), np.uint8)
    cv2.circle(a, (60, 64), 40, 1, -1)
    b = np.zeros_like(a)
    cv2.ellipse(b, (70, 60), (45, 30), 20, 0, 360, 1, -1)
    d_ab, _ = E.surface_distances(a.astype(bool), b.astype(bool))
    b_surface = E.surface(b.astype(bool))
    dt = cv2.distanceTransform((~b_surface).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    reference = dt[E.surface(a.astype(bool))]
    np.testing.assert_allclose(d_ab, reference, atol=1e-3)


def test_empty_cases_are_defined():
    empty = np.zeros((30, 40), bool)
    blob = empty.copy()
    blob[5:10, 5:10] = True
    assert E.binary_scores(empty, empty) == {"dice": 1.0, "iou": 1.0}
    assert E.binary_scores(blob, empty) == {"dice": 0.0, "iou": 0.0}
    assert E.hd95(empty, empty) == 0.0 and E.assd(empty, empty) == 0.0
    assert E.hd95(blob, empty) == pytest.approx(50.0)  # diagonal of 30x40
    assert E.assd(empty, blob, spacing=(2.0, 2.0)) == pytest.approx(100.0)


def _two_image_evaluator():
    ev = E.SegmentationEvaluator(3, ["background", "lesion", "vessel"], spacing=None)
    truth = np.zeros((10, 10), np.int64)
    truth[2:6, 2:6] = 1  # 16 px lesion
    truth[0, :] = 255  # ignored row
    pred = np.zeros((10, 10), np.int64)
    pred[2:6, 3:7] = 1  # shifted by one column: TP 12, FP 4, FN 4
    pred[0, 0] = 2  # on an ignored pixel: not counted
    ev.update(truth, pred, name="a.png")
    truth2 = np.zeros((10, 10), np.int64)
    pred2 = np.zeros((10, 10), np.int64)
    pred2[8:10, 8:10] = 2  # false positive vessel, 4 px
    ev.update(truth2, pred2, name="b.png")
    return ev


def test_evaluator_hand_computed_report():
    report = _two_image_evaluator().result()
    # pixels: 90 + 100 = 190 counted, 10 ignored
    assert report["counts"] == {"images": 2, "pixels": 190, "ignored_pixels": 10}
    cm = np.array(report["confusion_matrix"])
    np.testing.assert_array_equal(cm, [[166, 4, 4], [4, 12, 0], [0, 0, 0]])
    lesion = report["per_class"]["lesion"]
    assert lesion["iou"] == pytest.approx(12 / 20)
    assert lesion["dice"] == pytest.approx(24 / 32)
    assert lesion["sensitivity"] == pytest.approx(12 / 16)
    assert lesion["precision"] == pytest.approx(12 / 16)
    assert lesion["specificity"] == pytest.approx(170 / 174)
    assert lesion["hd95"] == pytest.approx(1.0)  # one image averaged; shift of one column
    assert lesion["images_averaged"] == 1 and lesion["images_both_empty"] == 1
    vessel = report["per_class"]["vessel"]
    # never in truth, predicted in image b: 0/0 sensitivity -> 0, IoU 0, HD95 = diagonal of image b
    assert vessel["iou"] == 0.0 and vessel["sensitivity"] == 0.0 and vessel["precision"] == 0.0
    assert vessel["hd95"] == pytest.approx(math.hypot(10, 10))
    assert vessel["images_false_positive"] == 1 and vessel["images_both_empty"] == 1
    background = report["per_class"]["background"]
    assert background["iou"] == pytest.approx(166 / 178)  # FN 8 (4 lesion + 4 vessel predicted), FP 4
    assert report["mean_iou"] == pytest.approx((166 / 178 + 12 / 20 + 0.0) / 3)
    assert report["pixel_accuracy"] == pytest.approx(178 / 190)
    assert [r["name"] for r in report["per_image"]] == ["a.png", "b.png"]
    assert report["per_image"][0]["dice"]["lesion"] == pytest.approx(0.75)
    assert report["per_image"][1]["dice"]["lesion"] == 1.0  # both empty: defined
    # nothing is NaN anywhere
    json.dumps(report, allow_nan=False)


def test_class_absent_everywhere_is_one_and_counted():
    ev = E.SegmentationEvaluator(2, ["background", "lesion"])
    ev.update(np.zeros((4, 4), int), np.zeros((4, 4), int))
    lesion = ev.result()["per_class"]["lesion"]
    assert lesion["iou"] == 1.0 and lesion["dice"] == 1.0 and lesion["hd95"] == 0.0
    assert lesion["images_averaged"] == 0 and lesion["images_both_empty"] == 1


def test_format_table_and_files(tmp_path):
    ev = _two_image_evaluator()
    table = ev.format_table()
    lines = table.splitlines()
    assert lines[0] == "Intersection over Union for each class:"
    assert lines[1].startswith("class 0 (background): IoU 0.9326  Dice 0.9651")
    assert lines[2].startswith("class 1 (lesion): IoU 0.6000  Dice 0.7500")
    assert "HD95 1.00 px" in lines[2]
    assert any(line.startswith("mean IoU: ") for line in lines)
    assert any(line.startswith("pixel accuracy: 0.9368") for line in lines)
    assert "predicted but absent in 1 image(s)" in table
    ev.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["per_class"]["lesion"]["dice"] == pytest.approx(0.75)
    ev.write_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["class_name"] for r in rows] == ["background", "lesion", "vessel", "mean"]
    assert float(rows[1]["iou"]) == pytest.approx(0.6)
    ev.write_per_image_csv(tmp_path / "img.csv")
    per_image = list(csv.DictReader((tmp_path / "img.csv").open()))
    assert per_image[0]["name"] == "a.png" and float(per_image[0]["dice_lesion"]) == pytest.approx(0.75)
    with pytest.raises(E.EvaluationError, match="does not exist"):
        ev.write_json(tmp_path / "missing" / "r.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.csv", "r.csv", "r.json"]  # no temporary files


def test_probabilities_binary_and_spacing():
    ev = E.SegmentationEvaluator(1, ["background", "nodule"], spacing=0.5)
    truth = np.zeros((8, 8), np.uint8)
    truth[2:5, 2:5] = 1
    probs = np.zeros((8, 8, 1), np.float32)
    probs[2:5, 3:6, 0] = 0.9
    ev.update(truth, probs)
    nodule = ev.result()["per_class"]["nodule"]
    assert nodule["dice"] == pytest.approx(12 / 18)
    assert nodule["hd95"] == pytest.approx(0.5)
    # a per-image spacing overrides the evaluator's
    record = ev.update(truth, probs, name="fine", spacing=(0.25, 0.25))
    assert record["hd95"]["nodule"] == pytest.approx(0.25) and record["spacing"] == [0.25, 0.25]


def test_bad_input_is_a_clear_error():
    ev = E.SegmentationEvaluator(2, ["bg", "fg"])
    with pytest.raises(E.EvaluationError, match=r"y_true \(x.png\) has shape \(4, 4\) but y_pred has shape \(4, 5\)"):
        ev.update(np.zeros((4, 4), int), np.zeros((4, 5), int), name="x.png")
    with pytest.raises(E.EvaluationError, match=r"labels \[7\] outside 0..1"):
        ev.update(np.full((2, 2), 7), np.zeros((2, 2), int))
    with pytest.raises(E.EvaluationError, match="y_pred holds labels"):
        ev.update(np.zeros((2, 2), int), np.full((2, 2), 255))
    with pytest.raises(E.EvaluationError, match="must be an \\(H, W\\) label map"):
        ev.update(np.zeros((2, 2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(E.EvaluationError, match="3 class names given for 2"):
        E.SegmentationEvaluator(2, ["a", "b", "c"])
    with pytest.raises(E.EvaluationError, match="unique"):
        E.SegmentationEvaluator(2, ["a", "a"])
    assert ev.result()["counts"]["images"] == 0  # failed updates left no trace


def test_real_isbi_membrane_label_shifted_by_one_column(isbi_membrane):
    from PIL import Image

    label_dir = isbi_membrane / "data" / "membrane" / "train" / "label"
    if not (label_dir / "0.png").is_file():
        pytest.skip(f"{label_dir / '0.png'} is absent")
    mask = (np.asarray(Image.open(label_dir / "0.png").convert("L")) > 127).astype(np.int64)  # 1 = cell
    mask[:, :2] = 0
    mask[:, -2:] = 0  # keep the shift away from the image edge
    shifted = np.roll(mask, 1, axis=1)
    ev = E.SegmentationEvaluator(2, ["membrane", "cell"])
    ev.update(mask, mask, name="0.png")
    record = ev.update(mask, shifted, name="0.png shifted")
    assert ev.result()["per_image"][0]["dice"]["cell"] == 1.0
    assert ev.result()["per_image"][0]["hd95"]["cell"] == 0.0
    assert 0.5 < record["dice"]["cell"] < 1.0
    # every boundary pixel moved by exactly one column: all surface distances are 0 or 1
    assert 0.0 < record["hd95"]["cell"] <= 1.0
    # ASSD equals OpenCV's exact distance transform evaluated on the surfaces
    a, b = shifted == 1, mask == 1
    sa, sb = E.surface(a), E.surface(b)
    dt_b = cv2.distanceTransform((~sb).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dt_a = cv2.distanceTransform((~sa).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    reference = (dt_b[sa].sum() + dt_a[sb].sum()) / (sa.sum() + sb.sum())
    assert record["assd"]["cell"] == pytest.approx(reference, abs=1e-4)
