"""Class lists: labelme's ``labels.txt`` convention, or classes found in the data.

labelme's ``labels.txt`` has one class name a line: ``__ignore__`` (ignored
pixels, written as ``255`` in our masks), ``_background_`` (id 0), then the
classes, whose ids follow the file order. Without a file, the classes are
found in the data and sorted by name (a stable order whatever the file order).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable

from data_tools.errors import AnnotationError
from data_tools.rasterize import BACKGROUND_LABEL, IGNORE_LABEL
from kerasseg.schema import IGNORE_INDEX

MAX_CLASSES = 255  # ids 0..254; 255 is the ignore index


@dataclasses.dataclass(frozen=True)
class ClassList:
    """Class names in id order (``names[0]`` is the background).

    Attributes:
        names: class names, id ``i`` is ``names[i]``.
        source: where the list came from (a path, or ``"data"``).
    """

    names: tuple[str, ...]
    source: str = "data"

    def ids(self) -> dict[str, int]:
        """Label name -> class id, with ``__ignore__`` -> 255."""
        table = {name: i for i, name in enumerate(self.names)}
        table[IGNORE_LABEL] = IGNORE_INDEX
        return table

    def __len__(self) -> int:
        return len(self.names)


def read_labels_txt(path: str | os.PathLike) -> ClassList:
    """Read a labelme ``labels.txt``.

    ``__ignore__`` may appear anywhere (it maps to 255); the other lines get
    ids 0, 1, ... in file order, so ``_background_`` must be the first of
    them (it is class 0, what every pixel outside the shapes becomes).
    Blank lines are skipped.

    Raises:
        AnnotationError: unreadable file, duplicates, no classes, a missing or
            misplaced ``_background_`` or more than 255 classes.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(path, f"cannot read the label list ({e})") from e
    names: list[str] = []
    seen: set[str] = set()
    for number, name in enumerate(lines, start=1):
        if not name:
            continue
        if name in seen:
            raise AnnotationError(path, f"line {number}: label {name!r} listed twice")
        seen.add(name)
        if name == IGNORE_LABEL:
            continue
        names.append(name)
    if not names:
        raise AnnotationError(path, "no class names (only blank lines or __ignore__)")
    if BACKGROUND_LABEL not in names:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise AnnotationError(
            path,
            f"no {BACKGROUND_LABEL} line (found: {listed}). labelme's labels.txt lists "
            f"{IGNORE_LABEL}, then {BACKGROUND_LABEL} (class 0: every pixel no shape covers), then "
            f"the classes; without it every unannotated pixel would become {names[0]!r}. Add the "
            f"lines '{IGNORE_LABEL}' and '{BACKGROUND_LABEL}' at the top of the file",
        )
    if names[0] != BACKGROUND_LABEL:
        raise AnnotationError(
            path,
            f"{BACKGROUND_LABEL} must be the first class (id 0), found at position "
            f"{names.index(BACKGROUND_LABEL)}",
        )
    if len(names) > MAX_CLASSES:
        raise AnnotationError(path, f"{len(names)} classes; at most {MAX_CLASSES} fit in a uint8 mask")
    return ClassList(tuple(names), source=path)


def classes_from_labels(labels: Iterable[str]) -> ClassList:
    """Class list found in the data: ``_background_`` first, then sorted names."""
    found = sorted({label for label in labels} - {IGNORE_LABEL, BACKGROUND_LABEL})
    names = (BACKGROUND_LABEL, *found)
    if len(names) > MAX_CLASSES:
        raise AnnotationError(None, f"{len(names)} classes found; at most {MAX_CLASSES} fit in a uint8 mask")
    return ClassList(names, source="data")


__all__ = ["ClassList", "IGNORE_INDEX", "classes_from_labels", "read_labels_txt"]
