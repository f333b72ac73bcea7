"""End-to-end conversion: records, dataset.json, splits, atomic output, workers, verify, CLIs."""

from __future__ import annotations

import io
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

import data_tools
from data_tools import converter
from data_tools.cli import labelme2tfrecord_main
from data_tools.errors import AnnotationError, ConversionError
from data_tools_helpers import polygon, small_labelme_folder, write_image, write_labelme
from kerasseg import schema


def _records(dataset_dir) -> list[dict]:
    import tensorflow as tf

    out = []
    info = schema.read_dataset_info(str(dataset_dir))
    for split in info.splits:
        for path in schema.split_files(str(dataset_dir), split):
            for raw in tf.data.TFRecordDataset(path):
                ex = tf.io.parse_single_example(raw, schema.feature_spec())
                out.append({k: v.numpy() for k, v in ex.items()} | {"split": split})
    return out


def _mask_of(record) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(record[schema.KEY_MASK_ENCODED])))


@pytest.fixture
def folder(tmp_path) -> pathlib.Path:
    return small_labelme_folder(tmp_path / "labelme", n=6)


def test_convert_labelme_writes_schema_records_and_dataset_json(folder, tmp_path):
    out = tmp_path / "records"
    report = data_tools.convert_labelme(folder, out, split="train=0.5,val=0.5", seed=3, preview=2)
    info = schema.read_dataset_info(str(out))
    assert info.class_names == ["_background_", "a", "b"]
    assert info.splits == {"train": 3, "val": 3} == report.split_counts
    assert info.shards == {"train": 1, "val": 1}
    assert info.channels == 1 and info.image_dtype == "uint8"
    assert set(info.intensity) >= {"mean", "std", "min", "max", "dtype"}
    assert len(info.intensity["mean"]) == 1 and 100 < info.intensity["mean"][0] < 155
    records = _records(out)
    assert len(records) == 6
    pixels = {"train": np.zeros(3, np.int64), "val": np.zeros(3, np.int64)}
    for rec in records:
        mask = _mask_of(rec)
        assert mask.shape == (rec[schema.KEY_IMAGE_HEIGHT], rec[schema.KEY_IMAGE_WIDTH]) == (32, 48)
        assert set(np.unique(mask)) == {0, 1, 2}
        assert rec[schema.KEY_IMAGE_FORMAT] == b"png"
        source_id = rec[schema.KEY_IMAGE_SOURCE_ID].decode()
        assert rec[schema.KEY_IMAGE_FILENAME].decode() in (f"{source_id}.png", f"{source_id}.json")
        # original PNG bytes kept (the embedded one too)
        src = folder / f"{source_id}.png"
        if src.exists():
            assert rec[schema.KEY_IMAGE_ENCODED] == src.read_bytes()
        pixels[rec["split"]] += np.bincount(mask.ravel(), minlength=3)[:3]
    assert {k: v.tolist() for k, v in pixels.items()} == info.class_pixel_counts
    # split lists on disk, and the report and previews
    for split in ("train", "val"):
        listed = (out / "splits" / f"{split}.txt").read_text().split()
        assert listed == sorted(r[schema.KEY_IMAGE_SOURCE_ID].decode() for r in records if r["split"] == split)
    assert json.loads((out / "report.json").read_text())["split_counts"] == {"train": 3, "val": 3}
    assert "converted 6 examples" in (out / "report.txt").read_text()
    assert len(report.previews) == 2 and all((out / p).is_file() for p in report.previews)
    assert data_tools.verify_dataset(out).ok


def test_split_is_reproducible_and_folds_partition_train(folder, tmp_path):
    a = data_tools.convert_labelme(folder, tmp_path / "a", split="train=0.67,val=0.33", seed=7, folds=2)
    b = data_tools.convert_labelme(folder, tmp_path / "b", split="train=0.67,val=0.33", seed=7, folds=2)
    c = data_tools.convert_labelme(folder, tmp_path / "c", split="train=0.67,val=0.33", seed=8)
    def lists(d):
        return {p.name: p.read_text() for p in sorted((d / "splits").iterdir())}

    assert lists(tmp_path / "a") == lists(tmp_path / "b") and b.split_counts == a.split_counts
    assert a.num_folds == 2 and schema.read_dataset_info(str(tmp_path / "a")).num_folds == 2
    train = set(schema.read_split_ids(str(tmp_path / "a"), "train"))
    vals = [set(schema.read_split_ids(str(tmp_path / "a"), f"fold{k}_val")) for k in range(2)]
    for k in range(2):
        fold_train = set(schema.read_split_ids(str(tmp_path / "a"), f"fold{k}_train"))
        assert fold_train | vals[k] == train and not fold_train & vals[k]
    assert vals[0] | vals[1] == train and not vals[0] & vals[1]
    assert c.split_counts == a.split_counts  # same sizes, a different draw is allowed


