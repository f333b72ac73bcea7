"""kerasseg.metrics against hand-computed confusion matrices, empty masks, Keras integration."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from kerasseg import metrics as M  # noqa: E402
from kerasseg.losses import DiceLoss  # noqa: E402


def onehot_probs(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Probabilities whose argmax is ``labels``."""
    probs = np.full(labels.shape + (num_classes,), 0.1 / num_classes, np.float32)
    np.put_along_axis(probs, labels[..., None], 0.9, axis=-1)
    return probs


# 3 classes, one 3x4 image. Truth and prediction written out; 255 = ignore.
TRUTH = np.array([[[0, 0, 1, 1], [0, 2, 1, 255], [0, 0, 1, 1]]])
PRED = np.array([[[0, 1, 1, 1], [0, 0, 1, 2], [0, 0, 1, 0]]])
# Confusion matrix by hand (rows truth, columns prediction), 11 counted pixels:
#   truth 0 (5 px): pred 0,1,0,0,0 -> [4, 1, 0]
#   truth 1 (5 px): pred 1,1,1,1,0 -> [1, 4, 0]
#   truth 2 (1 px): pred 0         -> [1, 0, 0]
HAND_CM = np.array([[4, 1, 0], [1, 4, 0], [1, 0, 0]], np.float32)


def test_confusion_matrix_matches_hand_count():
    cm = M.confusion_matrix(TRUTH, onehot_probs(np.where(PRED == 255, 0, PRED), 3), num_classes=3)
    np.testing.assert_array_equal(cm.numpy(), HAND_CM)


def test_scores_hand_computed():
    metric_values = {}
    for cls, key in [(M.IoU, "iou"), (M.Dice, "dice"), (M.Sensitivity, "sens"), (M.Specificity, "spec"), (M.Precision, "prec")]:
        for c in range(3):
            m = cls(3, class_id=c)
            m.update_state(TRUTH, onehot_probs(PRED, 3))
            metric_values[(key, c)] = float(m.result())
    # class 0: TP 4, FP 2, FN 1, TN 4 ; class 1: TP 4, FP 1, FN 1, TN 5 ; class 2: TP 0, FP 0, FN 1, TN 10
    expected = {
        ("iou", 0): 4 / 7, ("iou", 1): 4 / 6, ("iou", 2): 0.0,
        ("dice", 0): 8 / 11, ("dice", 1): 8 / 10, ("dice", 2): 0.0,
        ("sens", 0): 4 / 5, ("sens", 1): 4 / 5, ("sens", 2): 0.0,
        ("spec", 0): 4 / 6, ("spec", 1): 5 / 6, ("spec", 2): 1.0,
        # class 2 is never predicted but present in truth: 0/0 precision -> 0.0
        ("prec", 0): 4 / 6, ("prec", 1): 4 / 5, ("prec", 2): 0.0,
    }
    for key, want in expected.items():
        assert metric_values[key] == pytest.approx(want, rel=1e-6), key
    mean_iou = M.MeanIoU(3)
    mean_iou.update_state(TRUTH, onehot_probs(PRED, 3))
    assert float(mean_iou.result()) == pytest.approx((4 / 7 + 4 / 6 + 0) / 3, rel=1e-6)
    acc = M.PixelAccuracy(3)
    acc.update_state(TRUTH, onehot_probs(PRED, 3))
    assert float(acc.result()) == pytest.approx(8 / 11, rel=1e-6)


def test_empty_masks_have_defined_values():
    empty_truth = np.zeros((1, 4, 4), np.int32)
    # class 1 absent from truth and prediction -> 1.0 for every ratio
    for cls in (M.IoU, M.Dice, M.Sensitivity, M.Precision):
        m = cls(2, class_id=1)
        m.update_state(empty_truth, onehot_probs(empty_truth, 2))
        assert float(m.result()) == 1.0, cls.__name__
    # class 1 predicted where truth is empty -> 0.0 (never NaN)
    pred = empty_truth.copy()
    pred[0, 0, 0] = 1
    for cls in (M.IoU, M.Dice, M.Sensitivity, M.Precision):
        m = cls(2, class_id=1)
        m.update_state(empty_truth, onehot_probs(pred, 2))
        assert float(m.result()) == 0.0, cls.__name__
    # missed: truth has class 1, prediction empty
    m = M.Dice(2, class_id=1)
    m.update_state(pred, onehot_probs(empty_truth, 2))
    assert float(m.result()) == 0.0
    # nothing seen yet, or everything ignored -> 0.0, not NaN
    fresh = M.MeanDice(2)
    assert float(fresh.result()) == 0.0
    fresh.update_state(np.full((1, 2, 2), 255), onehot_probs(np.zeros((1, 2, 2), np.int64), 2))
    assert float(fresh.result()) == 0.0


def test_sample_weight_masks_by_default_and_weights_when_asked():
    truth = np.array([[[1, 1, 0, 0]]])
    pred = np.array([[[1, 0, 0, 0]]])
    weight = np.array([[[1.0, 0.0, 3.0, 1.0]]], np.float32)  # second pixel ignored
    plain = M.Dice(2, class_id=1)
    plain.update_state(truth, onehot_probs(pred, 2), weight)
    assert float(plain.result()) == 1.0  # the only miss was the ignored pixel
    weighted = M.PixelAccuracy(2, weighted=True)
    weighted.update_state(np.array([[[1, 0]]]), onehot_probs(np.array([[[0, 0]]]), 2), np.array([[[1.0, 3.0]]]))
    assert float(weighted.result()) == pytest.approx(3 / 4)
    unweighted = M.PixelAccuracy(2)
    unweighted.update_state(np.array([[[1, 0]]]), onehot_probs(np.array([[[0, 0]]]), 2), np.array([[[1.0, 3.0]]]))
    assert float(unweighted.result()) == pytest.approx(1 / 2)


