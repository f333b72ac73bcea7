"""The pixel limit: refuse images too large to decode, from their header alone.

A PNG of 13000x13000 pixels of one colour is 100-200 KB on disk and
500 MB once decoded as RGB; decoders allocate that before anyone can look at
the pixels. Every place that decodes an image a user or client hands us (the
converters, ``predict``, the serving graph) first reads the size from the
file header and refuses it when ``height * width`` exceeds the limit.

The limit
---------
``DEFAULT_MAX_PIXELS`` is 128 megapixels (128,000,000 pixels, e.g.
11313x11313 or 16000x8000). It is sized for a 24 GiB machine with room:

* conversion: one converter worker peaks at about 20-23 bytes per pixel
  (measured on a 6000x6000 RGB PNG, 8- and 16-bit: decoder buffer, pixel
  array, label map, PNG encoders), so 2.6-3 GiB per worker at the limit,
  and two to four workers fit; the first ``--preview N`` images need about
  45 bytes per pixel more for their overlay;
* prediction (tiled): the float32 image (1.5 GiB for 3 channels at the
  limit), the float32 ``(H, W, K)`` probabilities (1 GiB for K = 2) and the
  saved mask, about 3-5 GiB besides the model;
* a whole image through the model at once (the serving graph without
  tiling) costs far more per pixel: 6.5 GB were measured at 8000x8000 with a
  4-filter U-Net, so a serving graph should pass a lower ``limit``.

It is far above medical 2D images (CT/MRI slices, X-rays, endoscopy, most
microscopy fields), and it stops decompression bombs before they allocate.
Whole-slide pathology images are larger: tile them, or raise the limit.

Raise (or lower) it with the environment variable ``KERASSEG_MAX_PIXELS``
(a positive integer number of pixels, e.g. ``KERASSEG_MAX_PIXELS=400000000``);
the converters also take ``--max-pixels N``. Each call site may pass its own
``limit`` to :func:`check_pixels` (the serving graph, for instance, holds the
whole image in the model at once and may use a lower one).

This module has no import-time side effects and imports TensorFlow only
inside :func:`tf_encoded_image_size`.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from kerasseg.errors import PixelLimitError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENV_VAR",
    "PixelLimitError",
    "check_pixels",
    "image_header_size",
    "max_pixels",
    "tf_encoded_image_size",
]

DEFAULT_MAX_PIXELS = 128_000_000
"""128 megapixels: see the module docstring for the sizing."""

ENV_VAR = "KERASSEG_MAX_PIXELS"
"""Environment variable overriding :data:`DEFAULT_MAX_PIXELS`."""

HEADER_BYTES = 1 << 18
"""Bytes of a file that :func:`image_header_size` needs at most for PNG, GIF,
BMP, WebP and JPEG files with ordinary metadata (TIFF may need the whole file)."""


def max_pixels() -> int:
    """The pixel limit in force: ``KERASSEG_MAX_PIXELS`` if set, else :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        PixelLimitError: ``KERASSEG_MAX_PIXELS`` is set but is not a positive integer.
    """
    raw = os.environ.get(ENV_VAR)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise PixelLimitError(
            f"{ENV_VAR}={raw!r} is not a positive integer number of pixels "
            f"(e.g. {ENV_VAR}=400000000); unset it for the default {DEFAULT_MAX_PIXELS}"
        )
    return value


def check_pixels(height: int, width: int, *, source: str, limit: int | None = None) -> None:
    """Refuse an image of ``height x width`` pixels above the limit.

    Args:
        height, width: the image size (from its header, before decoding).
        source: the file or input, named in the message.
        limit: pixels allowed; default :func:`max_pixels`.

    Raises:
        PixelLimitError: ``height * width > limit`` (or a size that is not positive).
    """
    limit = max_pixels() if limit is None else int(limit)
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise PixelLimitError(
            f"image header declares an invalid size {width}x{height} (width x height)",
            source=source, height=height, width=width, limit=limit,
        )
    pixels = height * width
    if pixels > limit:
        raise PixelLimitError(
            f"image is {width}x{height} (width x height) = {pixels:,} pixels, above the limit of "
            f"{limit:,} pixels ({limit / 1e6:g} megapixels); refused before decoding. If the "
            f"machine has the memory (a conversion needs about 25 bytes per pixel), raise the limit with the "
            f"environment variable {ENV_VAR}={pixels} (or the command's --max-pixels option); "
            "else downscale or tile the image",
            source=source, height=height, width=width, limit=limit,
        )


# --------------------------------------------------------------------------- header parsing

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` read from the header of PNG, JPEG, GIF, BMP, TIFF or WebP bytes.

    Pure Python, no decoding: only the first bytes are read (for JPEG, the
    marker segments up to the first start-of-frame; for TIFF, the first image
    file directory, which may lie anywhere in the file).

    Returns:
        ``(height, width)``, or ``None`` when the bytes are not one of these
        formats or the header is truncated or malformed (never raises).
    """
    try:
        data = bytes(data)
        if data.startswith(_PNG_SIGNATURE):
            return _png_size(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _positive(*reversed(struct.unpack_from("<HH", data, 6)))
        if data[:2] == b"BM":
            return _bmp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _positive(height: int, width: int) -> tuple[int, int] | None:
    return (int(height), int(width)) if height > 0 and width > 0 else None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return _positive(height, width)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    n = len(data)
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return None  # not at a marker: corrupt
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return _positive(height, width)  # height 0 (size in a DNL marker) -> None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            return None
        pos += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    else:  # BITMAPINFOHEADER and later: signed 32-bit, negative height = top-down rows
        width, height = struct.unpack_from("<ii", data, 18)
        height = abs(height)
    return _positive(height, width)


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    endian = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        (offset,) = struct.unpack_from(endian + "Q", data, 8)
        (count,) = struct.unpack_from(endian + "Q", data, offset)
        entry_at, entry_size = offset + 8, 20
    else:
        (offset,) = struct.unpack_from(endian + "I", data, 4)
        (count,) = struct.unpack_from(endian + "H", data, offset)
        entry_at, entry_size = offset + 2, 12
    found: dict[int, int] = {}
    for i in range(min(count, 4096)):
        at = entry_at + i * entry_size
        tag, kind = struct.unpack_from(endian + "HH", data, at)
        if tag not in (256, 257):  # ImageWidth, ImageLength
            continue
        value_at = at + (12 if big else 8)
        if kind == 3:  # SHORT
            (value,) = struct.unpack_from(endian + "H", data, value_at)
        elif kind == 4:  # LONG
            (value,) = struct.unpack_from(endian + "I", data, value_at)
        elif kind == 16 and big:  # LONG8
            (value,) = struct.unpack_from(endian + "Q", data, value_at)
        else:
            return None
        found[tag] = value
        if len(found) == 2:
            return _positive(found[257], found[256])
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return _positive(height & 0x3FFF, width & 0x3FFF)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        b0, b1, b2, b3 = data[21:25]
        width = 1 + (((b1 & 0x3F) << 8) | b0)
        height = 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
        return _positive(height, width)
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return _positive(height, width)
    return None


# --------------------------------------------------------------------------- TensorFlow graph


def tf_encoded_image_size(data: Any) -> Any:
    """Image size read from encoded bytes inside a TensorFlow graph, before decoding.

    Reads the PNG ``IHDR``, the JPEG start-of-frame segment (walking the
    marker segments before it with a bounded ``tf.while_loop``), the GIF
    logical screen, the BMP info header and the WebP ``VP8``/``VP8L``/``VP8X``
    header with ``tf.strings`` ops, so a serving signature can refuse a huge
    image (``tf.debugging.assert_less_equal`` on the product) before
    ``tf.io.decode_image`` allocates it.

    Args:
        data: scalar ``tf.string`` tensor, the encoded image (for a batch of
            strings use ``tf.map_fn(tf_encoded_image_size, batch, fn_output_signature=tf.int32)``).

    Returns:
        int32 ``[height, width]``; ``[-1, -1]`` when the bytes are none of these
        formats or the header is truncated or malformed (refuse those too:
        they cannot be sized, and JPEG XL is not read here). Sizes above
        ``2**31 - 1`` are clipped to it.
    """
    import tensorflow as tf

    data = tf.convert_to_tensor(data, dtype=tf.string)
    length = tf.strings.length(data)
    unknown = tf.constant([-1, -1], tf.int32)

    def piece(pos, size):
        """``size`` bytes from ``pos``; fewer (or none) past the end, never an error."""
        start = tf.minimum(tf.cast(pos, tf.int32), length)
        return tf.strings.substr(data, start, size)

    def uint(pos, size, *, big_endian: bool):
        """Unsigned integer of ``size`` bytes at ``pos`` as int64 (missing bytes read as 0)."""
        values = tf.cast(tf.io.decode_raw(piece(pos, size), tf.uint8, fixed_length=size), tf.int64)
        shifts = tf.constant([8 * (size - 1 - i) if big_endian else 8 * i for i in range(size)], tf.int64)
        return tf.reduce_sum(tf.bitwise.left_shift(values, shifts))

    def byte_at(pos):
        return uint(pos, 1, big_endian=True)

    def result(height, width):
        height = tf.cast(height, tf.int64)
        width = tf.cast(width, tf.int64)
        ok = tf.logical_and(height > 0, width > 0)
        size = tf.cast(tf.minimum(tf.stack([height, width]), 2**31 - 1), tf.int32)
        return tf.where(ok, size, unknown)

    def head(n):
        return piece(0, n)

    def png():
        ok = tf.logical_and(length >= 24, tf.equal(piece(12, 4), b"IHDR"))
        return tf.cond(ok, lambda: result(uint(20, 4, big_endian=True), uint(16, 4, big_endian=True)), lambda: unknown)

    def gif():
        return tf.cond(
            length >= 10,
            lambda: result(uint(8, 2, big_endian=False), uint(6, 2, big_endian=False)),
            lambda: unknown,
        )

    def bmp():
        def sizes():
            header = uint(14, 4, big_endian=False)
            core = tf.equal(header, 12)
            w16, h16 = uint(18, 2, big_endian=False), uint(20, 2, big_endian=False)
            w32, h32 = uint(18, 4, big_endian=False), uint(22, 4, big_endian=False)
            # signed 32-bit: a negative height means top-down rows
            w32 = tf.where(w32 >= 2**31, w32 - 2**32, w32)
            h32 = tf.abs(tf.where(h32 >= 2**31, h32 - 2**32, h32))
            return result(tf.where(core, h16, h32), tf.where(core, w16, w32))

        return tf.cond(length >= 26, sizes, lambda: unknown)

    def webp():
        chunk = piece(12, 4)

        def vp8():
            ok = tf.logical_and(length >= 30, tf.equal(piece(23, 3), b"\x9d\x01\x2a"))
            return tf.cond(
                ok,
                lambda: result(
                    tf.bitwise.bitwise_and(uint(28, 2, big_endian=False), 0x3FFF),
                    tf.bitwise.bitwise_and(uint(26, 2, big_endian=False), 0x3FFF),
                ),
                lambda: unknown,
            )

        def vp8l():
            def sizes():
                b0, b1, b2, b3 = (byte_at(21 + i) for i in range(4))
                width = 1 + tf.bitwise.bitwise_or(tf.bitwise.left_shift(tf.bitwise.bitwise_and(b1, 0x3F), 8), b0)
                height = 1 + tf.bitwise.bitwise_or(
                    tf.bitwise.bitwise_or(
                        tf.bitwise.left_shift(tf.bitwise.bitwise_and(b3, 0x0F), 10), tf.bitwise.left_shift(b2, 2)
                    ),
                    tf.bitwise.right_shift(tf.bitwise.bitwise_and(b1, 0xC0), 6),
                )
                return result(height, width)

            ok = tf.logical_and(length >= 25, tf.equal(byte_at(20), 0x2F))
            return tf.cond(ok, sizes, lambda: unknown)

        def vp8x():
            return tf.cond(
                length >= 30,
                lambda: result(1 + uint(27, 3, big_endian=False), 1 + uint(24, 3, big_endian=False)),
                lambda: unknown,
            )

        return tf.case(
            [(tf.equal(chunk, b"VP8 "), vp8), (tf.equal(chunk, b"VP8L"), vp8l), (tf.equal(chunk, b"VP8X"), vp8x)],
            default=lambda: unknown,
        )

    def jpeg():
        n = tf.cast(length, tf.int64)
        sof = tf.constant(sorted(_JPEG_SOF), tf.int64)
        standalone = tf.constant(sorted(_JPEG_STANDALONE), tf.int64)

        # state: position, done flag, height, width
        def cond(pos, done, height, width):
            return tf.logical_and(tf.logical_not(done), pos + 1 < n)

        def body(pos, done, height, width):
            lead = byte_at(pos)
            marker = byte_at(pos + 1)
            is_sof = tf.reduce_any(tf.equal(marker, sof))
            is_standalone = tf.reduce_any(tf.equal(marker, standalone))
            corrupt = tf.logical_or(
                tf.not_equal(lead, 0xFF), tf.logical_or(tf.equal(marker, 0xD9), tf.equal(marker, 0xDA))
            )
            frame_ok = pos + 9 <= n
            seg_length = uint(pos + 2, 2, big_endian=True)
            found = tf.logical_and(tf.logical_and(is_sof, frame_ok), tf.logical_not(corrupt))
            new_height = tf.where(found, uint(pos + 5, 2, big_endian=True), height)
            new_width = tf.where(found, uint(pos + 7, 2, big_endian=True), width)
            bad_length = tf.logical_and(
                tf.logical_not(tf.logical_or(is_standalone, tf.equal(marker, 0xFF))), seg_length < 2
            )
            stop = tf.logical_or(
                tf.logical_or(found, corrupt), tf.logical_or(bad_length, tf.logical_and(is_sof, tf.logical_not(frame_ok)))
            )
            step = tf.where(
                tf.equal(marker, 0xFF),
                tf.constant(1, tf.int64),
                tf.where(is_standalone, tf.constant(2, tf.int64), 2 + seg_length),
            )
            return pos + step, stop, new_height, new_width

        start = (tf.constant(2, tf.int64), tf.constant(False), tf.constant(-1, tf.int64), tf.constant(-1, tf.int64))
        _, _, height, width = tf.while_loop(cond, body, start, maximum_iterations=65536)
        return result(height, width)

    is_png = tf.equal(head(8), _PNG_SIGNATURE)
    is_jpeg = tf.equal(head(2), b"\xff\xd8")
    is_gif = tf.logical_or(tf.equal(head(6), b"GIF87a"), tf.equal(head(6), b"GIF89a"))
    is_bmp = tf.equal(head(2), b"BM")
    is_webp = tf.logical_and(tf.equal(head(4), b"RIFF"), tf.equal(piece(8, 4), b"WEBP"))
    return tf.case(
        [(is_png, png), (is_jpeg, jpeg), (is_gif, gif), (is_bmp, bmp), (is_webp, webp)],
        default=lambda: unknown,
        exclusive=False,
    )
