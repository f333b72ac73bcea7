"""A CSV/TSV list of image, mask and optional ROI files: pairing for any layout.

One row per example: ``image,mask[,roi]`` (comma- or tab-separated; a header
row ``image,mask[,roi]`` is allowed; blank rows and rows starting with ``#``
are skipped). Paths are absolute or relative to the list's folder; several mask
files for one image are joined with ``;`` (combined as in a mask folder). The
source id of a row is its image path relative to the list's folder without the
extension (``/``-separated), so ids are unique and stable.
"""

from __future__ import annotations

import csv
import os

from data_tools.errors import AnnotationError, ConversionError
from data_tools.masks import IMAGE_EXTENSIONS, MaskPair

_HEADER = ("image", "mask", "roi")


def read_pairs_file(path: str) -> tuple[list[MaskPair], list[AnnotationError], list[str]]:
    """Read the list at ``path``.

    Returns:
        ``(pairs, problems, folders)``: the pairs (sorted by source id), one
        error per row naming a missing file or a duplicate id (reported like a
        bad file: stop or skip as asked), and the folders the files are in
        (the converter refuses to write its output into one of them).

    Raises:
        ConversionError: naming the list and the line: unreadable list, a row
            with too few or too many columns, a file that is not an image.
    """
    root = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(path, f"cannot read the pairs list: {e}") from None
    first = text.splitlines()[0] if text.strip() else ""
    dialect = "excel-tab" if "\t" in first else "excel"
    pairs: list[MaskPair] = []
    problems: list[AnnotationError] = []
    folders: set[str] = set()
    seen: dict[str, int] = {}
    for number, row in enumerate(csv.reader(text.splitlines(), dialect=dialect), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and tuple(c.lower() for c in cells) == _HEADER[: len(cells)]:
            continue
        if len(cells) not in (2, 3):
            raise ConversionError(path, f"line {number}: expected 'image,mask' or 'image,mask,roi', got {row!r}")
        files = [os.path.normpath(os.path.join(root, cells[0]))]
        masks = [os.path.normpath(os.path.join(root, m.strip())) for m in cells[1].split(";") if m.strip()]
        roi = os.path.normpath(os.path.join(root, cells[2])) if len(cells) == 3 and cells[2] else None
        for file in [*files, *masks, *([roi] if roi else [])]:
            if os.path.splitext(file)[1].lower() not in IMAGE_EXTENSIONS:
                raise ConversionError(path, f"line {number}: {cells[0] if file == files[0] else file} is not an "
                                      f"image file ({'/'.join(IMAGE_EXTENSIONS)})")
        image = files[0]
        relative = os.path.relpath(image, root)
        source_id = os.path.splitext(relative)[0].replace(os.sep, "/")
        if source_id.startswith("../"):  # a file outside the list's folder: its absolute path is the id
            source_id = os.path.splitext(image)[0].lstrip(os.sep).replace(os.sep, "/")
        missing = [f for f in [image, *masks, *([roi] if roi else [])] if not os.path.isfile(f)]
        if missing:
            problems.append(AnnotationError(missing[0], f"listed on line {number} of {os.path.basename(path)} "
                                            "but not found"))
            continue
        if not masks:
            problems.append(AnnotationError(image, f"line {number} of {os.path.basename(path)} names no mask file"))
            continue
        if source_id.lower() in seen:
            problems.append(AnnotationError(image, f"duplicate id {source_id!r}: also on line {seen[source_id.lower()]}"))
            continue
        seen[source_id.lower()] = number
        folders.update(os.path.dirname(f) for f in [image, *masks, *([roi] if roi else [])])
        pairs.append(MaskPair(source_id, image, tuple(masks), roi))
    if not pairs and not problems:
        raise ConversionError(path, "the pairs list names no example")
    return sorted(pairs, key=lambda p: p.source_id), problems, sorted(folders)


__all__ = ["read_pairs_file"]
