"""volumes2tfrecord / data_tools.convert_volumes: real files in, volume (or slice) records out, with the
2D converters' guarantees (atomic output, overwrite rules, reproducible splits and folds, identical records
for any worker count) and a clear error naming the file for each bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import pathlib

import numpy as np
import pytest

from data_tools.errors import AnnotationError, ConversionError
from kerasseg_testing import SHARED_DATA

SimpleITK = pytest.importorskip("SimpleITK")
HIPPOCAMPUS = SHARED_DATA / "msd_hippocampus"
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # a rotation, so a lost direction shows


def write(path: pathlib.Path, array: np.ndarray, *, spacing=(2.0, 0.5, 0.75), origin=(10.0, -5.0, 3.0),
          direction=DIRECTION) -> pathlib.Path:
    """Write ``array`` (z, y, x) with the given spacing (z, y, x) and ITK origin/direction."""
    image = SimpleITK.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    SimpleITK.WriteImage(image, str(path))
    return path


def make_case(root: pathlib.Path, name: str, *, dtype=np.int16, shape=(6, 9, 7), seed=0, ext=".nii.gz",
              label_dtype=np.uint8, **geometry) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(-1000, 1000, shape).astype(dtype) if np.dtype(dtype).kind != "f" else \
        rng.normal(0, 1, shape).astype(dtype)
    labels = np.zeros(shape, label_dtype)
    labels[1:4, 2:6, 1:5] = 1
    labels[2:3, 3:5, 2:4] = 2
    write(root / "images" / f"{name}{ext}", image, **geometry)
    write(root / "labels" / f"{name}{ext}", labels, **geometry)
    return image, labels


@pytest.fixture()
def cases(tmp_path):
    arrays = {f"case{i}": make_case(tmp_path, f"case{i}", seed=i) for i in range(5)}
    return tmp_path, arrays


def convert(root: pathlib.Path, out: str = "out", **kwargs):
    from data_tools import convert_volumes

    kwargs.setdefault("labels", ["background", "liver", "tumour"])
    return convert_volumes(root / "images", root / "labels", root / out, **kwargs)


def records(out: pathlib.Path) -> dict[str, dict]:
    import tensorflow as tf

    from kerasseg import schema

    found = {}
    for shard in sorted(out.glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
            record = schema.decode_volume_example(raw)
            found[record["source_id"]] = record
    return found


def tree_digest(folder: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("report.json", "report.txt")}


def test_records_keep_voxels_type_and_geometry(cases):
    root, arrays = cases
    report = convert(root, split="train=0.6,val=0.4", folds=3, seed=1, preview=2)
    assert report.num_examples == 5
    out = root / "out"
    found = records(out)
    assert sorted(found) == sorted(arrays)
    for name, (image, labels) in arrays.items():
        rec = found[name]
        assert rec["voxels"].dtype == np.int16
        np.testing.assert_array_equal(rec["voxels"].reshape(image.shape), image)
        np.testing.assert_array_equal(rec["mask"], labels)
        np.testing.assert_allclose(rec["spacing"], (2.0, 0.5, 0.75))
        np.testing.assert_allclose(rec["origin"], (10.0, -5.0, 3.0))
        np.testing.assert_allclose(rec["direction"], DIRECTION, atol=1e-9)
        assert rec["filename"] == f"{name}.nii.gz"
    info = json.loads((out / "dataset.json").read_text())
    assert info["dimensions"] == 3 and info["image_dtype"] == "int16" and info["schema_version"] == 2
    assert info["class_names"] == ["background", "liver", "tumour"]
    volume = info["volume"]
    assert volume["spacing"]["median"] == [2.0, 0.5, 0.75]
    assert volume["shape"] == {"median": [6.0, 9.0, 7.0], "min": [6.0, 9.0, 7.0], "max": [6.0, 9.0, 7.0]}
    train = [arrays[i] for i in (out / "splits" / "train.txt").read_text().split()]
    fg = np.concatenate([img[lab > 0] for img, lab in train]).astype(np.float64)
    fi = volume["foreground_intensity"]
    assert fi["mean"][0] == pytest.approx(fg.mean(), rel=1e-6)
    assert fi["std"][0] == pytest.approx(fg.std(), rel=1e-6)
    assert fg.min() <= fi["p00_5"][0] <= np.percentile(fg, 1) and np.percentile(fg, 99) <= fi["p99_5"][0] <= fg.max()
    counts = np.bincount(np.concatenate([lab.ravel() for _, lab in train]), minlength=3)
    assert info["class_pixel_counts"]["train"] == counts.tolist()
    for k in range(3):
        val = (out / "splits" / f"fold{k}_val.txt").read_text().split()
        trn = (out / "splits" / f"fold{k}_train.txt").read_text().split()
        assert sorted(val + trn) == sorted(t for t in (out / "splits" / "train.txt").read_text().split())
    assert len(list((out / "preview").glob("*.png"))) == 2
    from data_tools import verify_dataset

    assert verify_dataset(out).ok


def test_output_identical_for_any_worker_count(cases):
    root, _ = cases
    convert(root, "one", workers=1, folds=2)
    convert(root, "two", workers=2, folds=2)
    assert tree_digest(root / "one") == tree_digest(root / "two")


def test_float_labels_with_whole_values_accepted_fractional_refused(tmp_path):
    make_case(tmp_path, "a", label_dtype=np.float32)
    report = convert(tmp_path)
    assert report.num_examples == 1
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(tmp_path / "labels" / "a.nii.gz")))
    labels[0, 0, 0] = 1.5
    write(tmp_path / "labels" / "a.nii.gz", labels)
    with pytest.raises(AnnotationError, match=r"a\.nii\.gz.*whole numbers.*1\.5"):
        convert(tmp_path, "out2")
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("problem", ["shape", "spacing", "origin", "direction"])
def test_label_off_the_image_grid_is_refused_naming_the_label(tmp_path, problem):
    make_case(tmp_path, "good", seed=1)
    make_case(tmp_path, "bad", seed=2)
    label = tmp_path / "labels" / "bad.nii.gz"
    array = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(label)))
    if problem == "shape":
        write(label, array[:-1])
    elif problem == "spacing":
        write(label, array, spacing=(2.0, 0.5, 0.8))
    elif problem == "origin":
        write(label, array, origin=(10.0, -5.0, 4.0))
    else:
        write(label, array, direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    with pytest.raises(AnnotationError) as info:
        convert(tmp_path)
    assert info.value.path.endswith("bad.nii.gz") and "labels" in info.value.path
    assert "grid" in info.value.problem
    assert not (tmp_path / "out").exists()
    report = convert(tmp_path, on_error="skip")
    assert report.num_examples == 1 and [n.path for n in report.skipped] == [str(label)]


def test_image_without_label_stop_and_skip(tmp_path):
    make_case(tmp_path, "paired")
    write(tmp_path / "images" / "lonely.nii.gz", np.zeros((4, 5, 6), np.int16))
    with pytest.raises(AnnotationError, match="has no label volume") as info:
        convert(tmp_path)
    assert info.value.path.endswith("lonely.nii.gz")
    report = convert(tmp_path, on_error="skip")
    assert report.num_examples == 1 and "no label volume" in report.skipped[0].message


def test_two_label_files_for_one_image_are_refused(tmp_path):
    make_case(tmp_path, "a")
    make_case(tmp_path, "b", ext=".nrrd")
    write(tmp_path / "labels" / "a.mha", np.zeros((6, 9, 7), np.uint8))
    with pytest.raises(AnnotationError, match=r"several label volumes.*a\.mha") as info:
        convert(tmp_path)
    assert info.value.path.endswith("a.nii.gz")


def test_nan_voxels_truncated_file_and_4d_are_refused(tmp_path):
    make_case(tmp_path, "good")
    nan = np.zeros((4, 5, 6), np.float32)
    nan[1, 2, 3] = np.nan
    write(tmp_path / "images" / "nan.nii.gz", nan)
    write(tmp_path / "labels" / "nan.nii.gz", np.zeros((4, 5, 6), np.uint8))
    make_case(tmp_path, "cut")
    cut = tmp_path / "images" / "cut.nii.gz"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    four = SimpleITK.JoinSeries([SimpleITK.GetImageFromArray(np.zeros((4, 5, 6), np.int16))] * 2)
    SimpleITK.WriteImage(four, str(tmp_path / "images" / "four.nii.gz"))
    write(tmp_path / "labels" / "four.nii.gz", np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(AnnotationError) as info:
        convert(tmp_path)
    assert info.value.path.endswith(("cut.nii.gz", "four.nii.gz", "nan.nii.gz"))
    report = convert(tmp_path, on_error="skip")
    assert report.num_examples == 1
    problems = {pathlib.Path(n.path).name: n.message for n in report.skipped}
    assert set(problems) == {"nan.nii.gz", "cut.nii.gz", "four.nii.gz"}, problems
    assert "NaN" in problems["nan.nii.gz"] or "not finite" in problems["nan.nii.gz"]
    assert "4" in problems["four.nii.gz"] and "3D" in problems["four.nii.gz"]
    assert "truncated" in problems["cut.nii.gz"] or "damaged" in problems["cut.nii.gz"] \
        or "incomplete" in problems["cut.nii.gz"], problems["cut.nii.gz"]


def test_existing_output_untouched_on_failure_and_overwrite_rules(cases):
    root, _ = cases
    convert(root)
    before = tree_digest(root / "out")
    with pytest.raises(ConversionError, match="exists"):
        convert(root)
    bad = root / "labels" / "case0.nii.gz"
    bad.write_bytes(gzip.compress(b"not a volume"))
    with pytest.raises(AnnotationError):
        convert(root, overwrite=True)
    assert tree_digest(root / "out") == before
    (root / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="notes.txt"):
        convert(root, overwrite=True, on_error="skip")
    assert (root / "out" / "notes.txt").read_text() == "mine"
    (root / "out" / "notes.txt").unlink()
    report = convert(root, overwrite=True, on_error="skip")
    assert report.num_examples == 4


def test_split_file_and_labels_file(tmp_path):
    for i in range(4):
        make_case(tmp_path, f"c{i}", seed=i, ext=".nrrd" if i % 2 else ".mha", dtype=np.float32)
    (tmp_path / "split.txt").write_text("c0 train\nc1 train\nc2 val\nc3 test\n")
    (tmp_path / "dataset_msd.json").write_text(json.dumps({"labels": {"0": "bg", "1": "a", "2": "b"}}))
    convert(tmp_path, split_file=tmp_path / "split.txt", labels=str(tmp_path / "dataset_msd.json"))
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["splits"] == {"train": 2, "val": 1, "test": 1}
    assert info["class_names"] == ["bg", "a", "b"] and info["image_dtype"] == "float32"
    assert (tmp_path / "out" / "splits" / "test.txt").read_text().split() == ["c3"]


def test_slices_mode_writes_2d_records_one_volume_per_fold(tmp_path):
    for i in range(4):
        make_case(tmp_path, f"v{i}", seed=i, dtype=np.uint16)
    convert(tmp_path, slices="z", split="train=1", folds=2)
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["dimensions"] == 2 and info["splits"] == {"train": 24} and info["image_dtype"] == "uint16"
    fold_val = (tmp_path / "out" / "splits" / "fold0_val.txt").read_text().split()
    volumes = {s.split("/")[0] for s in fold_val}
    assert len(fold_val) == 6 * len(volumes)  # every slice of a volume in the same fold
    from data_tools import verify_dataset
    from kerasseg.data import load_dataset

    assert verify_dataset(tmp_path / "out").ok
    images, masks = next(iter(load_dataset(str(tmp_path / "out"), "train", batch_size=6, image_size=(9, 7))))[:2]
    assert images.shape == (6, 9, 7, 1) and set(np.unique(masks.numpy())) <= {0, 1, 2}


def test_cli_exit_codes_and_message(tmp_path, capsys):
    from data_tools.cli import volumes2tfrecord_main

    make_case(tmp_path, "a")
    write(tmp_path / "images" / "b.nii.gz", np.zeros((3, 4, 5), np.int16))
    argv = [str(tmp_path / "images"), str(tmp_path / "labels"), str(tmp_path / "out"), "--labels", "bg,fg,x",
            "--no-progress"]
    assert volumes2tfrecord_main(argv) == 2
    err = capsys.readouterr().err
    assert "b.nii.gz" in err and "no label volume" in err
    assert not (tmp_path / "out").exists()
    assert volumes2tfrecord_main(argv + ["--on-error", "skip", "--split", "train=1"]) == 0
    assert volumes2tfrecord_main(["--verify", str(tmp_path / "out")]) == 0


@pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason=f"real data not available: {HIPPOCAMPUS} is absent")
def test_real_hippocampus_volumes_keep_their_storage_types(tmp_path):
    names = ["hippocampus_001", "hippocampus_003", "hippocampus_004"]
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / f"{name}.nii.gz").symlink_to(HIPPOCAMPUS / folder / f"{name}.nii.gz")
    from data_tools import convert_volumes

    convert_volumes(tmp_path / "imagesTr", tmp_path / "labelsTr", tmp_path / "out", split="train=1",
                    labels="background,anterior,posterior")
    found = records(tmp_path / "out")
    for name in names:
        source = SimpleITK.ReadImage(str(HIPPOCAMPUS / "imagesTr" / f"{name}.nii.gz"))
        voxels = SimpleITK.GetArrayFromImage(source)
        rec = found[name]
        assert rec["voxels"].dtype == voxels.dtype
        np.testing.assert_array_equal(rec["voxels"].reshape(voxels.shape), voxels)
        np.testing.assert_allclose(rec["spacing"], source.GetSpacing()[::-1])
        np.testing.assert_allclose(rec["origin"], source.GetOrigin())
        labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{name}.nii.gz")))
        np.testing.assert_array_equal(rec["mask"], labels.astype(np.uint8))
