"""Rasterize labelme shapes into a class-id label map, the way labelme does.

labelme's converters draw each shape with Pillow's ``ImageDraw`` on a blank
``(H, W)`` canvas and assign the shape's class id to the drawn pixels, in file
order, so later shapes overwrite earlier ones. The pixel rules are:

* ``polygon``: ``ImageDraw.polygon`` with ``fill`` and ``outline`` (the outline
  pixels are part of the shape);
* ``rectangle``: two opposite corners, ``ImageDraw.rectangle`` with fill and
  outline (inclusive of both corners);
* ``circle``: centre and a point on the circle, ``ImageDraw.ellipse`` on the
  bounding square of that radius, fill and outline;
* ``line`` / ``linestrip``: ``ImageDraw.line`` of width 10;
* ``point``: a filled disc of radius 5 around the point;
* ``mask``: a binary bitmap placed with its top-left pixel at the integer part
  of the first point (its size is that of the 2-point box, inclusive).

Drawing every shape straight onto one label canvas with ``fill=class_id`` sets
exactly the pixels that labelme's per-shape mask sets, so the result is the
same label map, without allocating a mask per shape.

Coordinates far outside the image are clipped geometrically first (Pillow's
integer arithmetic overflows otherwise); points outside the image are reported.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from data_tools.errors import AnnotationError

LINE_WIDTH = 10
"""Width in pixels of ``line``/``linestrip`` shapes (labelme's default)."""
POINT_RADIUS = 5
"""Radius in pixels of ``point`` shapes (labelme's default)."""
IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"

SHAPE_TYPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "mask")
# Names other labelme releases write for the same geometry.
SHAPE_TYPE_ALIASES = {
    "ai_polygon": "polygon",  # labelme 5.3+ AI-assisted polygon
    "ai_mask": "mask",  # labelme 5.3+ AI-assisted mask
    "oriented_rectangle": "polygon",  # labelme 6/7 rotated box: 4 corners
}

# Pillow draws with C ints; keep every coordinate well inside that range.
_MARGIN = 2 * LINE_WIDTH


@dataclasses.dataclass(frozen=True)
class Shape:
    """One validated labelme shape.

    Attributes:
        label: the class name as written in the JSON.
        shape_type: one of :data:`SHAPE_TYPES` (aliases already resolved).
        points: float64 ``(N, 2)`` array of ``x, y`` pixel coordinates.
        mask: for ``mask`` shapes, the bool ``(h, w)`` bitmap; else ``None``.
        index: position of the shape in the file (0-based), for messages.
    """

    label: str
    shape_type: str
    points: np.ndarray
    mask: np.ndarray | None = None
    index: int = 0

    def describe(self) -> str:
        return f"shape #{self.index} ({self.shape_type} {self.label!r})"


def validate_shape_geometry(shape: Shape, *, path: str) -> None:
    """Check the point count, finiteness and area of ``shape``.

    Raises:
        AnnotationError: too few/many points, NaN/inf coordinates, zero area,
            or a mask whose bitmap does not fit its box.
    """
    pts = shape.points
    where = shape.describe()
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise AnnotationError(path, f"{where}: points must be a list of [x, y] pairs")
    if not np.all(np.isfinite(pts)):
        raise AnnotationError(path, f"{where}: NaN or infinite coordinate in points")
    n = len(pts)
    kind = shape.shape_type
    if kind == "polygon":
        if n < 3:
            raise AnnotationError(path, f"{where}: a polygon needs at least 3 points, got {n}")
        if _polygon_area(pts) == 0.0:
            raise AnnotationError(path, f"{where}: zero-area polygon (all points on one line)")
    elif kind == "rectangle":
        if n != 2:
            raise AnnotationError(path, f"{where}: a rectangle needs 2 corner points, got {n}")
        if pts[0, 0] == pts[1, 0] or pts[0, 1] == pts[1, 1]:
            raise AnnotationError(path, f"{where}: zero-area rectangle (corners share an x or y)")
    elif kind == "circle":
        if n != 2:
            raise AnnotationError(
                path, f"{where}: a circle needs 2 points (centre, point on circle), got {n}"
            )
        if np.array_equal(pts[0], pts[1]):
            raise AnnotationError(path, f"{where}: zero-area circle (radius 0)")
    elif kind == "line":
        if n != 2:
            raise AnnotationError(path, f"{where}: a line needs 2 points, got {n}")
        if np.array_equal(pts[0], pts[1]):
            raise AnnotationError(path, f"{where}: zero-length line (both points equal)")
    elif kind == "linestrip":
        if n < 2:
            raise AnnotationError(path, f"{where}: a linestrip needs at least 2 points, got {n}")
        if np.all(pts == pts[0]):
            raise AnnotationError(path, f"{where}: zero-length linestrip (all points equal)")
    elif kind == "point":
        if n != 1:
            raise AnnotationError(path, f"{where}: a point needs exactly 1 point, got {n}")
    elif kind == "mask":
        if n != 2:
            raise AnnotationError(path, f"{where}: a mask needs 2 box points, got {n}")
        if shape.mask is None:
            raise AnnotationError(path, f"{where}: mask shape without a 'mask' bitmap")
        x1, y1, x2, y2 = _mask_box(pts)
        expected = (y2 - y1 + 1, x2 - x1 + 1)
        if shape.mask.shape != expected:
            raise AnnotationError(
                path,
                f"{where}: mask bitmap is {shape.mask.shape[1]}x{shape.mask.shape[0]} but its box "
                f"({x1},{y1})-({x2},{y2}) is {expected[1]}x{expected[0]}",
            )
        if not shape.mask.any():
            raise AnnotationError(path, f"{where}: zero-area mask (no pixel set)")
    else:  # pragma: no cover - parse_shape only produces known types
        raise AnnotationError(path, f"{where}: unknown shape_type {kind!r}")


