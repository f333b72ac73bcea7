"""Custom layers of the model zoo: exact behaviour and full get_config round-trips."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from kerasseg.layers import register_all  # noqa: E402
from kerasseg.layers.aspp import ASPP  # noqa: E402
from kerasseg.layers.attention import AttentionGate  # noqa: E402
from kerasseg.layers.initializers import BilinearKernel  # noqa: E402
from kerasseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D  # noqa: E402
from kerasseg.layers.resize import AdaptiveAveragePooling2D, ResizeByFactor, ResizeToMatch  # noqa: E402

# every constructor argument set to a non-default value
NON_DEFAULT = [
    (MaxPoolingWithArgmax2D, dict(pool_size=(3, 2), strides=(2, 1), padding="same")),
    (MaxUnpooling2D, dict(size=(2, 3))),
    (AttentionGate, dict(intermediate_channels=5, subsample=1, output_projection=False, return_attention=True,
                         kernel_initializer="glorot_uniform")),
    (ASPP, dict(filters=12, rates=(6, 12, 18, 24), image_pooling=False, separable=True, dropout=0.3,
                batchnorm_momentum=0.9, batchnorm_epsilon=1e-5, kernel_initializer="glorot_normal")),
    (AdaptiveAveragePooling2D, dict(output_size=(3, 6))),
    (ResizeToMatch, dict(interpolation="nearest")),
    (ResizeByFactor, dict(factor=(4, 2), interpolation="nearest")),
]


def _normalise(value):
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, str) and value in ("glorot_uniform", "glorot_normal", "he_normal"):
        return keras.initializers.serialize(keras.initializers.get(value))["class_name"]
    if isinstance(value, dict) and "class_name" in value:
        return value["class_name"]
    return value


@pytest.mark.parametrize("cls,kwargs", NON_DEFAULT, ids=lambda v: getattr(v, "__name__", ""))
def test_get_config_round_trips_every_constructor_argument(cls, kwargs):
    layer = cls(name="probe", **kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        assert _normalise(config[key]) == _normalise(value), key
    clone = cls.from_config(config)
    assert clone.get_config() == config
    # the registered name resolves through Keras' own deserialisation (no custom_objects)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is cls and restored.get_config() == config


def test_register_all_registers_under_the_kerasseg_package():
    register_all()
    for cls, _ in NON_DEFAULT:
        assert keras.saving.get_registered_object(f"kerasseg>{cls.__name__}") is cls
    assert keras.saving.get_registered_object("kerasseg>BilinearKernel") is BilinearKernel


def test_argmax_pooling_and_unpooling_put_maxima_back_in_place():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 8, 3)).astype("float32")
    pooled, idx = MaxPoolingWithArgmax2D(2)(x)
    pooled, idx = pooled.numpy(), idx.numpy()
    windows = x.reshape(2, 3, 2, 4, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 3, 4, 3, 4)
    np.testing.assert_allclose(pooled, windows.max(-1))
    assert idx.dtype == np.int64
    out = MaxUnpooling2D(2)([pooled, idx]).numpy()
    assert out.shape == x.shape
    # each window keeps exactly its maximum at the argmax position, zeros elsewhere
    expected = np.where(x == np.repeat(np.repeat(windows.max(-1), 2, 1), 2, 2), x, 0.0)
    np.testing.assert_allclose(out, expected)
    # not nearest-neighbour up-sampling
    assert np.count_nonzero(out) == pooled.size


def test_unpooling_gradient_reaches_the_values_only_at_recorded_positions():
    x = tf.constant(np.arange(16, dtype="float32").reshape(1, 4, 4, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        pooled, idx = MaxPoolingWithArgmax2D(2)(x)
        out = MaxUnpooling2D(2)([pooled, idx])
        loss = tf.reduce_sum(out * 2.0)
    grad = tape.gradient(loss, x).numpy()[0, :, :, 0]
    assert grad.sum() == 8.0 and np.count_nonzero(grad) == 4
    assert grad[1, 1] == grad[1, 3] == grad[3, 1] == grad[3, 3] == 2.0


def test_adaptive_pooling_matches_pytorch_style_bins_for_uneven_sizes():
    rng = np.random.default_rng(1)
    x = rng.random((2, 7, 10, 4)).astype("float32")
    out = AdaptiveAveragePooling2D((3, 6))(x).numpy()
    expected = np.zeros((2, 3, 6, 4), "float32")
    for i in range(3):
        r0, r1 = (i * 7) // 3, -((-(i + 1) * 7) // 3)
        for j in range(6):
            c0, c1 = (j * 10) // 6, -((-(j + 1) * 10) // 6)
            expected[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(AdaptiveAveragePooling2D(1)(x).numpy()[:, 0, 0], x.mean(axis=(1, 2)), rtol=1e-5)


def test_resize_to_match_follows_a_dynamic_reference():
    inp = keras.Input((None, None, 2))
    ref = keras.Input((None, None, 5))
    model = keras.Model([inp, ref], ResizeToMatch()([inp, ref]))
    out = model([np.ones((1, 3, 3, 2), "float32"), np.zeros((1, 12, 9, 5), "float32")])
    assert out.shape == (1, 12, 9, 2)
    np.testing.assert_allclose(out.numpy(), 1.0, rtol=1e-6)


def test_resize_by_factor_matches_keras_bilinear_upsampling():
    x = np.random.default_rng(0).random((2, 5, 7, 3), dtype=np.float32)
    expected = keras.layers.UpSampling2D((4, 2), interpolation="bilinear")(x).numpy()
    np.testing.assert_allclose(ResizeByFactor((4, 2))(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert ResizeByFactor(4).compute_output_shape((None, None, 8, 3)) == (None, None, 32, 3)
    with pytest.raises(ValueError, match="factor"):
        ResizeByFactor(0)


def test_attention_gate_shapes_and_coefficients():
    x = np.random.default_rng(0).random((2, 16, 16, 8)).astype("float32")
    g = np.random.default_rng(1).random((2, 8, 8, 16)).astype("float32")
    y, alpha = AttentionGate(return_attention=True)([x, g])
    assert y.shape == x.shape and alpha.shape == (2, 16, 16, 1)
    assert np.all((alpha.numpy() >= 0) & (alpha.numpy() <= 1))
    gate = AttentionGate(output_projection=False, return_attention=True)
    y, alpha = gate([x, g])
    np.testing.assert_allclose(y.numpy(), x * alpha.numpy(), rtol=1e-5)
    # x's own projection is sub-sampled by a 2x2 stride-2 conv, g's by a 1x1 conv (Oktay 2018)
    assert gate.theta_x.kernel.shape == (2, 2, 8, 4) and gate.phi_g.kernel.shape == (1, 1, 16, 4)


def test_attention_gate_on_volumes_uses_3d_convolutions_and_trilinear_coefficients():
    x = np.random.default_rng(0).random((2, 8, 12, 16, 6)).astype("float32")
    g = np.random.default_rng(1).random((2, 4, 6, 8, 10)).astype("float32")
    gate = AttentionGate(output_projection=False, return_attention=True)
    y, alpha = gate([x, g])
    assert y.shape == x.shape and alpha.shape == (2, 8, 12, 16, 1)
    np.testing.assert_allclose(y.numpy(), x * alpha.numpy(), rtol=1e-5)
    assert gate.theta_x.kernel.shape == (2, 2, 2, 6, 3) and gate.phi_g.kernel.shape == (1, 1, 1, 10, 3)
    projected = AttentionGate()
    assert projected([x, g]).shape == x.shape and projected.project.kernel.shape == (1, 1, 1, 6, 6)
    with pytest.raises(ValueError, match="rank 4 .images. or 5 .volumes."):
        AttentionGate()([x, g[:, 0]])


def test_trilinear_resize_is_bilinear_in_plane_and_linear_along_depth():
    from kerasseg.layers.attention import _resize_linear

    rng = np.random.default_rng(2)
    plane = rng.random((1, 1, 3, 5, 2)).astype("float32")
    slab = np.repeat(plane, 4, axis=1)  # constant along depth
    out = _resize_linear(tf.constant(slab), tf.constant([1, 8, 6, 10, 2])).numpy()
    expected = tf.image.resize(plane[:, 0], (6, 10), method="bilinear").numpy()
    for d in range(8):
        np.testing.assert_allclose(out[:, d], expected, rtol=1e-5, atol=1e-6)
    column = rng.random((1, 4, 1, 1, 1)).astype("float32")  # varies along depth only
    out = _resize_linear(tf.constant(column), tf.constant([1, 8, 2, 3, 1])).numpy()
    expected = tf.image.resize(column[:, :, :, 0], (8, 1), method="bilinear").numpy()[:, :, 0, 0]
    for h in range(2):
        for w in range(3):
            np.testing.assert_allclose(out[:, :, h, w, 0], expected, rtol=1e-5, atol=1e-6)


def test_aspp_branches_rates_and_image_pooling():
    layer = ASPP(filters=4, rates=(6, 12, 18, 24))
    out = layer(np.random.default_rng(0).random((2, 8, 8, 6)).astype("float32"))
    assert out.shape == (2, 8, 8, 4)
    rates = [conv.dilation_rate for conv, _ in layer.branches[1:]]
    assert rates == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert layer.project.kernel.shape == (1, 1, 4 * 6, 4)  # 1x1 + 4 atrous + image pooling
    no_pool = ASPP(filters=4, rates=(2,), image_pooling=False, dropout=0.0)
    no_pool(np.zeros((1, 4, 4, 3), "float32"))
    assert no_pool.project.kernel.shape == (1, 1, 8, 4)


def test_bilinear_kernel_upsamples_a_ramp_linearly():
    conv = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", use_bias=False,
                                        kernel_initializer=BilinearKernel())
    ramp = np.tile(np.arange(8, dtype="float32"), (8, 1))[None, :, :, None]
    out = conv(ramp).numpy()[0, :, :, 0]
    interior = out[4:-4, 4:-4]
    steps = np.diff(interior, axis=1)
    np.testing.assert_allclose(steps, 0.5, atol=1e-5)  # linear interpolation between samples
    np.testing.assert_allclose(np.diff(interior, axis=0), 0.0, atol=1e-5)
