"""Shared harness run on every registered model (as keras-hub's model tests).

Each model is built with a small configuration (the architecture is the paper's,
only widths/depths are shrunk so the suite fits its time budget); the canonical
sizes are checked by parameter count in test_models_architectures.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import kerasseg.models as km  # noqa: E402
from kerasseg_testing import REPO_ROOT  # noqa: E402

# Small configurations: paper architectures, shrunk widths.
SMALL = {
    "unet": dict(base_filters=4, depth=3, norm="batch"),
    "attention_unet": dict(base_filters=4, depth=3),
    "unet3d": dict(base_filters=2, depth=2),
    "attention_unet3d": dict(base_filters=2, depth=2, norm="instance"),
    "deeplabv3plus": dict(backbone="mobilenetv2", alpha=0.35, aspp_filters=8, decoder_filters=8,
                          low_level_filters=8, dropout=0.0),
    "segnet": dict(base_filters=4),
    "fcn8s": dict(base_filters=4, fc_filters=8, dropout=0.0),
    "pspnet": dict(backbone="mobilenetv2", alpha=0.35, head_filters=8, dropout=0.0),
}
EXPECTED_DIVISOR = {"unet": 8, "attention_unet": 8, "unet3d": 4, "attention_unet3d": 4, "deeplabv3plus": 16,
                    "segnet": 32, "fcn8s": 32, "pspnet": 8}


def _shape(name: str, channels: int = 1, hw: tuple = (64, 64)) -> tuple:
    if name in km.registry.VOLUME_MODELS:
        return (8, *(s // 2 for s in hw), channels)
    return (*hw, channels)


def _build(name: str, shape: tuple, num_classes: int = 3, **extra):
    return km.build(name, input_shape=shape, num_classes=num_classes, **{**SMALL[name], **extra})


def _batch(shape: tuple, num_classes: int, batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *shape), dtype=np.float32)
    # labels correlated with the image so there is something to learn
    y = np.minimum((x[..., 0] * num_classes).astype("int32"), num_classes - 1)
    return x, y


def test_registry_lists_every_architecture():
    assert km.available() == ["unet", "attention_unet", "unet3d", "attention_unet3d", "deeplabv3plus", "segnet",
                              "fcn8s", "pspnet"]
    assert set(SMALL) == set(km.available())
    for name in km.available():
        builder = km.get_builder(name)
        assert builder.__doc__ and "20" in builder.__doc__  # documented, cites its paper (year)
        assert getattr(km, builder.__name__) is builder


@pytest.mark.parametrize("name", km.available())
def test_forward_full_resolution_for_every_input_kind(name):
    """(H,W,3), non-square and (None,None,C) (run at two sizes): (B,H,W,K) float32 probabilities.

    (H,W,1) is covered by test_fit_save_reload_export below.
    """
    dyn = (None,) * (len(_shape(name)) - 1) + (2,)
    cases = [(_shape(name, 3), [_shape(name, 3)]), (_shape(name, 1, (64, 96)), [_shape(name, 1, (64, 96))]),
             (dyn, [_shape(name, 2, (96, 64)), _shape(name, 2, (32, 64))])]
    for shape, run_shapes in cases:
        model = _build(name, shape)
        for run_shape in run_shapes:
            x, _ = _batch(run_shape, 3)
            y = model(x, training=False).numpy()
            assert y.shape == (2, *run_shape[:-1], 3), (shape, y.shape)
            assert y.dtype == np.float32
            np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-4)
        assert km.size_divisor(model) == EXPECTED_DIVISOR[name]


@pytest.mark.parametrize("name,extra", [(name, {}) for name in km.available() if name not in km.registry.VOLUME_MODELS]
                         + [("unet", {"upsampling": "bilinear"})])
def test_traces_once_for_unknown_image_sizes(name, extra):
    """What whole-image prediction and a SavedModel do: one graph traced with
    ``(None, None, None, C)`` inputs, run at two sizes (Keras 3.14+ cannot trace
    ``UpSampling2D(interpolation="bilinear")`` so: keras-team/keras#22079)."""
    model = _build(name, (None, None, 1), **extra)
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    for hw in ((64, 96), (32, 32)):
        x, _ = _batch((*hw, 1), 3)
        np.testing.assert_allclose(forward(x).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert forward.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("name", km.available())
def test_binary_sigmoid_head_and_logits(name):
    shape = _shape(name, 1)
    x, _ = _batch(shape, 2)
    binary = _build(name, shape, num_classes=1)
    y = binary(x, training=False).numpy()
    assert y.shape == (2, *shape[:-1], 1)
    assert binary.layers[-1].get_config()["activation"] == "sigmoid"
    assert np.all((y >= 0) & (y <= 1))
    logits = _build(name, shape, num_classes=4, output_activation=None)
    z = logits(x, training=False)
    assert z.shape == (2, *shape[:-1], 4) and z.dtype == tf.float32
    assert logits.layers[-1].get_config()["activation"] == "linear"


@pytest.mark.parametrize("name", km.available())
def test_fit_step_save_reload_and_savedmodel_export(name, tmp_path):
    """(H,W,1): one fit step lowers the loss; .keras reload and SavedModel agree."""
    keras.utils.set_random_seed(1)
    shape = _shape(name, 1)
    x, y = _batch(shape, 3)
    model = _build(name, shape)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    # run_eagerly: a real fit step without tracing a train function (keeps the suite fast)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn, run_eagerly=True)

    def train_mode_loss() -> float:
        # training=True: batch norm uses batch statistics, as during the step (dropout is 0 here)
        return float(loss_fn(y, model(x, training=True)))

    before = train_mode_loss()
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    after = train_mode_loss()
    assert np.isfinite(history.history["loss"][0])
    assert after < before, (before, after)

    expected = model(x, training=False).numpy()
    assert expected.shape == (2, *shape[:-1], 3)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    np.testing.assert_allclose(reloaded(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert km.size_divisor(reloaded) == EXPECTED_DIVISOR[name]
    assert km.encoder_layers(reloaded), "encoder not identifiable after reload"
    export_dir = tmp_path / f"{name}_savedmodel"
    model.export(str(export_dir), verbose=False)
    served = tf.saved_model.load(str(export_dir))
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", km.available())
def test_mixed_float16_outputs_float32(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        shape = _shape(name, 1)
        model = _build(name, shape)
        x, y = _batch(shape, 3)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
        loss = model.train_on_batch(x, y)
        out = model(x, training=False)
    finally:
        keras.config.set_dtype_policy(previous)
    assert out.dtype == tf.float32
    assert any(layer.compute_dtype == "float16" for layer in model.layers if layer.weights)
    assert np.isfinite(loss)
    np.testing.assert_allclose(out.numpy().sum(-1), 1.0, atol=1e-2)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import kerasseg.models as km
    small = json.loads(sys.argv[1])
    shapes = json.loads(sys.argv[2])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"replicas": strategy.num_replicas_in_sync}
    for name, kwargs in small.items():
        shape = tuple(shapes[name])
        rng = np.random.default_rng(0)
        x = rng.random((4, *shape), dtype=np.float32)
        y = np.minimum((x[..., 0] * 3).astype("int32"), 2)
        with strategy.scope():
            model = km.build(name, input_shape=shape, num_classes=3, **kwargs)
            # run_eagerly: the step runs through strategy.run without tracing a train function
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
        before = [w.numpy().copy() for w in model.trainable_weights]
        hist = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        changed = any(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
        results[name] = {"loss": float(hist.history["loss"][0]), "changed": bool(changed)}
    # a model saved by the parent process reloads here (fresh process, no custom_objects)
    reloaded = km.load_model(sys.argv[3])
    results["reloaded_layers"] = len(reloaded.layers)
    print("RESULT " + json.dumps(results))
    """
)


def test_one_training_step_under_mirrored_strategy_with_two_logical_cpus(tmp_path):
    """All models in ONE subprocess (logical devices must be set before TensorFlow starts)."""
    import json

    saved = tmp_path / "segnet.keras"
    _build("segnet", _shape("segnet")).save(saved)
    shapes = {name: list(_shape(name, 1)) for name in SMALL}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, json.dumps(SMALL), json.dumps(shapes), str(saved)],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO_ROOT,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    results = json.loads(lines[-1][len("RESULT "):])
    assert results["replicas"] == 2
    for name in SMALL:
        assert np.isfinite(results[name]["loss"]), name
        assert results[name]["changed"], name
    assert results["reloaded_layers"] > 10
