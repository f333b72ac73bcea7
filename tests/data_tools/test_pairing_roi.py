"""Pairing by a shared id, ROI / field-of-view masks and CSV pair lists, on a retinal-style layout of real slices.

The layout mimics how retinal-vessel sets ship (``21_training.tif`` with
``21_manual1.gif`` in another folder and ``21_training_mask.gif`` in a third),
built from real ISBI slices: the membrane is the "vessel" class, and a disc is
the field of view.
"""

from __future__ import annotations

import glob
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from data_tools import convert_mask_folder, convert_mask_list
from data_tools.cli import masks2tfrecord_main
from data_tools.errors import AnnotationError, ConversionError

IDS = ["21", "22", "23"]


def _fov(shape) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.45 * min(h, w)) ** 2


@pytest.fixture(scope="module")
def retina_layout(isbi_membrane, tmp_path_factory):
    root = tmp_path_factory.mktemp("retina")
    train = isbi_membrane / "data" / "membrane" / "train"
    for folder in ("images", "manual", "mask"):
        (root / folder).mkdir()
    for k, source_id in enumerate(IDS):
        image = cv2.imread(str(train / "image" / f"{k}.png"), 0)
        label = cv2.imread(str(train / "label" / f"{k}.png"), 0)
        cv2.imwrite(str(root / "images" / f"{source_id}_training.tif"), image)
        Image.fromarray(np.where(label < 128, 255, 0).astype(np.uint8)).save(root / "manual" / f"{source_id}_manual1.gif")
        Image.fromarray((_fov(label.shape) * 255).astype(np.uint8)).save(root / "mask" / f"{source_id}_training_mask.gif")
    (root / "class_map.txt").write_text("0 background\n255 vessel\n")
    return root, train


def _records(dataset):
    import tensorflow as tf

    from kerasseg import schema

    out = {}
    for path in sorted(glob.glob(str(dataset / "*.tfrecord"))):
        for raw in tf.data.TFRecordDataset(path):
            ex = tf.io.parse_single_example(raw, schema.feature_spec())
            roi = ex[schema.KEY_ROI_ENCODED].numpy()
            out[ex[schema.KEY_IMAGE_SOURCE_ID].numpy().decode()] = {
                "mask": tf.io.decode_png(ex[schema.KEY_MASK_ENCODED]).numpy()[:, :, 0],
                "roi": tf.io.decode_png(roi).numpy()[:, :, 0] if roi else None,
                "filename": ex[schema.KEY_IMAGE_FILENAME].numpy().decode(),
            }
    return out


def _check_dataset(dataset, train):
    records = _records(dataset)
    assert sorted(records) == IDS
    for k, source_id in enumerate(IDS):
        label = cv2.imread(str(train / "label" / f"{k}.png"), 0)
        fov = _fov(label.shape)
        stored = records[source_id]
        assert np.array_equal(stored["roi"], fov.astype(np.uint8) * 255)
        assert np.all(stored["mask"][~fov] == 255)  # outside the field of view: ignore
        assert np.array_equal(stored["mask"][fov], (label < 128)[fov].astype(np.uint8))
    info = json.loads((dataset / "dataset.json").read_text())
    counted = sum(sum(c) for c in info["class_pixel_counts"].values())
    assert counted == len(IDS) * int(_fov((512, 512)).sum())  # only ROI pixels are counted
    return records


def test_retinal_layout_converts_in_one_command_with_the_fov_as_roi(retina_layout, tmp_path):
    root, train = retina_layout
    out = tmp_path / "drive"
    status = masks2tfrecord_main([
        str(root / "images"), str(root / "manual"), str(out), "--image-pattern", "{id}_training.tif",
        "--mask-pattern", "{id}_manual1.gif", "--roi-pattern", "{id}_training_mask.gif", "--roi-dir",
        str(root / "mask"), "--class-map", str(root / "class_map.txt"), "--split", "train=0.67,val=0.33",
        "--no-progress",
    ])
    assert status == 0
    records = _check_dataset(out, train)
    assert records["21"]["filename"] == "21_training.tif"
    source = json.loads((out / "dataset.json").read_text())["source"]
    assert source["roi_pattern"] == "{id}_training_mask.gif" and source["image_pattern"] == "{id}_training.tif"


