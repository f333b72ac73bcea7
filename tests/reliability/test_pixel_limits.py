"""Pixel limit (issue 20 row 4): sizes read from file headers in pure Python and in a
TensorFlow graph, and converters that refuse huge images before decoding them."""

from __future__ import annotations

import base64
import io
import json
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

import data_tools
from data_tools.errors import AnnotationError
from data_tools.images import decode_image
from data_tools.labelme import load_labelme_json
from data_tools.masks import read_mask
from kerasseg import image_limits
from kerasseg.image_limits import (
    DEFAULT_MAX_PIXELS,
    PixelLimitError,
    check_pixels,
    image_header_size,
    max_pixels,
    tf_encoded_image_size,
)
from reliability_helpers import header_only_png, huge_png, labelme_json, peak_rss_mb, png_bytes, run_cli, write_png

HEIGHT, WIDTH = 37, 53


def _pillow(array: np.ndarray, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **save)
    return buf.getvalue()


def _encoded_images() -> dict[str, bytes]:
    """The same odd-sized picture in every format and variant the readers must handle."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    grey = rgb[:, :, 0]
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png_rgb": _pillow(rgb, "PNG"),
        "png_grey16_cv2": cv2.imencode(".png", (grey.astype(np.uint16) * 257))[1].tobytes(),
        "jpeg_baseline": _pillow(rgb, "JPEG", quality=90),
        "jpeg_progressive_exif": _pillow(rgb, "JPEG", progressive=True, exif=exif.tobytes()),
        "jpeg_grey_cv2": cv2.imencode(".jpg", grey)[1].tobytes(),
        "gif": _pillow(rgb, "GIF"),
        "bmp_rgb": _pillow(rgb, "BMP"),
        "bmp_grey": _pillow(grey, "BMP"),
        "bmp_cv2": cv2.imencode(".bmp", rgb)[1].tobytes(),
        "tiff_pillow": _pillow(rgb, "TIFF"),
        "tiff_deflate": _pillow(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff_cv2": cv2.imencode(".tiff", rgb)[1].tobytes(),
        "webp_lossy": _pillow(rgb, "WEBP", quality=80),
        "webp_lossless": _pillow(rgb, "WEBP", lossless=True),
    }


ENCODED = _encoded_images()
TF_FORMATS = [k for k in ENCODED if not k.startswith("tiff")]  # tf.io.decode_image reads no TIFF


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_header_size_matches_the_decoded_size(name):
    data = ENCODED[name]
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.shape[:2] == (HEIGHT, WIDTH)
    assert image_header_size(data) == (HEIGHT, WIDTH)


def test_header_size_reads_big_tiff_and_big_sizes_without_decoding():
    big = _pillow(np.zeros((HEIGHT, WIDTH, 3), np.uint8), "TIFF", big_tiff=True)
    assert big[:4] == b"II+\x00"
    assert image_header_size(big) == (HEIGHT, WIDTH)
    assert image_header_size(header_only_png(13000, 13000)) == (13000, 13000)


def test_header_size_of_damaged_or_foreign_bytes_is_none_never_an_error():
    for data in ENCODED.values():
        for cut in range(0, min(len(data), 64)):
            size = image_header_size(data[:cut])
            assert size is None or size == (HEIGHT, WIDTH)
    for junk in (b"", b"hello", b"\x00" * 100, b"\xff\xd8" + b"\xff\xe0\x00\x01" * 10, b"BM" + b"\x00" * 10):
        assert image_header_size(junk) is None


@pytest.fixture(scope="module")
def tf_size():
    import tensorflow as tf

    return tf.function(tf_encoded_image_size, input_signature=[tf.TensorSpec([], tf.string)])


@pytest.mark.parametrize("name", TF_FORMATS)
def test_tf_encoded_image_size_matches_tensorflow_decoding(tf_size, name):
    import tensorflow as tf

    data = ENCODED[name]
    decoded = tf.io.decode_image(data, expand_animations=False)
    assert tuple(decoded.shape[:2]) == (HEIGHT, WIDTH)
    size = tf_size(tf.constant(data)).numpy()
    assert size.dtype == np.int32 and size.tolist() == [HEIGHT, WIDTH]


def test_tf_encoded_image_size_of_huge_and_damaged_inputs(tf_size):
    import tensorflow as tf

    assert tf_size(tf.constant(header_only_png(20000, 20000))).numpy().tolist() == [20000, 20000]
    for data in (b"", b"\x89PNG", ENCODED["jpeg_baseline"][:40], ENCODED["tiff_pillow"], b"GIF8", b"x" * 50):
        assert tf_size(tf.constant(data)).numpy().tolist() == [-1, -1]
    batch = tf.constant([ENCODED["png_rgb"], ENCODED["jpeg_baseline"]])
    sizes = tf.map_fn(tf_encoded_image_size, batch, fn_output_signature=tf.int32)
    assert sizes.numpy().tolist() == [[HEIGHT, WIDTH], [HEIGHT, WIDTH]]


def test_limit_default_environment_override_and_message(monkeypatch):
    monkeypatch.delenv(image_limits.ENV_VAR, raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS == 128_000_000
    monkeypatch.setenv(image_limits.ENV_VAR, "400_000_000")
    assert max_pixels() == 400_000_000
    for bad in ("lots", "-5", "0", "1.5e8"):
        monkeypatch.setenv(image_limits.ENV_VAR, bad)
        with pytest.raises(PixelLimitError, match=image_limits.ENV_VAR):
            max_pixels()
    monkeypatch.delenv(image_limits.ENV_VAR)
    check_pixels(8000, 16000, source="ok.png")  # exactly at the limit
    with pytest.raises(PixelLimitError) as info:
        check_pixels(13000, 13000, source="scan.png")
    message = str(info.value)
    for part in ("scan.png", "13000x13000", "169,000,000", "128,000,000", "KERASSEG_MAX_PIXELS=169000000"):
        assert part in message
    assert isinstance(info.value, ValueError) and info.value.limit == DEFAULT_MAX_PIXELS


def test_decoders_read_the_header_first():
    """A header that declares 13000x13000 over garbage pixels: the error is the size, so
    nothing was decoded (decoding would have failed on the garbage instead)."""
    bomb = header_only_png(13000, 13000)
    with pytest.raises(AnnotationError, match="above the limit") as info:
        decode_image(bomb, path="bomb.png")
    assert info.value.path == "bomb.png"
    small = png_bytes(np.zeros((40, 40), np.uint8))
    with pytest.raises(AnnotationError, match="1,600 pixels, above the limit of 1,000"):
        decode_image(small, path="small.png", max_pixels=1000)
    assert decode_image(small, path="small.png", max_pixels=1600).height == 40


def test_masks2tfrecord_refuses_a_small_on_disk_huge_png_quickly_without_decoding(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    huge = huge_png(images / "bomb.png", 13000, 13000)
    assert huge.stat().st_size < 1_000_000  # about 500 KB on disk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert Image.open(huge).size == (13000, 13000)  # a valid PNG (Pillow reads its header only)
    huge_png(masks / "bomb.png", 13000, 13000, colour=False)
    result = run_cli("data_tools.cli:masks2tfrecord_main", [str(images), str(masks), str(tmp_path / "out"),
                     "--no-progress"], report_peak_rss=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "bomb.png" in result.stderr and "13000x13000" in result.stderr
    assert "128,000,000" in result.stderr and "KERASSEG_MAX_PIXELS" in result.stderr
    assert "Traceback" not in result.stderr
    # decoding the RGB image alone would take 507 MB (and importing TensorFlow more)
    assert peak_rss_mb(result) < 300
    assert not (tmp_path / "out").exists()


def test_labelme_images_embedded_data_and_mask_shapes_are_checked_before_decoding(tmp_path):
    src = tmp_path / "src"
    labelme_json(src, "fine")
    (src / "labels.txt").write_text("__ignore__\n_background_\na\n")
    (src / "bomb.png").write_bytes(header_only_png(13000, 13000))
    labelme_json(src, "file_bomb", image_path="bomb.png", size=(13000, 13000))
    labelme_json(src, "embedded_bomb", image_data=header_only_png(12000, 12000), size=(12000, 12000))
    small_bitmap = base64.b64encode(png_bytes(np.ones((4, 4), np.uint8) * 255)).decode()
    box_bomb = {"label": "a", "shape_type": "mask", "points": [[0, 0], [14999, 14999]], "mask": small_bitmap}
    labelme_json(src, "mask_box_bomb", shapes=[box_bomb])
    bitmap_bomb = {"label": "a", "shape_type": "mask", "points": [[0, 0], [9, 9]],  # a 10x10 box
                   "mask": base64.b64encode(header_only_png(13000, 13000)).decode()}
    labelme_json(src, "mask_bitmap_bomb", shapes=[bitmap_bomb])
    with pytest.raises(AnnotationError, match="mask box: image is 15000x15000"):
        load_labelme_json(src / "mask_box_bomb.json")
    with pytest.raises(AnnotationError, match="'mask' bitmap: image is 13000x13000"):
        load_labelme_json(src / "mask_bitmap_bomb.json")  # its header, before the box mismatch is found
    report = data_tools.convert_labelme(src, tmp_path / "out", on_error="skip", split="train=1")
    assert report.split_counts == {"train": 1}
    skipped = {note.path.rsplit("/", 1)[-1]: note.message for note in report.skipped}
    assert set(skipped) == {"bomb.png", "embedded_bomb.json", "mask_box_bomb.json", "mask_bitmap_bomb.json"}
    assert all("above the limit" in message for message in skipped.values())


def test_the_limit_is_configurable_per_run(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_png(images / "a.png", np.zeros((40, 50), np.uint8))
    write_png(masks / "a.png", np.zeros((40, 50), np.uint8))
    with pytest.raises(AnnotationError, match="2,000 pixels, above the limit of 1,999"):
        data_tools.convert_mask_folder(images, masks, tmp_path / "out", max_pixels=1999)
    assert data_tools.convert_mask_folder(images, masks, tmp_path / "out", max_pixels=2000,
                                          split="train=1").split_counts == {"train": 1}
    with pytest.raises(AnnotationError, match="above the limit"):
        read_mask(str(masks / "a.png"), max_pixels=100)
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["splits"] == {"train": 1}


# ----------------------------------------------------------------------------- predict and serving


def _tiny_model(tmp_path):
    import keras

    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(inputs)
    path = tmp_path / "model.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_predict_refuses_a_small_on_disk_huge_png_before_decoding(tmp_path):
    model = _tiny_model(tmp_path)
    huge = huge_png(tmp_path / "in" / "bomb.png", 13000, 13000, colour=False)
    result = run_cli("kerasseg.cli:main", ["predict", "--model", str(model), str(huge),
                                            "--out", str(tmp_path / "out")], report_peak_rss=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "bomb.png" in result.stderr and "13000x13000" in result.stderr and "KERASSEG_MAX_PIXELS" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("*"))
    # TensorFlow and Keras alone take about 600 MB here; decoding would add 169 MB more and the
    # model's float32 input and probabilities about 2 GB
    assert peak_rss_mb(result) < 1200


def test_serving_graph_refuses_oversized_images_before_decoding(tmp_path):
    import keras
    import tensorflow as tf

    from kerasseg.export import build_serving_module

    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
    module = build_serving_module(model, class_names=["bg", "fg"], normalization={"method": "zscore"},
                                  max_pixels=10_000)
    assert module.info["max_pixels"] == 10_000
    ok = module.serve_uint8(tf.zeros([1, 100, 100, 1], tf.uint8))
    assert ok["mask"].shape == (1, 100, 100)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 10000 pixels"):
        module.serve_uint8(tf.zeros([1, 101, 100, 1], tf.uint8))
    # an 8000x8000 PNG of a few KB: refused from its header, nothing decoded (a decode of
    # header_only_png would fail with a decoding error instead)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 10000 pixels is refused before decoding"):
        module.serve_encoded(tf.constant([header_only_png(8000, 8000)]))
    small = png_bytes(np.zeros((50, 60), np.uint8))
    assert module.serve_encoded(tf.constant([small]))["mask"].shape == (1, 50, 60)
