"""The converters' output folder: check it, stage into it, replace only what we wrote.

A conversion is built in a hidden staging folder beside ``OUTPUT_DIR``
(``.kerasseg-tmp-<name>-<pid>-<token>``, see :mod:`kerasseg.tempdirs`) and
renamed into place when complete, so an interrupted run leaves no
``OUTPUT_DIR``. The staging folder ends with :data:`MANIFEST_FILENAME`, the
list of every file and folder the conversion wrote.

``--overwrite`` (``overwrite=True``) replaces an existing ``OUTPUT_DIR`` only
when everything in it is ours:

* with a manifest: every file and folder in ``OUTPUT_DIR`` is listed in it
  (a file we wrote and the user later edited still counts as ours);
* without one (a conversion by a kerasseg older than the manifest): its
  ``dataset.json`` names one of our converters and every entry follows the
  layout the converters write (shards, ``splits/*.txt``, ``preview/*.png``,
  ``report.json``/``report.txt``).

Anything else (``my_experiments/notes.txt``, an nnU-Net folder with
``imagesTr/``, a ``.DS_Store``, a symlink) makes the run refuse before any
work, naming the foreign entries, and the check is repeated just before the
swap. An empty folder made beforehand is simply used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Sequence

from data_tools.errors import ConversionError
from data_tools.paths import is_utf8, printable

__all__ = [
    "MANIFEST_FILENAME",
    "check_output",
    "foreign_entries",
    "move_into_place",
    "stage",
    "write_manifest",
]

MANIFEST_FILENAME = ".kerasseg-manifest.json"
MANIFEST_VERSION = 1
TMP_PREFIX = ".kerasseg-tmp-"
OLD_PREFIX = ".kerasseg-old-"
CONVERTERS = ("labelme2tfrecord", "masks2tfrecord", "volumes2tfrecord")

_SHARD = re.compile(r"^.+-\d{5}-of-\d{5}\.tfrecord$")
_LEGACY_FILES = {"dataset.json", "report.json", "report.txt"}
_LEGACY_FOLDERS = {"splits": re.compile(r"^[^/]+\.txt$"), "preview": re.compile(r"^[^/]+\.png$")}
_NAMED = 10


def check_output(output_dir: str | os.PathLike, overwrite: bool, *, inputs: Sequence[str]) -> str:
    """Validate ``OUTPUT_DIR`` before any work; return it as an absolute path.

    Raises:
        ConversionError: the output is (or contains) an input folder, exists
            without ``overwrite``, is not a folder, holds anything the converter
            did not write, or cannot be created.
    """
    out = os.path.abspath(os.fspath(output_dir))
    if not is_utf8(out):
        raise ConversionError(printable(out), "OUTPUT_DIR is not a valid UTF-8 path; choose a UTF-8 name")
    for source in inputs:
        if out == source or os.path.commonpath([out, source]) == out:
            raise ConversionError(out, f"OUTPUT_DIR must not be (or contain) the input folder {source}")
    if os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out):
        pass  # an empty folder made beforehand is simply used
    elif os.path.lexists(out):
        if not overwrite:
            raise ConversionError(out, "output exists; pass --overwrite (overwrite=True) to replace it")
        _check_replaceable(out)
    # Missing parent folders are created when the output is written (like mkdir -p),
    # only after every source has been read successfully.
    parent = os.path.dirname(out)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ConversionError(out, f"{parent} is a file, so OUTPUT_DIR cannot be created under it")
    return out


def _check_replaceable(out: str) -> None:
    if os.path.islink(out) or not os.path.isdir(out):
        raise ConversionError(out, "output exists and is not a folder; refusing to replace it")
    has_manifest, foreign = foreign_entries(out)
    if not foreign:
        return
    named = ", ".join(foreign[:_NAMED]) + (f" and {len(foreign) - _NAMED} more" if len(foreign) > _NAMED else "")
    if has_manifest:
        raise ConversionError(
            out,
            f"output holds files the converter did not write: {named}; refusing to replace it "
            "(--overwrite replaces only what a conversion wrote, listed in "
            f"{MANIFEST_FILENAME}). Move them out of OUTPUT_DIR, or choose another OUTPUT_DIR",
        )
    raise ConversionError(
        out,
        f"output exists and is not a dataset written by {' or '.join(CONVERTERS)} (no {MANIFEST_FILENAME}); "
        f"refusing to delete it. It holds: {named}. Choose another OUTPUT_DIR, or move it away yourself",
    )


def foreign_entries(out: str) -> tuple[bool, list[str]]:
    """What in ``out`` the converter did not write.

    Returns:
        ``(has_manifest, foreign)``: whether ``out`` has a readable manifest,
        and the relative paths (folders end with ``/``) of entries that are
        not ours, sorted; a foreign folder is listed once, not its contents.
    """
    manifest = _read_manifest(out)
    if manifest is not None:
        files, folders = manifest
    else:
        files, folders = _legacy_layout(out)
    foreign: list[str] = []
    for folder, dirs, names in os.walk(out, followlinks=False):
        rel_folder = os.path.relpath(folder, out)
        rel_folder = "" if rel_folder == "." else rel_folder.replace(os.sep, "/") + "/"
        kept = []
        for name in sorted(dirs):
            rel = rel_folder + name
            if os.path.islink(os.path.join(folder, name)) or rel not in folders:
                foreign.append(printable(rel) + "/")
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            rel = rel_folder + name
            if os.path.islink(os.path.join(folder, name)) or rel not in files:
                foreign.append(printable(rel))
    return manifest is not None, sorted(foreign)


def _read_manifest(out: str) -> tuple[set[str], set[str]] | None:
    path = os.path.join(out, MANIFEST_FILENAME)
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("converter") not in CONVERTERS:
        return None
    files, folders = data.get("files"), data.get("folders")
    if not isinstance(files, list) or not isinstance(folders, list):
        return None
    return {str(f) for f in files} | {MANIFEST_FILENAME}, {str(f) for f in folders}


def _legacy_layout(out: str) -> tuple[set[str], set[str]]:
    """Files/folders of a conversion made before manifests existed (empty sets if not one)."""
    try:
        with open(os.path.join(out, "dataset.json"), encoding="utf-8") as f:
            info = json.load(f)
        ours = isinstance(info, dict) and isinstance(info.get("source"), dict) \
            and info["source"].get("converter") in CONVERTERS
    except (OSError, ValueError):
        ours = False
    if not ours or os.path.islink(os.path.join(out, "dataset.json")):
        return set(), set()
    files: set[str] = set()
    folders: set[str] = set()
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if os.path.islink(path):
            continue
        if os.path.isfile(path) and (name in _LEGACY_FILES or _SHARD.match(name)):
            files.add(name)
        elif os.path.isdir(path) and name in _LEGACY_FOLDERS:
            children = os.listdir(path)
            if all(_LEGACY_FOLDERS[name].match(c) and os.path.isfile(os.path.join(path, c))
                   and not os.path.islink(os.path.join(path, c)) for c in children):
                folders.add(name)
                files.update(f"{name}/{c}" for c in children)
    return files, folders


def write_manifest(staging: str, converter: str) -> str:
    """List every file and folder in ``staging`` (plus the manifest) in its manifest; return its path."""
    files: list[str] = [MANIFEST_FILENAME]
    folders: list[str] = []
    for folder, dirs, names in os.walk(staging):
        rel = os.path.relpath(folder, staging)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        folders += [prefix + d for d in dirs]
        files += [prefix + n for n in names if prefix + n != MANIFEST_FILENAME]
    path = os.path.join(staging, MANIFEST_FILENAME)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"manifest_version": MANIFEST_VERSION, "converter": converter,
                   "files": sorted(files), "folders": sorted(folders)}, f, indent=1)
        f.write("\n")
    return path


def stage(output_dir: str) -> str:
    """Create the staging folder beside ``output_dir`` (and its parents); return its path.

    First removes stale staging folders of earlier, killed conversions to the
    same ``output_dir`` (rules in :mod:`kerasseg.tempdirs`: our name pattern,
    untouched for an hour, owning process gone). A leftover
    ``.kerasseg-old-<name>-*`` (the previous output, renamed away during a
    replacement) is removed only when ``output_dir`` exists, since otherwise it
    may be the only copy.
    """
    from kerasseg import tempdirs

    parent = os.path.dirname(output_dir)
    base = os.path.basename(output_dir)
    os.makedirs(parent, exist_ok=True)
    tempdirs.remove_stale(parent, f"{TMP_PREFIX}{base}-")
    tempdirs.remove_stale(parent, f"{OLD_PREFIX}{base}-", keep=lambda _path: not os.path.isdir(output_dir))
    return tempdirs.make_staging_dir(parent, f"{TMP_PREFIX}{base}-")


def move_into_place(staging: str, output_dir: str, *, overwrite: bool) -> None:
    """Rename the finished ``staging`` folder to ``output_dir``, replacing an earlier conversion.

    The earlier output is checked again (nothing foreign may have appeared since
    the run started), renamed aside, and deleted only once the new one is in place.

    Raises:
        ConversionError: ``output_dir`` now holds something the converter did not
            write, or (without ``overwrite``) it appeared while converting.
    """
    from kerasseg import tempdirs

    old = None
    if os.path.lexists(output_dir):
        if not (os.path.isdir(output_dir) and not os.path.islink(output_dir) and not os.listdir(output_dir)):
            if not overwrite:
                raise ConversionError(output_dir, "output appeared while converting; pass --overwrite to replace it")
            _check_replaceable(output_dir)
        parent = os.path.dirname(output_dir)
        old = os.path.join(parent, tempdirs.staging_name(f"{OLD_PREFIX}{os.path.basename(output_dir)}-"))
        os.rename(output_dir, old)
    try:
        os.rename(staging, output_dir)
    except BaseException:
        if old is not None:
            os.rename(old, output_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
