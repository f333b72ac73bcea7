"""``kerasseg export`` from a .keras file with model_info.json, and the DenseCRF in the graph."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from export_helpers import CLASS_NAMES, NORMALIZATION, keras_reference, make_blobs

import tensorflow as tf


@pytest.fixture(scope="module")
def saved_model_file(trained_unet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    path = folder / "best.keras"
    trained_unet.save(path)
    info = {"class_names": CLASS_NAMES, "normalization": NORMALIZATION, "channels": 1,
            "crf": {"enabled": False, "iterations": 2, "bilateral_srgb": 20.0, "kernel": "diag"}}
    (folder / "model_info.json").write_text(json.dumps(info), encoding="utf-8")
    return path


def _main(*argv: str) -> int:
    from kerasseg.cli import main

    return main(["export", *argv])


def test_export_reads_model_info_and_numbers_versions(saved_model_file, tmp_path, capsys):
    out = tmp_path / "served"
    assert _main("--model", str(saved_model_file), "--out", str(out)) == 0
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, image in enumerate(make_blobs(2, 40, seed=31)[0]):
        (samples / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    assert _main("--model", str(saved_model_file), "--out", str(out), "--class-names", "bg,cell,edge",
                 "--tflite", "--tflite-size", "32", "32", "--tflite-samples", str(samples)) == 0
    printed = capsys.readouterr().out
    assert "mask agreement with Keras on 2 given images" in printed
    report = json.loads((out / "2" / "tflite" / "report.json").read_text())
    assert report["input_shape"] == [1, 32, 32, 1] and report["mask_agreement_float32"] >= 0.99
    assert f"-> {out / '1'}" in printed and f"-> {out / '2'}" in printed
    assert sorted(os.listdir(out)) == ["1", "2"]
    loaded = tf.saved_model.load(str(out / "1"))
    meta = loaded.signatures["metadata"]()
    assert [c.decode() for c in meta["class_names"].numpy()] == CLASS_NAMES
    assert json.loads(meta["normalization"].numpy()) == NORMALIZATION
    card = json.loads(meta["info"].numpy())
    assert card["source_model"] == str(saved_model_file) and card["crf"] is None
    renamed = tf.saved_model.load(str(out / "2")).signatures["metadata"]()["class_names"].numpy()
    assert [c.decode() for c in renamed] == ["bg", "cell", "edge"]
    # an existing version is a user error (exit 2), nothing is touched
    stamp = os.path.getmtime(out / "2" / "saved_model.pb")
    assert _main("--model", str(saved_model_file), "--out", str(out), "--version", "2") == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert os.path.getmtime(out / "2" / "saved_model.pb") == stamp and sorted(os.listdir(out)) == ["1", "2"]


def test_user_errors_exit_2_with_the_reason(saved_model_file, tmp_path, capsys):
    assert _main("--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o")) == 2
    assert "model file not found" in capsys.readouterr().err
    assert _main("--model", str(saved_model_file), "--out", str(tmp_path / "o"), "--class-names", "a,b") == 2
    assert "class names" in capsys.readouterr().err
    assert _main("--model", str(saved_model_file), "--out", str(tmp_path / "o"), "--normalization", "[1, 2]") == 2
    assert "--normalization" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_crf_in_the_serving_graph_matches_the_layer(trained_unet, saved_model_file, tmp_path):
    from kerasseg.layers.dense_crf import DenseCRF

    out = tmp_path / "crf"
    assert _main("--model", str(saved_model_file), "--out", str(out), "--crf") == 0
    loaded = tf.saved_model.load(str(out / "1"))
    card = json.loads(loaded.signatures["metadata"]()["info"].numpy())
    assert card["crf"]["iterations"] == 2 and card["crf"]["bilateral_srgb"] == 20.0  # from model_info.json
    images, _ = make_blobs(2, 32, seed=21)
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    probabilities = keras_reference(trained_unet, images)
    refined = np.asarray(DenseCRF(iterations=2, bilateral_srgb=20.0)([images.astype(np.float32), probabilities]))
    np.testing.assert_allclose(served["probabilities"].numpy(), refined, atol=1e-5)
    np.testing.assert_array_equal(served["mask"].numpy(), refined.argmax(-1).astype(np.uint8))
    assert not np.allclose(refined, probabilities, atol=1e-3)  # the CRF did change something
