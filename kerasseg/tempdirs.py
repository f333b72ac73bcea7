"""Hidden staging folders of our own, and the clean-up of those a killed run left.

The converter and the exporter build their output in a hidden folder beside
the final one and rename it into place, so an interrupted run never leaves a
half-written dataset or SavedModel. A run killed with SIGKILL (or a machine
that lost power) cannot remove its staging folder, though; the next run does.

Staging folders are named ``<prefix><pid>-<token>``: ``pid`` is the process
that made it and ``token`` 8 random hex digits. A folder is *stale*, and
:func:`remove_stale` deletes it, only when all of these hold:

* its name matches the caller's prefix and this pattern exactly (folders
  from older kerasseg versions, ``<prefix><token>`` without the pid, match too);
* it is a real folder, not a symlink;
* nothing in it was modified for ``max_age_s`` seconds (default 1 hour):
  the newest modification time of the folder and everything inside it;
* the process named in it is not running on this machine (an old staging
  folder of a live run, e.g. one writing a huge shard, is kept; on a shared
  network folder another machine's pid may happen to be alive here, which only
  delays the clean-up).

Nothing else is ever touched. No import-time side effects; no TensorFlow.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from typing import Callable

__all__ = ["STALE_AFTER_S", "make_staging_dir", "remove_stale", "staging_name"]

STALE_AFTER_S = 3600.0
"""A staging folder untouched for this long whose process is gone is removed."""


def staging_name(prefix: str) -> str:
    """A fresh staging folder name: ``<prefix><pid>-<8 hex digits>``."""
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def make_staging_dir(parent: str, prefix: str, *, mode: int = 0o777) -> str:
    """Create and return a new empty staging folder ``parent/<prefix><pid>-<token>``.

    Args:
        parent: an existing folder (the final output's parent).
        prefix: the caller's hidden prefix, e.g. ``".kerasseg-tmp-records-"``.
        mode: permission bits (before the umask), as for ``os.mkdir``.
    """
    while True:
        path = os.path.join(parent, staging_name(prefix))
        try:
            os.mkdir(path, mode)
            return path
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def _pattern(prefix: str, tag: str) -> re.Pattern:
    return re.compile(re.escape(prefix) + tag + r"(?:(?P<pid>\d+)-)?(?P<token>[0-9a-z_]{8})")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # pragma: no cover - platforms without signal 0
        return True
    return True


def _last_modified(path: str) -> float:
    newest = os.lstat(path).st_mtime
    for folder, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
            except OSError:
                continue
    return newest


def remove_stale(
    parent: str,
    prefix: str,
    *,
    tag: str = "",
    max_age_s: float = STALE_AFTER_S,
    keep: Callable[[str], bool] | None = None,
) -> list[str]:
    r"""Delete the stale staging folders ``parent/<prefix>...`` (rules in the module docstring).

    Args:
        parent: the folder to look in (missing: nothing to do).
        prefix: only names ``<prefix><pid>-<token>`` / ``<prefix><token>`` qualify.
        tag: a regular expression of a field between prefix and pid, e.g.
            ``r"\d+-"`` for the export version in ``.tmp-export-<version>-<pid>-<token>``.
        max_age_s: minimum seconds since the last modification inside the folder.
        keep: optional ``keep(path) -> bool``; a folder it returns True for is kept.

    Returns:
        The folders removed. Errors while removing are ignored (another run
        may be removing the same folder); the function never raises for them.
    """
    pattern = _pattern(prefix, tag)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    now = time.time()
    removed = []
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if not match:
            continue
        path = os.path.join(parent, name)
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            if match["pid"] is not None and _pid_alive(int(match["pid"])):
                continue
            if now - _last_modified(path) < max_age_s:
                continue
        except OSError:
            continue
        if keep is not None and keep(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
