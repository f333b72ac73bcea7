"""`--append`: a split from another folder joins a converted dataset, consistently and atomically (real ISBI slices)."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from data_tools import convert_mask_folder
from data_tools.cli import masks2tfrecord_main
from data_tools.errors import ConversionError


def _folder(root, train, name, ids):
    for kind in ("image", "label"):
        (root / name / kind).mkdir(parents=True)
        for i in ids:
            shutil.copyfile(train / kind / f"{i}.png", root / name / kind / f"{i}.png")
    return root / name


@pytest.fixture()
def layout(isbi_membrane, tmp_path):
    train = isbi_membrane / "data" / "membrane" / "train"
    (tmp_path / "class_map.txt").write_text("0 membrane\n255 cell\n")
    first = _folder(tmp_path, train, "first", ["0", "1", "2", "3"])
    second = _folder(tmp_path, train, "second", ["4", "5"])
    dataset = tmp_path / "isbi"
    assert masks2tfrecord_main([str(first / "image"), str(first / "label"), str(dataset), "--split", "train",
                                "--class-map", str(tmp_path / "class_map.txt"), "--no-progress"]) == 0
    return tmp_path, first, second, dataset


def _snapshot(folder):
    return {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in sorted(os.listdir(folder))}


def test_a_test_split_from_another_folder_is_appended(layout):
    from kerasseg.data import iterate_examples
    from kerasseg.schema import check_dataset

    root, _, second, dataset = layout
    before = json.loads((dataset / "dataset.json").read_text())
    assert before["splits"] == {"train": 4}
    assert masks2tfrecord_main([str(second / "image"), str(second / "label"), str(dataset), "--append", "--split",
                                "test", "--class-map", str(root / "class_map.txt"), "--no-progress"]) == 0
    after = json.loads((dataset / "dataset.json").read_text())
    assert after["splits"] == {"train": 4, "test": 2}
    assert after["class_names"] == before["class_names"]
    assert after["intensity"] == before["intensity"]  # statistics stay those of the training split
    assert after["class_pixel_counts"]["train"] == before["class_pixel_counts"]["train"]
    assert len(after["class_pixel_counts"]["test"]) == 2 and sum(after["class_pixel_counts"]["test"]) == 2 * 512 * 512
    assert after["source"]["appended"][0]["images_dir"] == str(second / "image")
    assert (dataset / "splits" / "test.txt").read_text().split() == ["4", "5"]
    assert (dataset / "report.json").is_file() and (dataset / "report_test.json").is_file()
    check_dataset(str(dataset), ["train", "test"], verify_records=True)
    assert [ex["source_id"] for ex in iterate_examples(str(dataset), "test")] == ["4", "5"]
    # the manifest lists the appended files, so a later --overwrite still replaces the whole dataset
    first = root / "first"
    assert masks2tfrecord_main([str(first / "image"), str(first / "label"), str(dataset), "--overwrite",
                                "--class-map", str(root / "class_map.txt"), "--no-progress"]) == 0


@pytest.mark.parametrize("case", ["existing split", "other classes", "same ids", "with overwrite"])
def test_refused_appends_leave_the_dataset_untouched(layout, case):
    root, first, second, dataset = layout
    other = root / "other_map.txt"
    other.write_text("255 cell\n0 membrane\n")
    source, split, class_map, extra = second, "test", root / "class_map.txt", {}
    expected = {"existing split": "split(s) train exist already", "other classes": "give the same --class-map",
                "same ids": "4 source id(s) are in the dataset already: 0, 1, 2, 3",
                "with overwrite": "choose one"}[case]
    if case == "existing split":
        split = "train"
    elif case == "other classes":
        class_map = other
    elif case == "same ids":
        source = first
    else:
        extra = {"overwrite": True}
    before = _snapshot(dataset)
    with pytest.raises(ConversionError, match=re.escape(expected)):
        convert_mask_folder(source / "image", source / "label", dataset, split=split, class_map=class_map,
                            append=True, **extra)
    assert _snapshot(dataset) == before
    assert not [p for p in os.listdir(root) if p.startswith(".kerasseg-")]  # no leftovers beside it


def test_append_needs_a_converted_dataset(layout, tmp_path):
    root, _, second, _ = layout
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="holds no dataset.json"):
        convert_mask_folder(second / "image", second / "label", notes, split="test", append=True,
                            class_map=root / "class_map.txt")
    assert (notes / "mine.txt").read_text() == "keep me"
