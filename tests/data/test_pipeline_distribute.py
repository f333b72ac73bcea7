"""The pipeline under MirroredStrategy with 2 logical CPU devices (in a subprocess,
because logical devices must be configured before TensorFlow initializes)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pipeline_helpers import blocks_example, write_dataset

pytest.importorskip("tensorflow")

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from kerasseg.data import load_dataset

    path = sys.argv[1]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ds = load_dataset(path, "train", image_size=32, batch_size=4, augment={"preset": "full", "elastic": 1.0},
                      shuffle=True, repeat=True, seed=0, drop_remainder=True)
    dist = strategy.experimental_distribute_dataset(ds)
    batch = next(iter(dist))
    per_replica = [t.shape[0] for t in strategy.experimental_local_results(batch[0])]

    with strategy.scope():
        inputs = keras.Input((32, 32, 1))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        outputs = keras.layers.Conv2D(2, 1, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "per_replica": per_replica,
                                   "loss": [float(v) for v in history.history["loss"]]}))
    """
)


def test_fit_under_mirrored_strategy_with_two_cpu_replicas(tmp_path):
    rng = np.random.default_rng(0)
    path = write_dataset(tmp_path / "ds", {"train": [blocks_example(rng, 48) for _ in range(8)]}, num_shards=2)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, env=env,
                          timeout=240, cwd=str(tmp_path))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2
    assert result["per_replica"] == [2, 2]  # the global batch of 4 is split across replicas
    assert all(np.isfinite(result["loss"]))
