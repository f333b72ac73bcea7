"""The errors of ``data_tools``: :class:`AnnotationError` and its subclass.

Every problem a user can cause (a bad annotation, a missing image, a refused
output folder) raises :class:`AnnotationError` (or its subclass
:class:`ConversionError` for problems with the run as a whole). Each carries the
offending ``path`` and a plain-language ``problem`` so the message always names
the file and what is wrong with it.

:class:`AnnotationError` derives from :class:`kerasseg.errors.KerasSegError`
(and from ``ValueError``), so one ``except KerasSegError`` catches the
converters' errors and kerasseg's alike.
"""

from __future__ import annotations

import os

from kerasseg.errors import KerasSegError


class AnnotationError(KerasSegError, ValueError):
    """A source file (annotation, image, mask, label list) cannot be converted.

    Attributes:
        path: the file (or folder) at fault, as given.
        problem: what is wrong with it, without the path.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # keep path/problem when crossing process boundaries
        return (type(self), (self.path, self.problem))


class ConversionError(AnnotationError):
    """The run as a whole cannot proceed (empty input, output exists, bad options)."""


__all__ = ["AnnotationError", "ConversionError"]
