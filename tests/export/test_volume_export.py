"""The volume SavedModel (kerasseg.volume_export): reloaded in a fresh process, it gives the masks
VolumePredictor gives; its metadata, input checks and the export folder rules."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kerasseg.export import ExportError, read_model_card
from kerasseg.volume_export import export_volume_model
from kerasseg.volume_inference import VolumePredictor
from kerasseg_testing import SHARED_DATA

CLASSES = ["background", "anterior", "posterior"]
NORMALIZATION = {"method": "zscore", "eps": 1e-6}
PATCH = (8, 12, 8)
SPACING = (1.5, 1.5, 1.5)
HIPPOCAMPUS = SHARED_DATA / "msd_hippocampus"

# Runs in a fresh interpreter: TensorFlow and the SavedModel only, no kerasseg.
_SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf

model_dir, work = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(model_dir)
jobs = json.load(open(f"{work}/jobs.json"))
results = {"signatures": sorted(loaded.signatures)}
for name, job in jobs.items():
    volume = np.load(f"{work}/{name}.npy")
    try:
        out = loaded.signatures[job["signature"]](volume=tf.constant(volume),
                                                  spacing=tf.constant(job["spacing"], tf.float32))
        np.save(f"{work}/{name}_labels.npy", out["labels"].numpy())
        np.save(f"{work}/{name}_probabilities.npy", out["probabilities"].numpy())
        results[name] = {"labels_dtype": out["labels"].dtype.name}
    except tf.errors.InvalidArgumentError as e:
        results[name] = {"error": e.message}
meta = loaded.signatures["metadata"]()
results["metadata"] = {key: np.asarray(value.numpy()).tolist() for key, value in meta.items()}
results["metadata"]["class_names"] = [c.decode() for c in results["metadata"]["class_names"]]
json.dump(results, open(f"{work}/results.json", "w"), default=lambda b: b.decode())
"""


@pytest.fixture(scope="module")
def model():
    import keras

    from kerasseg import models

    keras.utils.set_random_seed(1)
    return models.build("unet3d", input_shape=(None, None, None, 1), num_classes=3, base_filters=4, depth=2)


@pytest.fixture(scope="module")
def predictor(model):
    return VolumePredictor(model, normalization=NORMALIZATION, patch_size=PATCH, spacing=SPACING)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("volume_export") / "hippocampus"
    path = export_volume_model(model, str(base), class_names=CLASSES, normalization=NORMALIZATION,
                               patch_size=PATCH, spacing=SPACING, channels=1,
                               model_info={"model": "unet3d", "volume": {"patch_size": list(PATCH)}})
    return base, pathlib.Path(path)


def _hippocampus_case():
    from kerasseg.volume_io import read_volume

    image = sorted((HIPPOCAMPUS / "imagesTr").glob("hippocampus_*.nii.gz"))[0]
    return read_volume(image)


@pytest.fixture(scope="module")
def inputs() -> dict:
    """name -> (voxels, spacing, signature) of every volume sent to the SavedModel."""
    rng = np.random.default_rng(0)
    odd = rng.normal(300, 60, (13, 17, 11)).astype(np.float32)
    ct = rng.integers(-1000, 1500, (11, 14, 9)).astype(np.int16)
    cases = {
        "odd": (odd, (2.0, 1.0, 1.3), "serving_default"),
        "odd_with_channel_axis": (odd[..., None], (2.0, 1.0, 1.3), "serving_default"),
        "at_model_spacing": (odd, SPACING, "serving_default"),
        "ct_int16": (ct, (1.2, 0.8, 2.5), "serving_int16"),
        "smaller_than_patch": (rng.normal(0, 1, (3, 5, 4)).astype(np.float32), SPACING, "serving_default"),
        "two_channels": (np.zeros((4, 5, 6, 2), np.float32), SPACING, "serving_default"),
        "bad_spacing": (odd, (1.0, -1.0, 1.0), "serving_default"),
    }
    if HIPPOCAMPUS.is_dir():
        case = _hippocampus_case()
        cases["hippocampus"] = (np.asarray(case.voxels, np.float32), tuple(case.spacing), "serving_default")
    return cases


