"""Fingerprint, timing probe, ``kerasseg plan`` and ``kerasseg train DATA --plan`` on real ISBI slices."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kerasseg_testing import REPO_ROOT

TRAIN, VAL = ["0", "1", "4", "7"], ["2", "3"]


@pytest.fixture(scope="module")
def isbi_dataset(isbi_membrane, tmp_path_factory):
    """Six real slices converted with the product's converter: 4 train, 2 val."""
    from data_tools import convert_mask_folder

    root = tmp_path_factory.mktemp("isbi_plan")
    train = isbi_membrane / "data" / "membrane" / "train"
    for kind in ("image", "label"):
        (root / kind).mkdir()
        for i in TRAIN + VAL:
            shutil.copyfile(train / kind / f"{i}.png", root / kind / f"{i}.png")
    split_file = root / "splits.txt"
    split_file.write_text("".join(f"{i} train\n" for i in TRAIN) + "".join(f"{i} val\n" for i in VAL))
    (root / "class_map.txt").write_text("0 membrane\n255 cell\n")
    out = root / "isbi"
    convert_mask_folder(root / "image", root / "label", out, class_map=root / "class_map.txt",
                        split_file=split_file)
    return out


def test_fingerprint_measures_the_membranes(isbi_dataset):
    from kerasseg.planning import fingerprint_dataset

    fp = fingerprint_dataset(str(isbi_dataset))
    assert fp.splits["train"] == 4 and fp.examples_measured == 4
    assert fp.median_size == (512, 512) and not fp.sizes_vary
    assert fp.channels == 1 and fp.image_dtype == "uint8" and fp.bits_used == 8
    membrane, cell = fp.classes
    assert (membrane.name, cell.name) == ("membrane", "cell")
    assert fp.foreground_classes == [0, 1]  # neither class is a background
    assert 0.15 < membrane.pixel_fraction < 0.3 and abs(membrane.pixel_fraction + cell.pixel_fraction - 1) < 1e-9
    assert membrane.thickness_median < 8 < cell.thickness_median  # thin network vs compact cells
    assert membrane.object_extent_p90 >= 400 and cell.objects_per_image > 20
    lo, mid, hi = fp.intensity["percentiles"]
    assert 0 <= lo < mid < hi <= 255


def test_fingerprint_pixel_fraction_matches_the_label_files(isbi_dataset, isbi_membrane):
    import cv2

    from kerasseg.planning import fingerprint_dataset

    labels = [cv2.imread(str(isbi_membrane / "data" / "membrane" / "train" / "label" / f"{i}.png"), 0) for i in TRAIN]
    expected = float(np.mean([np.mean(lab < 128) for lab in labels]))
    assert fingerprint_dataset(str(isbi_dataset)).classes[0].pixel_fraction == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_probe_times_short_real_runs_and_keeps_the_faster_precision(isbi_dataset):
    """The timing probe, as the planner runs it on a CPU with native bfloat16: one short real
    run in float32 and one in mixed_bfloat16 (here it may be emulated: the faster still wins)."""
    from kerasseg.planning import make_plan
    from kerasseg.planning.probe import choose_cpu_precision

    unused = isbi_dataset.parent / "unused"
    config = make_plan(str(isbi_dataset), budget_minutes=5, probe=False, run_dir=str(unused)).config
    config.model.options = {"base_filters": 4, "depth": 2, "norm": "batch"}
    config.data.image_size = [64, 64]
    config.training.batch_size = 2
    config.training.batchnorm_recalibration_steps = 1
    setting, timing, reason = choose_cpu_precision(config, steps=2)
    assert setting in (False, "mixed_bfloat16")
    bf16, fp32 = (float(word) for word in re.findall(r"took ([0-9.e+-]+) s in mixed_bfloat16 and ([0-9.e+-]+) s", reason)[0])
    assert timing.step_seconds == pytest.approx(min(bf16, fp32), rel=1e-2)
    assert (setting == "mixed_bfloat16") == (bf16 < fp32)
    assert config.training.mixed_precision == "auto"  # the caller's config is not changed
    assert 0 < timing.step_seconds < 10 and timing.epoch_end_seconds > 0 and timing.startup_seconds > 0
    assert timing.probe_seconds > timing.startup_seconds
    assert not os.path.exists(unused)  # the probe ran in a temporary folder


def _kerasseg(*words, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "kerasseg", *words], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_plan_command_writes_a_commented_config_that_loads(isbi_dataset, tmp_path):
    from kerasseg.config import load_config, to_dict

    result = _kerasseg("plan", str(isbi_dataset), "--no-probe", "--out", "plan.yaml", "--run-dir", "runs/p",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fingerprint of" in result.stdout and "decisions (budget 30 min" in result.stdout
    assert "thin structures (membrane" in result.stdout
    text = (tmp_path / "plan.yaml").read_text()
    assert "# thin structures (membrane" in text and "  geometry: random_crop" in text
    plan = json.loads((tmp_path / "plan.plan.json").read_text())
    assert to_dict(load_config(tmp_path / "plan.yaml")) == plan["config"]
    assert plan["fingerprint"]["classes"][0]["name"] == "membrane"
    assert {d["key"] for d in plan["decisions"]} >= {"data.geometry", "training.batch_size", "training.epochs",
                                                     "model.options", "data.normalization", "optimizer.learning_rate"}


@pytest.mark.slow
def test_train_plan_plans_trains_and_reuses_its_plan(isbi_dataset, tmp_path):
    tiny = ["--set", "model.options={base_filters: 4, depth: 2, norm: batch}", "--set", "data.image_size=[64,64]",
            "--set", "training.epochs=1", "--set", "training.steps_per_epoch=2", "--set", "training.batch_size=2",
            "--set", "training.validation_steps=1", "--set", "callbacks.tensorboard=false"]
    result = _kerasseg("train", str(isbi_dataset), "--plan", "--no-probe", "--run-dir", "runs/t", *tiny, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "t"
    assert (run / "plan.yaml").is_file() and (run / "plan.plan.json").is_file()
    assert (run / "best.keras").is_file() and (run / "last.keras").is_file()
    assert "minutes" in (run / "history.csv").read_text().splitlines()[0]
    again = _kerasseg("train", str(isbi_dataset), "--plan", "--run-dir", "runs/t", *tiny, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"using the plan in {os.path.join('runs', 't', 'plan.yaml')}" in again.stdout


def test_train_refuses_plan_flags_without_plan_and_a_folder_as_config(isbi_dataset, tmp_path):
    flags = _kerasseg("train", "configs/unet_isbi.yaml", "--budget-minutes", "5", cwd=REPO_ROOT)
    assert flags.returncode == 2 and "--budget-minutes plan a run: add --plan" in flags.stderr
    folder = _kerasseg("train", str(isbi_dataset), cwd=tmp_path)
    assert folder.returncode == 2 and "is a folder: give a config file, or add --plan" in folder.stderr
