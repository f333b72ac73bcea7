"""labelme fidelity: our masks against labelme's own reference label maps and
against independent geometry for every shape type."""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image, ImageOps

from data_tools.errors import AnnotationError
from data_tools.images import apply_orientation, decode_image
from data_tools.labelme import load_labelme_json, read_labelme_sample
from data_tools.labels import classes_from_labels, read_labels_txt
from data_tools.rasterize import Shape, rasterize, shape_mask

MIN_AGREEMENT = 0.9999


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


# -- labelme's reference conversions ---------------------------------------------------------------


def test_semantic_segmentation_matches_labelme_npy_and_png(labelme_examples):
    root = labelme_examples / "examples" / "semantic_segmentation"
    ids = read_labels_txt(root / "labels.txt").ids()
    files = sorted((root / "data_annotated").glob("*.json"))
    assert len(files) == 3
    for json_path in files:
        sample = read_labelme_sample(json_path, class_ids=ids)
        npy = np.load(root / "data_dataset_voc" / "SegmentationClassNpy" / f"{json_path.stem}.npy")
        npy = np.where(npy == -1, 255, npy)
        png = np.asarray(Image.open(root / "data_dataset_voc" / "SegmentationClass" / f"{json_path.stem}.png"))
        assert _agreement(sample.mask, npy) >= MIN_AGREEMENT, json_path.name
        assert _agreement(sample.mask, png) >= MIN_AGREEMENT, json_path.name
        assert set(np.unique(sample.mask)) == set(np.unique(png))
        # __ignore__ pixels are 255 in our masks, as in labelme's PNGs
        assert (sample.mask == 255).sum() == (png == 255).sum() or json_path.stem == "2011_000006"


def test_video_annotation_matches_labelme_pngs(labelme_examples):
    root = labelme_examples / "examples" / "video_annotation"
    ids = read_labels_txt(root / "labels.txt").ids()
    files = sorted((root / "data_annotated").glob("*.json"))
    assert len(files) == 5
    for json_path in files:
        sample = read_labelme_sample(json_path, class_ids=ids)
        reference = np.asarray(
            Image.open(root / "data_dataset_voc" / "SegmentationClassPNG" / f"{json_path.stem}.png")
        )
        assert sample.mask.shape == (563, 1000)
        assert _agreement(sample.mask, reference) >= MIN_AGREEMENT, json_path.name


def test_tutorial_embedded_image_matches_label_png_and_img_png(labelme_examples):
    root = labelme_examples / "examples" / "tutorial"
    names = (root / "apc2016_obj3" / "label_names.txt").read_text().split()
    sample = read_labelme_sample(root / "apc2016_obj3.json", class_ids={n: i for i, n in enumerate(names)})
    reference = np.asarray(Image.open(root / "apc2016_obj3" / "label.png"))
    assert _agreement(sample.mask, reference) >= MIN_AGREEMENT
    # imagePath is the JSON itself: the image came from imageData, JPEG bytes kept as they are
    assert sample.annotation.image_path == "apc2016_obj3.json"
    assert sample.image.format == "jpeg"
    assert sample.image.encoded == sample.annotation.image_data
    img = np.asarray(Image.open(root / "apc2016_obj3" / "img.png"))
    assert np.array_equal(sample.image.pixels, img)


def test_every_labelme_schema_version_is_read(labelme_examples, tmp_path):
    """pre-3.x, 3.5, 3.14, 3.22, 4.0, 5.3, 5.7 files all parse and rasterize."""
    files = sorted(glob.glob(str(labelme_examples / "**" / "*.json"), recursive=True))
    files = [f for f in files if "data_dataset_coco" not in f]
    versions = set()
    for path in files:
        annotation = load_labelme_json(path)
        versions.add(annotation.version)
        if annotation.image_data is None:
            # legacy folders hold JSON only; their images are the current ones
            image_name = os.path.basename(annotation.image_path)
            candidates = glob.glob(str(labelme_examples / "examples" / "**" / image_name), recursive=True)
            assert candidates, image_name
            work = tmp_path / os.path.basename(os.path.dirname(path)) / os.path.basename(path)
            work.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, work)
            shutil.copy(candidates[0], work.parent / image_name)
            path = str(work)
        classes = classes_from_labels(annotation.labels)
        sample = read_labelme_sample(path, class_ids=classes.ids())
        assert sample.mask.dtype == np.uint8
        assert sample.mask.shape == sample.image.pixels.shape[:2]
        if annotation.shapes:
            assert (sample.mask != 0).any(), path
    assert {None, "3.5.0", "3.14.2", "3.22.0", "4.0.0", "5.3.1", "5.7.0"} <= versions


