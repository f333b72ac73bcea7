"""Read image + mask-file datasets (what public segmentation datasets ship).

Each image ``IMAGES_DIR/<rel>/<stem>.<ext>`` is paired with the mask files
``MASKS_DIR/<rel>/<pattern>`` (default pattern ``{stem}.*``; e.g.
``'{stem}_mask*.png'`` pairs ``x.png`` with ``x_mask.png`` and
``x_mask_1.png``). Several masks for one image are combined: non-background
pixels of later files (sorted by name) overwrite earlier ones, so binary
masks give their union.

Names that differ beyond a suffix are paired through a shared id: an image
pattern with ``{id}`` (``'{id}_training.tif'``) selects the images and takes the
id from each name, and mask / ROI patterns use ``{id}`` too (``'{id}_manual1.gif'``,
``'{id}_training_mask.gif'``); ``*`` matches anything in every pattern. The id
(below ``IMAGES_DIR``'s sub-folders) is then the example's source id.

A region-of-interest (field-of-view) file per image (``roi_pattern``, looked up
in ``roi_dir``, default ``MASKS_DIR``) marks with non-zero pixels where the
labels are valid; the converter makes every pixel outside it ignore (255).

How pixel values become class ids:

* palette PNG/GIF with a colour palette (PASCAL VOC): the palette index is the
  class id (255 stays ignore);
* palette images with a grey palette, and grayscale masks: the grey value;
  a mask of only 0 and 255 is binary (255 -> class 1); other values are
  class ids (255 = ignore) unless ``threshold`` is given (value > T -> 1);
* 1-bit masks: 1 -> class 1;
* RGB/RGBA masks: grey ones (R = G = B) as grayscale, alpha 0 = background;
  a constant-colour mask with varying alpha uses the alpha as the mask;
  coloured masks need a class map (``R,G,B name`` lines);
* a class map (``--class-map FILE``) maps values to classes explicitly.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Sequence

import numpy as np

from data_tools.errors import AnnotationError
from data_tools.labels import IGNORE_INDEX
from data_tools.paths import check_inside, check_utf8_name

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
DEFAULT_MASK_PATTERN = "{stem}.*"
MAX_IMPLICIT_CLASS_ID = 64
"""Without a class map, grey values above this look like intensities, not ids."""


@dataclasses.dataclass(frozen=True)
class ClassMap:
    """Explicit mapping of mask values to classes, read from a class-map file.

    File format: one class per line, ``VALUE NAME`` where ``VALUE`` is a grey
    level / palette index (``255``) or a colour ``R,G,B``; the class id is the
    line's position (blank lines and ``#`` comments skipped). The name
    ``__ignore__`` maps its value to the ignore index 255.

    Attributes:
        names: class names in id order.
        values: ``(value, class_id)`` pairs; value is an int or an RGB tuple.
        source: the file.
    """

    names: tuple[str, ...]
    values: tuple[tuple[int | tuple[int, int, int], int], ...]
    source: str = ""

    @property
    def is_colour(self) -> bool:
        return any(isinstance(v, tuple) for v, _ in self.values)


def read_class_map(path: str | os.PathLike) -> ClassMap:
    """Parse a class-map file (see :class:`ClassMap`)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(path, f"cannot read the class map ({e})") from e
    names: list[str] = []
    values: list[tuple[int | tuple[int, int, int], int]] = []
    seen_values: set = set()
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split(None, 1)
        if len(parts) != 2:
            raise AnnotationError(path, f"line {number}: expected 'VALUE NAME', got {line!r}")
        raw_value, name = parts[0], parts[1].strip()
        try:
            if "," in raw_value:
                rgb = tuple(int(v) for v in raw_value.split(","))
                if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                    raise ValueError
                value: int | tuple[int, int, int] = rgb
            else:
                value = int(raw_value)
                if not 0 <= value <= 65535:
                    raise ValueError
        except ValueError:
            raise AnnotationError(
                path, f"line {number}: value {raw_value!r} is not a grey level 0..65535 or R,G,B"
            ) from None
        if value in seen_values:
            raise AnnotationError(path, f"line {number}: value {raw_value} mapped twice")
        seen_values.add(value)
        if name == "__ignore__":
            values.append((value, IGNORE_INDEX))
            continue
        if name in names:
            class_id = names.index(name)  # several values may share a class
        else:
            names.append(name)
            class_id = len(names) - 1
        values.append((value, class_id))
    if not names:
        raise AnnotationError(path, "no classes in the class map")
    if len(names) > 255:
        raise AnnotationError(path, f"{len(names)} classes; at most 255 fit in a uint8 mask")
    return ClassMap(tuple(names), tuple(values), source=path)


