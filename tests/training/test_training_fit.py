"""fit(config) end to end on a tiny real TFRecord dataset, and the train/evaluate/predict CLIs.

One module-scoped run (a small U-Net learning a bright disk, 4 epochs) feeds the
run-folder, predict and evaluate tests.
"""

from __future__ import annotations

import csv
import json
import pathlib

import cv2
import numpy as np
import pytest

import training_helpers as helpers
from kerasseg import training
from kerasseg.cli import main as cli_main
from kerasseg.config import from_dict


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("data"), splits={"train": 32, "val": 8})


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "disk"
    config = from_dict(helpers.tiny_config(
        dataset, run_dir,
        model={"options": {"base_filters": 8, "depth": 2}},
        optimizer={"learning_rate": 0.003},
        schedule={"name": "cosine", "min_learning_rate": 0.0003},
        training={"epochs": 4},
        callbacks={"tensorboard": True},
        data={"class_weights": True},
    ))
    return config, training.fit(config)


# ----------------------------------------------------------------------------- the run folder


def test_run_folder_holds_everything(trained):
    config, result = trained
    run = pathlib.Path(result.run_dir)
    assert {"config.yaml", "history.csv", "best.keras", "last.keras", "best.json", "model_info.json",
            "learning_curves.png", "logs"} <= {p.name for p in run.iterdir()}
    assert not (run / "backup").exists()  # a finished run leaves no backup
    # resolved config: every default written, loads back to the same config
    from kerasseg.config import load_config

    assert load_config(run / "config.yaml") == config
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert {"loss", "val_loss", "val_mean_dice", "val_foreground_dice", "val_dice_disk", "learning_rate"} <= set(rows[0])
    # the cosine schedule decays the logged learning rate
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[0] > rates[-1] >= 0.0003 - 1e-9
    # best.keras is the epoch with the highest foreground validation Dice (ties: the later epoch)
    dice = [float(r["val_foreground_dice"]) for r in rows]
    assert dice == [float(r["val_dice_disk"]) for r in rows]  # one foreground class
    best = json.loads((run / "best.json").read_text())
    assert best["epoch"] == len(dice) - int(np.argmax(dice[::-1])) == result.best_epoch
    assert best["monitor"] == "val_foreground_dice"
    assert best["value"] == pytest.approx(max(dice))
    assert result.best_value > 0.8  # it learned the disk
    assert [e for e in (run / "logs" / "train").iterdir() if "tfevents" in e.name]
    png = cv2.imread(str(run / "learning_curves.png"))
    assert png is not None and png.shape[0] > 100


def test_model_info_records_what_inference_needs(trained, dataset):
    _, result = trained
    info = json.loads((pathlib.Path(result.run_dir) / "model_info.json").read_text())
    assert info["class_names"] == ["background", "disk"]
    assert info["normalization"]["method"] == "zscore" and "eps" in info["normalization"]
    assert info["version"] == 2 and info["channels"] == 1 and info["image_size"] == [32, 32]
    assert info["geometry"] == {"mode": "resize", "size": [32, 32], "overlap": 0.5}
    assert info["monitor"] == "val_foreground_dice"
    assert info["crf"]["iterations"] == 5


def test_best_model_reloads_in_safe_mode_and_matches_the_run(trained, dataset):
    from kerasseg import inference
    from kerasseg.data import iterate_examples

    _, result = trained
    loaded = inference.load_for_inference(result.best_model_path)
    example = next(iterate_examples(str(dataset), "val"))
    probs = inference.predict_probabilities(loaded.model, example["image"], normalization=loaded.normalization)
    mask = inference.probabilities_to_mask(probs)
    agreement = (mask == example["mask"]).mean()
    assert agreement > 0.9


def test_class_weights_come_from_dataset_json(trained, dataset):
    from kerasseg.data.class_weights import median_frequency_weights
    from kerasseg.schema import read_dataset_info

    info = read_dataset_info(str(dataset))
    weights = median_frequency_weights(info.class_pixel_counts["train"])
    assert weights[1] > 1.0 > weights[0]  # the disk is the rarer class
    assert training.class_weights_setting(True) == "median_frequency"
    assert training.class_weights_setting(False) is None
    assert training.class_weights_setting([1.0, 3.0]) == [1.0, 3.0]


# ----------------------------------------------------------------------------- schedules