def rasterize(
    shapes: Sequence[Shape],
    class_ids: Mapping[str, int],
    *,
    height: int,
    width: int,
    path: str = "",
) -> tuple[np.ndarray, list[str]]:
    """Draw ``shapes`` in order into a uint8 label map.

    Args:
        shapes: validated shapes, drawn in order (later ones overwrite).
        class_ids: label name -> class id (``255`` for ``__ignore__``).
        height, width: size of the image.
        path: file name used in error messages and notes.

    Returns:
        ``(label_map, notes)``: uint8 ``(height, width)`` class ids (0 where
        nothing is drawn) and human-readable notes (e.g. clipped points).

    Raises:
        AnnotationError: a shape label missing from ``class_ids`` or bad geometry.
    """
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    notes: list[str] = []
    # Masks are placed with numpy; to keep "later overwrites earlier" exact the
    # Pillow canvas is flushed into numpy whenever a mask shape comes.
    for shape in shapes:
        validate_shape_geometry(shape, path=path)
        if shape.label not in class_ids:
            raise AnnotationError(path, f"{shape.describe()}: label {shape.label!r} is not a known class")
        value = int(class_ids[shape.label])
        outside = _count_outside(shape.points, width, height)
        if outside:
            notes.append(
                f"{shape.describe()}: {outside} of {len(shape.points)} points outside the "
                f"{width}x{height} image, clipped to it"
            )
        if shape.shape_type == "mask":
            label = np.array(canvas, dtype=np.uint8)
            _place_mask(label, shape, value)
            canvas = Image.fromarray(label)
            draw = ImageDraw.Draw(canvas)
            continue
        _draw_shape(draw, shape, value, width, height)
    return np.array(canvas, dtype=np.uint8), notes


def shape_mask(shape: Shape, *, height: int, width: int, path: str = "") -> np.ndarray:
    """The bool ``(height, width)`` pixels one shape covers (labelme's ``shape_to_mask``)."""
    label, _ = rasterize([shape], {shape.label: 1}, height=height, width=width, path=path)
    return label == 1


# -- drawing ---------------------------------------------------------------------------------


def _draw_shape(draw, shape: Shape, value: int, width: int, height: int) -> None:
    pts = shape.points
    kind = shape.shape_type
    if kind == "polygon":
        clipped = _clip_polygon(pts, width, height)
        if len(clipped) >= 3:
            draw.polygon([tuple(p) for p in clipped.tolist()], fill=value, outline=value)
        elif len(clipped) > 0:
            draw.line([tuple(p) for p in clipped.tolist()], fill=value)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = pts.tolist()
        corners = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        box = _clamp_box(corners, width, height)
        if box is not None:
            draw.rectangle(box, fill=value, outline=value)
    elif kind in ("circle", "point"):
        if kind == "circle":
            (cx, cy), (px, py) = pts.tolist()
            r = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        else:
            (cx, cy), r = pts[0].tolist(), float(POINT_RADIUS)
        box = [cx - r, cy - r, cx + r, cy + r]
        if _box_is_drawable(box, width, height):
            draw.ellipse(box, fill=value, outline=value)
        else:
            _disc_numpy(draw, cx, cy, r, value, width, height)
    elif kind in ("line", "linestrip"):
        for segment in _clip_polyline(pts, width, height):
            draw.line([tuple(p) for p in segment.tolist()], fill=value, width=LINE_WIDTH)


def _place_mask(label: np.ndarray, shape: Shape, value: int) -> None:
    height, width = label.shape
    x1, y1, x2, y2 = _mask_box(shape.points)
    bitmap = shape.mask
    assert bitmap is not None  # validate_shape_geometry refuses a mask shape without one
    # Intersect the box with the image; numpy slicing must never wrap around.
    ix1, iy1 = max(x1, 0), max(y1, 0)
    ix2, iy2 = min(x2, width - 1), min(y2, height - 1)
    if ix1 > ix2 or iy1 > iy2:
        return
    sub = bitmap[iy1 - y1 : iy2 - y1 + 1, ix1 - x1 : ix2 - x1 + 1]
    region = label[iy1 : iy2 + 1, ix1 : ix2 + 1]
    region[sub] = value