def test_streaming_equals_one_big_batch_and_reset():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(4, 6, 6))
    probs = rng.random((4, 6, 6, 3)).astype(np.float32)
    whole = M.MeanIoU(3)
    whole.update_state(truth, probs)
    parts = M.MeanIoU(3)
    parts.update_state(truth[:1], probs[:1])
    parts.update_state(truth[1:], probs[1:])
    assert float(parts.result()) == pytest.approx(float(whole.result()), rel=1e-6)
    parts.reset_state()
    assert float(parts.result()) == 0.0


def test_sigmoid_k1_threshold_and_logits():
    truth = np.array([[[1, 1, 0, 0]]])
    prob = np.array([[[0.7, 0.4, 0.6, 0.1]]], np.float32)[..., None]
    m = M.Dice(1, class_id=1)
    m.update_state(truth, prob)
    # TP 1 (0.7), FN 1 (0.4), FP 1 (0.6) -> 2/4
    assert float(m.result()) == pytest.approx(0.5)
    logits = np.log(prob / (1 - prob))
    m2 = M.Dice(1, class_id=1, from_logits=True)
    m2.update_state(truth, logits)
    assert float(m2.result()) == pytest.approx(0.5)
    strict = M.Dice(1, class_id=1, threshold=0.65)
    strict.update_state(truth, prob)
    assert float(strict.result()) == pytest.approx(2 / 3)  # TP 1, FN 1


def test_mixed_precision_inputs():
    truth = np.array([[[1, 0], [1, 1]]])
    probs = tf.constant(onehot_probs(np.array([[[1, 0], [0, 1]]]), 2), tf.float16)
    m = M.MeanDice(2)
    m.update_state(truth, probs, tf.ones((1, 2, 2), tf.float16))
    # class 0: TP1 FP1 FN0 -> 2/3 ; class 1: TP2 FP0 FN1 -> 4/5
    assert float(m.result()) == pytest.approx((2 / 3 + 4 / 5) / 2, rel=1e-6)


def test_default_metrics_names_and_config_round_trip():
    metrics = M.default_metrics(2, ["_background_", "Left Atrium"])
    names = [m.name for m in metrics]
    assert names[0] == "mean_dice"
    assert {"mean_iou", "pixel_accuracy", "dice_background", "iou_background", "dice_left_atrium", "iou_left_atrium"} <= set(names)
    assert len(names) == len(set(names))
    for metric in metrics:
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
        assert type(restored) is type(metric)
        assert restored.get_config() == metric.get_config()
    with pytest.raises(ValueError, match="3 class names given for 2 label classes"):
        M.default_metrics(1, ["a", "b", "c"])


def test_model_evaluate_matches_hand_computed_and_reloads(tmp_path):
    truth = np.array([[[0, 1], [1, 1]], [[0, 0], [1, 255]]], np.int32)
    pred = np.array([[[0, 1], [0, 1]], [[1, 0], [1, 0]]], np.int64)
    inputs = keras.Input((2, 2, 2))
    model = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
    model.compile(loss=DiceLoss(), metrics=M.default_metrics(2, ["bg", "fg"]))
    x = onehot_probs(pred, 2)
    results = model.evaluate(x, truth, batch_size=1, verbose=0, return_dict=True)
    # counted pixels 7: truth0 -> pred [0,1,0] : [2,1] ; truth1 -> pred [1,0,1,1] : [1,3]
    assert results["dice_fg"] == pytest.approx(6 / 8)
    assert results["iou_bg"] == pytest.approx(2 / 4)
    assert results["pixel_accuracy"] == pytest.approx(5 / 7)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    again = reloaded.evaluate(x, truth, batch_size=2, verbose=0, return_dict=True)
    assert again["mean_dice"] == pytest.approx(results["mean_dice"])


def test_streaming_metrics_agree_with_full_resolution_evaluator():
    """Both implementations follow one definition, empty-class rule included."""
    from kerasseg.evaluation import SegmentationEvaluator

    rng = np.random.default_rng(11)
    for trial in range(3):
        truth = rng.integers(0, 3, size=(3, 9, 7))  # class 3 never in truth ...
        pred = rng.integers(0, 4 if trial else 3, size=(3, 9, 7))  # ... and predicted only sometimes
        truth[0, 0, :3] = 255
        evaluator = SegmentationEvaluator(4, ["a", "b", "c", "d"], surface_metrics=False)
        for t, p in zip(truth, pred):
            evaluator.update(t, p)
        report = evaluator.result()
        scores = M.scores_from_confusion(M.confusion_matrix(truth, onehot_probs(pred, 4), num_classes=4))
        for key in ("iou", "dice", "sensitivity", "specificity", "precision"):
            for c, name in enumerate("abcd"):
                got = float(scores[key][c])
                assert got == pytest.approx(report["per_class"][name][key], abs=1e-6), (trial, key, c)
        mean_dice = M.MeanDice(4)
        mean_dice.update_state(truth, onehot_probs(pred, 4))
        assert float(mean_dice.result()) == pytest.approx(report["mean_dice"], abs=1e-6)
