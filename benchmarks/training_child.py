"""One measurement of ``bench_training.py``, run alone in a fresh process.

``python benchmarks/training_child.py JOB JSON_ARGS`` prints one line
``RESULT {...}`` holding the job's figures and ``peak_mb``, the process's own
peak resident memory (``VmHWM``, see ``peak_memory.py``). Each job is its own
process so that peaks do not include an earlier job's allocations, and so that
``TF_ENABLE_ONEDNN_OPTS`` (read when TensorFlow loads) can differ per job.

Jobs (all on synthetic tensors: memory and speed do not depend on the pixels):

* ``idle``: U-Net built, compiled, optimizer variables made; no step run.
* ``train``: U-Net ``fit`` for ``steps`` steps under ``policy``.
* ``infer``: U-Net sliding-window inference (``kerasseg.inference.predict_probabilities``)
  of one ``size`` x ``size`` uint8 image in ``tile`` tiles.
* ``train3d``: 3D U-Net ``fit`` on ``batch`` patches of ``patch``.
* ``infer3d``: ``kerasseg.volume_inference.VolumePredictor`` over one int16 ``volume``.
* ``speed``: training images/s of each ``models`` entry under each ``policies``
  entry (leaving out the ``"model/policy"`` pairs in ``skip``): after a
  two-step warm-up (tracing excluded) the policies take turns for ``rounds``
  rounds of ``steps`` steps; the median round counts.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peak_memory import own_peak_rss_mb  # noqa: E402


def _unet(base: int, size: int, policy: str = "float32"):
    import keras

    from kerasseg import losses, metrics, models

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = models.build("unet", input_shape=(size, size, 1), num_classes=2, base_filters=base, depth=4)
    model.compile(optimizer="adam", loss=losses.get("dice_ce", num_classes=2),
                  metrics=metrics.default_metrics(2, ["background", "membrane"]))
    return model


def _batches(shape: tuple[int, ...], labels: tuple[int, ...], classes: int = 2):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    y = rng.integers(0, classes, size=labels).astype("int32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def idle(base: int, size: int) -> dict:
    model = _unet(base, size)
    model.optimizer.build(model.trainable_variables)
    return {"params": model.count_params()}


def train(base: int, size: int, batch: int, steps: int, policy: str) -> dict:
    model = _unet(base, size, policy)
    model.fit(_batches((batch, size, size, 1), (batch, size, size)), steps_per_epoch=steps, epochs=1, verbose=0)
    return {"params": model.count_params()}


def infer(base: int, size: int, tile: int) -> dict:
    import numpy as np

    from kerasseg.inference import predict_probabilities

    model = _unet(base, tile)
    image = np.random.default_rng(0).integers(0, 256, size=(size, size), dtype=np.uint8)
    started = time.perf_counter()
    probabilities = predict_probabilities(model, image, normalization={"method": "zscore"},
                                          tile_size=tile, overlap=0.5)
    return {"seconds": time.perf_counter() - started, "shape": list(probabilities.shape)}


def _unet3d(base: int, patch: list[int], classes: int):
    import keras

    from kerasseg import losses, models

    keras.utils.set_random_seed(0)
    model = models.build("unet3d", input_shape=(*patch, 1), num_classes=classes, base_filters=base)
    model.compile(optimizer="adam", loss=losses.get("dice_ce", num_classes=classes))
    return model


def train3d(base: int, patch: list[int], batch: int, steps: int, classes: int) -> dict:
    model = _unet3d(base, patch, classes)
    model.fit(_batches((batch, *patch, 1), (batch, *patch), classes), steps_per_epoch=steps, epochs=1, verbose=0)
    return {"params": model.count_params()}


def infer3d(base: int, patch: list[int], volume: list[int], classes: int) -> dict:
    import numpy as np

    from kerasseg.volume_inference import VolumePredictor

    model = _unet3d(base, patch, classes)
    voxels = np.random.default_rng(0).integers(-1000, 1000, size=volume, dtype=np.int16)
    predictor = VolumePredictor(model, normalization={"method": "dataset", "mean": 0.0, "std": 500.0},
                                patch_size=patch, spacing=None)
    started = time.perf_counter()
    labels = predictor.predict_labels(voxels)
    return {"seconds": time.perf_counter() - started, "shape": list(labels.shape)}


def _speed_model(name: str, size: int, policy: str):
    import keras

    from kerasseg import losses, models

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    options = {"unet": {"base_filters": 32, "depth": 4, "norm": "batch"},
               "deeplabv3plus": {"backbone": "mobilenetv2", "encoder_weights": None}}[name]
    model = models.build(name, input_shape=(size, size, 1), num_classes=2, **options)
    model.compile(optimizer="adam", loss=losses.get("dice_ce", num_classes=2))
    return model


def speed(models: list[str], policies: list[str], size: int, batch: int, steps: int,
          skip: tuple[str, ...] = (), rounds: int = 1) -> dict:
    """Images/s of each model under each policy: every model of a name is built and traced first,
    then the policies take turns for ``rounds`` rounds of ``steps`` steps (so a change in machine
    load hits both sides of a ratio alike); the median round counts."""
    import statistics

    import keras

    figures = {}
    for name in models:
        built = {}
        for policy in policies:
            if f"{name}/{policy}" in skip:
                continue
            built[policy] = _speed_model(name, size, policy)
        keras.mixed_precision.set_global_policy("float32")
        data = _batches((batch, size, size, 1), (batch, size, size))
        for model in built.values():
            model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # traces the step, warms the kernels
        times: dict[str, list[float]] = {policy: [] for policy in built}
        for _ in range(rounds):
            for policy, model in built.items():
                started = time.perf_counter()
                model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
                times[policy].append(time.perf_counter() - started)
        for policy, seconds in times.items():
            figures[f"{name}/{policy}"] = steps * batch / statistics.median(seconds)
        del built
        keras.backend.clear_session()
    return {"images_per_s": figures}


JOBS = {"idle": idle, "train": train, "infer": infer, "train3d": train3d, "infer3d": infer3d, "speed": speed}


def main(argv: list[str]) -> int:
    job, arguments = argv[0], json.loads(argv[1])
    figures = JOBS[job](**arguments)
    figures["peak_mb"] = own_peak_rss_mb()
    print("RESULT " + json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
