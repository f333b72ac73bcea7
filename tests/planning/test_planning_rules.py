"""The planning rules on hand-made fingerprints: each decision follows the data it names."""

from __future__ import annotations

import dataclasses

import pytest

from kerasseg.planning.fingerprint import ClassStats, Fingerprint
from kerasseg.planning.hardware import Hardware
from kerasseg.planning.rules import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    VALIDATION_SHARE,
    PlanError,
    Timing,
    choose_batch_size,
    draft,
    fit_to_budget,
    untimed,
)

CPU = Hardware(device="CPU", memory_bytes=16 << 30, cpu_cores=2, description="test CPU")
GPU = Hardware(device="GPU", memory_bytes=16 << 30, cpu_cores=8, description="test GPU")


def _class(name, fraction, *, extent, thickness, area=500.0):
    return ClassStats(name=name, pixel_fraction=fraction, image_fraction=1.0, objects_per_image=3,
                      object_area_p10=area / 4, object_area_median=area, object_area_p90=area * 4,
                      object_extent_p90=extent, thickness_median=thickness)


def _fingerprint(*, size=(512, 512), vary=False, dtype="uint8", percentiles=(10.0, 120.0, 230.0),
                 classes=None, train=24, val=6) -> Fingerprint:
    classes = classes or [_class("background", 0.8, extent=512, thickness=40),
                          _class("lesion", 0.2, extent=60, thickness=25)]
    h, w = size
    stats = {"percentiles": list(percentiles), "percentile_levels": [0.5, 50, 99.5], "mean": 100.0, "std": 30.0}
    return Fingerprint(
        dataset="data", split="train", splits={"train": train, "val": val}, examples_measured=train, channels=1,
        image_dtype=dtype, bits_used=8, height={"median": h, "min": h, "max": h}, width={"median": w, "min": w, "max": w},
        sizes_vary=vary, spacing=None, intensity=stats, foreground_intensity=stats, ignore_fraction=0.0,
        class_names=[c.name for c in classes],
        foreground_classes=[i for i, c in enumerate(classes) if c.name != "background"], classes=classes,
    )


def _decided(fp, hw=CPU, **kwargs):
    config, decisions = draft(fp, hw, model=kwargs.pop("model", None), dataset_dir="data", run_dir="runs/x",
                              val_split=kwargs.pop("val_split", None), **kwargs)
    return config, {d.key: d for d in decisions}


def test_thin_structures_are_cropped_at_native_scale():
    fp = _fingerprint(classes=[_class("membrane", 0.22, extent=512, thickness=4.8),
                               _class("cell", 0.78, extent=119, thickness=22)])
    config, d = _decided(fp)
    assert config.data.geometry == "random_crop" and config.data.image_size == [256, 256]
    assert "membrane" in d["data.geometry"].reason and "thin" in d["data.geometry"].reason
    assert config.model.name == "unet" and config.model.options["base_filters"] == 32
    # unprobed, a CPU plan trains in bfloat16 exactly where the CPU computes it natively
    assert config.training.mixed_precision == "auto" and "no native bfloat16" in d["training.mixed_precision"].reason
    bf16_cpu = Hardware(device="CPU", memory_bytes=16 << 30, cpu_cores=2, description="test CPU", cpu_bf16=True)
    config, d = _decided(fp, bf16_cpu)
    assert config.training.mixed_precision == "auto" and "mixed_bfloat16 on this CPU" in d["training.mixed_precision"].reason


def test_large_compact_objects_in_large_images_are_resized_whole():
    fp = _fingerprint(size=(1024, 768), classes=[_class("background", 0.6, extent=1024, thickness=200),
                                                 _class("organ", 0.4, extent=600, thickness=150)])
    config, d = _decided(fp)
    assert config.data.geometry == "resize"
    assert config.data.image_size == [256, 192]  # the longer side to the CPU patch, aspect kept
    assert "600 px" in d["data.geometry"].reason


def test_small_images_are_seen_whole_and_gpu_patches_are_larger():
    config, d = _decided(_fingerprint(size=(200, 180)))
    assert config.data.geometry == "random_crop" and config.data.image_size == [224, 224]
    assert "whole images" in d["data.geometry"].reason
    config, _ = _decided(_fingerprint(size=(1024, 1024), classes=[
        _class("background", 0.9, extent=1024, thickness=50), _class("vessel", 0.1, extent=900, thickness=3)]), GPU)
    assert config.data.image_size == [512, 512] and config.model.options["base_filters"] == 64
    assert config.training.mixed_precision is True