def _mask_box(pts: np.ndarray) -> tuple[int, int, int, int]:
    # labelme: (x1, y1), (x2, y2) = points.astype(int)  (truncation toward zero)
    xs = [int(v) for v in pts[:, 0].tolist()]
    ys = [int(v) for v in pts[:, 1].tolist()]
    return min(xs), min(ys), max(xs), max(ys)


def _disc_numpy(draw, cx: float, cy: float, r: float, value: int, width: int, height: int) -> None:
    """A disc too large for Pillow: pixels whose centre lies within ``r``."""
    yy, xx = np.mgrid[0:height, 0:width]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if inside.any():
        from PIL import Image

        stamp = Image.fromarray((inside * 255).astype(np.uint8))
        draw.bitmap((0, 0), stamp, fill=value)


def _count_outside(pts: np.ndarray, width: int, height: int) -> int:
    if pts.size == 0:
        return 0
    x, y = pts[:, 0], pts[:, 1]
    return int(np.count_nonzero((x < 0) | (y < 0) | (x > width - 1) | (y > height - 1)))


def _bounds(width: int, height: int) -> tuple[float, float, float, float]:
    return (-_MARGIN, -_MARGIN, width - 1 + _MARGIN, height - 1 + _MARGIN)


def _inside_bounds(pts: np.ndarray, width: int, height: int) -> bool:
    xmin, ymin, xmax, ymax = _bounds(width, height)
    return bool(
        np.all((pts[:, 0] >= xmin) & (pts[:, 0] <= xmax) & (pts[:, 1] >= ymin) & (pts[:, 1] <= ymax))
    )


def _box_is_drawable(box: Sequence[float], width: int, height: int) -> bool:
    limit = 8 * (width + height) + 64
    return all(-limit <= v <= limit for v in box)


def _clamp_box(box: list[float], width: int, height: int) -> list[float] | None:
    xmin, ymin, xmax, ymax = _bounds(width, height)
    x0, y0, x1, y1 = box
    if x1 < xmin or y1 < ymin or x0 > xmax or y0 > ymax:
        return None
    # Clamping an axis-aligned box to a margin outside the image keeps its pixels.
    return [max(x0, xmin), max(y0, ymin), min(x1, xmax), min(y1, ymax)]


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _clip_polygon(pts: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman clip to a box a margin outside the image.

    Points already inside the box are returned unchanged, so ordinary shapes
    are drawn from exactly the coordinates in the file.
    """
    if _inside_bounds(pts, width, height):
        return pts
    xmin, ymin, xmax, ymax = _bounds(width, height)
    poly = [tuple(p) for p in pts.tolist()]
    for axis, limit, keep_greater in ((0, xmin, True), (0, xmax, False), (1, ymin, True), (1, ymax, False)):
        if not poly:
            break
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cur_in = cur[axis] >= limit if keep_greater else cur[axis] <= limit
            prev_in = prev[axis] >= limit if keep_greater else prev[axis] <= limit
            if cur_in:
                if not prev_in:
                    out.append(_intersect(prev, cur, axis, limit))
                out.append(cur)
            elif prev_in:
                out.append(_intersect(prev, cur, axis, limit))
        poly = out
    return np.asarray(poly, dtype=np.float64).reshape(-1, 2)


def _intersect(a, b, axis: int, limit: float) -> tuple[float, float]:
    t = (limit - a[axis]) / (b[axis] - a[axis])
    point = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
    point[axis] = limit
    return (point[0], point[1])


def _clip_polyline(pts: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """Split a polyline into runs inside the margin box (Liang-Barsky per segment)."""
    if _inside_bounds(pts, width, height):
        return [pts]
    xmin, ymin, xmax, ymax = _bounds(width, height)
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for a, b in zip(pts[:-1].tolist(), pts[1:].tolist()):
        seg = _clip_segment(a, b, xmin, ymin, xmax, ymax)
        if seg is None:
            if len(current) >= 2:
                runs.append(current)
            current = []
            continue
        p, q = seg
        if current and current[-1] == p:
            current.append(q)
        else:
            if len(current) >= 2:
                runs.append(current)
            current = [p, q]
    if len(current) >= 2:
        runs.append(current)
    return [np.asarray(run, dtype=np.float64) for run in runs]


def _clip_segment(a, b, xmin, ymin, xmax, ymax):
    x0, y0 = a
    dx, dy = b[0] - x0, b[1] - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 - xmin), (dx, xmax - x0), (-dy, y0 - ymin), (dy, ymax - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    start = (a[0], a[1]) if t0 == 0.0 else (x0 + t0 * dx, y0 + t0 * dy)
    end = (b[0], b[1]) if t1 == 1.0 else (x0 + t1 * dx, y0 + t1 * dy)
    return start, end


__all__ = [
    "LINE_WIDTH",
    "POINT_RADIUS",
    "SHAPE_TYPES",
    "SHAPE_TYPE_ALIASES",
    "Shape",
    "rasterize",
    "shape_mask",
    "validate_shape_geometry",
]