def test_polynomial_schedule_is_deeplab_poly():
    schedule = training.make_schedule(name="polynomial", learning_rate=0.01, total_steps=100, power=0.9)
    for step in (0, 10, 50, 99):
        assert float(schedule(step)) == pytest.approx(0.01 * (1 - step / 100) ** 0.9, rel=1e-5)


def test_cosine_and_warmup_and_constant():
    cosine = training.make_schedule(name="cosine", learning_rate=0.01, total_steps=100, min_learning_rate=0.001)
    assert float(cosine(0)) == pytest.approx(0.01)
    assert float(cosine(50)) == pytest.approx(0.001 + 0.009 * 0.5, rel=1e-4)
    assert float(cosine(100)) == pytest.approx(0.001, rel=1e-4)
    warm = training.make_schedule(name="polynomial", learning_rate=0.01, total_steps=110, warmup_steps=10)
    assert float(warm(5)) == pytest.approx(0.005)
    assert float(warm(10)) == pytest.approx(0.01)
    assert float(warm(60)) == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-5)
    assert training.make_schedule(name="constant", learning_rate=0.02, total_steps=5) == 0.02


# ----------------------------------------------------------------------------- fine-tuning, precision


def _spy_on_epochs(monkeypatch, seen):
    """Record (encoder frozen?, learning rate) at the start of every epoch, through the
    TensorBoard slot of the run's callback list."""
    import keras

    from kerasseg.training import callbacks as run_callbacks

    class Spy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            from kerasseg.models import encoder_layers

            seen[epoch] = (
                all(not layer.trainable for layer in encoder_layers(self.model)),
                float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            )

    monkeypatch.setattr(run_callbacks, "tensorboard_callback", lambda log_dir: Spy())


def test_two_phase_fine_tuning_freezes_then_unfreezes_a_pretrained_encoder(dataset, tmp_path, monkeypatch):
    import keras

    reference = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                               input_shape=(None, None, 3))
    weights = tmp_path / "mobilenetv2.weights.h5"
    reference.save_weights(weights)
    config = from_dict(helpers.tiny_config(
        dataset, tmp_path / "ft", training={"epochs": 2, "steps_per_epoch": 2},
        model={"name": "deeplabv3plus", "options": {
            "backbone": "mobilenetv2", "alpha": 0.35, "encoder_weights": str(weights),
            "aspp_filters": 8, "decoder_filters": 8, "low_level_filters": 8}},
        finetune={"frozen_epochs": 1, "learning_rate_factor": 0.1},
        optimizer={"learning_rate": 0.01},
        callbacks={"tensorboard": True},
    ))
    seen = {}
    _spy_on_epochs(monkeypatch, seen)
    result = training.fit(config)
    assert seen[0] == (True, pytest.approx(0.01))       # phase 1: encoder frozen, full rate
    assert seen[1] == (False, pytest.approx(0.001))     # phase 2: everything trains at rate x 0.1
    assert result.history["epoch"] == [0.0, 1.0]


def test_freezing_an_encoder_without_pretrained_weights_is_refused_loudly(dataset, tmp_path, monkeypatch, capsys):
    config = from_dict(helpers.tiny_config(
        dataset, tmp_path / "scratch", training={"epochs": 2, "steps_per_epoch": 2},
        finetune={"frozen_epochs": 1}, optimizer={"learning_rate": 0.01}, callbacks={"tensorboard": True},
    ))
    seen = {}
    _spy_on_epochs(monkeypatch, seen)
    training.fit(config)
    err = capsys.readouterr().err
    assert "finetune.frozen_epochs=1 ignored" in err and "encoder_weights" in err
    # one phase: nothing frozen, the full learning rate from the first epoch
    assert seen[0] == (False, pytest.approx(0.01)) and seen[1] == (False, pytest.approx(0.01))


def test_mixed_bfloat16_on_cpu_trains_and_restores_the_policy(dataset, tmp_path, capsys):
    import keras

    # fit also takes a plain dict (or a YAML path) and --set style overrides
    config = helpers.tiny_config(dataset, tmp_path / "bf16", training={"epochs": 1, "steps_per_epoch": 2})
    assert training.mixed_precision_policy(True) == "mixed_bfloat16"  # no GPU here
    result = training.fit(config, overrides=["training.mixed_precision=true"])
    assert keras.mixed_precision.global_policy().name == "float32"
    assert result.model.layers[1].dtype_policy.name == "mixed_bfloat16"
    assert np.isfinite(result.history["loss"][0])
    # the line that starts training says that a CPU computes in bfloat16
    assert "mixed precision mixed_bfloat16 on CPU (computations in bfloat16)" in capsys.readouterr().err