@dataclasses.dataclass(frozen=True)
class MaskPair:
    """An image and its mask files."""

    source_id: str
    image: str
    masks: tuple[str, ...]
    roi: str | None = None


def find_pairs(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    *,
    mask_pattern: str = DEFAULT_MASK_PATTERN,
    exclude: Sequence[str] = (),
    image_pattern: str | None = None,
    roi_pattern: str | None = None,
    roi_dir: str | os.PathLike | None = None,
) -> tuple[list[MaskPair], list[AnnotationError]]:
    """Pair every image with its mask files (and its ROI file); see the module docstring.

    Args:
        images_dir, masks_dir: the folders (searched recursively, same sub-folders).
        mask_pattern: an image's mask files, with ``{stem}`` or ``{id}``.
        exclude: folders not to search (the output folder).
        image_pattern: which files are images, with ``{id}`` (default: every image file).
        roi_pattern: an image's region-of-interest file, with ``{stem}`` or ``{id}``.
        roi_dir: where ROI files are (default ``masks_dir``).

    Returns:
        ``(pairs, problems)``: pairs sorted by source id (the image path relative
        to ``images_dir`` without extension, or its ``{id}``, ``/``-separated) and
        one error per image without a mask (or ROI), per duplicate id, per file
        whose name is not UTF-8 and per image or mask whose real path (symlinks
        resolved) lies outside its folder.
    """
    images_dir = os.path.abspath(os.fspath(images_dir))
    masks_dir = os.path.abspath(os.fspath(masks_dir))
    roi_dir = os.path.abspath(os.fspath(roi_dir)) if roi_dir is not None else masks_dir
    id_regex = _check_patterns(image_pattern, mask_pattern, roi_pattern)
    excluded = [os.path.abspath(p) for p in exclude]
    candidates = []
    name_id: dict[str, str] = {}
    for root, dirs, files in os.walk(images_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(root, d) not in excluded)
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            if id_regex is not None:
                match = id_regex.fullmatch(name)
                if not match:
                    continue  # not an image of this set (a mask beside the images, another suffix)
                name_id[os.path.join(root, name)] = match.group("id")
            candidates.append(os.path.join(root, name))
    problems: list[AnnotationError] = []
    checked = []
    for image in candidates:
        try:
            check_utf8_name(image, images_dir)
            check_inside(image, images_dir, what="image")
        except AnnotationError as e:
            problems.append(e)
            continue
        checked.append(image)
    candidates = checked
    mask_of: dict[str, list[str]] = {}
    roi_of: dict[str, list[str]] = {}
    refused_masks: dict[str, AnnotationError] = {}
    for image in candidates:
        rel_dir = os.path.relpath(os.path.dirname(image), images_dir)
        stem = os.path.splitext(os.path.basename(image))[0]
        found = _matching(masks_dir, rel_dir, mask_pattern, stem, name_id.get(image), image)
        mask_of[image] = found
        checks = [(mask, masks_dir, "mask") for mask in found]
        if roi_pattern is not None:
            roi_of[image] = _matching(roi_dir, rel_dir, roi_pattern, stem, name_id.get(image), image)
            checks += [(roi, roi_dir, "ROI file") for roi in roi_of[image]]
        for path, root, what in checks:
            try:
                check_utf8_name(path, root)
                check_inside(path, root, what=what)
            except AnnotationError as e:
                refused_masks.setdefault(image, e)
    all_masks = {m for masks in (*mask_of.values(), *roi_of.values()) for m in masks}
    pairs: list[MaskPair] = []
    seen: dict[str, str] = {}
    for image in candidates:
        if image in all_masks:
            continue  # a mask file living beside the images
        if image in refused_masks:
            problems.append(refused_masks[image])
            continue
        source_id = os.path.splitext(os.path.relpath(image, images_dir))[0].replace(os.sep, "/")
        if image in name_id:
            source_id = "/".join([*source_id.split("/")[:-1], name_id[image]])
        key = source_id.lower()
        if key in seen:
            problems.append(
                AnnotationError(image, f"duplicate id {source_id!r}: {seen[key]} has the same name")
            )
            continue
        seen[key] = image
        if not mask_of[image]:
            problems.append(
                AnnotationError(
                    image,
                    f"no mask file matching {mask_pattern!r} in {os.path.join(masks_dir, os.path.relpath(os.path.dirname(image), images_dir))}",
                )
            )
            continue
        roi = None
        if roi_pattern is not None:
            rois = roi_of[image]
            where = os.path.join(roi_dir, os.path.relpath(os.path.dirname(image), images_dir))
            if len(rois) != 1:
                problems.append(AnnotationError(
                    image, f"{'no' if not rois else len(rois)} ROI file(s) matching {roi_pattern!r} in "
                    f"{where}" + (f": {', '.join(os.path.basename(r) for r in rois)}; one is needed" if rois else "")))
                continue
            roi = rois[0]
        pairs.append(MaskPair(source_id, image, tuple(mask_of[image]), roi))
    return sorted(pairs, key=lambda p: p.source_id), problems


