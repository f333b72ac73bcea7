"""Volumes end to end as a user runs them, on real MSD hippocampus MRI: volumes2tfrecord -> kerasseg plan
-> kerasseg train (unet3d) -> kerasseg evaluate / predict / export, each in its own process, and the
SavedModel reloaded in a fresh process. The figures must agree: validation during training, `evaluate`,
`predict` and the SavedModel compute the same masks (one implementation, inference mode)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kerasseg_testing import REPO_ROOT, SHARED_DATA

SimpleITK = pytest.importorskip("SimpleITK")
HIPPOCAMPUS = SHARED_DATA / "msd_hippocampus"
TRAIN = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007",
         "hippocampus_008", "hippocampus_011", "hippocampus_014"]
VAL = ["hippocampus_015", "hippocampus_017"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason=f"real data not available: {HIPPOCAMPUS} is absent")]


def _run(*words: str, cwd: pathlib.Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    if words[0] == "volumes2tfrecord":
        command = [sys.executable, "-c", "import sys; from data_tools.cli import volumes2tfrecord_main as m; "
                   "sys.exit(m())", *words[1:]]
    else:
        command = [sys.executable, "-m", "kerasseg", *words]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(words)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hippocampus")
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir()
        for case in TRAIN + VAL:
            (root / folder / f"{case}.nii.gz").symlink_to(HIPPOCAMPUS / folder / f"{case}.nii.gz")
    (root / "split.txt").write_text("".join(f"{c} train\n" for c in TRAIN) + "".join(f"{c} val\n" for c in VAL))
    _run("volumes2tfrecord", "imagesTr", "labelsTr", "data", "--labels", "background,anterior,posterior",
         "--split-file", "split.txt", "--no-progress", cwd=root)
    _run("plan", "data", "--no-probe", "--out", "plan.yaml", "--run-dir", "run", cwd=root)
    _run("train", "plan.yaml", "--set", "training.epochs=3", "--set", "training.steps_per_epoch=15",
         "--set", "schedule.warmup_epochs=0", "--set", "optimizer.learning_rate=0.003",
         "--set", "model.options={base_filters: 8, depth: 3, norm: instance}", cwd=root)
    return root


def test_validation_evaluate_predict_and_savedmodel_agree(trained, tmp_path):
    root = trained
    history = [line.split(",") for line in (root / "run" / "history.csv").read_text().splitlines()]
    header, rows = history[0], history[1:]
    best = max(rows, key=lambda r: float(r[header.index("val_foreground_dice")]))
    info = json.loads((root / "run" / "model_info.json").read_text())
    assert info["volume"]["patch_size"] and len(info["volume"]["patch_size"]) == 3

    _run("evaluate", "--model", "run/best.keras", "--data", "data", "--split", "val", "--report", "eval.json",
         cwd=root)
    report = json.loads((root / "eval.json").read_text())
    per_class = report.get("summary", report)["per_class"]
    foreground = (per_class["anterior"]["dice"] + per_class["posterior"]["dice"]) / 2
    # validation during training and `kerasseg evaluate` compute the same masks on the same volumes
    assert foreground == pytest.approx(float(best[header.index("val_foreground_dice")]), abs=1e-4)
    # it learned: an all-background model scores 0 foreground Dice
    assert foreground > 0.3, per_class
    assert per_class["anterior"]["hd95"] is not None and report.get("summary", report)["distance_unit"] == "mm"
    rows_csv = (root / "eval_per_image.csv").read_text().splitlines()
    assert len(rows_csv) == 1 + len(VAL) and "spacing_z" in rows_csv[0]

    case = VAL[0]
    source = HIPPOCAMPUS / "imagesTr" / f"{case}.nii.gz"
    _run("predict", "--model", "run/best.keras", str(source), "--out", "pred", "--overlay", cwd=root)
    written = SimpleITK.ReadImage(str(root / "pred" / f"{case}_mask.nii.gz"))
    original = SimpleITK.ReadImage(str(source))
    assert written.GetSize() == original.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), original.GetSpacing())
    np.testing.assert_allclose(written.GetOrigin(), original.GetOrigin())
    np.testing.assert_allclose(written.GetDirection(), original.GetDirection())
    predicted = SimpleITK.GetArrayFromImage(written)
    assert (root / "pred" / f"{case}_overlay.png").is_file()
    _run("predict", "--model", "run/best.keras", str(source), "--out", "pred_p", "--probabilities", cwd=root)
    probabilities = np.load(root / "pred_p" / f"{case}_prob.npy")
    assert probabilities.dtype == np.float32 and probabilities.shape == (*predicted.shape, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-3)  # accumulated in float16 (bounded memory)
    assert np.mean(probabilities.argmax(-1) == predicted) > 0.999
    assert sorted(p.name for p in (root / "pred_p").iterdir()) == [f"{case}_mask.nii.gz", f"{case}_prob.npy"]

    _run("export", "--model", "run/best.keras", "--out", "served", cwd=root)
    voxels = SimpleITK.GetArrayFromImage(original).astype(np.float32)
    np.save(tmp_path / "voxels.npy", voxels)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"served = tf.saved_model.load({str(root / 'served' / '1')!r})\n"
        f"v = np.load({str(tmp_path / 'voxels.npy')!r})\n"
        f"out = served.signatures['serving_default'](volume=tf.constant(v), spacing=tf.constant({list(original.GetSpacing()[::-1])!r}, tf.float32))\n"
        f"np.save({str(tmp_path / 'served.npy')!r}, out['labels'].numpy())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    served = np.load(tmp_path / "served.npy")
    np.testing.assert_array_equal(served, predicted)  # the SavedModel and `kerasseg predict` agree voxel for voxel
