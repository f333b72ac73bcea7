"""Dataset checks (issue 20 rows 10 and 13, data side): dataset.json field types, shards
against dataset.json (missing, empty, misnamed, wrong counts, corrupt records), fast."""

from __future__ import annotations

import json
import pathlib
import shutil
import time

import pytest

import data_tools
import data_tools.cli
from data_tools.verify import verify_dataset
from kerasseg import schema
from kerasseg.schema import DatasetInfo, SchemaError, check_dataset, count_records
from reliability_helpers import header_only_png, labelme_folder, labelme_json, run_cli


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> pathlib.Path:
    """A real conversion: 8 labelme files, train 6 in 2 shards, val 2 in 2 shards."""
    root = tmp_path_factory.mktemp("dataset")
    src = labelme_folder(root / "src", 8)
    data_tools.convert_labelme(src, root / "records", split="train=0.75,val=0.25", shards=2)
    return root / "records"


@pytest.fixture()
def dataset(converted, tmp_path) -> pathlib.Path:
    copy = tmp_path / "records"
    shutil.copytree(converted, copy)
    return copy


def _edit_info(dataset: pathlib.Path, edit) -> None:
    path = dataset / "dataset.json"
    data = json.loads(path.read_text())
    data = edit(data)
    path.write_text(json.dumps(data))


def test_an_intact_dataset_passes_quickly(dataset):
    started = time.perf_counter()
    check_dataset(str(dataset), ["train", "val"])
    check_dataset(str(dataset), ["train", "val"], verify_records=True)
    assert time.perf_counter() - started < 5
    assert count_records(str(dataset / "train-00000-of-00002.tfrecord")) == 3


@pytest.mark.parametrize("damage, expected", [
    ("missing", "missing shard file(s) train-00001-of-00002.tfrecord"),
    ("empty", "train-00001-of-00002.tfrecord: empty shard file (0 bytes)"),
    ("misnamed", "train-00000-of-00003.tfrecord: unexpected shard file"),
    ("count_100", "train: 6 records in 2 shard(s), but dataset.json says 100"),
    ("truncated", "record 2 (byte"),
])
def test_shards_that_disagree_with_dataset_json_are_named(dataset, damage, expected):
    shard = dataset / "train-00001-of-00002.tfrecord"
    if damage == "missing":
        shard.unlink()
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "misnamed":
        (dataset / "train-00000-of-00003.tfrecord").write_bytes(shard.read_bytes())
    elif damage == "count_100":
        _edit_info(dataset, lambda d: {**d, "splits": {**d["splits"], "train": 100}})
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(SchemaError) as info:
        check_dataset(str(dataset), ["train", "val"])
    message = str(info.value)
    assert expected in message
    if damage != "truncated":
        assert f"kerasseg data verify {dataset}" in message and "--overwrite" in message
    else:
        assert "train-00001-of-00002.tfrecord" in message
    assert not verify_dataset(dataset).ok  # data verify finds it too


def test_a_corrupt_record_is_named_by_shard_and_index_with_verify_records(dataset):
    shard = dataset / "val-00001-of-00002.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the record's data: framing intact, checksum wrong
    shard.write_bytes(bytes(data))
    check_dataset(str(dataset), ["val"])  # the fast check reads the framing only
    with pytest.raises(SchemaError) as info:
        check_dataset(str(dataset), ["val"], verify_records=True)
    message = str(info.value)
    assert "val-00001-of-00002.tfrecord: record 0 (byte 0) is corrupt" in message
    assert "checksum" in message
    with pytest.raises(SchemaError, match="lists no split 'test'"):
        check_dataset(str(dataset), ["test"])


@pytest.mark.parametrize("edit, expected", [
    (lambda d: [], "top level is a list"),
    (lambda d: {**d, "class_names": "lesion"}, "class_names must be a list of class name strings, got the string 'lesion'"),
    (lambda d: {**d, "class_names": ["_background_", "a", "b"]}, "class_pixel_counts['train'] has 2 entries but class_names lists 3"),
    (lambda d: {**d, "class_names": ["_background_", 7]}, "class_names must hold non-empty strings"),
    (lambda d: {**d, "num_classes": 5}, "num_classes is the number 5 but class_names lists 2"),
    (lambda d: {**d, "splits": {"train": "6", "val": 2}}, "splits['train'] must be a non-negative integer, got the string '6'"),
    (lambda d: {**d, "shards": {"train": 2.5, "val": 2}}, "shards['train'] must be a non-negative integer"),
    (lambda d: {**d, "channels": True}, "channels must be an integer 1..4"),
    (lambda d: {**d, "image_dtype": "float64"}, "image_dtype must be 'uint8' or 'uint16'"),
])
def test_dataset_json_field_types_are_checked_naming_the_file(dataset, edit, expected):
    _edit_info(dataset, edit)
    with pytest.raises(SchemaError) as info:
        schema.read_dataset_info(str(dataset))
    message = str(info.value)
    assert expected in message
    assert str(dataset / "dataset.json") in message and "convert the data again" in message
    with pytest.raises(SchemaError):
        check_dataset(str(dataset), ["train"])
    data = json.loads((dataset / "dataset.json").read_text())
    if isinstance(data, dict):  # data verify lists field problems (exit 1)
        report = verify_dataset(dataset)
        assert not report.ok and any(expected in p for p in report.problems)


def test_from_dict_rejects_wrong_types_directly():
    with pytest.raises(SchemaError, match="my.json: top level is a list"):
        DatasetInfo.from_dict([], origin="my.json")
    good = {"schema_version": 1, "class_names": ["bg", "fg"], "splits": {"train": 1}}
    assert DatasetInfo.from_dict(good).num_classes == 2
    with pytest.raises(SchemaError, match="class_names"):
        DatasetInfo.from_dict({**good, "class_names": "lesion"})


def test_data_verify_exit_codes_for_damaged_dataset_json(dataset, capsys):
    from kerasseg.cli import main as kerasseg_main

    _edit_info(dataset, lambda d: {**d, "class_names": "lesion"})
    assert kerasseg_main(["data", "verify", str(dataset)]) == 1
    assert "class_names must be a list" in capsys.readouterr().out
    (dataset / "dataset.json").write_text("[]")
    result = run_cli("kerasseg.cli:main", ["data", "verify", str(dataset)])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "top level is a list" in result.stderr and "Traceback" not in result.stderr
    assert data_tools.cli.labelme2tfrecord_main(["--verify", str(dataset)]) == 2
    assert kerasseg_main(["data", "show", str(dataset), "--out", str(dataset.parent / "grid.png")]) == 2
    assert "top level is a list" in capsys.readouterr().err


def test_shards_whose_examples_were_all_skipped_are_dropped_not_left_empty(tmp_path):
    src = tmp_path / "src"
    labelme_json(src, "good")
    for i in range(3):  # a sound header (passes the early checks) over pixels that do not decode
        (src / f"bad_{i}.png").write_bytes(header_only_png(32, 48))
        labelme_json(src, f"bad_{i}", image_path=f"bad_{i}.png")
    (src / "labels.txt").write_text("__ignore__\n_background_\na\n")
    out = tmp_path / "out"
    report = data_tools.convert_labelme(src, out, split="train=1", shards=2, on_error="skip")
    assert len(report.skipped) == 3  # 4 planned in 2 shards of 2: one shard had only bad files
    assert report.split_counts == {"train": 1} and report.shards == {"train": 1}
    assert sorted(p.name for p in out.glob("*.tfrecord")) == ["train-00000-of-00001.tfrecord"]
    check_dataset(str(out), ["train"])