def _pattern_regex(pattern: str) -> "re.Pattern[str]":
    """``'{id}_training.tif'`` -> a regex with the named group ``id`` (``*`` matches anything)."""
    parts = []
    for piece in re.split(r"(\{id\}|\*)", pattern):
        parts.append("(?P<id>.+?)" if piece == "{id}" else ".*" if piece == "*" else re.escape(piece))
    return re.compile("".join(parts))


def _check_patterns(image_pattern: str | None, mask_pattern: str, roi_pattern: str | None):
    """The image-name regex (``None`` without an image pattern); refuse patterns that cannot pair."""
    if image_pattern is not None:
        if image_pattern.count("{id}") != 1 or "/" in image_pattern or os.sep in image_pattern:
            raise AnnotationError(None, f"--image-pattern {image_pattern!r} must be a file name holding {{id}} once, "
                                  "e.g. '{id}_training.tif'")
    for flag, pattern in (("--mask-pattern", mask_pattern), ("--roi-pattern", roi_pattern)):
        if pattern is None:
            continue
        if "{stem}" not in pattern and "{id}" not in pattern:
            raise AnnotationError(None, f"{flag} {pattern!r} must contain {{stem}} (the image name without "
                                  "extension) or {id} (with --image-pattern)")
        if "{id}" in pattern and image_pattern is None:
            raise AnnotationError(None, f"{flag} {pattern!r} uses {{id}}: give --image-pattern too, e.g. "
                                  "'{id}_training.tif', so the id can be taken from each image name")
    return _pattern_regex(image_pattern) if image_pattern is not None else None


def _matching(root: str, rel_dir: str, pattern: str, stem: str, image_id: str | None, image: str) -> list[str]:
    """Files in ``root/rel_dir`` matching ``pattern`` for one image (the image itself excluded)."""
    filled = pattern.replace("{stem}", glob.escape(stem))
    if image_id is not None:
        filled = filled.replace("{id}", glob.escape(image_id))
    folder = os.path.normpath(os.path.join(root, rel_dir))
    return sorted(
        p for p in glob.glob(os.path.join(glob.escape(folder), filled))
        if os.path.isfile(p) and os.path.abspath(p) != image and os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS
    )


