"""Training precision: ``training.mixed_precision: auto`` picks bfloat16 only on a CPU that computes it
natively, and a bfloat16-trained model can compute in float32 where bfloat16 would be emulated
(kerasseg/models/precision.py, kerasseg/training/settings.py, kerasseg/artifacts.py)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import kerasseg.models as km  # noqa: E402
from kerasseg import artifacts, tf_runtime  # noqa: E402
from kerasseg.config import Config, ConfigError, from_dict  # noqa: E402
from kerasseg.models.precision import as_float32, compute_dtype  # noqa: E402
from kerasseg.training.settings import emulated_bfloat16_warning, mixed_precision_policy  # noqa: E402


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\nflags\t\t: fpu sse2\n")
    return str(path)


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    assert tf_runtime.cpu_has_bf16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert tf_runtime.cpu_has_bf16(_cpuinfo(tmp_path, "amx_bf16 amx_tile"))
    assert not tf_runtime.cpu_has_bf16(_cpuinfo(tmp_path, "avx512f avx512_vnni"))
    assert not tf_runtime.cpu_has_bf16(str(tmp_path / "absent"))


def test_auto_is_the_default_and_means_bfloat16_only_where_it_is_native(monkeypatch):
    assert Config().training.mixed_precision == "auto"
    assert from_dict({"training": {"mixed_precision": "auto"}}).validate().training.mixed_precision == "auto"
    with pytest.raises(ConfigError, match="training.mixed_precision"):
        from_dict({"training": {"mixed_precision": "automatic"}}).validate()
    # no GPU on this machine: the CPU's flags decide
    monkeypatch.setattr(tf_runtime, "cpu_has_bf16", lambda *a, **k: True)
    assert mixed_precision_policy("auto") == "mixed_bfloat16"
    assert emulated_bfloat16_warning("mixed_bfloat16") is None
    monkeypatch.setattr(tf_runtime, "cpu_has_bf16", lambda *a, **k: False)
    assert mixed_precision_policy("auto") is None
    assert mixed_precision_policy(True) == "mixed_bfloat16"  # asked for: kept, with a warning
    assert "emulates it" in emulated_bfloat16_warning("mixed_bfloat16")
    assert mixed_precision_policy(False) is None and mixed_precision_policy("float32") is None
    assert emulated_bfloat16_warning(None) is None


def _bfloat16_model(path):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = km.build("deeplabv3plus", input_shape=(None, None, 1), num_classes=3, backbone="mobilenetv2",
                         alpha=0.35, encoder_weights=None, aspp_filters=8, decoder_filters=8, low_level_filters=8)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.save(path)
    return model


def test_a_bfloat16_model_gets_a_float32_copy_with_the_same_weights(tmp_path):
    model = _bfloat16_model(tmp_path / "m.keras")
    copy = as_float32(model)
    assert compute_dtype(model) == "bfloat16" and compute_dtype(copy) == "float32"
    assert as_float32(copy) is copy
    for a, b in zip(model.weights, copy.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype("float32")
    low, full = model.predict(x, verbose=0), copy.predict(x, verbose=0)
    assert low.dtype == full.dtype == np.float32
    assert np.abs(low - full).max() < 0.05  # bfloat16 rounding, not another model
    assert (low.argmax(-1) == full.argmax(-1)).mean() > 0.95


def test_loading_computes_in_float32_only_where_bfloat16_would_be_emulated(tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.keras"
    _bfloat16_model(path)
    monkeypatch.setattr(tf_runtime, "cpu_has_bf16", lambda *a, **k: True)
    assert compute_dtype(artifacts.load_for_inference(path).model) == "bfloat16"
    assert compute_dtype(artifacts.load_for_inference(path, float32=True).model) == "float32"
    assert "no native bfloat16" not in capsys.readouterr().err
    monkeypatch.setattr(tf_runtime, "cpu_has_bf16", lambda *a, **k: False)
    assert compute_dtype(artifacts.load_for_inference(path).model) == "float32"
    assert "this CPU has no native bfloat16: computing in float32" in capsys.readouterr().err
    assert compute_dtype(artifacts.load_for_inference(path, float32=False).model) == "bfloat16"
