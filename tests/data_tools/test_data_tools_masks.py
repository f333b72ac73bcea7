"""Image + mask folders: the mask encodings real datasets ship."""

from __future__ import annotations

import io
import pathlib

import numpy as np
import pytest
from PIL import Image

import data_tools
from data_tools.cli import masks2tfrecord_main
from data_tools.errors import AnnotationError
from data_tools.masks import find_pairs, read_class_map, read_mask
from data_tools.preview import label_colours
from data_tools_helpers import write_image
from kerasseg import schema

H, W = 24, 32


def _shape_mask(seed: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[4 + seed % 5 : 14 + seed % 5, 6:20] = True
    return mask


def _image(seed: int, *, dtype=np.uint8, channels=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = 255 if dtype == np.uint8 else 65535
    shape = (H, W) if channels == 1 else (H, W, channels)
    return rng.integers(0, high, shape, dtype=dtype)


def _records(dataset_dir) -> dict[str, tuple[np.ndarray, dict]]:
    import tensorflow as tf

    out = {}
    info = schema.read_dataset_info(str(dataset_dir))
    for split in info.splits:
        for path in schema.split_files(str(dataset_dir), split):
            for raw in tf.data.TFRecordDataset(path):
                ex = {k: v.numpy() for k, v in tf.io.parse_single_example(raw, schema.feature_spec()).items()}
                mask = np.asarray(Image.open(io.BytesIO(ex[schema.KEY_MASK_ENCODED])))
                out[ex[schema.KEY_IMAGE_SOURCE_ID].decode()] = (mask, ex)
    return out


def _palette_png(path: pathlib.Path, ids: np.ndarray) -> None:
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette(label_colours().ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# -- readers --------------------------------------------------------------------------------------


def test_voc_palette_png_index_is_class(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[2:8, 2:8] = 15
    ids[10:12] = 255  # VOC "void" border
    _palette_png(tmp_path / "m.png", ids)
    assert np.array_equal(read_mask(str(tmp_path / "m.png")), ids)


def test_binary_0_255_and_1bit_masks(tmp_path):
    shape = _shape_mask(0)
    write_image(tmp_path / "grey.png", (shape * 255).astype(np.uint8))
    Image.fromarray(shape).convert("1").save(tmp_path / "bit.png")
    assert Image.open(tmp_path / "bit.png").mode == "1"
    for name in ("grey.png", "bit.png"):
        assert np.array_equal(read_mask(str(tmp_path / name)), shape.astype(np.uint8)), name


def test_rgba_masks_alpha_and_white_on_transparent(tmp_path):
    shape = _shape_mask(1)
    alpha_only = np.zeros((H, W, 4), np.uint8)
    alpha_only[..., 3] = shape * 255
    write_image(tmp_path / "alpha.png", alpha_only)
    white = np.zeros((H, W, 4), np.uint8)
    white[shape] = (255, 255, 255, 255)
    write_image(tmp_path / "white.png", white)
    for name in ("alpha.png", "white.png"):
        assert np.array_equal(read_mask(str(tmp_path / name)), shape.astype(np.uint8)), name


def test_gif_mask_with_grey_palette(tmp_path):
    shape = _shape_mask(2)
    Image.fromarray((shape * 255).astype(np.uint8)).save(tmp_path / "manual.gif")
    assert Image.open(tmp_path / "manual.gif").mode in ("P", "L")
    assert np.array_equal(read_mask(str(tmp_path / "manual.gif")), shape.astype(np.uint8))
    # a class map refers to the grey levels, not to the GIF's palette indices
    (tmp_path / "map.txt").write_text("0 background\n255 vessel\n")
    ids = read_mask(str(tmp_path / "manual.gif"), class_map=read_class_map(tmp_path / "map.txt"))
    assert np.array_equal(ids, shape.astype(np.uint8))


def test_threshold_and_intensity_like_masks(tmp_path):
    soft = (_shape_mask(3) * 200 + 20).astype(np.uint8)
    write_image(tmp_path / "soft.png", soft)
    with pytest.raises(AnnotationError, match="--threshold") as info:
        read_mask(str(tmp_path / "soft.png"))
    assert info.value.path == str(tmp_path / "soft.png")
    assert np.array_equal(read_mask(str(tmp_path / "soft.png"), threshold=127), _shape_mask(3).astype(np.uint8))


def test_colour_masks_need_a_class_map(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:5] = (255, 0, 0)
    rgb[5:10] = (0, 255, 0)
    rgb[20:] = (255, 255, 255)
    write_image(tmp_path / "colour.png", rgb)
    with pytest.raises(AnnotationError, match="class map"):
        read_mask(str(tmp_path / "colour.png"))
    (tmp_path / "classes.txt").write_text("0,0,0 background\n255,0,0 tumour\n0,255,0 oedema\n255,255,255 __ignore__\n")
    cmap = read_class_map(tmp_path / "classes.txt")
    assert cmap.names == ("background", "tumour", "oedema")
    ids = read_mask(str(tmp_path / "colour.png"), class_map=cmap)
    assert ids[0, 0] == 1 and ids[7, 0] == 2 and ids[12, 0] == 0 and ids[22, 0] == 255
    (tmp_path / "partial.txt").write_text("0,0,0 background\n255,0,0 tumour\n")
    with pytest.raises(AnnotationError, match=r"\(0, 255, 0\)"):
        read_mask(str(tmp_path / "colour.png"), class_map=read_class_map(tmp_path / "partial.txt"))


# -- whole conversions ----------------------------------------------------------------------------


def test_busi_style_several_masks_spaces_and_parentheses(tmp_path):
    """Images and masks in one folder: 'benign (1).png', 'benign (1)_mask.png', 'benign (1)_mask_1.png'."""
    folder = tmp_path / "benign"
    for i in (1, 10, 2):
        write_image(folder / f"benign ({i}).png", _image(i, channels=3))
        write_image(folder / f"benign ({i})_mask.png", (_shape_mask(i) * 255).astype(np.uint8))
    second = np.zeros((H, W), np.uint8)
    second[18:22, 24:30] = 255
    write_image(folder / "benign (1)_mask_1.png", second)
    report = data_tools.convert_mask_folder(
        folder, folder, tmp_path / "out", mask_pattern="{stem}_mask*.png", split="train=1"
    )
    assert report.split_counts == {"train": 3}
    records = _records(tmp_path / "out")
    assert sorted(records) == ["benign (1)", "benign (10)", "benign (2)"]
    union = _shape_mask(1) | (second > 0)
    assert np.array_equal(records["benign (1)"][0], union.astype(np.uint8))
    assert np.array_equal(records["benign (10)"][0], _shape_mask(10).astype(np.uint8))
    assert records["benign (1)"][1][schema.KEY_IMAGE_FILENAME] == b"benign (1).png"
    assert schema.read_dataset_info(str(tmp_path / "out")).class_names == ["background", "foreground"]
    assert any("2 mask files combined" in w.message for w in report.warnings)


def test_voc_palette_folder_with_tiff_16bit_images_and_verify(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(4):
        write_image(images / f"slice_{i}.tif", _image(i, dtype=np.uint16))
        ids = np.zeros((H, W), np.uint8)
        ids[_shape_mask(i)] = 1 + i % 3
        ids[0] = 255
        _palette_png(masks / f"slice_{i}.png", ids)
    report = data_tools.convert_mask_folder(images, masks, tmp_path / "out", split="train=0.5,val=0.5", workers=2)
    info = schema.read_dataset_info(str(tmp_path / "out"))
    assert info.image_dtype == "uint16" and info.channels == 1
    assert info.class_names == ["background", "class_1", "class_2", "class_3"]
    assert sum(report.ignore_pixels.values()) == 4 * W
    import tensorflow as tf

    for source_id, (mask, ex) in _records(tmp_path / "out").items():
        assert ex[schema.KEY_IMAGE_FORMAT] == b"png"
        pixels = tf.io.decode_png(ex[schema.KEY_IMAGE_ENCODED], dtype=tf.uint16).numpy()[:, :, 0]
        assert np.array_equal(pixels, _image(int(source_id[-1]), dtype=np.uint16))
        assert mask[0].tolist() == [255] * W
    assert data_tools.verify_dataset(tmp_path / "out").ok


def test_gif_masks_and_rgba_masks_in_a_folder(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(2):
        write_image(images / f"{i:02d}_test.jpg", _image(i, channels=3), quality=90)
        Image.fromarray((_shape_mask(i) * 255).astype(np.uint8)).save(
            (masks.mkdir(exist_ok=True) or masks) / f"{i:02d}_test_manual1.gif"
        )
    report = data_tools.convert_mask_folder(images, masks, tmp_path / "out",
                                            mask_pattern="{stem}_manual1.gif", split="train=1")
    records = _records(tmp_path / "out")
    for i in range(2):
        mask, ex = records[f"{i:02d}_test"]
        assert np.array_equal(mask, _shape_mask(i).astype(np.uint8))
        assert ex[schema.KEY_IMAGE_FORMAT] == b"jpeg"
        assert ex[schema.KEY_IMAGE_ENCODED] == (images / f"{i:02d}_test.jpg").read_bytes()
    assert report.split_counts == {"train": 2}


def test_mask_size_mismatch_is_an_error_naming_the_mask(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_image(images / "a.png", _image(0))
    write_image(masks / "a.png", np.zeros((H + 1, W), np.uint8))
    write_image(images / "b.png", _image(1))
    write_image(masks / "b.png", (_shape_mask(1) * 255).astype(np.uint8))
    with pytest.raises(AnnotationError, match=f"mask is {W}x{H + 1} but the image a.png is {W}x{H}") as info:
        data_tools.convert_mask_folder(images, masks, tmp_path / "out", split="train=1")
    assert info.value.path == str(masks / "a.png")
    assert not (tmp_path / "out").exists()
    report = data_tools.convert_mask_folder(images, masks, tmp_path / "out", split="train=1", on_error="skip")
    assert report.split_counts == {"train": 1} and report.skipped[0].path == str(masks / "a.png")


def test_missing_mask_and_duplicate_ids(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_image(images / "a.png", _image(0))
    write_image(images / "a.tif", _image(0))
    write_image(masks / "a.png", (_shape_mask(0) * 255).astype(np.uint8))
    write_image(images / "lonely.png", _image(2))
    pairs, problems = find_pairs(images, masks)
    assert [p.source_id for p in pairs] == ["a"]
    messages = {pathlib.Path(p.path).name: p.problem for p in problems}
    assert "duplicate id 'a'" in messages["a.tif"] and "no mask file" in messages["lonely.png"]
    with pytest.raises(AnnotationError, match="duplicate id"):
        data_tools.convert_mask_folder(images, masks, tmp_path / "out")


def test_masks2tfrecord_cli_with_class_map(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(3):
        write_image(images / f"case {i}.png", _image(i))
        write_image(masks / f"case {i}.png", (_shape_mask(i) * 128).astype(np.uint8))
    (tmp_path / "map.txt").write_text("# grey level -> class\n0 background\n128 liver\n")
    code = masks2tfrecord_main([str(images), str(masks), str(tmp_path / "out"), "--class-map",
                                str(tmp_path / "map.txt"), "--split", "train=1", "--no-progress", "--preview", "1"])
    assert code == 0
    assert "converted 3 examples (masks)" in capsys.readouterr().out
    info = schema.read_dataset_info(str(tmp_path / "out"))
    assert info.class_names == ["background", "liver"]
    assert info.class_pixel_counts["train"][1] == sum(int(_shape_mask(i).sum()) for i in range(3))
    assert len(list((tmp_path / "out" / "preview").glob("*.png"))) == 1
    assert masks2tfrecord_main(["--verify", str(tmp_path / "out")]) == 0
    assert masks2tfrecord_main([str(images), str(masks), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
