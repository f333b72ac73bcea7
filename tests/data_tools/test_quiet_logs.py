"""Entry points are quiet by default: no TensorFlow start-up banners, repeated warnings summarised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import pytest

from kerasseg_testing import REPO_ROOT

BANNERS = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "cpu_feature_guard")


def _run(*words, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([sys.executable, "-c", *words], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def tiff_folders(isbi_membrane, tmp_path_factory):
    """Five real ISBI slices re-saved as TIFF (the converter stores them as PNG, with a warning each)."""
    root = tmp_path_factory.mktemp("tiffs")
    train = isbi_membrane / "data" / "membrane" / "train"
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(5):
        cv2.imwrite(str(root / "images" / f"{i}.tif"), cv2.imread(str(train / "image" / f"{i}.png"), 0))
        shutil.copyfile(train / "label" / f"{i}.png", root / "masks" / f"{i}.png")
    (root / "class_map.txt").write_text("0 membrane\n255 cell\n")
    return root


CONVERT = "import sys; from data_tools.cli import masks2tfrecord_main as m; sys.exit(m())"
KERASSEG = "import sys; from kerasseg.cli import main; sys.exit(main())"


def test_converter_and_kerasseg_are_quiet_unless_verbose(tiff_folders, tmp_path):
    args = [str(tiff_folders / "images"), str(tiff_folders / "masks"), str(tmp_path / "out"), "--class-map",
            str(tiff_folders / "class_map.txt"), "--split", "train=0.6,val=0.4", "--no-progress"]
    quiet = _run(CONVERT, *args, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not [b for b in BANNERS if b in quiet.stderr + quiet.stdout], quiet.stderr
    verify = _run(KERASSEG, "data", "verify", str(tmp_path / "out"), cwd=tmp_path)
    assert verify.returncode == 0 and "OK" in verify.stdout
    assert not [b for b in BANNERS if b in verify.stderr], verify.stderr
    loud = _run(KERASSEG, "data", "verify", str(tmp_path / "out"), "--verbose", cwd=tmp_path)
    assert loud.returncode == 0
    # this TensorFlow build announces itself at import; --verbose lets it
    assert [b for b in BANNERS if b in loud.stderr], loud.stderr


def test_a_warning_repeated_for_many_files_is_printed_once_with_a_count(tiff_folders, tmp_path):
    from data_tools import convert_mask_folder

    report = convert_mask_folder(tiff_folders / "images", tiff_folders / "masks", tmp_path / "out",
                                 class_map=tiff_folders / "class_map.txt")
    text = report.to_text()
    lines = [line for line in text.splitlines() if "stored as PNG" in line]
    assert len(lines) == 1 and "5 files (0.tif, 1.tif, 2.tif, ...; all listed in report.json)" in lines[0], text
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len([w for w in saved["warnings"] if "stored as PNG" in w["message"]]) == 5
