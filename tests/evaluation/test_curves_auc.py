"""kerasseg.curves_auc: histogram AUC-ROC / AUC-PR / best F1 against exact sorted computations,
and their place in SegmentationEvaluator reports."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from kerasseg import evaluation as E
from kerasseg.curves_auc import ProbabilityCurves

# Histogram (16384 bins) vs exact: the only error comes from pixels of different
# probability sharing a bin of width 6.1e-5, which the histogram treats as tied.
# With probabilities spread over [0, 1] that is tiny: measured on the ISBI masks
# below, |AUC-ROC diff| ~2e-8 and |AUC-PR diff| <= 1.3e-5 (6 images; 30 images:
# 9e-8 and 1.4e-5). 1e-4 is the bound the module docstring states, ~7x the worst
# measured gap; an off-by-one-bin, threshold-direction or step-rule mistake costs
# far more (with 1024 bins the AP gap is already 2e-4).
TOLERANCE = 1e-4


# --------------------------------------------------------------------------- exact references


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], sorted_values.size]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def exact_auc_roc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg), ties counted 1/2 through average ranks."""
    ranks = _average_ranks(scores.astype(np.float64))
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def exact_average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Sum over the distinct scores, descending, of (R_i - R_{i-1}) * P_i."""
    order = np.argsort(-scores.astype(np.float64), kind="mergesort")
    s = scores[order]
    y = positive[order].astype(np.float64)
    last_of_group = np.r_[s[1:] != s[:-1], True]  # threshold = each distinct score
    tp = np.cumsum(y)[last_of_group]
    fp = np.cumsum(1.0 - y)[last_of_group]
    recall = tp / y.sum()
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def exact_f1_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    tp = np.count_nonzero(predicted & positive)
    return 2.0 * tp / (np.count_nonzero(predicted) + np.count_nonzero(positive))


# --------------------------------------------------------------------------- real masks


def _isbi_truth_and_probabilities(isbi_membrane, count: int = 6):
    """ISBI label maps (0 membrane, 1 cell; a band of 255 ignore) with blurred, noisy cell probabilities."""
    files = sorted((isbi_membrane / "data" / "membrane" / "train" / "label").glob("*.png"))
    assert len(files) >= count, files
    rng = np.random.default_rng(2012)
    out = []
    for path in files[:count]:
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert label is not None and label.ndim == 2 and set(np.unique(label)) <= {0, 255}
        truth = (label == 255).astype(np.int64)  # 255 = cell -> class 1
        cell = cv2.GaussianBlur(truth.astype(np.float32), (0, 0), 3.0)
        p1 = np.clip(cell + rng.normal(0.0, 0.15, cell.shape).astype(np.float32), 0.0, 1.0)
        truth[:16] = 255  # an ignore band: left out of both computations
        out.append((truth, p1))
    return out


def test_matches_exact_sorted_computation_on_isbi_masks(isbi_membrane):
    images = _isbi_truth_and_probabilities(isbi_membrane)
    softmax = ProbabilityCurves(2, ["membrane", "cell"])
    sigmoid = ProbabilityCurves(1, ["membrane", "cell"])
    for truth, p1 in images:
        p64 = p1.astype(np.float64)  # 1 - p in float64 in both, so both bin the same values
        softmax.update(truth, np.stack([1.0 - p64, p64], axis=-1))
        sigmoid.update(truth, p1[..., None])
    truth_all = np.concatenate([t[t != 255] for t, _ in images])
    p1_all = np.concatenate([p[t != 255] for t, p in images]).astype(np.float64)

    result = softmax.result()
    assert sigmoid.result() == result  # one channel read as class 1, 1 - p as class 0
    for c, name, scores in ((1, "cell", p1_all), (0, "membrane", 1.0 - p1_all)):
        positive = truth_all == c
        got = result[name]
        assert got["positives"] == int(positive.sum()) and got["negatives"] == int((~positive).sum())
        roc, ap = exact_auc_roc(scores, positive), exact_average_precision(scores, positive)
        assert 0.5 < roc < 0.999 and 0.3 < ap < 0.999  # a real, imperfect curve
        assert got["auc_roc"] == pytest.approx(roc, abs=TOLERANCE)
        assert got["auc_pr"] == pytest.approx(ap, abs=TOLERANCE)
        # the reported best F1 is the F1 of its own threshold, and no edge tried does better
        assert got["best_f1"] == pytest.approx(exact_f1_at(scores, positive, got["best_threshold"]), abs=1e-9)
        for t in np.linspace(0.05, 0.95, 19):
            assert exact_f1_at(scores, positive, t) <= got["best_f1"] + 1e-12


def test_multiclass_one_vs_rest_and_best_f1_over_every_edge():
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 3, size=(60, 70))
    logits = rng.normal(size=(60, 70, 3)) + 1.5 * np.eye(3)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    curves = ProbabilityCurves(3, ["a", "b", "c"], bins=64)
    curves.update(truth, probs)
    fine = ProbabilityCurves(3, ["a", "b", "c"])
    fine.update(truth, probs)
    for c, name in enumerate("abc"):
        positive = (truth == c).ravel()
        scores = probs[..., c].ravel()
        assert fine.result()[name]["auc_roc"] == pytest.approx(exact_auc_roc(scores, positive), abs=TOLERANCE)
        assert fine.result()[name]["auc_pr"] == pytest.approx(
            exact_average_precision(scores, positive), abs=TOLERANCE
        )
        got = curves.result()[name]
        brute = [exact_f1_at(scores, positive, j / 64) for j in range(64)]
        assert got["best_f1"] == pytest.approx(max(brute), abs=1e-12)
        assert got["best_threshold"] == int(np.argmax(brute)) / 64  # smallest edge reaching the best


# --------------------------------------------------------------------------- edge cases


def test_perfect_and_inverted_probabilities():
    truth = np.zeros((20, 20), np.int64)
    truth[5:12, 3:9] = 1
    onehot = np.eye(2)[truth]
    perfect = ProbabilityCurves(2, ["background", "lesion"])
    perfect.update(truth, onehot)
    for scores in perfect.result().values():
        assert scores["auc_roc"] == 1.0 and scores["auc_pr"] == 1.0 and scores["best_f1"] == 1.0
        assert 0.0 < scores["best_threshold"] <= 1.0
    inverted = ProbabilityCurves(2, ["background", "lesion"])
    inverted.update(truth, 1.0 - onehot)
    for scores in inverted.result().values():
        assert scores["auc_roc"] == 0.0
        # the best any threshold can do is predict everything positive
        assert scores["best_threshold"] == 0.0
        assert scores["best_f1"] == pytest.approx(2 * scores["positives"] / (2 * scores["positives"] + scores["negatives"]))


def test_ignore_pixels_are_excluded():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, size=(32, 32))
    truth[:, :8] = 255
    probs = rng.uniform(size=(32, 32, 1))
    a = ProbabilityCurves(2, ["x", "y"])
    a.update(truth, probs)
    changed = probs.copy()
    changed[:, :8] = rng.uniform(size=(32, 8, 1))
    b = ProbabilityCurves(2, ["x", "y"])
    b.update(truth, changed)
    assert a.result() == b.result()
    np.testing.assert_array_equal(a.positives, b.positives)
    np.testing.assert_array_equal(a.negatives, b.negatives)
    for scores in a.result().values():
        assert scores["positives"] + scores["negatives"] == 32 * 24
    # a different ignore index: 255 is then a label out of range
    with pytest.raises(ValueError, match="outside 0..1"):
        ProbabilityCurves(2, ["x", "y"], ignore_index=None).update(truth, probs)


def test_class_without_positives_or_negatives_is_none():
    truth = np.zeros((10, 10), np.int64)
    truth[:5] = 1
    probs = np.full((10, 10, 3), 1 / 3)
    curves = ProbabilityCurves(3, ["bg", "a", "b"])
    curves.update(truth, probs)
    absent = curves.result()["b"]
    assert absent == {"auc_roc": None, "auc_pr": None, "best_f1": None, "best_threshold": None,
                      "positives": 0, "negatives": 100}
    everywhere = ProbabilityCurves(2, ["bg", "a"])
    everywhere.update(np.ones((4, 4), np.int64), np.full((4, 4, 1), 0.7))
    assert everywhere.result()["a"]["auc_roc"] is None and everywhere.result()["a"]["negatives"] == 0
    empty = ProbabilityCurves(2, ["bg", "a"])
    assert all(v["auc_pr"] is None for v in empty.result().values())


def test_shape_errors_name_the_shapes():
    curves = ProbabilityCurves(2, ["bg", "a"])
    truth = np.zeros((4, 4), np.int64)
    with pytest.raises(ValueError, match=r"\(4, 5, 2\).*\(4, 4\)|\(4, 4\).*\(4, 5, 2\)"):
        curves.update(truth, np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match=r"\(4, 4, 3\)"):
        curves.update(truth, np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        curves.update(truth, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(4, 4, 1\)"):
        curves.update(np.zeros((4, 4, 1), np.int64), np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        curves.update(truth, np.full((4, 4, 2), 1.5))
    with pytest.raises(ValueError, match="finite"):
        curves.update(truth, np.full((4, 4, 2), np.nan))
    with pytest.raises(ValueError, match="2 class names given for 3 classes"):
        ProbabilityCurves(3, ["bg", "a"])
    assert curves.images == 0 and curves.positives.sum() == 0 and curves.negatives.sum() == 0


# --------------------------------------------------------------------------- evaluator


def _pairs():
    truth = np.zeros((16, 16), np.int64)
    truth[4:10, 4:10] = 1
    truth[0, :] = 255
    p1 = cv2.GaussianBlur(truth.clip(0, 1).astype(np.float32), (0, 0), 2.0)
    probs = np.stack([1.0 - p1, p1], axis=-1)
    empty_truth = np.zeros((16, 16), np.int64)
    return [(truth, probs), (empty_truth, np.stack([np.ones((16, 16)), np.zeros((16, 16))], axis=-1))]


def test_evaluator_without_probabilities_keeps_the_old_report(tmp_path):
    ev = E.SegmentationEvaluator(2, ["background", "lesion"])
    for i, (truth, probs) in enumerate(_pairs()):
        record = ev.update(truth, probs, name=f"id{i}", filename=f"img{i}.png")
        assert record["filename"] == f"img{i}.png"
    ev.update(*_pairs()[0], name="no file")
    report = ev.result()
    assert [r["filename"] for r in report["per_image"]] == ["img0.png", "img1.png", None]
    assert [r["name"] for r in report["per_image"]] == ["id0", "id1", "no file"]
    assert "mean_auc_roc" not in report and "mean_auc_pr" not in report
    assert "images_with_probabilities" not in report["counts"]
    for entry in report["per_class"].values():
        assert not {"auc_roc", "auc_pr", "best_f1", "best_threshold"} & entry.keys()
    assert "AUC" not in ev.format_table()
    ev.write_csv(tmp_path / "r.csv")
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert "auc_roc" not in header and header[-1] == "images_false_positive"
    ev.write_per_image_csv(tmp_path / "img.csv")
    rows = list(csv.DictReader((tmp_path / "img.csv").open()))
    assert [r["filename"] for r in rows] == ["img0.png", "img1.png", ""]
    assert [r["name"] for r in rows] == ["id0", "id1", "no file"]


def test_evaluator_with_probabilities_reports_aucs(tmp_path):
    ev = E.SegmentationEvaluator(2, ["background", "lesion"])
    pairs = _pairs()
    for i, (truth, probs) in enumerate(pairs):
        ev.update(truth, probs, name=f"id{i}", probabilities=probs, filename=f"img{i}.png")
    report = ev.result()
    assert report["counts"]["images_with_probabilities"] == 2
    lesion = report["per_class"]["lesion"]
    valid = np.concatenate([t[t != 255] for t, _ in pairs])
    scores = np.concatenate([p[..., 1][t != 255] for t, p in pairs])
    assert lesion["auc_roc"] == pytest.approx(exact_auc_roc(scores, valid == 1), abs=TOLERANCE)
    assert lesion["auc_pr"] == pytest.approx(exact_average_precision(scores, valid == 1), abs=TOLERANCE)
    assert 0 < lesion["best_f1"] <= 1 and 0 <= lesion["best_threshold"] <= 1
    # class 0 is a background: the means run over the foreground class only
    assert report["mean_auc_roc"] == lesion["auc_roc"] and report["mean_auc_pr"] == lesion["auc_pr"]
    table = ev.format_table()
    assert "AUC-ROC" in table and "AUC-PR" in table and "mean AUC-ROC" in table
    assert table.splitlines()[0] == "Intersection over Union for each class:"

    ev.write_json(tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert loaded["per_class"]["lesion"]["auc_roc"] == pytest.approx(lesion["auc_roc"])
    assert loaded["per_image"][1]["filename"] == "img1.png"
    ev.write_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["class_name"] for r in rows] == ["background", "lesion", "mean"]
    assert float(rows[1]["auc_roc"]) == pytest.approx(lesion["auc_roc"], abs=1e-5)
    assert float(rows[2]["auc_pr"]) == pytest.approx(report["mean_auc_pr"], abs=1e-5)
    assert rows[2]["best_f1"] == "" and rows[1]["best_f1"] != ""


def test_evaluator_none_aucs_stay_json_null(tmp_path):
    # ISBI-like names (no background class): both classes are foreground; one has no positives
    ev = E.SegmentationEvaluator(3, ["membrane", "cell", "vesicle"], surface_metrics=False)
    truth = np.zeros((8, 8), np.int64)
    truth[2:6, 2:6] = 1
    probs = np.full((8, 8, 3), 0.2)
    probs[..., 1] = np.where(truth == 1, 0.7, 0.1)
    probs[..., 0] = 1.0 - probs[..., 1] - probs[..., 2]
    ev.update(truth, probs.argmax(-1), probabilities=probs)
    report = ev.result()
    assert report["per_class"]["vesicle"]["auc_roc"] is None
    assert report["mean_auc_roc"] == pytest.approx(1.0)  # membrane and cell, vesicle's None left out
    assert "AUC-ROC n/a" in ev.format_table()
    ev.write_json(tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text)["per_class"]["vesicle"]["best_f1"] is None and "NaN" not in text
    ev.write_csv(tmp_path / "r.csv")  # None -> empty cell


def test_evaluator_binary_sigmoid_and_bad_probabilities():
    ev = E.SegmentationEvaluator(1, ["background", "nodule"])
    truth = np.zeros((8, 8), np.int64)
    truth[2:5, 2:5] = 1
    probs = np.where(truth == 1, 0.9, 0.2)[..., None].astype(np.float32)
    ev.update(truth, probs, probabilities=probs)
    assert ev.result()["per_class"]["nodule"]["auc_roc"] == 1.0
    with pytest.raises(E.EvaluationError, match=r"probabilities \(bad\).*\(8, 8\)"):
        ev.update(truth, probs, name="bad", probabilities=np.zeros((8, 9, 1), np.float32))
    assert len(ev.result()["per_image"]) == 1 and ev.result()["counts"]["images_with_probabilities"] == 1
    ev.reset()
    assert "mean_auc_roc" not in ev.result()
