"""Losses and metrics under MirroredStrategy on two logical CPU devices.

Runs in a subprocess because logical devices must be configured before
TensorFlow initializes, which other tests in this process may already have done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from kerasseg import losses, metrics

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12, 12, 1)).astype("float32")
    y = (x[..., 0] > 0.3).astype("int32")
    w = np.ones((8, 12, 12), "float32")
    w[:, :2] = 0.0

    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            inputs = keras.Input((12, 12, 1))
            h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
            outputs = keras.layers.Conv2D(2, 1, activation="softmax")(h)
            model = keras.Model(inputs, outputs)
            model.compile(
                optimizer=keras.optimizers.SGD(0.1),
                loss=losses.get("dice_ce", num_classes=2),
                metrics=metrics.default_metrics(2, ["background", "lesion"]),
            )
        history = model.fit(x, y, sample_weight=w, batch_size=4, epochs=1, verbose=0, shuffle=False)
        evaluation = model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0, return_dict=True)
        return {"loss": history.history["loss"], "eval": evaluation, "replicas": strategy.num_replicas_in_sync}

    one = run(tf.distribute.get_strategy())
    two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT" + json.dumps({"one": one, "two": two}))
    """
)


def test_mirrored_strategy_matches_single_device(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(text for text in proc.stdout.splitlines() if text.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    one, two = result["one"], result["two"]
    assert two["replicas"] == 2
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    for key, value in one["eval"].items():
        assert two["eval"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert "mean_dice" in one["eval"] and "dice_lesion" in one["eval"]
