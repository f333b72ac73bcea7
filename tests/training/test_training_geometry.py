"""One geometry from training to serving (issue 19 item 2) and a best model that is the best (item 3).

For every ``data.geometry`` a small U-Net is trained on images larger than the
training size; the validation Dice recorded for ``best.keras`` during training,
``kerasseg evaluate``, ``kerasseg predict`` and the exported SavedModel must agree
on the same images, because all four run the one implementation in
``kerasseg.predict_graph``.
"""

from __future__ import annotations

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
    # 48x48 images: larger than the 32x32 training size, so resize and tiles both matter
    return helpers.write_dataset(tmp_path_factory.mktemp("geometry_data"), splits={"train": 16, "val": 4}, size=48)


def _dice(mask: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    valid = truth != 255
    tp = int(((mask == 1) & (truth == 1) & valid).sum())
    fp = int(((mask == 1) & (truth == 0) & valid).sum())
    fn = int(((mask == 0) & (truth == 1) & valid).sum())
    return tp, fp, fn


@pytest.mark.parametrize("geometry, mode, precision", [
    ("resize", "resize", False), ("random_crop", "tile", False), ("pad", "whole", False),
    # the default precision: mixed_bfloat16 on a CPU with native bfloat16, kept by every consumer
    ("random_crop", "tile", "auto")])
def test_validation_evaluate_predict_and_savedmodel_agree(dataset, tmp_path, geometry, mode, precision, capsys):
    import tensorflow as tf

    from kerasseg.data import iterate_examples
    from kerasseg.export import export

    config = from_dict(helpers.tiny_config(
        dataset, tmp_path / "run", data={"geometry": geometry, "image_size": [32, 32]},
        model={"options": {"base_filters": 4, "depth": 2, "norm": "batch"}},
        training={"epochs": 3, "steps_per_epoch": 4, "mixed_precision": precision}, optimizer={"learning_rate": 0.01},
    ))
    result = training.fit(config)
    run = pathlib.Path(result.run_dir)
    info = json.loads((run / "model_info.json").read_text())
    assert info["geometry"]["mode"] == mode
    best = json.loads((run / "best.json").read_text())

    # kerasseg evaluate on the same split gives the Dice that chose best.keras
    report_path = tmp_path / "eval.json"
    assert cli_main(["evaluate", "--model", str(run / "best.keras"), "--data", str(dataset), "--split", "val",
                     "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["per_class"]["disk"]["dice"] == pytest.approx(best["value"], abs=1e-6)

    # kerasseg predict on the stored images as files, and the SavedModel on the same pixels
    examples = list(iterate_examples(str(dataset), "val"))
    images = tmp_path / "images"
    images.mkdir()
    for ex in examples:
        cv2.imwrite(str(images / f"{ex['source_id']}.png"), ex["image"])
    out = tmp_path / "masks"
    assert cli_main(["predict", "--model", str(run / "best.keras"), str(images), "--out", str(out)]) == 0
    export_dir = export(_load(run / "best.keras"), str(tmp_path / "served"),
                        class_names=info["class_names"], normalization=info["normalization"],
                        geometry=info["geometry"])
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    totals = np.zeros(3, np.int64)
    for ex in examples:
        predicted = cv2.imread(str(out / f"{ex['source_id']}_mask.png"), cv2.IMREAD_UNCHANGED)
        from_savedmodel = served(images=tf.constant(ex["image"][None]))["mask"].numpy()[0]
        assert predicted.shape == ex["mask"].shape == (48, 48)
        np.testing.assert_array_equal(predicted, from_savedmodel)
        totals += _dice(predicted, ex["mask"])
    tp, fp, fn = totals
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(report["per_class"]["disk"]["dice"], abs=1e-6)
    capsys.readouterr()


def _load(path):
    from kerasseg.artifacts import load_model

    return load_model(path)


def test_best_model_ties_go_to_the_later_epoch_and_last_is_kept(tmp_path):
    import keras

    from kerasseg.training.callbacks import ModelCheckpoints

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    saved = []
    checkpoints = ModelCheckpoints(str(tmp_path / "best.keras"), str(tmp_path / "last.keras"),
                                   monitor="val_foreground_dice", state_path=str(tmp_path / "best.json"),
                                   on_first_save=lambda: saved.append("first"))
    checkpoints.set_model(model)
    # an untrained model scoring like an all-background prediction, then the same score, then better
    for epoch, value in enumerate([0.0, 0.0, 0.6, 0.6, 0.5]):
        checkpoints.on_epoch_end(epoch, {"val_foreground_dice": value, "val_mean_dice": 0.476})
    state = json.loads((tmp_path / "best.json").read_text())
    assert state == {"epoch": 4, "monitor": "val_foreground_dice", "value": 0.6}
    assert (tmp_path / "last.keras").is_file() and saved == ["first"]
    assert not list(tmp_path.glob("*.part*"))


def test_foreground_classes_leave_out_a_named_background_only():
    from kerasseg.classes import foreground_indices

    assert foreground_indices(["_background_", "lesion", "vessel"]) == [1, 2]
    assert foreground_indices(["background", "disk"]) == [1]
    assert foreground_indices(["membrane", "cell"]) == [0, 1]  # ISBI: no background class


def test_learning_curves_plot_per_class_validation_dice(tmp_path):
    from kerasseg.training.curves import plot_learning_curves

    history = {"epoch": [0, 1, 2], "loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.8],
               "val_mean_dice": [0.48, 0.6, 0.7], "val_dice_background": [0.95, 0.96, 0.97],
               "val_dice_lesion": [0.0, 0.24, 0.43]}
    path = plot_learning_curves(history, str(tmp_path / "curves.png"), class_names=["_background_", "lesion"])
    image = cv2.imread(path)
    assert image is not None and image.shape[1] > 3 * image.shape[0]  # three panels side by side
