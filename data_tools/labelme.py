"""Read labelme JSON annotations of every schema, without importing labelme.

Schemas seen in the wild (all read here):

* pre-3.x (no ``version``): no ``shape_type`` (every shape is a polygon), no
  ``imageHeight``/``imageWidth``, colour keys ``lineColor``/``fillColor``;
* 3.x: ``shape_type`` (rectangle, circle, line, point, linestrip), per-shape
  ``flags``, later ``group_id``;
* 4.x: colour keys gone;
* 5.x: ``description``, and ``mask`` shapes (a base64 PNG bitmap placed at the
  2-point box);
* 6.x/7.x: the same keys, plus ``oriented_rectangle`` (4 corners) and
  AI-assisted ``ai_polygon``/``ai_mask`` types, read as polygon/mask.

Unknown keys are ignored; anything malformed raises
:class:`~data_tools.errors.AnnotationError` naming the file and the problem.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping

import numpy as np

from data_tools.errors import AnnotationError
from data_tools.images import DecodedImage, decode_image, open_image
from data_tools.paths import check_inside
from data_tools.rasterize import SHAPE_TYPE_ALIASES, SHAPE_TYPES, Shape, rasterize

MAX_COORDINATE = 1e7
"""Coordinates beyond this magnitude are refused as corrupt (not clipped)."""

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclasses.dataclass
class LabelmeAnnotation:
    """The parts of a labelme JSON file a converter needs.

    Attributes:
        json_path: the JSON file.
        version: the ``version`` field (``None`` for pre-3.x files).
        image_path: ``imagePath`` as written (may be ``None`` when data is embedded).
        image_data: decoded ``imageData`` bytes, or ``None``.
        image_height, image_width: declared size, or ``None`` (old schemas).
        shapes: validated shapes in file order.
        flags: image-level flags.
    """

    json_path: str
    version: str | None
    image_path: str | None
    image_data: bytes | None
    image_height: int | None
    image_width: int | None
    shapes: list[Shape]
    flags: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """Shape labels in file order."""
        return [shape.label for shape in self.shapes]


@dataclasses.dataclass
class LabelmeSample:
    """One converted annotation: the image, its label map and notes.

    Attributes:
        annotation: the parsed JSON.
        image: the decoded image (``image.pixels`` is ``(H, W, C)``).
        mask: uint8 ``(H, W)`` class ids, 255 = ignore.
        filename: the image file relative to the input folder (the JSON's own
            name when the image is embedded).
        notes: warnings worth reporting (clipped points, dropped alpha...).
    """

    annotation: LabelmeAnnotation
    image: DecodedImage
    mask: np.ndarray
    filename: str
    notes: list[str]


def load_labelme_json(json_path: str | os.PathLike, *, max_pixels: int | None = None) -> LabelmeAnnotation:
    """Read and validate one labelme JSON file (the image is not loaded).

    ``mask`` shapes are decoded here; their box and bitmap header are checked
    against ``max_pixels`` first (default :func:`kerasseg.image_limits.max_pixels`).
    """
    path = os.fspath(json_path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise AnnotationError(path, f"cannot read the file ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})") from e
    except RecursionError as e:
        raise AnnotationError(path, "malformed JSON: nested too deeply") from e
    return parse_labelme(data, path=path, max_pixels=max_pixels)


def parse_labelme(data: Any, *, path: str, max_pixels: int | None = None) -> LabelmeAnnotation:
    """Validate a decoded labelme JSON document (any schema version).

    ``max_pixels`` bounds ``mask`` shape bitmaps, checked before they are decoded.
    """
    if not isinstance(data, dict):
        raise AnnotationError(path, f"not a labelme annotation: top level is {_kind(data)}, not an object")
    if "shapes" not in data:
        raise AnnotationError(path, "not a labelme annotation: no 'shapes' key")
    raw_shapes = data["shapes"]
    if raw_shapes is None:
        raw_shapes = []
    if not isinstance(raw_shapes, list):
        raise AnnotationError(path, f"'shapes' must be a list, got {_kind(raw_shapes)}")
    version = data.get("version")
    version = None if version is None else str(version)

    image_path = data.get("imagePath")
    if image_path is not None and not isinstance(image_path, str):
        raise AnnotationError(path, f"'imagePath' must be a string, got {_kind(image_path)}")
    image_data = data.get("imageData")
    if image_data is not None:
        if not isinstance(image_data, str):
            raise AnnotationError(path, f"'imageData' must be a base64 string, got {_kind(image_data)}")
        image_data = _b64decode(image_data, path=path, what="'imageData'")
        if not image_data:
            image_data = None
    if image_data is None and not image_path:
        raise AnnotationError(path, "no image: 'imageData' is empty and 'imagePath' is missing")

    height = _optional_size(data.get("imageHeight"), "imageHeight", path)
    width = _optional_size(data.get("imageWidth"), "imageWidth", path)
    flags = data.get("flags") or {}
    if not isinstance(flags, dict):
        flags = {}
    if max_pixels is None:
        from kerasseg.image_limits import max_pixels as default_limit

        max_pixels = default_limit()
    shapes = [_parse_shape(raw, i, path, max_pixels) for i, raw in enumerate(raw_shapes)]
    return LabelmeAnnotation(
        json_path=path,
        version=version,
        image_path=image_path,
        image_data=image_data,
        image_height=height,
        image_width=width,
        shapes=shapes,
        flags=flags,
    )


def resolve_image_path(annotation: LabelmeAnnotation, *, input_dir: str | os.PathLike | None = None) -> str | None:
    """The image file an annotation refers to, or ``None`` when it is embedded.

    ``imagePath`` is relative to the JSON file (Windows separators accepted).

    Raises:
        AnnotationError: ``imagePath`` is absolute or resolves outside
            ``input_dir`` (default: the JSON's folder), written with ``../``
            or through a symlink (real paths are compared): path traversal
            is refused.
    """
    if annotation.image_data is not None:
        return None
    json_path = annotation.json_path
    root = os.path.abspath(os.fspath(input_dir) if input_dir is not None else os.path.dirname(json_path))
    written = str(annotation.image_path)
    relative = written.replace("\\", "/")
    if relative.startswith("/") or _WINDOWS_DRIVE.match(written) or relative.startswith("//"):
        raise AnnotationError(
            json_path,
            f"imagePath {written!r} is absolute; it must be relative to the JSON and inside "
            f"{root} (refused: path traversal)",
        )
    joined = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(json_path)), *relative.split("/")))
    if os.path.commonpath([joined, root]) != root:
        raise AnnotationError(
            json_path, f"imagePath {written!r} resolves outside {root} (refused: path traversal)"
        )
    check_inside(joined, root, owner=json_path, what=f"imagePath {written!r}:")
    return joined


def load_labelme_image(
    annotation: LabelmeAnnotation,
    *,
    input_dir: str | os.PathLike | None = None,
    max_pixels: int | None = None,
) -> tuple[DecodedImage, str]:
    """Load the image of an annotation; return ``(image, filename)``.

    Embedded ``imageData`` wins over ``imagePath`` (as in labelme) and is used
    as stored; an image file gets its EXIF orientation applied (labelme does so
    when it opens the file, so the annotation is in rotated coordinates).

    ``max_pixels`` (default :func:`kerasseg.image_limits.max_pixels`) is
    checked from the image header before decoding.

    Raises:
        AnnotationError: missing or unreadable image, traversal, too many
            pixels, or a size that disagrees with ``imageHeight``/``imageWidth``.
    """
    json_path = annotation.json_path
    root = os.path.abspath(os.fspath(input_dir) if input_dir is not None else os.path.dirname(json_path))
    image_file = resolve_image_path(annotation, input_dir=root)
    if image_file is None:
        try:
            image = decode_image(
                annotation.image_data or b"", path=json_path, apply_exif=False, max_pixels=max_pixels
            )
        except AnnotationError as e:
            raise AnnotationError(json_path, f"imageData: {e.problem}") from e
        filename = os.path.relpath(os.path.abspath(json_path), root)
    else:
        if not os.path.isfile(image_file):
            raise AnnotationError(
                json_path, f"image file not found: {annotation.image_path!r} (looked for {image_file})"
            )
        try:
            with open(image_file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise AnnotationError(image_file, f"cannot read the image ({e.strerror or e})") from e
        image = decode_image(raw, path=image_file, apply_exif=True, max_pixels=max_pixels)
        filename = os.path.relpath(image_file, root)
    declared = (annotation.image_height, annotation.image_width)
    actual = (image.height, image.width)
    for name, want, got in (("imageHeight", declared[0], actual[0]), ("imageWidth", declared[1], actual[1])):
        if want is not None and want != got:
            rotated = any("EXIF orientation" in note for note in image.notes)
            hint = " after its EXIF orientation was applied" if rotated else ""
            raise AnnotationError(
                json_path,
                f"{name} is {want} but the image is {actual[1]}x{actual[0]} (width x height){hint}",
            )
    return image, filename.replace(os.sep, "/")


def read_labelme_sample(
    json_path: str | os.PathLike,
    *,
    class_ids: Mapping[str, int] | None = None,
    input_dir: str | os.PathLike | None = None,
    annotation: LabelmeAnnotation | None = None,
    max_pixels: int | None = None,
) -> LabelmeSample:
    """Read a labelme JSON and its image and rasterize the label map.

    Args:
        json_path: the annotation file.
        class_ids: label -> class id (``__ignore__`` -> 255). Default: labels
            numbered in order of first appearance after ``_background_`` = 0
            (labelme's ``labelme_shapes_to_label`` convention).
        input_dir: the root ``imagePath`` must stay inside (default: the JSON's folder).
        annotation: an already parsed annotation of ``json_path`` (skips re-reading).
        max_pixels: pixel limit of the image and ``mask`` shapes, checked
            before decoding (default :func:`kerasseg.image_limits.max_pixels`).

    Returns:
        :class:`LabelmeSample` with ``mask`` uint8 ``(H, W)``.

    Raises:
        AnnotationError: anything wrong with the JSON, the image or a shape.
    """
    annotation = annotation or load_labelme_json(json_path, max_pixels=max_pixels)
    if class_ids is None:
        class_ids = {"_background_": 0, "__ignore__": 255}
        for label in annotation.labels:
            if label not in class_ids:
                class_ids[label] = len(class_ids) - 1
    image, filename = load_labelme_image(annotation, input_dir=input_dir, max_pixels=max_pixels)
    mask, notes = rasterize(
        annotation.shapes, class_ids, height=image.height, width=image.width, path=annotation.json_path
    )
    return LabelmeSample(annotation, image, mask, filename, list(image.notes) + notes)


# -- helpers -----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _optional_size(value: Any, name: str, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnnotationError(path, f"'{name}' must be a positive integer, got {_kind(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise AnnotationError(path, f"'{name}' must be a positive integer, got {value!r}")
    if value <= 0:
        raise AnnotationError(path, f"'{name}' must be a positive integer, got {value!r}")
    return int(value)


def _b64decode(text: str, *, path: str, what: str) -> bytes:
    compact = "".join(text.split())  # labelme's older writers wrap lines
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AnnotationError(path, f"{what} is not valid base64 ({e})") from e


_NUMBER_TYPES = frozenset((int, float))


def _parse_points(raw: Any, where: str, path: str) -> np.ndarray:
    """``raw`` as a float64 ``(N, 2)`` array of x/y points, or an error naming the first bad point."""
    if isinstance(raw, list) and raw:
        # Fast path for well-formed points (nearly every file): one conversion, checked as a whole.
        # JSON numbers are exactly int or float (a bool or string is refused below, point by point).
        try:
            points = np.array(raw, dtype=np.float64)
            plain = {type(v) for point in raw for v in point} <= _NUMBER_TYPES
        except (TypeError, ValueError, OverflowError):
            points, plain = None, False
        if (plain and points is not None and points.shape == (len(raw), 2) and all(type(point) is list for point in raw)
                and np.isfinite(points).all() and np.abs(points).max() <= MAX_COORDINATE):
            return points
    return _parse_points_one_by_one(raw, where, path)


def _parse_points_one_by_one(raw: Any, where: str, path: str) -> np.ndarray:
    if not isinstance(raw, list):
        raise AnnotationError(path, f"{where}: 'points' must be a list of [x, y] pairs, got {_kind(raw)}")
    coords: list[tuple[float, float]] = []
    for j, point in enumerate(raw):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise AnnotationError(path, f"{where}: point {j} is not an [x, y] pair: {point!r:.60}")
        xy = []
        for v in point:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise AnnotationError(path, f"{where}: point {j} has a non-numeric coordinate {v!r:.40}")
            try:
                f = float(v)
            except OverflowError:
                f = math.inf
            if math.isnan(f) or math.isinf(f):
                raise AnnotationError(path, f"{where}: point {j} has a NaN or infinite coordinate")
            if abs(f) > MAX_COORDINATE:
                raise AnnotationError(
                    path, f"{where}: point {j} coordinate {f:g} is far outside any image (corrupt file?)"
                )
            xy.append(f)
        coords.append((xy[0], xy[1]))
    return np.asarray(coords, dtype=np.float64).reshape(-1, 2)


def _parse_shape(raw: Any, index: int, path: str, max_pixels: int) -> Shape:
    where = f"shape #{index}"
    if not isinstance(raw, dict):
        raise AnnotationError(path, f"{where} is {_kind(raw)}, not an object")
    label = raw.get("label")
    if not isinstance(label, str) or not label:
        raise AnnotationError(path, f"{where}: 'label' must be a non-empty string, got {label!r:.40}")
    where = f"shape #{index} ({label!r})"
    shape_type = raw.get("shape_type")
    if shape_type is None:
        shape_type = "polygon"  # pre-3.x files have no shape_type: every shape is a polygon
    if not isinstance(shape_type, str):
        raise AnnotationError(path, f"{where}: 'shape_type' must be a string, got {_kind(shape_type)}")
    kind = SHAPE_TYPE_ALIASES.get(shape_type, shape_type)
    if kind not in SHAPE_TYPES:
        raise AnnotationError(
            path, f"{where}: unknown shape_type {shape_type!r} (known: {', '.join(SHAPE_TYPES)})"
        )
    if "points" not in raw:
        raise AnnotationError(path, f"{where}: no 'points'")
    points = _parse_points(raw["points"], where, path)
    if kind == "rectangle" and len(points) == 4:
        kind = "polygon"  # some tools write all 4 corners of a box
    bitmap = None
    if kind == "mask":
        bitmap = _parse_mask_bitmap(raw.get("mask"), where, path, max_pixels, points)
    return Shape(label=label, shape_type=kind, points=points, mask=bitmap, index=index)


def _parse_mask_bitmap(raw: Any, where: str, path: str, max_pixels: int, points: np.ndarray) -> np.ndarray:
    """Decode a ``mask`` shape's bitmap, after checking its box and header size.

    The bitmap must cover the 2-point box exactly, so a box above the pixel
    limit is refused from the points alone, and the bitmap's PNG header is
    checked before its pixels are decoded.
    """
    from data_tools.images import check_header_pixels
    from kerasseg.image_limits import PixelLimitError, check_pixels

    if not isinstance(raw, str) or not raw:
        raise AnnotationError(path, f"{where}: a mask shape needs a base64 PNG in 'mask', got {_kind(raw)}")
    if len(points) == 2:
        xs = [int(v) for v in points[:, 0].tolist()]
        ys = [int(v) for v in points[:, 1].tolist()]
        box_h, box_w = max(ys) - min(ys) + 1, max(xs) - min(xs) + 1
        try:
            check_pixels(box_h, box_w, source=path, limit=max_pixels)
        except PixelLimitError as e:
            raise AnnotationError(path, f"{where}: mask box: {e.problem}") from None
    data = _b64decode(raw, path=path, what=f"{where}: 'mask'")
    check_header_pixels(data, path=path, max_pixels=max_pixels, what=f"{where}: 'mask' bitmap")
    try:
        img = open_image(data, path=path, max_pixels=max_pixels, what=f"{where}: 'mask' bitmap")
        arr = np.asarray(img)
    except AnnotationError as e:
        raise AnnotationError(path, f"{where}: 'mask' is not a readable PNG ({e.problem})") from e
    except (OSError, ValueError) as e:
        raise AnnotationError(path, f"{where}: 'mask' is not a readable PNG ({e})") from e
    if arr.ndim == 3:
        arr = arr[:, :, -1] if img.mode in ("LA", "RGBA", "PA") else arr.max(axis=2)
    if arr.ndim != 2:
        raise AnnotationError(path, f"{where}: 'mask' bitmap must be 2-D, got shape {arr.shape}")
    return arr > 0



__all__ = [
    "LabelmeAnnotation",
    "LabelmeSample",
    "load_labelme_json",
    "load_labelme_image",
    "parse_labelme",
    "read_labelme_sample",
    "resolve_image_path",
]
