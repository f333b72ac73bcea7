"""Wrong input at a signature fails in the graph with a message saying what was expected."""

from __future__ import annotations

import numpy as np
import pytest

import tensorflow as tf


def _call(loaded, signature, **inputs):
    return loaded.signatures[signature](**inputs)


def test_wrong_dtype_is_refused_by_the_signature(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        _call(loaded, "serving_default", images=tf.zeros([1, 8, 8, 1], tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint16"):
        _call(loaded, "serving_uint16", images=tf.zeros([1, 8, 8, 1], tf.uint8))


@pytest.mark.parametrize("signature,dtype", [("serving_default", tf.uint8), ("serving_uint16", tf.uint16)])
def test_wrong_rank_names_the_expected_shape(loaded, signature, dtype):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _call(loaded, signature, images=tf.zeros([8, 8, 1], dtype))  # no batch axis
    message = str(info.value)
    assert f"{signature}: expected images of shape (batch, height, width, 1)" in message
    assert "Add a batch axis" in message and "[8 8 1]" in message
    assert "convolution" not in message.lower()  # not a crash deep inside the network


def test_wrong_channel_count_is_explained(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _call(loaded, "serving_default", images=tf.zeros([2, 8, 8, 3], tf.uint8))
    message = str(info.value)
    assert "the model takes 1 channel(s)" in message and "[2 8 8 3]" in message


def test_empty_image_is_explained(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="height and width must be at least 1"):
        _call(loaded, "serving_default", images=tf.zeros([1, 0, 8, 1], tf.uint8))


def test_encoded_signature_errors(loaded):
    png = tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8))
    other = tf.io.encode_png(tf.zeros([8, 9, 1], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"1-D batch of encoded PNG/JPEG strings"):
        _call(loaded, "serving_encoded", encoded=tf.reshape(tf.stack([png, png]), [1, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch of encoded images is empty"):
        _call(loaded, "serving_encoded", encoded=tf.constant([], tf.string))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same height and width"):
        _call(loaded, "serving_encoded", encoded=tf.stack([png, other]))
    for junk in (b"not an image at all", b"", b"\x89PN"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="is not a PNG or JPEG file"):
            _call(loaded, "serving_encoded", encoded=tf.constant([png.numpy(), junk]))


def test_a_good_call_after_bad_ones_still_works(loaded):
    out = _call(loaded, "serving_default", images=tf.constant(np.full([1, 8, 8, 1], 9, np.uint8)))
    assert out["mask"].shape == (1, 8, 8)
