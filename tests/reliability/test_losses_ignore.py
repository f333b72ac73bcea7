"""Losses on ignored pixels (issue 20 row 5): every loss gives a finite value and finite
gradients when all, or half, of a batch is ignore, and one fit step keeps weights finite."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from kerasseg import losses  # noqa: E402

# every registered name, options that change the maths of the empty case, and sums
SPECS = [*losses.LOSS_NAMES] + [
    {"name": "dice", "smooth": 0.0},
    {"name": "tversky", "smooth": 0.0, "batch_dice": True},
    {"name": "focal_tversky", "gamma": 0.5, "include_background": False},
    {"name": "focal", "gamma": 0.5},
    {"name": "focal", "gamma": 0.0},
    {"name": "ce", "label_smoothing": 0.1, "class_weights": "per-class"},
    {"sum": [{"name": "dice", "weight": 1.0}, {"name": "focal_tversky", "weight": 2.0}]},
    {"sum": [{"name": "focal", "weight": 1.0}, {"name": "jaccard", "weight": 0.5}]},
]


def _spec(spec, *, num_classes: int, from_logits: bool):
    """``spec`` with ``from_logits`` (and per-class weights) filled in for ``num_classes``."""
    def term(item):
        item = {"name": item} if isinstance(item, str) else dict(item)
        if item.get("class_weights") == "per-class":
            item["class_weights"] = [1.0 + c for c in range(max(num_classes, 2))]
        item["from_logits"] = from_logits
        return item

    if isinstance(spec, dict) and "sum" in spec:
        return {"sum": [{**term(t), "weight": t.get("weight", 1.0)} for t in spec["sum"]]}
    return term(spec)


def _batch(case: str, num_classes: int, rng: np.random.Generator):
    labels = rng.integers(0, max(num_classes, 2), (2, 8, 8))
    weights = np.ones((2, 8, 8), np.float32)
    if case == "labels_255":
        labels[:] = 255
    elif case == "weights_0":
        weights[:] = 0.0
    elif case == "half_ignore":
        labels[0] = 255  # the whole first image
        labels[1, :4] = 255  # and half of the second
    return labels, weights


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s if isinstance(s, str) else str(s)[:60])
def test_every_loss_is_finite_with_finite_gradients_on_ignored_pixels(spec):
    rng = np.random.default_rng(0)
    for num_classes in (1, 2, 3):
        # saturated logits: softmax/sigmoid give exact 0 and 1 probabilities (the NaN trigger)
        logits = tf.Variable((rng.normal(size=(2, 8, 8, num_classes)) * 40).astype(np.float32))
        for from_logits in (False, True):
            loss = losses.get(_spec(spec, num_classes=num_classes, from_logits=from_logits), num_classes=num_classes)
            for case in ("labels_255", "weights_0", "half_ignore"):
                labels, weights = _batch(case, num_classes, rng)
                with tf.GradientTape() as tape:
                    if from_logits:
                        y_pred = tf.identity(logits)
                    else:
                        y_pred = tf.sigmoid(logits) if num_classes == 1 else tf.nn.softmax(logits)
                    value = loss(labels, y_pred, sample_weight=weights)
                grad = tape.gradient(value, logits)
                where = f"{spec} K={num_classes} from_logits={from_logits} {case}"
                assert np.isfinite(value.numpy()), where
                assert grad is not None and np.all(np.isfinite(grad.numpy())), where
                if case != "half_ignore":
                    # nothing to learn from: loss 0, and no pull on any weight
                    assert value.numpy() == pytest.approx(0.0, abs=1e-6), where
                    assert np.abs(grad.numpy()).max() == pytest.approx(0.0, abs=1e-6), where


def test_one_fit_step_on_an_all_ignore_batch_keeps_every_weight_finite():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses.get("focal_tversky", num_classes=2))
    images = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype(np.float32)
    ignore = np.full((4, 16, 16), 255, np.int32)
    history = model.fit(images, ignore, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    zero_weights = np.zeros((4, 16, 16), np.float32)
    model.fit(images, np.zeros((4, 16, 16), np.int32), sample_weight=zero_weights, batch_size=4, epochs=1, verbose=0)
    weights = model.get_weights()
    assert len(weights) == 8
    assert all(np.all(np.isfinite(w)) for w in weights)