@pytest.fixture(scope="module")
def served(exported, inputs, tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """Every input through the reloaded SavedModel in one fresh process: (work folder, results.json)."""
    work = tmp_path_factory.mktemp("served")
    jobs = {}
    for name, (voxels, spacing, signature) in inputs.items():
        np.save(work / f"{name}.npy", voxels)
        jobs[name] = {"spacing": list(spacing), "signature": signature}
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", _SERVE, str(exported[1]), str(work)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, json.loads((work / "results.json").read_text())


def _served(served, name: str) -> tuple[np.ndarray, np.ndarray]:
    work, results = served
    assert "error" not in results[name], results[name]
    return np.load(work / f"{name}_labels.npy"), np.load(work / f"{name}_probabilities.npy")


@pytest.mark.parametrize("name", ["odd", "odd_with_channel_axis", "at_model_spacing", "ct_int16"])
def test_served_masks_equal_the_predictor_in_a_fresh_process(served, inputs, predictor, name):
    voxels, spacing, _ = inputs[name]
    labels, probabilities = _served(served, name)
    assert served[1][name]["labels_dtype"] == "uint8"
    assert labels.shape == voxels.shape[:3] and probabilities.shape == voxels.shape[:3] + (3,)
    np.testing.assert_array_equal(labels, predictor.predict_labels(voxels, spacing=spacing))
    np.testing.assert_allclose(probabilities, predictor(voxels, spacing=spacing), atol=1e-5)
    assert len(np.unique(labels)) > 1  # not a constant mask


def test_a_volume_smaller_than_the_patch_comes_back_at_its_own_size(served, inputs, predictor):
    voxels, spacing, _ = inputs["smaller_than_patch"]
    labels, probabilities = _served(served, "smaller_than_patch")
    assert labels.shape == (3, 5, 4) and probabilities.shape == (3, 5, 4, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=3e-3)
    np.testing.assert_array_equal(labels, predictor.predict_labels(voxels, spacing=spacing))


def test_the_served_graph_refuses_bad_volumes_and_spacing_with_clear_messages(served):
    results = served[1]
    assert "the model takes 1 channel(s)" in results["two_channels"]["error"]
    assert "spacing must be 3 positive finite numbers" in results["bad_spacing"]["error"]


def test_metadata_signature_and_model_card_describe_the_model(served, exported):
    results = served[1]
    assert results["signatures"] == ["metadata", "serving_default", "serving_int16"]
    meta = results["metadata"]
    assert meta["class_names"] == CLASSES and meta["num_classes"] == 3 and meta["channels"] == 1
    assert meta["patch_size"] == list(PATCH) and meta["spacing"] == list(SPACING)
    assert meta["overlap"] == 0.5 and meta["tta"] is False
    assert json.loads(meta["normalization"]) == NORMALIZATION
    card = read_model_card(str(exported[1]))
    assert json.loads(meta["info"]) == card
    assert card["format"] == "kerasseg-volume-savedmodel"
    assert card["volume"] == {"patch_size": list(PATCH), "spacing": list(SPACING), "overlap": 0.5}
    assert card["model_info"]["model"] == "unet3d"


def test_real_hippocampus_volume_served_equals_the_predictor(served, inputs, predictor):
    if "hippocampus" not in inputs:
        pytest.skip(f"real data not available: {HIPPOCAMPUS} is absent (see ../shared/data/README.md)")
    voxels, spacing, _ = inputs["hippocampus"]
    labels, probabilities = _served(served, "hippocampus")
    assert labels.shape == voxels.shape
    expected = predictor.predict_labels(voxels, spacing=spacing)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(probabilities, predictor(voxels, spacing=spacing), atol=1e-5)
    assert len(np.unique(expected)) > 1  # not a constant mask


def _tree(path: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_exporting_over_an_existing_version_is_refused_and_leaves_it_intact(model, exported):
    base, version_dir = exported
    assert version_dir == base / "1"
    before = _tree(base)
    with pytest.raises(ExportError, match="already exists.*next free: 2"):
        export_volume_model(model, str(base), class_names=CLASSES, normalization=NORMALIZATION, patch_size=PATCH,
                            spacing=SPACING, version=1)
    assert _tree(base) == before
    assert sorted(os.listdir(base)) == ["1"]  # no staging folder left behind


@pytest.mark.parametrize("kwargs, message", [
    ({"class_names": ["background", "anterior"]}, "needs 3 class names"),
    ({"normalization": None}, "normalization"),
    ({"normalization": {"method": "zscore", "mean": 3}}, "normalization"),
    ({"channels": 2}, "channels"),
    ({"patch_size": (8, 10, 8)}, "stride"),
    ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ({"overlap": 1.0}, "overlap"),
    ({"version": -1}, "version"),
])
def test_bad_export_arguments_are_export_errors_and_write_nothing(model, tmp_path, kwargs, message):
    args = {"class_names": CLASSES, "normalization": NORMALIZATION, "patch_size": PATCH, "spacing": SPACING,
            **kwargs}
    with pytest.raises(ExportError, match=message):
        export_volume_model(model, str(tmp_path / "out"), **args)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
