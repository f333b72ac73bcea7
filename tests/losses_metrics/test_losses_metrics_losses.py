"""kerasseg.losses against hand-computed values, weights, serialization and a fit step."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from kerasseg import losses as L  # noqa: E402

# One 2x2 image, two classes; the bottom-right pixel is an ignore pixel (255).
Y_TRUE = np.array([[[0, 1], [1, 255]]], dtype=np.int32)
Y_PRED = np.array([[[[0.8, 0.2], [0.3, 0.7]], [[0.4, 0.6], [0.5, 0.5]]]], dtype=np.float32)
# probabilities of the true class at the three valid pixels
P_TRUE = [0.8, 0.7, 0.6]


def value(loss, y_true=Y_TRUE, y_pred=Y_PRED, sample_weight=None) -> float:
    return float(loss(y_true, y_pred, sample_weight))


def test_cross_entropy_hand_computed_ignores_255():
    expected = -sum(math.log(p) for p in P_TRUE) / 3
    assert value(L.CrossEntropyLoss()) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_sample_weight_and_class_weights():
    weight = np.array([[[1.0, 2.0], [0.0, 1.0]]], dtype=np.float32)  # pixel (1,0) ignored by weight
    # valid pixels: (0,0) w=1 p=.8 ; (0,1) w=2 p=.7 ; (1,1) label 255 -> ignored
    expected = -(1 * math.log(0.8) + 2 * math.log(0.7)) / 2
    assert value(L.CrossEntropyLoss(), sample_weight=weight) == pytest.approx(expected, rel=1e-6)
    # class weights multiply the pixel term, denominator stays the count of valid pixels
    expected_cw = -(0.5 * math.log(0.8) + 3.0 * math.log(0.7) + 3.0 * math.log(0.6)) / 3
    assert value(L.CrossEntropyLoss(class_weights=[0.5, 3.0])) == pytest.approx(expected_cw, rel=1e-6)


def _soft_stats(weight=(1.0, 1.0, 1.0)):
    """TP/FP/FN per class over the three valid pixels, written out by hand."""
    # pixels: (label, p0, p1)
    pixels = [(0, 0.8, 0.2), (1, 0.3, 0.7), (1, 0.4, 0.6)]
    stats = []
    for c in (0, 1):
        tp = sum(w * (p0, p1)[c] * (lab == c) for w, (lab, p0, p1) in zip(weight, pixels))
        fp = sum(w * (p0, p1)[c] * (lab != c) for w, (lab, p0, p1) in zip(weight, pixels))
        fn = sum(w * (1 - (p0, p1)[c]) * (lab == c) for w, (lab, p0, p1) in zip(weight, pixels))
        stats.append((tp, fp, fn))
    return stats


def test_dice_jaccard_tversky_focal_tversky_hand_computed():
    stats = _soft_stats()
    dice = np.mean([1 - (2 * tp + 1) / (2 * tp + fp + fn + 1) for tp, fp, fn in stats])
    jac = np.mean([1 - (tp + 1) / (tp + fp + fn + 1) for tp, fp, fn in stats])
    tv = [1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1) for tp, fp, fn in stats]
    assert value(L.DiceLoss()) == pytest.approx(dice, rel=1e-5)
    assert value(L.JaccardLoss()) == pytest.approx(jac, rel=1e-5)
    assert value(L.TverskyLoss()) == pytest.approx(np.mean(tv), rel=1e-5)
    assert value(L.FocalTverskyLoss(gamma=0.75)) == pytest.approx(np.mean([t**0.75 for t in tv]), rel=1e-5)
    # foreground only
    tp, fp, fn = stats[1]
    assert value(L.DiceLoss(include_background=False, smooth=0.0)) == pytest.approx(
        1 - 2 * tp / (2 * tp + fp + fn), rel=1e-5
    )
    # class weights weight the class average
    per_class = [1 - (2 * tp + 1) / (2 * tp + fp + fn + 1) for tp, fp, fn in stats]
    assert value(L.DiceLoss(class_weights=[1.0, 3.0])) == pytest.approx(
        (per_class[0] + 3 * per_class[1]) / 4, rel=1e-5
    )


def test_focal_hand_computed():
    expected = -sum((1 - p) ** 2 * math.log(p) for p in P_TRUE) / 3
    assert value(L.FocalLoss(gamma=2.0)) == pytest.approx(expected, rel=1e-5)
    # gamma 0 is cross-entropy
    assert value(L.FocalLoss(gamma=0.0)) == pytest.approx(value(L.CrossEntropyLoss()), rel=1e-6)


def test_pixel_weight_acts_inside_dice():
    """For region losses, weight 2 on a pixel equals that pixel appearing twice."""
    y_true = np.array([[[0, 1, 1]]], dtype=np.int32)
    y_pred = np.array([[[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]]], dtype=np.float32)
    weight = np.array([[[1.0, 1.0, 2.0]]], dtype=np.float32)
    dup_true = np.array([[[0, 1, 1, 1]]], dtype=np.int32)
    dup_pred = np.concatenate([y_pred, y_pred[:, :, 2:]], axis=2)
    for loss in (L.DiceLoss(smooth=0.5), L.TverskyLoss(), L.JaccardLoss(batch_dice=True)):
        weighted = value(loss, y_true, y_pred, weight)
        duplicated = value(loss, dup_true, dup_pred)
        assert weighted == pytest.approx(duplicated, rel=1e-5), loss.name
        assert weighted != pytest.approx(value(loss, y_true, y_pred), rel=1e-3), loss.name


def test_combined_is_weighted_sum_and_dice_ce_default():
    combined = L.get({"sum": [{"name": "dice", "weight": 2.0}, {"name": "focal", "weight": 0.5}]})
    assert value(combined) == pytest.approx(2 * value(L.DiceLoss()) + 0.5 * value(L.FocalLoss()), rel=1e-6)
    default = L.get("dice_ce", num_classes=2)
    assert isinstance(default, L.DiceCrossEntropyLoss)
    assert value(default) == pytest.approx(value(L.DiceLoss()) + value(L.CrossEntropyLoss()), rel=1e-6)


def test_sigmoid_k1_equals_two_class_softmax_and_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5, 1)).astype(np.float32)
    p = 1 / (1 + np.exp(-logits))
    two = np.concatenate([1 - p, p], axis=-1)
    y = (rng.random((2, 4, 5)) > 0.5).astype(np.int32)
    y[0, 0, 0] = 255
    for name in L.LOSS_NAMES:
        k1 = value(L.get(name, num_classes=1), y, p)
        k2 = value(L.get(name, num_classes=2), y, two)
        k1_logits = value(L.get({"name": name, "from_logits": True}), y, logits)
        assert k1 == pytest.approx(k2, rel=1e-4, abs=1e-6), name
        assert k1_logits == pytest.approx(k1, rel=1e-4, abs=1e-6), name


def test_softmax_logits_and_y_true_with_channel_axis():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    probs = tf.nn.softmax(logits).numpy()
    y = rng.integers(0, 3, size=(2, 3, 3)).astype(np.int32)
    for name in ("ce", "dice", "focal_tversky"):
        a = value(L.get({"name": name, "from_logits": True}), y, logits)
        b = value(L.get(name), y[..., None], probs)
        assert a == pytest.approx(b, rel=1e-4), name


def test_mixed_float16_prediction_gives_float32_loss():
    rng = np.random.default_rng(2)
    probs = tf.nn.softmax(rng.normal(size=(2, 8, 8, 3))).numpy().astype(np.float32)
    y = rng.integers(0, 3, size=(2, 8, 8)).astype(np.int32)
    for name in L.LOSS_NAMES:
        loss = L.get(name)
        full = loss(y, probs)
        half = loss(y, tf.constant(probs, tf.float16), tf.ones((2, 8, 8), tf.float16))
        assert half.dtype == tf.float32
        assert float(half) == pytest.approx(float(full), rel=2e-3, abs=1e-3), name


def test_reduction_none_gives_one_value_per_image_and_empty_image_is_zero():
    y = np.zeros((2, 2, 2), np.int32)
    y[1] = 255  # second image fully ignored
    probs = np.full((2, 2, 2, 2), 0.5, np.float32)
    per_image = L.CrossEntropyLoss(reduction="none")(y, probs).numpy()
    assert per_image.shape == (2,)
    assert per_image[0] == pytest.approx(math.log(2), rel=1e-6)
    assert per_image[1] == 0.0


def test_get_errors_name_the_nearest_valid_choice():
    with pytest.raises(L.LossSpecError, match="did you mean 'dice'"):
        L.get("dise")
    with pytest.raises(L.LossSpecError, match="did you mean 'focal_tversky'"):
        L.get({"name": "focal_tversy"})
    with pytest.raises(L.LossSpecError, match="'smoth'.*did you mean 'smooth'"):
        L.get({"name": "dice", "smoth": 1.0})
    with pytest.raises(L.LossSpecError, match=r"loss.sum\[1\]: unknown loss 'cee'"):
        L.get({"sum": [{"name": "dice"}, {"name": "cee", "weight": 1}]})
    with pytest.raises(L.LossSpecError, match="class_weights has 3 entries, expected 2"):
        L.get({"name": "ce", "class_weights": [1, 2, 3]}, num_classes=1)
    with pytest.raises(L.LossSpecError, match="weight must be a number"):
        L.get({"sum": [{"name": "dice", "weight": "heavy"}]})


def _all_losses():
    return [
        L.CrossEntropyLoss(class_weights=[0.5, 2.0], label_smoothing=0.1, from_logits=True, name="a"),
        L.FocalLoss(gamma=1.5, class_weights=[1.0, 4.0], ignore_index=None),
        L.DiceLoss(smooth=0.5, include_background=False, batch_dice=True),
        L.JaccardLoss(smooth=2.0, class_weights=[1.0, 2.0]),
        L.TverskyLoss(alpha=0.4, beta=0.6, reduction="sum"),
        L.FocalTverskyLoss(alpha=0.2, beta=0.8, gamma=1.5),
        L.DiceCrossEntropyLoss(dice_weight=2.0, ce_weight=0.5, class_weights=[1.0, 3.0]),
        L.get({"sum": [{"name": "dice", "weight": 0.3}, {"name": "focal", "gamma": 3.0}]}),
    ]


@pytest.mark.parametrize("loss", _all_losses(), ids=lambda loss: type(loss).__name__)
def test_config_round_trip(loss):
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == config
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(2, 4, 4))
    p = rng.random((2, 4, 4, 2)).astype(np.float32)
    assert float(restored(y, p)) == pytest.approx(float(loss(y, p)), rel=1e-6)


def _tiny_model(num_outputs: int) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    activation = "sigmoid" if num_outputs == 1 else "softmax"
    outputs = keras.layers.Conv2D(num_outputs, 1, activation=activation)(hidden)
    return keras.Model(inputs, outputs)


def _toy_data():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 8, 8, 1)).astype(np.float32)
    y = (x[..., 0] > 0.2).astype(np.int32)
    w = np.ones((8, 8, 8), np.float32)
    w[:, 0, :] = 0.0
    return x, y, w


@pytest.mark.parametrize("name", [n for n in L.LOSS_NAMES if n != "cross_entropy"])  # skip the alias of "ce"
def test_loss_decreases_under_fit(name):
    x, y, w = _toy_data()
    keras.utils.set_random_seed(0)
    model = _tiny_model(2)
    loss = L.get(name, num_classes=2)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
    before = float(loss(y, model.predict(x, verbose=0), w))
    model.fit(x, y, sample_weight=w, batch_size=8, epochs=15, verbose=0)
    after = float(loss(y, model.predict(x, verbose=0), w))
    assert after < before * 0.9, (name, before, after)


def test_saved_model_file_reloads_loss_without_custom_objects(tmp_path):
    x, y, w = _toy_data()
    model = _tiny_model(1)
    loss = L.get({"sum": [{"name": "focal_tversky", "weight": 0.5}, {"name": "ce", "class_weights": [1, 2]}]})
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, sample_weight=w, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(reloaded.loss, L.CombinedLoss)
    assert reloaded.loss.get_config() == loss.get_config()
    expected = model.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0)
    # Keras hands sample_weight to the loss once; it is applied inside, not again outside
    assert expected == pytest.approx(float(loss(y, model.predict(x, verbose=0), w)), rel=1e-5)
    assert reloaded.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0) == pytest.approx(expected, rel=1e-5)


def test_fit_under_mixed_bfloat16_policy_with_low_precision_output():
    """A model whose output stays bfloat16 still trains; the loss is computed in float32."""
    x, y, w = _toy_data()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = _tiny_model(2)
        assert model.output.dtype == "bfloat16"
        loss = L.get("dice_ce")
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
        history = model.fit(x, y, sample_weight=w, batch_size=8, epochs=6, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    losses = history.history["loss"]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert loss(y, model.predict(x, verbose=0), w).dtype == tf.float32


def test_with_a_kerasseg_unet_emitting_logits():
    """The real model zoo: a 3-class U-Net with logits output trains with from_logits losses/metrics."""
    models = pytest.importorskip("kerasseg.models")
    from kerasseg import metrics as M

    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 16, 16, 1)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int32) + (x[..., 0] > 1).astype(np.int32)
    y[:, 0, 0] = 255
    keras.utils.set_random_seed(0)
    model = models.build(
        "unet", input_shape=(16, 16, 1), num_classes=3, depth=2, base_filters=4, output_activation=None
    )
    loss = L.get({"name": "focal_tversky", "from_logits": True}, num_classes=3)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=loss,
        metrics=M.default_metrics(3, ["bg", "a", "b"], from_logits=True),
    )
    history = model.fit(x, y, batch_size=4, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    logits = model.predict(x, verbose=0)
    assert float(loss(y, logits)) == pytest.approx(float(L.FocalTverskyLoss()(y, tf.nn.softmax(logits))), rel=1e-4)
    evaluation = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    dice = M.MeanDice(3)
    dice.update_state(y, logits)  # argmax of logits == argmax of probabilities
    assert evaluation["mean_dice"] == pytest.approx(float(dice.result()), rel=1e-5)
