"""DenseCRF (TensorFlow) agrees with pydensecrf at the same parameters on real data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from kerasseg.layers.dense_crf import DenseCRF  # noqa: E402

MIN_AGREEMENT = 0.995
ISBI_VALIDATION = (25, 26, 27, 28, 29)  # the last 5 of the 30 labelled slices
ISBI_TEST_WITH_UNET = (0, 7)  # test slices with the zhixuhao/unet Keras U-Net output


def _labels_agreement(q: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean(np.argmax(q, -1) == np.argmax(ref, -1)))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_agrees_with_pydensecrf_on_its_examples(pydensecrf_examples, crf_reference, crf_inputs, n):
    image, probs, out_labels = crf_inputs.example(pydensecrf_examples, n)
    ref = crf_reference(image, probs)
    q = DenseCRF()([image[None], probs[None]]).numpy()[0]
    assert q.shape == probs.shape and q.dtype == np.float32
    agreement = _labels_agreement(q, ref)
    assert agreement >= MIN_AGREEMENT, f"im{n}: {agreement:.5f} of pixels agree with pydensecrf"
    # The refinement really changes the labels (the unknown pixels get labelled) ...
    assert np.mean(np.argmax(q, -1) != np.argmax(probs, -1)) > 0.02
    # ... and reproduces pydensecrf's own published output image.
    assert np.mean(np.argmax(q, -1) == out_labels) >= MIN_AGREEMENT
    np.testing.assert_allclose(q, ref, atol=1e-3)


def test_agrees_on_isbi_validation_slices_as_one_batch(isbi_membrane, crf_reference, crf_inputs):
    root = isbi_membrane / "data" / "membrane" / "train"
    images, probs = [], []
    for i in ISBI_VALIDATION:
        images.append(np.array(Image.open(root / "image" / f"{i}.png"))[..., None])
        label = np.array(Image.open(root / "label" / f"{i}.png")) > 127
        probs.append(crf_inputs.soft_prediction(label, seed=i))
    q = DenseCRF()([np.stack(images), np.stack(probs)]).numpy()
    changed = []
    for b, i in enumerate(ISBI_VALIDATION):
        ref = crf_reference(images[b], probs[b])
        agreement = _labels_agreement(q[b], ref)
        assert agreement >= MIN_AGREEMENT, f"slice {i}: {agreement:.5f} of pixels agree with pydensecrf"
        changed.append(np.mean(np.argmax(ref, -1) != np.argmax(probs[b], -1)))
    # The soft predictions are noisy enough for the CRF to matter.
    assert min(changed) > 0.01


def test_agrees_on_real_unet_sigmoid_outputs(isbi_membrane, crf_reference):
    """Test slices with the U-Net output shipped with the data (sigmoid, K=1, half size)."""
    root = isbi_membrane / "data" / "membrane" / "test"
    layer = DenseCRF()
    for i in ISBI_TEST_WITH_UNET:
        image = np.array(Image.open(root / f"{i}.png"))[..., None]
        pred = np.array(Image.open(root / f"{i}_predict.png"), dtype=np.float32) / 65535.0
        pred = tf.image.resize(pred[None, ..., None], image.shape[:2], method="bilinear").numpy()
        pred = np.clip(pred, 0.0, 1.0)
        q = layer([image[None], pred]).numpy()[0]
        assert q.shape == image.shape[:2] + (1,)
        two_class = np.concatenate([1.0 - pred[0], pred[0]], axis=-1)
        ref = crf_reference(image, two_class)
        agreement = float(np.mean((q[..., 0] > 0.5) == (np.argmax(ref, -1) == 1)))
        assert agreement >= MIN_AGREEMENT, f"test slice {i}: {agreement:.5f} of pixels agree with pydensecrf"


def test_bilateral_grid_fast_path_agrees_on_isbi(isbi_membrane, crf_reference, crf_inputs):
    """The 3-D bilateral grid (single-channel option) is a different approximation
    of the same kernel: it still meets the agreement bar, and differentiates."""
    root = isbi_membrane / "data" / "membrane" / "train"
    i = ISBI_VALIDATION[0]
    image = np.array(Image.open(root / "image" / f"{i}.png"))[..., None]
    probs = crf_inputs.soft_prediction(np.array(Image.open(root / "label" / f"{i}.png")) > 127, seed=i)
    x = tf.Variable(probs[None])
    with tf.GradientTape() as tape:
        q = DenseCRF(bilateral_filter="grid")([image[None], x])
        loss = tf.reduce_sum(q[..., 1] ** 2)
    grad = tape.gradient(loss, x).numpy()
    agreement = _labels_agreement(q.numpy()[0], crf_reference(image, probs))
    assert agreement >= MIN_AGREEMENT, f"grid: {agreement:.5f} of pixels agree with pydensecrf"
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    with pytest.raises(ValueError, match="single-channel"):
        DenseCRF(bilateral_filter="grid")([np.zeros((1, 8, 8, 3), np.uint8), probs[None, :8, :8]])
