"""TFLite float32 and dynamic-range models: fixed input size, masks agree with Keras."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from export_helpers import CLASS_NAMES, NORMALIZATION, keras_reference, make_blobs


@pytest.fixture(scope="module")
def tflite_export(trained_unet, tmp_path_factory):
    from kerasseg.export import export

    samples, _ = make_blobs(4, 48, seed=11)
    base = tmp_path_factory.mktemp("tflite")
    path = export(trained_unet, str(base), class_names=CLASS_NAMES, normalization=NORMALIZATION,
                  tflite=True, tflite_input_size=(48, 48), tflite_samples=samples)
    return path, samples


def _interpreter(path):
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return interpreter


def test_report_and_files(tflite_export):
    path, _ = tflite_export
    folder = os.path.join(path, "tflite")
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["input_shape"] == [1, 48, 48, 1] and report["input_dtype"] == "uint8"
    assert report["mask_agreement_float32"] >= 0.99
    assert report["mask_agreement_dynamic_range"] >= 0.95
    assert report["max_abs_prob_diff_float32"] < 1e-3
    assert report["select_tf_ops"] is False  # plain TFLite builtins, no Flex delegate needed
    for name in ("model_float32.tflite", "model_dynamic_range.tflite"):
        assert os.path.getsize(os.path.join(folder, name)) > 0
    # the model card in the SavedModel knows about the TFLite files and their agreement
    from kerasseg.export import read_model_card

    assert read_model_card(path)["tflite"]["mask_agreement_float32"] == report["mask_agreement_float32"]


@pytest.mark.parametrize("name,min_agreement", [("model_float32.tflite", 0.99), ("model_dynamic_range.tflite", 0.95)])
def test_tflite_masks_agree_with_keras_on_fresh_images(trained_unet, tflite_export, name, min_agreement):
    path, _ = tflite_export
    interpreter = _interpreter(os.path.join(path, "tflite", name))
    (detail,) = interpreter.get_input_details()
    assert list(detail["shape"]) == [1, 48, 48, 1] and detail["dtype"] == np.uint8  # fixed size, uint8
    runner = interpreter.get_signature_runner()
    images, _ = make_blobs(3, 48, seed=12)
    ref = keras_reference(trained_unet, images).argmax(-1)
    masks = np.stack([runner(images=im[None])["mask"][0] for im in images])
    assert masks.dtype == np.uint8 and masks.shape == (3, 48, 48)
    assert np.mean(masks == ref) >= min_agreement


def test_real_images_resized_as_samples(trained_unet, isbi_membrane, tmp_path):
    """Real 512x512 EM slices as TFLite samples (resized to the fixed input size)."""
    import cv2

    from kerasseg.export import export, read_model_card

    files = sorted((isbi_membrane / "data" / "membrane" / "train" / "image").glob("*.png"))[:2]
    samples = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[..., None] for p in files])
    path = export(trained_unet, str(tmp_path), class_names=CLASS_NAMES, normalization=NORMALIZATION,
                  tflite=True, tflite_input_size=(64, 64), tflite_samples=samples)
    report = read_model_card(path)["tflite"]
    assert report["samples"] == "2 given images" and report["input_shape"] == [1, 64, 64, 1]
    assert report["mask_agreement_float32"] >= 0.99