def test_auto_precision_trains_in_bfloat16_exactly_where_the_cpu_has_it(dataset, tmp_path, capsys):
    from kerasseg.tf_runtime import cpu_has_bf16

    config = helpers.tiny_config(dataset, tmp_path / "auto", training={"epochs": 1, "steps_per_epoch": 2})
    result = training.fit(config, overrides=["training.mixed_precision=auto"])
    native = cpu_has_bf16()
    assert result.model.layers[1].dtype_policy.name == ("mixed_bfloat16" if native else "float32")
    err = capsys.readouterr().err
    assert ("computations in bfloat16" in err) == native and "emulates it" not in err


# ----------------------------------------------------------------------------- CLIs


def test_predict_cli_writes_masks_for_png_16bit_tiff_and_folders(trained, tmp_path, capsys):
    _, result = trained
    rng = np.random.default_rng(5)
    inputs = tmp_path / "in"
    (inputs / "folder").mkdir(parents=True)
    image8, mask8 = helpers.disk_example(rng, 32)
    image16, _ = helpers.disk_example(rng, 48, dtype=np.uint16)
    large, large_mask = helpers.disk_example(rng, 80)  # larger than the 32x32 training size: tiled
    cv2.imwrite(str(inputs / "eight.png"), image8)
    cv2.imwrite(str(inputs / "folder" / "sixteen.png"), image16)
    cv2.imwrite(str(inputs / "folder" / "scan.tif"), image16)
    cv2.imwrite(str(inputs / "large.jpg"), large, [cv2.IMWRITE_JPEG_QUALITY, 100])
    out = tmp_path / "out"
    status = cli_main(["predict", "--model", result.best_model_path, str(inputs / "eight.png"),
                       str(inputs / "folder"), str(inputs / "large.jpg"), "--out", str(out),
                       "--overlay", "--probabilities", "--tta"])
    assert status == 0
    printed = capsys.readouterr().out
    for stem, size in (("eight", 32), ("sixteen", 48), ("scan", 48), ("large", 80)):
        path = out / f"{stem}_mask.png"
        assert f"generating: {path}" in printed
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == (size, size) and set(np.unique(mask)) <= {0, 1}
        assert (out / f"{stem}_overlay.png").exists()
        probs = np.load(out / f"{stem}_prob.npy")
        assert probs.shape == (size, size, 2) and np.allclose(probs.sum(-1), 1, atol=1e-4)
    assert (cv2.imread(str(out / "eight_mask.png"), cv2.IMREAD_UNCHANGED) == mask8).mean() > 0.9
    assert (cv2.imread(str(out / "large_mask.png"), cv2.IMREAD_UNCHANGED) == large_mask).mean() > 0.9
    # 16-bit PNG probability maps on request
    assert cli_main(["predict", "--model", result.best_model_path, str(inputs / "eight.png"), "--out",
                     str(tmp_path / "out16"), "--probabilities", "--probabilities-format", "png",
                     "--tile", "16", "--overlap", "0.25"]) == 0
    plane = cv2.imread(str(tmp_path / "out16" / "eight_prob_class1.png"), cv2.IMREAD_UNCHANGED)
    assert plane.dtype == np.uint16


def test_predict_with_crf(trained, tmp_path):
    _, result = trained
    image, mask = helpers.disk_example(np.random.default_rng(9), 32)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    assert cli_main(["predict", "--model", result.best_model_path, str(tmp_path / "x.png"),
                     "--out", str(tmp_path / "o"), "--crf"]) == 0
    refined = cv2.imread(str(tmp_path / "o" / "x_mask.png"), cv2.IMREAD_UNCHANGED)
    assert refined.shape == (32, 32) and (refined == mask).mean() > 0.85


