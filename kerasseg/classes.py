"""Which classes are background: the one rule used by monitors, reports and plans.

Class 0 is the background when its name says so (``_background_``, labelme's
name; ``background``, the mask converter's; ``bg``; any case, underscores and
spaces ignored). Datasets whose class 0 is a real structure (ISBI 2012 names
its classes ``membrane`` and ``cell``) have no background class, and every class
counts as foreground.
"""

from __future__ import annotations

from typing import Sequence

_BACKGROUND_NAMES = {"background", "bg", "backgroundclass"}


def is_background_name(name: str) -> bool:
    """True for names that mean "background" (``_background_``, ``Background``, ``bg``)."""
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    return key in _BACKGROUND_NAMES


def foreground_indices(class_names: Sequence[str]) -> list[int]:
    """Indices of the foreground classes: all but class 0 when class 0 is a background."""
    names = list(class_names)
    if len(names) > 1 and is_background_name(names[0]):
        return list(range(1, len(names)))
    return list(range(len(names)))


__all__ = ["is_background_name", "foreground_indices"]
