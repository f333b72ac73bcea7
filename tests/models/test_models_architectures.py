"""Faithfulness of each architecture to its paper, encoders, fine-tuning and errors."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import kerasseg.models as km  # noqa: E402
from kerasseg.models import ModelConfigError  # noqa: E402
from kerasseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D  # noqa: E402

MOBILE = dict(backbone="mobilenetv2", alpha=0.35)


def _layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


# ---------------------------------------------------------------- canonical sizes (build only)

def test_canonical_unet_has_the_papers_31_030_658_parameters():
    model = km.build("unet", input_shape=(None, None, 1), num_classes=2)
    assert model.count_params() == 31_030_658
    assert km.size_divisor(model) == 16
    assert "Conv2DTranspose" in _layer_types(model)


def test_segnet_has_about_29_46_million_parameters_for_12_classes():
    model = km.build("segnet", input_shape=(None, None, 3), num_classes=12)
    assert round(model.count_params() / 1e6, 2) == 29.46
    types = _layer_types(model)
    assert types.count("MaxPoolingWithArgmax2D") == 5 and types.count("MaxUnpooling2D") == 5
    assert "UpSampling2D" not in types
    assert sum(isinstance(layer, keras.layers.Conv2D) and layer.name.startswith("encoder_")
               for layer in model.layers) == 13
    # every unpooling uses the indices of the matching encoder pooling
    for block in range(1, 6):
        unpool = model.get_layer(f"decoder_block{block}_unpool")
        indices = unpool._inbound_nodes[0].input_tensors[1]
        assert indices._keras_history.operation.name == f"encoder_block{block}_pool"


def test_unet3d_follows_cicek_2016():
    model = km.build("unet3d", input_shape=(None, None, None, 3), num_classes=3, norm=None)
    # Cicek et al. report 19,069,955 parameters; ours differs only by the 896 biases of the
    # three 2x2x2 transposed convolutions (512 + 256 + 128 channels).
    assert model.count_params() == 19_069_955 + 896
    assert model.get_layer("encoder_block1_conv1").filters == 32
    assert model.get_layer("encoder_block1_conv2").filters == 64
    assert model.get_layer("encoder_bottleneck_conv2").filters == 512
    assert isinstance(model.get_layer("decoder_block3_upconv"), keras.layers.Conv3DTranspose)
    assert km.size_divisor(model) == 8


def test_fcn8s_fuses_pool4_and_pool3_and_has_vgg16_size():
    model = km.build("fcn8s", input_shape=(64, 64, 3), num_classes=21)
    assert 134.0e6 < model.count_params() < 134.6e6  # VGG16 convs + fc6/fc7 as convolutions
    fuse4 = model.get_layer("fuse_pool4")
    inbound = {t._keras_history.operation.name for t in fuse4._inbound_nodes[0].input_tensors}
    assert inbound == {"upscore2", "score_pool4"}
    fuse3 = model.get_layer("fuse_pool3")
    inbound = {t._keras_history.operation.name for t in fuse3._inbound_nodes[0].input_tensors}
    assert inbound == {"upscore_pool4", "score_pool3"}
    assert model.get_layer("upscore8").strides == (8, 8) and not model.get_layer("upscore8").trainable
    assert model.get_layer("fc6").kernel_size == (7, 7)


# ---------------------------------------------------------------- U-Net variants

def test_unet_group_norm_nearest_residual_and_deep_supervision():
    model = km.build("unet", input_shape=(32, 48, 1), num_classes=3, base_filters=8, depth=3, norm="group",
                     groups=4, upsampling="nearest", residual=True, deep_supervision=True, dropout=0.5)
    types = _layer_types(model)
    assert "GroupNormalization" in types and "BatchNormalization" not in types
    assert "Conv2DTranspose" not in types
    assert model.get_layer("decoder_block1_upsample").interpolation == "nearest"
    assert types.count("Add") == 2 * 3 + 1  # encoder + decoder blocks and the bottleneck
    assert "Dropout" in types
    outs = model(np.zeros((2, 32, 48, 1), "float32"))
    assert isinstance(outs, (list, tuple)) and len(outs) == 3
    for out in outs:
        assert out.shape == (2, 32, 48, 3) and out.dtype == tf.float32
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    y = np.zeros((2, 32, 48), "int32")
    model.fit(np.zeros((2, 32, 48, 1), "float32"), [y, y, y], verbose=0)


def test_unet_bilinear_upsampling_and_batch_norm():
    model = km.build("unet", input_shape=(32, 32, 2), num_classes=2, base_filters=4, depth=2, norm="batch",
                     upsampling="bilinear")
    assert model.get_layer("decoder_block1_upsample").interpolation == "bilinear"
    assert "BatchNormalization" in _layer_types(model)
    assert km.size_divisor(model) == 4


def test_attention_unet_gates_every_skip_with_the_coarser_decoder_signal():
    model = km.build("attention_unet", input_shape=(32, 32, 1), num_classes=2, base_filters=4, depth=3)
    gates = [layer for layer in model.layers if type(layer).__name__ == "AttentionGate"]
    assert len(gates) == 3
    gate = model.get_layer("decoder_block1_attention")
    skip, gating = gate._inbound_nodes[0].input_tensors
    assert skip.shape[1] == 2 * gating.shape[1]


def test_attention_unet3d_is_the_3d_unet_plus_one_gate_per_skip():
    plain = km.build("unet3d", input_shape=(None, None, None, 1), num_classes=3, base_filters=4, depth=3)
    model = km.build("attention_unet3d", input_shape=(None, None, None, 1), num_classes=3, base_filters=4, depth=3)
    gates = [layer for layer in model.layers if type(layer).__name__ == "AttentionGate"]
    assert len(gates) == 3 and km.size_divisor(model) == 8
    expected = 0
    for gate in gates:
        skip, gating = gate._inbound_nodes[0].input_tensors
        assert skip.shape[1] is None or skip.shape[1] == 2 * gating.shape[1]
        cx, cg = skip.shape[-1], gating.shape[-1]
        inter = cx // 2
        # theta_x 2x2x2 stride 2 (no bias), phi_g 1x1x1, psi 1x1x1, projection 1x1x1 (no bias) + batch norm
        expected += 8 * cx * inter + (cg * inter + inter) + (inter + 1) + cx * cx + 4 * cx
        assert gate.theta_x.kernel.shape == (2, 2, 2, cx, inter)
    assert model.count_params() == plain.count_params() + expected


# ---------------------------------------------------------------- DeepLabv3+ / PSPNet encoders

def _encoder(model):
    return model.get_layer("encoder")


@pytest.mark.parametrize("output_stride,rate", [(16, 2), (8, 4)])
def test_deeplab_resnet50_is_dilated_not_cropped(output_stride, rate):
    model = km.build("deeplabv3plus", input_shape=(64, 64, 1), num_classes=2, backbone="resnet50",
                     output_stride=output_stride)
    enc = _encoder(model)
    assert enc.get_layer("conv5_block1_1_conv").strides == (1, 1)
    assert enc.get_layer("conv5_block3_2_conv").dilation_rate == (rate, rate)
    low, high = enc.outputs
    aspp = model.get_layer("aspp")
    assert aspp.rates == ([6, 12, 18] if output_stride == 16 else [12, 24, 36])
    low_out, high_out = enc(np.zeros((1, 64, 64, 1), "float32"))
    assert low_out.shape == (1, 16, 16, 256)
    assert high_out.shape == (1, 64 // output_stride, 64 // output_stride, 2048)
    assert model.get_layer("decoder_low_level").filters == 48
    assert model.get_layer("upsample").factor == (4, 4)
    assert km.size_divisor(model) == output_stride


def test_deeplab_xception_and_resnet101_backbones_and_v2_rates():
    model = km.build("deeplabv3plus", input_shape=(None, None, 3), num_classes=2, backbone="xception",
                     atrous_rates=(6, 12, 18, 24))
    assert model.get_layer("aspp").rates == [6, 12, 18, 24] and model.get_layer("aspp").separable
    enc = _encoder(model)
    assert enc.get_layer("block14_sepconv1").dilation_rate == (2, 2)
    assert enc.get_layer("block1_conv1").padding == "same"  # aligned stem
    model = km.build("deeplabv3plus", input_shape=(None, None, 3), num_classes=2, backbone="resnet101")
    assert _encoder(model).get_layer("conv4_block23_out") is not None
    assert km.size_divisor(model) == 16


def test_pspnet_pyramid_pooling_bins_and_dilated_resnet50():
    model = km.build("pspnet", input_shape=(64, 64, 3), num_classes=2)
    assert [model.get_layer(f"ppm_pool{b}").output_size for b in (1, 2, 3, 6)] == [(b, b) for b in (1, 2, 3, 6)]
    assert model.get_layer("ppm_conv1").filters == 2048 // 4
    enc = _encoder(model)
    assert enc.get_layer("conv4_block1_1_conv").strides == (1, 1)
    assert enc.get_layer("conv5_block1_2_conv").dilation_rate == (4, 4)
    assert km.size_divisor(model) == 8


# ---------------------------------------------------------------- encoder weights and fine-tuning

def test_deeplab_loads_a_local_encoder_weights_file_and_adapts_one_channel(tmp_path):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                               input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    reference.set_weights([rng.normal(size=w.shape).astype("float32") for w in reference.get_weights()])
    path = tmp_path / "mobilenetv2.weights.h5"
    reference.save_weights(path)
    model = km.build("deeplabv3plus", input_shape=(64, 64, 1), num_classes=2, encoder_weights=str(path),
                     aspp_filters=8, decoder_filters=8, **MOBILE)
    enc = _encoder(model)
    for name in ("Conv1", "block_5_depthwise", "block_16_project"):
        for a, b in zip(enc.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # the grayscale image is repeated to RGB inside the graph
    adapter = model.get_layer("input_adapter_gray_to_rgb")
    x = rng.random((1, 64, 64, 1)).astype("float32")
    rgb = keras.Model(model.input, adapter.output)(x).numpy()
    np.testing.assert_array_equal(rgb, np.repeat(x, 3, axis=-1))


def test_segnet_and_fcn_copy_vgg16_conv_weights_by_name(tmp_path):
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg16.weights.h5"
    vgg.save_weights(path)
    for name in ("segnet", "fcn8s"):
        model = km.build(name, input_shape=(None, None, 1), num_classes=2, encoder_weights=path)
        for layer in ("block1_conv1", "block5_conv3"):
            for a, b in zip(model.get_layer("encoder_" + layer).get_weights(), vgg.get_layer(layer).get_weights()):
                np.testing.assert_array_equal(a, b)


def test_imagenet_weights_use_keras_download_path(monkeypatch):
    """'imagenet' is handed to keras.applications (network needed; here the call is intercepted)."""
    seen = {}
    original = keras.applications.MobileNetV2

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**{**kwargs, "weights": None})

    monkeypatch.setattr(keras.applications, "MobileNetV2", spy)
    model = km.build("deeplabv3plus", input_shape=(32, 32, 1), num_classes=2, encoder_weights="imagenet",
                     aspp_filters=8, decoder_filters=8, **MOBILE)
    assert seen["weights"] == "imagenet" and seen["input_shape"] == (None, None, 3)
    assert model.get_layer("input_adapter_gray_to_rgb") is not None


def test_freeze_encoder_two_phases_survives_reload(tmp_path):
    model = km.build("deeplabv3plus", input_shape=(32, 32, 1), num_classes=2, aspp_filters=8,
                     decoder_filters=8, **MOBILE)
    path = tmp_path / "m.keras"
    model.save(path)
    model = keras.saving.load_model(path)
    total = len(model.trainable_weights)
    km.freeze_encoder(model)
    enc = model.get_layer("encoder")
    assert not enc.trainable and len(model.trainable_weights) < total
    assert not any(w is v for w in model.trainable_weights for v in enc.weights)
    km.freeze_encoder(model, trainable=True, keep_batchnorm_frozen=True)
    assert enc.trainable
    bns = [layer for layer in enc.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in enc.layers if isinstance(layer, keras.layers.Conv2D)]
    assert bns and all(not bn.trainable for bn in bns) and all(c.trainable for c in convs)
    km.freeze_encoder(model, trainable=True, keep_batchnorm_frozen=False)
    assert all(bn.trainable for bn in bns)
    assert len(model.trainable_weights) == total
    unet = km.build("unet", input_shape=(32, 32, 1), num_classes=2, base_filters=4, depth=2, norm="batch")
    km.freeze_encoder(unet)
    frozen = {layer.name for layer in unet.layers if not layer.trainable}
    assert "encoder_block1_conv1" in frozen and "decoder_block1_conv1" not in frozen
    # a frozen encoder keeps its weights through a fit step
    before = unet.get_layer("encoder_block1_conv1").get_weights()[0].copy()
    unet.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    unet.fit(np.ones((2, 32, 32, 1), "float32"), np.ones((2, 32, 32), "int32"), verbose=0)
    np.testing.assert_array_equal(unet.get_layer("encoder_block1_conv1").get_weights()[0], before)


# ---------------------------------------------------------------- clear errors at build time

@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("unet", dict(input_shape=(100, 100, 1), num_classes=2), "not divisible by the network's stride 16"),
        ("segnet", dict(input_shape=(64, 80, 3), num_classes=2), "stride 32"),
        ("unet3d", dict(input_shape=(12, 16, 16, 1), num_classes=2), "stride 8"),
        ("deeplabv3plus", dict(input_shape=(64, 64, 3), num_classes=2, backbone="resnet34"),
         "unknown backbone 'resnet34'.*did you mean 'resnet50'"),
        ("pspnet", dict(input_shape=(64, 64, 3), num_classes=2, backbone="vgg"), "unknown backbone"),
        ("unet", dict(input_shape=(64, 64, 1), num_classes=0), "num_classes must be an integer >= 1"),
        ("fcn8s", dict(input_shape=(64, 64, 1), num_classes=-3), "num_classes"),
        ("deeplabv3plus", dict(input_shape=(64, 64, 3), num_classes=2, output_stride=12), "output_stride"),
        ("unet", dict(input_shape=(64, 64), num_classes=2), "input_shape must have 3 entries"),
        ("unet", dict(input_shape=(64, 64, 1), num_classes=2, upsampling="bicubic"), "unknown upsampling"),
        ("unet", dict(input_shape=(64, 64, 1), num_classes=2, base_filter=8), "did you mean 'base_filters'"),
        ("unet", dict(input_shape=(64, 64, 1), num_classes=2, norm="layer"), "unknown norm"),
        ("segnet", dict(input_shape=(64, 64, 3), num_classes=2, encoder_weights="/nonexistent/w.h5"),
         "/nonexistent/w.h5.*does not exist"),
    ],
)
def test_invalid_arguments_raise_clear_errors_at_build_time(name, kwargs, match):
    with pytest.raises(ModelConfigError, match=match):
        km.build(name, **kwargs)


def test_unknown_model_name_suggests_the_nearest():
    with pytest.raises(ModelConfigError, match="unknown model 'unet_attention'.*did you mean 'attention_unet'"):
        km.build("unet_attention", input_shape=(64, 64, 1), num_classes=2)
    with pytest.raises(ModelConfigError, match="did you mean 'segnet'"):
        km.build("segnt", input_shape=(64, 64, 1), num_classes=2)
    assert issubclass(ModelConfigError, ValueError)


def test_size_divisor_counts_strides_through_nested_models_and_upsampling():
    inp = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(inp)
    inner_in = keras.Input((None, None, 2))
    inner = keras.Model(inner_in, keras.layers.MaxPooling2D(3)(inner_in), name="inner")
    x = inner(x)
    x = keras.layers.UpSampling2D(6)(x)
    assert km.size_divisor(keras.Model(inp, x)) == 6
    pooled, idx = MaxPoolingWithArgmax2D(2)(inp)
    out = MaxUnpooling2D(2)([pooled, idx])
    assert km.size_divisor(keras.Model(inp, out)) == 2


def test_importing_the_zoo_and_listing_models_does_not_import_tensorflow():
    import subprocess
    import sys

    from kerasseg_testing import REPO_ROOT

    code = ("import sys, kerasseg.models as km, kerasseg.layers\n"
            "assert km.available()\n"
            "print([m for m in ('tensorflow', 'keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
