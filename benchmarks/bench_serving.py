"""Exported SavedModel vs Keras on the same model: latency (batch 1) and throughput (batch 8).

Workload: a kerasseg U-Net (full: ``base_filters=16, depth=4`` on 256x256
grayscale images; quick: ``base_filters=8, depth=3`` on 128x128), exported with
:func:`kerasseg.export.export` and reloaded with ``tf.saved_model.load``. Four
ways of getting a prediction for the same uint8 images are timed, interleaved
round by round so that machine noise hits all of them alike (medians):

* ``savedmodel``: ``signatures["serving_default"](images=uint8)`` -- does the
  normalization, padding, model, arg-max, all inside the graph;
* ``keras_predict``: ``model.predict(normalize(images))`` (normalization in
  numpy/eager outside, as a Keras user would do it, counted in its time);
* ``direct_call``: ``model(normalize(images), training=False)`` eagerly;
* ``encoded``: ``signatures["serving_encoded"]`` on PNG bytes (decoding included).

Ratios (``> 1`` means the SavedModel is faster):

* ``serving_latency_ratio`` = Keras ``predict`` latency / SavedModel latency, batch 1;
* ``serving_throughput_ratio`` = SavedModel images/s / Keras ``predict`` images/s, batch 8;
* ``serving_vs_direct_call_latency_ratio`` = direct call latency / SavedModel latency, batch 1;
* ``serving_vs_direct_call_throughput_ratio`` = SavedModel images/s / direct call images/s, batch 8;
* ``serving_encoded_vs_uint8_latency`` = PNG-bytes signature latency / uint8 signature latency, batch 1.

Run: ``python benchmarks/bench_serving.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

NORMALIZATION = {"method": "zscore", "eps": 1e-6}


def _images(batch: int, size: int, seed: int) -> np.ndarray:
    from kerasseg.export import synthetic_samples

    return synthetic_samples(batch, size, size, 1, seed=seed)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, float]:
    import keras
    import tensorflow as tf

    from kerasseg import models
    from kerasseg.data.preprocess import normalize
    from kerasseg.export import export

    size, base_filters, depth, rounds = (128, 8, 3, 5) if quick else (256, 16, 4, 15)
    keras.utils.set_random_seed(0)
    model = models.build("unet", input_shape=(None, None, 1), num_classes=2,
                         base_filters=base_filters, depth=depth)
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, os.path.join(tmp, "model"), class_names=["background", "foreground"],
                      normalization=NORMALIZATION)
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]
        serve_encoded = loaded.signatures["serving_encoded"]

        one, eight = _images(1, size, 1), _images(8, size, 2)
        png_one = tf.constant([tf.io.encode_png(one[0]).numpy()])

        def keras_predict(x):
            return model.predict(np.asarray(normalize(x, NORMALIZATION)), batch_size=len(x), verbose=0)

        def direct_call(x):
            return np.asarray(model(normalize(x, NORMALIZATION), training=False))

        def saved(x):
            return serve(images=tf.constant(x))["mask"].numpy()

        def encoded():
            return serve_encoded(encoded=png_one)["mask"].numpy()

        # agreement check, and warm-up of every path (tracing, first-call costs)
        for _ in range(2):
            ref = keras_predict(one).argmax(-1)
            got = saved(one)
            direct_call(one), keras_predict(eight), direct_call(eight), saved(eight), encoded()
        agreement = float(np.mean(ref == got))

        times: dict[str, list[float]] = {k: [] for k in (
            "savedmodel_1", "keras_predict_1", "direct_call_1", "encoded_1",
            "savedmodel_8", "keras_predict_8", "direct_call_8")}
        for _ in range(rounds):
            times["savedmodel_1"].append(_timed(lambda: saved(one)))
            times["keras_predict_1"].append(_timed(lambda: keras_predict(one)))
            times["direct_call_1"].append(_timed(lambda: direct_call(one)))
            times["encoded_1"].append(_timed(encoded))
            times["savedmodel_8"].append(_timed(lambda: saved(eight)))
            times["keras_predict_8"].append(_timed(lambda: keras_predict(eight)))
            times["direct_call_8"].append(_timed(lambda: direct_call(eight)))
    med = {k: statistics.median(v) for k, v in times.items()}
    results = {
        "serving_latency_ratio": med["keras_predict_1"] / med["savedmodel_1"],
        "serving_throughput_ratio": med["keras_predict_8"] / med["savedmodel_8"],
        "serving_vs_direct_call_latency_ratio": med["direct_call_1"] / med["savedmodel_1"],
        "serving_vs_direct_call_throughput_ratio": med["direct_call_8"] / med["savedmodel_8"],
        "serving_encoded_vs_uint8_latency": med["encoded_1"] / med["savedmodel_1"],
        "serving_mask_agreement_vs_keras": agreement,
        "serving_savedmodel_latency_ms": 1000 * med["savedmodel_1"],
        "serving_savedmodel_images_per_s": 8 / med["savedmodel_8"],
    }
    print(f"U-Net base_filters={base_filters} depth={depth}, {size}x{size} grayscale, "
          f"{rounds} interleaved rounds, medians; ratios > 1 mean the SavedModel is faster")
    print(f"  batch 1 latency: SavedModel {1000 * med['savedmodel_1']:.1f} ms, Keras predict "
          f"{1000 * med['keras_predict_1']:.1f} ms, direct call {1000 * med['direct_call_1']:.1f} ms, "
          f"PNG bytes signature {1000 * med['encoded_1']:.1f} ms")
    print(f"  batch 8 throughput: SavedModel {8 / med['savedmodel_8']:.1f} img/s, Keras predict "
          f"{8 / med['keras_predict_8']:.1f} img/s, direct call {8 / med['direct_call_8']:.1f} img/s")
    for key, value in results.items():
        print(f"  {key}: {value:.3f}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy size, a few seconds")
    args = parser.parse_args(argv)
    run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