def test_evaluation_counts_only_roi_pixels(retina_layout, tmp_path):
    from kerasseg.data import iterate_examples
    from kerasseg.evaluation import SegmentationEvaluator

    root, _ = retina_layout
    out = tmp_path / "drive"
    convert_mask_folder(root / "images", root / "manual", out, image_pattern="{id}_training.tif",
                        mask_pattern="{id}_manual1.gif", roi_pattern="{id}_training_mask.gif",
                        roi_dir=root / "mask", class_map=root / "class_map.txt", split="train=1")
    evaluator = SegmentationEvaluator(2, ["background", "vessel"])
    for example in iterate_examples(str(out), "train"):
        truth = example["mask"]
        prediction = np.where(truth == 255, 1, truth)  # right inside the ROI, "vessel" everywhere outside
        evaluator.update(truth, prediction.astype(np.uint8), name=example["source_id"])
    result = evaluator.result()
    assert result["per_class"]["vessel"]["dice"] == pytest.approx(1.0)
    assert result["counts"]["ignored_pixels"] == len(IDS) * int((~_fov((512, 512))).sum())


def test_a_csv_pair_list_gives_the_same_masks(retina_layout, tmp_path):
    root, train = retina_layout
    rows = ["image,mask,roi"] + [f"images/{i}_training.tif,manual/{i}_manual1.gif,mask/{i}_training_mask.gif"
                                 for i in IDS]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "listed"
    report = convert_mask_list(root / "pairs.csv", out, class_map=root / "class_map.txt", split="train=1")
    assert report.split_counts == {"train": 3}
    records = _records(out)
    assert sorted(records) == [f"images/{i}_training" for i in IDS]
    for k, source_id in enumerate(IDS):
        label = cv2.imread(str(train / "label" / f"{k}.png"), 0)
        fov = _fov(label.shape)
        stored = records[f"images/{source_id}_training"]["mask"]
        assert np.all(stored[~fov] == 255) and np.array_equal(stored[fov], (label < 128)[fov].astype(np.uint8))


def test_pairing_mistakes_are_clear_errors_and_write_nothing(retina_layout, tmp_path):
    root, _ = retina_layout
    out = tmp_path / "out"
    with pytest.raises(AnnotationError, match=r"uses \{id\}: give --image-pattern too"):
        convert_mask_folder(root / "images", root / "manual", out, mask_pattern="{id}_manual1.gif")
    with pytest.raises(AnnotationError, match=r"must be a file name holding \{id\} once"):
        convert_mask_folder(root / "images", root / "manual", out, image_pattern="training.tif",
                            mask_pattern="{id}_manual1.gif")
    # a missing ROI file names the image and the folder searched
    with pytest.raises(AnnotationError, match="no ROI file.*matching '{id}_fov.gif'") as caught:
        convert_mask_folder(root / "images", root / "manual", out, image_pattern="{id}_training.tif",
                            mask_pattern="{id}_manual1.gif", roi_pattern="{id}_fov.gif", roi_dir=root / "mask",
                            class_map=root / "class_map.txt")
    assert "21_training.tif" in str(caught.value)
    assert not out.exists()


def test_a_roi_of_another_size_or_empty_is_refused(retina_layout, tmp_path):
    root, _ = retina_layout
    bad = tmp_path / "badmask"
    bad.mkdir()
    for i in IDS:
        Image.fromarray(np.full((100, 100), 255, np.uint8)).save(bad / f"{i}_training_mask.gif")
    with pytest.raises(AnnotationError, match="ROI is 100x100 but the image 21_training.tif is 512x512"):
        convert_mask_folder(root / "images", root / "manual", tmp_path / "out", image_pattern="{id}_training.tif",
                            mask_pattern="{id}_manual1.gif", roi_pattern="{id}_training_mask.gif", roi_dir=bad,
                            class_map=root / "class_map.txt")
    for i in IDS:
        Image.fromarray(np.zeros((512, 512), np.uint8)).save(bad / f"{i}_training_mask.gif")
    with pytest.raises(AnnotationError, match="ROI has no pixel inside"):
        convert_mask_folder(root / "images", root / "manual", tmp_path / "out", image_pattern="{id}_training.tif",
                            mask_pattern="{id}_manual1.gif", roi_pattern="{id}_training_mask.gif", roi_dir=bad,
                            class_map=root / "class_map.txt")
    assert not (tmp_path / "out").exists()


def test_a_pair_list_with_a_missing_file_names_it_and_its_line(retina_layout, tmp_path):
    root, _ = retina_layout
    listing = root / "broken.csv"
    listing.write_text("images/21_training.tif,manual/21_manual1.gif\nimages/22_training.tif,manual/missing.gif\n")
    with pytest.raises(AnnotationError, match="missing.gif.*listed on line 2 of broken.csv but not found"):
        convert_mask_list(listing, tmp_path / "out", class_map=root / "class_map.txt", split="train=1")
    listing.write_text("images/21_training.tif\n")
    with pytest.raises(ConversionError, match="line 1: expected 'image,mask' or 'image,mask,roi'"):
        convert_mask_list(listing, tmp_path / "out", class_map=root / "class_map.txt", split="train=1")
    assert not (tmp_path / "out").exists()
