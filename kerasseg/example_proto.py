"""Serialize a ``tf.train.Example`` of bytes and int64 features without TensorFlow.

The wire format of the three messages involved (``tensorflow/core/example``)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   // entries: key = 1, value = 2
    Feature  { BytesList bytes_list = 1; Int64List int64_list = 3; ... }
    BytesList { repeated bytes value = 1; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Map entries are written in sorted key order, as protobuf's deterministic
serialization does, so the bytes equal
``tf.train.Example(...).SerializeToString(deterministic=True)`` (checked by
the tests against TensorFlow) and never depend on the process.
"""

from __future__ import annotations

from typing import Mapping

_LEN = 2  # wire type of length-delimited fields


def _varint(value: int) -> bytes:
    if value < 0:  # int64: two's complement in 10 bytes
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _wrap(number: int, parts: list[bytes], length: int) -> tuple[list[bytes], int]:
    """``parts`` (``length`` bytes in all) as the payload of length-delimited field ``number``."""
    header = _varint(number << 3 | _LEN) + _varint(length)
    return [header, *parts], length + len(header)


def _feature(value: bytes | int) -> tuple[list[bytes], int]:
    if isinstance(value, bool) or not isinstance(value, (bytes, int)):
        raise TypeError(f"a feature value must be bytes or int, got {type(value).__name__}")
    if isinstance(value, bytes):
        return _wrap(1, *_wrap(1, [value], len(value)))  # bytes_list { value: [value] }
    packed = _varint(value)
    return _wrap(3, *_wrap(1, [packed], len(packed)))  # int64_list { value: [value] } (packed)


def encode_example(features: Mapping[str, bytes | int]) -> bytes:
    """Serialized ``tf.train.Example`` with one value per feature (``bytes`` or ``int``), keys sorted.

    The parts are joined once at the end, so a large image is copied once.
    """
    entries: list[bytes] = []
    total = 0
    for key in sorted(features, key=lambda k: k.encode("utf-8")):
        name = key.encode("utf-8")
        key_parts, key_length = _wrap(1, [name], len(name))
        value_parts, value_length = _wrap(2, *_feature(features[key]))
        entry, length = _wrap(1, key_parts + value_parts, key_length + value_length)
        entries += entry
        total += length
    parts, _ = _wrap(1, entries, total)
    return b"".join(parts)


__all__ = ["encode_example"]
