"""Decode source images and choose the bytes that go into the records.

Rules (see the schema in ``kerasseg/schema.py``):

* PNG and JPEG files whose pixels TensorFlow decodes to the same values are
  stored byte for byte (a JPEG is never re-encoded);
* anything else (TIFF, BMP, GIF, palette or alpha PNGs, EXIF-rotated files) is
  stored as a lossless PNG of the pixels we decoded;
* grayscale stays 1 channel, colour becomes 3 channels (alpha dropped, and
  the caller reports it), 16-bit stays 16-bit;
* EXIF orientation is applied the way labelme applies it when it opens an
  image file, so annotations drawn in labelme line up with the pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from typing import Iterator

import numpy as np

from data_tools.errors import AnnotationError

EXIF_ORIENTATION_TAG = 0x0112

# EXIF orientation -> sequence of PIL transpose operations (applied in order),
# the same geometric result as labelme's ``apply_exif_orientation``.
_ORIENTATION_OPS = {
    2: ("FLIP_LEFT_RIGHT",),
    3: ("ROTATE_180",),
    4: ("FLIP_TOP_BOTTOM",),
    5: ("ROTATE_270", "FLIP_LEFT_RIGHT"),
    6: ("ROTATE_270",),
    7: ("ROTATE_90", "FLIP_LEFT_RIGHT"),
    8: ("ROTATE_90",),
}


@dataclasses.dataclass
class DecodedImage:
    """An image ready for a record.

    Attributes:
        pixels: ``(H, W, C)`` uint8 or uint16 array, C in {1, 3}, as TF will decode it.
        encoded: the bytes to store (original or lossless PNG).
        format: ``"png"`` or ``"jpeg"``.
        notes: what was changed (alpha dropped, EXIF applied, re-encoded...).
    """

    pixels: np.ndarray
    encoded: bytes
    format: str
    notes: list[str]

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def dtype(self) -> str:
        return str(self.pixels.dtype)


def check_header_pixels(data: bytes, *, path: str, max_pixels: int | None = None, what: str = "image") -> None:
    """Refuse ``data`` when its header declares more pixels than the limit (nothing is decoded).

    Bytes whose header cannot be read pass here; :func:`open_image` checks
    them again once Pillow has read their header.

    Raises:
        AnnotationError: naming ``path``, the size, the limit and how to raise it.
    """
    from kerasseg.image_limits import image_header_size

    size = image_header_size(data)
    if size is not None:
        _check_pixels(size[0], size[1], path=path, max_pixels=max_pixels, what=what)


def check_file_pixels(path: str, *, max_pixels: int | None = None) -> None:
    """:func:`check_header_pixels` on the first bytes of an image file (cheap, for early checks).

    Unreadable files pass here: reading them later reports the problem.
    """
    from kerasseg.image_limits import HEADER_BYTES

    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError:
        return
    check_header_pixels(head, path=path, max_pixels=max_pixels)


def _check_pixels(height: int, width: int, *, path: str, max_pixels: int | None, what: str) -> None:
    from kerasseg.image_limits import PixelLimitError, check_pixels

    try:
        check_pixels(height, width, source=path, limit=max_pixels)
    except PixelLimitError as e:
        problem = e.problem if what == "image" else f"{what}: {e.problem}"
        raise AnnotationError(path, problem) from None


@contextlib.contextmanager
def _pillow_limit(limit: int) -> Iterator[None]:
    """Pillow's own decompression-bomb limit set to ours while an image is opened.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and refuses above twice that; we
    check the size ourselves, so its warning is silenced and its refusal kept
    as a second line of defence. (A process-wide Pillow setting, restored after.)
    """
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def open_image(data: bytes, *, path: str, max_pixels: int | None = None, what: str = "image"):
    """Open and load ``data`` with Pillow after checking its size against the pixel limit.

    The size is read from the header first (:func:`check_header_pixels`),
    then from Pillow's header parse (``Image.open`` reads no pixels), and only
    then are the pixels decoded.

    Args:
        data: encoded image bytes.
        path: the file named in errors.
        max_pixels: pixel limit; default :func:`kerasseg.image_limits.max_pixels`.
        what: what the bytes are, prefixed to problems (e.g. ``"imageData"``).

    Returns:
        The loaded ``PIL.Image.Image``.

    Raises:
        AnnotationError: too many pixels, not an image, or truncated.
    """
    from PIL import Image, UnidentifiedImageError

    from kerasseg.image_limits import max_pixels as default_limit

    limit = default_limit() if max_pixels is None else int(max_pixels)
    check_header_pixels(data, path=path, max_pixels=limit, what=what)
    label = "image" if what == "image" else what
    with _pillow_limit(limit):
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise AnnotationError(path, f"{label}: too many pixels ({e}); refused before decoding") from e
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise AnnotationError(path, f"not a readable {label} ({type(e).__name__}: {e})") from e
        _check_pixels(img.size[1], img.size[0], path=path, max_pixels=limit, what=what)
        try:
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise AnnotationError(path, f"not a readable {label} ({type(e).__name__}: {e})") from e
    return img


def decode_image(
    data: bytes, *, path: str, apply_exif: bool = True, max_pixels: int | None = None
) -> DecodedImage:
    """Decode ``data`` (the bytes of an image file) into :class:`DecodedImage`.

    Args:
        data: encoded image bytes (PNG, JPEG, TIFF, BMP, GIF, ...).
        path: the file the bytes come from, for messages.
        apply_exif: rotate/flip by the EXIF orientation tag (labelme does this
            for image files, not for embedded ``imageData``).
        max_pixels: pixel limit checked from the header before decoding;
            default :func:`kerasseg.image_limits.max_pixels`.

    Raises:
        AnnotationError: too many pixels, not an image, truncated, or an
            unsupported pixel type.
    """
    notes: list[str] = []
    img = open_image(data, path=path, max_pixels=max_pixels)
    source_format = (img.format or "").upper()
    orientation = 1
    if apply_exif:
        try:
            orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
        except Exception:  # corrupt EXIF blocks must not stop a conversion
            orientation = 1
        if orientation not in _ORIENTATION_OPS:
            orientation = 1

    pixels, keep_original = _pixels(img, data, source_format, path, notes)
    if orientation != 1:
        pixels = apply_orientation(pixels, orientation)
        notes.append(f"EXIF orientation {orientation} applied (stored as PNG, lossless)")
        keep_original = False
    if keep_original:
        return DecodedImage(pixels, data, "jpeg" if source_format == "JPEG" else "png", notes)
    if orientation == 1 and source_format != "PNG":
        notes.append(f"{source_format or 'unknown-format'} image stored as PNG (lossless)")
    return DecodedImage(pixels, encode_png(pixels), "png", notes)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` (1-8) to an ``(H, W, C)`` array."""
    out = pixels
    for op in _ORIENTATION_OPS.get(orientation, ()):
        if op == "FLIP_LEFT_RIGHT":
            out = out[:, ::-1]
        elif op == "FLIP_TOP_BOTTOM":
            out = out[::-1]
        elif op == "ROTATE_180":
            out = out[::-1, ::-1]
        elif op == "ROTATE_90":  # PIL ROTATE_90 is counter-clockwise
            out = np.rot90(out, 1, axes=(0, 1))
        elif op == "ROTATE_270":
            out = np.rot90(out, -1, axes=(0, 1))
    return np.ascontiguousarray(out)


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of an ``(H, W)`` / ``(H, W, 1)`` / ``(H, W, 3)`` uint8/uint16 RGB array."""
    import cv2

    arr = pixels
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported dtypes
        raise ValueError(f"cannot encode a {arr.dtype} {arr.shape} array as PNG")
    return buf.tobytes()


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG IHDR, or None."""
    if len(data) >= 26 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _needs_opencv(img, data: bytes, source_format: str) -> bool:
    """16-bit colour images: Pillow reduces them to 8 bits, OpenCV does not."""
    if source_format == "PNG":
        header = _png_header(data)
        return header is not None and header[0] == 16 and header[1] in (2, 6)
    if source_format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        if isinstance(bits, tuple) and len(bits) >= 3 and max(bits) > 8:
            return True
        return isinstance(bits, int) and bits > 8 and img.mode in ("RGB", "RGBA", "RGBX")
    return False