def read_mask(
    path: str,
    *,
    threshold: float | None = None,
    class_map: ClassMap | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read one mask file into uint8 ``(H, W)`` class ids (255 = ignore).

    Args:
        path: the mask file.
        threshold, class_map: see :func:`data_tools.converter.convert_mask_folder`.
        max_pixels: pixel limit checked from the header before decoding;
            default :func:`kerasseg.image_limits.max_pixels`.

    Raises:
        AnnotationError: unreadable file, too many pixels, colours without a
            class map, values missing from the class map.
    """
    img = _open_file(path, what="mask image", max_pixels=max_pixels)
    mode = img.mode
    if mode == "P" or mode == "PA":
        palette = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        index = np.asarray(img)
        if index.ndim == 3:
            index = index[:, :, 0]
        used = np.unique(index)
        used_rgb = palette[used[used < len(palette)]] if len(palette) else np.zeros((0, 3))
        grey_palette = len(used_rgb) == len(used) and np.all(used_rgb == used_rgb[:, :1])
        if class_map is not None and class_map.is_colour:
            rgb = palette[np.minimum(index, len(palette) - 1)] if len(palette) else np.zeros(index.shape + (3,))
            return _map_colours(rgb.astype(np.uint8), class_map, path)
        if grey_palette:  # a grayscale image stored with a palette (e.g. GIF): use the grey levels
            grey = palette[:, 0][index] if len(palette) else index
            return _grey_to_ids(grey.astype(np.int64), threshold, class_map, path)
        return _grey_to_ids(index.astype(np.int64), threshold, class_map, path, palette_index=True)
    if mode == "1":
        arr = np.asarray(img).astype(np.int64)
        if class_map is not None:
            return _grey_to_ids(arr * 255, None, class_map, path)
        return arr.astype(np.uint8)
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        return _grey_to_ids(np.asarray(img).astype(np.float64 if mode == "F" else np.int64), threshold, class_map, path)
    if mode in ("LA", "La"):
        arr = np.asarray(img.convert("LA"))
        grey = np.where(arr[:, :, 1] == 0, 0, arr[:, :, 0]).astype(np.int64)
        return _grey_to_ids(grey, threshold, class_map, path)
    if mode in ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr"):
        has_alpha = mode in ("RGBA", "RGBa")
        arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
        rgb = arr[:, :, :3]
        if has_alpha:
            alpha = arr[:, :, 3]
            if np.all(rgb == rgb[:1, :1]) and alpha.min() != alpha.max():
                return _grey_to_ids(alpha.astype(np.int64), threshold, class_map, path)
            rgb = np.where(alpha[:, :, None] == 0, 0, rgb)
        if class_map is not None and class_map.is_colour:
            return _map_colours(rgb.astype(np.uint8), class_map, path)
        if np.all(rgb[:, :, 0] == rgb[:, :, 1]) and np.all(rgb[:, :, 1] == rgb[:, :, 2]):
            return _grey_to_ids(rgb[:, :, 0].astype(np.int64), threshold, class_map, path)
        raise AnnotationError(
            path,
            "colour mask (R, G, B differ): give a class map with 'R,G,B name' lines (--class-map)",
        )
    raise AnnotationError(path, f"unsupported mask pixel type {mode!r}")


def _open_file(path: str, *, what: str, max_pixels: int | None):
    """Read and open an image file with the pixel limit checked first; errors name ``path``."""
    from data_tools.images import open_image

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise AnnotationError(path, f"not a readable {what} ({e.strerror or e})") from e
    return open_image(data, path=path, max_pixels=max_pixels, what=what)


def read_roi(path: str, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a region-of-interest (field-of-view) file into a bool ``(H, W)`` array.

    Any non-zero pixel (any channel; for palette files, any non-black colour;
    alpha 0 counts as outside) is inside. A file with no pixel inside is an error,
    since every label of its image would be ignored.

    Raises:
        AnnotationError: unreadable file, too many pixels, or an empty ROI.
    """
    img = _open_file(path, what="ROI image", max_pixels=max_pixels)
    arr = np.asarray(img.convert("RGBA"))
    inside = np.any(arr[:, :, :3] > 0, axis=-1) & (arr[:, :, 3] > 0)
    if not inside.any():
        raise AnnotationError(path, "ROI has no pixel inside (all zero): every label of its image would be ignored")
    return inside


def _grey_to_ids(
    grey: np.ndarray,
    threshold: float | None,
    class_map: ClassMap | None,
    path: str,
    *,
    palette_index: bool = False,
) -> np.ndarray:
    if threshold is not None:
        return (grey > threshold).astype(np.uint8)
    if class_map is not None:
        out = np.full(grey.shape, 0, dtype=np.uint8)
        known = np.zeros(grey.shape, dtype=bool)
        for value, class_id in class_map.values:
            if isinstance(value, tuple):
                continue
            hit = grey == value
            out[hit] = class_id
            known |= hit
        if not known.all():
            missing = np.unique(grey[~known])[:10].tolist()
            raise AnnotationError(path, f"mask values {missing} are not in the class map {class_map.source}")
        return out
    values = np.unique(grey)
    if not palette_index and values.size and set(values.tolist()) <= {0, 255}:
        return (grey == 255).astype(np.uint8)  # binary 0/255 mask
    if values.size and (values.min() < 0 or not np.all(values == np.floor(values))):
        raise AnnotationError(path, "mask has negative or fractional values; pass --threshold")
    ids = values[values != IGNORE_INDEX]
    if ids.size and ids.max() > MAX_IMPLICIT_CLASS_ID:
        raise AnnotationError(
            path,
            f"mask values up to {int(ids.max())} look like intensities (e.g. a JPEG or "
            "anti-aliased mask), not class ids: pass --threshold T or --class-map FILE",
        )
    return grey.astype(np.uint8)


def _map_colours(rgb: np.ndarray, class_map: ClassMap, path: str) -> np.ndarray:
    packed = (rgb[:, :, 0].astype(np.int64) << 16) | (rgb[:, :, 1].astype(np.int64) << 8) | rgb[:, :, 2]
    out = np.zeros(packed.shape, dtype=np.uint8)
    known = np.zeros(packed.shape, dtype=bool)
    for value, class_id in class_map.values:
        key = (value[0] << 16) | (value[1] << 8) | value[2] if isinstance(value, tuple) else (value << 16) | (value << 8) | value
        hit = packed == key
        out[hit] = class_id
        known |= hit
    if not known.all():
        missing = [((int(v) >> 16) & 255, (int(v) >> 8) & 255, int(v) & 255) for v in np.unique(packed[~known])[:5]]
        raise AnnotationError(path, f"mask colours {missing} are not in the class map {class_map.source}")
    return out


def combine_masks(masks: Sequence[np.ndarray], paths: Sequence[str]) -> np.ndarray:
    """Combine several masks of one image: later non-zero pixels overwrite earlier ones."""
    out = masks[0].copy()
    for mask, path in zip(masks[1:], paths[1:]):
        if mask.shape != out.shape:
            raise AnnotationError(
                path, f"mask is {mask.shape[1]}x{mask.shape[0]} but {paths[0]} is {out.shape[1]}x{out.shape[0]}"
            )
        out[mask != 0] = mask[mask != 0]
    return out


__all__ = [
    "ClassMap",
    "DEFAULT_MASK_PATTERN",
    "MaskPair",
    "combine_masks",
    "find_pairs",
    "read_class_map",
    "read_mask",
]
