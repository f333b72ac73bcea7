"""Bad input: each case gives a clear error naming the file and the problem, and
no partial output; ``on_error="skip"`` leaves the file out and reports it."""

from __future__ import annotations

import base64
import json
import os
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data_tools
from data_tools.errors import AnnotationError, ConversionError
from data_tools.labelme import parse_labelme, read_labelme_sample
from data_tools_helpers import labelme_doc, polygon, png_bytes, write_image, write_labelme

TRIANGLE = [[1, 1], [12, 2], [5, 12]]


def _good(folder: pathlib.Path, n: int = 2) -> None:
    for i in range(n):
        write_labelme(folder, f"good_{i}", [polygon("a", TRIANGLE)])


def _write_json(folder: pathlib.Path, name: str, doc) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _bad_case(case: str, folder: pathlib.Path) -> tuple[pathlib.Path, str]:
    """Create one bad file in ``folder``; return (the file an error must name, expected problem)."""
    image = np.zeros((32, 48), np.uint8)
    if case == "malformed_json":
        return _write_json(folder, "bad.json", '{"shapes": [ {"label": "a",'), "malformed JSON"
    if case == "missing_image":
        doc = labelme_doc([polygon("a", TRIANGLE)], image_path="nowhere.png")
        return _write_json(folder, "bad.json", doc), "image file not found"
    if case == "invalid_base64":
        doc = labelme_doc([polygon("a", TRIANGLE)], image_data="@@not base64@@", image_path="bad.json")
        return _write_json(folder, "bad.json", doc), "not valid base64"
    if case == "base64_not_an_image":
        doc = labelme_doc([polygon("a", TRIANGLE)], image_data=base64.b64encode(b"hello").decode())
        return _write_json(folder, "bad.json", doc), "not a readable image"
    if case == "polygon_two_points":
        return write_labelme(folder, "bad", [polygon("a", [[1, 1], [5, 5]])], image=image), "at least 3 points"
    if case == "nan_coordinate":
        path = write_labelme(folder, "bad", [], image=image)
        text = path.read_text().replace('"shapes": []', '"shapes": [{"label": "a", "points": [[1, NaN], [5, 5], [9, 1]]}]')
        path.write_text(text)
        return path, "NaN or infinite"
    if case == "inf_coordinate":
        path = write_labelme(folder, "bad", [], image=image)
        path.write_text(path.read_text().replace('"shapes": []', '"shapes": [{"label": "a", "points": [[1, Infinity], [5, 5], [9, 1]]}]'))
        return path, "NaN or infinite"
    if case == "zero_area":
        return write_labelme(folder, "bad", [polygon("a", [[1, 1], [2, 2], [3, 3]])], image=image), "zero-area"
    if case == "unknown_shape_type":
        return write_labelme(folder, "bad", [polygon("a", TRIANGLE, "hexagon")], image=image), "unknown shape_type 'hexagon'"
    if case == "unknown_label":
        return write_labelme(folder, "bad", [polygon("zebra", TRIANGLE)], image=image), "label 'zebra' is not in"
    if case == "size_mismatch":
        return write_labelme(folder, "bad", [polygon("a", TRIANGLE)], image=image, height=40), "imageHeight is 40"
    if case == "path_traversal":
        write_image(folder.parent / "secret.png", image)
        doc = labelme_doc([polygon("a", TRIANGLE)], image_path="../secret.png")
        return _write_json(folder, "bad.json", doc), "path traversal"
    if case == "absolute_image_path":
        doc = labelme_doc([polygon("a", TRIANGLE)], image_path="C:\\Users\\me\\img.png")
        return _write_json(folder, "bad.json", doc), "path traversal"
    if case == "duplicate_id":
        write_labelme(folder, "Good_0", [polygon("a", TRIANGLE)], image=image, image_path="other.png")
        return folder / "good_0.json", "duplicate id"
    if case == "duplicate_image":
        doc = labelme_doc([polygon("a", TRIANGLE)], image_path="good_0.png")
        return _write_json(folder, "copy_of_good_0.json", doc), "duplicate"
    if case == "not_labelme":
        return _write_json(folder, "bad.json", [1, 2, 3]), "not a labelme annotation"
    if case == "mask_wrong_size":
        bitmap = base64.b64encode(png_bytes(np.ones((3, 3), np.uint8))).decode()
        shape = {"label": "a", "points": [[1, 1], [10, 10]], "shape_type": "mask", "mask": bitmap}
        return write_labelme(folder, "bad", [shape], image=image), "mask bitmap is 3x3"
    raise AssertionError(case)


