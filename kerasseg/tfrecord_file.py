"""The TFRecord file format without TensorFlow: checksums, record framing, a local writer.

A TFRecord file is a run of records, each framed as::

    uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes
    data (length bytes)           | uint32 masked CRC-32C of the data

The converters write their shards with :class:`RecordFileWriter`, so a
conversion never loads TensorFlow (whose import costs seconds of CPU); the
bytes are the ones ``tf.io.TFRecordWriter`` writes (uncompressed).

CRC-32C (Castagnoli) is computed with numpy. A CRC is linear over GF(2), so a
long buffer is cut into many equal lanes whose CRCs are run side by side, one
4-byte word of every lane per step (two lookups in 65536-entry tables), and
the lane CRCs are then merged pairwise: the CRC of ``a + b`` is the CRC of
``a`` advanced over ``len(b)`` zero bytes (a fixed linear map, applied through
byte tables) XOR the CRC of ``b``. About 1 ms for 200 KB; short inputs (the
8-byte length fields) take the plain byte-at-a-time loop.
"""

from __future__ import annotations

import functools
import os
import struct

import numpy as np

_POLYNOMIAL = 0x82F63B78  # CRC-32C, bit-reflected
_MASK_DELTA = 0xA282EAD8
_LANE_WORDS = 16  # 4-byte words per lane in the side-by-side pass
_SHORT = 4096  # inputs shorter than this take the byte loop


@functools.lru_cache(maxsize=1)
def _byte_table() -> tuple[int, ...]:
    """The byte-at-a-time table: the register after one byte ``b`` fed into register ``b``."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLYNOMIAL if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


@functools.lru_cache(maxsize=1)
def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """The register after a 4-byte word XORed into it, from its low and its high 16 bits.

    Built from the slicing-by-4 tables ``T0..T3`` (``T0`` the byte table,
    ``Tk`` the same followed by ``k`` zero bytes).
    """
    t0 = np.array(_byte_table(), dtype=np.uint32)
    t = [t0]
    for _ in range(3):
        t.append((t[-1] >> 8) ^ t0[t[-1] & 0xFF])
    index = np.arange(65536, dtype=np.uint32)
    low = t[3][index & 0xFF] ^ t[2][index >> 8]
    high = t[1][index & 0xFF] ^ t[0][index >> 8]
    return low, high


def _crc_loop(crc: int, data: bytes) -> int:
    table = _byte_table()
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _apply(columns: tuple[int, ...], value: int) -> int:
    """A 32x32 GF(2) matrix (its 32 columns) times ``value``."""
    out = 0
    bit = 0
    while value:
        if value & 1:
            out ^= columns[bit]
        value >>= 1
        bit += 1
    return out


@functools.lru_cache(maxsize=64)
def _zeros_operator(num_bytes: int) -> tuple[int, ...]:
    """Columns of the linear map "advance the register over ``num_bytes`` zero bytes"."""
    if num_bytes == 1:
        table = _byte_table()
        return tuple(table[(1 << bit) & 0xFF] ^ ((1 << bit) >> 8) for bit in range(32))
    half = _zeros_operator(num_bytes // 2)
    squared = tuple(_apply(half, column) for column in half)
    if num_bytes % 2:
        one = _zeros_operator(1)
        squared = tuple(_apply(one, column) for column in squared)
    return squared


@functools.lru_cache(maxsize=64)
def _zeros_tables(num_bytes: int) -> tuple[np.ndarray, ...]:
    """The map of :func:`_zeros_operator` as 4 byte tables (one per byte of the register)."""
    columns = np.array(_zeros_operator(num_bytes), dtype=np.uint32)
    tables = []
    for k in range(4):
        table = np.zeros(1, dtype=np.uint32)
        for bit in range(8):  # table[b] = XOR of the columns of b's set bits
            table = np.concatenate([table, table ^ columns[8 * k + bit]])
        tables.append(table)
    return tuple(tables)


def _crc_lanes(data: bytes, start: int = 0) -> int:
    """The register after ``data`` fed into register ``start`` (no final XOR), side by side in lanes."""
    lane_bytes = 4 * _LANE_WORDS
    lanes = -(-len(data) // lane_bytes)
    # Leading zero bytes leave a zero register unchanged: pad in front to whole lanes.
    buffer = np.zeros(lanes * lane_bytes, dtype=np.uint8)
    first = buffer.size - len(data)
    buffer[first:] = np.frombuffer(data, dtype=np.uint8)
    # Starting from register c equals starting from 0 with c XORed into the first 4 bytes.
    buffer[first:first + 4] ^= np.frombuffer(start.to_bytes(4, "little"), dtype=np.uint8)
    words = np.ascontiguousarray(buffer.view("<u4").reshape(lanes, _LANE_WORDS).T)
    low, high = _word_tables()
    crc = np.zeros(lanes, dtype=np.uint32)
    upper = np.empty(lanes, dtype=np.uint32)
    for word in words:  # indices are < 65536 by construction: "wrap" skips the bounds checks
        crc ^= word
        np.take(high, crc >> 16, out=upper, mode="wrap")
        crc &= 0xFFFF
        crc = np.take(low, crc, mode="wrap")
        crc ^= upper
    span = lane_bytes
    while crc.size > 1:  # merge neighbours: crc(a + b) = zeros_{len(b)}(crc(a)) ^ crc(b)
        if crc.size % 2:  # an all-zero lane in front (leading zeros again) makes the count even
            crc = np.concatenate((np.zeros(1, dtype=np.uint32), crc))
        z0, z1, z2, z3 = _zeros_tables(span)
        a, b = crc[0::2], crc[1::2]
        crc = z0[a & 0xFF] ^ z1[(a >> 8) & 0xFF] ^ z2[(a >> 16) & 0xFF] ^ z3[a >> 24] ^ b
        span *= 2
    return int(crc[0])


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as ``crc32c`` libraries compute it."""
    data = bytes(data) if not isinstance(data, bytes) else data
    if len(data) < _SHORT:
        return _crc_loop(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    return _crc_lanes(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


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
