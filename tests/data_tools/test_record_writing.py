"""Records written without TensorFlow: CRC-32C, TFRecord framing and Example bytes
equal TensorFlow's own, and a conversion never imports TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from data_tools_helpers import small_labelme_folder
from kerasseg import example_proto, schema, tfrecord_file
from kerasseg_testing import REPO_ROOT


def _bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("data, expected", [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 test vectors
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_values(data, expected):
    assert tfrecord_file.crc32c(data) == expected


def test_crc32c_takes_any_bytes_like():
    data = _bytes(100003, seed=1)
    assert tfrecord_file.crc32c(bytearray(data)) == tfrecord_file.crc32c(memoryview(data)) == tfrecord_file.crc32c(data)


def test_record_file_matches_tensorflows_writer(tmp_path):
    import tensorflow as tf

    records = [b"", b"x", _bytes(5000, 1), _bytes(300_000, 2), b"abc" * 2000]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    with tfrecord_file.RecordFileWriter(tmp_path / "ours.tfrecord") as writer:
        for i, record in enumerate(records):
            if i % 2:
                writer.write(tfrecord_file.frame_record(record), framed=True)
            else:
                writer.write(record)
    ours = (tmp_path / "ours.tfrecord").read_bytes()
    assert ours == (tmp_path / "tf.tfrecord").read_bytes()
    # TensorFlow checks every data checksum when it reads
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))] == records
    assert schema.count_records(str(tmp_path / "ours.tfrecord")) == len(records)


def _tf_example(features) -> bytes:
    import tensorflow as tf

    feature = {
        key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value])) if isinstance(value, bytes)
        else tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        for key, value in features.items()
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


@pytest.mark.parametrize("features", [
    {},
    {"a": b""},
    {"z": 0, "a": -1, "m": 2**63 - 1, "n": -(2**63), "k": 300},
    {"image/encoded": _bytes(300_000), "image/height": 512, "image/format": b"png", "é/ü": b"x" * 200,
     "B": b"\x00", "image/segmentation/class/encoded": _bytes(129, 3)},
])
def test_example_bytes_equal_tensorflows_deterministic_serialization(features):
    assert example_proto.encode_example(features) == _tf_example(features)


def test_example_refuses_other_value_types():
    for value in (True, 1.5, "text", [1]):
        with pytest.raises(TypeError):
            example_proto.encode_example({"key": value})


def test_schema_example_reads_back_with_tensorflow():
    import tensorflow as tf

    serialized = schema.encode_example(
        image_bytes=b"\x89PNG...", image_format="png", height=3, width=4, channels=1, mask_png=b"mask",
        filename="sub/ä.png", source_id="sub/ä", roi_png=b"roi",
    )
    spec = dict(schema.feature_spec(), **{schema.KEY_ROI_ENCODED: tf.io.FixedLenFeature([], tf.string)})
    parsed = tf.io.parse_single_example(serialized, spec)
    assert parsed[schema.KEY_IMAGE_HEIGHT].numpy() == 3 and parsed[schema.KEY_IMAGE_WIDTH].numpy() == 4
    assert parsed[schema.KEY_IMAGE_FILENAME].numpy().decode() == "sub/ä.png"
    assert parsed[schema.KEY_ROI_ENCODED].numpy() == b"roi"
    assert tf.train.Example.FromString(serialized).SerializeToString(deterministic=True) == serialized


def test_labelme_conversion_and_append_never_import_tensorflow(tmp_path):
    source = small_labelme_folder(tmp_path / "src", n=4)
    more = small_labelme_folder(tmp_path / "src2" / "more", n=3)
    out = str(tmp_path / "out")
    code = (
        "import sys\n"
        "from data_tools.cli import labelme2tfrecord_main\n"
        f"status = labelme2tfrecord_main([{str(source)!r}, {out!r}, '--workers', '2', '--no-progress'])\n"
        "assert status == 0, status\n"
        f"status = labelme2tfrecord_main([{str(more.parent)!r}, {out!r}, '--append', '--split', 'test', "
        f"'--labels', {str(more / 'labels.txt')!r}, '--workers', '2', '--no-progress'])\n"
        "assert status == 0, status\n"
        "assert 'tensorflow' not in sys.modules, 'the converter imported TensorFlow'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    info = schema.read_dataset_info(out)
    assert info.splits["test"] == 3 and sum(info.splits.values()) == 7