CASES = [
    "malformed_json", "missing_image", "invalid_base64", "base64_not_an_image", "polygon_two_points",
    "nan_coordinate", "inf_coordinate", "zero_area", "unknown_shape_type", "unknown_label",
    "size_mismatch", "path_traversal", "absolute_image_path", "duplicate_id", "duplicate_image",
    "not_labelme", "mask_wrong_size",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_naming_file_and_problem_with_no_output(case, tmp_path):
    src = tmp_path / "in"
    _good(src)
    (src / "labels.txt").write_text("__ignore__\n_background_\na\n")
    bad_file, problem = _bad_case(case, src)
    out = tmp_path / "out"
    with pytest.raises(AnnotationError) as info:
        data_tools.convert_labelme(src, out, split="train=1")
    error = info.value
    if case in ("duplicate_id", "duplicate_image"):  # the later of the two colliding files is named
        assert os.path.basename(error.path).lower() == "good_0.json"
        assert bad_file.name in str(error) and "good_0" in str(error)
    else:
        assert os.path.samefile(error.path, bad_file) or error.path.startswith(str(bad_file))
    assert problem in error.problem
    assert str(bad_file.name).lower() in str(error).lower()
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(p for p in os.listdir(tmp_path) if not p.startswith("."))


@pytest.mark.parametrize("case", ["malformed_json", "unknown_label", "size_mismatch", "zero_area", "path_traversal"])
def test_bad_input_skip_mode_skips_and_reports(case, tmp_path):
    src = tmp_path / "in"
    _good(src)
    (src / "labels.txt").write_text("__ignore__\n_background_\na\n")
    bad_file, problem = _bad_case(case, src)
    report = data_tools.convert_labelme(src, tmp_path / "out", split="train=1", on_error="skip")
    assert report.split_counts == {"train": 2}
    assert len(report.skipped) == 1
    assert report.skipped[0].path.endswith(bad_file.name) and problem in report.skipped[0].message
    assert bad_file.name in (tmp_path / "out" / "report.txt").read_text()
    assert data_tools.verify_dataset(tmp_path / "out").ok


def test_worker_errors_are_skipped_too(tmp_path):
    src = tmp_path / "in"
    _good(src, 3)
    corrupt = src / "good_1.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # truncated: fails when decoded by a worker
    with pytest.raises(AnnotationError, match="not a readable image") as info:
        data_tools.convert_labelme(src, tmp_path / "out", split="train=1", workers=2)
    assert info.value.path == str(corrupt) and not (tmp_path / "out").exists()
    report = data_tools.convert_labelme(src, tmp_path / "out", split="train=1", workers=2, on_error="skip")
    assert report.split_counts == {"train": 2} and report.skipped[0].path == str(corrupt)
    assert (tmp_path / "out" / "splits" / "train.txt").read_text().split() == ["good_0", "good_2"]


def test_points_outside_image_are_clipped_and_reported_in_conversion(tmp_path):
    src = tmp_path / "in"
    write_labelme(src, "edge", [polygon("a", [[-10, -10], [30, 2], [5, 60]])], image=np.zeros((32, 48), np.uint8))
    report = data_tools.convert_labelme(src, tmp_path / "out", split="train=1")
    assert len(report.warnings) == 1
    assert report.warnings[0].path.endswith("edge.json") and "clipped" in report.warnings[0].message


def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no labelme") as info:
        data_tools.convert_labelme(tmp_path / "empty", tmp_path / "out")
    assert info.value.path == str(tmp_path / "empty")
    with pytest.raises(ConversionError, match="not an existing folder"):
        data_tools.convert_labelme(tmp_path / "absent", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_everything_skipped_is_an_error(tmp_path):
    src = tmp_path / "in"
    _write_json(src, "a.json", "{")
    with pytest.raises(ConversionError, match="no file could be converted"):
        data_tools.convert_labelme(src, tmp_path / "out", on_error="skip")
    assert not (tmp_path / "out").exists()


def test_bad_labels_txt(tmp_path):
    src = tmp_path / "in"
    _good(src)
    (src / "labels.txt").write_text("__ignore__\na\n_background_\n")
    with pytest.raises(AnnotationError, match="_background_ must be the first") as info:
        data_tools.convert_labelme(src, tmp_path / "out")
    assert info.value.path.endswith("labels.txt")
    (src / "labels.txt").write_text("_background_\na\na\n")
    with pytest.raises(AnnotationError, match="listed twice"):
        data_tools.convert_labelme(src, tmp_path / "out")


# -- property test: random JSON gives a mask or our error, never anything else -------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
coordinate = st.one_of(
    st.floats(-100, 100), st.integers(-100, 100), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**40, 10**40), st.text(max_size=3), st.none(),
)
point = st.one_of(st.lists(coordinate, min_size=2, max_size=2), st.lists(coordinate, max_size=3), json_values)
shape = st.fixed_dictionaries(
    {"label": st.one_of(st.sampled_from(["a", "b", "__ignore__", "_background_", ""]), json_values),
     "points": st.one_of(st.lists(point, max_size=6), json_values)},
    optional={
        "shape_type": st.one_of(
            st.sampled_from(["polygon", "rectangle", "circle", "line", "linestrip", "point", "mask",
                             "ai_polygon", "oriented_rectangle", "cube"]), json_values),
        "mask": st.one_of(st.just(base64.b64encode(png_bytes(np.ones((4, 4), np.uint8))).decode()),
                          st.text(max_size=12), json_values),
        "group_id": json_values,
    },
)
document = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"shapes": st.one_of(st.lists(shape, max_size=4), json_values)},
        optional={
            "imagePath": st.one_of(st.just("img.png"), st.just("../img.png"), st.text(max_size=6), json_values),
            "imageData": st.one_of(st.none(), st.just("!!"), st.text(max_size=8)),
            "imageHeight": st.one_of(st.just(12), st.integers(-3, 40), json_values),
            "imageWidth": st.one_of(st.just(16), st.integers(-3, 40), json_values),
            "version": json_values,
        },
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=document)
def test_random_json_gives_a_mask_or_annotation_error(doc, tmp_path):
    folder = tmp_path / "prop"
    folder.mkdir(exist_ok=True)
    image_file = folder / "img.png"
    if not image_file.exists():
        write_image(image_file, np.zeros((12, 16), np.uint8))
    path = folder / "doc.json"
    path.write_text(json.dumps(doc))
    try:
        sample = read_labelme_sample(path, class_ids={"a": 1, "b": 2, "_background_": 0, "__ignore__": 255})
    except AnnotationError as e:
        assert e.path and e.problem
        return
    assert sample.mask.shape == (12, 16) and sample.mask.dtype == np.uint8
    assert set(np.unique(sample.mask)) <= {0, 1, 2, 255}


def test_parse_labelme_rejects_non_numeric_points():
    doc = labelme_doc([{"label": "a", "points": [[1, "x"], [2, 3], [4, 5]]}])
    with pytest.raises(AnnotationError, match="non-numeric"):
        parse_labelme(doc, path="p.json")