def _pixels(img, data: bytes, source_format: str, path: str, notes: list[str]) -> tuple[np.ndarray, bool]:
    """Return ``(pixels (H,W,C), keep_original_bytes)``."""
    if _needs_opencv(img, data, source_format):
        return _pixels_opencv(data, source_format, path, notes)
    mode = img.mode
    keep = False
    if mode == "1":
        arr = np.asarray(img.convert("L"))[:, :, None]
    elif mode == "L":
        arr = np.asarray(img)[:, :, None]
        keep = _original_is_exact(data, source_format, grey=True)
    elif mode == "LA" or mode == "La":
        arr = np.asarray(img.convert("L"))[:, :, None]
        notes.append("alpha channel dropped")
    elif mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in img.info
        arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))[:, :, :3]
        notes.append("palette image expanded to RGB" + (", alpha channel dropped" if has_alpha else ""))
    elif mode == "RGB":
        arr = np.asarray(img)
        keep = _original_is_exact(data, source_format, grey=False)
    elif mode in ("RGBA", "RGBa", "RGBX"):
        arr = np.asarray(img.convert("RGBA"))[:, :, :3]
        if mode != "RGBX":
            notes.append("alpha channel dropped")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(img.convert("RGB"))
        notes.append(f"{mode} image converted to RGB")
    elif mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.uint16)[:, :, None]
        keep = _original_is_exact(data, source_format, grey=True)
    elif mode == "I":
        raw = np.asarray(img)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise AnnotationError(path, "32-bit integer image with values outside 0..65535 is not supported")
        arr = raw.astype(np.uint16)[:, :, None]
        notes.append("32-bit integer image stored as 16-bit")
    else:
        raise AnnotationError(
            path, f"unsupported pixel type {mode!r} (use 8- or 16-bit grayscale, or RGB)"
        )
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise AnnotationError(path, f"image has an empty or invalid size {arr.shape}")
    return np.ascontiguousarray(arr), keep


def _pixels_opencv(data: bytes, source_format: str, path: str, notes: list[str]) -> tuple[np.ndarray, bool]:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise AnnotationError(path, "not a readable 16-bit colour image")
    if arr.dtype not in (np.uint8, np.uint16):
        raise AnnotationError(path, f"unsupported pixel type {arr.dtype} (use 8- or 16-bit)")
    keep = False
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] == 4:
        arr = arr[:, :, 2::-1]
        notes.append("alpha channel dropped")
    elif arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
        keep = source_format == "PNG"
    else:
        raise AnnotationError(path, f"unsupported channel count {arr.shape[2]}")
    return np.ascontiguousarray(arr), keep


def _original_is_exact(data: bytes, source_format: str, *, grey: bool) -> bool:
    """True when TF's decoder yields the same pixels from the original bytes."""
    if source_format == "JPEG":
        return True
    if source_format == "PNG":
        header = _png_header(data)
        if header is None:
            return False
        bit_depth, colour_type = header
        return bit_depth in (8, 16) and colour_type == (0 if grey else 2)
    return False


__all__ = [
    "DecodedImage",
    "apply_orientation",
    "check_file_pixels",
    "check_header_pixels",
    "decode_image",
    "encode_png",
    "open_image",
]
