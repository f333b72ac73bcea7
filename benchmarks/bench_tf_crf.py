"""TensorFlow DenseCRF layer vs pydensecrf: speed and label agreement, measured in one run.

Workload (the issue's): one 512x512 image, 2 classes, 5 mean-field iterations,
reference parameters (gaussian sxy 3 / compat 3, bilateral sxy 80 / srgb 13 /
compat 10).  Two images:

* grayscale: ISBI 2012 membrane slice 29 (a validation slice) with U-Net-like
  soft probabilities made from its label map (blur + correlated noise; no
  trained network is involved) -- the headline ``tf_crf_vs_pydensecrf``;
* RGB: pydensecrf's ``im1.png`` resized to 512x512 with probabilities from
  ``anno1.png`` (2 classes + unknown, gt_prob 0.7) -- ``*_rgb`` keys.

Both sides do the whole job per call: unary from probabilities, features,
lattice construction, inference.  pydensecrf runs its generic path (the one
that reproduces its example outputs); ours runs as a ``tf.function``
(``jit_compile=False``: the layer compiles its own parts -- lattice
construction and the mean-field loop -- with XLA) after warm-up, which
includes those compiles.  Times are
medians of repeated calls; the ratio is pydensecrf time / our time (>= 1 means
ours is at least as fast).

Run: ``python benchmarks/bench_tf_crf.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("KERASSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
PARAMS = dict(iterations=5, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=80.0,
              bilateral_srgb=13.0, bilateral_compat=10.0)
SIZE = 512


def _soft_prediction(label: np.ndarray, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    logits = cv2.GaussianBlur(label.astype(np.float32) * 2 - 1, (0, 0), 2.0) * 3.0
    noise = cv2.GaussianBlur(rng.normal(0, 1, label.shape).astype(np.float32), (0, 0), 3.0)
    logits = logits + noise * 6.0 + rng.normal(0, 0.5, label.shape).astype(np.float32)
    p1 = 1.0 / (1.0 + np.exp(-logits))
    return np.stack([1 - p1, p1], -1).astype(np.float32)


def _gray_case() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    root = SHARED / "isbi2012_membrane" / "data" / "membrane" / "train"
    if root.is_dir():
        image = np.array(Image.open(root / "image" / "29.png"))[..., None]
        label = np.array(Image.open(root / "label" / "29.png")) > 127
    else:  # synthetic stand-in so the benchmark still runs without the data
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        label = (np.sin(yy / 23.0) * np.cos(xx / 31.0)) > -0.3
        image = np.clip(label * 120 + 60 + rng.normal(0, 25, label.shape), 0, 255).astype(np.uint8)[..., None]
    return image, _soft_prediction(label, seed=29)


def _rgb_case() -> tuple[np.ndarray, np.ndarray]:
    import cv2
    from PIL import Image

    ex = SHARED / "pydensecrf_examples" / "examples"
    if ex.is_dir():
        image = np.array(Image.open(ex / "im1.png").convert("RGB"))
        anno = np.array(Image.open(ex / "anno1.png").convert("RGB")).astype(np.uint32)
    else:
        rng = np.random.default_rng(1)
        image = rng.integers(0, 256, (240, 320, 3)).astype(np.uint8)
        anno = np.zeros((240, 320, 3), np.uint32)
        anno[:, :150, 1] = 64
        anno[:, 170:, 1] = 128
    image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    anno = cv2.resize(anno.astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST).astype(np.uint32)
    code = anno[..., 0] | (anno[..., 1] << 8) | (anno[..., 2] << 16)
    colours = [c for c in np.unique(code) if c != 0][:2]
    probs = np.full((SIZE, SIZE, 2), 0.5, np.float32)
    for i, c in enumerate(colours):
        probs[code == c] = 0.3
        probs[code == c, i] = 0.7
    return image, probs


def _pydensecrf(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian, unary_from_softmax

    h, w, c = image.shape
    k = probs.shape[-1]
    crf = dcrf.DenseCRF(h * w, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.moveaxis(probs, -1, 0))))
    crf.addPairwiseEnergy(create_pairwise_gaussian((PARAMS["gaussian_sxy"],) * 2, (h, w)),
                          compat=PARAMS["gaussian_compat"], kernel=dcrf.DIAG_KERNEL,
                          normalization=dcrf.NORMALIZE_SYMMETRIC)
    crf.addPairwiseEnergy(create_pairwise_bilateral((PARAMS["bilateral_sxy"],) * 2,
                                                    (PARAMS["bilateral_srgb"],) * c, image, chdim=2),
                          compat=PARAMS["bilateral_compat"], kernel=dcrf.DIAG_KERNEL,
                          normalization=dcrf.NORMALIZE_SYMMETRIC)
    return np.array(crf.inference(PARAMS["iterations"]), np.float32).reshape(k, h, w).transpose(1, 2, 0)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare(image: np.ndarray, probs: np.ndarray, repeats: int) -> dict[str, float]:
    import tensorflow as tf

    sys.path.insert(0, str(REPO))
    from kerasseg.layers.dense_crf import DenseCRF

    layer = DenseCRF(**PARAMS)
    fn = tf.function(
        lambda im, p: layer([im, p]),
        input_signature=[tf.TensorSpec([None, None, None, image.shape[-1]], tf.uint8),
                         tf.TensorSpec([None, None, None, probs.shape[-1]], tf.float32)],
        jit_compile=False,
    )
    im_t, p_t = tf.constant(image[None]), tf.constant(probs[None])
    ours = fn(im_t, p_t).numpy()[0]  # trace + warm-up
    fn(im_t, p_t).numpy()
    ref = _pydensecrf(image, probs)
    # Interleave the two so that load from other processes hits both alike.
    tf_times, pd_times = [], []
    for _ in range(repeats):
        tf_times.append(_median_time(lambda: fn(im_t, p_t).numpy(), 1))
        pd_times.append(_median_time(lambda: _pydensecrf(image, probs), 1))
    tf_s, pd_s = statistics.median(tf_times), statistics.median(pd_times)
    return {
        "ratio": pd_s / tf_s,
        "tf": tf_s,
        "pd": pd_s,
        "agreement": float(np.mean(np.argmax(ours, -1) == np.argmax(ref, -1))),
    }


def run(quick: bool = False) -> dict[str, float]:
    """Measure; returns the figures (see the module docstring)."""
    repeats = 5 if quick else 15
    gray = _compare(*_gray_case(), repeats)
    rgb = _compare(*_rgb_case(), repeats)
    results = {
        "tf_crf_vs_pydensecrf": gray["ratio"],
        "tf_crf_seconds_512": gray["tf"],
        "pydensecrf_seconds_512": gray["pd"],
        "tf_crf_label_agreement": gray["agreement"],
        "tf_crf_vs_pydensecrf_rgb": rgb["ratio"],
        "tf_crf_seconds_512_rgb": rgb["tf"],
        "pydensecrf_seconds_512_rgb": rgb["pd"],
        "tf_crf_label_agreement_rgb": rgb["agreement"],
    }
    print(
        f"512x512 grayscale, 2 classes, 5 iterations: pydensecrf {gray['pd']*1e3:.0f} ms, "
        f"DenseCRF {gray['tf']*1e3:.0f} ms -> ratio {gray['ratio']:.2f}, label agreement {gray['agreement']:.5f}"
    )
    print(
        f"512x512 RGB,       2 classes, 5 iterations: pydensecrf {rgb['pd']*1e3:.0f} ms, "
        f"DenseCRF {rgb['tf']*1e3:.0f} ms -> ratio {rgb['ratio']:.2f}, label agreement {rgb['agreement']:.5f}"
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    for key, value in run(quick=args.quick).items():
        print(f"{key}: {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
