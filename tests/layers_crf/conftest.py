"""Fixtures for the TensorFlow dense-CRF tests: the pydensecrf reference and real inputs."""

from __future__ import annotations

import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

REFERENCE_PARAMS = dict(
    iterations=5,
    gaussian_sxy=3.0,
    gaussian_compat=3.0,
    bilateral_sxy=80.0,
    bilateral_srgb=13.0,
    bilateral_compat=10.0,
)


def pydensecrf_refine(image: np.ndarray, probabilities: np.ndarray, **params) -> np.ndarray:
    """pydensecrf's generic path, ``(H,W,C)`` image, ``(H,W,K)`` probs -> ``(H,W,K)`` Q.

    Unary = -log(clip(p, 1e-5, 1)) (``unary_from_softmax``), Potts, DIAG_KERNEL,
    NORMALIZE_SYMMETRIC, features from ``create_pairwise_gaussian`` and
    ``create_pairwise_bilateral`` -- the setup that reproduces the example outputs.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian, unary_from_softmax

    p = {**REFERENCE_PARAMS, **params}
    h, w, c = image.shape
    k = probabilities.shape[-1]
    crf = dcrf.DenseCRF(h * w, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.moveaxis(probabilities, -1, 0))))
    crf.addPairwiseEnergy(
        create_pairwise_gaussian((p["gaussian_sxy"],) * 2, (h, w)),
        compat=p["gaussian_compat"],
        kernel=dcrf.DIAG_KERNEL,
        normalization=dcrf.NORMALIZE_SYMMETRIC,
    )
    crf.addPairwiseEnergy(
        create_pairwise_bilateral((p["bilateral_sxy"],) * 2, (p["bilateral_srgb"],) * c, image, chdim=2),
        compat=p["bilateral_compat"],
        kernel=dcrf.DIAG_KERNEL,
        normalization=dcrf.NORMALIZE_SYMMETRIC,
    )
    q = np.array(crf.inference(p["iterations"]), dtype=np.float32)
    return q.reshape(k, h, w).transpose(1, 2, 0)


def example_inputs(folder: pathlib.Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``im{n}``, its probabilities from ``anno{n}`` and the reference ``out{n}`` labels.

    Probabilities follow the pydensecrf example (``unary_from_labels`` with
    ``gt_prob=0.7`` and ``zero_unsure``): 0.7 for the annotated class, the rest
    shared by the others, uniform where the annotation is black (unknown).
    Returns ``image (H,W,3) uint8``, ``probs (H,W,K) float32``, ``out (H,W) int``
    (class ids of out{n}.png, ``-1`` for a colour not in the annotation).
    """
    ex = folder / "examples"
    image = np.array(Image.open(ex / f"im{n}.png").convert("RGB"))
    anno = np.array(Image.open(ex / f"anno{n}.png").convert("RGB")).astype(np.uint32)
    code = anno[..., 0] | (anno[..., 1] << 8) | (anno[..., 2] << 16)
    colours = [c for c in np.unique(code) if c != 0]
    k = len(colours)
    probs = np.full(code.shape + (k,), 0.3 / (k - 1), np.float32)
    for i, c in enumerate(colours):
        probs[code == c, i] = 0.7
    probs[code == 0] = 1.0 / k
    out = np.array(Image.open(ex / f"out{n}.png").convert("RGB")).astype(np.uint32)
    out_code = out[..., 0] | (out[..., 1] << 8) | (out[..., 2] << 16)
    out_labels = np.full(out_code.shape, -1, np.int64)
    for i, c in enumerate(colours):
        out_labels[out_code == c] = i
    return image, probs, out_labels


def soft_prediction(label: np.ndarray, seed: int) -> np.ndarray:
    """U-Net-like soft 2-class probabilities ``(H,W,2)`` from a binary label map.

    No trained network is used: the label map is blurred (soft boundaries),
    scaled to confident logits and perturbed with spatially correlated noise
    (blob-like false positives/negatives, like an under-trained network).
    """
    import cv2

    rng = np.random.default_rng(seed)
    target = label.astype(np.float32) * 2.0 - 1.0
    logits = cv2.GaussianBlur(target, (0, 0), 2.0) * 3.0
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, label.shape).astype(np.float32), (0, 0), 3.0)
    logits = logits + noise * 6.0 + rng.normal(0.0, 0.5, label.shape).astype(np.float32)
    p1 = 1.0 / (1.0 + np.exp(-logits))
    return np.stack([1.0 - p1, p1], axis=-1).astype(np.float32)


@pytest.fixture(scope="session")
def crf_reference():
    """pydensecrf's refinement (skips when pydensecrf2 is not installed)."""
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (pydensecrf2) is the reference")
    return pydensecrf_refine


@pytest.fixture(scope="session")
def crf_inputs():
    """Input makers: ``.example(folder, n)`` and ``.soft_prediction(label, seed)``."""
    return SimpleNamespace(example=example_inputs, soft_prediction=soft_prediction)
