"""Training memory: peak resident memory of U-Net training at 512x512, batch 4.

Each figure is measured in a fresh subprocess (``resource.getrusage`` peak RSS
of that process), so runs do not share allocator state:

* ``train_peak_rss_mb``: U-Net (base 64 filters, depth 4: the paper's network;
  base 16 with ``--quick``), 1-channel 512x512, batch 4, float32, a few steps
  of ``model.fit`` with Dice+CE and the default metrics;
* ``train_peak_rss_bf16_mb``: the same under ``mixed_bfloat16``;
* ``idle_peak_rss_mb``: the same process up to a built, compiled model that
  has not trained (TensorFlow + model + optimizer), the baseline;
* ``bf16_vs_fp32_rss``: ratio of the two training peaks (< 1: bf16 saves memory);
* ``train_over_idle_rss``: training peak / idle peak.

Run: ``python benchmarks/bench_training.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, resource, sys
import numpy as np
import keras
import tensorflow as tf
from kerasseg import losses, metrics, models
base, steps, policy, train = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
if policy != "float32":
    keras.mixed_precision.set_global_policy(policy)
keras.utils.set_random_seed(0)
model = models.build("unet", input_shape=(512, 512, 1), num_classes=2, base_filters=base, depth=4)
model.compile(optimizer="adam", loss=losses.get("dice_ce", num_classes=2),
              metrics=metrics.default_metrics(2, ["background", "membrane"]))
rng = np.random.default_rng(0)
x = rng.normal(size=(4, 512, 512, 1)).astype("float32")
y = (rng.random((4, 512, 512)) > 0.7).astype("int32")
ds = tf.data.Dataset.from_tensors((x, y)).repeat()
if train:
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
else:
    model.optimizer.build(model.trainable_variables)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print("RESULT " + json.dumps({"peak_mb": peak_kb / 1024.0, "params": model.count_params()}))
"""


def _measure(base: int, steps: int, policy: str, train: bool) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(base), str(steps), policy, "1" if train else "0"],
        env=env, capture_output=True, text=True, timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"training subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def run(quick: bool) -> dict[str, float]:
    """Peak RSS figures (MiB) and their ratios; see the module docstring."""
    base, steps = (16, 2) if quick else (64, 3)
    idle = _measure(base, steps, "float32", train=False)
    fp32 = _measure(base, steps, "float32", train=True)
    bf16 = _measure(base, steps, "mixed_bfloat16", train=True)
    results = {
        "train_peak_rss_mb": round(fp32["peak_mb"], 1),
        "train_peak_rss_bf16_mb": round(bf16["peak_mb"], 1),
        "idle_peak_rss_mb": round(idle["peak_mb"], 1),
        "bf16_vs_fp32_rss": round(bf16["peak_mb"] / fp32["peak_mb"], 3),
        "train_over_idle_rss": round(fp32["peak_mb"] / idle["peak_mb"], 3),
        "unet_parameters": float(fp32["params"]),
    }
    print(f"U-Net base {base} ({fp32['params']:,} parameters), 512x512x1, batch 4, {steps} steps")
    print(f"  idle (built + compiled): {results['idle_peak_rss_mb']:.0f} MiB")
    print(f"  training float32:        {results['train_peak_rss_mb']:.0f} MiB "
          f"({results['train_over_idle_rss']:.2f}x idle)")
    print(f"  training mixed_bfloat16: {results['train_peak_rss_bf16_mb']:.0f} MiB "
          f"({results['bf16_vs_fp32_rss']:.2f}x float32)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="base 16 filters, 2 steps")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