def test_pre_3x_file_without_shape_type_matches_reference(labelme_examples, tmp_path):
    legacy = labelme_examples / "legacy_versions" / "noversion_2018-03-30_43c442db" / "examples"
    current = labelme_examples / "examples" / "semantic_segmentation"
    src = legacy / "semantic_segmentation" / "data_annotated" / "2011_000025.json"
    data = json.loads(src.read_text())
    assert "version" not in data and all("shape_type" not in s for s in data["shapes"])
    shutil.copy(src, tmp_path / src.name)
    shutil.copy(current / "data_annotated" / "2011_000025.jpg", tmp_path)
    sample = read_labelme_sample(tmp_path / src.name, class_ids=read_labels_txt(current / "labels.txt").ids())
    reference = np.load(current / "data_dataset_voc" / "SegmentationClassNpy" / "2011_000025.npy")
    assert _agreement(sample.mask, reference) >= MIN_AGREEMENT


# -- primitives.json: every shape type against independent geometry ------------------------------


def _pixel_grid(height, width):
    yy, xx = np.mgrid[0:height, 0:width]
    return xx.astype(np.float64), yy.astype(np.float64)


def _segment_band(xx, yy, a, b, half_width):
    """Pixels within ``half_width`` of segment a-b, with flat ends (Pillow's wide lines)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    length = np.hypot(*d)
    t = ((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / length
    perpendicular = np.abs((xx - a[0]) * d[1] - (yy - a[1]) * d[0]) / length
    return (t >= 0) & (t <= length) & (perpendicular <= half_width)


def _assert_within_one_pixel(mask: np.ndarray, ideal: np.ndarray, what: str):
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(ideal.astype(np.uint8), kernel).astype(bool)
    outer = cv2.dilate(ideal.astype(np.uint8), kernel).astype(bool)
    assert inner.sum() > 0, what
    assert not (inner & ~mask).any(), f"{what}: pixels well inside the shape are missing"
    assert not (mask & ~outer).any(), f"{what}: pixels well outside the shape are set"


@pytest.fixture(scope="module")
def primitives(labelme_examples):
    annotation = load_labelme_json(labelme_examples / "examples" / "primitives" / "primitives.json")
    assert annotation.version == "5.7.0"
    return annotation


def test_primitives_every_shape_type_present(primitives):
    assert {s.shape_type for s in primitives.shapes} == {
        "rectangle", "circle", "polygon", "line", "point", "linestrip", "mask"
    }


def test_primitives_rectangle_is_inclusive_box(primitives):
    h, w = primitives.image_height, primitives.image_width
    for shape in [s for s in primitives.shapes if s.shape_type == "rectangle"]:
        mask = shape_mask(shape, height=h, width=w)
        (x0, y0), (x1, y1) = np.sort(shape.points, axis=0).astype(int)
        ideal = np.zeros((h, w), bool)
        ideal[y0 : y1 + 1, x0 : x1 + 1] = True
        assert np.array_equal(mask, ideal)


def test_primitives_circle_centre_and_point_on_circle(primitives):
    h, w = primitives.image_height, primitives.image_width
    shape = next(s for s in primitives.shapes if s.shape_type == "circle")
    (cx, cy), (px, py) = shape.points
    radius = np.hypot(px - cx, py - cy)
    xx, yy = _pixel_grid(h, w)
    ideal = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    mask = shape_mask(shape, height=h, width=w)
    _assert_within_one_pixel(mask, ideal, "circle")
    assert abs(int(mask.sum()) - np.pi * radius**2) / (np.pi * radius**2) < 0.05


def test_primitives_polygon_fill_and_outline(primitives):
    h, w = primitives.image_height, primitives.image_width
    shape = next(s for s in primitives.shapes if s.shape_type == "polygon")
    xx, yy = _pixel_grid(h, w)
    ideal = MplPath(shape.points).contains_points(np.c_[xx.ravel(), yy.ravel()]).reshape(h, w)
    mask = shape_mask(shape, height=h, width=w)
    _assert_within_one_pixel(mask, ideal, "polygon")
    # the outline is drawn: every vertex pixel belongs to the shape
    for x, y in shape.points.astype(int):
        assert mask[y, x]


def test_primitives_line_and_linestrip_are_10_pixels_wide(primitives):
    h, w = primitives.image_height, primitives.image_width
    xx, yy = _pixel_grid(h, w)
    for kind in ("line", "linestrip"):
        shape = next(s for s in primitives.shapes if s.shape_type == kind)
        ideal = np.zeros((h, w), bool)
        for a, b in zip(shape.points[:-1], shape.points[1:]):
            ideal |= _segment_band(xx, yy, a, b, 5.0)
        _assert_within_one_pixel(shape_mask(shape, height=h, width=w), ideal, kind)


def test_primitives_point_is_disc_of_radius_5(primitives):
    h, w = primitives.image_height, primitives.image_width
    shape = next(s for s in primitives.shapes if s.shape_type == "point")
    (cx, cy), = shape.points
    xx, yy = _pixel_grid(h, w)
    ideal = (xx - cx) ** 2 + (yy - cy) ** 2 <= 25
    mask = shape_mask(shape, height=h, width=w)
    _assert_within_one_pixel(mask, ideal, "point")
    assert mask[int(cy), int(cx)] and 60 <= mask.sum() <= 130


def test_primitives_mask_bitmap_placed_at_integer_box_corner(primitives, labelme_examples):
    h, w = primitives.image_height, primitives.image_width
    shape = next(s for s in primitives.shapes if s.shape_type == "mask")
    raw = json.loads((labelme_examples / "examples" / "primitives" / "primitives.json").read_text())
    b64 = next(s["mask"] for s in raw["shapes"] if s["shape_type"] == "mask")
    import io

    bitmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))) > 0
    assert bitmap.shape == (100, 100)
    mask = shape_mask(shape, height=h, width=w)
    ideal = np.zeros((h, w), bool)
    ideal[305:405, 417:517] = bitmap  # points (417.4, 305) - (516.4, 404), truncated
    assert np.array_equal(mask, ideal)


def test_primitives_whole_file_later_shapes_overwrite(primitives, labelme_examples):
    sample = read_labelme_sample(labelme_examples / "examples" / "primitives" / "primitives.json")
    assert sample.mask.shape == (450, 560)
    # each shape's own label is visible somewhere (ids follow first appearance)
    assert len(np.unique(sample.mask)) == 1 + len(set(primitives.labels))


# -- rasterizer rules -----------------------------------------------------------------------------


def _shape(kind, points, label="a", index=0, mask=None):
    return Shape(label=label, shape_type=kind, points=np.asarray(points, float), mask=mask, index=index)


def test_later_shapes_overwrite_and_special_labels():
    ids = {"_background_": 0, "a": 1, "b": 2, "__ignore__": 255}
    shapes = [
        _shape("rectangle", [[0, 0], [9, 9]], "a", 0),
        _shape("rectangle", [[5, 5], [9, 9]], "b", 1),
        _shape("rectangle", [[8, 8], [9, 9]], "_background_", 2),
        _shape("rectangle", [[0, 0], [1, 1]], "__ignore__", 3),
    ]
    label, notes = rasterize(shapes, ids, height=10, width=10)
    assert label[3, 3] == 1 and label[6, 6] == 2 and label[9, 9] == 0 and label[0, 0] == 255
    assert notes == []


def test_reversed_rectangle_corners_and_mask_order():
    ids = {"a": 1, "b": 2}
    bitmap = np.ones((3, 3), bool)
    shapes = [_shape("mask", [[2, 2], [4, 4]], "a", 0, bitmap), _shape("rectangle", [[3, 3], [1, 1]], "b", 1)]
    label, _ = rasterize(shapes, ids, height=6, width=6)
    assert label[1, 1] == 2 and label[3, 3] == 2 and label[4, 4] == 1


def test_points_outside_image_are_clipped_and_reported():
    shapes = [_shape("polygon", [[-1e6, 8], [8, -1e6], [8, 8]])]
    label, notes = rasterize(shapes, {"a": 1}, height=16, width=16)
    assert len(notes) == 1 and "2 of 3 points outside the 16x16 image, clipped" in notes[0]
    xx, yy = _pixel_grid(16, 16)
    assert np.array_equal(label == 1, (xx <= 8) & (yy <= 8))


def test_mask_partly_outside_is_cropped_not_wrapped():
    bitmap = np.ones((4, 4), bool)
    label, notes = rasterize([_shape("mask", [[-2, -2], [1, 1]], mask=bitmap)], {"a": 1}, height=5, width=5)
    assert label[:2, :2].all() and label.sum() == 4 and notes


def test_huge_circle_uses_numpy_fallback():
    label, _ = rasterize([_shape("circle", [[5, 5], [5, 5 + 9e6]])], {"a": 1}, height=8, width=8)
    assert label.all()


@pytest.mark.parametrize(
    "kind,points,problem",
    [
        ("polygon", [[0, 0], [5, 5]], "at least 3 points"),
        ("polygon", [[0, 0], [2, 2], [4, 4]], "zero-area"),
        ("rectangle", [[1, 1], [1, 5]], "zero-area"),
        ("circle", [[3, 3], [3, 3]], "zero-area"),
        ("line", [[3, 3], [3, 3]], "zero-length"),
        ("point", [[1, 1], [2, 2]], "exactly 1"),
        ("polygon", [[0, 0], [np.nan, 1], [3, 3]], "NaN"),
    ],
)
def test_bad_geometry_raises(kind, points, problem):
    with pytest.raises(AnnotationError, match=problem) as info:
        rasterize([_shape(kind, points)], {"a": 1}, height=8, width=8, path="x.json")
    assert info.value.path == "x.json"


# -- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(orientation, tmp_path):
    rng = np.random.default_rng(orientation)
    array = rng.integers(0, 255, (6, 10, 3), dtype=np.uint8)
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "x.png"
    img.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    decoded = decode_image(path.read_bytes(), path=str(path), apply_exif=True)
    assert np.array_equal(decoded.pixels, expected)
    assert np.array_equal(apply_orientation(array, orientation), expected)
    # the stored bytes decode to the rotated pixels (PNG, lossless)
    assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(decoded.encoded))), expected)
    assert decoded.format == "png"


# -- labelme 6/7 style files ----------------------------------------------------------------------


def test_labelme_7_style_shapes(tmp_path):
    """Newer writers: oriented_rectangle (4 corners), ai_polygon/ai_mask, 4-point
    rectangles, extra keys, Windows separators in imagePath."""
    import io as _io

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "imgs" / "frame.png")
    buf = _io.BytesIO()
    Image.fromarray(np.ones((3, 4), np.uint8)).save(buf, format="PNG")
    doc = {
        "version": "7.1.0",
        "flags": {},
        "shapes": [
            {"label": "a", "points": [[2, 2], [8, 4], [6, 10], [0, 8]], "shape_type": "oriented_rectangle",
             "group_id": None, "description": "", "flags": {}, "mask": None, "other_data": {"score": 0.9}},
            {"label": "b", "points": [[12, 2], [18, 2], [18, 6], [12, 6]], "shape_type": "rectangle"},
            {"label": "a", "points": [[20, 10], [28, 10], [24, 18]], "shape_type": "ai_polygon"},
            {"label": "b", "points": [[1, 15], [4, 17]], "shape_type": "ai_mask",
             "mask": base64.b64encode(buf.getvalue()).decode()},
        ],
        "imagePath": "imgs\\frame.png",
        "imageData": None,
        "imageHeight": 20,
        "imageWidth": 30,
        "description": "",
    }
    (tmp_path / "frame.json").write_text(json.dumps(doc))
    sample = read_labelme_sample(tmp_path / "frame.json", class_ids={"_background_": 0, "a": 1, "b": 2})
    assert sample.filename == "imgs/frame.png"
    m = sample.mask
    assert m[5, 4] == 1 and m[4, 15] == 2 and m[13, 24] == 1
    assert m[15:18, 1:5].tolist() == [[2] * 4] * 3 and m[14, 1] == 0


def test_embedded_image_data_is_used_as_stored_without_exif(tmp_path):
    """labelme applies EXIF orientation when it opens an image file, not to imageData."""
    import io as _io

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 20, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6
    buf = _io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    doc = {"version": "5.2.1", "shapes": [{"label": "a", "points": [[1, 1], [15, 2], [5, 8]]}],
           "imagePath": "x.jpg", "imageData": base64.b64encode(buf.getvalue()).decode(),
           "imageHeight": 10, "imageWidth": 20}
    (tmp_path / "x.json").write_text(json.dumps(doc))
    sample = read_labelme_sample(tmp_path / "x.json")
    assert sample.image.pixels.shape == (10, 20, 3) and sample.image.format == "jpeg"
    assert sample.image.encoded == buf.getvalue() and sample.filename == "x.json"
