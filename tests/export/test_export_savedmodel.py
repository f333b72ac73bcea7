"""The exported SavedModel: layout, signatures, agreement with Keras, reloading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from export_helpers import CLASS_NAMES, NORMALIZATION, keras_reference, make_blobs

import tensorflow as tf


def test_layout_is_what_tf_serving_loads(exported):
    base, version_dir = exported
    assert version_dir == os.path.join(str(base), "1")
    assert sorted(os.listdir(base)) == ["1"]  # no temporary folder left behind
    for name in ("saved_model.pb", "variables", os.path.join("assets", "kerasseg_model.json")):
        assert os.path.exists(os.path.join(version_dir, name)), name


def test_serving_default_agrees_with_keras(trained_unet, loaded):
    images, _ = make_blobs(3, 64, seed=1)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    ref = keras_reference(trained_unet, images)
    assert out["probabilities"].dtype == tf.float32 and out["mask"].dtype == tf.uint8
    assert out["probabilities"].shape == (3, 64, 64, 3) and out["mask"].shape == (3, 64, 64)
    np.testing.assert_allclose(out["probabilities"].numpy(), ref, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), ref.argmax(-1).astype(np.uint8))


def test_any_size_is_padded_to_the_stride_and_cropped_back(trained_unet, loaded):
    from kerasseg.inference import predict_probabilities

    images, _ = make_blobs(1, 64, seed=2)
    image = images[:, :37, :50]  # neither is a multiple of the U-Net's divisor 4
    out = loaded.signatures["serving_default"](images=tf.constant(image))
    assert out["probabilities"].shape == (1, 37, 50, 3) and out["mask"].shape == (1, 37, 50)
    ref = predict_probabilities(trained_unet, image[0], normalization=NORMALIZATION)
    np.testing.assert_allclose(out["probabilities"].numpy()[0], ref, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy()[0], ref.argmax(-1).astype(np.uint8))
    # smaller than the padding itself (numpy-style mirroring still works)
    tiny = loaded.signatures["serving_default"](images=tf.constant(image[:, :1, :2]))
    assert tiny["mask"].shape == (1, 1, 2)


def test_uint16_signature_normalizes_like_training(trained_unet, loaded):
    images, _ = make_blobs(2, 32, seed=3)
    wide = images.astype(np.uint16) * 257 + 7  # 16-bit data with the same structure
    out = loaded.signatures["serving_uint16"](images=tf.constant(wide))
    ref = keras_reference(trained_unet, wide)
    np.testing.assert_allclose(out["probabilities"].numpy(), ref, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), ref.argmax(-1).astype(np.uint8))


def test_encoded_signature_decodes_png_jpeg_and_16bit_png(loaded):
    images, _ = make_blobs(2, 40, seed=4)
    png = [tf.io.encode_png(im).numpy() for im in images]
    out = loaded.signatures["serving_encoded"](encoded=tf.constant(png))
    direct = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(out["probabilities"].numpy(), direct["probabilities"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(out["mask"].numpy(), direct["mask"].numpy())

    jpeg = tf.io.encode_jpeg(images[0], quality=90).numpy()
    decoded = tf.io.decode_jpeg(jpeg, channels=1)[tf.newaxis]
    out = loaded.signatures["serving_encoded"](encoded=tf.constant([jpeg]))
    direct = loaded.signatures["serving_default"](images=decoded)
    np.testing.assert_array_equal(out["mask"].numpy(), direct["mask"].numpy())

    wide = images[:1].astype(np.uint16) * 200
    png16 = tf.io.encode_png(wide[0]).numpy()
    assert png16[24] == 16  # really a 16-bit PNG
    out = loaded.signatures["serving_encoded"](encoded=tf.constant([png16]))
    direct = loaded.signatures["serving_uint16"](images=tf.constant(wide))
    np.testing.assert_allclose(out["probabilities"].numpy(), direct["probabilities"].numpy(), atol=1e-6)


def test_metadata_travels_with_the_model(exported, loaded):
    meta = loaded.signatures["metadata"]()
    assert [c.decode() for c in meta["class_names"].numpy()] == CLASS_NAMES
    assert json.loads(meta["normalization"].numpy()) == NORMALIZATION
    assert int(meta["channels"]) == 1 and int(meta["num_classes"]) == 3 and int(meta["size_divisor"]) == 4
    card = json.loads(meta["info"].numpy())
    with open(os.path.join(exported[1], "assets", "kerasseg_model.json"), encoding="utf-8") as f:
        assert json.load(f) == card
    assert card["class_names"] == CLASS_NAMES and card["normalization"] == NORMALIZATION
    assert set(card["signatures"]) == {"serving_default", "serving_uint16", "serving_encoded", "metadata"}


def test_tfsmlayer_reloads_it(trained_unet, exported):
    import keras

    layer = keras.layers.TFSMLayer(exported[1], call_endpoint="serving_default")
    images, _ = make_blobs(1, 32, seed=6)
    out = layer(images)
    ref = keras_reference(trained_unet, images)
    np.testing.assert_allclose(np.asarray(out["probabilities"]), ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["mask"]), ref.argmax(-1).astype(np.uint8))


def test_saved_model_cli_lists_the_documented_signatures(exported):
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli (installed with tensorflow) is not on PATH")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([cli, "show", "--all", "--dir", exported[1]], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    blocks = {}
    for chunk in text.split("signature_def['")[1:]:
        name, body = chunk.split("']", 1)
        blocks[name] = body.split("Concrete Functions")[0]
    for name in ("serving_default", "serving_uint16", "serving_encoded", "metadata"):
        assert name in blocks, f"{name} missing from saved_model_cli output"
    assert "inputs['images']" in blocks["serving_default"] and "DT_UINT8" in blocks["serving_default"]
    assert "inputs['images']" in blocks["serving_uint16"] and "DT_UINT16" in blocks["serving_uint16"]
    assert "inputs['encoded']" in blocks["serving_encoded"] and "DT_STRING" in blocks["serving_encoded"]
    for name in ("serving_default", "serving_uint16", "serving_encoded"):
        assert "outputs['mask']" in blocks[name] and "outputs['probabilities']" in blocks[name]
        assert "shape: (-1, -1, -1, 3)" in blocks[name]  # B x H x W x K probabilities
    for key in ("class_names", "normalization", "channels", "size_divisor", "info"):
        assert f"outputs['{key}']" in blocks["metadata"]


def test_versions_are_never_overwritten_unless_asked(trained_unet, tmp_path):
    from kerasseg.export import ExportError, export, next_version, read_model_card

    base = tmp_path / "m"
    first = export(trained_unet, str(base), class_names=CLASS_NAMES, normalization=NORMALIZATION)
    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    with pytest.raises(ExportError, match="already exists.*next free: 2"):
        export(trained_unet, str(base), class_names=CLASS_NAMES, normalization=NORMALIZATION, version=1)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == stamp
    assert next_version(str(base)) == 2  # what version=None (the CLI default) would take
    renamed = ["a", "b", "c"]
    again = export(trained_unet, str(base), class_names=renamed, normalization=NORMALIZATION, version=1,
                   overwrite=True)
    assert again == first and read_model_card(first)["class_names"] == renamed
    assert sorted(os.listdir(base)) == ["1"]  # the replaced copy is gone too


def test_a_failed_export_leaves_nothing(trained_unet, tmp_path):
    from kerasseg.export import ExportError, export

    base = tmp_path / "m"
    bad_samples = np.zeros((2, 16, 16, 3), np.uint8)  # 3 channels for a 1-channel model: fails late
    with pytest.raises(ExportError, match="tflite_samples"):
        export(trained_unet, str(base), class_names=CLASS_NAMES, normalization=NORMALIZATION,
               tflite=True, tflite_input_size=(16, 16), tflite_samples=bad_samples)
    assert os.listdir(base) == []


def test_bad_arguments_are_refused(trained_unet, tmp_path):
    from kerasseg.export import ExportError, export

    with pytest.raises(ExportError, match="needs 3 class names"):
        export(trained_unet, str(tmp_path), class_names=["a", "b"], normalization=NORMALIZATION)
    with pytest.raises(ExportError, match="'method'"):
        export(trained_unet, str(tmp_path), class_names=CLASS_NAMES, normalization={"mean": 3})
    with pytest.raises(ExportError, match="version"):
        export(trained_unet, str(tmp_path), class_names=CLASS_NAMES, normalization=NORMALIZATION, version=-1)
    assert not any(p.name.isdigit() for p in tmp_path.iterdir())


def test_one_channel_sigmoid_model(tmp_path):
    """K = 1 (sigmoid): probabilities (B,H,W,1), mask = p >= 0.5, two class names."""
    from kerasseg import models
    from kerasseg.export import ExportError, export

    model = models.build("unet", input_shape=(None, None, 1), num_classes=1, base_filters=4, depth=2)
    with pytest.raises(ExportError, match="background \\+ foreground"):
        export(model, str(tmp_path), class_names=["lesion"], normalization=NORMALIZATION)
    path = export(model, str(tmp_path), class_names=["background", "lesion"], normalization=NORMALIZATION)
    images, _ = make_blobs(1, 20, seed=9)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    ref = keras_reference(model, images)
    assert out["probabilities"].shape == (1, 20, 20, 1)
    np.testing.assert_allclose(out["probabilities"].numpy(), ref, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), (ref[..., 0] >= 0.5).astype(np.uint8))