def test_rare_foreground_raises_the_share_of_foreground_patches():
    rare = _fingerprint(classes=[_class("background", 0.99, extent=512, thickness=60),
                                 _class("lesion", 0.01, extent=20, thickness=10)])
    assert _decided(rare)[0].data.foreground_fraction == 0.67
    assert _decided(_fingerprint())[0].data.foreground_fraction == 0.5


def test_ct_like_intensities_get_a_window_from_the_foreground_percentiles():
    config, d = _decided(_fingerprint(dtype="int16", percentiles=(-1000.0, 40.0, 1500.0)))
    assert config.data.normalization == {"method": "window", "center": 250.0, "width": 2500.0}
    assert "CT" in d["data.normalization"].reason
    assert _decided(_fingerprint())[0].data.normalization == {"method": "zscore"}


def test_validation_split_choice_and_errors():
    config, d = _decided(_fingerprint(val=0))
    assert config.data.val_split == "" and "no validation split" in d["data.val_split"].reason
    assert config.training.monitor == "foreground_dice"
    with pytest.raises(PlanError, match="no split 'test'"):
        _decided(_fingerprint(), val_split="test")
    with pytest.raises(PlanError, match="unknown or unplannable model 'unet3d'"):
        _decided(_fingerprint(), model="unet3d")


@pytest.mark.parametrize("model", ["attention_unet", "segnet", "deeplabv3plus", "fcn8s", "pspnet"])
def test_every_plannable_model_gets_from_scratch_options_and_its_learning_rate(model):
    config, d = _decided(_fingerprint(), model=model)
    assert config.model.name == model and d["model.name"].reason == "asked for (--model)"
    if model in ("deeplabv3plus", "pspnet"):
        assert config.model.options == {"backbone": "mobilenetv2", "encoder_weights": None}
    assert config.optimizer.learning_rate == (3e-3 if model == "segnet" else 1e-3)


def test_batch_size_is_lowered_to_fit_memory_and_the_split():
    assert choose_batch_size(100 << 20, CPU, n_train=24)[0] == 4
    assert choose_batch_size(100 << 20, GPU, n_train=24)[0] == 8
    small = dataclasses.replace(CPU, memory_bytes=1 << 30)
    batch, reason = choose_batch_size(300 << 20, small, n_train=24)
    assert batch == 1 and "-> 1" in reason
    assert choose_batch_size(1 << 20, GPU, n_train=3)[0] == 3


@pytest.mark.parametrize("budget, step, epoch_end", [(12, 1.5, 12.0), (3, 1.5, 12.0), (60, 0.05, 1.0),
                                                     (1, 2.0, 30.0)])
def test_run_length_fills_the_budget(budget, step, epoch_end):
    timing = Timing(step_seconds=step, epoch_end_seconds=epoch_end, startup_seconds=15.0, probe_seconds=60.0)
    epochs, steps, decisions = fit_to_budget(budget, timing, n_train=24, batch_size=4)
    planned = 15.0 + epochs * (steps * step + epoch_end)
    assert steps >= 4
    if epochs >= MIN_EPOCHS:
        assert epochs <= MAX_EPOCHS
        assert planned <= budget * 60 * 1.01
        assert epochs * epoch_end <= VALIDATION_SHARE * budget * 60 + epoch_end * MIN_EPOCHS
    keys = {d.key for d in decisions}
    assert keys == {"training.epochs", "training.steps_per_epoch", "training.max_minutes", "schedule.warmup_epochs"}


def test_a_budget_below_the_start_up_time_is_refused():
    timing = Timing(step_seconds=1.0, epoch_end_seconds=5.0, startup_seconds=90.0, probe_seconds=100.0)
    with pytest.raises(PlanError, match="does not cover starting the run"):
        fit_to_budget(1.0, timing, n_train=24, batch_size=4)


def test_untimed_plans_one_pass_per_epoch_at_least():
    decisions = {d.key: d.value for d in untimed(400, 4)}
    assert decisions["training.epochs"] == 50 and decisions["training.steps_per_epoch"] == 100
    assert {d.key: d.value for d in untimed(8, 4)}["training.steps_per_epoch"] == 25
