"""kerasseg.atomic_files: the one temp-then-rename writer every single-file output uses."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from kerasseg.atomic_files import PART_PREFIX, replacing, write_json, write_text
from kerasseg_testing import REPO_ROOT


def test_write_text_and_json_replace_the_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "sub" / "a.yaml"
    assert write_text(target, "one: 1\r\n") == str(target)  # the folder is made, newlines kept as given
    assert target.read_bytes() == b"one: 1\r\n"
    write_text(target, "two: 2\n")
    assert target.read_text() == "two: 2\n"
    write_json(tmp_path / "b.json", {"z": 1, "a": [1.5]})
    assert (tmp_path / "b.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "z": 1\n}\n'
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.yaml", "b.json", "sub"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "model_info.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with replacing(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model_info.json"]


def test_the_temporary_name_is_hidden_unique_and_ends_with_the_destination(tmp_path):
    seen = set()
    for _ in range(2):
        with replacing(tmp_path / "best.keras") as tmp:
            name = os.path.basename(tmp)
            assert name.startswith(PART_PREFIX) and name.endswith("-best.keras")
            assert os.path.dirname(tmp) == str(tmp_path)
            open(tmp, "wb").close()
            seen.add(name)
    assert len(seen) == 2
    with replacing(tmp_path / "p.npy") as tmp:
        np.save(tmp, np.arange(3))  # numpy would append .npy to a name not ending with it
    assert np.load(tmp_path / "p.npy").tolist() == [0, 1, 2]
    with replacing(tmp_path / "SCAN.NII.GZ", extension=".nii.gz") as tmp:
        assert tmp.endswith("-SCAN.nii.gz")
        open(tmp, "wb").close()
    long_name = "x" * 240 + ".weights.h5"  # a name the folder takes; the hidden one must fit too
    with replacing(tmp_path / long_name) as tmp:
        assert len(os.path.basename(tmp).encode()) <= 255 and tmp.endswith(".weights.h5")
        open(tmp, "wb").close()
    assert (tmp_path / long_name).exists()


def test_a_missing_folder_is_an_error_when_not_to_be_made(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text(tmp_path / "absent" / "r.csv", "x", make_folder=False)
    assert list(tmp_path.iterdir()) == []


def test_a_process_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("epoch\n0\n")
    script = (
        "import os, signal, sys\n"
        "from kerasseg.atomic_files import replacing\n"
        "with replacing(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'w').write('epoch\\n0\\n1')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=60)
    assert proc.returncode == -9
    assert target.read_text() == "epoch\n0\n"
    (left,) = [p for p in tmp_path.iterdir() if p.name != "history.csv"]
    assert left.name.startswith(PART_PREFIX) and left.name.endswith("-history.csv")
