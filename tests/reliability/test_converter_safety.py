"""Converter safety (issue 20 rows 1, 2, 3, 13, 14): --overwrite never deletes user data,
symlinks cannot smuggle files from outside INPUT_DIR, labels.txt needs _background_,
non-UTF-8 names and full disks give clear errors, staging folders of killed runs are cleaned."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import data_tools
from data_tools import converter
from data_tools.errors import AnnotationError, ConversionError
from data_tools.labels import read_labels_txt
from data_tools.output import MANIFEST_FILENAME
from kerasseg import schema
from kerasseg_testing import REPO_ROOT
from reliability_helpers import (
    backdate,
    can_create,
    labelme_folder,
    labelme_json,
    latin1_name,
    run_cli,
    run_python,
    write_png,
)

LABELME = "data_tools.cli:labelme2tfrecord_main"
MASKS = "data_tools.cli:masks2tfrecord_main"


@pytest.fixture()
def src(tmp_path) -> pathlib.Path:
    return labelme_folder(tmp_path / "src", 4)


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- row 1: --overwrite replaces only what a conversion wrote -------------------------------------


def test_overwrite_refuses_and_names_user_files_in_an_earlier_conversion(src, tmp_path):
    out = tmp_path / "out"
    data_tools.convert_labelme(src, out, split="train=1")
    notes = out / "my_experiments" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("three weeks of notes")
    before = _snapshot(out)
    result = run_cli(LABELME, [str(src), str(out), "--overwrite", "--no-progress"])
    assert result.returncode == 2, result.stderr
    assert "my_experiments/" in result.stderr and "did not write" in result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(out) == before  # nothing deleted, nothing changed


def test_overwrite_refuses_an_nnunet_folder_and_folders_without_a_manifest(src, tmp_path):
    nnunet = tmp_path / "Dataset001_Lesion"
    (nnunet / "imagesTr").mkdir(parents=True)
    (nnunet / "labelsTr").mkdir()
    (nnunet / "imagesTr" / "case_000_0000.nii.gz").write_bytes(b"\x1f\x8b scan")
    (nnunet / "labelsTr" / "case_000.nii.gz").write_bytes(b"\x1f\x8b label")
    (nnunet / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    before = _snapshot(nnunet)
    result = run_cli(LABELME, [str(src), str(nnunet), "--overwrite", "--no-progress"])
    assert result.returncode == 2
    for name in ("imagesTr/", "labelsTr/", "dataset.json"):
        assert name in result.stderr
    assert MANIFEST_FILENAME in result.stderr and "refusing to delete" in result.stderr
    assert _snapshot(nnunet) == before
    with pytest.raises(ConversionError, match="thesis.tex"):
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "thesis.tex").write_text("x")
        data_tools.convert_labelme(src, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_overwrite_replaces_our_own_output_and_the_manifest_lists_every_file(src, tmp_path):
    out = tmp_path / "out"
    data_tools.convert_labelme(src, out, split="train=0.5,val=0.5", preview=2)
    manifest = json.loads((out / MANIFEST_FILENAME).read_text())
    written = {str(p.relative_to(out)).replace(os.sep, "/") for p in out.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == written
    assert set(manifest["folders"]) == {"preview", "splits"}
    (out / "report.txt").write_text("edited by hand")  # a file we wrote, edited, is still ours
    data_tools.convert_labelme(src, out, split="train=1", overwrite=True)
    assert schema.read_dataset_info(str(out)).splits == {"train": 4}
    assert not (out / "preview").exists()  # the old conversion's files are gone
    # a conversion from before manifests existed (same layout, no manifest) is replaced too
    (out / MANIFEST_FILENAME).unlink()
    data_tools.convert_labelme(src, out, split="train=0.5,val=0.5", overwrite=True)
    assert (out / MANIFEST_FILENAME).exists()
    assert not list(tmp_path.glob(".kerasseg-*"))  # no staging or old folder left beside it


def test_a_user_file_that_appears_during_the_run_is_not_deleted(src, tmp_path, monkeypatch):
    out = tmp_path / "out"
    data_tools.convert_labelme(src, out, split="train=1")
    real_finish = converter._finish

    def finish_while_the_user_saves_a_file(*args, **kwargs):
        (out / "late_notes.txt").write_text("saved while converting")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(converter, "_finish", finish_while_the_user_saves_a_file)
    with pytest.raises(ConversionError, match="late_notes.txt"):
        data_tools.convert_labelme(src, out, split="train=1", overwrite=True)
    assert (out / "late_notes.txt").read_text() == "saved while converting"
    assert (out / "dataset.json").exists()
    assert not list(tmp_path.glob(".kerasseg-*"))


# -- row 2: symlinks out of the input folder ------------------------------------------------------


def test_symlinked_image_outside_input_dir_is_refused_like_traversal(tmp_path):
    src = labelme_folder(tmp_path / "src", 2)
    secret = write_png(tmp_path / "elsewhere" / "patient_42.png", np.full((32, 48), 7, np.uint8))
    (src / "linked.png").symlink_to(secret)
    labelme_json(src, "linked", image_path="linked.png")
    (src / "folder_link").symlink_to(secret.parent, target_is_directory=True)
    labelme_json(src, "in_linked_folder", image_path="folder_link/patient_42.png")
    with pytest.raises(AnnotationError, match="path traversal") as info:
        data_tools.convert_labelme(src, tmp_path / "out")
    assert info.value.path.endswith(("in_linked_folder.json", "linked.json"))
    assert str(secret) in str(info.value)
    assert not (tmp_path / "out").exists()
    report = data_tools.convert_labelme(src, tmp_path / "out", on_error="skip", split="train=1")
    skipped = {pathlib.Path(note.path).name: note.message for note in report.skipped}
    assert set(skipped) == {"linked.json", "in_linked_folder.json"}
    assert all("path traversal" in message for message in skipped.values())
    assert report.split_counts == {"train": 2}


def test_symlinks_inside_the_input_dir_are_fine_and_json_links_out_are_refused(tmp_path):
    src = labelme_folder(tmp_path / "src", 2)
    (src / "alias.png").symlink_to(src / "img_00.png")
    labelme_json(src, "alias", image_path="alias.png")
    outside_json = labelme_json(tmp_path / "elsewhere", "foreign")
    (src / "foreign.json").symlink_to(outside_json)
    report = data_tools.convert_labelme(src, tmp_path / "out", on_error="skip", split="train=1")
    assert report.split_counts == {"train": 3}
    assert [pathlib.Path(n.path).name for n in report.skipped] == ["foreign.json"]
    assert "path traversal" in report.skipped[0].message


def test_mask_folder_symlinks_outside_are_refused(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(2):
        write_png(images / f"case{i}.png", np.full((16, 16), 40 * i, np.uint8))
        write_png(masks / f"case{i}.png", np.zeros((16, 16), np.uint8))
    outside = write_png(tmp_path / "other" / "x.png", np.zeros((16, 16), np.uint8))
    (images / "case9.png").symlink_to(outside)
    write_png(masks / "case9.png", np.zeros((16, 16), np.uint8))
    write_png(images / "case8.png", np.zeros((16, 16), np.uint8))
    (masks / "case8.png").symlink_to(outside)
    with pytest.raises(AnnotationError, match="path traversal"):
        data_tools.convert_mask_folder(images, masks, tmp_path / "out")
    report = data_tools.convert_mask_folder(images, masks, tmp_path / "out", on_error="skip", split="train=1")
    assert sorted(pathlib.Path(n.path).name for n in report.skipped) == ["case8.png", "case9.png"]
    assert report.split_counts == {"train": 2}


# -- row 3: labels.txt without _background_ -------------------------------------------------------


def test_labels_txt_without_background_is_a_clear_error(tmp_path):
    src = labelme_folder(tmp_path / "src", 2)
    (src / "labels.txt").write_text("lesion\nvessel\n")
    with pytest.raises(AnnotationError) as info:
        read_labels_txt(src / "labels.txt")
    message = str(info.value)
    assert info.value.path.endswith("labels.txt")
    assert "no _background_ line" in message and "'lesion'" in message
    assert "__ignore__" in message and "at the top of the file" in message
    result = run_cli(LABELME, [str(src), str(tmp_path / "out"), "--no-progress"])
    assert result.returncode == 2 and "_background_" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# -- row 13: non-UTF-8 names, disk full -----------------------------------------------------------


def test_non_utf8_file_names_are_refused_or_skipped_and_listed(tmp_path):
    src = labelme_folder(tmp_path / "src", 2)
    name = latin1_name("caf")
    if not can_create(src / f"{name}.probe"):
        pytest.skip("this file system refuses non-UTF-8 file names")
    labelme_json(src, name)
    result = run_cli(LABELME, [str(src), str(tmp_path / "out"), "--no-progress"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "caf\\xe9.json" in result.stderr and "not valid UTF-8" in result.stderr
    report = data_tools.convert_labelme(src, tmp_path / "out", on_error="skip", split="train=1")
    assert report.split_counts == {"train": 2}
    assert [n.path.endswith("caf\\xe9.json") for n in report.skipped] == [True]
    text = (tmp_path / "out" / "report.txt").read_text(encoding="utf-8")
    assert "caf\\xe9.json" in text
    json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    # mask folders: an image with such a name is skipped and listed as well
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem in ("ok", name):
        write_png(images / f"{stem}.png", np.zeros((8, 8), np.uint8))
        write_png(masks / f"{stem}.png", np.zeros((8, 8), np.uint8))
    report = data_tools.convert_mask_folder(images, masks, tmp_path / "out2", on_error="skip", split="train=1")
    assert report.split_counts == {"train": 1}
    assert report.skipped[0].path.endswith("caf\\xe9.png")


def _mount_tmpfs(path: pathlib.Path, size: str) -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_is_a_clear_error_and_keeps_the_earlier_output(tmp_path):
    disk = tmp_path / "small_disk"
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("needs root to mount a small tmpfs (the file-size-limit test covers the rest)")
    try:
        small = labelme_folder(tmp_path / "small", 2)
        data_tools.convert_labelme(small, disk / "out", split="train=1")
        before = _snapshot(disk / "out")
        big = tmp_path / "big"
        rng = np.random.default_rng(0)
        for i in range(4):  # random pixels do not compress: about 4 x 49 KB of PNG
            labelme_json(big, f"noise_{i}", image=rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
        (big / "labels.txt").write_text("__ignore__\n_background_\na\n")
        with pytest.raises(ConversionError) as info:
            data_tools.convert_labelme(big, disk / "out", split="train=1", overwrite=True)
        message = str(info.value)
        assert "No space left on device" in message and "free disk space" in message
        assert "Nothing was written" in message
        assert _snapshot(disk / "out") == before
        assert sorted(p.name for p in disk.iterdir()) == ["out"]  # no staging folder left
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_write_failure_in_a_real_process_exits_2_without_traceback(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(1)
    for i in range(3):
        labelme_json(src, f"noise_{i}", image=rng.integers(0, 255, (96, 96), dtype=np.uint8))
    (src / "labels.txt").write_text("__ignore__\n_background_\na\n")
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))  # every file at most 8 KB\n"
        "from data_tools.cli import labelme2tfrecord_main\n"
        f"sys.exit(labelme2tfrecord_main([{str(src)!r}, {str(tmp_path / 'out')!r}, '--no-progress', "
        "'--split', 'train=1']))\n"
    )
    result = run_python(code)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "cannot write the output" in result.stderr and "File too large" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no staging folder


# -- row 14: staging folders of killed runs ------------------------------------------------------


def test_killed_conversion_leaves_a_staging_folder_that_the_next_run_removes_once_stale(src, tmp_path):
    out = tmp_path / "out"
    hang = (
        "import time, sys\n"
        "from data_tools import converter\n"
        "converter._write_records = lambda *a, **k: time.sleep(120)\n"
        f"converter.convert_labelme({str(src)!r}, {str(out)!r}, split='train=1')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", hang], cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".kerasseg-tmp-out-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (left,) = tmp_path.glob(".kerasseg-tmp-out-*")
    assert f"-{child.pid}-" in left.name and not out.exists()
    # others' things that must survive: a user folder with a similar name, a symlink, a live run's folder
    user = tmp_path / ".kerasseg-tmp-out-my-notes"
    user.mkdir()
    link = tmp_path / ".kerasseg-tmp-out-1-abcdef12"
    link.symlink_to(user, target_is_directory=True)
    live = tmp_path / f".kerasseg-tmp-out-{os.getpid()}-0badc0de"
    live.mkdir()
    for path in (user, live):
        backdate(path, 7200)

    data_tools.convert_labelme(src, out, split="train=1")  # right after the kill: too recent
    assert left.exists()
    backdate(left, 7200)
    data_tools.convert_labelme(src, out, split="train=1", overwrite=True)
    assert not left.exists()
    assert user.is_dir() and link.is_symlink() and live.is_dir()
    assert (out / "dataset.json").exists()


def test_export_removes_stale_staging_folders_of_killed_exports_only(tmp_path):
    import keras

    from kerasseg.export import export

    base = tmp_path / "exports"
    base.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = [base / f".tmp-export-3-{dead}-abcdef12", base / ".tmp-export-2-q1w2e3r4"]  # new and older names
    for path in stale:
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"partial")
        backdate(path, 7200)
    fresh = base / f".tmp-export-4-{dead}-12345678"
    fresh.mkdir()
    mine = base / ".tmp-export-notes"
    mine.mkdir()
    backdate(mine, 7200)
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
    version = export(model, str(base), class_names=["background", "lesion"],
                     normalization={"method": "zscore"}, size_divisor=1)
    assert os.path.isdir(version)
    assert not any(path.exists() for path in stale)
    assert fresh.is_dir() and mine.is_dir()
