"""``kerasseg crf-tune`` end to end: real TFRecords (data_tools converter), a saved
.keras model, grid search, YAML/JSON outputs, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from kerasseg.cli import main
from kerasseg.postprocess import CRFParams


@pytest.fixture(scope="module")
def tuned_setup(tmp_path_factory):
    keras = pytest.importorskip("keras")
    from data_tools.converter import convert_mask_folder

    root = tmp_path_factory.mktemp("crf_tune")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(6):
        truth = np.zeros((40, 48), np.uint8)
        truth[6 + i: 26 + i, 8:30 + i] = 1
        # bright object, strong pixel noise: a pointwise model is noisy, the CRF cleans it
        image = np.clip(70 + 90 * truth + rng.normal(0, 45, truth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(truth * 255).save(root / "masks" / f"s{i}.png")
    data = root / "data"
    convert_mask_folder(root / "images", root / "masks", data, threshold=127, split="train=0.5,val=0.5")

    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    # logit difference 12 * (x - 0.45) on x = image / 255: class 1 for bright pixels
    model.layers[-1].set_weights([np.array([[[[-6.0, 6.0]]]], np.float32), np.array([2.7, -2.7], np.float32)])
    model_path = root / "model" / "model.keras"
    model_path.parent.mkdir()
    model.save(model_path)
    (model_path.parent / "model_info.json").write_text(json.dumps(
        {"class_names": ["background", "object"], "normalization": {"method": "scale", "max": 255.0},
         "crf": {"enabled": False, "iterations": 5}}))
    return root, data, model_path


def test_crf_tune_writes_the_best_setting_and_all_results(tuned_setup, capsys):
    root, data, model_path = tuned_setup
    out = root / "configs" / "train.yaml"
    out.parent.mkdir()
    out.write_text("run_dir: runs/x\ncrf: {enabled: false}\n")
    code = main(["crf-tune", "--model", str(model_path), "--data", str(data), "--split", "val",
                 "--grid", "bilateral_compat=0,5;gaussian_compat=0,3;bilateral_sxy=10",
                 "--out", str(out), "--n-jobs", "2"])
    text = capsys.readouterr().out
    assert code == 0
    assert "(no CRF)" in text and "improves dice" in text
    config = yaml.safe_load(out.read_text())
    assert config["run_dir"] == "runs/x"  # the rest of an existing config is kept
    best = CRFParams.from_dict(config["crf"])
    assert "kernel" not in config["crf"]  # advanced keys only when not default
    results = json.loads((root / "configs" / "train_results.json").read_text())
    assert len(results["results"]) == 4 and results["images"] == 3
    setting = results["results"][results["best_index"]]["setting"]
    assert best.enabled and best.bilateral_sxy == 10
    assert (best.bilateral_compat, best.gaussian_compat) == (setting["bilateral_compat"], setting["gaussian_compat"])
    assert (best.bilateral_compat, best.gaussian_compat) != (0, 0)
    no_pairwise = results["results"][0]["scores"]["dice"]
    assert no_pairwise == pytest.approx(results["baseline"]["dice"])
    assert results["results"][results["best_index"]]["scores"]["dice"] > results["baseline"]["dice"] + 0.05


def test_crf_tune_reports_user_errors(tuned_setup, capsys):
    root, data, model_path = tuned_setup
    base = ["crf-tune", "--model", str(model_path), "--data", str(data), "--out", str(root / "x.yaml")]
    assert main(base + ["--grid", "bilateral_sgrb=3"]) == 2
    assert "unknown CRF parameter 'bilateral_sgrb'" in capsys.readouterr().err
    assert main(base + ["--split", "test"]) == 2
    assert "no split 'test'" in capsys.readouterr().err
    assert main(["crf-tune", "--model", str(root / "missing.keras"), "--data", str(data)]) == 2
    assert "missing.keras" in capsys.readouterr().err
    assert not (root / "x.yaml").exists()