def test_output_identical_for_any_worker_count(folder, tmp_path):
    """workers=1 here; workers=2 in a fresh process (as the CLI runs: workers forked
    before TensorFlow loads) with another hash seed: the bytes must not change."""
    import subprocess
    import sys

    from kerasseg_testing import REPO_ROOT

    data_tools.convert_labelme(folder, tmp_path / "w1", workers=1, shards=2)
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    code = (
        "import sys; from data_tools.cli import labelme2tfrecord_main as m; "
        "sys.exit(m([sys.argv[1], sys.argv[2], '--workers', '2', '--shards', '2', '--no-progress']))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "w2")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "with 2 worker(s)" in done.stdout
    names = sorted(p.name for p in (tmp_path / "w1").glob("*.tfrecord"))
    assert names == sorted(p.name for p in (tmp_path / "w2").glob("*.tfrecord")) and len(names) == 3
    for name in names + ["dataset.json"]:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    for name in ("train.txt", "val.txt"):
        assert (tmp_path / "w1" / "splits" / name).read_bytes() == (tmp_path / "w2" / "splits" / name).read_bytes()


def test_existing_output_needs_overwrite_and_non_datasets_are_never_deleted(folder, tmp_path):
    out = tmp_path / "records"
    out.mkdir()  # an empty folder made beforehand needs no --overwrite
    data_tools.convert_labelme(folder, out)
    before = (out / "dataset.json").read_bytes()
    with pytest.raises(ConversionError, match="--overwrite"):
        data_tools.convert_labelme(folder, out)
    assert (out / "dataset.json").read_bytes() == before
    data_tools.convert_labelme(folder, out, overwrite=True, split="train=0.5,val=0.5")
    assert schema.read_dataset_info(str(out)).splits == {"train": 3, "val": 3}
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(ConversionError, match="refusing"):
        data_tools.convert_labelme(folder, precious, overwrite=True)
    assert (precious / "thesis.tex").exists()
    with pytest.raises(ConversionError, match="input folder"):
        data_tools.convert_labelme(folder, folder.parent, overwrite=True)


def test_interrupted_run_leaves_no_dataset(folder, tmp_path, monkeypatch):
    real = converter.process_task
    calls = []

    def interrupted(task):
        calls.append(task)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(converter, "process_task", interrupted)
    out = tmp_path / "records"
    with pytest.raises(KeyboardInterrupt):
        data_tools.convert_labelme(folder, out)
    assert not out.exists()
    assert os.listdir(tmp_path) == ["labelme"]  # temporary folder removed too
    with pytest.raises(schema.SchemaError, match="no dataset.json"):
        schema.read_dataset_info(str(out))


def test_rgba_16bit_and_jpeg_sources(tmp_path):
    src = tmp_path / "in"
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 255, (20, 30, 4), dtype=np.uint8)
    write_labelme(src, "rgba", [polygon("a", [[1, 1], [20, 2], [5, 15]])], image=rgba)
    jpeg_dir = tmp_path / "jpeg"
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    write_image(src / "photo.jpg", rgb, quality=90)
    (src / "photo.json").write_text(json.dumps({
        "version": "4.0.0", "shapes": [polygon("a", [[1, 1], [20, 2], [5, 15]])],
        "imagePath": "photo.jpg", "imageData": None, "imageHeight": 20, "imageWidth": 30,
    }))
    report = data_tools.convert_labelme(src, tmp_path / "out", split="train=1")
    records = {r[schema.KEY_IMAGE_SOURCE_ID].decode(): r for r in _records(tmp_path / "out")}
    assert records["photo"][schema.KEY_IMAGE_ENCODED] == (src / "photo.jpg").read_bytes()
    assert records["photo"][schema.KEY_IMAGE_FORMAT] == b"jpeg"
    rgba_pixels = np.asarray(Image.open(io.BytesIO(records["rgba"][schema.KEY_IMAGE_ENCODED])))
    assert rgba_pixels.shape == (20, 30, 3) and np.array_equal(rgba_pixels, rgba[:, :, :3])
    assert any("alpha channel dropped" in w.message and w.path.endswith("rgba.json") for w in report.warnings)
    assert schema.read_dataset_info(str(tmp_path / "out")).channels == 3
    del jpeg_dir

    # 16-bit grayscale PNG stays 16-bit, bytes unchanged
    src16 = tmp_path / "in16"
    deep = rng.integers(0, 65535, (16, 16), dtype=np.uint16)
    write_labelme(src16, "deep", [polygon("a", [[1, 1], [12, 2], [5, 12]])], image=deep)
    data_tools.convert_labelme(src16, tmp_path / "out16", split="train=1")
    info = schema.read_dataset_info(str(tmp_path / "out16"))
    assert info.image_dtype == "uint16" and info.intensity["max"][0] == float(deep.max())
    (record,) = _records(tmp_path / "out16")
    assert record[schema.KEY_IMAGE_ENCODED] == (src16 / "deep.png").read_bytes()
    assert data_tools.verify_dataset(tmp_path / "out16").ok


