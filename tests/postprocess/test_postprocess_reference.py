"""Label maps reproduce pydensecrf's own example outputs (out1-3.png).

Inputs: ``im*.png`` images and sparse ``anno*.png`` annotations (black = unknown),
unary from the annotation with ``gt_prob=0.7``, reference kernel parameters,
5 iterations (see ../shared/data/pydensecrf_examples/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kerasseg.postprocess import CRFParams, dense_crf, probabilities_from_labels
from kerasseg.postprocess.crf import unary_energy

CASES = [("im1.png", "anno1.png", "out1.png"), ("im2.png", "anno2.png", "out2.png"),
         ("im3.png", "anno3.png", "out3.png")]


def _packed(path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.uint32)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


def _load(folder, im, anno, out):
    d = folder / "examples"
    image = np.asarray(Image.open(d / im).convert("RGB"))
    colours, ids = np.unique(_packed(d / anno), return_inverse=True)
    ids = ids.reshape(image.shape[:2])
    has_unknown = colours[0] == 0  # black = unknown, stored as id 0
    class_colours = colours[1:] if has_unknown else colours
    probs = probabilities_from_labels(ids, len(class_colours), gt_prob=0.7,
                                      unsure_label=0 if has_unknown else None)
    return image, probs, class_colours, _packed(d / out)


@pytest.mark.parametrize("case", CASES, ids=[c[2] for c in CASES])
def test_generic_path_reproduces_reference_exactly(pydensecrf_examples, case):
    image, probs, colours, expected = _load(pydensecrf_examples, *case)
    params = CRFParams(use_generic_path=True)  # defaults are the reference parameters
    _, labels = dense_crf(image, probs, **params.kwargs())
    assert np.array_equal(colours[labels], expected)


@pytest.mark.parametrize("case", CASES, ids=[c[2] for c in CASES])
def test_default_path_reproduces_reference_to_tolerance(pydensecrf_examples, case):
    image, probs, colours, expected = _load(pydensecrf_examples, *case)
    refined, labels = dense_crf(image, probs)
    agreement = float((colours[labels] == expected).mean())
    assert agreement >= 0.998, f"{case[2]}: {agreement:.5%} of pixels agree"
    assert refined.dtype == np.float32 and refined.shape == probs.shape
    np.testing.assert_allclose(refined.sum(axis=2), 1.0, atol=1e-4)


def test_wrapper_equals_raw_pydensecrf(pydensecrf_examples):
    """The default path adds nothing: same marginals as calling DenseCRF2D by hand."""
    import pydensecrf.densecrf as dcrf

    image, probs, _, _ = _load(pydensecrf_examples, *CASES[2])
    h, w, k = probs.shape
    raw = dcrf.DenseCRF2D(w, h, k)
    raw.setUnaryEnergy(unary_energy(probs))
    raw.addPairwiseGaussian(sxy=3, compat=3)
    raw.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.array(image), compat=10)
    q = np.asarray(raw.inference(5)).reshape(k, h, w).transpose(1, 2, 0)
    refined, labels = dense_crf(image, probs)
    np.testing.assert_array_equal(refined, q)
    np.testing.assert_array_equal(labels, q.argmax(axis=2))


def test_unary_from_labels_encodes_confidence():
    ids = np.array([[0, 1], [2, 3]])  # pydensecrf convention: 0 unknown, class k as k+1
    p = probabilities_from_labels(ids, 3, gt_prob=0.7, unsure_label=0)
    np.testing.assert_allclose(p[0, 0], [1 / 3] * 3)
    np.testing.assert_allclose(p[0, 1], [0.7, 0.15, 0.15])
    np.testing.assert_allclose(p[1, 1], [0.15, 0.15, 0.7])
    q = probabilities_from_labels(np.array([[0, 255]]), 2, gt_prob=0.9, unsure_label=255)
    np.testing.assert_allclose(q[0], [[0.9, 0.1], [0.5, 0.5]])
