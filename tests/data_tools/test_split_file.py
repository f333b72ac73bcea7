"""``--split-file``: explicit source id -> split assignments, on real ISBI slices."""

from __future__ import annotations

import json
import shutil

import pytest

from data_tools import convert_mask_folder
from data_tools.cli import masks2tfrecord_main
from data_tools.errors import ConversionError

SLICES = ["0", "1", "2", "3", "4", "5"]


@pytest.fixture()
def isbi_folders(isbi_membrane, tmp_path):
    train = isbi_membrane / "data" / "membrane" / "train"
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in SLICES:
        shutil.copyfile(train / "image" / f"{name}.png", images / f"{name}.png")
        shutil.copyfile(train / "label" / f"{name}.png", masks / f"{name}.png")
    class_map = tmp_path / "class_map.txt"
    class_map.write_text("0 membrane\n255 cell\n")
    return images, masks, class_map


def test_split_file_assigns_exactly_the_listed_ids(isbi_folders, tmp_path):
    images, masks, class_map = isbi_folders
    split_file = tmp_path / "fold.csv"
    split_file.write_text("source_id,split\n# fold 0 of a fixed cross-validation\n0,train\n1,train\n2,val\n"
                          "3,train\n4,test\n5,val\n")
    out = tmp_path / "out"
    status = masks2tfrecord_main([str(images), str(masks), str(out), "--class-map", str(class_map),
                                  "--split-file", str(split_file), "--no-progress"])
    assert status == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"] == {"train": 3, "val": 2, "test": 1}
    assert (out / "splits" / "train.txt").read_text().split() == ["0", "1", "3"]
    assert (out / "splits" / "val.txt").read_text().split() == ["2", "5"]
    assert (out / "splits" / "test.txt").read_text().split() == ["4"]
    assert info["source"]["split_file"] == str(split_file)


def test_whitespace_form_and_seed_independence(isbi_folders, tmp_path):
    images, masks, class_map = isbi_folders
    split_file = tmp_path / "fold.txt"
    split_file.write_text("".join(f"{name}\t{'val' if name in ('1', '4') else 'train'}\n" for name in SLICES))
    listed = []
    for seed in (0, 7):
        out = tmp_path / f"out{seed}"
        convert_mask_folder(images, masks, out, class_map=class_map, split_file=split_file, seed=seed)
        listed.append((out / "splits" / "val.txt").read_text().split())
    assert listed == [["1", "4"], ["1", "4"]]


@pytest.mark.parametrize("content, message", [
    ("0 train\n1 train\n2 val\n3 val\n4 train\n", "1 source id(s) are not in the split file: 5"),
    ("".join(f"{n} train\n" for n in SLICES) + "6 val\n", "are in the split file but not among the inputs: 6"),
    ("0 train\n0 val\n", "line 2: '0' is assigned twice"),
    ("0 train extra\n", "line 1: expected 'SOURCE_ID SPLIT'"),
    ("0 tr-ain\n", "split name 'tr-ain'"),
    ("# nothing\n", "assigns no example"),
])
def test_bad_split_files_are_refused_and_nothing_is_written(isbi_folders, tmp_path, content, message):
    images, masks, class_map = isbi_folders
    split_file = tmp_path / "bad.txt"
    split_file.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as caught:
        convert_mask_folder(images, masks, out, class_map=class_map, split_file=split_file)
    assert message in str(caught.value)
    assert str(split_file) in str(caught.value)
    assert not out.exists()
