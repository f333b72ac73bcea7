"""Input file paths: they must stay inside their input folder, and have UTF-8 names.

* Containment is checked on *real* paths (symlinks resolved), so an image that
  is a symlink to a file outside ``INPUT_DIR`` (or sits in a symlinked folder
  pointing outside) is refused exactly like ``imagePath: ../secret.png``.
  Symlinks that stay inside the folder are fine. Hard links cannot be told
  apart from ordinary files and are not checked.
* File names must be valid UTF-8: they end up in the records (``image/filename``,
  ``image/source_id``), in ``splits/*.txt`` and in the report. On POSIX a name
  with other bytes (a Latin-1 ``café.png`` copied from an old disk) reaches
  Python with surrogate escapes; such a file is refused (or skipped with
  ``--on-error skip``) with a printable form of its name.
"""

from __future__ import annotations

import os

from data_tools.errors import AnnotationError

__all__ = ["check_inside", "check_utf8_name", "is_utf8", "printable"]


def is_utf8(text: str) -> bool:
    """True when ``text`` (a path as Python sees it) encodes to UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str | os.PathLike) -> str:
    """``path`` with bytes that are not UTF-8 shown as ``\\xNN`` escapes (safe to print and store)."""
    text = os.fspath(path)
    if is_utf8(text):
        return text
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def check_utf8_name(path: str, root: str) -> None:
    """Refuse ``path`` when its part below ``root`` is not valid UTF-8.

    Raises:
        AnnotationError: naming the printable path and how to fix it.
    """
    relative = os.path.relpath(path, root)
    if not is_utf8(relative):
        raise AnnotationError(
            printable(path),
            "file name is not valid UTF-8 (shown with \\x escapes); rename the file (or folder) "
            "to UTF-8, e.g. with `convmv -f latin1 -t utf8 -r --notest FOLDER`",
        )


def check_inside(path: str, root: str, *, owner: str | None = None, what: str = "file") -> None:
    """Refuse ``path`` when its real path (symlinks resolved) is outside ``root``'s real path.

    Args:
        path: the file to check (absolute, or relative to the working folder).
        root: the input folder it must stay in.
        owner: the file named in the error (default ``path``; e.g. the JSON
            whose ``imagePath`` it is).
        what: what ``path`` is, for the message.

    Raises:
        AnnotationError: ``... resolves outside ROOT (refused: path traversal)``.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real, real_root]) != real_root:
        raise AnnotationError(
            printable(owner if owner is not None else path),
            f"{what} {printable(path)} is a symlink (or inside a symlinked folder) to {printable(real)}, "
            f"which resolves outside {printable(root)} (refused: path traversal); copy the file into "
            "the input folder if it belongs to the dataset",
        )
