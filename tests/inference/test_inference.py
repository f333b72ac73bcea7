"""Inference helpers: image I/O, channel handling, tiling arithmetic, TTA, writers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from kerasseg import inference
from kerasseg.inference import InferenceError


def _pointwise_model(channels: int = 1, classes: int = 3, seed: int = 0):
    """A per-pixel (1x1 conv) softmax model: tiling must reproduce it exactly."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, channels))
    x = keras.layers.Conv2D(8, 1, activation="tanh")(inputs)
    outputs = keras.layers.Conv2D(classes, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _context_model(seed: int = 0):
    """A fully convolutional model with a 9x9 receptive field."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(x)
    return keras.Model(inputs, outputs)


# ----------------------------------------------------------------------------- reading


def test_read_image_keeps_bit_depth_and_rgb_order(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    got = inference.read_image(tmp_path / "rgb.png")
    assert got.shape == (5, 7, 3) and got.dtype == np.uint8 and got[0, 0, 0] == 200 and got[0, 0, 2] == 0

    deep = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    got = inference.read_image(tmp_path / "deep.png")
    assert got.dtype == np.uint16 and got.shape == (5, 7, 1) and np.array_equal(got[..., 0], deep)

    cv2.imwrite(str(tmp_path / "deep.tif"), deep)
    got = inference.read_image(tmp_path / "deep.tif")
    assert got.dtype == np.uint16 and np.array_equal(got[..., 0], deep)

    rgba = np.dstack([rgb[..., ::-1], np.full((5, 7), 255, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert inference.read_image(tmp_path / "rgba.png").shape == (5, 7, 3)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(InferenceError, match="absent.png: image file not found"):
        inference.read_image(tmp_path / "absent.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InferenceError, match="bad.png: cannot decode image"):
        inference.read_image(bad)


def test_list_images_expands_folders(tmp_path):
    for name in ("b.png", "a.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.split("/")[-1] for p in inference.list_images([tmp_path])] == ["a.tif", "b.png"]
    with pytest.raises(InferenceError, match="no such file or folder"):
        inference.list_images([tmp_path / "nope"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InferenceError, match="holds no"):
        inference.list_images([empty])


def test_match_channels_conversions_and_errors():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    assert inference.match_channels(gray, 3).shape == (3, 4, 3)
    gray_as_rgb = np.repeat(gray, 3, axis=2)
    assert np.array_equal(inference.match_channels(gray_as_rgb, 1), gray)
    colour = gray_as_rgb.copy()
    colour[0, 0, 1] = 99
    with pytest.raises(InferenceError, match="has 3 channel\\(s\\) but the model expects 1"):
        inference.match_channels(colour, 1, name="x.png")
    with pytest.raises(InferenceError, match="has 4 channel"):
        inference.match_channels(np.zeros((2, 2, 4)), 3)


# ----------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("length, tile, overlap", [(100, 32, 0.5), (64, 64, 0.5), (65, 64, 0.25), (10, 32, 0.5), (97, 30, 0.0)])
def test_tile_starts_cover_everything_with_the_requested_overlap(length, tile, overlap):
    starts = inference.tile_starts(length, tile, overlap)
    covered = np.zeros(max(length, tile), bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered[:length].all()
    assert starts[0] == 0 and starts[-1] + tile >= length
    assert all(s + tile <= max(length, tile) for s in starts)
    if len(starts) > 2:
        assert starts[1] - starts[0] == max(1, round(tile * (1 - overlap)))


def test_gaussian_weights_peak_in_the_centre_and_stay_positive():
    w = inference.gaussian_weights(16, 24)
    assert w.shape == (16, 24) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0, abs=1e-3) and w.min() >= 1e-3
    assert w[8, 12] > w[0, 0] and np.allclose(w, w[::-1, ::-1])


def test_sliding_window_is_exact_for_a_pointwise_model():
    model = _pointwise_model()
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 1), dtype=np.uint8)
    norm = {"method": "scale", "max": 255.0}
    whole = inference.predict_probabilities(model, image, normalization=norm)
    tiled = inference.predict_probabilities(model, image, normalization=norm, tile_size=32, overlap=0.5)
    assert whole.shape == tiled.shape == (70, 90, 3) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(tiled.sum(-1), 1.0, atol=1e-5)


def test_sliding_window_nearly_equals_full_image_for_a_convolutional_model():
    model = _context_model()
    rng = np.random.default_rng(1)
    image = (rng.normal(0.3, 0.05, (96, 120)) * 255).clip(0, 255).astype(np.uint8)[..., None]
    image[30:60, 40:90] = 200
    norm = {"method": "zscore"}
    # zscore is per image: tiles are normalized with the whole image's statistics
    whole = inference.predict_probabilities(model, image, normalization=norm)
    tiled = inference.predict_probabilities(model, image, normalization=norm, tile_size=48, overlap=0.5)
    diff = np.abs(tiled - whole)
    assert diff.mean() < 1e-3  # only a few pixels near tile borders see padding
    assert (np.argmax(tiled, -1) == np.argmax(whole, -1)).mean() > 0.99


def test_odd_sizes_are_padded_to_the_stride_and_cropped_back(monkeypatch):
    import keras

    inputs = keras.Input((None, None, 1))
    x = keras.layers.MaxPooling2D(4)(keras.layers.Conv2D(2, 3, padding="same")(inputs))
    outputs = keras.layers.Softmax()(keras.layers.UpSampling2D(4)(x))
    model = keras.Model(inputs, outputs)
    assert model(np.zeros((1, 37, 50, 1), np.float32)).shape == (1, 36, 48, 2)  # unpadded: wrong size
    monkeypatch.setattr(inference, "_model_divisor", lambda m: 4)  # the model's stride
    probs = inference.predict_probabilities(model, np.zeros((37, 50, 1), np.uint8), normalization=None)
    assert probs.shape == (37, 50, 2)
    tiled = inference.predict_probabilities(model, np.zeros((37, 50, 1), np.uint8), normalization=None,
                                            tile_size=18)
    assert tiled.shape == (37, 50, 2)


def test_tta_of_a_flip_symmetric_input_matches_plain_prediction():
    model = _context_model(seed=3)
    half = np.random.default_rng(2).integers(0, 255, (32, 16, 1), dtype=np.uint8)
    image = np.concatenate([half, half[:, ::-1]], axis=1)
    image = np.concatenate([image, image[::-1]], axis=0)  # symmetric under both flips
    plain = inference.predict_probabilities(model, image, normalization={"method": "zscore"})
    tta = inference.predict_probabilities(model, image, normalization={"method": "zscore"}, tta=True)
    # flips of a symmetric image give flipped predictions of the same image, whose average
    # is the symmetrised plain prediction
    sym = (plain + plain[:, ::-1] + plain[::-1] + plain[::-1, ::-1]) / 4
    np.testing.assert_allclose(tta, sym, atol=1e-5)


def test_channel_mismatch_is_reported_by_predict():
    model = _pointwise_model(channels=1)
    colour = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(InferenceError, match="model expects 1"):
        inference.predict_probabilities(model, colour, normalization=None)


# ----------------------------------------------------------------------------- writing


def test_masks_probabilities_and_overlays_round_trip(tmp_path):
    probs = np.zeros((4, 5, 3), np.float32)
    probs[..., 0] = 1
    probs[1, 2] = [0.1, 0.7, 0.2]
    probs[3, 4] = [0.1, 0.2, 0.7]
    mask = inference.probabilities_to_mask(probs)
    assert mask.dtype == np.uint8 and mask[1, 2] == 1 and mask[3, 4] == 2 and mask.sum() == 3
    assert inference.probabilities_to_mask(np.full((2, 2, 1), 0.6)).tolist() == [[1, 1], [1, 1]]

    path = inference.save_mask(tmp_path / "m.png", mask)
    back = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2 and np.array_equal(back, mask)
    with pytest.raises(InferenceError):
        inference.save_mask(tmp_path / "bad.png", np.full((2, 2), 300))

    npy = inference.save_probabilities(tmp_path / "p", probs)
    assert np.array_equal(np.load(npy[0]), probs)
    pngs = inference.save_probabilities(tmp_path / "q", probs, fmt="png")
    assert len(pngs) == 3
    plane = cv2.imread(pngs[1], cv2.IMREAD_UNCHANGED)
    assert plane.dtype == np.uint16 and plane[1, 2] == round(0.7 * 65535)

    image16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    over = cv2.imread(inference.save_overlay(tmp_path / "o.png", image16, mask), cv2.IMREAD_COLOR)
    assert over.shape == (4, 5, 3)
    assert over[0, 0].tolist() == [over[0, 0, 0]] * 3  # background stays gray
    assert len(set(over[1, 2].tolist())) > 1  # class 1 is coloured
    assert not list(tmp_path.glob("*.part*"))  # atomic writes leave no temp files


def test_load_model_errors(tmp_path):
    with pytest.raises(InferenceError, match="model file not found"):
        inference.load_model(tmp_path / "absent.keras")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a real archive")
    with pytest.raises(InferenceError, match="corrupt.keras: cannot load model"):
        inference.load_model(corrupt)
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(InferenceError, match="x.h5: expected a .keras model file"):
        inference.load_model(tmp_path / "x.h5")
    with pytest.raises(InferenceError, match="is a folder"):
        inference.load_model(tmp_path)


def test_safe_mode_refuses_lambda_layers(tmp_path):
    import keras

    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(InferenceError, match="lambda.keras: cannot load model"):
        inference.load_model(path)


def test_load_for_inference_reads_model_info(tmp_path):
    model = _pointwise_model(classes=2)
    model.save(tmp_path / "best.keras")
    info = {"class_names": ["bg", "lesion"], "normalization": {"method": "scale", "max": 255.0},
            "image_size": [64, 64], "crf": {"iterations": 3}}
    (tmp_path / "model_info.json").write_text(json.dumps(info))
    loaded = inference.load_for_inference(tmp_path / "best.keras")
    assert loaded.class_names == ["bg", "lesion"] and loaded.image_size == (64, 64)
    assert loaded.normalization == {"method": "scale", "max": 255.0} and loaded.crf == {"iterations": 3}
    override = inference.load_for_inference(tmp_path / "best.keras", normalization="zscore",
                                            class_names=["a", "b"])
    assert override.normalization == {"method": "zscore"} and override.class_names == ["a", "b"]
    with pytest.raises(InferenceError, match="3 class names"):
        inference.load_for_inference(tmp_path / "best.keras", class_names=["a", "b", "c"])
