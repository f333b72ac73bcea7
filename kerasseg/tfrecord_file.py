"""The TFRecord file format without TensorFlow: checksums, record framing, a local writer.

A TFRecord file is a run of records, each framed as::

    uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes
    data (length bytes)           | uint32 masked CRC-32C of the data

The converters write their shards with :class:`RecordFileWriter`, so a
conversion never loads TensorFlow (whose import costs seconds of CPU); the
bytes are the ones ``tf.io.TFRecordWriter`` writes (uncompressed).

CRC-32C (Castagnoli) comes from ``google-crc32c`` (hardware CRC instructions
where the CPU has them): microseconds for a 200 KB record.
"""

from __future__ import annotations

import os
import struct

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data`` (bytes-like)."""
    return google_crc32c.value(data if isinstance(data, bytes) else bytes(data))


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data`` (rotated right by 15 bits, plus a constant)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord record (length, its checksum, data, its checksum)."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), data,
                     struct.pack("<I", masked_crc32c(data))))


class RecordFileWriter:
    """Write framed records to a new local file (what ``tf.io.TFRecordWriter`` writes, uncompressed).

    ``write`` takes either raw record data or, with ``framed=True``, bytes
    already framed by :func:`frame_record` (so workers can do the checksums).
    Write errors are the ``OSError`` of the file system (disk full, file too
    large, permissions), naming this file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "wb")

    def write(self, record: bytes, *, framed: bool = False) -> None:
        try:
            self._file.write(record if framed else frame_record(record))
        except OSError as e:
            raise self._named(e) from e

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as e:
                raise self._named(e) from e

    def _named(self, error: OSError) -> OSError:
        return error if error.filename else OSError(error.errno, error.strerror or str(error), self.path)

    def __enter__(self) -> "RecordFileWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RecordFileWriter", "crc32c", "frame_record", "masked_crc32c"]