def test_16bit_tiff_kept_16bit(tmp_path):
    src = tmp_path / "in"
    deep = (np.arange(16 * 24, dtype=np.uint16).reshape(16, 24) * 150)
    write_image(src / "ct.tif", deep)
    (src / "ct.json").write_text(json.dumps({
        "version": "5.5.0", "shapes": [polygon("a", [[1, 1], [12, 2], [5, 12]])],
        "imagePath": "ct.tif", "imageData": None, "imageHeight": 16, "imageWidth": 24,
    }))
    data_tools.convert_labelme(src, tmp_path / "out", split="train=1")
    (record,) = _records(tmp_path / "out")
    import tensorflow as tf

    decoded = tf.io.decode_png(record[schema.KEY_IMAGE_ENCODED], dtype=tf.uint16).numpy()[:, :, 0]
    assert np.array_equal(decoded, deep)


def test_exif_rotated_jpeg_is_stored_rotated(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    array = np.zeros((10, 20, 3), np.uint8)
    array[:, :5] = 255  # bright left band
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: 20 high, 10 wide
    img.save(src / "phone.jpg", exif=exif, quality=95)
    (src / "phone.json").write_text(json.dumps({
        "version": "5.0.1", "shapes": [polygon("a", [[1, 1], [8, 1], [8, 3]])],
        "imagePath": "phone.jpg", "imageData": None, "imageHeight": 20, "imageWidth": 10,
    }))
    report = data_tools.convert_labelme(src, tmp_path / "out", split="train=1")
    (record,) = _records(tmp_path / "out")
    assert (record[schema.KEY_IMAGE_HEIGHT], record[schema.KEY_IMAGE_WIDTH]) == (20, 10)
    assert record[schema.KEY_IMAGE_FORMAT] == b"png"
    pixels = np.asarray(Image.open(io.BytesIO(record[schema.KEY_IMAGE_ENCODED])))
    assert pixels[:5].mean() > 200 and pixels[10:].mean() < 50  # the band is now on top
    assert any("EXIF orientation 6" in w.message for w in report.warnings)


def test_classes_found_in_data_without_labels_txt(tmp_path):
    src = tmp_path / "in"
    write_labelme(src, "x", [polygon("zebra", [[1, 1], [12, 2], [5, 12]])])
    write_labelme(src, "y", [polygon("ant", [[1, 1], [12, 2], [5, 12]]),
                             polygon("__ignore__", [[20, 20], [30, 20], [25, 28]])])
    data_tools.convert_labelme(src, tmp_path / "out", split="train=1")
    info = schema.read_dataset_info(str(tmp_path / "out"))
    assert info.class_names == ["_background_", "ant", "zebra"]
    masks = {r[schema.KEY_IMAGE_SOURCE_ID].decode(): _mask_of(r) for r in _records(tmp_path / "out")}
    assert set(np.unique(masks["y"])) == {0, 1, 255} and set(np.unique(masks["x"])) == {0, 2}


def test_real_labelme_examples_convert_and_verify(labelme_examples, tmp_path):
    src = labelme_examples / "examples" / "semantic_segmentation"
    code = labelme2tfrecord_main([
        str(src / "data_annotated"), str(tmp_path / "out"), "--labels", str(src / "labels.txt"),
        "--split", "train=0.67,val=0.33", "--no-progress",
    ])
    assert code == 0
    info = schema.read_dataset_info(str(tmp_path / "out"))
    assert info.num_classes == 21 and info.channels == 3 and sum(info.splits.values()) == 3
    for rec in _records(tmp_path / "out"):
        source_id = rec[schema.KEY_IMAGE_SOURCE_ID].decode()
        npy = np.load(src / "data_dataset_voc" / "SegmentationClassNpy" / f"{source_id}.npy")
        assert (_mask_of(rec) == np.where(npy == -1, 255, npy)).mean() >= 0.9999
        assert rec[schema.KEY_IMAGE_ENCODED] == (src / "data_annotated" / f"{source_id}.jpg").read_bytes()
    assert labelme2tfrecord_main(["--verify", str(tmp_path / "out")]) == 0


def test_verify_finds_corruption_and_kerasseg_data_verify(folder, tmp_path, capsys):
    from kerasseg.cli import main as kerasseg_main

    out = tmp_path / "records"
    data_tools.convert_labelme(folder, out, split="train=0.5,val=0.5")
    assert kerasseg_main(["data", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    info = json.loads((out / "dataset.json").read_text())
    info["splits"]["train"] = 99
    info["class_pixel_counts"]["val"][1] += 1
    (out / "dataset.json").write_text(json.dumps(info))
    (out / "splits" / "val.txt").write_text("someone_else\n")
    report = data_tools.verify_dataset(out)
    assert not report.ok
    text = " ".join(report.problems)
    assert "train: 3 records, dataset.json says 99" in text
    assert "class pixel counts" in text and "splits/val.txt differ" in text
    assert kerasseg_main(["data", "verify", str(out)]) == 1
    shard = next(out.glob("train-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[:-10])
    assert any("unreadable TFRecord" in p for p in data_tools.verify_dataset(out).problems)
    assert kerasseg_main(["data", "verify", str(tmp_path / "nothing")]) == 2


def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys):
    src = tmp_path / "in"
    write_labelme(src, "ok", [polygon("a", [[1, 1], [12, 2], [5, 12]])])
    (src / "broken.json").write_text("{not json")
    assert labelme2tfrecord_main([str(src), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "malformed JSON" in err
    assert not (tmp_path / "out").exists()
    code = labelme2tfrecord_main([str(src), str(tmp_path / "out"), "--on-error", "skip",
                                  "--split", "train=1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped 1 file(s)" in printed and "broken.json: malformed JSON" in printed
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["skipped"][0]["path"].endswith("broken.json")
    with pytest.raises(SystemExit):
        labelme2tfrecord_main([str(src)])


def test_kerasseg_data_show_delegates_to_pipeline(folder, tmp_path):
    pytest.importorskip("kerasseg.data.visualize")
    from kerasseg.cli import main as kerasseg_main

    out = tmp_path / "records"
    data_tools.convert_labelme(folder, out, split="train=0.5,val=0.5")
    grid = tmp_path / "grid.png"
    code = kerasseg_main(["data", "show", str(out), "--split", "train", "-n", "2", "--augment", "--out", str(grid)])
    assert code == 0 and grid.is_file()


def test_unknown_options_are_conversion_errors(folder, tmp_path):
    for kwargs, problem in [
        ({"split": "train=0.5,val=0.4"}, "sum to"),
        ({"split": "train:1"}, "NAME=FRACTION"),
        ({"on_error": "ignore"}, "--on-error"),
        ({"workers": 0}, "--workers"),
        ({"folds": 1}, "--folds"),
    ]:
        with pytest.raises(ConversionError, match=problem):
            data_tools.convert_labelme(folder, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    assert issubclass(ConversionError, AnnotationError)


def test_missing_parent_folders_are_created_but_not_under_a_file(folder, tmp_path):
    out = tmp_path / "data" / "nested" / "records"
    data_tools.convert_labelme(folder, out)
    assert (out / "dataset.json").is_file()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConversionError, match="is a file"):
        data_tools.convert_labelme(folder, blocker / "records")