def test_evaluate_cli_prints_table_and_writes_json_and_csv(trained, dataset, tmp_path, capsys):
    _, result = trained
    report = tmp_path / "reports" / "val.json"
    status = cli_main(["evaluate", "--model", result.best_model_path, "--data", str(dataset),
                       "--split", "val", "--report", str(report), "--tta"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "pixel accuracy" in printed and "disk" in printed
    data = json.loads(report.read_text())
    assert data["mean_dice"] > 0.8 and 0.9 < data["pixel_accuracy"] <= 1.0
    rows = list(csv.reader(open(report.with_suffix(".csv"))))
    assert any("disk" in row for row in rows)
    # threshold-free scores from the probabilities, and every image named by source id and file
    foreground = [name for name in data["per_class"] if name != data["class_names"][0]]
    assert all(0.5 < data["per_class"][name]["auc_roc"] <= 1.0 for name in foreground)
    assert 0.0 < data["mean_auc_pr"] <= 1.0 and data["per_class"]["disk"]["best_f1"] > 0.5
    assert all(record["name"] and record["filename"] for record in data["per_image"])
    per_image = list(csv.DictReader(open(tmp_path / "reports" / "val_per_image.csv")))
    assert len(per_image) == len(data["per_image"]) and all(row["name"] and row["filename"] for row in per_image)


def _error(capsys) -> str:
    return capsys.readouterr().err


def test_bad_inputs_give_clear_errors_and_exit_2(trained, dataset, tmp_path, capsys):
    _, result = trained
    colour = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    out = tmp_path / "out"
    assert cli_main(["predict", "--model", result.best_model_path, str(tmp_path / "colour.png"),
                     "--out", str(out)]) == 2
    err = _error(capsys)
    assert "colour.png" in err and "3 channel(s) but the model expects 1" in err
    assert not list(out.glob("*"))  # nothing half-written

    assert cli_main(["predict", "--model", str(tmp_path / "missing.keras"), str(tmp_path / "colour.png"),
                     "--out", str(out)]) == 2
    assert "missing.keras: model file not found" in _error(capsys)

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(pathlib.Path(result.best_model_path).read_bytes()[:5000])  # truncated archive
    assert cli_main(["evaluate", "--model", str(corrupt), "--data", str(dataset)]) == 2
    assert "corrupt.keras: cannot load model" in _error(capsys)

    assert cli_main(["evaluate", "--model", result.best_model_path, "--data", str(tmp_path)]) == 2
    assert "no dataset.json" in _error(capsys)
    assert cli_main(["evaluate", "--model", result.best_model_path, "--data", str(dataset),
                     "--split", "tets"]) == 2
    assert "no split 'tets'" in _error(capsys)

    config = helpers.write_yaml(tmp_path / "bad.yaml", {"training": {"epohcs": 3}})
    assert cli_main(["train", str(config)]) == 2
    err = _error(capsys)
    assert "bad.yaml" in err and "'training.epohcs'" in err and "did you mean 'training.epochs'" in err
    good = helpers.write_yaml(tmp_path / "good.yaml", helpers.tiny_config(dataset, tmp_path / "r"))
    assert cli_main(["train", str(good), "--set", "model.name=unett"]) == 2
    assert "unett" in _error(capsys)
    assert cli_main(["train", str(good), "--set", "data.path=" + str(tmp_path / "nowhere")]) == 2
    assert "no dataset.json" in _error(capsys)
    assert cli_main(["train", str(good), "--set", "training.batch_size=64"]) == 2
    assert "fewer than one global batch" in _error(capsys)


def test_predict_on_real_isbi_slices_8_and_16_bit(trained, isbi_membrane, tmp_path, capsys):
    """Real files: a 512x512 8-bit EM slice and a 256x256 16-bit PNG from the ISBI folder."""
    _, result = trained
    test_dir = isbi_membrane / "data" / "membrane" / "test"
    inputs = [test_dir / "0.png", test_dir / "0_predict.png"]
    out = tmp_path / "isbi"
    assert cli_main(["predict", "--model", result.best_model_path, *map(str, inputs), "--out", str(out),
                     "--tile", "128", "--overlay"]) == 0
    printed = capsys.readouterr().out
    for name, size in (("0", 512), ("0_predict", 256)):
        mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert f"generating: {out / f'{name}_mask.png'}" in printed
        assert mask.shape == (size, size) and mask.dtype == np.uint8 and mask.max() <= 1
        assert cv2.imread(str(out / f"{name}_overlay.png")).shape == (size, size, 3)
