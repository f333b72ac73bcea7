"""Writing one file so that readers see the old file or the whole new one, never part of one.

Every kerasseg writer of a single file (JSON, YAML, CSV, PNG, ``.npy``,
``.keras``, weights, volumes) goes through :func:`replacing`: the content is
written to a hidden file beside the destination and moved onto it with
``os.replace`` (atomic within a file system) once it is complete. If writing
fails, the hidden file is removed and the destination is left as it was; a
process killed mid-write leaves only a hidden ``.part-*`` file behind, never a
torn destination.

The hidden name is ``.part-<pid>-<8 hex digits>-<destination name>``: it ends
with the destination's own name, so writers that choose a format by extension
(Keras, OpenCV, matplotlib, SimpleITK, ``numpy.save``) choose the same one, and
two processes writing the same destination never share a temporary file. Very
long names keep their end (the extension) within the file system's limit.

Whole folders (datasets, SavedModels) are staged with :mod:`kerasseg.tempdirs`
instead. No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Any, Iterator

__all__ = ["PART_PREFIX", "replacing", "write_json", "write_text"]

PART_PREFIX = ".part-"
_MAX_TAIL_BYTES = 150  # of the destination's name kept in the hidden name (file names stop at 255 bytes)


def _hidden_name(name: str, extension: str | None) -> str:
    tail = name
    if extension is not None:
        tail = name[: -len(extension)] + extension if name.lower().endswith(extension.lower()) else name + extension
    while len(tail.encode("utf-8", "surrogateescape")) > _MAX_TAIL_BYTES:
        tail = tail[1:]
    return f"{PART_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{tail}"


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, make_folder: bool = True, extension: str | None = None) -> Iterator[str]:
    """Yield a hidden temporary path beside ``path`` to write the new file to.

    When the ``with`` block finishes, the temporary file replaces ``path``; when
    it raises (or is interrupted), the temporary file is removed and ``path`` is
    untouched.

    Args:
        path: the destination file.
        make_folder: create the destination's folder first (otherwise a missing
            folder fails as ``open`` would).
        extension: end the temporary name with this instead of the destination's
            own extension (e.g. ``".nii.gz"`` for ``SCAN.NII.GZ``, for a library
            that recognises extensions in lower case only).

    Yields:
        The temporary path (a ``str``), in the destination's folder.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    if make_folder:
        os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, _hidden_name(name, extension))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str, *, make_folder: bool = True) -> str:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; return the path."""
    with replacing(path, make_folder=make_folder) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return os.fspath(path)


def write_json(path: str | os.PathLike, data: Any, *, make_folder: bool = True) -> str:
    """Write ``data`` as indented JSON with sorted keys and a final newline, atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", make_folder=make_folder)
