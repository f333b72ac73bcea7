"""The GPU check: what only a machine with an NVIDIA GPU can tell, in one short run.

Parts (each timed, each allowed to fail without stopping the others; a failed
part's error is in the output as ``<part>_error``):

1. ``harness``: ``tests/models/test_models_harness.py`` (every registered model
   builds, trains a step, saves, reloads and serves) run with the GPU visible;
2. ``mirrored``: U-Net trained under ``tf.distribute.MirroredStrategy`` over
   every visible GPU (``kerasseg.distribute.make_strategy("mirrored")``), global
   batch 8 per replica, its images/s and whether the loss stayed finite;
3. ``mixed``: training images/s of U-Net (base 32) and DeepLabv3+ (MobileNetV2)
   at 512x512, batch 8, under ``mixed_float16`` / under float32 (``training_child.py``'s
   speed job, one process);
4. ``crf``: ``bench_tf_crf.py`` (the TF dense CRF on the GPU against
   pydensecrf on the CPU, 512x512, 2 classes, 5 iterations; goal >= 20x);
5. ``serving``: ``bench_serving.py`` (SavedModel latency and images/s).

It prints one JSON line (and writes it to ``--out`` if given). Without a GPU it
says so and exits with status 2. Run it as ``benchmarks/gpu_check.sh``, which
limits it to 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent


def harness(budget_s: float) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-p", "no:cacheprovider",
                           "tests/models/test_models_harness.py"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=budget_s)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    counts = {word.rstrip("s"): int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary)}
    return {"harness_passed": float(counts.get("passed", 0)), "harness_failed": float(counts.get("failed", 0)),
            "harness_errors": float(counts.get("error", 0)), "harness_summary": summary}


def mirrored(steps: int = 20) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from kerasseg import losses, models
    from kerasseg.distribute import global_batch_size, make_strategy

    strategy = make_strategy("mirrored")
    batch = global_batch_size(8, strategy)
    with strategy.scope():
        model = models.build("unet", input_shape=(256, 256, 1), num_classes=2, base_filters=32, depth=4,
                             norm="batch")
        model.compile(optimizer="adam", loss=losses.get("dice_ce", num_classes=2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 256, 256, 1)).astype("float32")
    y = (x[..., 0] > 0.5).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    started = time.perf_counter()
    history = model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    keras.backend.clear_session()
    return {"mirrored_replicas": float(strategy.num_replicas_in_sync), "mirrored_images_per_s": steps * batch / seconds,
            "mirrored_loss_finite": float(np.isfinite(history.history["loss"][-1]))}


def mixed() -> dict:
    sys.path.insert(0, str(HERE))
    from bench_training import measure

    speeds = measure("speed", models=["unet", "deeplabv3plus"], policies=["float32", "mixed_float16"],
                     size=512, batch=8, steps=10)["images_per_s"]
    figures = {}
    for name in ("unet", "deeplabv3plus"):
        figures[f"gpu_train_images_per_s_{name}"] = speeds[f"{name}/float32"]
        figures[f"gpu_fp16_vs_fp32_speed_{name}"] = speeds[f"{name}/mixed_float16"] / speeds[f"{name}/float32"]
    return figures


def _bench(name: str) -> dict:
    sys.path.insert(0, str(HERE))
    module = __import__(f"bench_{name}")
    return {f"gpu_{key}": value for key, value in module.run(quick=False).items()}


PARTS = {"harness": None, "mirrored": mirrored, "mixed": mixed, "crf": lambda: _bench("tf_crf"),
         "serving": lambda: _bench("serving")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="*", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--harness-seconds", type=float, default=200.0, help="time limit of the harness part")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the JSON line here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    figures: dict = {"gpus": float(len(gpus)), "tensorflow": tf.__version__}
    if not gpus:
        figures["error"] = "no GPU is visible to TensorFlow (nvidia driver, CUDA build of tensorflow?)"
        print(json.dumps(figures))
        return 2
    details = tf.config.experimental.get_device_details(gpus[0])
    figures["gpu_name"] = details.get("device_name", "unknown")
    started = time.perf_counter()
    for part in args.parts:
        part_started = time.perf_counter()
        try:
            figures.update(harness(args.harness_seconds) if part == "harness" else PARTS[part]())
        except Exception as e:  # one failed part is reported; the others still run
            traceback.print_exc(file=sys.stderr)
            figures[f"{part}_error"] = f"{type(e).__name__}: {e}"[:300]
        figures[f"{part}_seconds"] = round(time.perf_counter() - part_started, 1)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    line = json.dumps(figures, sort_keys=True)
    print(line)
    if args.out:
        args.out.write_text(line + "\n")
    return 1 if any(key.endswith("_error") for key in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
