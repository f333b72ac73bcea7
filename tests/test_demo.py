"""End to end: `kerasseg demo --quick` runs every stage and its outputs are real."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasseg_testing import REPO_ROOT


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "kerasseg", "demo", "--quick", "--workdir", str(workdir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Intersection over Union for each class" in out
    assert "lesion Dice on the validation split" in out

    # the labelme stage wrote real JSON, some with embedded image data
    jsons = sorted((workdir / "labelme").glob("*.json"))
    assert len(jsons) == 16
    embedded = [json.loads(p.read_text())["imageData"] is not None for p in jsons]
    assert any(embedded) and not all(embedded)

    # the converter wrote shards and dataset.json
    info = json.loads((workdir / "records" / "dataset.json").read_text())
    assert info["class_names"] == ["_background_", "lesion"]
    assert info["splits"]["train"] + info["splits"]["val"] == 16

    # one mask and one overlay per validation image, each announced
    summary = json.loads((workdir / "summary.json").read_text())
    masks = sorted((workdir / "predictions").glob("*_mask.png"))
    assert len(masks) == info["splits"]["val"]
    for path in summary["outputs"]:
        assert f"generating: {path}" in out
    import cv2

    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == (64, 64)
    assert set(np.unique(mask)) <= {0, 1}

    # the SavedModel was reloaded and agreed with Keras
    assert summary["savedmodel_agrees"] is True
    assert (workdir / "savedmodel" / "1" / "saved_model.pb").is_file()
    assert 0.0 <= summary["lesion_dice"] <= 1.0
