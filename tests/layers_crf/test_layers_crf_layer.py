"""DenseCRF as a Keras layer: config, saving, SavedModel export, gradients, batches, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from kerasseg.layers.dense_crf import DenseCRF  # noqa: E402


@pytest.fixture(scope="module")
def crops(pydensecrf_examples, crf_inputs):
    """Two real 64x80 RGB crops with 3-class example probabilities."""
    image, probs, _ = crf_inputs.example(pydensecrf_examples, 3)
    a = (image[40:104, 30:110], probs[40:104, 30:110])
    b = (image[150:214, 100:180], probs[150:214, 100:180])
    return a, b


def _random_probs(rng, shape, k):
    logits = rng.normal(0.0, 2.0, shape + (k,)).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def test_get_config_round_trip():
    layer = DenseCRF(
        iterations=3,
        gaussian_sxy=2.5,
        gaussian_compat=4,
        bilateral_sxy=40,
        bilateral_srgb=[10, 11, 12],
        bilateral_compat=7,
        from_logits=True,
        clip=1e-4,
        gaussian_filter="lattice",
        bilateral_filter="lattice",
        xla_lattice=False,
        name="crf",
    )
    config = layer.get_config()
    clone = DenseCRF.from_config(config)
    assert clone.get_config() == config
    for key, value in dict(
        iterations=3, gaussian_sxy=2.5, gaussian_compat=4.0, bilateral_sxy=40.0,
        bilateral_srgb=[10.0, 11.0, 12.0], bilateral_compat=7.0, from_logits=True, clip=1e-4,
        gaussian_filter="lattice", bilateral_filter="lattice", xla_lattice=False, name="crf",
    ).items():
        assert config[key] == value, key
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, DenseCRF) and restored.get_config() == config


def test_defaults_are_the_pydensecrf_stage_parameters():
    config = DenseCRF().get_config()
    assert (config["iterations"], config["gaussian_sxy"], config["gaussian_compat"]) == (5, 3.0, 3.0)
    assert (config["bilateral_sxy"], config["bilateral_srgb"], config["bilateral_compat"]) == (80.0, 13.0, 10.0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(iterations=-1), dict(gaussian_sxy=0), dict(bilateral_srgb=-1), dict(clip=1.5),
     dict(gaussian_filter="fft"), dict(bilateral_filter="exact")],
)
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DenseCRF(**kwargs)


def test_bad_input_shapes_are_rejected():
    image = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="B,H,W"):
        DenseCRF()([image[0], np.full((8, 8, 2), 0.5, np.float32)])
    with pytest.raises(ValueError, match="bilateral_srgb"):
        DenseCRF(bilateral_srgb=[13.0, 13.0])([image, np.full((1, 8, 8, 2), 0.5, np.float32)])
    with pytest.raises(ValueError, match="image, probabilities"):
        DenseCRF()(image)


def test_batch_equals_single_images_and_rows_sum_to_one(crops):
    (ia, pa), (ib, pb) = crops
    layer = DenseCRF()
    batch = layer([np.stack([ia, ib]), np.stack([pa, pb])]).numpy()
    single_a = layer([ia[None], pa[None]]).numpy()[0]
    single_b = layer([ib[None], pb[None]]).numpy()[0]
    np.testing.assert_allclose(batch[0], single_a, atol=1e-4)
    np.testing.assert_allclose(batch[1], single_b, atol=1e-4)
    np.testing.assert_allclose(batch.sum(-1), 1.0, atol=1e-5)
    # Refinement does something on these crops.
    assert np.abs(single_a - pa).max() > 0.1


def test_any_number_of_classes_matches_pydensecrf(crops, crf_reference):
    rng = np.random.default_rng(0)
    (image, _), _ = crops
    for k in (2, 5):
        probs = _random_probs(rng, image.shape[:2], k)
        q = DenseCRF()([image[None], probs[None]]).numpy()[0]
        np.testing.assert_allclose(q, crf_reference(image, probs), atol=1e-3)


def test_other_parameters_and_channel_counts_match_pydensecrf(crf_reference):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 56, 2)).astype(np.uint8)
    probs = _random_probs(rng, (40, 56), 3)
    params = dict(iterations=2, gaussian_sxy=1.5, gaussian_compat=2.0, bilateral_sxy=9.0,
                  bilateral_srgb=30.0, bilateral_compat=4.0)
    q = DenseCRF(**params)([image[None], probs[None]]).numpy()[0]
    np.testing.assert_allclose(q, crf_reference(image, probs, **params), atol=1e-3)


def test_lattice_without_xla_gives_the_same_result(crops):
    (image, probs), _ = crops
    a = DenseCRF()([image[None], probs[None]]).numpy()
    b = DenseCRF(xla_lattice=False)([image[None], probs[None]]).numpy()
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_iterations_zero_returns_the_normalized_input(crops):
    (image, probs), _ = crops
    q = DenseCRF(iterations=0)([image[None], probs[None]]).numpy()[0]
    np.testing.assert_allclose(q, probs / probs.sum(-1, keepdims=True), atol=1e-6)


def test_sigmoid_output_is_expanded_to_two_classes(crops):
    (image, _), _ = crops
    rng = np.random.default_rng(2)
    p = rng.uniform(0.0, 1.0, image.shape[:2] + (1,)).astype(np.float32)
    one = DenseCRF()([image[None], p[None]]).numpy()[0]
    two = DenseCRF()([image[None], np.concatenate([1 - p, p], -1)[None]]).numpy()[0]
    assert one.shape == p.shape
    np.testing.assert_allclose(one[..., 0], two[..., 1], atol=1e-4)


def test_logits_input_equals_softmax_input(crops):
    (image, _), _ = crops
    logits = np.random.default_rng(3).normal(0, 1, image.shape[:2] + (3,)).astype(np.float32)
    probs = tf.nn.softmax(logits).numpy()
    a = DenseCRF(from_logits=True)([image[None], logits[None]]).numpy()
    b = DenseCRF()([image[None], probs[None]]).numpy()
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("from_logits", [False, True])
def test_gradients_are_finite_and_non_zero(crops, from_logits):
    (image, probs), _ = crops
    x = tf.Variable(np.log(probs)[None] if from_logits else probs[None])
    layer = DenseCRF(from_logits=from_logits)
    target = tf.one_hot(np.argmax(probs, -1)[None], probs.shape[-1])
    with tf.GradientTape() as tape:
        q = layer([tf.constant(image[None]), x])
        loss = -tf.reduce_mean(tf.reduce_sum(target * tf.math.log(q + 1e-7), -1))
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).max() > 0 and np.mean(grad != 0) > 0.5
    # Gradient check along one random direction (finite differences).
    direction = np.random.default_rng(4).normal(0, 1, grad.shape).astype(np.float32)
    eps = 1e-2 if from_logits else 1e-3

    def loss_at(v):
        q = layer([tf.constant(image[None]), tf.constant(v)])
        return float(-tf.reduce_mean(tf.reduce_sum(target * tf.math.log(q + 1e-7), -1)))

    base = x.numpy()
    numeric = (loss_at(base + eps * direction) - loss_at(base - eps * direction)) / (2 * eps)
    analytic = float(np.sum(grad * direction))
    assert numeric == pytest.approx(analytic, rel=0.05, abs=1e-4)


def test_mixed_precision_computes_in_float32(crops):
    (image, probs), _ = crops
    ref = DenseCRF()([image[None], probs[None]]).numpy()
    layer = DenseCRF(dtype="mixed_float16")
    out = layer([tf.constant(image[None]), tf.constant(probs[None], tf.float16)])
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-3)
    # Inside a mixed-precision model, fed by a float16 softmax.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        img_in = keras.Input((None, None, 3), dtype="uint8")
        logit_in = keras.Input((None, None, 3))
        soft = keras.layers.Softmax()(keras.layers.Conv2D(3, 1)(logit_in))
        model = keras.Model([img_in, logit_in], DenseCRF()([img_in, soft]))
        assert model.output.dtype == "float32"
        result = model([image[None], probs[None]])
        assert result.dtype == tf.float32 and np.all(np.isfinite(result.numpy()))
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _crf_model(num_classes: int = 3) -> keras.Model:
    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    probs = keras.Input((None, None, num_classes), name="probabilities")
    refined = DenseCRF(iterations=4, bilateral_srgb=[12.0, 13.0, 14.0], name="crf")([image, probs])
    return keras.Model([image, probs], refined)


def test_keras_file_reloads_without_custom_objects(tmp_path, crops):
    (image, probs), _ = crops
    model = _crf_model()
    expected = model([image[None], probs[None]]).numpy()
    path = tmp_path / "crf.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # no custom_objects: registered as kerasseg>DenseCRF
    layer = reloaded.get_layer("crf")
    assert isinstance(layer, DenseCRF) and layer.iterations == 4 and layer.bilateral_srgb == [12.0, 13.0, 14.0]
    np.testing.assert_allclose(reloaded([image[None], probs[None]]).numpy(), expected, atol=1e-6)


def test_saved_model_with_dynamic_shapes_reloads_and_agrees(tmp_path, crops, crf_reference):
    (ia, pa), (ib, pb) = crops
    layer = DenseCRF()

    class Refiner(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.uint8),
                tf.TensorSpec([None, None, None, 3], tf.float32),
            ],
            jit_compile=False,
        )
        def refine(self, image, probabilities):
            return {"probabilities": layer([image, probabilities])}

    path = str(tmp_path / "saved")
    tf.saved_model.save(Refiner(), path)
    loaded = tf.saved_model.load(path)
    # Two different sizes and batch sizes through the same concrete function.
    out_a = loaded.refine(tf.constant(ia[None]), tf.constant(pa[None]))["probabilities"].numpy()[0]
    np.testing.assert_allclose(out_a, crf_reference(ia, pa), atol=1e-3)
    small_i, small_p = np.stack([ib[:40, :50], ia[:40, :50]]), np.stack([pb[:40, :50], pa[:40, :50]])
    out_b = loaded.refine(tf.constant(small_i), tf.constant(small_p))["probabilities"].numpy()
    assert out_b.shape == (2, 40, 50, 3)
    np.testing.assert_allclose(out_b, layer([small_i, small_p]).numpy(), atol=1e-4)
    np.testing.assert_allclose(out_b[1], crf_reference(ia[:40, :50], pa[:40, :50]), atol=1e-3)


def test_hashed_lattice_index_equals_dense_table(crops, monkeypatch):
    """Feature ranges too wide for the dense occupancy table use tf.unique hashing instead."""
    from kerasseg.layers import crf_permutohedral

    (image, probs), _ = crops
    dense = DenseCRF(xla_lattice=False)([image[None], probs[None]]).numpy()
    monkeypatch.setattr(crf_permutohedral, "DENSE_TABLE_LIMIT", 0)
    hashed = DenseCRF(xla_lattice=False)([image[None], probs[None]]).numpy()
    np.testing.assert_allclose(hashed, dense, atol=1e-4)


def test_trains_end_to_end_with_model_fit(crops):
    """CRF-as-RNN style: a network's logits go through the CRF and model.fit updates the network."""
    (image, probs), (image_b, probs_b) = crops
    keras.utils.set_random_seed(0)
    img_in = keras.Input((None, None, 3), dtype="uint8")
    scaled = keras.layers.Rescaling(1.0 / 255.0)(img_in)
    logits = keras.layers.Conv2D(3, 3, padding="same")(scaled)
    refined = DenseCRF(iterations=2, from_logits=True)([img_in, logits])
    model = keras.Model(img_in, refined)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    x = np.stack([image, image_b])
    y = np.stack([np.argmax(probs, -1), np.argmax(probs_b, -1)])
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=2, epochs=3, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))
